"""Store benchmark: the whole broker on SQLite, on one PostgreSQL replica and on two, in one run.

Each setup runs real `broker serve` processes (one, or two sharing one PostgreSQL
schema and one broker identity) with mutual TLS on 127.0.0.1. The notices are
sealed beforehand (an INTERPOL Red notice from FR-NCB to DE-BKA, four sections),
so the clock measures the broker: signature and policy checks, the store's group
commit, fan-out, and receipts. `publishers` concurrent publishers (spread over the
replicas) publish one notice per call; DE-BKA listens through every replica
address and receipts each notice. Figures: acknowledged publishes per second,
notices delivered and receipted per second (end to end), and publish latency;
each setup beside SQLite as a ratio.

Everything runs on this machine: the client processes share its cores with the
brokers and with PostgreSQL, so the figures compare the setups, not the hardware.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from broker import pki
from broker.bench.workload import red_sections, section_inputs
from broker.core import envelope as env
from broker.errors import FailedPrecondition, InvalidArgument
from broker.sandbox import DEMO_AGENCIES, Deployment, create_deployment, provision
from broker.v1 import notice_pb2

SECTIONS = red_sections(  # the catalogue's field lines first (broker/core/content.py)
    {
        "identity": b"DOE, John; born 1970-01-01",
        "case_facts": b"fraud across three member states",
        "judicial": b"warrant 2026/123",
        "biometrics": b"\x00" * 2048,
    }
)
DAY_MS = 86_400_000
Progress = Callable[[str], None]


@dataclass
class SetupResult:
    name: str
    replicas: int
    notices: int
    publish_seconds: float
    publish_per_second: float
    delivered_seconds: float
    delivered_per_second: float
    publish_p50_ms: float
    publish_p99_ms: float


@dataclass
class StoreReport:
    notices: int
    publishers: int
    results: list[SetupResult] = field(default_factory=list)
    skipped: str = ""  # why the PostgreSQL setups did not run, if they did not

    def ratios(self) -> dict[str, dict[str, float]]:
        """Each setup's throughput over SQLite's (1.0 = as fast as SQLite)."""
        base = next((r for r in self.results if r.name == "sqlite"), None)
        if base is None:
            return {}
        return {
            r.name: {
                "publish": r.publish_per_second / base.publish_per_second,
                "delivered": r.delivered_per_second / base.delivered_per_second,
            }
            for r in self.results
        }

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratios": self.ratios()}

    def text(self) -> str:
        ratios = self.ratios()
        lines = [
            f"store: {self.notices} notices per setup, {self.publishers} concurrent publishers, "
            "real broker processes on 127.0.0.1",
            f"  {'setup':<16} {'publish/s':>10} {'delivered/s':>12} {'p50 ms':>8} {'p99 ms':>8}"
            f" {'publish x':>10} {'delivered x':>12}",
        ]
        for r in self.results:
            x = ratios.get(r.name, {})
            lines.append(
                f"  {r.name:<16} {r.publish_per_second:>10.1f} {r.delivered_per_second:>12.1f} "
                f"{r.publish_p50_ms:>8.1f} {r.publish_p99_ms:>8.1f} "
                f"{x.get('publish', 0):>10.2f} {x.get('delivered', 0):>12.2f}"
            )
        if self.skipped:
            lines.append(f"  PostgreSQL skipped: {self.skipped}")
        return "\n".join(lines)


# -- brokers ---------------------------------------------------------------------------------
def _serve(d: Deployment, name: str, store: str | None, work: Path) -> tuple[Any, int]:
    port_file = work / f"{name}.port"
    log = (work / f"{name}.log").open("ab")
    args = [
        sys.executable,
        "-m",
        "broker.cli.main",
        "serve",
        "--config",
        str(d.config_file),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "",
        "--port-file",
        str(port_file),
        "--data-dir",
        str(work / "sqlite"),
    ]
    if store:
        args += ["--store", store]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if proc.poll() is not None:
            tail = (work / f"{name}.log").read_text()[-1500:]
            raise FailedPrecondition(f"bench broker {name} exited: {tail}")
        if time.monotonic() > deadline:
            proc.kill()
            raise FailedPrecondition(f"bench broker {name} did not start in 60 s")
        time.sleep(0.05)
    return proc, int(port_file.read_text())


def _stop(procs: list[Any]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Schema:
    """A schema of its own for one PostgreSQL setup, dropped afterwards."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.base = dsn
        self.name = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{self.name}"')
        sep = "&" if "?" in dsn else "?"
        self.dsn = f"{dsn}{sep}options={quote(f'-csearch_path={self.name}')}"

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')


# -- clients ---------------------------------------------------------------------------------
def _seal(d: Deployment, count: int) -> list[notice_pb2.Envelope]:
    from nacl.public import PrivateKey

    origin = pki.load_agency(d.keys_dir, "FR-NCB")
    to = pki.load_agency(d.keys_dir, "DE-BKA")
    key = bytes(PrivateKey(to.encryption_private_key).public_key)
    created = time.time_ns() // 1_000_000
    out = []
    for _ in range(count):
        header = notice_pb2.NoticeHeader(
            notice_id=str(uuid.uuid4()),
            version=1,
            originator="FR-NCB",
            kind="interpol.red",
            purpose="locate_arrest",
            data_subject=notice_pb2.DATA_SUBJECT_SUSPECT,
            tlp=notice_pb2.TLP_AMBER,
            created_at_ms=created,
            expires_at_ms=created + 30 * DAY_MS,
        )
        out.append(
            env.seal(
                header,
                notice_pb2.OriginatorRestrictions(),
                section_inputs(SECTIONS),
                [env.RecipientInput("DE-BKA", key, frozenset(SECTIONS))],
                origin.signing_seed,
                os.urandom,
            )
        )
    return out


