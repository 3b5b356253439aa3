"""Subscribe, receipts, redelivery, dead letters and the credit window, over real gRPC."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from broker import pki
from broker.client.node import ReceivedNotice
from broker.core import receipts as rcp
from broker.core.identity import Party
from broker.v1 import agency_pb2, notice_pb2
from tests.content import section_for

from .conftest import Running, StartBroker
from .helpers import RED_SECTIONS, red_header, seal

pytestmark = pytest.mark.integration
POLICE = {"identity", "case_facts", "judicial", "biometrics"}


async def publish(b: Running, n: int, to: str = "DE-BKA") -> list[notice_pb2.Envelope]:
    stub = b.stub(Party("agency", "FR-NCB"))
    envelopes = [seal(b.deployment.keys_dir, red_header(), {to: POLICE}) for _ in range(n)]
    await stub.Publish(agency_pb2.PublishRequest(envelopes=envelopes), timeout=10)
    return envelopes


async def read_deliveries(
    call: object, want: int, timeout: float = 10
) -> list[notice_pb2.Delivery]:
    got: list[notice_pb2.Delivery] = []

    async def loop() -> None:
        while len(got) < want:
            resp = await call.read()  # type: ignore[attr-defined]
            assert resp is not grpc.aio.EOF
            got.extend(resp.deliveries)

    await asyncio.wait_for(loop(), timeout)
    return got


async def test_node_receives_only_its_sections_and_receipts(broker: Running) -> None:
    async with broker.node("FR-NCB") as fr, broker.node("IT-BORDER") as it:
        result = await fr.publish(
            kind="interpol.red", purpose="locate_arrest", sections=RED_SECTIONS
        )
        assert result.audience["IT-BORDER"] == ("identity",)
        got: list[ReceivedNotice] = []
        stop = asyncio.Event()

        async def handle(notice: ReceivedNotice) -> None:
            got.append(notice)
            stop.set()

        await asyncio.wait_for(it.listen(handle, stop=stop), 10)
        assert [n.notice_id for n in got] == [result.notice_id]
        assert dict(got[0].sections) == {"identity": RED_SECTIONS["identity"]}

        for _ in range(100):
            status = await fr.delivery_status(result.notice_id)
            states = {r.recipient: r.state for r in status.recipients}
            if states["IT-BORDER"] == agency_pb2.DELIVERY_STATE_DELIVERED:
                break
            await asyncio.sleep(0.05)
        row = next(r for r in status.recipients if r.recipient == "IT-BORDER")
        assert row.state == agency_pb2.DELIVERY_STATE_DELIVERED
        signing = pki.load_agency(broker.deployment.keys_dir, "IT-BORDER").statement
        from broker.core.identity import verify_key_statement

        keys = verify_key_statement(signing, fr.ca_key, _now())
        receipt = rcp.verify_proven_receipt(row.receipt, keys.signing_key)
        assert receipt.header_digest == result.header_digest
        assert list(receipt.sections) == ["identity"]


def _now() -> int:
    from .helpers import now_ms

    return now_ms()


async def test_credit_window_bounds_what_is_sent(broker: Running) -> None:
    await publish(broker, 5)
    stub = broker.stub(Party("agency", "DE-BKA"))
    call = stub.Subscribe()
    await call.write(agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=2)))
    first = await read_deliveries(call, 2)
    assert len(first) == 2
    # No credit left: nothing more arrives (a pending read stays pending).
    pending = asyncio.ensure_future(call.read())
    done, _ = await asyncio.wait({pending}, timeout=0.5)
    assert not done
    await call.write(agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=10)))
    rest = list((await asyncio.wait_for(pending, 10)).deliveries)
    rest += await read_deliveries(call, 3 - len(rest))
    seqs = [d.sequence for d in first + rest]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    call.cancel()


async def test_unreceipted_delivery_is_redelivered_then_dead_lettered(
    start_broker: StartBroker,
) -> None:
    b = await start_broker(lease_ms=200, max_attempts=2)
    envelopes = await publish(b, 1)
    stub = b.stub(Party("agency", "DE-BKA"))
    call = stub.Subscribe()
    await call.write(agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=10)))
    first = await read_deliveries(call, 1)
    second = await read_deliveries(call, 1)  # lease expired without a receipt
    assert first[0].sequence == second[0].sequence
    assert (first[0].attempt, second[0].attempt) == (1, 2)
    call.cancel()

    # After the last attempt the originator is told, on its own stream.
    fr = b.stub(Party("agency", "FR-NCB"))
    fcall = fr.Subscribe()
    await fcall.write(agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=1)))

    async def event() -> agency_pb2.StatusEvent:
        while True:
            resp = await fcall.read()
            if resp.events:
                return resp.events[0]

    ev = await asyncio.wait_for(event(), 10)
    assert ev.kind == agency_pb2.EVENT_KIND_DEAD_LETTERED
    assert ev.recipient == "DE-BKA"
    header = notice_pb2.NoticeHeader.FromString(envelopes[0].header.header_bytes)
    assert ev.notice_id == header.notice_id
    fcall.cancel()
    status = await fr.GetDeliveryStatus(
        agency_pb2.DeliveryStatusRequest(notice_id=header.notice_id), timeout=5
    )
    assert status.recipients[0].state == agency_pb2.DELIVERY_STATE_DEAD_LETTERED


async def test_reconnecting_agency_resumes_without_loss_or_duplicates(broker: Running) -> None:
    envelopes = await publish(broker, 6)
    ids = {notice_pb2.NoticeHeader.FromString(e.header.header_bytes).notice_id for e in envelopes}
    seen: list[str] = []

    async with broker.node("DE-BKA", window=2) as de:
        stop = asyncio.Event()

        async def handle(notice: ReceivedNotice) -> None:
            seen.append(notice.notice_id)
            if len(seen) == 3:
                stop.set()

        await asyncio.wait_for(de.listen(handle, stop=stop), 10)
    # The node went away after three; a new process of the same node picks up the rest.
    async with broker.node("DE-BKA", window=2) as de:
        stop = asyncio.Event()

        async def handle2(notice: ReceivedNotice) -> None:
            seen.append(notice.notice_id)
            if set(seen) == ids:
                stop.set()

        await asyncio.wait_for(de.listen(handle2, stop=stop), 10)
    assert sorted(seen) == sorted(ids)  # each exactly once


async def test_receipts_for_others_or_unknown_notices_are_refused(broker: Running) -> None:
    creds = pki.load_agency(broker.deployment.keys_dir, "DE-BKA")
    receipt = notice_pb2.Receipt(
        notice_id="00000000-0000-0000-0000-000000000000",
        version=1,
        recipient="DE-BKA",
        header_digest=b"\x00" * 32,
        sections=["identity"],
        received_at_ms=_now(),
    )
    batch = rcp.sign_receipts("DE-BKA", [receipt], creds.signing_seed)
    as_it = broker.stub(Party("agency", "IT-BORDER"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await as_it.SubmitReceipts(agency_pb2.SubmitReceiptsRequest(batches=[batch]), timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    as_de = broker.stub(Party("agency", "DE-BKA"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await as_de.SubmitReceipts(agency_pb2.SubmitReceiptsRequest(batches=[batch]), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert broker.count("receipts") == 0


async def test_delivery_status_only_for_own_notices(broker: Running) -> None:
    envelopes = await publish(broker, 1)
    notice_id = notice_pb2.NoticeHeader.FromString(envelopes[0].header.header_bytes).notice_id
    other = broker.stub(Party("agency", "DE-BKA"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await other.GetDeliveryStatus(
            agency_pb2.DeliveryStatusRequest(notice_id=notice_id), timeout=5
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_obligations_reach_the_recipient_and_its_receipt(broker: Running) -> None:
    # H2 (Europol handling code): no onward transmission, carried as an obligation.
    async with broker.node("FR-NCB") as fr, broker.node("DE-BKA") as de:
        await fr.publish(
            kind="interpol.red",
            purpose="locate_arrest",
            sections={k: v for k, v in RED_SECTIONS.items() if k != "biometrics"},
            handling_codes=["H2"],
            recipients=["DE-BKA"],
        )
        got: list[ReceivedNotice] = []
        stop = asyncio.Event()

        async def handle(notice: ReceivedNotice) -> None:
            got.append(notice)
            stop.set()

        await asyncio.wait_for(de.listen(handle, stop=stop), 10)
    kinds = {o.kind for o in got[0].obligations}
    assert "no_onward_transmission" in kinds
    assert "max_retention_days" in kinds
    assert all(o.rule for o in got[0].obligations)


async def test_large_deliveries_are_split_across_messages(broker: Running) -> None:
    # Three notices of ~3 MB each: together above the 8 MiB message limit.
    big = {
        **RED_SECTIONS,
        "case_facts": section_for("interpol.red", "case_facts", b"x" * 3_000_000),
    }
    stub = broker.stub(Party("agency", "FR-NCB"))
    for _ in range(3):
        envelope = seal(broker.deployment.keys_dir, red_header(), {"DE-BKA": POLICE}, big)
        await stub.Publish(agency_pb2.PublishRequest(envelopes=[envelope]), timeout=30)
    call = broker.stub(Party("agency", "DE-BKA")).Subscribe()
    await call.write(agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=10)))
    got = await read_deliveries(call, 3, timeout=30)
    assert len(got) == 3
    call.cancel()


async def test_a_second_broker_on_the_same_data_is_refused(broker: Running) -> None:
    from broker.errors import FailedPrecondition
    from broker.server.app import BrokerApp

    with pytest.raises(FailedPrecondition, match="another broker"):
        BrokerApp(broker.app.config)
