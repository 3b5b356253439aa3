"""Restriction updates (issue 9, item 4): checked by the same code as Publish; a tightening
that leaves out a recipient already holding a copy reaches it as the originator's signed
update, which it applies (erases) and acknowledges with a signed receipt; every update is a
leaf in the transparency log."""

from __future__ import annotations

import sqlite3

import grpc
import pytest

from broker.core import lifecycle, logleaf
from broker.v1 import notice_pb2
from tests.adversarial.kit import SECTIONS, agencies, publish, until

from .conftest import Running
from .helpers import red_header, seal

pytestmark = pytest.mark.integration


def leaves(b: Running, kind: str) -> list[object]:
    conn = sqlite3.connect(f"file:{b.app.config.database}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT leaf FROM tlog_leaves ORDER BY idx").fetchall()
    finally:
        conn.close()
    parsed = [logleaf.parse(bytes(r[0])) for r in rows]
    return [leaf for leaf in parsed if logleaf.kind_of(leaf) == kind]


@pytest.mark.parametrize(
    ("restrictions", "message"),
    [
        (notice_pb2.OriginatorRestrictions(deny_groups=["shengen"]), "shengen"),
        (notice_pb2.OriginatorRestrictions(deny_countries=["XY"]), "XY"),
        (notice_pb2.OriginatorRestrictions(allow_agencies=["NO-SUCH"]), "NO-SUCH"),
    ],
    ids=["unknown-group", "unknown-country", "unknown-agency"],
)
async def test_an_update_is_refused_exactly_as_publish_refuses_it(
    broker: Running, restrictions: notice_pb2.OriginatorRestrictions, message: str
) -> None:
    async with agencies(broker, "FR-NCB") as a:
        fr = a["FR-NCB"].node
        # Straight to the broker: the SDK would refuse it before sealing.
        header = red_header("FR-NCB")
        envelope = seal(
            broker.deployment.keys_dir,
            header,
            {"DE-BKA": {"identity", "case_facts", "judicial"}},
            SECTIONS,
            restrictions=restrictions,
        )
        with pytest.raises(grpc.aio.AioRpcError) as published:
            await fr.publish_envelopes([envelope])
        notice_id = await publish(fr, ["DE-BKA"])
        with pytest.raises(grpc.aio.AioRpcError) as updated:
            await fr.update_restrictions(notice_id, restrictions, 1)
        assert published.value.code() == updated.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert published.value.details() == updated.value.details()
        assert message in str(updated.value.details())
        assert leaves(broker, "restrictions") == []  # nothing logged, nothing changed


async def test_a_tightening_erases_the_excluded_holders_copy_and_is_acknowledged(
    broker: Running,
) -> None:
    async with agencies(broker, "FR-NCB", "DE-BKA", "IT-BORDER") as a:
        fr, de, it = a["FR-NCB"].node, a["DE-BKA"], a["IT-BORDER"]
        notice_id = await publish(fr, ["DE-BKA", "IT-BORDER"])
        await until(lambda: de.versions(notice_id) == [1] and it.versions(notice_id) == [1])
        withheld = await fr.update_restrictions(
            notice_id, notice_pb2.OriginatorRestrictions(deny_countries=["IT"]), 1
        )
        assert withheld == 0  # nothing was queued any more
        await until(lambda: [x.kind for x in it.actions] == ["restricted"])
        assert it.node.inbox.held(notice_id) == 0
        assert de.node.inbox.held(notice_id) == 1 and de.actions == []
        action_id = lifecycle.restricted_action_id(notice_id, 1)
        await until(lambda: any(x[0] == action_id for x in it.node.stats.acked))
        rows = await broker.app.runner.call(lambda s: s.control_status(notice_id))
        assert [(r[0], r[2], r[3]) for r in rows] == [(action_id, "IT-BORDER", "delivered")]
        # The originator sees the acknowledgement, signed by the recipient.
        status = await fr.verify_delivery(notice_id)
        (ack,) = [x for x in status.actions if x.action_id == action_id]
        assert ack.recipient == "IT-BORDER" and ack.verdict == "verified", ack
        (leaf,) = leaves(broker, "restrictions")
        assert list(leaf.restrictions.excluded) == ["IT-BORDER"]  # type: ignore[attr-defined]
        assert leaf.restrictions.sequence == 1  # type: ignore[attr-defined]
        # The same signed update again changes nothing and logs nothing more.
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await fr.update_restrictions(
                notice_id, notice_pb2.OriginatorRestrictions(deny_countries=["IT"]), 1
            )
        assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert len(leaves(broker, "restrictions")) == 1
