"""SIGKILL one of two `broker serve` replicas on PostgreSQL while notices flow.

Two real broker processes share one PostgreSQL schema and one broker identity. The
agencies are given both addresses (pick_first: they all start on replica A). The
originator keeps publishing to two recipients (each publish returns only once
durable); A is killed with SIGKILL part-way. The agencies reconnect to replica B and
carry on; nothing is restarted. Every acknowledged notice must reach each of its
recipients' applications exactly once and end up receipted (tests/integration/
delivery_history.py holds the check).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from broker.client.node import AgencyNode, NodeConfig, ReceivedNotice
from broker.client.witness import run_witness
from broker.sandbox import WITNESS_ID, Deployment, provision
from broker.v1 import agency_pb2
from tests.postgres import TempSchema

from .delivery_history import DeliveryHistory
from .helpers import RED_SECTIONS
from .test_crash import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOTAL = 40
KILL_AFTER = 12
RECIPIENTS = ("DE-BKA", "IT-BORDER")


def serve_replica(
    d: Deployment, store: str, port: int, name: str, log: Path
) -> subprocess.Popen[bytes]:
    port_file = d.root / f"port-{name}"
    port_file.unlink(missing_ok=True)
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "broker.cli.main",
                "serve",
                "--config",
                str(d.config_file),
                "--store",
                store,
                "--listen",
                f"127.0.0.1:{port}",
                "--metrics-listen",
                "",
                "--port-file",
                str(port_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if proc.poll() is not None:
            raise AssertionError(f"replica {name} exited with {proc.returncode}: {log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"replica {name} did not start in 30 s")
        time.sleep(0.05)
    return proc


def node(d: Deployment, agency: str, target: str) -> AgencyNode:
    return AgencyNode(
        NodeConfig(
            agency_id=agency,
            broker=target,
            keys_dir=d.keys_dir,
            state_dir=d.root / "nodes",
            window=8,
            rpc_timeout_s=5,
            reconnect_max_s=0.5,
            publish_attempts=20,
        )
    )


async def test_killing_a_replica_loses_nothing_acknowledged(
    pg_schema: TempSchema, deployment: Deployment, tmp_path: Path
) -> None:
    port_a, port_b = free_port(), free_port()
    log = tmp_path / "replicas.log"
    replica_a = serve_replica(deployment, pg_schema.dsn, port_a, "a", log)
    replica_b = serve_replica(deployment, pg_schema.dsn, port_b, "b", log)
    both = f"127.0.0.1:{port_a},127.0.0.1:{port_b}"
    history = DeliveryHistory()
    stop = asyncio.Event()
    killed = asyncio.Event()
    failed = 0
    nodes = {a: node(deployment, a, both) for a in ("FR-NCB", *RECIPIENTS)}
    fr = nodes["FR-NCB"]
    listeners: dict[str, asyncio.Task[object]] = {}

    def handler(agency: str) -> Callable[[ReceivedNotice], Awaitable[None]]:
        async def handle(notice: ReceivedNotice) -> None:
            history.handed(agency, notice.header.notice_id)

        return handle

    witness = asyncio.create_task(  # the deployment's witness, through the replica that stays
        run_witness(
            deployment.keys_dir,
            WITNESS_ID,
            f"127.0.0.1:{port_b}",
            deployment.root / "witness.json",
            stop=stop,
            interval_s=0.1,
        )
    )
    try:
        await provision(deployment, f"127.0.0.1:{port_a}")
        for a in RECIPIENTS:
            listeners[a] = asyncio.create_task(nodes[a].listen(handler(a), stop=stop))

        async def publisher(count: int) -> None:
            nonlocal failed
            for _ in range(count):
                try:
                    result = await fr.publish(
                        kind="interpol.red",
                        purpose="locate_arrest",
                        sections=RED_SECTIONS,
                        recipients=list(RECIPIENTS),
                    )
                except grpc.aio.AioRpcError:
                    failed += 1  # never acknowledged: the broker owes nothing for it
                    continue
                history.acknowledged(result.notice_id, frozenset(result.audience))
                if len(history.acked) == KILL_AFTER:
                    killed.set()

        async def killer() -> None:
            await killed.wait()
            os.kill(replica_a.pid, signal.SIGKILL)
            await asyncio.to_thread(replica_a.wait)

        await asyncio.gather(killer(), publisher(TOTAL // 2), publisher(TOTAL // 2))
        assert replica_a.returncode == -signal.SIGKILL
        assert len(history.acked) >= TOTAL - 5, f"only {len(history.acked)} acknowledged"
        assert all(r == frozenset(RECIPIENTS) for r in history.acked.values())

        async def settled() -> list[str]:
            for notice_id in history.acked:
                status = await fr.delivery_status(notice_id)  # answered by replica B
                history.receipted[notice_id] = frozenset(
                    r.recipient
                    for r in status.recipients
                    if r.state == agency_pb2.DELIVERY_STATE_DELIVERED
                )
            return history.problems()

        deadline = time.monotonic() + 90
        problems = await settled()
        while problems and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            problems = await settled()
        assert not problems, problems[:10]
        for agency in RECIPIENTS:
            assert nodes[agency].stats.connects >= 2, f"{agency} never moved to replica B"
    finally:
        stop.set()
        await asyncio.wait_for(witness, 10)
        for task in listeners.values():
            try:
                await asyncio.wait_for(task, 10)
            except Exception:  # the assertions above are what matter
                task.cancel()
        for n in nodes.values():
            await n.close()
        for proc in (replica_a, replica_b):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # graceful shutdown exits 0
        code = await asyncio.to_thread(replica_b.wait, 30)
        replica_a.wait(30)
    assert code == 0, log.read_text()[-2000:]
