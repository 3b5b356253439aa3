"""Lifecycle through a real broker: updates, suspension, withdrawal, expiry, review,
flags and replies; each reaches every recipient concerned and is acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from broker.bundles import read_bundle_dir
from broker.client.admin import AdminClient
from broker.client.node import AgencyNode, LifecycleNotice, ReceivedNotice
from broker.core import lifecycle
from broker.errors import InvalidArgument
from broker.sandbox import ADMIN_ID, REPO_POLICIES
from broker.v1 import agency_pb2, notice_pb2

from .conftest import Running
from .helpers import RED_SECTIONS, now_ms

pytestmark = pytest.mark.integration
SECTIONS = {k: v for k, v in RED_SECTIONS.items() if k != "biometrics"}


@dataclass
class Listener:
    node: AgencyNode
    notices: list[ReceivedNotice] = field(default_factory=list)
    actions: list[LifecycleNotice] = field(default_factory=list)
    events: list[agency_pb2.StatusEvent] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[object] | None = None

    async def start(self) -> None:
        async def on_notice(n: ReceivedNotice) -> None:
            self.notices.append(n)

        async def on_action(a: LifecycleNotice) -> None:
            self.actions.append(a)

        async def on_event(e: agency_pb2.StatusEvent) -> None:
            self.events.append(e)

        self.stop = asyncio.Event()
        self.task = asyncio.create_task(
            self.node.listen(on_notice, stop=self.stop, on_event=on_event, on_lifecycle=on_action)
        )

    async def halt(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)


async def until(predicate: Callable[[], bool], timeout: float = 15) -> None:
    async def loop() -> None:
        while not predicate():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(loop(), timeout)


@contextlib.asynccontextmanager
async def agencies(b: Running, *ids: str) -> AsyncIterator[dict[str, Listener]]:
    listeners = {i: Listener(b.node(i)) for i in ids}
    for listener in listeners.values():
        await listener.start()
    try:
        yield listeners
    finally:
        for listener in listeners.values():
            await listener.halt()
            await listener.node.close()


def kinds(listener: Listener) -> list[str]:
    return [a.kind for a in listener.actions]


async def publish(fr: AgencyNode, to: list[str], **kw: object) -> str:
    result = await fr.publish(
        kind="interpol.red", purpose="locate_arrest", sections=SECTIONS, recipients=to, **kw
    )
    return result.notice_id


async def test_update_supersedes_and_withdraws_from_dropped_recipients(broker: Running) -> None:
    async with agencies(broker, "FR-NCB", "DE-BKA", "IT-BORDER") as a:
        fr = a["FR-NCB"].node
        notice_id = await publish(fr, ["DE-BKA", "IT-BORDER"])
        await until(lambda: len(a["DE-BKA"].notices) == 1 and len(a["IT-BORDER"].notices) == 1)
        # Version 2 goes to DE-BKA only: IT-BORDER is told to delete version 1.
        await publish(fr, ["DE-BKA"], notice_id=notice_id, version=2)
        await until(
            lambda: len(a["DE-BKA"].notices) == 2 and kinds(a["IT-BORDER"]) == ["superseded"]
        )
        assert [n.version for n in a["DE-BKA"].notices] == [1, 2]
        assert a["IT-BORDER"].actions[0].erased == 1
        assert a["IT-BORDER"].node.inbox.held(notice_id) == 0
        # Versions go in order; nobody else may publish under this id.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await publish(fr, ["DE-BKA"], notice_id=notice_id, version=4)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await publish(a["DE-BKA"].node, ["FR-NCB"], notice_id=notice_id, version=3)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_withdrawal_reaches_every_recipient_including_one_offline(broker: Running) -> None:
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        fr = a["FR-NCB"].node
        it = Listener(broker.node("IT-BORDER"))
        await it.start()
        notice_id = await publish(fr, ["DE-BKA", "IT-BORDER", "EU-HUB"])
        await until(lambda: len(a["DE-BKA"].notices) == 1 and len(it.notices) == 1)
        await it.halt()  # IT-BORDER goes offline; EU-HUB never connected at all
        result = await fr.withdraw(notice_id, "arrested in Lyon")
        # Every recipient in the signed audience is told, EU-HUB too: its copy never left
        # the broker (it is purged), but the withdrawal reaches it when it connects.
        assert sorted(result.told) == ["DE-BKA", "EU-HUB", "IT-BORDER"]
        assert result.purged == 1
        await until(lambda: kinds(a["DE-BKA"]) == ["withdraw"])
        assert a["DE-BKA"].node.inbox.held(notice_id) == 0
        await until(lambda: any(e.kind == agency_pb2.EVENT_KIND_PURGED for e in a["FR-NCB"].events))
        # IT-BORDER comes back and gets the withdrawal.
        await it.start()
        await until(lambda: kinds(it) == ["withdraw"])
        assert it.actions[0].reason == "arrested in Lyon"  # opened from its sealed box
        assert it.actions[0].action.reason.startswith("sha256:")  # what the broker saw
        assert it.node.inbox.held(notice_id) == 0
        # Wait for the broker to confirm both acknowledgements before going offline again.
        for node in (it.node, a["DE-BKA"].node):
            await until(lambda n=node: any(x[0] == result.action_id for x in n.stats.acked))
        await it.halt()
        await it.node.close()
        status = await fr.delivery_status(notice_id)
        states = {r.recipient: r.state for r in status.recipients}
        assert states["EU-HUB"] == agency_pb2.DELIVERY_STATE_PURGED
        # Every control delivery is acknowledged by a signed receipt.
        rows = await broker.app.runner.call(lambda s: s.control_status(notice_id))
        assert {(r[2], r[3]) for r in rows} == {
            ("DE-BKA", "delivered"),
            ("IT-BORDER", "delivered"),
            ("EU-HUB", "pending"),
        }
        # Withdrawn is final: no update, no second withdrawal.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await fr.withdraw(notice_id, "again")
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_only_the_originator_may_suspend_withdraw_or_extend(broker: Running) -> None:
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        notice_id = await publish(a["FR-NCB"].node, ["DE-BKA"])
        await until(lambda: len(a["DE-BKA"].notices) == 1)
        de = a["DE-BKA"].node
        for call in (
            de.withdraw(notice_id, "x"),
            de.suspend(notice_id, now_ms() + 60_000),
            de.extend(notice_id, now_ms() + 400 * 86_400_000, "needed"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        async with broker.node("IT-BORDER") as it:  # neither sent nor received it
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await it.flag(notice_id, "not ours")
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await a["FR-NCB"].node.flag(notice_id, "the originator cannot flag")
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert broker.count("controls") == 0 and broker.count("lifecycle_actions") == 0


async def test_suspend_holds_undelivered_copies_until_resumed(broker: Running) -> None:
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        fr = a["FR-NCB"].node
        notice_id = await publish(fr, ["DE-BKA", "IT-BORDER"])
        await until(lambda: len(a["DE-BKA"].notices) == 1)
        result = await fr.suspend(notice_id, now_ms() + 3_600_000, "under review")
        assert list(result.told) == ["DE-BKA"]
        await until(lambda: kinds(a["DE-BKA"]) == ["suspend"])
        it = Listener(broker.node("IT-BORDER"))
        await it.start()
        await asyncio.sleep(0.5)
        assert it.notices == []  # suspended: its copy is held
        await fr.resume(notice_id)
        await until(lambda: len(it.notices) == 1 and kinds(a["DE-BKA"]) == ["suspend", "resume"])
        await it.halt()
        await it.node.close()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await fr.suspend(notice_id, now_ms() + 400 * 86_400_000)  # beyond six months
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_flags_reach_originator_and_other_recipients(broker: Running) -> None:
    async with agencies(broker, "FR-NCB", "DE-BKA", "IT-BORDER") as a:
        fr, de = a["FR-NCB"].node, a["DE-BKA"].node
        notice_id = await publish(fr, ["DE-BKA", "IT-BORDER"])
        await until(lambda: len(a["DE-BKA"].notices) == 1 and len(a["IT-BORDER"].notices) == 1)
        result = await de.flag(notice_id, "extradition barred by our constitution")
        assert list(result.told) == []  # a recipient does not learn the other recipients
        await until(lambda: kinds(a["FR-NCB"]) == ["flag"] and kinds(a["IT-BORDER"]) == ["flag"])
        assert a["FR-NCB"].actions[0].action.actor == "DE-BKA"
        await fr.request_flag_lift(notice_id, "DE-BKA", "new assurances given")
        await until(lambda: kinds(a["DE-BKA"]) == ["request_flag_lift"])
        await de.lift_flag(notice_id, "assurances accepted")
        await until(lambda: kinds(a["FR-NCB"]) == ["flag", "lift_flag"])
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await de.lift_flag(notice_id)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_hit_report_goes_to_the_originator_only_with_a_deadline(broker: Running) -> None:
    async with agencies(broker, "FR-NCB", "DE-BKA", "IT-BORDER") as a:
        fr, de = a["FR-NCB"].node, a["DE-BKA"].node
        await publish(fr, ["DE-BKA", "IT-BORDER"])
        await until(lambda: len(a["DE-BKA"].notices) == 1 and len(a["IT-BORDER"].notices) == 1)
        notice = a["DE-BKA"].notices[0]
        hit = await de.reply(
            "reply.hit_report",
            notice,
            {"hit": b"Found at Frankfurt airport 2026-11-28 09:40; detained"},
            respond_within_ms=12 * 3_600_000,  # SIRENE: answer within 12 hours
        )
        assert list(hit.audience) == ["FR-NCB"]
        await until(lambda: len(a["FR-NCB"].notices) == 1)
        got = a["FR-NCB"].notices[0]
        assert got.header.in_reply_to == notice.notice_id and got.header.kind == "reply.hit_report"
        assert got.sections["hit"].startswith(b"Found at Frankfurt")
        open_replies = await fr.replies(open_only=True)
        (row,) = open_replies.replies
        assert row.notice_id == hit.notice_id and row.respond_by_ms > now_ms()
        assert not row.overdue and not row.answered_by
        # The originator answers; the reply is then answered.
        await fr.reply("reply.info_request", got, {"request": b"Send the arrest report"})
        await until(lambda: len(a["DE-BKA"].notices) == 2)
        (row,) = (await fr.replies()).replies[:1]
        assert row.answered_by
        # A hit report may not go to another recipient, nor come from a non-recipient.
        with pytest.raises(Exception) as info:
            await de.reply("reply.hit_report", notice, {"hit": b"x"}, to="IT-BORDER")
        assert "originator" in str(info.value) or "PERMISSION_DENIED" in str(info.value)
        async with broker.node("EU-HUB") as hub:
            with pytest.raises(grpc.aio.AioRpcError) as rpc:
                await hub.reply(
                    "reply.hit_report",
                    notice.notice_id,
                    {"hit": b"x"},
                    to="FR-NCB",
                    purpose="locate_arrest",
                )
            assert rpc.value.code() == grpc.StatusCode.NOT_FOUND  # outsiders learn nothing


async def test_correction_from_the_originator_only(broker: Running) -> None:
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        fr, de = a["FR-NCB"].node, a["DE-BKA"].node
        notice_id = await publish(fr, ["DE-BKA"])
        await until(lambda: len(a["DE-BKA"].notices) == 1)
        await fr.reply(
            "reply.correction", notice_id, {"correction": b"Date of birth is 1971"}, to="DE-BKA"
        )
        await until(lambda: len(a["DE-BKA"].notices) == 2)
        assert a["DE-BKA"].notices[1].header.kind == "reply.correction"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await de.reply(
                "reply.correction", a["DE-BKA"].notices[0], {"correction": b"x"}, to="FR-NCB"
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_expiry_purges_a_notice_never_delivered(broker: Running) -> None:
    async with agencies(broker, "FR-NCB") as a:
        fr = a["FR-NCB"].node
        notice_id = await publish(fr, ["DE-BKA"], expires_in_ms=1500)  # DE-BKA never connects
        await until(
            lambda: any(e.kind == agency_pb2.EVENT_KIND_EXPIRED for e in a["FR-NCB"].events)
        )
        expired = next(e for e in a["FR-NCB"].events if e.kind == agency_pb2.EVENT_KIND_EXPIRED)
        assert "never delivered to DE-BKA" in expired.detail
        status = await fr.delivery_status(notice_id)
        assert status.recipients[0].state == agency_pb2.DELIVERY_STATE_PURGED
        assert broker.count("notices WHERE length(envelope) > 0") == 0  # ciphertext purged
    async with agencies(broker, "DE-BKA") as late:
        await asyncio.sleep(0.5)
        assert late["DE-BKA"].notices == []


async def test_expiry_tells_holders_to_delete(broker: Running) -> None:
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        notice_id = await publish(a["FR-NCB"].node, ["DE-BKA"], expires_in_ms=4000)
        await until(lambda: len(a["DE-BKA"].notices) == 1)
        await until(lambda: kinds(a["DE-BKA"]) == ["expired"])
        assert a["DE-BKA"].node.inbox.held(notice_id) == 0


async def test_review_reminder_and_extension(broker: Running, tmp_path: Path) -> None:
    # A bundle whose Red notices are due for review at once (review point on day 1).
    draft = tmp_path / "draft"
    shutil.copytree(REPO_POLICIES, draft)
    catalogue = draft / "catalogue.toml"
    text = catalogue.read_text()
    start = text.index('[kinds."interpol.red"]')
    head, tail = text[:start], text[start:]
    tail = tail.replace("review_days = 1644", "review_days = 1", 1)
    catalogue.write_text(head + tail)
    async with AdminClient(broker.deployment.keys_dir, ADMIN_ID, broker.target) as admin:
        await admin.activate(read_bundle_dir(draft), "test review reminders")
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        fr = a["FR-NCB"].node
        # Red notices now review on day 1, so their review lead is 1825 days: a notice
        # kept that long is due for review at once.
        notice_id = await publish(fr, ["DE-BKA"], expires_in_days=1825)
        await until(
            lambda: any(e.kind == agency_pb2.EVENT_KIND_REVIEW_DUE for e in a["FR-NCB"].events)
        )
        await until(lambda: len(a["DE-BKA"].notices) == 1)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await fr.extend(notice_id, now_ms() + 500 * 86_400_000, "")  # no justification
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        result = await fr.extend(
            notice_id,
            now_ms() + 1826 * 86_400_000 - 60_000,  # later than now, within the 5-year cap
            "suspect still at large; warrant renewed",
        )
        assert list(result.told) == ["DE-BKA"]
        await until(lambda: kinds(a["DE-BKA"]) == ["extend"])
        assert "warrant renewed" in a["DE-BKA"].actions[0].reason
        rows = await broker.app.runner.call(
            lambda s: s.conn.execute(
                "SELECT kind, actor FROM lifecycle_actions WHERE notice_id=?", (notice_id,)
            ).fetchall()
        )
        assert rows == [("extend", "FR-NCB")]


async def test_action_ids_are_uuids_and_cannot_hijack_the_brokers(broker: Running) -> None:
    # The broker's own action ids ("<notice>/v1/expired") can never be taken by an agency,
    # so nobody can block an expiry or a supersession by using one first.
    async with agencies(broker, "FR-NCB") as a:
        fr = a["FR-NCB"].node
        notice_id = await publish(fr, ["DE-BKA"])
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await fr.act(
                notice_pb2.LIFECYCLE_SUSPEND,
                notice_id,
                until_ms=now_ms() + 60_000,
                action_id=f"{notice_id}/v1/expired",
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # Sending the very same signed action twice is one action.
        action = notice_pb2.LifecycleAction(
            action_id=str(uuid.uuid4()),
            notice_id=notice_id,
            actor="FR-NCB",
            kind=notice_pb2.LIFECYCLE_SUSPEND,
            until_ms=now_ms() + 60_000,
            at_ms=now_ms(),
        ).SerializeToString()
        signed = notice_pb2.SignedLifecycleAction(
            action=action, signature=lifecycle.sign_action(action, fr.credentials.signing_seed)
        )
        first = await fr.stub.Act(signed, timeout=5)
        again = await fr.stub.Act(signed, timeout=5)
        assert (first.duplicate, again.duplicate) == (False, True)
        assert broker.count("lifecycle_actions") == 1
        # Other bytes under a used id are refused, whoever sends them.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await fr.act(notice_pb2.LIFECYCLE_RESUME, notice_id, action_id=first.action_id)
        assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    async with broker.node("DE-BKA") as de:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await de.act(
                notice_pb2.LIFECYCLE_FLAG, notice_id, reason="x", action_id=first.action_id
            )
        assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert broker.count("lifecycle_actions") == 1


async def test_reasons_are_bounded_and_logged_by_digest(broker: Running) -> None:
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        notice_id = await publish(a["FR-NCB"].node, ["DE-BKA"])
        await until(lambda: len(a["DE-BKA"].notices) == 1)
        with pytest.raises(InvalidArgument, match="limited to 1024 bytes"):
            await a["DE-BKA"].node.flag(notice_id, "x" * 5000)  # refused before sealing
        await a["DE-BKA"].node.flag(notice_id, "Mr DOE is protected here")
    import sqlite3

    conn = sqlite3.connect(broker.app.config.database)
    try:
        leaves = b"".join(bytes(r[0]) for r in conn.execute("SELECT leaf FROM tlog_leaves"))
    finally:
        conn.close()
    assert b"Mr DOE" not in leaves  # free text never enters the append-only log


async def test_a_suspended_agency_cannot_act(broker: Running) -> None:
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        notice_id = await publish(a["FR-NCB"].node, ["DE-BKA"])
        await until(lambda: len(a["DE-BKA"].notices) == 1)
        async with AdminClient(broker.deployment.keys_dir, ADMIN_ID, broker.target) as admin:
            await admin.set_status("DE-BKA", "suspended", "review")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await a["DE-BKA"].node.flag(notice_id, "not here")
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
