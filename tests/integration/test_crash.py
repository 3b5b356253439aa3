"""SIGKILL the broker process while notices flow; restart it; nothing acknowledged is lost.

The broker runs as a real `broker serve` subprocess on 127.0.0.1 with mutual
TLS. The originator keeps publishing (each publish returns only once durable);
the broker is killed with SIGKILL part-way and restarted on the same port.
Every notice whose publish was acknowledged must reach the recipient's
application exactly once and end up receipted.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from broker.client.node import AgencyNode, NodeConfig, ReceivedNotice
from broker.client.witness import run_witness
from broker.sandbox import Deployment, provision
from broker.v1 import agency_pb2

from .helpers import RED_SECTIONS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOTAL = 40
KILL_AFTER = 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_serve(d: Deployment, port: int, log: Path, metrics: str = "") -> subprocess.Popen[bytes]:
    port_file = d.root / "port"
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
                "--listen",
                f"127.0.0.1:{port}",
                "--metrics-listen",
                metrics,
                "--port-file",
                str(port_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if proc.poll() is not None:
            raise AssertionError(f"broker exited with {proc.returncode}: {log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("broker did not start in 30 s")
        time.sleep(0.05)
    return proc


def node(d: Deployment, agency: str, port: int) -> AgencyNode:
    return AgencyNode(
        NodeConfig(
            agency_id=agency,
            broker=f"127.0.0.1:{port}",
            keys_dir=d.keys_dir,
            state_dir=d.root / "nodes",
            window=8,
            rpc_timeout_s=5,
            reconnect_max_s=0.5,
            publish_attempts=20,
        )
    )


async def test_sigkill_loses_nothing_acknowledged(deployment: Deployment, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "broker.log"
    proc = start_serve(deployment, port, log)
    await provision(deployment, f"127.0.0.1:{port}")
    witness_stop = asyncio.Event()  # the deployment's witness, across the broker's restarts
    witness = asyncio.create_task(
        run_witness(
            deployment.keys_dir,
            "EU-HUB",
            f"127.0.0.1:{port}",
            deployment.root / "witness.json",
            stop=witness_stop,
            interval_s=0.1,
        )
    )
    seen: collections.Counter[str] = collections.Counter()
    acked: list[str] = []
    failed = 0
    stop = asyncio.Event()
    killed = asyncio.Event()

    async def handle(notice: ReceivedNotice) -> None:
        seen[notice.notice_id] += 1

    async with node(deployment, "FR-NCB", port) as fr, node(deployment, "DE-BKA", port) as de:
        listener = asyncio.create_task(de.listen(handle, stop=stop))

        async def publisher() -> None:
            nonlocal failed
            for _ in range(TOTAL):
                try:
                    result = await fr.publish(
                        kind="interpol.red",
                        purpose="locate_arrest",
                        sections=RED_SECTIONS,
                        recipients=["DE-BKA"],
                    )
                except grpc.aio.AioRpcError:
                    failed += 1  # never acknowledged: the broker owes nothing for it
                    continue
                acked.append(result.notice_id)
                if len(acked) == KILL_AFTER:
                    killed.set()

        async def killer() -> subprocess.Popen[bytes]:
            await killed.wait()
            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
            await asyncio.sleep(0.3)
            return await asyncio.to_thread(start_serve, deployment, port, log)

        restarted, _ = await asyncio.gather(killer(), publisher())
        try:
            assert proc.returncode == -signal.SIGKILL
            assert len(acked) >= TOTAL - 5, f"only {len(acked)} publishes acknowledged"

            async def all_seen() -> None:
                while not set(acked) <= set(seen):
                    await asyncio.sleep(0.1)

            await asyncio.wait_for(all_seen(), 60)

            async def all_receipted() -> None:
                for notice_id in acked:
                    while True:
                        status = await fr.delivery_status(notice_id)
                        if [r.state for r in status.recipients] == [
                            agency_pb2.DELIVERY_STATE_DELIVERED
                        ]:
                            break
                        await asyncio.sleep(0.1)

            await asyncio.wait_for(all_receipted(), 60)
            duplicates = {k: v for k, v in seen.items() if v != 1}
            assert not duplicates, f"the application saw notices twice: {duplicates}"
        finally:
            stop.set()
            witness_stop.set()
            try:
                await asyncio.wait_for(listener, 10)
                await asyncio.wait_for(witness, 10)
            finally:
                restarted.send_signal(signal.SIGTERM)  # graceful shutdown exits 0
                code = await asyncio.to_thread(restarted.wait, 30)
            assert code == 0, log.read_text()[-2000:]
