"""One crash trial: a real `broker serve` process, killed with SIGKILL at random points
while agencies publish, receive, receipt and act, restarted on the same data directory
each time; then everything owed is awaited, and the history is judged.

A trial is driven by one seed. The seed fixes the workload (which operation each
originator runs, on which notice, with which recipients; the notice ids) and the kill
schedule (after how many finished operations, plus how many milliseconds, each SIGKILL
falls). What the seed cannot fix is the interleaving of two processes: a failing seed
replays the same workload and kill points, usually but not always the same race.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from broker.bench.workload import red_sections
from broker.client.audit import AuditClient
from broker.client.node import NodeConfig, ReceivedNotice, now_ms
from broker.client.witness import run_witness
from broker.core.identity import Party
from broker.errors import BrokerError, FailedPrecondition, InvalidArgument, Unavailable
from broker.faults.events import Entry, Handled, Killed, PublishOk, Restarted, Status
from broker.faults.history import Report, check, outstanding
from broker.faults.recorder import HARNESS, AuditRecorder, Recorder, RecordingNode
from broker.sandbox import AUDITOR_ID, REPO_POLICIES, WITNESS_ID, Deployment, provision
from broker.v1 import agency_pb2, notice_pb2

ORIGINATORS = ("FR-NCB", "DE-BKA")
SECTIONS = red_sections(  # the catalogue's field lines first (broker/core/content.py)
    {
        "identity": b"DOE, John; born 1970-01-01",
        "case_facts": b"fraud",
        "judicial": b"warrant 1",
        "biometrics": b"prints",
    }
)
# How often each operation is drawn (an operation with no candidate becomes a publish).
WEIGHTS = {
    "publish": 50,
    "update": 12,
    "withdraw": 10,
    "flag": 10,
    "restrict": 8,
    "suspend": 5,
    "resume": 5,
}
STATE_NAMES = {
    value: name.removeprefix("DELIVERY_STATE_").lower()
    for name, value in agency_pb2.DeliveryState.items()
}


class TrialError(FailedPrecondition):
    """The trial could not run (a broker did not start or stop): not a verdict."""


@dataclass(frozen=True)
class TrialPlan:
    seed: int
    operations: int = 40  # across every originator
    kills: int = 2
    settle_s: float = 60.0  # how long everything owed may take to arrive after the last restart


@dataclass(frozen=True)
class TrialResult:
    plan: TrialPlan
    report: Report
    entries: tuple[Entry, ...]
    seconds: float
    history: Path  # the history, as JSON lines
    broker_log: Path


# Below Linux's default ephemeral range (32768-60999): the broker is restarted on the same
# port after each SIGKILL, and a port the kernel hands out for outgoing connections or
# `:0` binds (other tests, other programs) could be taken in between.
_PORTS = range(20000, 32768)


def free_port() -> int:
    """A port free now, outside the ephemeral range; raises Unavailable if none is."""
    pick = random.SystemRandom()
    for _ in range(200):
        port = pick.choice(_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise Unavailable("no free port between 20000 and 32767 on 127.0.0.1 for the trial's broker")


def write_config(deployment: Deployment, path: Path) -> Path:
    """broker.toml for trials: the deployment's keys and registry, the shipped policy, no
    metrics port, and attempts enough that kills alone never dead-letter a delivery."""
    path.write_text(
        "\n".join(
            [
                "[server]",
                f'data_dir = "{deployment.root / "broker"}"',
                f'keys_dir = "{deployment.keys_dir}"',
                f'policy_dir = "{REPO_POLICIES}"',
                f'registry = "{deployment.registry}"',
                'metrics_listen = ""',
                "expiry_interval_s = 0.2",
                "",
                "[limits]",
                "lease_ms = 30000",
                "max_attempts = 100",
                "",
            ]
        ),
        encoding="utf-8",
    )
    return path


class BrokerProcess:
    """`broker serve` as a child process, always on the same port and data directory."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log = config, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def port_file(self) -> Path:
        return self.log.with_name(f"{self.log.stem}.port")

    def start(self, timeout_s: float = 30.0) -> int:
        """Start and wait until it serves; return its pid. Raises TrialError."""
        self.spawn()
        return self.wait_serving(timeout_s)

    def spawn(self) -> int:
        """Start the process; return its pid at once (it is not serving yet)."""
        port_file = self.port_file
        port_file.unlink(missing_ok=True)
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "broker.cli.main",
                    "serve",
                    "--config",
                    str(self.config),
                    "--listen",
                    self.target,
                    "--port-file",
                    str(port_file),
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        return self.proc.pid

    def wait_serving(self, timeout_s: float = 30.0) -> int:
        """Wait until the process serves; return its pid. Raises TrialError."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while not self.port_file.exists():
            if self.proc.poll() is not None:
                raise TrialError(f"the broker exited with {self.proc.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise TrialError(f"the broker did not start in {timeout_s:.0f} s: {self.tail()}")
            time.sleep(0.02)
        return self.proc.pid

    def kill(self) -> int:
        """SIGKILL and reap; return the pid that was killed."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return self.proc.pid

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (a graceful drain); return the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return 0 if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -signal.SIGKILL

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


