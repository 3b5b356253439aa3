"""Processes of a bench run, read from /proc: CPU seconds, resident memory, peaks.

Every figure of `broker bench` is per process: the broker (its own `broker serve`
process), the publisher and the recipients (worker processes), and, for the peers,
the local nats-server and RabbitMQ (beam.smp) processes. Linux only.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from broker.errors import FailedPrecondition, Unavailable

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """CPU seconds of one process so far: user plus system time (/proc/<pid>/stat, in
    clock ticks of 10 ms, exited threads included), or the nanosecond run times of its
    live threads (/proc/<pid>/task/*/schedstat) where those add up to more. Both only
    grow, so their maximum does too; a short run of a process that works little (a
    peer's publisher) then measures above zero instead of rounding to no tick at all."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = raw[raw.rindex(")") + 2 :].split()
    ticks = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)
    return max(ticks, _schedstat_seconds(pid))


def _schedstat_seconds(pid: int) -> float:
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that just ended
            continue
    return total / 1e9


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def rss_mb(pid: int) -> float:
    """Resident memory now (VmRSS), in MB (10^6 bytes)."""
    return _status_kb(pid, "VmRSS") * 1024 / 1e6


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) since the process started or since reset_peak."""
    return _status_kb(pid, "VmHWM") * 1024 / 1e6


def reset_peak(pid: int) -> bool:
    """Reset a process's VmHWM to its current RSS (Linux clear_refs "5"); False if refused,
    in which case peak_rss_mb keeps reporting the peak since the process started."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def pids_named(name: str) -> list[int]:
    """Processes whose command name (/proc/<pid>/comm) is `name`."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    out.append(int(entry.name))
            except OSError:
                continue
    return sorted(out)


def server_pid(name: str) -> int | None:
    """The one local process called `name` (a peer's server), or None if not exactly one."""
    found = pids_named(name)
    return found[0] if len(found) == 1 else None


def closed_port(url: str, default_port: int, timeout: float = 2.0) -> str | None:
    """None if something accepts TCP connections at the URL's host and port, else why not."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"nothing answers on {host}:{port}: {exc.strerror or exc}"


def unreachable(
    what: str, url: str, default_port: int, probe: Callable[[], Coroutine[Any, Any, None]]
) -> str | None:
    """None if the server at `url` accepts TCP and `probe()` succeeds within 8 s, else a
    sentence saying why not (for the report, or an error when the peer is required)."""
    closed = closed_port(url, default_port)
    if closed:
        return f"{what} at {url} is unreachable ({closed})"
    try:
        asyncio.run(asyncio.wait_for(probe(), timeout=8))
    except Exception as exc:
        return f"{what} at {url} is unreachable ({type(exc).__name__}: {exc})"
    return None


@dataclass
class Usage:
    """CPU seconds of a set of processes between two readings, and their peak RSS."""

    cpu_s: float
    peak_rss_mb: float


class Meter:
    """Reads CPU and peak RSS of named groups of processes over one measured window."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = {k: list(v) for k, v in groups.items() if v}
        self._start: dict[int, float] = {}

    def start(self) -> None:
        self._start = {}
        for pids in self.groups.values():
            for pid in pids:
                reset_peak(pid)
                self._start[pid] = cpu_seconds(pid)

    def stop(self) -> dict[str, Usage]:
        """Per group: CPU seconds since start() and the sum of the processes' peak RSS."""
        out = {}
        for group, pids in self.groups.items():
            cpu = sum(cpu_seconds(p) - self._start.get(p, 0.0) for p in pids)
            out[group] = Usage(cpu, sum(peak_rss_mb(p) for p in pids))
        return out


class BrokerProcess:
    """`broker serve` as a child process on 127.0.0.1 (its port chosen by the kernel)."""

    def __init__(self, config_file: Path, log: Path) -> None:
        self.config_file = config_file
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout_s: float = 30.0) -> int:
        port_file = self.config_file.parent / "bench.port"
        port_file.unlink(missing_ok=True)
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "broker.cli.main",
                    "serve",
                    "--config",
                    str(self.config_file),
                    "--listen",
                    "127.0.0.1:0",
                    "--metrics-listen",
                    "",
                    "--port-file",
                    str(port_file),
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        deadline = time.monotonic() + timeout_s
        while not port_file.exists():
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise FailedPrecondition(f"the broker exited with {self.proc.returncode}: {tail}")
            if time.monotonic() > deadline:
                self.stop()
                raise Unavailable(f"the broker did not start in {timeout_s:.0f} s; see {self.log}")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        return self.port

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise FailedPrecondition("the broker is not running")
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM (the broker drains), then SIGKILL after 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
