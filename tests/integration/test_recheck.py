"""Re-check at forwarding time: a queued delivery whose recipient is no longer allowed is
withheld, the withholding recorded, and the originator told."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from broker.bundles import read_bundle_dir
from broker.client.admin import AdminClient
from broker.core.identity import Party
from broker.sandbox import ADMIN_ID, REPO_POLICIES
from broker.v1 import agency_pb2, notice_pb2

from .conftest import Running
from .helpers import RED_SECTIONS

pytestmark = pytest.mark.integration


async def publish_red(b: Running) -> str:
    async with b.node("FR-NCB") as fr:
        result = await fr.publish(
            kind="interpol.red",
            purpose="locate_arrest",
            sections=RED_SECTIONS,
            recipients=["DE-BKA"],
        )
    return result.notice_id


async def drain(b: Running, agency: str, seconds: float = 1.0) -> list[notice_pb2.Delivery]:
    """Subscribe for a while with plenty of credit; return whatever arrives."""
    stub = b.stub(Party("agency", agency))
    call = stub.Subscribe()
    await call.write(agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=50)))
    got: list[notice_pb2.Delivery] = []

    async def loop() -> None:
        while True:
            resp = await call.read()
            if resp is grpc.aio.EOF:
                return
            got.extend(resp.deliveries)

    task = asyncio.ensure_future(loop())
    await asyncio.wait({task}, timeout=seconds)
    task.cancel()
    call.cancel()
    return got


async def originator_events(b: Running, want: int = 1) -> list[agency_pb2.StatusEvent]:
    stub = b.stub(Party("agency", "FR-NCB"))
    call = stub.Subscribe()
    await call.write(agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=1)))
    events: list[agency_pb2.StatusEvent] = []

    async def loop() -> None:
        while len(events) < want:
            resp = await call.read()
            events.extend(resp.events)

    await asyncio.wait_for(loop(), 10)
    call.cancel()
    return events


async def state_of(b: Running, notice_id: str) -> int:
    stub = b.stub(Party("agency", "FR-NCB"))
    status = await stub.GetDeliveryStatus(
        agency_pb2.DeliveryStatusRequest(notice_id=notice_id), timeout=5
    )
    return status.recipients[0].state


async def test_suspended_recipient_is_withheld_at_forwarding(broker: Running) -> None:
    notice_id = await publish_red(broker)
    async with AdminClient(broker.deployment.keys_dir, ADMIN_ID, broker.target) as admin:
        await admin.set_status("DE-BKA", "suspended", "under review")
    # DE-BKA still holds a valid certificate and subscribes: it gets nothing.
    assert await drain(broker, "DE-BKA") == []
    assert await state_of(broker, notice_id) == agency_pb2.DELIVERY_STATE_WITHHELD
    (event,) = await originator_events(broker)
    assert event.kind == agency_pb2.EVENT_KIND_WITHHELD
    assert event.recipient == "DE-BKA" and "suspended" in event.detail


async def test_originator_restricts_after_publishing(broker: Running) -> None:
    notice_id = await publish_red(broker)
    async with broker.node("FR-NCB") as fr:
        withheld = await fr.update_restrictions(
            notice_id, notice_pb2.OriginatorRestrictions(deny_countries=["DE"]), sequence=1
        )
        assert withheld == 1
        # The same sequence again is stale; another agency cannot restrict FR's notice.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await fr.update_restrictions(notice_id, notice_pb2.OriginatorRestrictions(), 1)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    async with broker.node("DE-BKA") as de:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await de.update_restrictions(notice_id, notice_pb2.OriginatorRestrictions(), 5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert await drain(broker, "DE-BKA") == []
    assert await state_of(broker, notice_id) == agency_pb2.DELIVERY_STATE_WITHHELD
    (event,) = await originator_events(broker)
    assert "originator" in event.detail


async def test_new_policy_version_withholds_queued_deliveries(
    broker: Running, tmp_path: Path
) -> None:
    notice_id = await publish_red(broker)
    draft = tmp_path / "draft"
    import shutil

    shutil.copytree(REPO_POLICIES, draft)
    (draft / "rules" / "zz-no-germany.toml").write_text(
        '[[rule]]\nid = "no-de-test"\neffect = "forbid"\nreason = "test embargo on DE"\n'
        'recipient_countries = ["DE"]\n'
    )
    async with AdminClient(broker.deployment.keys_dir, ADMIN_ID, broker.target) as admin:
        await admin.activate(read_bundle_dir(draft), "stop DE")
    assert await drain(broker, "DE-BKA") == []
    assert await state_of(broker, notice_id) == agency_pb2.DELIVERY_STATE_WITHHELD
    (event,) = await originator_events(broker)
    assert "no-de-test" in event.detail


async def test_still_allowed_delivery_goes_through(broker: Running) -> None:
    notice_id = await publish_red(broker)
    got = await drain(broker, "DE-BKA")
    assert len(got) == 1
    assert await state_of(broker, notice_id) == agency_pb2.DELIVERY_STATE_IN_FLIGHT
