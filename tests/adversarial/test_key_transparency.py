"""No stale key, stale entry or split view goes unnoticed (issue 10, items 1, 2, 5).

The broker's operator holds a rotated-out key (or a once-valid registry entry from before
a change) and puts the old row back in its database, so the key directory serves it as
current, with valid map proofs. A node that saw the newer entry refuses it, across
restarts (`broker/client/memory.py`, the node's durable memory, checked in
`broker/client/signedview.py` _verify_member), and the auditor's replay reports the
registry going back (`broker/core/replay.py`). Two brokers sharing the log key and
showing one node two different logs are a split view (`broker/client/logview.py`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest

from broker import pki
from broker.bundles import read_bundle_dir
from broker.client import audit as ac
from broker.client.admin import AdminClient
from broker.client.witness import run_witness
from broker.core import replay as rp
from broker.core.identity import Party
from broker.core.policy import compile_bundle
from broker.errors import PermissionDenied
from broker.sandbox import AUDITOR_ID, REPO_POLICIES, WITNESS_ID, provision
from broker.server.app import BrokerApp
from tests.integration.conftest import Running

from .kit import publish

pytestmark = pytest.mark.integration


async def row_of(b: Running, agency: str) -> tuple[Any, ...]:
    def read(store: Any) -> tuple[Any, ...]:
        return tuple(store.conn.execute("SELECT * FROM agencies WHERE id=?", (agency,)).fetchone())

    row: tuple[Any, ...] = await b.app.runner.call(read)
    return row


async def put_row(b: Running, row: tuple[Any, ...]) -> None:
    def write(store: Any) -> None:
        marks = ",".join("?" * len(row))
        store.conn.execute(f"INSERT OR REPLACE INTO agencies VALUES ({marks})", row)

    await b.app.runner.call(write)
    await b.app.reload_registry()
    await cosigned_head(b)  # the directory's map now holds the old value, cosigned


async def cosigned_head(b: Running) -> None:
    """Wait until the witness has cosigned a checkpoint of the log as it is now."""
    size = (await b.app.checkpoints.issue()).size
    for _ in range(200):
        cp = await b.app.runner.call(lambda s: s.tlog_checkpoint(0, 1))
        if cp is not None and cp.size >= size:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the witness never cosigned the head")


async def test_a_rotated_out_key_served_again_is_refused_after_a_restart(broker: Running) -> None:
    keys = broker.deployment.keys_dir
    before = await row_of(broker, "DE-BKA")  # what the operator keeps: serial 1, its entry
    pki.issue_agency(keys, "DE-BKA")  # rotation to serial 2
    pki.issue_certificate(keys, Party("admin", "alice"))
    async with AdminClient(keys, "alice", broker.target) as admin:
        await admin.rotate_keys("DE-BKA", pki.load_agency(keys, "DE-BKA").statement)
    async with broker.node("FR-NCB") as fr:
        await publish(fr, ["DE-BKA"])  # FR's node sees serial 2 and remembers it

    await put_row(broker, before)  # the attacker serves the old entry and key as current
    async with broker.node("FR-NCB") as restarted:  # a new process, the same state
        with pytest.raises(PermissionDenied, match="will not seal for DE-BKA") as refused:
            await publish(restarted, ["DE-BKA", "IT-BORDER"])
        why = str(refused.value)
        assert "revision" in why or "serial" in why, why

    trust = ac.load_trust(keys)
    async with ac.AuditClient(broker.target, keys, Party("auditor", AUDITOR_ID)) as client:
        report = (await ac.replay(client, trust)).report
    assert any(
        f.kind == rp.REGISTRY_ROLLBACK and f.recipient == "DE-BKA" for f in report.findings
    ), [f.describe() for f in report.findings]


async def test_a_split_view_is_refused_by_the_node(broker: Running, tmp_path: Path) -> None:
    async with broker.node("FR-NCB") as fr:
        await publish(fr, ["DE-BKA"])  # FR's node keeps broker A's checkpoint
    # Broker B: the same deployment and log key, a log of its own.
    other = BrokerApp(dataclasses.replace(broker.app.config, data_dir=tmp_path / "other"))
    port = await other.start()
    stop = asyncio.Event()
    witness = None
    try:
        target = f"127.0.0.1:{port}"
        await provision(broker.deployment, target)
        twin = Running(other, broker.deployment, target)
        # A witness that sees only broker B (fooled, or its key held by the attacker).
        witness = asyncio.create_task(
            run_witness(
                broker.deployment.keys_dir,
                WITNESS_ID,
                target,
                tmp_path / "witness-b.json",
                stop=stop,
                interval_s=0.1,
            )
        )
        async with twin.node("DE-BKA") as de:
            for _ in range(3):
                await publish(de, ["IT-BORDER"])
        async with twin.node("FR-NCB") as fr_on_b:
            with pytest.raises(PermissionDenied, match=r"FORK|split view|not consistent|rollback"):
                await publish(fr_on_b, ["DE-BKA"])
    finally:
        stop.set()
        if witness is not None:
            await witness
        await other.stop(grace=0.5)


async def test_an_older_signed_policy_is_refused_after_a_restart(
    broker: Running, tmp_path: Path
) -> None:
    """The operator re-installs a once-valid, laxer signed activation (sequence 2) after
    the node verified sequence 3: a restarted node refuses it, naming both."""
    keys = broker.deployment.keys_dir
    pki.issue_certificate(keys, Party("admin", "alice"))
    lax = read_bundle_dir(REPO_POLICIES)
    strict_dir = tmp_path / "strict"
    shutil.copytree(REPO_POLICIES, strict_dir)
    (strict_dir / "rules" / "zz-no-dna.toml").write_text(
        '[[rule]]\nid = "no-dna"\neffect = "forbid"\nreason = "test"\nsections = ["dna"]\n'
    )
    async with AdminClient(keys, "alice", broker.target) as admin:
        await admin.activate(lax, "lax")
        old = await broker.app.runner.call(lambda s: s.active_bundle())
        await admin.activate(read_bundle_dir(strict_dir), "strict")
    async with broker.node("FR-NCB") as fr:
        await publish(fr, ["DE-BKA"])  # the node verifies the strict activation

    def roll_back(store: Any) -> None:  # the attacker's database write
        store.conn.execute("UPDATE policy_bundles SET active=0")
        store.conn.execute("UPDATE policy_bundles SET active=1 WHERE version=?", (old.version,))

    await broker.app.runner.call(roll_back)
    broker.app.install_policy(compile_bundle(lax), old.signed_activation)
    async with broker.node("FR-NCB") as restarted:
        with pytest.raises(PermissionDenied, match=r"sequence|older|activation") as refused:
            await publish(restarted, ["DE-BKA"])
    assert str(old.sequence) in str(refused.value), refused.value
