"""`broker bench attachments`: a sealed attachment end to end, beside a plain file copy.

In one run, on this machine: a throwaway deployment, `broker serve` as its own process,
two agency nodes (FR-NCB and DE-BKA) in this process on the real SDK. First a plain copy
of the file (read, write, fsync): the floor any sealed transfer stands on. Then the file
moves end to end: sealed in chunks (ciphertext written and fsynced), published, uploaded
(the broker fsyncs every chunk before it counts it, and the whole before it is complete),
downloaded (fsynced), checked against the signed root, opened (plaintext fsynced, renamed
once verified), with the three custody links signed on the way. Reported: MB/s of each
step and of the whole, and the peak resident memory (VmHWM, reset before the move) of the
broker and of the process holding both nodes, beside the file's size.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from broker.bench.procs import BrokerProcess, peak_rss_mb, reset_peak, rss_mb
from broker.bench.workload import red_sections
from broker.client.witness import run_witness
from broker.sandbox import WITNESS_ID, Deployment, create_deployment, provision

MIB = 1024 * 1024
Progress = Callable[[str], None]


@dataclass
class Report:
    size_bytes: int
    chunk_bytes: int
    copy_mb_s: float
    end_to_end_mb_s: float
    steps_mb_s: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    baseline_rss_mb: dict[str, float] = field(default_factory=dict)
    verified: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        mb = self.size_bytes / 1e6
        lines = [
            f"attachment of {mb:,.1f} MB in {self.chunk_bytes // 1024} KiB chunks, "
            "sealed end to end with fsync (one machine, 127.0.0.1)",
            "",
            f"{'step':<38}{'seconds':>9}{'MB/s':>10}",
            f"{'plain file copy (read, write, fsync)':<38}"
            f"{mb / self.copy_mb_s:>9.2f}{self.copy_mb_s:>10.1f}",
        ]
        for step, rate in self.steps_mb_s.items():
            lines.append(f"{step:<38}{self.seconds[step]:>9.2f}{rate:>10.1f}")
        lines.append(
            f"{'end to end (all of the above)':<38}{self.seconds['end to end']:>9.2f}"
            f"{self.end_to_end_mb_s:>10.1f}"
        )
        lines.append(f"ratio end to end / plain copy: {self.end_to_end_mb_s / self.copy_mb_s:.2f}")
        lines.append("")
        lines.append(f"{'peak RSS while moving':<38}{'MB':>9}{'before':>10}")
        for who, peak in self.peak_rss_mb.items():
            lines.append(f"{who:<38}{peak:>9.1f}{self.baseline_rss_mb[who]:>10.1f}")
        lines.append(f"plaintext out == plaintext in (SHA-256): {self.verified}")
        return "\n".join(lines)


def _write_source(path: Path, size: int) -> bytes:
    h = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(MIB, left))
            f.write(block)
            h.update(block)
            left -= len(block)
        f.flush()
        os.fsync(f.fileno())
    return h.digest()


def _digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MIB):
            h.update(block)
    return h.digest()


def _copy(source: Path, target: Path) -> float:
    t0 = time.perf_counter()
    shutil.copyfile(source, target)
    with target.open("rb+") as f:
        os.fsync(f.fileno())
    return time.perf_counter() - t0


async def _move(
    d: Deployment, target: str, source: Path, out: Path, chunk: int, broker_pid: int,
    progress: Progress,
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:  # fmt: skip
    from broker.client.attachments import Evidence
    from broker.client.node import AgencyNode, NodeConfig, ReceivedNotice

    await provision(d, target)
    stop_witness = asyncio.Event()
    witness = asyncio.create_task(
        run_witness(
            d.keys_dir, WITNESS_ID, target, d.root / "witness.json", stop=stop_witness,
            interval_s=0.2,
        )
    )  # fmt: skip
    fr = AgencyNode(NodeConfig("FR-NCB", target, d.keys_dir, d.root / "nodes"))
    de = AgencyNode(NodeConfig("DE-BKA", target, d.keys_dir, d.root / "nodes"))
    got: asyncio.Queue[ReceivedNotice] = asyncio.Queue()
    stop = asyncio.Event()

    async def on_notice(n: ReceivedNotice) -> None:
        await got.put(n)

    listener = asyncio.create_task(de.listen(on_notice, stop=stop))
    me = os.getpid()
    try:
        await fr.directory()
        baseline = {"broker process": rss_mb(broker_pid), "nodes process (both)": rss_mb(me)}
        for pid in (broker_pid, me):
            reset_peak(pid)
        seconds: dict[str, float] = {}
        marks: dict[str, float] = {}

        def mark(name: str) -> None:
            marks[name] = time.perf_counter()

        sealed_at: list[float] = []

        def on_progress(done: int, total: int) -> None:
            if done >= total and not sealed_at:
                sealed_at.append(time.perf_counter())

        progress("sealing, publishing and uploading")
        mark("start")
        published, _ = await Evidence(fr).publish(
            source,
            section="photos",
            sections=red_sections(
                {"identity": b"DOE, John", "case_facts": b"fraud", "judicial": b"w 1"}
            ),
            kind="interpol.red",
            purpose="locate_arrest",
            recipients=["DE-BKA"],
            chunk_size=chunk,
            progress=on_progress,
        )
        mark("uploaded")
        while True:
            notice = await asyncio.wait_for(got.get(), 60)
            if notice.notice_id == published.notice_id:
                break
        mark("delivered")
        ev = Evidence(de)
        progress("downloading")
        await ev.download(notice, "photos")
        mark("downloaded")
        progress("opening")
        await ev.open(notice, "photos", out)
        mark("opened")
        peaks = {
            "broker process": peak_rss_mb(broker_pid),
            "nodes process (both)": peak_rss_mb(me),
        }
        sealed = sealed_at[0] if sealed_at else marks["start"]
        seconds["seal (ciphertext fsynced)"] = sealed - marks["start"]
        seconds["publish, upload, sign"] = marks["uploaded"] - sealed
        seconds["download and check"] = marks["downloaded"] - marks["delivered"]
        seconds["open (plaintext fsynced)"] = marks["opened"] - marks["downloaded"]
        seconds["end to end"] = marks["opened"] - marks["start"]
        return seconds, peaks, baseline
    finally:
        stop.set()
        await asyncio.wait_for(listener, 30)
        stop_witness.set()
        await witness
        await fr.close()
        await de.close()


def run(size: int, chunk: int, directory: Path | None, progress: Progress) -> Report:
    """Copy, then move, one file of `size` bytes; the Report."""
    with tempfile.TemporaryDirectory(prefix="broker-bench-attachments-", dir=directory) as tmp:
        root = Path(tmp)
        d = create_deployment(root / "deployment")
        config = d.config_file.read_text()
        d.config_file.write_text(config + f"\n[attachments]\nmax_bytes = {max(size, 1)}\n")
        source = root / "evidence.bin"
        progress(f"writing {size / 1e6:,.1f} MB of random bytes to {source}")
        want = _write_source(source, size)
        progress("plain copy")
        copy_s = _copy(source, root / "copy.bin")
        (root / "copy.bin").unlink()
        broker = BrokerProcess(d.config_file, root / "broker.log")
        broker.start()
        try:
            seconds, peaks, baseline = asyncio.run(
                _move(
                    d, f"127.0.0.1:{broker.port}", source, root / "out.bin", chunk, broker.pid,
                    progress,
                )
            )  # fmt: skip
        except BaseException:
            progress((root / "broker.log").read_text(errors="replace")[-3000:])
            raise
        finally:
            broker.stop()
        verified = _digest(root / "out.bin") == want
    mb = size / 1e6
    steps = {k: v for k, v in seconds.items() if k != "end to end"}
    return Report(
        size_bytes=size,
        chunk_bytes=chunk,
        copy_mb_s=mb / copy_s,
        end_to_end_mb_s=mb / seconds["end to end"],
        steps_mb_s={k: mb / v if v > 0 else float("inf") for k, v in steps.items()},
        seconds=seconds,
        peak_rss_mb=peaks,
        baseline_rss_mb=baseline,
        verified=verified,
    )


def main_json(report: Report) -> str:
    return json.dumps(report.as_dict(), indent=2)
