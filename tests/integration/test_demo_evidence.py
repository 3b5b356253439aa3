"""The demo's evidence step (broker/demo_evidence.py), run small."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.client.node import ReceivedNotice
from broker.demo_evidence import evidence_transfer
from tests.adversarial.kit import SECTIONS, agencies, until
from tests.integration.conftest import Running

pytestmark = pytest.mark.integration


async def test_evidence_transfer_prints_a_verified_chain(broker: Running, tmp_path: Path) -> None:
    lines: list[str] = []
    async with agencies(broker, "FR-NCB", "DE-BKA") as nodes:

        async def opened(notice_id: str, version: int, agency: str) -> ReceivedNotice:
            seen = nodes[agency].notices
            await until(lambda: any(n.notice_id == notice_id for n in seen))
            return next(n for n in seen if n.notice_id == notice_id)

        summary = await evidence_transfer(
            {a: listener.node for a, listener in nodes.items()},
            opened,
            broker.target,
            broker.deployment.keys_dir,
            tmp_path / "work",
            lines.append,
            publish={"kind": "interpol.red", "purpose": "locate_arrest", "sections": SECTIONS},
            size=2_000_000,
        )
    assert summary["plaintext_matches"] and summary["custody_verified"]
    assert summary["custody"] == [
        ("FR-NCB", "sealed"),
        ("DE-BKA", "received"),
        ("DE-BKA", "opened"),
        ("DE-BKA", "forwarded"),
    ]
    text = "\n".join(lines)
    assert "SHA-256 matches" in text and "  verified" in text
    assert not list((tmp_path / "work").glob("evidence.*"))
