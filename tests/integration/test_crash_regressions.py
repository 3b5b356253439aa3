"""Regressions found by the crash trials (tests/integration/test_crash_trials.py), each
reproduced without a crash: a Subscribe stream that ends before the recipient receipts
is what a broker killed under it leaves behind.

* a copy in flight when a newer version superseded it was sent again after the newer
  version left its recipient out;
* a recipient that held a notice whose receipt never reached the broker was not told of
  later lifecycle actions (its copy was pending again, or withheld on redelivery);
* an UpdateRestrictions retried after its first attempt committed was refused;
* a holder whose copy was pending again when a newer version left it out was not told
  that the newer version superseded it;
* a holder that came back after two newer versions had left it out refused the first
  supersession, which the broker sends with the newest signed header;
* a holder that a newer version left out and a later one put back, and that received the
  later one before the supersession, refused the supersession (its header was not newer
  than every version held) and kept the version it had been told to erase;
* a holder that a newer version left out, offline until the originator withdrew the
  notice, was sent its supersession without the newer header (erased with the withdrawn
  notice's ciphertext), refused it and kept its copy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from broker import pki
from broker.client.admin import AdminClient
from broker.client.node import AgencyNode, LifecycleNotice, ReceivedNotice
from broker.core import relay
from broker.core.identity import Party
from broker.sandbox import ADMIN_ID
from broker.v1 import agency_pb2, notice_pb2

from .conftest import Running
from .helpers import RED_SECTIONS, now_ms

pytestmark = pytest.mark.integration


class Holder:
    """A recipient node whose application records the versions and actions it is handed;
    it listens only while a test waits for something."""

    def __init__(self, node: AgencyNode) -> None:
        self.node = node
        self.got: list[int] = []
        self.actions: list[LifecycleNotice] = []

    async def _notice(self, n: ReceivedNotice) -> None:
        self.got.append(n.version)

    async def _action(self, a: LifecycleNotice) -> None:
        self.actions.append(a)

    async def listen_until(self, done: Callable[[], bool]) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            self.node.listen(self._notice, stop=stop, on_lifecycle=self._action)
        )
        await until(done)
        stop.set()
        await asyncio.wait_for(task, 10)


async def publish(fr: AgencyNode, to: list[str], **kw: object) -> str:
    result = await fr.publish(
        kind="interpol.red", purpose="locate_arrest", sections=RED_SECTIONS, recipients=to, **kw
    )
    return result.notice_id


async def lease_and_vanish(b: Running, agency: str, want: int = 1) -> list[notice_pb2.Delivery]:
    """Read `want` deliveries on a raw stream and end it without a receipt, as a recipient
    whose broker was killed before its receipt committed."""
    call = b.stub(Party("agency", agency)).Subscribe()
    await call.write(agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=want)))
    got: list[notice_pb2.Delivery] = []
    while len(got) < want:
        response = await asyncio.wait_for(call.read(), 10)
        got.extend(response.deliveries)
    call.cancel()
    return got


async def states(b: Running, fr: AgencyNode, notice_id: str) -> dict[tuple[str, int], int]:
    status = await fr.delivery_status(notice_id)
    return {(r.recipient, r.version): r.state for r in status.recipients}


async def until(predicate: Callable[[], object], timeout: float = 10) -> None:
    async def loop() -> None:
        while not predicate():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(loop(), timeout)


async def test_superseded_copy_in_flight_is_not_sent_again(broker: Running) -> None:
    async with broker.node("FR-NCB") as fr, broker.node("IT-BORDER") as it:
        notice_id = await publish(fr, ["DE-BKA", "IT-BORDER"])
        assert len(await lease_and_vanish(broker, "IT-BORDER")) == 1
        # Version 2 leaves IT-BORDER out: its copy of version 1 must not go out again.
        await publish(fr, ["DE-BKA"], notice_id=notice_id, version=2)
        seen: list[tuple[str, int]] = []
        actions: list[str] = []
        stop = asyncio.Event()

        async def on_notice(n: ReceivedNotice) -> None:
            seen.append((n.notice_id, n.version))

        async def on_action(a: LifecycleNotice) -> None:
            actions.append(a.kind)

        task = asyncio.create_task(it.listen(on_notice, stop=stop, on_lifecycle=on_action))
        await until(lambda: actions)
        stop.set()
        await asyncio.wait_for(task, 10)
        assert actions == ["superseded"]
        assert seen == []
        state = await states(broker, fr, notice_id)
        assert state[("IT-BORDER", 1)] == agency_pb2.DELIVERY_STATE_PURGED


async def test_holder_whose_copy_is_pending_again_is_told_of_a_withdrawal(
    broker: Running,
) -> None:
    async with broker.node("FR-NCB") as fr:
        notice_id = await publish(fr, ["IT-BORDER", "EU-HUB"])
        assert len(await lease_and_vanish(broker, "IT-BORDER")) == 1
        # A new stream without credit: the broker requeues what the last one left in
        # flight (as after a restart) and sends nothing yet.
        call = broker.stub(Party("agency", "IT-BORDER")).Subscribe()
        await call.write(agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=0)))
        want = agency_pb2.DELIVERY_STATE_PENDING
        for _ in range(200):
            if (await states(broker, fr, notice_id))[("IT-BORDER", 1)] == want:
                break
            await asyncio.sleep(0.05)
        result = await fr.withdraw(notice_id, "arrested")
        call.cancel()
        # Both copies are purged, and both are told: IT-BORDER may hold it (it was sent),
        # EU-HUB's copy was pending (a pending copy may be in flight on a broker that lies).
        assert sorted(result.told) == ["EU-HUB", "IT-BORDER"]
        assert result.purged == 2


async def test_holder_whose_copy_is_pending_again_is_told_of_a_supersession(
    broker: Running,
) -> None:
    async with broker.node("FR-NCB") as fr:
        notice_id = await publish(fr, ["DE-BKA", "IT-BORDER"])
        assert len(await lease_and_vanish(broker, "IT-BORDER")) == 1
        call = broker.stub(Party("agency", "IT-BORDER")).Subscribe()
        await call.write(agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=0)))
        want = agency_pb2.DELIVERY_STATE_PENDING
        for _ in range(200):
            if (await states(broker, fr, notice_id))[("IT-BORDER", 1)] == want:
                break
            await asyncio.sleep(0.05)
        call.cancel()
        # Version 2 leaves IT-BORDER out: it may hold version 1 (it was sent), so it is told.
        await publish(fr, ["DE-BKA"], notice_id=notice_id, version=2)
        status = await fr.delivery_status(notice_id)
        told = {(a.kind, a.recipient) for a in status.actions}
        assert ("superseded", "IT-BORDER") in told, told


async def test_a_supersession_proven_by_a_later_header_is_applied(broker: Running) -> None:
    async with broker.node("FR-NCB") as fr:
        notice_id = await publish(fr, ["DE-BKA", "EU-HUB"])
        async with broker.node("EU-HUB") as hub:
            holder = Holder(hub)
            await holder.listen_until(lambda: holder.got == [1])
            # EU-HUB is offline while version 2 leaves it out and version 3 follows.
            await publish(fr, ["DE-BKA"], notice_id=notice_id, version=2)
            await publish(fr, ["DE-BKA"], notice_id=notice_id, version=3)
            await holder.listen_until(lambda: any(a.kind == "superseded" for a in holder.actions))
            assert hub.inbox.held(notice_id) == 0  # its copy of version 1 is erased
            assert not hub.findings.since(0, notice_id)


async def test_a_holder_put_back_applies_the_supersession_it_missed(broker: Running) -> None:
    async with broker.node("FR-NCB") as fr:
        notice_id = await publish(fr, ["DE-BKA", "EU-HUB"])
        async with broker.node("EU-HUB") as hub:
            holder = Holder(hub)
            await holder.listen_until(lambda: holder.got == [1])
            # EU-HUB is offline while version 2 leaves it out and version 3 puts it back.
            await publish(fr, ["DE-BKA"], notice_id=notice_id, version=2)
            await publish(fr, ["DE-BKA", "EU-HUB"], notice_id=notice_id, version=3)
            await holder.listen_until(
                lambda: holder.got == [1, 3] and any(a.kind == "superseded" for a in holder.actions)
            )
            # Version 1 is erased (version 2 superseded it), version 3 is kept.
            assert hub.inbox.held_versions(notice_id) == [3]
            assert not hub.findings.since(0, notice_id)


async def test_a_supersession_owed_after_a_withdrawal_still_carries_its_proof(
    broker: Running,
) -> None:
    async with broker.node("FR-NCB") as fr:
        notice_id = await publish(fr, ["DE-BKA", "EU-HUB"])
        async with broker.node("EU-HUB") as hub:
            holder = Holder(hub)
            await holder.listen_until(lambda: holder.got == [1])
            # EU-HUB is offline while version 2 leaves it out and the notice is withdrawn.
            await publish(fr, ["DE-BKA"], notice_id=notice_id, version=2)
            await fr.withdraw(notice_id, "arrested")
            await holder.listen_until(lambda: any(a.kind == "superseded" for a in holder.actions))
            assert hub.inbox.held(notice_id) == 0  # its copy of version 1 is erased
            assert not hub.findings.since(0, notice_id)
    # Only the header stays: no ciphertext of the withdrawn notice is left at the broker.
    rows = await broker.app.runner.call(
        lambda s: s.conn.execute(  # type: ignore[attr-defined]
            "SELECT version, length(envelope), length(head) FROM notices WHERE notice_id=? "
            "ORDER BY version",
            (notice_id,),
        ).fetchall()
    )
    assert [(v, e, h > 0) for v, e, h in rows] == [(1, 0, False), (2, 0, True)]
    sections = await broker.app.runner.call(
        lambda s: s.conn.execute(  # type: ignore[attr-defined]
            "SELECT COUNT(*) FROM notice_sections WHERE notice_id=?", (notice_id,)
        ).fetchone()[0]
    )
    assert sections == 0


async def test_holder_withheld_on_redelivery_is_told_but_one_never_sent_is_not(
    broker: Running,
) -> None:
    async with broker.node("FR-NCB") as fr:
        notice_id = await publish(fr, ["IT-BORDER", "DE-BKA"])
        assert len(await lease_and_vanish(broker, "IT-BORDER")) == 1
        # Then the originator excludes Italy, and DE-BKA is suspended before it connects.
        await fr.update_restrictions(
            notice_id, notice_pb2.OriginatorRestrictions(deny_countries=["IT"]), 1
        )
        async with AdminClient(broker.deployment.keys_dir, ADMIN_ID, broker.target) as admin:
            await admin.set_status("DE-BKA", "suspended", "under review")
        # Both reconnect: IT-BORDER's redelivery and DE-BKA's first delivery are withheld.
        for agency in ("IT-BORDER", "DE-BKA"):
            call = broker.stub(Party("agency", agency)).Subscribe()
            await call.write(agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=4)))
            key = (agency, 1)
            for _ in range(200):
                if (await states(broker, fr, notice_id))[key] == agency_pb2.DELIVERY_STATE_WITHHELD:
                    break
                await asyncio.sleep(0.05)
            call.cancel()
        result = await fr.withdraw(notice_id, "arrested")
        # IT-BORDER was sent a copy and must delete it; DE-BKA never learns of the notice.
        assert list(result.told) == ["IT-BORDER"]


async def test_restriction_update_retried_after_it_committed_succeeds(broker: Running) -> None:
    async with broker.node("FR-NCB") as fr:
        notice_id = await publish(fr, ["DE-BKA"])
        update = agency_pb2.RestrictionUpdate(
            notice_id=notice_id,
            restrictions=notice_pb2.OriginatorRestrictions(deny_countries=["DE"]),
            sequence=1,
            at_ms=now_ms(),
        ).SerializeToString(deterministic=True)
        seed = pki.load_agency(broker.deployment.keys_dir, "FR-NCB").signing_seed
        request = agency_pb2.UpdateRestrictionsRequest(
            update=update, signature=relay.sign_restriction_update(update, seed)
        )
        # The same signed bytes twice: the SDK's retry after an answer lost in a crash.
        first = await fr.stub.UpdateRestrictions(request, timeout=5)
        again = await fr.stub.UpdateRestrictions(request, timeout=5)
        assert (first.withheld, again.withheld) == (1, 0)
        actions = await broker.app.runner.call(lambda s: s.admin_actions(100))
        assert [a.action for a in actions].count("notice.restrictions") == 1
