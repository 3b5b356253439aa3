"""Recipients apply only what is signed (issue 9, item 3).

In each test the broker lies (its database edited under it, or its own unsigned orders
forged) and the recipient's node catches it: `broker/client/intake.py` (NodeIntake), with
the node's inbox (`broker/client/inbox.py`) keeping tombstones, embargoes and deadlines.
"""

from __future__ import annotations

import asyncio

import pytest

from broker.client.types import now_ms
from broker.core import lifecycle
from broker.store.api import Store
from broker.v1 import notice_pb2
from tests.content import sections_for
from tests.integration.conftest import Running

from .kit import Listener, agencies, keep_copy, publish, restore_copy, tamper, until

pytestmark = pytest.mark.integration
HOUR_MS = 3_600_000


async def test_an_older_version_after_a_newer_one_is_refused_as_stale(broker: Running) -> None:
    """Caught by NodeIntake._take: versions only go up; the older one is refused
    (not receipted) and reported, so the application never sees versions [2, 1]."""
    async with agencies(broker, "FR-NCB") as a:
        fr = a["FR-NCB"].node
        notice_id = await publish(fr, ["DE-BKA"])  # DE-BKA is offline: version 1 waits
        await publish(fr, ["DE-BKA"], notice_id=notice_id, version=2)  # purges version 1
        de = Listener(broker.node("DE-BKA"))
        await de.start()
        try:
            await until(lambda: de.versions(notice_id) == [2])
            # The attacker revives version 1's delivery, which the recipient never had.
            revived = await tamper(
                broker,
                "UPDATE deliveries SET state='pending', attempts=0 "
                "WHERE notice_id=? AND version=1 AND recipient='DE-BKA'",
                notice_id,
            )
            assert revived == 1
            broker.app.wake("DE-BKA")
            await until(lambda: bool(de.found("stale_version")))
            assert de.versions(notice_id) == [2]
            assert de.node.inbox.held_versions(notice_id) == [2]
            (finding,) = de.found("stale_version")
            assert finding.notice_id == notice_id and "version 1" in finding.detail
            # The finding is kept in the node's state database too.
            assert [f.kind for _, f in de.node.findings.since(0, notice_id)] == ["stale_version"]
        finally:
            await de.halt()
            await de.node.close()


async def test_a_withdrawn_notice_is_never_shown_even_if_its_copy_was_pending(
    broker: Running,
) -> None:
    """Caught by NodeIntake._take (the inbox's tombstone): a recipient whose copy was still
    pending is told of the withdrawal too, and refuses the notice when the broker delivers
    it afterwards."""
    async with agencies(broker, "FR-NCB") as a:
        fr = a["FR-NCB"].node
        notice_id = await publish(fr, ["DE-BKA"])  # DE-BKA offline: its copy is pending
        kept = await keep_copy(broker, notice_id)  # the broker keeps what it should erase
        result = await fr.withdraw(notice_id, "arrested")
        assert list(result.told) == ["DE-BKA"]  # told although it never received it
        de = Listener(broker.node("DE-BKA"))
        await de.start()
        try:
            await until(lambda: [x.kind for x in de.actions] == ["withdraw"])
            assert de.node.inbox.closed(notice_id) == "withdrawn"
            # The broker reopens the notice and delivers the withdrawn copy anyway.
            await restore_copy(broker, kept)
            await tamper(broker, "UPDATE notice_state SET closed='' WHERE notice_id=?", notice_id)
            assert (
                await tamper(
                    broker,
                    "UPDATE deliveries SET state='pending', attempts=0 WHERE notice_id=?",
                    notice_id,
                )
                == 1
            )
            broker.app.wake("DE-BKA")
            await until(lambda: bool(de.found("after_closure")))
            assert de.notices == []
            assert de.node.inbox.held(notice_id) == 0
        finally:
            await de.halt()
            await de.node.close()


