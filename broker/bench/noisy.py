"""Noisy neighbour: a well-behaved agency's publish latency beside a flooding one.

Three runs, each on a fresh `broker serve` process with mutual TLS on 127.0.0.1:

1. alone: FR-NCB publishes one pre-sealed notice per call to DE-BKA at a paced
   rate (default 20/s) and times each Publish until it is acknowledged (durable);
2. flood, no quotas: the same, while DE-BKA, from a process of its own, floods
   Publish with fresh sealed notices (batches of 16, 8 calls in flight), ignoring
   every refusal and retry delay, as a hostile or broken client would;
3. flood, quotas: the same flood under a [quotas] table (default 100 publishes per
   second for every agency, burst 200): the flood is throttled with RESOURCE_EXHAUSTED.

Figures: FR-NCB's p50 and p99 publish latency in each run, the flood's accepted
envelopes and refused calls, and run 3's p99 over run 1's (goal: at most 2). The
flooder and the broker share this machine's cores, so the figures compare the runs,
not the hardware; each run prints the machine's load average as it ended (on a
shared machine, other work shows in the quiet run's p99 as much as in the others).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
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

import grpc

from broker import pki
from broker.bench.workload import red_sections, section_inputs
from broker.core import envelope as env
from broker.core.identity import Party
from broker.errors import FailedPrecondition, InvalidArgument
from broker.sandbox import DEMO_AGENCIES, Deployment, create_deployment, provision
from broker.v1 import agency_pb2, notice_pb2

SECTIONS = red_sections(  # the catalogue's field lines first (broker/core/content.py)
    {
        "identity": b"DOE, John; born 1970-01-01",
        "case_facts": b"fraud across three member states",
        "judicial": b"warrant 2026/123",
        "biometrics": b"\x00" * 2048,
    }
)
DAY_MS = 86_400_000
GOAL = 2.0  # the throttled flood's p99 over the quiet p99, at most
WELL, FLOOD = ("FR-NCB", "DE-BKA"), ("DE-BKA", "FR-NCB")  # (originator, recipient)
Progress = Callable[[str], None]


@dataclass
class Run:
    name: str
    samples: int
    p50_ms: float
    p99_ms: float
    flood_accepted: int = 0  # envelopes the broker stored for the flooder
    flood_refused: int = 0  # the flooder's calls refused RESOURCE_EXHAUSTED
    flood_calls: int = 0
    load_average: float = 0.0  # this machine's 1-minute load when the run ended


@dataclass
class NoisyReport:
    rate: float
    seconds: float
    quota: int  # publishes per second per agency in run 3
    flood_batch: int
    flood_concurrency: int
    runs: list[Run] = field(default_factory=list)

    def _p99(self, name: str) -> float:
        return next((r.p99_ms for r in self.runs if r.name == name), 0.0)

    @property
    def ratio(self) -> float:
        """p99 under the throttled flood over p99 alone."""
        quiet = self._p99("alone")
        return self._p99("flood, quotas") / quiet if quiet else 0.0

    @property
    def within_goal(self) -> bool:
        return 0 < self.ratio <= GOAL

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio_p99": self.ratio, "within_goal": self.within_goal}

    def text(self) -> str:
        lines = [
            f"noisy neighbour: FR-NCB publishes {self.rate:g}/s for {self.seconds:g} s; DE-BKA "
            f"floods ({self.flood_concurrency} calls of {self.flood_batch} in flight, "
            f"ignoring refusals); quotas: {self.quota} publishes/s per agency",
            f"  {'run':<18} {'p50 ms':>8} {'p99 ms':>8} {'samples':>8} {'flood stored':>13}"
            f" {'flood refused':>14} {'load':>6}",
        ]
        for r in self.runs:
            lines.append(
                f"  {r.name:<18} {r.p50_ms:>8.1f} {r.p99_ms:>8.1f} {r.samples:>8} "
                f"{r.flood_accepted:>13} {r.flood_refused:>14} {r.load_average:>6.2f}"
            )
        verdict = "within" if self.within_goal else "NOT within"
        lines.append(
            f"  p99 under the throttled flood / p99 alone = {self.ratio:.2f} "
            f"({verdict} the goal of {GOAL:g}x)"
        )
        return "\n".join(lines)


# -- sealing and channels --------------------------------------------------------------------
def seal(keys_dir: Path, count: int, originator: str, recipient: str) -> list[bytes]:
    """`count` fresh notices from `originator` to `recipient`, serialized envelopes."""
    from nacl.public import PrivateKey

    origin = pki.load_agency(keys_dir, originator)
    to = pki.load_agency(keys_dir, recipient)
    key = bytes(PrivateKey(to.encryption_private_key).public_key)
    created = time.time_ns() // 1_000_000
    out = []
    for _ in range(count):
        header = notice_pb2.NoticeHeader(
            notice_id=str(uuid.uuid4()),
            version=1,
            originator=originator,
            kind="interpol.red",
            purpose="locate_arrest",
            data_subject=notice_pb2.DATA_SUBJECT_SUSPECT,
            tlp=notice_pb2.TLP_AMBER,
            created_at_ms=created,
            expires_at_ms=created + 30 * DAY_MS,
        )
        sealed = env.seal(
            header,
            notice_pb2.OriginatorRestrictions(),
            section_inputs(SECTIONS),
            [env.RecipientInput(recipient, key, frozenset(SECTIONS))],
            origin.signing_seed,
            os.urandom,
        )
        out.append(sealed.SerializeToString())
    return out


def channel(keys_dir: Path, agency: str, target: str) -> grpc.aio.Channel:
    files = pki.load_party(keys_dir, Party("agency", agency))
    creds = grpc.ssl_channel_credentials(
        root_certificates=(keys_dir / "ca" / "ca.pem").read_bytes(),
        private_key=files.key.read_bytes(),
        certificate_chain=files.cert.read_bytes(),
    )
    return grpc.aio.secure_channel(
        target, creds, options=[("grpc.max_send_message_length", 8 * 1024 * 1024)]
    )


def _request(envelopes: list[bytes]) -> bytes:
    """A serialized PublishRequest (field 1: repeated Envelope) from serialized envelopes."""
    req = agency_pb2.PublishRequest()
    for e in envelopes:
        req.envelopes.add().ParseFromString(e)
    data: bytes = req.SerializeToString()
    return data


# -- the flooder (a process of its own) ------------------------------------------------------
def flood_main(
    keys_dir: str,
    target: str,
    pool: int,
    batch: int,
    concurrency: int,
    ready: Any,
    go: Any,
    done: Any,
    results: Any,
) -> None:
    """Seal `pool` notices, say ready, wait for go, then flood until done is set; put
    (accepted envelopes, refused calls, calls) on `results`."""
    envelopes = seal(Path(keys_dir), pool, *FLOOD)
    requests = [_request(envelopes[i : i + batch]) for i in range(0, len(envelopes), batch)]
    ready.set()
    go.wait()
    results.put(asyncio.run(_flood(Path(keys_dir), target, requests, batch, concurrency, done)))


async def _flood(
    keys_dir: Path, target: str, requests: list[bytes], batch: int, concurrency: int, done: Any
) -> tuple[int, int, int]:
    accepted = refused = calls = 0
    queue = list(reversed(requests))
    async with channel(keys_dir, FLOOD[0], target) as ch:
        publish = ch.unary_unary("/broker.v1.AgencyService/Publish")

        async def worker() -> None:
            nonlocal accepted, refused, calls
            while not done.is_set() and queue:
                data = queue.pop()
                calls += 1
                try:
                    await publish(data, timeout=30)
                    accepted += batch
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        refused += 1
                        queue.insert(0, data)  # not stored: send it again later, at once
                    elif exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                        raise

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return accepted, refused, calls


# -- the well-behaved agency -----------------------------------------------------------------
async def _paced(keys_dir: Path, target: str, requests: list[bytes], rate: float) -> list[float]:
    """Publish one request every 1/rate seconds; return each call's latency (seconds)."""
    latencies: list[float] = []
    async with channel(keys_dir, WELL[0], target) as ch:
        publish = ch.unary_unary("/broker.v1.AgencyService/Publish")
        await publish(requests[0], timeout=30)  # connected, warm
        start = time.perf_counter()
        pending: list[asyncio.Task[None]] = []

        async def one(data: bytes) -> None:
            t = time.perf_counter()
            await publish(data, timeout=30)
            latencies.append(time.perf_counter() - t)

        for i, data in enumerate(requests[1:]):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(one(data)))
        await asyncio.gather(*pending)
    return latencies


