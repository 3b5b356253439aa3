"""The real PostgreSQL server for tests: a private schema per test, dropped after.

Tests that need PostgreSQL take the `pg_schema` fixture (tests/conftest.py). It
reads BROKER_TEST_POSTGRES_DSN (.ci/run sets it): without it the test is
skipped with a message saying how to run it; with it, an unreachable server
fails the test loudly. Each test gets a schema of its own, so parallel runs and
reruns never see each other's tables, notifications or advisory locks (all
are named after the schema).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

DSN_ENV = "BROKER_TEST_POSTGRES_DSN"
HOW = (
    f"{DSN_ENV} is not set: run PostgreSQL and set it, e.g. "
    f"{DSN_ENV}=postgresql://postgres@127.0.0.1:5432/test (.ci/run does) to run the "
    "PostgreSQL tests"
)


def with_schema(dsn: str, schema: str) -> str:
    """The DSN (a URL) with the schema first on its search_path."""
    return f"{dsn}{'&' if '?' in dsn else '?'}options={quote(f'-csearch_path={schema}')}"


@dataclass
class TempSchema:
    base: str  # the server's DSN, without a schema
    name: str

    @property
    def dsn(self) -> str:
        return with_schema(self.base, self.name)

    def execute(self, statement: str, *params: object) -> list[tuple[object, ...]]:
        """Run one statement in the schema, outside any store (autocommit)."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(statement, params or None)
            return cur.fetchall() if cur.description else []

    def drop(self) -> None:
        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.name))
            )


def server_dsn() -> str:
    """BROKER_TEST_POSTGRES_DSN, checked; skips the test when it is unset."""
    import os

    dsn = os.environ.get(DSN_ENV, "")
    if not dsn:
        pytest.skip(HOW)
    if not dsn.startswith(("postgresql://", "postgres://")):
        pytest.fail(f"{DSN_ENV} must be a postgresql:// URL, not {dsn!r}")
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        pytest.fail(f"{DSN_ENV}={dsn} is set but PostgreSQL is unreachable: {exc}")
    return dsn


def create_schema(prefix: str = "t") -> TempSchema:
    base = server_dsn()
    schema = TempSchema(base, f"{prefix}_{uuid.uuid4().hex[:16]}")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema.name)))
    return schema
