"""The node's state database: migrated once, whoever opens it first, and never rolled back."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from broker.client.memory import KEY_SERIAL, TrustMemory
from broker.client.statedb import MIGRATIONS, open_state
from broker.errors import InvalidArgument, PermissionDenied


def test_concurrent_opens_migrate_once(tmp_path: Path) -> None:
    path = tmp_path / "FR-NCB.inbox.sqlite3"
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            open_state(path).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.close()


def test_an_inbox_of_the_old_layout_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])  # what files held before the schema was versioned
    conn.execute("INSERT INTO inbox VALUES ('n', 1, x'01', 5, 1)")
    conn.commit()
    conn.close()
    state = open_state(path)
    assert state.execute("SELECT notice_id, erased FROM inbox").fetchall() == [("n", "")]
    state.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(InvalidArgument, match="newer than this SDK"):
        open_state(path)


def test_trust_memory_survives_a_restart_and_refuses_going_back(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    memory = TrustMemory(open_state(path))
    memory.accept(KEY_SERIAL, "DE-BKA", 2)
    memory.conn.close()
    again = TrustMemory(open_state(path))  # a restart, or a fresh CLI call
    assert again.newest(KEY_SERIAL, "DE-BKA") == 2
    with pytest.raises(PermissionDenied, match=r"key serial 1 for DE-BKA.*key serial 2"):
        again.accept(KEY_SERIAL, "DE-BKA", 1)
    again.accept(KEY_SERIAL, "DE-BKA", 3)
    assert again.newest(KEY_SERIAL, "DE-BKA") == 3
