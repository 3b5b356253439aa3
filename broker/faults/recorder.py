"""Recorders: agency nodes and an auditor that write down what they see, as they see it.

:class:`RecordingNode` is the real SDK (:class:`broker.client.node.AgencyNode`) with a
:class:`Recorder` beside it: every publish, lifecycle action and restriction update it
sends, every stream it opens, every delivery and action it reads, and everything its
application is handed, becomes an entry of the history (broker.faults.events). Nothing is
changed on the way: the node publishes, verifies, deduplicates and receipts as it would.

:class:`AuditRecorder` follows the transparency log with the real audit client: each new
checkpoint is recorded with the consistency proof from the largest one recorded before,
and at the end every entry up to a checkpoint that covers everything committed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError

from broker import pki
from broker.client import plain
from broker.client.audit import AuditClient
from broker.client.findings import FindingHandler
from broker.client.node import AgencyNode, NodeConfig
from broker.client.types import (
    EventHandler,
    Handler,
    LifecycleHandler,
    LifecycleNotice,
    ListenStats,
    ReceivedNotice,
)
from broker.core import lifecycle
from broker.core.identity import Party
from broker.errors import BrokerError, Unavailable
from broker.faults.events import (
    ActAttempt,
    ActFailed,
    ActionHandled,
    ActOk,
    CheckpointSeen,
    ControlReceived,
    Delivered,
    Entry,
    Event,
    Handled,
    LogSnapshot,
    Meta,
    PublishAttempt,
    PublishFailed,
    PublishOk,
    RestrictAttempt,
    RestrictFailed,
    RestrictOk,
    StreamOpened,
    dumps,
)
from broker.v1 import agency_pb2, audit_pb2, notice_pb2

AUDITOR = "auditor"
HARNESS = "harness"


class Recorder:
    """Collects a history; every recorder of one trial shares it (and its clock)."""

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.clock = clock
        self.entries: list[Entry] = []

    def record(self, actor: str, event: Event) -> Entry:
        entry = Entry(self.clock(), actor, event)
        self.entries.append(entry)
        return entry

    def save(self, path: Path) -> None:
        path.write_text(dumps(self.entries), encoding="utf-8")


def log_key(keys_dir: Path, broker_id: str = "broker") -> str:
    """The broker's log verifier key, for the history's Meta entry."""
    path = pki.party_directory(keys_dir, Party("broker", broker_id)) / pki.LOG_PUB
    return path.read_text(encoding="utf-8").strip()


def _error(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


def _peek_delivery(delivery: notice_pb2.Delivery) -> tuple[str, int, tuple[str, ...]]:
    """(notice id, version, section names) as the broker sent them, unverified."""
    try:
        header = notice_pb2.NoticeHeader.FromString(delivery.header.header_bytes)
        names = set(notice_pb2.WrapLeaf.FromString(delivery.wrap.leaf).sections)
        for s in delivery.sections:
            names.add(notice_pb2.SectionDescriptor.FromString(s.descriptor).name)
    except DecodeError:
        return "", 0, ()
    return header.notice_id, header.version, tuple(sorted(names))


def denied_by(
    restrictions: notice_pb2.OriginatorRestrictions, countries: Mapping[str, str]
) -> tuple[str, ...]:
    """The agencies (of `countries`: id -> country) that restrictions exclude by id or
    country (group restrictions are not modelled: the trials do not use them)."""
    out = []
    for agency, country in countries.items():
        if (
            agency in restrictions.deny_agencies
            or country in restrictions.deny_countries
            or (restrictions.allow_agencies and agency not in restrictions.allow_agencies)
            or (restrictions.allow_countries and country not in restrictions.allow_countries)
        ):
            out.append(agency)
    return tuple(sorted(out))


class RecordingNode(AgencyNode):
    """An AgencyNode that records what it sends and sees (see the module docstring)."""

    def __init__(
        self, config: NodeConfig, recorder: Recorder, countries: Mapping[str, str]
    ) -> None:
        super().__init__(config)
        self.recorder = recorder
        self.countries = dict(countries)
        self._streams = 0

    def _record(self, event: Event) -> None:
        self.recorder.record(self.me, event)

    # -- what it sends ----------------------------------------------------------------------
    async def publish_envelopes(
        self, envelopes: list[notice_pb2.Envelope]
    ) -> agency_pb2.PublishResponse:
        keys = []
        for e in envelopes:
            header = notice_pb2.NoticeHeader.FromString(e.header.header_bytes)
            audience = {}
            for wrap in e.wraps:
                leaf = notice_pb2.WrapLeaf.FromString(wrap.leaf)
                audience[leaf.recipient] = tuple(sorted(leaf.sections))
            keys.append((header.notice_id, header.version))
            self._record(PublishAttempt(header.notice_id, header.version, audience))
        try:
            response = await super().publish_envelopes(envelopes)
        except (grpc.aio.AioRpcError, BrokerError) as exc:
            for notice_id, version in keys:
                self._record(PublishFailed(notice_id, version, _error(exc)))
            raise
        for r in response.results:
            self._record(PublishOk(r.notice_id, r.version, r.duplicate))
        return response

    async def act(
        self,
        kind: str | int,
        notice_id: str,
        *,
        reason: str = "",
        until_ms: int = 0,
        target: str = "",
        action_id: str | None = None,
    ) -> agency_pb2.ActResponse:
        action_id = action_id or str(uuid.uuid4())
        name = lifecycle.NAMES.get(plain.lifecycle_kind(kind), "unknown")
        self._record(ActAttempt(action_id, notice_id, name))
        try:
            response = await super().act(
                kind,
                notice_id,
                reason=reason,
                until_ms=until_ms,
                target=target,
                action_id=action_id,
            )
        except (grpc.aio.AioRpcError, BrokerError) as exc:
            self._record(ActFailed(action_id, _error(exc)))
            raise
        self._record(ActOk(action_id, tuple(sorted(response.told)), response.duplicate))
        return response

    async def update_restrictions(
        self,
        notice_id: str,
        restrictions: notice_pb2.OriginatorRestrictions,
        sequence: int,
    ) -> int:
        denied = denied_by(restrictions, self.countries)
        self._record(RestrictAttempt(notice_id, sequence, denied))
        try:
            withheld = await super().update_restrictions(notice_id, restrictions, sequence)
        except (grpc.aio.AioRpcError, BrokerError) as exc:
            self._record(RestrictFailed(notice_id, sequence, _error(exc)))
            raise
        self._record(RestrictOk(notice_id, sequence))
        return withheld

    # -- what it sees -----------------------------------------------------------------------
    async def listen(
        self,
        handler: Handler,
        *,
        stop: asyncio.Event,
        on_event: EventHandler | None = None,
        on_lifecycle: LifecycleHandler | None = None,
        on_finding: FindingHandler | None = None,
    ) -> ListenStats:
        async def handle(notice: ReceivedNotice) -> None:
            self._record(Handled(notice.notice_id, notice.version))
            await handler(notice)

        async def told(action: LifecycleNotice) -> None:
            a = action.action
            self._record(ActionHandled(a.action_id, a.notice_id, action.kind))
            if on_lifecycle is not None:
                await on_lifecycle(action)

        return await super().listen(
            handle, stop=stop, on_event=on_event, on_lifecycle=told, on_finding=on_finding
        )

    async def _stream(
        self,
        handler: Handler,
        stop: asyncio.Event,
        on_event: EventHandler | None,
        on_lifecycle: LifecycleHandler | None,
    ) -> None:
        self._streams += 1
        self._record(StreamOpened(self._streams))  # before the call leaves
        await super()._stream(handler, stop, on_event, on_lifecycle)

    def _take(
        self, delivery: notice_pb2.Delivery, batch: set[tuple[str, int]]
    ) -> tuple[ReceivedNotice | None, notice_pb2.Receipt | None]:
        notice, receipt = super()._take(delivery, batch)
        notice_id, version, sections = _peek_delivery(delivery)
        self._record(
            Delivered(
                self._streams, notice_id, version, sections, delivery.attempt, receipt is not None
            )
        )
        return notice, receipt

    async def _take_control(
        self, control: notice_pb2.ControlDelivery, on_lifecycle: LifecycleHandler | None
    ) -> notice_pb2.Receipt | None:
        receipt = await super()._take_control(control, on_lifecycle)
        action = notice_pb2.LifecycleAction()
        with contextlib.suppress(DecodeError):
            action.ParseFromString(control.action.action)
        self._record(
            ControlReceived(
                self._streams,
                action.action_id,
                action.notice_id,
                lifecycle.NAMES.get(action.kind, "unknown"),
                action.version,
                receipt is not None,
            )
        )
        return receipt


class AuditRecorder:
    """Follows checkpoints with the real audit client and records them. `connect` makes a
    client; after a failed call the recorder makes a new one, so that it comes back as
    soon as a restarted broker serves (a channel's own reconnect backoff grows long)."""

    def __init__(self, recorder: Recorder, connect: Callable[[], AuditClient]) -> None:
        self.recorder = recorder
        self.connect = connect
        self.client = connect()
        self.kept: tuple[int, bytes] | None = None  # the largest checkpoint recorded
        self.last: tuple[int, bytes] | None = None
        self.last_note = ""

    @staticmethod
    def start_history(recorder: Recorder, keys_dir: Path, seed: int) -> None:
        recorder.record(HARNESS, Meta(log_key(keys_dir), seed))

    async def close(self) -> None:
        await self.client.close()

    async def _reconnect(self) -> None:
        await self.client.close()
        self.client = self.connect()

    async def poll(self) -> bool:
        """Fetch the latest checkpoint; record it if it changed. False if nothing was
        recorded (unchanged, or the broker could not be asked: try again later)."""
        try:
            fetched = await self.client.checkpoint()
            head = (int(fetched.size), bytes(fetched.root))
            if head == self.last:
                return False
            proof: list[bytes] = []
            proof_from = -1
            if self.kept is not None:
                proof_from = self.kept[0]
                if 0 < self.kept[0] < head[0]:
                    proof = await self.client.consistency(self.kept[0], head[0])
        except BrokerError:
            await self._reconnect()
            return False  # recorded, with its proof, next time
        self.recorder.record(
            AUDITOR, CheckpointSeen(fetched.note, proof_from, tuple(h.hex() for h in proof))
        )
        self.last, self.last_note = head, fetched.note
        if self.kept is None or head[0] > self.kept[0]:
            self.kept = head
        return True

    async def follow(self, stop: asyncio.Event, interval_s: float = 0.2) -> None:
        """Poll until `stop` is set."""
        while not stop.is_set():
            await self.poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    async def snapshot(self, timeout_s: float = 30.0) -> None:
        """Record a checkpoint covering everything committed so far, then every entry up to
        it. Retries while the broker cannot be asked; raises BrokerError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                await self._snapshot()
                return
            except (BrokerError, grpc.aio.AioRpcError):
                if time.monotonic() > deadline:
                    raise
                await self._reconnect()
                await asyncio.sleep(0.1)

    async def _snapshot(self) -> None:
        head = await self.client.stub.GetEntries(
            audit_pb2.GetEntriesRequest(start=0, end=0, limit=1), timeout=self.client.timeout_s
        )
        size = int(head.tree_size)
        if size:
            await self.client.inclusion(size - 1)  # the broker signs a checkpoint covering it
        await self.poll()  # records the latest checkpoint with its consistency proof
        if self.last is None or self.last[0] < size:
            raise Unavailable(f"no checkpoint covering {size} entries could be recorded yet")
        leaves = await self.client.entries(0, self.last[0])
        self.recorder.record(
            AUDITOR,
            LogSnapshot(self.last_note, tuple(base64.b64encode(e.leaf).decode() for e in leaves)),
        )