async def _measure(
    d: Deployment,
    name: str,
    targets: list[str],
    envelopes: list[notice_pb2.Envelope],
    publishers: int,
    work: Path,
) -> SetupResult:
    from broker.client.node import AgencyNode, NodeConfig, ReceivedNotice

    def node(agency: str, target: str, tag: str) -> AgencyNode:
        return AgencyNode(
            NodeConfig(
                agency_id=agency,
                broker=target,
                keys_dir=d.keys_dir,
                state_dir=work / "nodes" / tag,
                window=256,
                rpc_timeout_s=30,
            )
        )

    wanted = {e_id(e) for e in envelopes}
    stop = asyncio.Event()
    delivered = asyncio.Event()

    async def handle(_notice: ReceivedNotice) -> None:
        return None

    listener_node = node("DE-BKA", ",".join(targets), "listener")
    senders = [
        node("FR-NCB", targets[i % len(targets)], f"publisher-{i}") for i in range(publishers)
    ]
    latencies: list[float] = []
    try:
        listener = asyncio.create_task(listener_node.listen(handle, stop=stop))

        async def watch() -> None:
            while not wanted <= {n for n, _v in listener_node.stats.acked}:
                await asyncio.sleep(0.01)
            delivered.set()

        watcher = asyncio.create_task(watch())
        queue = list(envelopes)

        async def publish(sender: AgencyNode) -> None:
            while queue:
                envelope = queue.pop()
                t = time.perf_counter()
                await sender.publish_envelopes([envelope])
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(publish(s) for s in senders))
        published = time.perf_counter() - start
        await asyncio.wait_for(delivered.wait(), 300)
        finished = time.perf_counter() - start
        watcher.cancel()
        stop.set()
        await asyncio.wait_for(listener, 30)
    finally:
        stop.set()
        for n in (listener_node, *senders):
            await n.close()
    latencies.sort()
    count = len(envelopes)
    return SetupResult(
        name=name,
        replicas=len(targets),
        notices=count,
        publish_seconds=published,
        publish_per_second=count / published,
        delivered_seconds=finished,
        delivered_per_second=count / finished,
        publish_p50_ms=statistics.median(latencies) * 1000,
        publish_p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    )


def e_id(envelope: notice_pb2.Envelope) -> str:
    return notice_pb2.NoticeHeader.FromString(envelope.header.header_bytes).notice_id


async def _setup(
    name: str,
    template: Deployment,
    store: str | None,
    replicas: int,
    notices: int,
    publishers: int,
    root: Path,
    progress: Progress,
) -> SetupResult:
    work = root / name.replace(" ", "-")
    shutil.copytree(template.root, work / "deployment")
    d = Deployment(
        work / "deployment",
        work / "deployment" / "keys",
        work / "deployment" / "registry.toml",
        work / "deployment" / "broker.toml",
        template.agencies,
    )
    schema = _Schema(store) if store else None
    procs: list[Any] = []
    try:
        progress(f"{name}: starting {replicas} broker process(es)")
        ports = []
        for i in range(replicas):
            proc, port = _serve(d, f"replica-{i}", schema.dsn if schema else None, work)
            procs.append(proc)
            ports.append(port)
        targets = [f"127.0.0.1:{p}" for p in ports]
        await provision(d, targets[0])
        envelopes = _seal(d, notices)
        progress(f"{name}: publishing {notices} notices")
        return await _measure(d, name, targets, envelopes, publishers, work)
    finally:
        _stop(procs)
        if schema is not None:
            schema.drop()


def run(
    store: str | None,
    notices: int,
    publishers: int,
    directory: Path | None,
    progress: Progress,
) -> StoreReport:
    """SQLite, then (with a postgresql:// `store`) one and two PostgreSQL replicas."""
    if notices < 1 or publishers < 1:
        raise InvalidArgument("--notices and --publishers must be at least 1")
    if store and not store.startswith(("postgresql://", "postgres://")):
        raise InvalidArgument("--store must be a postgresql:// URL")
    report = StoreReport(notices, publishers)
    if not store:
        report.skipped = "no --store postgresql://... given"
    with contextlib.ExitStack() as stack:
        root = directory or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        progress("creating a deployment (CA, broker and agency keys)")
        template = create_deployment(root / "template", DEMO_AGENCIES)
        setups: list[tuple[str, str | None, int]] = [("sqlite", None, 1)]
        if store:
            setups += [("postgres x1", store, 1), ("postgres x2", store, 2)]
        for name, dsn, replicas in setups:
            report.results.append(
                asyncio.run(
                    _setup(
                        name,
                        template,
                        dsn,
                        replicas,
                        notices,
                        publishers,
                        root,
                        progress,
                    )
                )
            )
    return report
