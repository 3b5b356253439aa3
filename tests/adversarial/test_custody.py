"""Chains of custody with the broker as the attacker: it drops, reorders, alters or forges
links in its database. The auditor (`broker audit custody`, broker.client.custody) catches
each, trusting only the CA and the log key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from broker.cli.main import main
from broker.client import audit as ac
from broker.client.attachments import Evidence
from broker.client.custody import ChainReport, audit_custody
from broker.core import custody
from broker.core.identity import Party
from broker.sandbox import AUDITOR_ID
from broker.v1 import evidence_pb2
from tests.adversarial.kit import SECTIONS, agencies, tamper, until
from tests.integration.conftest import Running

pytestmark = pytest.mark.integration
CHUNK = 4096


async def chain_of_four(b: Running, tmp_path: Path) -> str:
    """FR-NCB seals, DE-BKA receives, opens and forwards: four links, all logged."""
    source = tmp_path / "evidence.bin"
    source.write_bytes(bytes(range(256)) * 100)
    async with agencies(b, "FR-NCB", "DE-BKA") as nodes:
        published, _ = await Evidence(nodes["FR-NCB"].node).publish(
            source,
            section="photos",
            sections=SECTIONS,
            kind="interpol.red",
            purpose="locate_arrest",
            recipients=["DE-BKA"],
            chunk_size=CHUNK,
        )
        de = nodes["DE-BKA"]
        await until(lambda: any(n.notice_id == published.notice_id for n in de.notices))
        notice = next(n for n in de.notices if n.notice_id == published.notice_id)
        ev = Evidence(de.node)
        await ev.fetch(notice, "photos", tmp_path / "out.bin")
        await ev.forwarded(notice, "photos", "DE-LKA-BW")
    return published.notice_id


async def audited(b: Running, notice_id: str) -> ChainReport:
    """The auditor's report, once a checkpoint covers the whole log as it stands now."""
    size = await b.app.runner.call(lambda s: s.tlog_size())
    trust = ac.load_trust(b.deployment.keys_dir)
    async with ac.AuditClient(b.target, b.deployment.keys_dir, Party("auditor", AUDITOR_ID)) as c:
        for _ in range(200):
            reports = await audit_custody(c, trust, b.deployment.keys_dir, notice_id)
            if reports and reports[0].checkpoint_size >= size:
                return reports[0]
            await asyncio.sleep(0.1)
    raise AssertionError("no checkpoint ever covered the custody links")


async def test_an_honest_chain_verifies_and_prints(
    broker: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notice_id = await chain_of_four(broker, tmp_path)
    report = await audited(broker, notice_id)
    assert report.ok, report.problems
    assert [(link.agency, link.action) for link in report.links] == [
        ("FR-NCB", "sealed"),
        ("DE-BKA", "received"),
        ("DE-BKA", "opened"),
        ("DE-BKA", "forwarded"),
    ]
    argv = [
        "audit",
        "custody",
        notice_id,
        "--broker",
        broker.target,
        "--as",
        f"auditor:{AUDITOR_ID}",
        "--keys-dir",
        str(broker.deployment.keys_dir),
        "--require-cosignatures",  # the chain, not the witnesses' pace, is tested here
        "0",
    ]
    code = await asyncio.to_thread(main, argv)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "verified" in out and "forwarded by DE-BKA (to DE-LKA-BW)" in out


async def test_a_dropped_link_is_caught(broker: Running, tmp_path: Path) -> None:
    notice_id = await chain_of_four(broker, tmp_path)
    assert await tamper(broker, "DELETE FROM custody WHERE notice_id=? AND seq=1", notice_id) == 1
    report = await audited(broker, notice_id)
    assert not report.ok
    assert any("link 1" in p and "missing or out of order" in p for p in report.problems)
    assert any("a link is missing" in p for p in report.problems)


async def test_a_dropped_last_link_is_caught_by_the_log(broker: Running, tmp_path: Path) -> None:
    notice_id = await chain_of_four(broker, tmp_path)
    assert await tamper(broker, "DELETE FROM custody WHERE notice_id=? AND seq=3", notice_id) == 1
    report = await audited(broker, notice_id)
    assert report.problems == [
        "the log holds 4 custody link(s); the broker serves 3: a link is missing"
    ]


async def test_reordered_links_are_caught(broker: Running, tmp_path: Path) -> None:
    notice_id = await chain_of_four(broker, tmp_path)
    await tamper(broker, "UPDATE custody SET seq=99 WHERE notice_id=? AND seq=1", notice_id)
    await tamper(broker, "UPDATE custody SET seq=1 WHERE notice_id=? AND seq=2", notice_id)
    await tamper(broker, "UPDATE custody SET seq=2 WHERE notice_id=? AND seq=99", notice_id)
    report = await audited(broker, notice_id)
    assert not report.ok
    assert any("link 1" in p for p in report.problems)


async def test_an_altered_link_is_caught(broker: Running, tmp_path: Path) -> None:
    notice_id = await chain_of_four(broker, tmp_path)

    def rewrite(store: object) -> None:
        conn = store.conn  # type: ignore[attr-defined]
        (data,) = conn.execute(
            "SELECT record FROM custody WHERE notice_id=? AND seq=3", (notice_id,)
        ).fetchone()
        r = evidence_pb2.CustodyRecord.FromString(bytes(data))
        r.note = "to nobody"  # the broker hides where the evidence went
        conn.execute(
            "UPDATE custody SET record=? WHERE notice_id=? AND seq=3",
            (r.SerializeToString(deterministic=True), notice_id),
        )

    await broker.app.runner.call(rewrite)
    report = await audited(broker, notice_id)
    assert any("not signed by DE-BKA" in p for p in report.problems)


async def test_a_forged_link_is_caught(broker: Running, tmp_path: Path) -> None:
    """The broker appends a link of its own making, signed by a key it holds (not DE-BKA's)."""
    notice_id = await chain_of_four(broker, tmp_path)

    def forge(store: object) -> None:
        conn = store.conn  # type: ignore[attr-defined]
        (data,) = conn.execute(
            "SELECT record FROM custody WHERE notice_id=? AND seq=3", (notice_id,)
        ).fetchone()
        last = evidence_pb2.CustodyRecord.FromString(bytes(data))
        forged = evidence_pb2.CustodyRecord()
        forged.CopyFrom(last)
        forged.seq, forged.previous_digest = 4, custody.record_digest(bytes(data))
        forged.action, forged.note = evidence_pb2.CUSTODY_FORWARDED, "to an unlawful recipient"
        signed = custody.sign_record(forged, bytes(32))
        conn.execute(
            "INSERT INTO custody VALUES (?,?,?,?,?,?,?,?)",
            (
                notice_id,
                1,
                "photos",
                4,
                signed.record,
                signed.signature,
                custody.record_digest(signed.record),
                0,
            ),
        )

    await broker.app.runner.call(forge)
    report = await audited(broker, notice_id)
    assert any("link 4 is not signed by DE-BKA" in p for p in report.problems)
    assert any("log index 0" in p for p in report.problems)
