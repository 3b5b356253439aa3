"""Judicial cooperation requests through a real broker over mutual TLS: the signed
lifecycle (issue, receive, recognise or refuse, partial results, executed, withdrawn),
who may take each step, illegal transitions, tampered signatures, time limits from the
signed times, reminders, and every step in the transparency log."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import grpc
import pytest

from broker.client.node import AgencyNode
from broker.core import lifecycle, logleaf
from broker.core.identity import Party
from broker.core.requests import HOUR_MS
from broker.sandbox import AUDITOR_ID
from broker.v1 import audit_pb2, audit_pb2_grpc, notice_pb2
from tests.content import sections_for

from .conftest import Running
from .test_lifecycle import agencies, until

pytestmark = pytest.mark.integration

EIO = {
    "request": b"hear the witness about the transfers of 2025",
    "measures": b"hearing_witness",
    "legal_basis": b"fraud, art. 313-1 code penal, 5 years",
    "judicial": b"juge d'instruction, Paris, ref 2026/117",
}
PRODUCTION = {
    "data_requested": b"subscriber data of one account",
    "legal_basis": b"fraud",
    "judicial": b"order 2026/9",
}
DAY_MS = 24 * HOUR_MS


async def issue(fr: AgencyNode, kind: str = "request.eio", priority: str = "normal") -> str:
    sections = EIO if kind == "request.eio" else PRODUCTION
    published = await fr.issue_request(
        kind, "DE-BKA", sections, purpose="investigation", priority=priority
    )
    return published.notice_id


async def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    code: grpc.StatusCode = info.value.code()
    return code


async def request_leaves(broker: Running, agency: str, notice_id: str) -> list[Any]:
    def read(s: Any) -> list[Any]:
        leaves, _next = s.tlog_entries(0, s.tlog_size(), 10_000, agency)
        parsed = [logleaf.parse(b) for _i, b in leaves]
        return [
            p.request_step
            for p in parsed
            if p.WhichOneof("entry") == "request_step" and p.request_step.notice_id == notice_id
        ]

    out: list[Any] = await broker.app.runner.call(read)
    return out


async def test_happy_path_delivered_acknowledged_and_logged(broker: Running) -> None:
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        fr, de = a["FR-NCB"].node, a["DE-BKA"].node
        rid = await issue(fr)
        await until(lambda: any(n.notice_id == rid for n in a["DE-BKA"].notices))
        opened = next(n for n in a["DE-BKA"].notices if n.notice_id == rid)
        assert opened.header.kind == "request.eio"
        assert opened.sections["measures"] == b"hearing_witness"
        await de.request_step("receive", rid)
        await de.request_step("recognise", rid)
        partial = await de.send_result(
            rid, "FR-NCB", {"results": b"statement 1"}, purpose="investigation"
        )
        await de.send_result(
            rid, "FR-NCB", {"results": b"statement 2"}, purpose="investigation", final=True
        )
        # Each step reached the other party, which acknowledged it with a signed receipt.
        await until(lambda: len(a["FR-NCB"].actions) >= 4)
        await until(lambda: len(a["DE-BKA"].actions) >= 1)
        assert [lifecycle.NAMES[x.action.kind] for x in a["FR-NCB"].actions] == [
            "request_receive",
            "request_recognise",
            "request_partial",
            "request_execute",
        ]
        assert a["FR-NCB"].actions[2].action.result_notice_id == partial.notice_id
        await until(lambda: any(n.notice_id == partial.notice_id for n in a["FR-NCB"].notices))

        async def acknowledged() -> bool:
            rows = await broker.app.runner.call(lambda s: s.control_status(rid))
            return len(rows) == 5 and all(r[3] == "delivered" for r in rows)

        for _ in range(300):
            if await acknowledged():
                break
            await __import__("asyncio").sleep(0.05)
        assert await acknowledged()
        # Both sides see the request, verified from the signed steps.
        for node, role in ((fr, "issuer"), (de, "executor")):
            (view,) = await node.requests(role=role)
            assert view.problem == ""
            assert (view.notice_id, view.state, view.deadline, view.overdue) == (
                rid,
                "executed",
                "",
                False,
            )
            assert [s.step for s in view.steps] == [
                "issue",
                "receive",
                "recognise",
                "partial",
                "execute",
            ]
        assert await fr.requests(role="executor") == []
        assert await fr.requests(open_only=True) == []
    # Every step is a leaf both parties (and auditors) can read, with the signed time and
    # the digest of what was signed.
    leaves = await request_leaves(broker, "DE-BKA", rid)
    assert [(x.step, x.actor, x.state) for x in leaves] == [
        ("issue", "FR-NCB", "issued"),
        ("receive", "DE-BKA", "received"),
        ("recognise", "DE-BKA", "recognised"),
        ("partial", "DE-BKA", "in_execution"),
        ("execute", "DE-BKA", "executed"),
    ]
    assert leaves == await request_leaves(broker, "FR-NCB", rid)
    assert await request_leaves(broker, "IT-BORDER", rid) == []
    rows = await broker.app.runner.call(lambda s: s.request_row(rid))
    for leaf, (action, _sig) in zip(leaves, rows.steps, strict=True):
        assert leaf.action_digest == hashlib.sha256(action).digest()
        assert leaf.signed_at_ms == notice_pb2.LifecycleAction.FromString(action).at_ms


async def test_refusal_needs_grounds_of_the_kind(broker: Running) -> None:
    async with broker.node("FR-NCB") as fr, broker.node("DE-BKA") as de:
        rid = await issue(fr)
        await de.request_step("receive", rid)
        assert await code_of(de.request_step("refuse", rid)) == grpc.StatusCode.INVALID_ARGUMENT
        assert (
            await code_of(de.request_step("refuse", rid, grounds=["eaw.3.1"]))
            == grpc.StatusCode.INVALID_ARGUMENT
        )
        (before,) = await de.requests()
        assert before.state == "received"  # the bad refusals changed nothing
        await de.request_step(
            "refuse", rid, grounds=["eio.11.1.d", "eio.11.1.f"], reason="see file"
        )
        (view,) = await fr.requests()
        assert (view.state, view.grounds, view.deadline, view.problem) == (
            "refused",
            ("eio.11.1.d", "eio.11.1.f"),
            "",
            "",
        )
        assert view.steps[-1].grounds == ("eio.11.1.d", "eio.11.1.f")
        # Refused is final.
        code = await code_of(de.request_step("recognise", rid))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        code = await code_of(fr.request_step("withdraw", rid))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
    (leaf,) = [x for x in await request_leaves(broker, "FR-NCB", rid) if x.step == "refuse"]
    assert list(leaf.grounds) == ["eio.11.1.d", "eio.11.1.f"]


async def test_only_the_entitled_party_acts(broker: Running) -> None:
    async with (
        broker.node("FR-NCB") as fr,
        broker.node("DE-BKA") as de,
        broker.node("IT-BORDER") as it,
    ):
        rid = await issue(fr)
        denied = grpc.StatusCode.PERMISSION_DENIED
        assert await code_of(fr.request_step("receive", rid)) == denied
        assert await code_of(de.request_step("withdraw", rid)) == denied
        await de.request_step("receive", rid)
        assert await code_of(fr.request_step("recognise", rid)) == denied
        await de.request_step("ask_info", rid, reason="which account?")
        assert await code_of(de.request_step("provide_info", rid)) == denied
        # An outsider learns nothing, not even that the request exists.
        assert await code_of(it.request_step("recognise", rid)) == grpc.StatusCode.NOT_FOUND
        assert await it.requests() == []
        # Only the notice's originator issues, and only for one executing authority.
        assert await code_of(de.request_step("issue", rid, target="DE-BKA")) == denied
        await fr.request_step("provide_info", rid, reason="account 1")
        await fr.request_step("withdraw", rid)
        (view,) = await de.requests()
        assert view.state == "withdrawn"


async def test_illegal_transitions_change_nothing(broker: Running) -> None:
    async with broker.node("FR-NCB") as fr, broker.node("DE-BKA") as de:
        rid = await issue(fr)
        failed = grpc.StatusCode.FAILED_PRECONDITION
        assert await code_of(de.request_step("recognise", rid)) == failed  # not received
        assert await code_of(de.request_step("execute", rid)) == failed
        assert await code_of(fr.request_step("issue", rid, target="DE-BKA")) == failed
        assert await code_of(de.request_step("consent", rid)) == failed  # EIO: no consent
        await de.request_step("receive", rid)
        assert await code_of(de.request_step("receive", rid)) == failed
        assert await code_of(de.request_step("partial", rid)) == failed  # not recognised
        (view,) = await fr.requests()
        assert (view.state, len(view.steps)) == ("received", 2)
        # A notice that is not a request kind cannot be issued as one.
        red = await fr.publish(
            kind="interpol.red",
            purpose="locate_arrest",
            sections=sections_for("interpol.red"),
            recipients=["DE-BKA"],
        )
        code = await code_of(fr.request_step("issue", red.notice_id, target="DE-BKA"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        # The issue step's signed priority must be the header's.
        plain = await fr.publish(
            kind="request.eio",
            purpose="investigation",
            sections=EIO,
            recipients=["DE-BKA"],
            restrictions=notice_pb2.OriginatorRestrictions(allow_agencies=["DE-BKA"]),
        )
        code = await code_of(
            fr.request_step(
                "issue", plain.notice_id, target="DE-BKA", priority=notice_pb2.PRIORITY_URGENT
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        # A step signed with a time far from the broker's clock is refused.
        code = await code_of(de.request_step("recognise", rid, at_ms=view.steps[-1].at_ms - DAY_MS))
        assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_tampered_signature_is_refused(broker: Running) -> None:
    async with broker.node("FR-NCB") as fr, broker.node("DE-BKA") as de:
        rid = await issue(fr)
        action = notice_pb2.LifecycleAction(
            action_id=str(uuid.uuid4()),
            notice_id=rid,
            actor="DE-BKA",
            kind=notice_pb2.LIFECYCLE_REQUEST_RECEIVE,
            at_ms=(await fr.requests())[0].steps[0].at_ms,
        ).SerializeToString(deterministic=True)
        signature = lifecycle.sign_action(action, de.credentials.signing_seed)
        tampered = bytearray(signature)
        tampered[5] ^= 1
        signed = notice_pb2.SignedLifecycleAction(action=action, signature=bytes(tampered))
        assert await code_of(de.stub.Act(signed)) == grpc.StatusCode.INVALID_ARGUMENT
        # FR's key does not sign for DE either.
        forged = notice_pb2.SignedLifecycleAction(
            action=action, signature=lifecycle.sign_action(action, fr.credentials.signing_seed)
        )
        assert await code_of(de.stub.Act(forged)) == grpc.StatusCode.INVALID_ARGUMENT
        (view,) = await fr.requests()
        assert view.state == "issued"


async def test_deadlines_come_from_signed_times_and_priority(broker: Running) -> None:
    async with broker.node("FR-NCB") as fr, broker.node("DE-BKA") as de:
        normal = await issue(fr)
        urgent = await issue(fr, priority="urgent")
        production = await issue(fr, "request.production", priority="urgent")
        for rid in (normal, urgent, production):
            (view,) = [v for v in await fr.requests() if v.notice_id == rid]
            assert (view.state, view.deadline) == ("issued", "")  # no limit before receipt
            await de.request_step("receive", rid)
        views = {v.notice_id: v for v in await de.requests()}
        received = {rid: views[rid].steps[1].at_ms for rid in views}
        # EIO Art. 12(3): recognition within 30 days of receipt; urgent: 24 hours.
        assert (views[normal].deadline, views[normal].deadline_ms) == (
            "decision",
            received[normal] + 30 * DAY_MS,
        )
        assert views[urgent].deadline_ms == received[urgent] + 24 * HOUR_MS
        assert views[urgent].priority == "urgent"
        # Reg. 2023/1543 Art. 10(4): an emergency production order within 8 hours.
        assert (views[production].deadline, views[production].deadline_ms) == (
            "execution",
            received[production] + 8 * HOUR_MS,
        )
        # Overdue is visible to both sides, judged at a given time (no sleeping).
        late = received[normal] + 31 * DAY_MS
        for node in (fr, de):
            views_late = {v.notice_id: v for v in await node.requests(as_of_ms=late)}
            assert views_late[normal].overdue and views_late[urgent].overdue
            assert all(not v.problem for v in views_late.values())
        early = received[normal] + 29 * DAY_MS
        assert not {v.notice_id: v for v in await fr.requests(as_of_ms=early)}[normal].overdue
        # Recognised: EIO Art. 12(4), execution within 90 days of the decision.
        await de.request_step("recognise", normal)
        (view,) = [v for v in await fr.requests() if v.notice_id == normal]
        assert (view.deadline, view.deadline_ms) == ("execution", view.steps[2].at_ms + 90 * DAY_MS)


async def test_reminders_before_and_after_a_limit(broker: Running) -> None:
    async with broker.node("FR-NCB") as fr, broker.node("DE-BKA") as de:
        rid = await issue(fr)
        await de.request_step("receive", rid)
        (view,) = await fr.requests()
    due = view.deadline_ms
    remind = due - 120 * HOUR_MS  # the EIO's remind_hours

    def sweep(at: int) -> Any:
        return lambda s: [(e.agency, e.kind) for e in s.due_request_reminders(at)]

    assert await broker.app.runner.call(sweep(remind - 1)) == []
    got = await broker.app.runner.call(sweep(remind + 1))
    assert sorted(got) == [("DE-BKA", "request_reminder"), ("FR-NCB", "request_reminder")]
    assert await broker.app.runner.call(sweep(remind + 2)) == []  # once per limit
    got = await broker.app.runner.call(sweep(due + 1))
    assert sorted(got) == [("DE-BKA", "request_overdue"), ("FR-NCB", "request_overdue")]
    assert await broker.app.runner.call(sweep(due + 2)) == []


async def test_urgent_notices_overtake_a_backlog(broker: Running) -> None:
    from prometheus_client import REGISTRY

    def waits(priority: str) -> float:
        value = REGISTRY.get_sample_value(
            "broker_delivery_wait_seconds_count", {"priority": priority}
        )
        return value or 0.0

    before = waits("urgent"), waits("normal")
    sections = sections_for("interpol.red")
    async with broker.node("FR-NCB") as fr:
        backlog = [
            (
                await fr.publish(
                    kind="interpol.red",
                    purpose="locate_arrest",
                    sections=sections,
                    recipients=["DE-BKA"],
                )
            ).notice_id
            for _ in range(6)
        ]
        urgent = await fr.publish(
            kind="interpol.red",
            purpose="locate_arrest",
            sections=sections,
            recipients=["DE-BKA"],
            priority=notice_pb2.PRIORITY_URGENT,
        )
    # The console's queue view shows how long each priority waits.
    channel = broker.channel(Party("auditor", AUDITOR_ID))
    try:
        queues = await audit_pb2_grpc.AuditServiceStub(channel).GetQueues(
            audit_pb2.GetQueuesRequest(), timeout=10
        )
    finally:
        await channel.close()
    waits_now = {w.priority: w for w in queues.priority_waits}
    assert waits_now[notice_pb2.PRIORITY_URGENT].waiting == 1
    assert waits_now[notice_pb2.PRIORITY_NORMAL].waiting == 6
    assert (
        waits_now[notice_pb2.PRIORITY_NORMAL].oldest_accepted_at_ms
        <= waits_now[notice_pb2.PRIORITY_URGENT].oldest_accepted_at_ms
    )
    async with agencies(broker, "DE-BKA") as a:
        await until(lambda: len(a["DE-BKA"].notices) >= 7)
        order = [n.notice_id for n in a["DE-BKA"].notices]
    assert order[0] == urgent.notice_id  # published last, delivered first
    assert order[1:] == backlog
    assert a["DE-BKA"].notices[0].header.priority == notice_pb2.PRIORITY_URGENT
    assert waits("urgent") == before[0] + 1
    assert waits("normal") == before[1] + 6
