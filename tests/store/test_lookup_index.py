"""The lookup index in the SQLite store: replaced per version, dropped by triggers when a
notice closes (withdrawn, cancelled, expired), is purged or deleted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broker.store.sqlite import SqliteStore
from broker.v1 import notice_pb2

ENVELOPE = notice_pb2.Envelope(
    header=notice_pb2.SignedHeader(
        header_bytes=notice_pb2.NoticeHeader(purpose="locate_arrest").SerializeToString()
    )
).SerializeToString()


def _notice(store: SqliteStore, notice_id: str, version: int = 1) -> None:
    store.conn.execute(
        "INSERT INTO notices (notice_id, version, originator, kind, header_digest, "
        "envelope_digest, envelope, created_at_ms, expires_at_ms, accepted_at_ms, "
        "policy_version, decisions) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (notice_id, version, "FR-NCB", "interpol.red", b"h", b"e", ENVELOPE, 1, 2, 1, "p", "{}"),
    )
    store.conn.execute(
        "INSERT OR IGNORE INTO notice_state (notice_id, expires_at_ms) VALUES (?, 2)", (notice_id,)
    )


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore.open(tmp_path / "broker.sqlite3")
    yield s  # type: ignore[misc]
    s.close()


def tokens(n: int) -> list[bytes]:
    return sorted(os.urandom(32) for _ in range(n))


def test_a_new_version_replaces_the_tokens_and_an_old_one_never_does(store: SqliteStore) -> None:
    _notice(store, "n1")
    v1, v2 = tokens(3), tokens(2)
    store.index_tokens("n1", 1, v1)
    assert store.indexed_tokens("n1") == v1
    _notice(store, "n1", 2)
    store.index_tokens("n1", 2, v2)
    assert store.indexed_tokens("n1") == v2
    store.index_tokens("n1", 1, v1)  # a late older version
    assert store.indexed_tokens("n1") == v2
    store.index_tokens("n1", 3, [])  # a version without selectors: no longer searchable
    assert store.indexed_tokens("n1") == [] and store.index_size() == 0


@pytest.mark.parametrize("closed", ["withdrawn", "cancelled", "expired"])
def test_closing_a_notice_drops_its_tokens(store: SqliteStore, closed: str) -> None:
    for n in ("n1", "n2"):
        _notice(store, n)
        store.index_tokens(n, 1, tokens(4))
    store.conn.execute("UPDATE notice_state SET closed=? WHERE notice_id='n1'", (closed,))
    assert store.indexed_tokens("n1") == []
    assert len(store.indexed_tokens("n2")) == 4  # others untouched


def test_purging_or_deleting_a_notice_drops_its_tokens(store: SqliteStore) -> None:
    for n in ("n1", "n2", "n3"):
        _notice(store, n)
        store.index_tokens(n, 1, tokens(2))
    store.conn.execute("UPDATE notices SET envelope=x'' WHERE notice_id='n1'")
    store.conn.execute("DELETE FROM notices WHERE notice_id='n2'")
    assert store.indexed_tokens("n1") == [] and store.indexed_tokens("n2") == []
    assert len(store.indexed_tokens("n3")) == 2
    assert store.index_size() == 2


def test_matching_skips_suspended_notices(store: SqliteStore) -> None:
    _notice(store, "n1")
    [t] = tokens(1)
    store.index_tokens("n1", 1, [t])
    found = store.match_tokens([os.urandom(32), t], "IT-BORDER", now_ms=10)
    assert list(found) == [1] and found[1][0].notice_id == "n1"
    assert found[1][0].purpose == "locate_arrest"
    store.conn.execute("UPDATE notice_state SET suspended_until_ms=100 WHERE notice_id='n1'")
    assert store.match_tokens([t], "IT-BORDER", now_ms=10) == {}
    assert list(store.match_tokens([t], "IT-BORDER", now_ms=100)) == [0]