# -- runs --------------------------------------------------------------------------------------
def _config(d: Deployment, work: Path, quota: int) -> Path:
    """The deployment's broker.toml (its paths relative to it), with [quotas] if `quota`."""
    text = d.config_file.read_text(encoding="utf-8")
    if quota:
        text += f"\n[quotas]\npublishes_per_second = {quota}\npublish_burst = {2 * quota}\n"
    path = d.root / f"{work.name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _serve(config: Path, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port_file = work / "broker.port"
    with (work / "broker.log").open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "broker.cli.main",
                "serve",
                "--config",
                str(config),
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "",
                "--port-file",
                str(port_file),
                "--data-dir",
                str(work / "data"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tail = (work / "broker.log").read_text(errors="replace")[-1500:]
            raise FailedPrecondition(f"the bench broker did not start: {tail}")
        time.sleep(0.05)
    return proc, f"127.0.0.1:{int(port_file.read_text())}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _run(
    name: str,
    template: Deployment,
    root: Path,
    *,
    flood: bool,
    quota: int,
    rate: float,
    seconds: float,
    batch: int,
    concurrency: int,
    progress: Progress,
) -> Run:
    work = root / name.replace(" ", "-").replace(",", "")
    work.mkdir(parents=True)
    proc, target = _serve(_config(template, work, quota), work)
    ctx = multiprocessing.get_context("spawn")
    ready, go, done, results = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
    flooder = None
    try:
        asyncio.run(provision(template, target))
        well = [_request([e]) for e in seal(template.keys_dir, int(rate * seconds) + 1, *WELL)]
        if flood:
            pool = max(batch * concurrency * 4, int(seconds * 800))
            progress(f"{name}: the flooder seals {pool} notices")
            flooder = ctx.Process(
                target=flood_main,
                args=(
                    str(template.keys_dir),
                    target,
                    pool,
                    batch,
                    concurrency,
                    ready,
                    go,
                    done,
                    results,
                ),
            )
            flooder.start()
            if not ready.wait(300):
                raise FailedPrecondition("the flooder did not get ready in 300 s")
            go.set()
            time.sleep(1.0)  # the flood is on before the first measured publish
        progress(f"{name}: FR-NCB publishes {rate:g}/s for {seconds:g} s")
        latencies = sorted(asyncio.run(_paced(template.keys_dir, target, well, rate)))
        out = Run(
            name=name,
            samples=len(latencies),
            p50_ms=statistics.median(latencies) * 1000,
            p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
            load_average=os.getloadavg()[0],
        )
        if flooder is not None:
            done.set()
            out.flood_accepted, out.flood_refused, out.flood_calls = results.get(timeout=120)
            flooder.join(60)
        return out
    finally:
        done.set()
        go.set()
        if flooder is not None and flooder.is_alive():
            flooder.kill()
            flooder.join()
        _stop(proc)


