"""Hybrid log checkpoints against a broker that attacks them (issue 16).

A deployment on the hybrid suite: every agency has PQ keys, the broker signs checkpoints
with its Ed25519 and its ML-DSA-65 log key, and trust.toml says ``[log] suite =
"hybrid"``. The broker then stops signing with the ML-DSA key and rewrites the notes it
keeps: the ML-DSA line stripped, either half corrupted, or classical-only checkpoints
served. The SDK's log view (a node publishing) and the auditor's monitor (the library and
`broker audit monitor`) must refuse each; an honest run is the control.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from broker.client import audit as ac
from broker.client.node import AgencyNode, NodeConfig
from broker.core.identity import Party
from broker.core.suites import SuitePolicy
from broker.errors import PermissionDenied
from broker.sandbox import AUDITOR_ID, DEMO_AGENCIES, Deployment, create_deployment
from broker.store.api import Store
from tests.integration.conftest import Running
from tests.integration.test_hybrid_suite import _broker

from .kit import agencies, publish, until
from .test_log_monitor import quiet_head

pytestmark = pytest.mark.integration
PQ_NAME = "\u2014 sealed-notice-broker/broker/ml-dsa-65 "
ED_NAME = "\u2014 sealed-notice-broker/broker "


@pytest.fixture(scope="module")
def hybrid_template(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    return create_deployment(tmp_path_factory.mktemp("hybrid-log"), DEMO_AGENCIES, pq=True)


@pytest.fixture
async def hybrid(hybrid_template: Deployment, tmp_path: Path) -> AsyncIterator[Running]:
    async with _broker(hybrid_template, tmp_path, SuitePolicy()) as running:
        yield running


def auditor(b: Running) -> ac.AuditClient:
    return ac.AuditClient(b.target, b.deployment.keys_dir, Party("auditor", AUDITOR_ID))


def fresh_node(b: Running, agency: str, tmp: Path) -> AgencyNode:
    """A node with no state yet: it has verified no checkpoint it could fall back on."""
    return AgencyNode(
        NodeConfig(
            agency_id=agency,
            broker=b.target,
            keys_dir=b.deployment.keys_dir,
            state_dir=tmp / f"fresh-{agency}",
        )
    )


async def grow(b: Running) -> None:
    async with agencies(b, "FR-NCB", "DE-BKA") as a:
        notice_id = await publish(a["FR-NCB"].node, ["DE-BKA"], suite="hybrid")
        await until(lambda: a["DE-BKA"].versions(notice_id) == [1])


def flip_line(note: str, prefix: str, byte: int) -> str:
    out = []
    for line in note.split("\n"):
        if line.startswith(prefix):
            raw = bytearray(base64.b64decode(line[len(prefix) :]))
            raw[byte] ^= 0x01
            line = prefix + base64.b64encode(bytes(raw)).decode()
        out.append(line)
    return "\n".join(out)


def strip_pq(note: str) -> str:
    return "\n".join(line for line in note.split("\n") if not line.startswith(PQ_NAME))


ATTACKS: dict[str, Callable[[str], str]] = {
    "ml-dsa line stripped": strip_pq,
    "ml-dsa half corrupted": lambda n: flip_line(n, PQ_NAME, 40),
    "ed25519 half corrupted": lambda n: flip_line(n, ED_NAME, 40),
}


async def attack(b: Running, rewrite: Callable[[str], str]) -> int:
    """The broker signs no more ML-DSA lines and rewrites every checkpoint it keeps."""
    b.app.checkpoints.pq_signer = None

    def run(store: Store) -> int:
        conn = store.conn  # type: ignore[attr-defined]
        rows = conn.execute("SELECT size, note FROM tlog_checkpoints").fetchall()
        for size, note in rows:
            conn.execute("UPDATE tlog_checkpoints SET note=? WHERE size=?", (rewrite(note), size))
        return len(rows)

    changed: int = await b.app.runner.call(run)
    return changed


async def test_honest_hybrid_checkpoints_are_relied_on(hybrid: Running, tmp_path: Path) -> None:
    trust = ac.load_trust(hybrid.deployment.keys_dir)
    assert trust.log_pq is not None  # trust.toml: [log] suite = "hybrid"
    await grow(hybrid)
    async with auditor(hybrid) as client:
        cp = await client.checkpoint()
        result = await ac.monitor(client, trust, tmp_path / "monitor.json")
    assert result.ok, result.message
    assert sum(line.startswith(PQ_NAME) for line in cp.note.split("\n")) == 1
    assert sum(line.startswith(ED_NAME) for line in cp.note.split("\n")) == 1
    async with fresh_node(hybrid, "FR-NCB", tmp_path) as node:
        await publish(node, ["DE-BKA"], suite="hybrid")
        kept = node.log_view.kept
        assert kept is not None and PQ_NAME in kept.note


@pytest.mark.parametrize("case", sorted(ATTACKS))
async def test_the_sdk_and_the_auditor_refuse_a_broken_hybrid_checkpoint(
    hybrid: Running, tmp_path: Path, case: str
) -> None:
    trust = ac.load_trust(hybrid.deployment.keys_dir)
    await grow(hybrid)
    async with auditor(hybrid) as client:
        head = await quiet_head(client)  # receipts logged: the log stops growing
        assert PQ_NAME in head.note
        assert await attack(hybrid, ATTACKS[case]) > 0
        cp = await client.checkpoint()
        assert cp.size == head.size and cp.note != head.note  # the attacker's rewrite
        result = await ac.monitor(client, trust, tmp_path / "monitor.json")
    assert not result.ok
    want = {
        "ml-dsa line stripped": "no ML-DSA-65 signature",
        "ml-dsa half corrupted": "invalid ML-DSA-65 signature",
        "ed25519 half corrupted": "invalid signature from sealed-notice-broker/broker",
    }
    assert want[case] in result.message, result.message
    async with fresh_node(hybrid, "FR-NCB", tmp_path) as node:
        with pytest.raises(PermissionDenied, match=want[case]):
            await publish(node, ["DE-BKA"], suite="hybrid")


async def test_a_classical_only_checkpoint_is_refused_where_hybrid_is_expected(
    hybrid: Running, tmp_path: Path
) -> None:
    """The broker quietly goes back to signing Ed25519 only, for new checkpoints: the
    auditor, the `broker audit monitor` CLI and the witness refuse them."""
    await grow(hybrid)
    hybrid.app.checkpoints.pq_signer = None
    async with auditor(hybrid) as client:
        before = await client.checkpoint()
        await grow(hybrid)
        for _ in range(100):
            served = await client.checkpoint()
            if served.size > before.size:
                break
            await asyncio.sleep(0.05)
        assert served.size > before.size and PQ_NAME not in served.note
        trust = ac.load_trust(hybrid.deployment.keys_dir)
        result = await ac.monitor(client, trust, tmp_path / "monitor.json")
        assert not result.ok and "no ML-DSA-65 signature" in result.message
        classical = ac.load_trust(hybrid.deployment.keys_dir, log_suite="classical")
        assert (await ac.monitor(client, classical, tmp_path / "classical.json")).ok  # control
    args = ["audit", "monitor", "--broker", hybrid.target, "--keys-dir"]
    args += [str(hybrid.deployment.keys_dir), "--as", f"auditor:{AUDITOR_ID}"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker.cli.main",
        *args,
        "--state",
        str(tmp_path / "cli.json"),
        "--json",
        "--require-cosignatures",
        "0",  # the head the attacker serves, not a cosigned one
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
    out = json.loads(stdout)
    assert proc.returncode == 1 and out["ok"] is False
    assert "no ML-DSA-65 signature" in json.dumps(out)
    # The witness (trust.toml: hybrid) cosigns none of the classical-only checkpoints.
    cosigned = await hybrid.app.runner.call(
        lambda s: s.tlog_checkpoint(served.size).cosignatures  # type: ignore[union-attr]
    )
    assert cosigned == ()
