"""The auditor replays everything (issue 9, item 5).

The broker skips the forwarding-time re-check after the policy changed (it streams a
queued copy the new bundle forbids), or decides with a recipient profile edited in its
database. Each is caught by replay (`broker/core/replay.py`, run by `broker audit replay`
through broker/client/audit/replays.py): forwarding-time decisions are ForwardingDecision leaves
that replay re-evaluates, a receipt signed after a change needs such a leaf, and every
recorded profile must be the administrator-signed registry entry in force.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from broker import pki
from broker.bundles import read_bundle_dir
from broker.client import audit as ac
from broker.client.admin import AdminClient
from broker.core import replay as rp
from broker.core.identity import Party
from broker.sandbox import AUDITOR_ID, REPO_POLICIES
from broker.server import subscribe
from broker.v1 import agency_pb2
from tests.integration.conftest import Running

from .kit import agencies, publish, tamper

pytestmark = pytest.mark.integration


async def replay(b: Running) -> rp.ReplayReport:
    trust = ac.load_trust(b.deployment.keys_dir)
    async with ac.AuditClient(b.target, b.deployment.keys_dir, Party("auditor", AUDITOR_ID)) as c:
        return (await ac.replay(c, trust)).report


async def forbid_border(b: Running, tmp_path: Path) -> None:
    draft = tmp_path / "draft"
    shutil.copytree(REPO_POLICIES, draft)
    (draft / "rules" / "zz-no-border.toml").write_text(
        '[[rule]]\nid = "no-border"\neffect = "forbid"\nreason = "test"\n'
        'recipient_roles = ["border"]\n'
    )
    pki.issue_certificate(b.deployment.keys_dir, Party("admin", "alice"))
    async with AdminClient(b.deployment.keys_dir, "alice", b.target) as admin:
        await admin.activate(read_bundle_dir(draft), "no border")


@pytest.mark.parametrize("lying", [False, True], ids=["honest", "skips-recheck"])
async def test_a_skipped_forwarding_recheck_is_caught_by_replay(
    broker: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lying: bool
) -> None:
    async with agencies(broker, "FR-NCB") as a:
        fr = a["FR-NCB"].node
        notice_id = await publish(fr, ["DE-BKA", "IT-BORDER"])
        await forbid_border(broker, tmp_path)  # IT-BORDER's queued copy is forbidden now
        if lying:  # the attacker: "nothing changed since publish", so no re-check
            monkeypatch.setattr(subscribe, "still_decided", lambda *a, **k: True)
        want = agency_pb2.DELIVERY_STATE_DELIVERED if lying else agency_pb2.DELIVERY_STATE_WITHHELD

        async def state() -> int:
            status = await fr.delivery_status(notice_id)
            return next(r.state for r in status.recipients if r.recipient == "IT-BORDER")

        # IT-BORDER comes online well after the change (beyond the clocks' skew).
        await asyncio.sleep(rp.SKEW_MS / 1000 + 0.5)
        async with agencies(broker, "IT-BORDER"):
            for _ in range(150):
                if await state() == want:
                    break
                await asyncio.sleep(0.1)
            assert await state() == want
    report = await replay(broker)
    found = [f for f in report.findings if f.recipient == "IT-BORDER"]
    if lying:
        assert [f.kind for f in found] == [rp.UNCHECKED], report.findings
    else:
        assert report.ok, [f.describe() for f in report.findings]


async def test_a_profile_edited_in_the_database_is_caught_by_replay(broker: Running) -> None:
    # The attacker widens IT-BORDER's roles in its database and reloads: the broker now
    # decides (and records) with a profile no administrator signed.
    changed = await tamper(
        broker, "UPDATE agencies SET roles=? WHERE id='IT-BORDER'", '["border", "police"]'
    )
    assert changed == 1
    await broker.app.reload_registry()
    async with agencies(broker, "FR-NCB") as a:
        await publish(a["FR-NCB"].node, ["IT-BORDER"])
    report = await replay(broker)
    found = [f for f in report.findings if f.kind == rp.PROFILE_DIFFERS]
    assert found and all(f.recipient == "IT-BORDER" for f in found), report.findings
    assert "police" in found[0].detail