def run(
    seconds: float,
    rate: float,
    quota: int,
    batch: int,
    concurrency: int,
    directory: Path | None,
    progress: Progress,
) -> NoisyReport:
    """The three runs (alone, flood without quotas, flood with quotas)."""
    if seconds <= 0 or rate <= 0 or rate * seconds < 2:
        raise InvalidArgument("--seconds and --rate must be positive, with 2 publishes at least")
    if quota < 1 or batch < 1 or concurrency < 1:
        raise InvalidArgument("--quota, --flood-batch and --flood-concurrency must be at least 1")
    if rate >= quota:
        raise InvalidArgument(f"--rate ({rate:g}) must be below --quota ({quota}): well-behaved")
    report = NoisyReport(rate, seconds, quota, batch, concurrency)
    with contextlib.ExitStack() as stack:
        root = directory or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        progress("creating a deployment (CA, broker and agency keys)")
        template = create_deployment(root / "template", DEMO_AGENCIES)
        for name, flood, q in (
            ("alone", False, quota),
            ("flood, no quotas", True, 0),
            ("flood, quotas", True, quota),
        ):
            report.runs.append(
                _run(
                    name,
                    template,
                    root,
                    flood=flood,
                    quota=q,
                    rate=rate,
                    seconds=seconds,
                    batch=batch,
                    concurrency=concurrency,
                    progress=progress,
                )
            )
        if directory is None:
            shutil.rmtree(root / "template", ignore_errors=True)
    return report
