"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.postgres import TempSchema, create_schema

# No per-example deadlines: the suite asserts behaviour, never speed (a busy CI machine must
# not fail a property). On CI the examples are derandomized, so a run is reproducible and
# a property cannot turn red by the luck of the draw; locally they stay random to explore.
settings.register_profile("default", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

VECTORS_ENV = "BROKER_VECTORS_DIR"


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """Return the public test-vector folder named by BROKER_VECTORS_DIR.

    Skips the requesting test when the variable is unset (a fresh clone) and
    fails it when the variable names a folder that does not exist.
    """
    value = os.environ.get(VECTORS_ENV, "")
    if not value:
        pytest.skip(
            f"{VECTORS_ENV} is not set: point it at the shared test-vector folder "
            "(e.g. ../shared/vectors) to run the public-vector tests"
        )
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"{VECTORS_ENV}={value!r} is not a directory")
    return path


@pytest.fixture
def pg_schema() -> Iterator[TempSchema]:
    """A private, empty PostgreSQL schema for this test, dropped after it.

    Skips without BROKER_TEST_POSTGRES_DSN; fails if that server is unreachable.
    """
    schema = create_schema()
    try:
        yield schema
    finally:
        schema.drop()