async def _send_order(
    b: Running, notice_id: str, kind: str, action: bytes, row: str, to: str
) -> None:
    """Store an unsigned broker order for `to` under action id `row`, and wake its stream."""

    def write(store: Store) -> None:
        store.take_action(
            action_id=row,
            notice_id=notice_id,
            actor=lifecycle.BROKER,
            kind=kind,
            action=action,
            signature=b"",
            effect=lifecycle.Effect(tell=(to,)),
            now_ms=1,
        )

    await b.app.runner.call(write)
    b.app.wake(to)


async def _forge_broker_order(
    b: Running,
    kind: notice_pb2.LifecycleKind.ValueType,
    notice_id: str,
    version: int,
    to: str,
) -> str:
    """The broker's own (unsigned) order to delete, issued when no signed data backs it."""
    action_id, action = lifecycle.broker_action(kind, notice_id, version, "forged", 1)
    await _send_order(b, notice_id, lifecycle.NAMES[kind], action, action_id, to)
    return action_id


@pytest.mark.parametrize(
    ("kind", "version"),
    [(notice_pb2.LIFECYCLE_EXPIRED, 1), (notice_pb2.LIFECYCLE_SUPERSEDED, 2)],
    ids=["expired", "superseded"],
)
async def test_an_unsigned_erasure_order_is_refused(
    broker: Running, kind: notice_pb2.LifecycleKind.ValueType, version: int
) -> None:
    """Caught by NodeIntake._check_broker_order: EXPIRED only once the signed expiry has
    passed, SUPERSEDED only with the newer version's header signed by the originator."""
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        de = a["DE-BKA"]
        notice_id = await publish(a["FR-NCB"].node, ["DE-BKA"])  # signed to live a year
        await until(lambda: de.versions(notice_id) == [1])
        action_id = await _forge_broker_order(broker, kind, notice_id, version, "DE-BKA")
        await until(lambda: bool(de.found("unsigned_erasure")))
        assert de.node.inbox.held(notice_id) == 1  # still there
        assert de.actions == []
        # Not acknowledged: the broker cannot show a receipt for it.
        rows = await broker.app.runner.call(lambda s: s.control_status(notice_id))
        assert [(r[0], r[3]) for r in rows if r[0] == action_id] == [(action_id, "in_flight")]


async def _forge_order_as(
    b: Running, notice_id: str, version: int, to: str, *, action_id: str, row_id: str = ""
) -> None:
    """The broker's own SUPERSEDED order for `version`, under an id of its choosing (the
    inner action's id), stored under `row_id` (the same by default)."""
    action = notice_pb2.LifecycleAction(
        action_id=action_id,
        notice_id=notice_id,
        actor=lifecycle.BROKER,
        kind=notice_pb2.LIFECYCLE_SUPERSEDED,
        reason="forged",
        at_ms=1,
        version=version,
    ).SerializeToString(deterministic=True)
    await _send_order(b, notice_id, "superseded", action, row_id or action_id, to)


@pytest.mark.parametrize("version", [0, 1])
async def test_a_supersession_of_no_later_version_is_refused(broker: Running, version: int) -> None:
    """Caught by NodeIntake._check_broker_order: only a version 2 or later supersedes, so
    an order for version 0 or 1 (which the current header of version 1 would "prove")
    is refused, not acknowledged, and never reaches the application as a supersession."""
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        de = a["DE-BKA"]
        notice_id = await publish(a["FR-NCB"].node, ["DE-BKA"])
        await until(lambda: de.versions(notice_id) == [1])
        action_id = lifecycle.broker_action_id(notice_pb2.LIFECYCLE_SUPERSEDED, notice_id, version)
        await _forge_order_as(broker, notice_id, version, "DE-BKA", action_id=action_id)
        await until(lambda: bool(de.found("unsigned_erasure")))
        assert de.actions == [] and de.node.inbox.held(notice_id) == 1
        rows = await broker.app.runner.call(lambda s: s.control_status(notice_id))
        assert [(r[0], r[3]) for r in rows if r[0] == action_id] == [(action_id, "in_flight")]


