"""The bench's count of fsync'd commits, read from a real SQLite database's wal-index."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from broker.bench.walcount import since, write_transactions
from broker.client.statedb import open_state, transaction


def test_it_counts_each_writing_commit_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "node.inbox.sqlite3"
    assert write_transactions(path) == 0  # no database yet
    conn = open_state(path)  # the node's own settings: WAL, synchronous=FULL
    try:
        conn.execute("CREATE TABLE t (a INTEGER)")
        start = write_transactions(path)
        for i in range(5):  # autocommitted writes: one commit each
            conn.execute("INSERT INTO t VALUES (?)", (i,))
        assert since(start, write_transactions(path)) == 5
        with transaction(conn):  # many writes, one commit
            for i in range(5, 50):
                conn.execute("INSERT INTO t VALUES (?)", (i,))
        assert since(start, write_transactions(path)) == 6
        with transaction(conn):  # a read-only transaction writes nothing
            conn.execute("SELECT count(*) FROM t").fetchone()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # a checkpoint resets the WAL, not this
        assert since(start, write_transactions(path)) == 6
        other = sqlite3.connect(path, isolation_level=None)  # any connection's commits count
        other.execute("DELETE FROM t WHERE a = 0")
        other.close()
        assert since(start, write_transactions(path)) == 7
    finally:
        conn.close()


def test_the_counter_wraps_and_a_foreign_file_is_refused(tmp_path: Path) -> None:
    assert since(2**32 - 2, 3) == 5 and since(7, 7) == 0
    db = tmp_path / "x.sqlite3"
    (tmp_path / "x.sqlite3-shm").write_bytes(b"short")
    with pytest.raises(ValueError, match="not a wal-index"):
        write_transactions(db)
