"""`broker store migrate`: brings the schema up to date, says what it did, and is idempotent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from broker.store.migrations import MIGRATIONS
from broker.store.pg_migrations import PG_MIGRATIONS
from tests.postgres import TempSchema


def migrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker.cli.main", "store", "migrate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_store_migrate_postgres(pg_schema: TempSchema) -> None:
    first = migrate("--store", pg_schema.dsn)
    assert first.returncode == 0, first.stderr
    assert (
        f"(schema {pg_schema.name}): migrated from schema version 0 to {len(PG_MIGRATIONS)}"
        in first.stdout
    )
    again = migrate("--store", pg_schema.dsn, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["applied"] == 0
    assert pg_schema.execute("SELECT version FROM broker_schema") == [(len(PG_MIGRATIONS),)]


def test_store_migrate_postgres_refuses_a_newer_schema(pg_schema: TempSchema) -> None:
    assert migrate("--store", pg_schema.dsn).returncode == 0
    pg_schema.execute("UPDATE broker_schema SET version = 99")
    newer = migrate("--store", pg_schema.dsn)
    assert newer.returncode == 2
    assert "newer than this broker" in newer.stderr
    assert pg_schema.execute("SELECT version FROM broker_schema") == [(99,)]


def test_store_migrate_sqlite(tmp_path: Path) -> None:
    first = migrate("--data-dir", str(tmp_path / "data"))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().endswith(f"migrated from schema version 0 to {len(MIGRATIONS)}")
    again = migrate("--data-dir", str(tmp_path / "data"))
    assert f"already at schema version {len(MIGRATIONS)}; nothing to do" in again.stdout


def test_store_migrate_explains_an_unreachable_postgres() -> None:
    r = migrate("--store", "postgresql://postgres:hunter2@127.0.0.1:1/none?connect_timeout=2")
    assert r.returncode == 2
    assert "cannot connect to PostgreSQL" in r.stderr
    assert "hunter2" not in r.stderr  # the password never reaches a message