async def test_a_broker_order_under_a_withdrawal_id_does_not_hide_the_withdrawal(
    broker: Running,
) -> None:
    """Caught by NodeIntake._check_broker_order (red-team finding): the broker holds the
    originator's signed withdrawal back and first sends an order of its own under the
    withdrawal's action id, which the node would record as seen, so that the application
    is never told of the withdrawal. A broker order under any id but the one derived
    from its notice, version and kind is refused; the withdrawal then arrives and the
    application is told."""
    async with agencies(broker, "FR-NCB") as a:
        fr = a["FR-NCB"].node
        de = Listener(broker.node("DE-BKA"))
        await de.start()
        try:
            notice_id = await publish(fr, ["DE-BKA"])
            await until(lambda: de.versions(notice_id) == [1])
            await de.halt()  # offline while FR-NCB withdraws
            await fr.withdraw(notice_id, "arrested")
            rows = await broker.app.runner.call(lambda s: s.control_status(notice_id))
            (real,) = [r[0] for r in rows if r[1] == "withdraw"]
            held_back = await tamper(
                broker, "UPDATE controls SET state='held' WHERE action_id=?", real
            )
            assert held_back == 1
            for version in (0, 2):
                await _forge_order_as(
                    broker, notice_id, version, "DE-BKA", action_id=real, row_id=f"forged-{version}"
                )
            await de.start()

            async def forged_states() -> list[str]:
                rows = await broker.app.runner.call(lambda s: s.control_status(notice_id))
                return sorted(r[3] for r in rows if r[0].startswith("forged-"))

            for _ in range(200):  # both orders sent to the node, neither acknowledged
                if await forged_states() == ["in_flight", "in_flight"]:
                    break
                await asyncio.sleep(0.05)
            assert await forged_states() == ["in_flight", "in_flight"]
            await until(lambda: bool(de.found("unsigned_erasure")))
            assert de.actions == [] and de.node.inbox.held(notice_id) == 1
            await tamper(broker, "UPDATE controls SET state='pending' WHERE action_id=?", real)
            broker.app.wake("DE-BKA")
            await until(lambda: [x.kind for x in de.actions] == ["withdraw"])
            assert de.node.inbox.closed(notice_id) == "withdrawn"
            assert de.node.inbox.held(notice_id) == 0
        finally:
            await de.halt()
            await de.node.close()


async def test_a_genuine_supersession_is_applied(broker: Running) -> None:
    """The other side of the check above: the broker's SUPERSEDED for a recipient dropped
    from version 2 carries version 2's signed header, and the node applies it."""
    async with agencies(broker, "FR-NCB", "DE-BKA", "IT-BORDER") as a:
        fr, it = a["FR-NCB"].node, a["IT-BORDER"]
        notice_id = await publish(fr, ["DE-BKA", "IT-BORDER"])
        await until(lambda: it.versions(notice_id) == [1])
        await publish(fr, ["DE-BKA"], notice_id=notice_id, version=2)
        await until(lambda: [x.kind for x in it.actions] == ["superseded"])
        assert it.node.inbox.held(notice_id) == 0
        assert it.found("unsigned_erasure") == []


async def test_dropped_obligations_are_recomputed_and_reported(broker: Running) -> None:
    """Caught by NodeIntake._take with broker/core/intake.py: the node recomputes the
    obligations under the signed policy and its own signed registry entry, reports the
    difference and applies the stricter set (its receipt acknowledges that set)."""
    async with agencies(broker, "FR-NCB") as a:
        notice_id = await publish(a["FR-NCB"].node, ["DE-BKA"])
        rows = await broker.app.runner.call(
            lambda s: s.conn.execute(  # type: ignore[attr-defined]
                "SELECT length(obligations) FROM deliveries WHERE notice_id=?", (notice_id,)
            ).fetchone()
        )
        assert rows[0] > 0  # the broker decided some
        assert await tamper(
            broker, "UPDATE deliveries SET obligations=x'' WHERE notice_id=?", notice_id
        )
        de = Listener(broker.node("DE-BKA"))
        await de.start()
        try:
            await until(lambda: de.versions(notice_id) == [1])
            (finding,) = de.found("obligations_differ")
            assert "carried 0 obligation(s)" in finding.detail
            (notice,) = de.notices
            kinds = {o.kind for o in notice.obligations}
            assert "max_retention_days" in kinds and len(notice.obligations) > 1
            # The copy is erased at the retention the signed policy sets, not never.
            row = de.node.inbox.conn.execute(
                "SELECT erase_at_ms FROM inbox WHERE notice_id=?", (notice_id,)
            ).fetchone()
            assert row[0] > 0
        finally:
            await de.halt()
            await de.node.close()


