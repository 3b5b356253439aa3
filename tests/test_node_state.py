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


def test_the_sweep_finds_due_copies_by_index_not_by_reading_the_inbox(tmp_path: Path) -> None:
    """The once-a-second sweep's queries search the partial indexes: a full scan would read
    every delivery the node ever took in, each second."""
    from broker.client.inbox import DUE_ERASURES_SQL, DUE_RELEASES_SQL

    conn = open_state(tmp_path / "plan.sqlite3")
    try:
        steps = [
            str(row[3])
            for sql, args in ((DUE_RELEASES_SQL, (1,)), (DUE_ERASURES_SQL, (1, 1)))
            for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()
        ]
    finally:
        conn.close()
    assert not any(s.startswith("SCAN inbox") for s in steps), steps
    for index in ("inbox_release", "inbox_expiry", "inbox_due"):
        assert any(f"USING INDEX {index}" in s for s in steps), (index, steps)


def test_due_copies_are_listed_once_with_the_deadline_that_came_first(tmp_path: Path) -> None:
    from broker.client.inbox import Inbox

    inbox = Inbox(tmp_path / "due.sqlite3")
    try:
        with inbox.batch():
            inbox.take_in("expired", 1, b"a", 0, handled=True, expires_at_ms=100)
            inbox.take_in("retained", 1, b"b", 0, handled=True, erase_at_ms=100)
            inbox.take_in("both", 1, b"c", 0, handled=True, expires_at_ms=200, erase_at_ms=100)
            inbox.take_in("later", 1, b"d", 0, handled=True, expires_at_ms=10_000)
            inbox.take_in("held", 1, b"e", 0, release_at_ms=100)
            inbox.take_in("held-later", 1, b"f", 0, release_at_ms=10_000)
            inbox.take_in("erased", 1, b"g", 0, handled=True, expires_at_ms=100)
            inbox.erase("erased", 1, "expired")
        assert sorted(inbox.due_erasures(500)) == [
            ("both", 1, "retention"),
            ("expired", 1, "expired"),
            ("retained", 1, "retention"),
        ]
        assert inbox.due_releases(500) == [b"e"]
        inbox.mark_handled("held", 1)
        assert inbox.due_releases(500) == []
    finally:
        inbox.close()
