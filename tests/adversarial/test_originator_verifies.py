"""The originator verifies instead of trusting (issue 9, item 2).

The broker lies about delivery: it drops a recipient from its status, shows a receipt
someone else signed, names a recipient the notice was never sealed for, keeps a notice
out of the transparency log, or does not tell a recipient of a withdrawal. Each is
caught by the originator's SDK: `broker/client/verify.py` (NodeVerifier.verify_delivery
and verify_logged), against what the node sealed (`broker/client/sent.py`).
"""

from __future__ import annotations

import asyncio

import pytest

from broker.store.sqlite import SqlStore
from tests.integration.conftest import Running

from .kit import agencies, publish, settled, tamper, until

pytestmark = pytest.mark.integration


async def test_a_recipient_dropped_from_the_status_is_missing(broker: Running) -> None:
    """The operator deletes a delivery row: no event, and the broker's status leaves the
    recipient out. The SDK's sealed audience says it must be there."""
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        fr = a["FR-NCB"].node
        notice_id = await publish(fr, ["DE-BKA", "IT-BORDER"])
        await until(lambda: a["DE-BKA"].versions(notice_id) == [1])
        deleted = await tamper(
            broker,
            "DELETE FROM deliveries WHERE notice_id=? AND recipient='IT-BORDER'",
            notice_id,
        )
        assert deleted == 1
        status = await fr.delivery_status(notice_id)
        assert [r.recipient for r in status.recipients] == ["DE-BKA"]  # the broker's word
        report = await fr.verify_delivery(notice_id)
        assert report.verdicts()["IT-BORDER"] == "missing"
        assert [(f.kind, f.subject) for f in report.findings] == [
            ("recipient_missing", "IT-BORDER")
        ]
        # The expiry report is built from the signed audience, not the broker's rows.
        assert "IT-BORDER" in report.never_verified()


async def test_a_receipt_signed_by_someone_else_is_unverified(broker: Running) -> None:
    """The broker shows, for IT-BORDER, the receipt DE-BKA signed: `receipt=yes` before;
    now the signature does not verify against IT-BORDER's CA-bound key."""
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        fr = a["FR-NCB"].node
        notice_id = await publish(fr, ["DE-BKA", "IT-BORDER"])
        await until(lambda: a["DE-BKA"].versions(notice_id) == [1])
        await until(lambda: a["DE-BKA"].node.stats.receipts_acked >= 1)
        # A forged receipt row for IT-BORDER (who never connected), with DE-BKA's proof.
        changed = await tamper(
            broker,
            "INSERT INTO receipts (notice_id, version, recipient, header_digest, proven, "
            "received_at_ms) SELECT notice_id, version, 'IT-BORDER', header_digest, proven, "
            "received_at_ms FROM receipts WHERE notice_id=? AND recipient='DE-BKA'",
            notice_id,
        )
        assert changed == 1
        await tamper(
            broker,
            "UPDATE deliveries SET state='delivered' WHERE notice_id=? AND recipient='IT-BORDER'",
            notice_id,
        )
        status = await fr.delivery_status(notice_id)
        shown = {r.recipient: bool(r.receipt.receipt) for r in status.recipients}
        assert shown == {"DE-BKA": True, "IT-BORDER": True}  # what the broker claims
        report = await settled(fr, notice_id)
        assert report.verdicts()["IT-BORDER"] == "unverified"
        (finding,) = [f for f in report.findings if f.subject == "IT-BORDER"]
        assert finding.kind == "receipt_unverified"
        assert report.verdicts()["DE-BKA"] == "verified"


async def test_a_recipient_never_sealed_for_is_reported(broker: Running) -> None:
    async with agencies(broker, "FR-NCB") as a:
        fr = a["FR-NCB"].node
        notice_id = await publish(fr, ["DE-BKA"])
        await tamper(
            broker,
            "INSERT INTO deliveries (recipient, notice_id, version, sections, state) "
            "VALUES ('IT-BORDER', ?, 1, '[\"identity\"]', 'pending')",
            notice_id,
        )
        report = await fr.verify_delivery(notice_id)
        assert [(f.kind, f.subject) for f in report.findings] == [
            ("unsealed_recipient", "IT-BORDER")
        ]
        assert [r.recipient for r in report.recipients] == ["DE-BKA"]


async def test_a_notice_kept_out_of_the_log_is_reported(
    broker: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker stores the notice but appends no leaf for it: the originator asks for
    the proof of its publication and reports `not_logged` (verify_logged, which the
    listener's sweep runs)."""

    def publish_unlogged(self: SqlStore, items: object, at_ms: int) -> object:
        return self.publish(items)  # type: ignore[arg-type]

    monkeypatch.setattr(SqlStore, "publish_logged", publish_unlogged)
    async with agencies(broker, "FR-NCB") as a:
        fr = a["FR-NCB"]
        notice_id = await publish(fr.node, ["DE-BKA"])
        await until(lambda: bool(fr.found("not_logged")), timeout=20)
        (finding,) = fr.found("not_logged")
        assert finding.notice_id == notice_id and "not in the log" in finding.detail
        report = await fr.node.verify_delivery(notice_id)
        assert report.logged == ()


async def test_a_logged_notice_is_verified_without_findings(broker: Running) -> None:
    """The honest run: the same checks find nothing, and the receipt becomes verified."""
    async with agencies(broker, "FR-NCB", "DE-BKA") as a:
        fr = a["FR-NCB"]
        notice_id = await publish(fr.node, ["DE-BKA"])
        await until(lambda: a["DE-BKA"].node.stats.receipts_acked >= 1)

        async def verified() -> bool:
            report = await fr.node.verify_delivery(notice_id)
            assert report.findings == ()
            return report.verdicts() == {"DE-BKA": "verified"} and report.logged == (1,)

        for _ in range(100):
            if await verified():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("never verified")
        assert fr.findings == []


async def test_a_withdrawal_the_broker_keeps_from_a_recipient_is_reported(
    broker: Running,
) -> None:
    """Every recipient sealed for must be told of a withdrawal and acknowledge it with
    a signed receipt; one the broker leaves out is `missing`."""
    async with agencies(broker, "FR-NCB", "DE-BKA", "IT-BORDER") as a:
        fr = a["FR-NCB"].node
        notice_id = await publish(fr, ["DE-BKA", "IT-BORDER"])
        await until(lambda: all(a[x].versions(notice_id) == [1] for x in ("DE-BKA", "IT-BORDER")))
        # The broker drops IT-BORDER's control before it is sent.
        await a["IT-BORDER"].halt()
        result = await fr.withdraw(notice_id, "arrested")
        removed = await tamper(
            broker,
            "DELETE FROM controls WHERE action_id=? AND recipient='IT-BORDER'",
            result.action_id,
        )
        assert removed == 1
        await until(lambda: [x.kind for x in a["DE-BKA"].actions] == ["withdraw"])
        await until(lambda: any(x[0] == result.action_id for x in a["DE-BKA"].node.stats.acked))
        report = await fr.verify_delivery(notice_id)
        acks = {x.recipient: x.verdict for x in report.actions}
        assert acks == {"DE-BKA": "verified", "IT-BORDER": "missing"}
        assert ("recipient_missing", "IT-BORDER") in [(f.kind, f.subject) for f in report.findings]
