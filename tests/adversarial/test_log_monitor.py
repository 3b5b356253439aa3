"""Monitors never accept a shrinking or unprovable log (issue 10, item 4).

The broker rolls its log back (serves a once-valid, older signed head while it still
proves consistency), truncates it (deletes the newest entries under its checkpoints), or
serves a head whose entries it no longer has. Each is caught by the monitor
(`broker/client/audit/checkpoints.py` monitor, `broker audit monitor`), which keeps its state and
writes both signed checkpoints beside it as evidence, with the finding in --json too.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from broker.client import audit as ac
from broker.sandbox import AUDITOR_ID
from broker.store.api import StoredCheckpoint
from tests.integration.conftest import Running

from .kit import agencies, publish, tamper, until

pytestmark = pytest.mark.integration


def auditor(b: Running) -> ac.AuditClient:
    from broker.core.identity import Party

    return ac.AuditClient(b.target, b.deployment.keys_dir, Party("auditor", AUDITOR_ID))


async def grow(b: Running, n: int = 1) -> None:
    async with agencies(b, "FR-NCB", "DE-BKA") as a:
        for _ in range(n):
            notice_id = await publish(a["FR-NCB"].node, ["DE-BKA"])
            await until(lambda nid=notice_id: a["DE-BKA"].versions(nid) == [1])


async def quiet_head(client: ac.AuditClient) -> Any:
    """The latest head once the log stops growing (receipts land after the deliveries)."""
    cp = await client.checkpoint()
    for _ in range(100):
        await asyncio.sleep(0.2)
        again = await client.checkpoint()
        if again.size == cp.size:
            return again
        cp = again
    raise AssertionError("the log kept growing")


async def test_a_rolled_back_head_is_a_rollback_with_evidence(
    broker: Running, tmp_path: Path
) -> None:
    trust = ac.load_trust(broker.deployment.keys_dir)
    state = tmp_path / "monitor.json"
    await grow(broker)
    async with auditor(broker) as client:
        first = await ac.monitor(client, trust, state)
        assert first.ok
        old_size = first.size
        await grow(broker)
        later = await ac.monitor(client, trust, state)
        assert later.ok and later.size > old_size
        kept = state.read_text()

        # The attacker: serve the once-valid older checkpoint as the latest head, while
        # every consistency proof the full tree can give is still served.
        async def stale() -> StoredCheckpoint:
            cp: Any = await broker.app.runner.call(lambda s: s.tlog_checkpoint(old_size))
            return cp  # type: ignore[no-any-return]

        broker.app.checkpoints.issue = stale  # type: ignore[method-assign]
        result = await ac.monitor(client, trust, state)
    assert not result.ok and result.verdict == ac.ROLLBACK, result.message
    assert f"checkpoint {old_size}, older than checkpoint {later.size}" in result.message
    assert state.read_text() == kept  # the newer head stays the one kept
    assert result.evidence is not None
    evidence = json.loads(result.evidence.read_text())
    assert f"\n{later.size}\n" in evidence["kept_checkpoint"]
    assert f"\n{old_size}\n" in evidence["new_checkpoint"]
    assert result.findings[0]["kind"] == ac.ROLLBACK

    args = ["audit", "monitor", "--broker", broker.target, "--keys-dir"]
    args += [str(broker.deployment.keys_dir), "--as", f"auditor:{AUDITOR_ID}"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker.cli.main",
        *args,
        "--state",
        str(state),
        "--json",
        "--require-cosignatures",  # the head the attacker serves (trust.toml asks for 1,
        "0",  # which would read a cosigned checkpoint instead)
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
    out = json.loads(stdout)
    assert proc.returncode == 1
    assert out["ok"] is False and out["findings"][0]["kind"] == "rollback"
    assert out["findings"][0]["evidence"]


async def test_a_truncated_log_is_unprovable_with_evidence(broker: Running, tmp_path: Path) -> None:
    trust = ac.load_trust(broker.deployment.keys_dir)
    state = tmp_path / "monitor.json"
    await grow(broker, 2)
    async with auditor(broker) as client:
        await quiet_head(client)
        kept = await ac.monitor(client, trust, state)
        assert kept.ok
        # The attacker deletes the newest entries and the checkpoints over them, then
        # signs a head over what is left.
        keep = kept.size - 3
        await tamper(broker, "DELETE FROM tlog_leaves WHERE idx >= ?", keep)
        await tamper(broker, "DELETE FROM tlog_cosignatures WHERE size > ?", keep)
        await tamper(broker, "DELETE FROM tlog_checkpoints WHERE size > ?", keep)
        result = await ac.monitor(client, trust, state)
    assert not result.ok, result.message
    assert result.verdict in (ac.UNPROVABLE, ac.ROLLBACK, "fork"), result.message
    assert result.evidence is not None and result.evidence.exists()
    assert json.loads(result.evidence.read_text())["kept_checkpoint"]


async def test_a_head_beyond_the_served_entries_is_a_finding(
    broker: Running, tmp_path: Path
) -> None:
    trust = ac.load_trust(broker.deployment.keys_dir)
    state = tmp_path / "monitor.json"
    await grow(broker)
    async with auditor(broker) as client:
        cp = await quiet_head(client)
        # The attacker keeps its signed head but no longer serves its newest entries.
        gone = await tamper(broker, "DELETE FROM tlog_leaves WHERE idx >= ?", cp.size - 2)
        assert gone == 2
        signed = await broker.app.runner.call(lambda s: s.tlog_checkpoint(cp.size))

        async def same_head() -> StoredCheckpoint:
            return signed  # type: ignore[no-any-return]

        broker.app.checkpoints.issue = same_head  # type: ignore[method-assign]
        result = await ac.monitor(client, trust, state, check_entries=True)
    assert not result.ok and result.verdict == "entries-mismatch", result.message
    assert result.evidence is not None
    assert "cannot serve the entries" in result.message or "do not hash" in result.message
