"""The custody table on both backends (the `runner` fixture is parametrized over SQLite and
PostgreSQL): links stored with their log leaf in one transaction, read back in order, and
never two at one place."""

from __future__ import annotations

from typing import Any

import pytest

from broker.core import custody
from broker.store.runner import StoreRunner
from broker.v1 import evidence_pb2

NOTICE = "0b0f7c4e-1d2a-4c43-9e58-8a3c1d2e3f40"


def link(seq: int) -> tuple[bytes, bytes, Any]:
    record = evidence_pb2.CustodyRecord(
        notice_id=NOTICE,
        version=1,
        section="photos",
        seq=seq,
        agency="FR-NCB",
        action=evidence_pb2.CUSTODY_SEALED if seq == 0 else evidence_pb2.CUSTODY_OPENED,
    )
    signed = custody.sign_record(record, bytes(32))
    return signed.record, signed.signature, custody.custody_leaf(record, "FR-NCB", signed.record, 1)


async def test_links_are_stored_logged_and_read_in_order(runner: StoreRunner) -> None:
    indices: list[int] = []
    for seq in (0, 1, 2):
        record, signature, leaf = link(seq)

        def put(
            store: Any, seq: int = seq, r: bytes = record, s: bytes = signature, leaf: Any = leaf
        ) -> int:
            index: int = store.append_custody(
                NOTICE, 1, "photos", seq, r, s, custody.record_digest(r), leaf
            )
            return index

        indices.append(await runner.call(put))
    assert indices == sorted(set(indices)) and len(indices) == 3  # one log leaf each, in order
    rows = await runner.call(lambda s: s.custody_chain(NOTICE, 1, "photos"))
    assert [r.seq for r in rows] == [0, 1, 2]
    assert [r.record_digest for r in rows] == [custody.record_digest(r.record) for r in rows]
    assert len({r.log_index for r in rows}) == 3
    assert await runner.call(lambda s: s.custody_chain(NOTICE, 1, "identity")) == []
    size = await runner.call(lambda s: s.tlog_size())
    assert size == 3


async def test_two_links_at_one_place_are_impossible(runner: StoreRunner) -> None:
    record, signature, leaf = link(0)

    def put(store: Any) -> int:
        index: int = store.append_custody(
            NOTICE, 1, "photos", 0, record, signature, custody.record_digest(record), leaf
        )
        return index

    await runner.call(put)
    # SQLite: an IntegrityError; PostgreSQL: the runner's "nothing was stored: retry" (the
    # broker answers UNAVAILABLE there, and the SDK fetches the head and signs the next link)
    with pytest.raises(Exception, match=r"(?i)unique|nothing was stored"):
        await runner.call(put)
    assert len(await runner.call(lambda s: s.custody_chain(NOTICE, 1, "photos"))) == 1
    assert await runner.call(lambda s: s.tlog_size()) == 1  # the failed one's leaf rolled back
