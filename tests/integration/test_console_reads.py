"""The read-only RPCs behind the console, over real gRPC with mutual TLS: who may call
them, and that they report what the store holds (checkpoints in a period, queues with
pending deliveries, dead letters and overdue replies, key statements)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from broker.client import audit as ac
from broker.client.admin import AdminClient
from broker.client.node import ReceivedNotice
from broker.core.identity import Party
from broker.sandbox import ADMIN_ID, AUDITOR_ID
from broker.v1 import admin_pb2, agency_pb2, audit_pb2, audit_pb2_grpc, notice_pb2

from .conftest import Running, StartBroker
from .helpers import now_ms, red_header, seal

pytestmark = pytest.mark.integration


def audit_stub(b: Running, party: Party) -> audit_pb2_grpc.AuditServiceStub:
    return audit_pb2_grpc.AuditServiceStub(b.channel(party))


async def publish_red(b: Running, audience: dict[str, set[str]]) -> str:
    envelope = seal(b.deployment.keys_dir, red_header(), audience)
    resp = await b.stub(Party("agency", "FR-NCB")).Publish(
        agency_pb2.PublishRequest(envelopes=[envelope]), timeout=10
    )
    return str(resp.results[0].notice_id)


async def queues(b: Running) -> audit_pb2.QueuesResponse:
    stub = audit_stub(b, Party("auditor", AUDITOR_ID))
    resp: audit_pb2.QueuesResponse = await stub.GetQueues(audit_pb2.GetQueuesRequest(), timeout=10)
    return resp


async def test_queues_report_pending_dead_letters_and_overdue_replies(
    start_broker: StartBroker,
) -> None:
    b = await start_broker(lease_ms=2000, max_attempts=1)
    received = await publish_red(b, {"DE-BKA": {"identity"}})
    async with b.node("DE-BKA") as de:
        stop = asyncio.Event()

        async def handle(notice: ReceivedNotice) -> None:
            stop.set()

        await asyncio.wait_for(de.listen(handle, stop=stop), 10)
        # A request for information due 1 ms after it is sent, to the notice's originator.
        request = await de.reply(
            "reply.info_request",
            received,
            {"request": b"prints?"},
            to="FR-NCB",
            respond_within_ms=1,
            purpose="locate_arrest",
        )
    pending = await publish_red(b, {"DE-BKA": {"identity"}})
    dead = await publish_red(b, {"EU-HUB": {"identity"}})
    call = b.stub(Party("agency", "EU-HUB")).Subscribe()
    await call.write(agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=4)))
    while not (await asyncio.wait_for(call.read(), 10)).deliveries:
        pass
    call.cancel()
    for _ in range(200):
        q = await queues(b)
        if q.dead_letters and q.overdue_replies:
            break
        await asyncio.sleep(0.05)
    by = {r.recipient: r for r in q.recipients}
    assert by["DE-BKA"].pending >= 1 and by["EU-HUB"].dead == 1
    assert pending in {i.notice_id for i in q.waiting if i.recipient == "DE-BKA"}
    (letter,) = [i for i in q.dead_letters if not i.control]
    assert (letter.notice_id, letter.recipient, letter.state, letter.attempts) == (
        dead,
        "EU-HUB",
        "dead",
        1,
    )
    assert letter.kind == "interpol.red" and letter.originator == "FR-NCB"
    (overdue,) = q.overdue_replies
    assert (overdue.notice_id, overdue.in_reply_to, overdue.sender, overdue.recipient) == (
        request.notice_id,
        received,
        "DE-BKA",
        "FR-NCB",
    )
    assert overdue.respond_by_ms < q.at_ms


async def test_queues_are_for_auditors_only(broker: Running) -> None:
    for party in (Party("agency", "FR-NCB"), Party("admin", ADMIN_ID)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await audit_stub(broker, party).GetQueues(audit_pb2.GetQueuesRequest(), timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_checkpoints_in_a_period_verify_and_carry_cosignatures(broker: Running) -> None:
    await publish_red(broker, {"DE-BKA": {"identity"}})
    keys = broker.deployment.keys_dir
    trust = ac.load_trust(keys, witnesses=["EU-HUB"])
    async with ac.AuditClient(broker.target, keys, Party("agency", "EU-HUB")) as hub:
        from broker import pki

        creds = pki.load_agency(keys, "EU-HUB")
        cosigned = await ac.cosign(hub, trust, keys.parent / "hub.json", creds)
    assert cosigned.ok
    since = now_ms() - 60_000
    agency = audit_stub(broker, Party("agency", "IT-BORDER"))  # sizes and hashes: any agency
    resp = await agency.ListCheckpoints(audit_pb2.ListCheckpointsRequest(since_ms=since))
    assert resp.total == len(resp.checkpoints) >= 1
    sizes = [c.size for c in resp.checkpoints]
    assert sizes == sorted(sizes, reverse=True)
    for cp in resp.checkpoints:
        verified = trust.open(cp.note)
        assert verified.checkpoint.size == cp.size
    newest = trust.open(resp.checkpoints[0].note)
    assert cosigned.size in sizes
    assert any(
        trust.open(c.note).cosigners == ("urn:broker:agency:EU-HUB",) for c in resp.checkpoints
    )
    assert newest.checkpoint.size == max(sizes)
    limited = await agency.ListCheckpoints(audit_pb2.ListCheckpointsRequest(limit=1))
    assert len(limited.checkpoints) == 1 and limited.total == resp.total
    future = await agency.ListCheckpoints(
        audit_pb2.ListCheckpointsRequest(since_ms=now_ms() + 3_600_000)
    )
    assert not future.checkpoints and future.total == 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await agency.ListCheckpoints(audit_pb2.ListCheckpointsRequest(since_ms=5, until_ms=4))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_key_statements_are_the_ones_the_broker_binds(broker: Running) -> None:
    keys = broker.deployment.keys_dir
    async with AdminClient(keys, ADMIN_ID, broker.target) as admin:
        resp = await admin.call("ListKeyStatements", admin_pb2.ListKeyStatementsRequest())
    ids = [s.agency_id for s in resp.statements]
    assert ids == sorted(a.id for a in broker.deployment.agencies)
    for s in resp.statements:
        on_disk = (keys / "agencies" / s.agency_id / "statement.bin").read_bytes()
        assert s.statement == notice_pb2.SignedKeyStatement.FromString(on_disk)
