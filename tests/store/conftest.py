"""Fixtures for the store contract (tests/store/test_contract.py).

Every backend runs the same contract. A backend is described by a `Backend`
object that knows how to open a store on fresh, private storage (and reopen it),
plus the few backend-specific hooks the contract needs (counting rows, forcing a
schema version). The `store` and `runner` fixtures are parametrized over
`BACKENDS`: "sqlite" (a file under tmp_path) and "postgres" (a schema of its
own on the server named by BROKER_TEST_POSTGRES_DSN, dropped after the test;
skipped, saying how to run it, when the variable is unset).
Nothing in test_contract.py depends on the backend.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.store.migrations import MIGRATIONS
from broker.store.runner import StoreRunner
from broker.store.sqlite import SqliteStore
from tests.postgres import TempSchema, create_schema

# Backends under contract.
BACKENDS = ["sqlite", "postgres"]


class Backend:
    """One backend's storage for one test: open (and reopen) stores on it."""

    name: str

    def __init__(self) -> None:
        self.opened: list[Any] = []

    def open(self) -> Any:
        """Open a store on this test's storage (the same data each time)."""
        store = self._open()
        self.opened.append(store)
        return store

    def _open(self) -> Any:
        raise NotImplementedError

    @property
    def latest_schema_version(self) -> int:
        """The schema version a freshly migrated store reports."""
        raise NotImplementedError

    def count_rows(self, store: Any, table: str) -> int:
        """Rows in `table` (notices, deliveries, receipts, events, agencies)."""
        raise NotImplementedError

    def force_schema_version(self, version: int) -> None:
        """Mark the (closed) storage as having schema `version`, behind the store's back."""
        raise NotImplementedError

    def count_rows_now(self, runner: StoreRunner, table: str) -> int:
        """count_rows in a transaction of its own on `runner`."""
        return runner.call_sync(lambda s: self.count_rows(s, table))

    def cleanup(self) -> None:
        """Close every store opened here; close() must be idempotent."""
        for store in self.opened:
            store.close()


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def _open(self) -> SqliteStore:
        return SqliteStore.open(self.path)

    @property
    def latest_schema_version(self) -> int:
        return len(MIGRATIONS)

    def count_rows(self, store: Any, table: str) -> int:
        return int(store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def force_schema_version(self, version: int) -> None:
        conn = sqlite3.connect(str(self.path))
        try:
            conn.execute(f"PRAGMA user_version={int(version)}")
            conn.commit()
        finally:
            conn.close()


class PostgresBackend(Backend):
    name = "postgres"

    def __init__(self, schema: TempSchema) -> None:
        super().__init__()
        self.schema = schema

    def _open(self) -> Any:
        from broker.store.postgres import PostgresStore

        return PostgresStore.open(self.schema.dsn, pool_min=1, pool_max=2)

    @property
    def latest_schema_version(self) -> int:
        from broker.store.pg_migrations import PG_MIGRATIONS

        return len(PG_MIGRATIONS)

    def count_rows(self, store: Any, table: str) -> int:
        return int(store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def force_schema_version(self, version: int) -> None:
        self.schema.execute("UPDATE broker_schema SET version = %s", int(version))

    def cleanup(self) -> None:
        try:
            super().cleanup()
        finally:
            self.schema.drop()


def open_backend(name: str, tmp_path: Path) -> Backend:
    """Fresh, private storage of backend `name` (closed and dropped by `cleanup()`)."""
    if name == "sqlite":
        return SqliteBackend(tmp_path / "store" / "broker.db")
    if name == "postgres":
        return PostgresBackend(create_schema())
    raise AssertionError(f"no backend {name!r}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Fresh, private storage of one backend (a real database file for SQLite, a schema
    of its own for PostgreSQL)."""
    if request.param in BACKENDS:
        b: Backend = open_backend(request.param, tmp_path)
    else:  # pragma: no cover - a backend listed without a branch here
        pytest.fail(f"no fixture for backend {request.param!r}")
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture
def store(backend: Backend) -> Any:
    """A freshly created and migrated store (closed at teardown by `backend`)."""
    return backend.open()


@pytest.fixture
def runner(store: Any) -> Iterator[StoreRunner]:
    """The store behind a StoreRunner, the way the broker uses it; closed at teardown."""
    r = StoreRunner(store)
    try:
        yield r
    finally:
        r.close()