@dataclass
class Notice:
    """What an originator's worker knows of one of its notices."""

    notice_id: str
    version: int
    recipients: tuple[str, ...]
    uncertain: bool = False  # a call on it failed: its state is unknown, leave it alone
    closed: bool = False
    restricted: bool = False
    suspended: bool = False
    flagged: set[str] = field(default_factory=set)

    @property
    def open(self) -> bool:
        return not (self.uncertain or self.closed)


class Trial:
    """The moving parts of one trial (see :func:`run_trial`)."""

    def __init__(self, deployment: Deployment, work_dir: Path, plan: TrialPlan) -> None:
        self.deployment, self.work_dir, self.plan = deployment, work_dir, plan
        self.rng = random.Random(plan.seed)
        self.recorder = Recorder()
        self.countries = {a.id: a.country for a in deployment.agencies}
        config = write_config(deployment, work_dir / "crash.toml")
        self.broker = BrokerProcess(config, free_port(), work_dir / "broker.log")
        self.nodes: dict[str, RecordingNode] = {}
        self.done = 0  # operations finished, across workers
        self.progress = asyncio.Event()

    def node(self, agency: str) -> RecordingNode:
        config = NodeConfig(
            agency_id=agency,
            broker=self.broker.target,
            keys_dir=self.deployment.keys_dir,
            state_dir=self.work_dir / "nodes",
            window=8,
            rpc_timeout_s=5,
            reconnect_max_s=0.5,
            publish_attempts=25,
        )
        return RecordingNode(config, self.recorder, self.countries)

    def handled(self, agency: str, notice_id: str) -> bool:
        return any(
            e.actor == agency and isinstance(e.event, Handled) and e.event.notice_id == notice_id
            for e in self.recorder.entries
        )

    # -- the workload -------------------------------------------------------------------
    async def worker(self, me: str, count: int) -> None:
        rng = random.Random(f"{self.plan.seed}/{me}")
        node = self.nodes[me]
        others = sorted(a for a in self.nodes if a != me)
        notices: list[Notice] = []
        for _ in range(count):
            op = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
            with contextlib.suppress(grpc.aio.AioRpcError, BrokerError):
                await self.operate(op, rng, node, others, notices)
            self.done += 1
            self.progress.set()

    async def operate(
        self,
        op: str,
        rng: random.Random,
        node: RecordingNode,
        others: list[str],
        notices: list[Notice],
    ) -> None:
        candidates = [n for n in notices if n.open]
        pairs: list[tuple[Notice, str]] = []
        if op == "suspend":
            candidates = [n for n in candidates if not n.suspended]
        elif op == "resume":
            candidates = [n for n in candidates if n.suspended]
        elif op == "restrict":
            candidates = [n for n in candidates if not n.restricted]
        elif op == "flag":
            pairs = [
                (n, r)
                for n in candidates
                for r in n.recipients
                if r not in n.flagged and self.handled(r, n.notice_id)
            ]
        if op == "publish" or not candidates or (op == "flag" and not pairs):
            recipients = tuple(sorted(rng.sample(others, rng.randint(1, len(others)))))
            notice = Notice(str(uuid.UUID(int=rng.getrandbits(128), version=4)), 1, recipients)
            notices.append(notice)
            await self.publish(node, notice, recipients)
            return
        if op == "flag":
            notice, flagger = rng.choice(pairs)
            notice.flagged.add(flagger)
            await self.nodes[flagger].flag(notice.notice_id, "not on our territory")
            return
        notice = rng.choice(candidates)
        if op == "update":
            recipients = tuple(sorted(rng.sample(others, rng.randint(1, len(others)))))
            await self.publish(node, notice, recipients, version=notice.version + 1)
        elif op == "withdraw":
            notice.closed = True
            await node.withdraw(notice.notice_id, "arrested")
        elif op == "restrict":
            notice.restricted = True
            country = self.countries[rng.choice(notice.recipients)]
            restrictions = notice_pb2.OriginatorRestrictions(deny_countries=[country])
            with self.uncertain(notice):
                await node.update_restrictions(notice.notice_id, restrictions, 1)
        elif op == "suspend":
            with self.uncertain(notice):
                await node.suspend(notice.notice_id, now_ms() + 600_000, "under review")
            notice.suspended = True
        else:
            with self.uncertain(notice):
                await node.resume(notice.notice_id, "review done")
            notice.suspended = False

    @staticmethod
    @contextlib.contextmanager
    def uncertain(notice: Notice) -> Iterator[None]:
        """A call on the notice that fails leaves its state unknown: leave it alone."""
        try:
            yield
        except BaseException:
            notice.uncertain = True
            raise

    async def publish(
        self, node: RecordingNode, notice: Notice, recipients: tuple[str, ...], version: int = 1
    ) -> None:
        with self.uncertain(notice):
            await node.publish(
                kind="interpol.red",
                purpose="locate_arrest",
                sections=SECTIONS,
                recipients=recipients,
                notice_id=notice.notice_id,
                version=version,
            )
        notice.version, notice.recipients = version, recipients

    async def killer(self, points: list[tuple[int, int, int]]) -> None:
        """SIGKILL after `after` operations and `delay_ms`; when `starting_ms` is set, also
        the next process, that long after it was started (usually before it serves)."""
        for after, delay_ms, starting_ms in points:
            while self.done < after:
                self.progress.clear()
                await self.progress.wait()
            await asyncio.sleep(delay_ms / 1000)
            pid = await asyncio.to_thread(self.broker.kill)
            self.recorder.record(HARNESS, Killed(pid))
            if starting_ms:
                self.broker.spawn()
                await asyncio.sleep(starting_ms / 1000)
                pid = await asyncio.to_thread(self.broker.kill)
                self.recorder.record(HARNESS, Killed(pid, starting=True))
            pid = await asyncio.to_thread(self.broker.start)
            self.recorder.record(HARNESS, Restarted(pid))

    # -- the end ------------------------------------------------------------------------
    async def settle(self) -> None:
        """Wait until the history owes nothing more, then record the broker's view of every
        acknowledged publish once every copy an application was handed is receipted."""
        deadline = time.monotonic() + self.plan.settle_s
        while outstanding(self.recorder.entries) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        published = [
            (e.actor, e.event.notice_id, e.event.version)
            for e in self.recorder.entries
            if isinstance(e.event, PublishOk)
        ]
        receipted = outstanding(self.recorder.entries).receipts
        for originator, notice_id, version in sorted(set(published)):
            while True:
                status = await self.nodes[originator].delivery_status(notice_id, version)
                waiting = [
                    r
                    for r in status.recipients
                    if (r.recipient, notice_id, version) in receipted
                    and r.state != agency_pb2.DELIVERY_STATE_DELIVERED
                ]
                if not waiting or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            for r in status.recipients:
                state = STATE_NAMES.get(r.state, "unknown")
                self.recorder.record(originator, Status(notice_id, version, r.recipient, state))

    async def run(self) -> Report:
        plan = self.plan
        if plan.kills < 0 or plan.operations < plan.kills + 4:
            raise InvalidArgument("a trial needs at least 4 more operations than kills")
        self.broker.start()
        witness_stop = asyncio.Event()
        witness: asyncio.Task[int] | None = None
        try:
            await provision(self.deployment, self.broker.target)
            # The deployment's witness (trust.toml) cosigns checkpoints across the restarts.
            witness = asyncio.create_task(
                run_witness(
                    self.deployment.keys_dir,
                    WITNESS_ID,
                    self.broker.target,
                    self.work_dir / "witness.json",
                    stop=witness_stop,
                    interval_s=0.1,
                )
            )
            AuditRecorder.start_history(self.recorder, self.deployment.keys_dir, plan.seed)
            points = sorted(self.rng.sample(range(2, max(plan.operations - 2, 3)), plan.kills))
            schedule = [
                (after, self.rng.randint(0, 40), self.rng.choice([0, 0, self.rng.randint(50, 600)]))
                for after in points
            ]
            report = await self._drive(schedule)
        finally:
            witness_stop.set()
            if witness is not None:
                await witness
            code = await asyncio.to_thread(self.broker.stop)
            self.recorder.save(self.work_dir / "history.jsonl")
        if code != 0:
            raise TrialError(f"the broker exited with {code} on SIGTERM: {self.broker.tail()}")
        return report

    async def _drive(self, schedule: list[tuple[int, int, int]]) -> Report:
        def auditor() -> AuditClient:
            party = Party("auditor", AUDITOR_ID)
            return AuditClient(self.broker.target, self.deployment.keys_dir, party, timeout_s=5)

        audit = AuditRecorder(self.recorder, auditor)
        stop = asyncio.Event()
        listeners = []
        try:
            for agency in self.countries:
                self.nodes[agency] = self.node(agency)

            async def noop(_notice: ReceivedNotice) -> None:
                return None

            for node in self.nodes.values():
                listeners.append(asyncio.create_task(node.listen(noop, stop=stop)))
            following = asyncio.create_task(audit.follow(stop))
            share = self.plan.operations // len(ORIGINATORS)
            await asyncio.gather(
                self.killer(schedule), *(self.worker(o, share) for o in ORIGINATORS)
            )
            await self.settle()
            stop.set()
            await following
            await audit.snapshot()
        finally:
            stop.set()
            for task in listeners:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 10)
            for node in self.nodes.values():
                await node.close()
            await audit.close()
        return check(self.recorder.entries)


async def run_trial(deployment: Deployment, work_dir: Path, plan: TrialPlan) -> TrialResult:
    """Run one trial in `work_dir` (a fresh directory) on a fresh copy of a deployment.

    Returns the verdict with the history (also saved as work_dir/history.jsonl). Raises
    TrialError if a broker did not start or did not stop cleanly."""
    started = time.monotonic()
    trial = Trial(deployment, work_dir, plan)
    report = await trial.run()
    return TrialResult(
        plan,
        report,
        tuple(trial.recorder.entries),
        time.monotonic() - started,
        work_dir / "history.jsonl",
        trial.broker.log,
    )


def environment_seed(default: int | None = None, variable: str = "BROKER_CRASH_SEED") -> int:
    """The seed from the environment, else `default`, else a fresh random one."""
    value = os.environ.get(variable)
    if value:
        try:
            return int(value)
        except ValueError:
            raise InvalidArgument(f"{variable} must be an integer, not {value[:20]!r}") from None
    return default if default is not None else random.SystemRandom().randrange(2**31)
