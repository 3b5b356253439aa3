"""The broker as attacker against the hybrid suite: it rewrites the stored signed header of
a hybrid notice before the recipient streams it, to strip the ML-DSA half (keeping or
relabelling the suite) or to relabel the suite alone. Caught by the recipient's open
(broker.core.envelope.open_delivery): the delivery never opens, is never receipted, and
the application never sees it. An untouched hybrid notice still arrives."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from broker.core.delivery import field_bytes
from broker.core.envelope import SUITE, SUITE_HYBRID
from broker.v1 import notice_pb2
from tests.integration.conftest import Running
from tests.integration.test_hybrid_suite import (  # noqa: F401 (the fixtures, shared)
    mixed,
    mixed_template,
)

from .kit import Listener, agencies, publish, tamper, until

pytestmark = pytest.mark.integration

Edit = Callable[[notice_pb2.SignedHeader], None]


def _strip_keep_suite(h: notice_pb2.SignedHeader) -> None:
    h.signature = h.signature[:64]


def _strip_and_relabel(h: notice_pb2.SignedHeader) -> None:
    h.signature, h.suite = h.signature[:64], SUITE


def _relabel(h: notice_pb2.SignedHeader) -> None:
    h.suite = SUITE


async def _rewrite_head(b: Running, notice_id: str, edit: Edit) -> None:
    def read(store: object) -> bytes:
        row = store.conn.execute(  # type: ignore[attr-defined]
            "SELECT head FROM notices WHERE notice_id=?", (notice_id,)
        ).fetchone()
        return bytes(row[0])

    head = notice_pb2.Delivery.FromString(await b.app.runner.call(read))
    assert head.header.suite == SUITE_HYBRID
    edit(head.header)
    forged = field_bytes(2, head.header.SerializeToString()) + field_bytes(
        6, head.originator_statement.SerializeToString()
    )
    assert await tamper(b, "UPDATE notices SET head=? WHERE notice_id=?", forged, notice_id) == 1


@pytest.mark.parametrize(
    "edit", [_strip_keep_suite, _strip_and_relabel, _relabel], ids=lambda e: e.__name__
)
async def test_a_downgraded_hybrid_header_never_opens(mixed: Running, edit: Edit) -> None:  # noqa: F811
    async with agencies(mixed, "FR-NCB") as a:
        fr = a["FR-NCB"].node
        # DE-BKA is offline: the notices wait in the broker, where the attacker edits one.
        forged_id = await publish(fr, ["DE-BKA"], suite="hybrid")
        await _rewrite_head(mixed, forged_id, edit)
        genuine_id = await publish(fr, ["DE-BKA"], suite="hybrid")
        de = Listener(mixed.node("DE-BKA"))
        await de.start()
        try:
            await until(lambda: bool(de.versions(genuine_id)))
            await until(lambda: de.node.stats.rejected >= 1)
            assert de.versions(forged_id) == []
            assert (forged_id, 1) not in de.node.stats.acked
            assert de.node.inbox.versions(forged_id) == []
        finally:
            await de.halt()
            await de.node.close()
