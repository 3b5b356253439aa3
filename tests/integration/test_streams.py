"""Subscribe streams: a displaced stream ends ABORTED saying so, and abandoned or
cancelled calls leak nothing in a real `broker serve` process (its asyncio tasks, file
descriptors and resident memory come back to their baseline)."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from broker import pki
from broker.client.node import ReceivedNotice
from broker.core.identity import Party
from broker.faults.trial import BrokerProcess, free_port, write_config
from broker.sandbox import Deployment
from broker.v1 import agency_pb2, agency_pb2_grpc

from .conftest import Running

pytestmark = pytest.mark.integration
CREDIT = agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=8))


async def ended(call: object) -> grpc.aio.AioRpcError | None:
    """Read `call` to its end: the error it ended with, or None for OK."""
    try:
        while True:
            response = await asyncio.wait_for(call.read(), 10)  # type: ignore[attr-defined]
            if response is grpc.aio.EOF:
                return None
    except grpc.aio.AioRpcError as exc:
        return exc


async def test_a_displaced_subscribe_ends_aborted_saying_so(broker: Running) -> None:
    stub = broker.stub(Party("agency", "DE-BKA"))
    first = stub.Subscribe()
    await first.write(CREDIT)
    for _ in range(100):  # the broker has the first stream's session
        if "DE-BKA" in broker.app.sessions:
            break
        await asyncio.sleep(0.02)
    second = stub.Subscribe()
    await second.write(CREDIT)
    exc = await ended(first)
    assert exc is not None and exc.code() == grpc.StatusCode.ABORTED
    assert exc.details() == (
        "another Subscribe from DE-BKA replaced this stream; run one subscriber per agency"
    )
    # The newer stream is the agency's stream now, and stays open.
    pending = asyncio.ensure_future(second.read())
    done, _ = await asyncio.wait({pending}, timeout=0.3)
    assert not done
    pending.cancel()
    second.cancel()


async def test_a_stream_the_broker_stops_does_not_say_it_was_displaced(
    broker: Running,
) -> None:
    stub = broker.stub(Party("agency", "DE-BKA"))
    call = stub.Subscribe()
    await call.write(CREDIT)
    for _ in range(100):
        if "DE-BKA" in broker.app.sessions:
            break
        await asyncio.sleep(0.02)
    broker.app.sessions["DE-BKA"].closed.set()  # what stop() does, without displacing
    broker.app.sessions["DE-BKA"].wake.set()
    assert await ended(call) is None


async def test_a_displaced_node_stops_listening_with_the_status(broker: Running) -> None:
    async with broker.node("DE-BKA") as one, broker.node("DE-BKA") as two:

        async def ignore(notice: ReceivedNotice) -> None:
            pass

        stop_one, stop_two = asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(one.listen(ignore, stop=stop_one))
        for _ in range(100):
            if "DE-BKA" in broker.app.sessions:
                break
            await asyncio.sleep(0.02)
        second = asyncio.create_task(two.listen(ignore, stop=stop_two))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(first, 10)
        assert info.value.code() == grpc.StatusCode.ABORTED
        assert "replaced this stream" in (info.value.details() or "")
        stop_two.set()
        await asyncio.wait_for(second, 10)


# -- abandoned and cancelled calls against a real broker process ---------------------------
AGENCIES = ("DE-BKA", "FR-NCB", "IT-BORDER")
CALLS = 1000
WAVE = 50


def channel(deployment: Deployment, agency: str, target: str) -> grpc.aio.Channel:
    files = pki.load_party(deployment.keys_dir, Party("agency", agency))
    creds = grpc.ssl_channel_credentials(
        root_certificates=(deployment.keys_dir / "ca" / "ca.pem").read_bytes(),
        private_key=files.key.read_bytes(),
        certificate_chain=files.cert.read_bytes(),
    )
    return grpc.aio.secure_channel(target, creds)


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def tasks(metrics_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("broker_asyncio_tasks "):
                return int(float(line.split()[1]))
    raise AssertionError("no broker_asyncio_tasks metric")


async def abandon(
    deployment: Deployment, target: str, start: int, n: int, metrics_port: int, base: int
) -> dict[str, int]:
    """`n` calls, each left in a different way: Subscribe cancelled by the client,
    Subscribe abandoned (its channel closed under it; a later stream of the same agency
    displaces it first), unary calls cancelled in flight, unary calls past their
    deadline; then one more abandoned Subscribe per agency, left open until its channel
    closes. Returns how many of each, and under "open_tasks" the broker's task count
    while those last streams were open (waiting, up to 5 s, for `base` + one each)."""
    kinds = {
        "subscribe_cancelled": 0,
        "subscribe_abandoned": 0,
        "unary_cancelled": 0,
        "unary_deadline": 0,
    }
    chans = {a: channel(deployment, a, target) for a in AGENCIES}
    doomed = {a: channel(deployment, a, target) for a in AGENCIES}  # closed under their calls
    calls: list[object] = []
    unary: list[asyncio.Future[object]] = []

    async def abandoned(agency: str) -> None:
        call = agency_pb2_grpc.AgencyServiceStub(doomed[agency]).Subscribe()
        await call.write(CREDIT)
        calls.append(call)
        kinds["subscribe_abandoned"] += 1

    try:
        for i in range(start, start + n):
            agency = AGENCIES[i % len(AGENCIES)]
            stub = agency_pb2_grpc.AgencyServiceStub(chans[agency])
            kind = i % 4
            if kind == 0:
                call = stub.Subscribe()
                await call.write(CREDIT)
                call.cancel()
                kinds["subscribe_cancelled"] += 1
            elif kind == 1:
                await abandoned(agency)
            elif kind == 2:
                f = asyncio.ensure_future(stub.GetActivePolicy(agency_pb2.GetActivePolicyRequest()))
                await asyncio.sleep(0)
                f.cancel()
                unary.append(f)
                kinds["unary_cancelled"] += 1
            else:
                f = asyncio.ensure_future(
                    stub.GetDirectory(agency_pb2.GetDirectoryRequest(), timeout=0.001)
                )
                unary.append(f)
                kinds["unary_deadline"] += 1
        await asyncio.gather(*unary, return_exceptions=True)
        for agency in AGENCIES:  # each agency's newest stream: open until abandoned
            await abandoned(agency)
        # Those streams are open in the broker (not vacuous: the task count sees them).
        for _ in range(100):
            kinds["open_tasks"] = tasks(metrics_port)
            if kinds["open_tasks"] >= base + len(AGENCIES):
                break
            await asyncio.sleep(0.05)
    finally:
        for c in (*doomed.values(), *chans.values()):  # abandons every stream still open
            await c.close()
    return kinds


@pytest.mark.slow
async def test_a_thousand_abandoned_calls_leak_no_task_descriptor_or_memory(
    deployment: Deployment, tmp_path: Path
) -> None:
    config = write_config(deployment, tmp_path / "broker.toml")
    metrics_port = free_port()
    text = config.read_text().replace(
        'metrics_listen = ""', f'metrics_listen = "127.0.0.1:{metrics_port}"'
    )
    config.write_text(text)
    proc = BrokerProcess(config, free_port(), tmp_path / "broker.log")
    pid = proc.start()
    try:
        # Warm up: caches, pools, the allocator.
        await abandon(deployment, proc.target, 0, 200, metrics_port, 0)

        async def settled() -> tuple[int, int, int]:
            last = (-1, -1)
            for _ in range(100):
                now = (fds(pid), tasks(metrics_port))
                if now == last:
                    break
                last = now
                await asyncio.sleep(0.3)
            return last[0], last[1], rss_kb(pid)

        base_fds, base_tasks, base_rss = await settled()
        kinds: dict[str, int] = {}
        peak = 0
        for start in range(200, 200 + CALLS, WAVE):
            got = await abandon(deployment, proc.target, start, WAVE, metrics_port, base_tasks)
            peak = max(peak, got.pop("open_tasks"))
            for k, v in got.items():
                kinds[k] = kinds.get(k, 0) + v
        assert sum(kinds.values()) >= CALLS and min(kinds.values()) >= CALLS // 4, kinds
        assert peak >= base_tasks + len(AGENCIES), (peak, base_tasks)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if fds(pid) <= base_fds + 2 and tasks(metrics_port) <= base_tasks + 2:
                break
            await asyncio.sleep(0.3)
        after_fds, after_tasks, after_rss = await settled()
        report = (
            f"fds {base_fds} -> {after_fds}, asyncio tasks {base_tasks} -> {after_tasks}, "
            f"RSS {base_rss} kB -> {after_rss} kB after {CALLS} abandoned calls ({kinds}; "
            f"{peak} tasks while streams were open)"
        )
        print(report)
        assert after_fds <= base_fds + 2, report
        assert after_tasks <= base_tasks + 2, report
        assert after_rss <= base_rss + 16 * 1024, report  # allocator slack, not 1,000 calls' worth
        # And the broker still answers.
        async with channel(deployment, "DE-BKA", proc.target) as ch:
            stub = agency_pb2_grpc.AgencyServiceStub(ch)
            await stub.GetActivePolicy(agency_pb2.GetActivePolicyRequest(), timeout=10)
    finally:
        assert proc.stop() == 0, proc.tail()