async def test_a_dropped_obligation_is_caught_after_the_node_decided_that_shape(
    broker: Running,
) -> None:
    """Caught by NodeIntake._take with broker/core/intake.py's ExpectationCache: a node
    that already decided a notice shape (the first notice, carried honestly) still compares
    what the broker carries on the next notice of the same shape, and catches the drop."""
    async with agencies(broker, "FR-NCB") as a:
        fr = a["FR-NCB"].node
        honest = await publish(fr, ["DE-BKA"])
        dropped = await publish(fr, ["DE-BKA"])
        assert await tamper(
            broker, "UPDATE deliveries SET obligations=x'' WHERE notice_id=?", dropped
        )
        de = Listener(broker.node("DE-BKA"))
        await de.start()
        try:
            await until(lambda: de.versions(honest) == [1] and de.versions(dropped) == [1])
            assert len(de.node._expectations) == 1  # one shape, decided once
            (finding,) = de.found("obligations_differ")
            assert finding.notice_id == dropped
            by_id = {n.notice_id: n for n in de.notices}
            assert [o.SerializeToString() for o in by_id[dropped].obligations] == [
                o.SerializeToString() for o in by_id[honest].obligations
            ]
            assert by_id[dropped].obligations  # the policy's, not the broker's none
        finally:
            await de.halt()
            await de.node.close()


async def test_an_early_release_of_an_embargoed_alert_is_held_and_reported(
    broker: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Caught by NodeIntake._take: the embargo is in the signed header; a node the policy
    holds keeps the notice from its application until then, and reports the release."""
    async with agencies(broker, "FR-NCB") as a:
        fr = a["FR-NCB"].node
        embargo = now_ms() + HOUR_MS
        notice_id = await publish(
            fr,
            ["IT-BORDER", "EU-HUB"],
            kind="sis.art26",
            sections=sections_for("sis.art26", ["identity", "judicial", "action"]),
            restrictions=notice_pb2.OriginatorRestrictions(embargo_until_ms=embargo),
        )
        # The broker releases IT-BORDER's copy now instead of in an hour.
        assert await tamper(
            broker,
            "UPDATE deliveries SET not_before_ms=0 WHERE notice_id=? AND recipient='IT-BORDER'",
            notice_id,
        )
        it = Listener(broker.node("IT-BORDER"))
        await it.start()
        try:
            await until(lambda: bool(it.found("early_release")))
            assert it.notices == []
            assert it.node.inbox.held(notice_id) == 1  # held, and receipted as received
            # At the embargo's end the node's own sweep hands it to the application.
            import broker.client.node as node_module

            real = node_module.now_ms
            monkeypatch.setattr(node_module, "now_ms", lambda: real() + HOUR_MS + 1000)
            await until(lambda: it.versions(notice_id) == [1])
        finally:
            await it.halt()
            await it.node.close()


async def test_copies_are_erased_at_their_signed_expiry_by_the_node_itself(
    broker: Running,
) -> None:
    """Not the broker's order: the node's sweep erases a copy at its signed expiry, and
    records it, even if the broker never sends EXPIRED."""
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        de = a["DE-BKA"]
        notice_id = await publish(a["FR-NCB"].node, ["DE-BKA"], expires_in_ms=2500)
        # The broker never expires it (its own expiry is what lies here).
        await tamper(
            broker,
            "UPDATE notice_state SET expires_at_ms=? WHERE notice_id=?",
            2**62,
            notice_id,
        )
        await until(lambda: de.versions(notice_id) == [1])
        await until(lambda: de.node.inbox.held(notice_id) == 0)
        row = de.node.inbox.conn.execute(
            "SELECT erased FROM inbox WHERE notice_id=?", (notice_id,)
        ).fetchone()
        assert row[0] == "expired"
        assert [x.action.actor for x in de.actions] == ["DE-BKA"]
