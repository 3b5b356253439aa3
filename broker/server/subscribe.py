"""Subscribe on the broker: the stream that leases deliveries and lifecycle actions to an
agency, re-checks a delivery when what it was decided under changed (logging that
decision), takes receipts and event acknowledgements, and ends with a status that says
why (revoked, displaced). Mixed into AgencyService (broker/server/service.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias

from google.protobuf.message import DecodeError

from broker.core import delivery
from broker.core import envelope as env
from broker.core.decisions import still_decided
from broker.core.identity import Party
from broker.errors import Aborted, InvalidArgument, Unauthenticated
from broker.server import metrics, oplog
from broker.server.peer import caller, require_agency, require_registered
from broker.server.receipts import ReceiptHandlers
from broker.server.restrictions import RestrictionHandlers
from broker.server.wire import now_ms, parse
from broker.store.api import Event, LeasedControl, LeasedDelivery, Store
from broker.v1 import agency_pb2, audit_pb2, notice_pb2

if TYPE_CHECKING:
    from broker.server.app import BrokerApp

log = logging.getLogger("broker.server")
Ctx: TypeAlias = Any

SUBSCRIBE_BATCH = 64
EVENTS_BATCH = 64
SUBSCRIBE_BYTES = 6 * 1024 * 1024  # below the 8 MiB message limit, whatever the batch holds
EVENT_KINDS = {
    "dead_lettered": agency_pb2.EVENT_KIND_DEAD_LETTERED,
    "withheld": agency_pb2.EVENT_KIND_WITHHELD,
    "review_due": agency_pb2.EVENT_KIND_REVIEW_DUE,
    "expired": agency_pb2.EVENT_KIND_EXPIRED,
    "purged": agency_pb2.EVENT_KIND_PURGED,
}


def _ack_events(agency: str, up_to: int, store: Store) -> None:
    store.ack_events(agency, up_to)


def _release(agency: str, max_attempts: int, store: Store) -> list[Event]:
    return store.release(agency, now_ms(), max_attempts)


def _poll(
    agency: str, limit: int, lease_ms: int, after_event: int, store: Store
) -> tuple[list[LeasedDelivery], list[LeasedControl], list[Event]]:
    """Lease up to `limit` deliveries, then lifecycle actions for what is left of it, and
    read the agency's new events: one store round trip per Subscribe turn."""
    now = now_ms()
    leased: list[LeasedDelivery] = store.lease(agency, limit, now, lease_ms) if limit > 0 else []
    left = limit - len(leased)
    controls: list[LeasedControl] = (
        store.lease_controls(agency, left, now, lease_ms) if left > 0 else []
    )
    events: list[Event] = store.events(agency, after_event, EVENTS_BATCH)
    return leased, controls, events


class SubscribeHandlers(ReceiptHandlers, RestrictionHandlers):
    """Subscribe and what it streams (receipts on the stream, the forwarding re-check)."""

    app: BrokerApp

    def _agency(self, context: Ctx) -> str:
        agency = require_agency(caller(context, self.app.revoked))
        return require_registered(agency, self.app.registry)

    # -- Subscribe -----------------------------------------------------------------------
    async def _forward(self, me: str, leased: Sequence[LeasedDelivery]) -> list[bytes]:
        """The bytes of every leased delivery still allowed (the others are withheld).

        A delivery was cut and decided at publish; while the policy, the registry and the
        notice's restrictions are those it was decided under (and no embargo ended since),
        it is streamed as stored, without parsing. Otherwise it is re-checked first and
        carries the obligations of now.
        """
        app = self.app
        now = now_ms()
        out = []
        logged: list[audit_pb2.LogLeaf] = []  # forwarding-time decisions, logged first
        sent: list[tuple[str, int]] = []  # for the operator's line
        attempts: list[int] = []
        for d in leased:
            obligations = d.obligations
            if not d.head or not d.envelope:
                # Its content was erased (withdrawn, cancelled, expired) under a delivery
                # row that says otherwise: nothing to send, and one bad row must not end
                # the recipient's stream.
                await self._withhold(d.seq, "its content was erased", leased=True)
                continue
            if not (
                d.cut
                and still_decided(
                    d.decided_under,
                    app.policy.version,
                    app.registry_key,
                    app.restrictions_key(d.notice_id),
                    now,
                )
            ):
                try:
                    envelope = notice_pb2.Envelope.FromString(d.envelope)
                    checked = await self._forward_check(me, d, envelope, logged)
                except (DecodeError, InvalidArgument) as exc:
                    log.warning(
                        "stored delivery no longer checks; withheld",
                        extra={"notice_id": d.notice_id, "error": str(exc)},
                    )
                    await self._withhold(d.seq, "its stored copy no longer checks", leased=True)
                    continue
                if checked is None:
                    continue
                if not d.cut:  # stored before deliveries were cut at publish (migration 5)
                    out.append(self._legacy_delivery(me, d, envelope, checked))
                    sent.append((d.notice_id, d.version))
                    attempts.append(d.attempt)
                    continue
                obligations = delivery.encode_obligations(checked)
            out.append(
                delivery.assemble(
                    sequence=d.seq,
                    attempt=d.attempt,
                    head=d.head,
                    sections=d.cut,
                    ciphertexts=dict(d.ciphertexts),
                    wrap=d.wrap,
                    obligations=obligations,
                )
            )
            sent.append((d.notice_id, d.version))
            attempts.append(d.attempt)
        if logged:
            await app.runner.call(lambda s: s.tlog_append(logged))
        oplog.deliveries(oplog.SENT, me, sent, attempts)
        return out

    def _legacy_delivery(
        self,
        me: str,
        d: LeasedDelivery,
        envelope: notice_pb2.Envelope,
        obligations: list[notice_pb2.Obligation],
    ) -> bytes:
        message = env.delivery_for(envelope, me, d.sections)
        message.obligations.extend(obligations)
        message.sequence = d.seq
        message.attempt = d.attempt
        originator = self.app.registry.get(env.peek_originator(envelope.header))
        if originator is not None:
            message.originator_statement.ParseFromString(originator.statement)
        return message.SerializeToString()

    def _controls(self, controls: Sequence[LeasedControl]) -> agency_pb2.SubscribeResponse:
        resp = agency_pb2.SubscribeResponse()
        for c in controls:
            control = resp.controls.add(sequence=c.seq, attempt=c.attempt)
            if c.kind == "restricted":  # the originator's signed restriction update itself
                control.restriction_update = c.action
                control.restriction_signature = c.signature
            else:
                control.action.action = c.action
                control.action.signature = c.signature
            if c.superseding:  # the newer version's signed header: proof of the supersession
                newest = notice_pb2.Delivery.FromString(c.superseding)
                control.superseding.CopyFrom(newest.header)
                control.originator_statement.CopyFrom(newest.originator_statement)
            actor = self.app.registry.get(c.actor)
            if actor is not None:
                control.actor_statement.ParseFromString(actor.statement)
        return resp

    async def subscribe(self, requests: AsyncIterator[bytes], context: Ctx) -> AsyncIterator[bytes]:
        """Serialized SubscribeResponses for the caller's stream."""
        me = self._agency(context)
        session = self.app.open_session(me)
        # Bounded: a client that stops reading stops the reader too, and gRPC flow control
        # pushes back on its writes; the broker never buffers without bound.
        outgoing: asyncio.Queue[agency_pb2.SubscribeResponse] = asyncio.Queue(maxsize=16)
        credits = 0
        failure: list[BaseException] = []

        async def read() -> None:
            nonlocal credits
            async for data in requests:
                req = parse(agency_pb2.SubscribeRequest, data)
                which = req.WhichOneof("item")
                if which == "credit":
                    credits = min(credits + req.credit.credits, self.app.max_window)
                    session.wake.set()
                elif which == "receipts":
                    acked, refused = await self._store_receipts(me, [req.receipts], partial=True)
                    await outgoing.put(
                        agency_pb2.SubscribeResponse(receipt_acks=acked, receipt_refusals=refused)
                    )
                    session.wake.set()
                elif which == "ack_events":
                    up_to = req.ack_events.up_to_sequence
                    await self.app.runner.call(partial(_ack_events, me, up_to))
                else:
                    raise InvalidArgument(
                        "SubscribeRequest must carry credit, receipts or ack_events"
                    )

        async def reader() -> None:
            try:
                await read()
            except BaseException as exc:
                failure.append(exc)
            finally:
                session.wake.set()

        metrics.SUBSCRIBERS.inc()
        reader_task = asyncio.create_task(reader())
        last_event = 0
        limits = self.app.config.limits
        try:
            # A new stream takes over: whatever a previous stream left in flight is
            # redelivered now (or dead-lettered if out of attempts).
            for ev in await self.app.runner.call(partial(_release, me, limits.max_attempts)):
                if ev.kind == "dead_lettered":
                    metrics.DEAD_LETTERS.inc()
                oplog.delivery(ev.kind, ev.notice_id, ev.version, ev.recipient)
                self.app.wake(ev.agency)
            for ev in await self.app.runner.call(
                lambda s: s.release_controls(me, now_ms(), limits.max_attempts)
            ):
                self.app.wake(ev.agency)
            while not session.closed.is_set():
                session.wake.clear()
                while not outgoing.empty():
                    yield outgoing.get_nowait().SerializeToString()
                if failure:
                    raise failure[0]
                if reader_task.done():
                    return  # the client half-closed
                # One store round trip per turn: deliveries, lifecycle actions and events.
                limit = min(credits, SUBSCRIBE_BATCH)
                leased, controls, events = await self.app.runner.call(
                    partial(_poll, me, limit, limits.lease_ms, last_event)
                )
                # Only a turn that took all it asked for may have left something behind; after
                # any other, what is queued later wakes the stream (app.wake).
                full = 0 < limit <= len(leased) + len(controls) or len(events) >= EVENTS_BATCH
                if leased:
                    metrics.observe_waits(leased, now_ms())  # + judicial: wait per priority
                    forwarded = await self._forward(me, leased)  # withheld ones cost no credit
                    credits -= len(forwarded)
                    metrics.DELIVERIES.inc(len(forwarded))
                    batch: list[bytes] = []
                    size = 0
                    for data in forwarded:
                        if batch and size + len(data) > SUBSCRIBE_BYTES:
                            # Keep each message under the transport's limit.
                            yield delivery.subscribe_response(batch)
                            batch, size = [], 0
                        batch.append(data)
                        size += len(data) + 8
                    if batch:
                        yield delivery.subscribe_response(batch)
                if controls:
                    credits -= len(controls)
                    yield self._controls(controls).SerializeToString()
                if events:
                    resp = agency_pb2.SubscribeResponse()
                    for ev in events:
                        resp.events.add(
                            sequence=ev.seq,
                            kind=EVENT_KINDS.get(ev.kind, agency_pb2.EVENT_KIND_UNSPECIFIED),
                            notice_id=ev.notice_id,
                            version=ev.version,
                            recipient=ev.recipient,
                            detail=ev.detail,
                            at_ms=ev.at_ms,
                        )
                    last_event = events[-1].seq
                    yield resp.SerializeToString()
                if full:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(session.wake.wait(), timeout=self.app.poll_interval)
            if Party("agency", me).uri() in self.app.revoked:  # revoked while streaming
                raise Unauthenticated(f"urn:broker:agency:{me} has been revoked; stream closed")
            if session.displaced:
                raise Aborted(
                    f"another Subscribe from {me} replaced this stream; "
                    "run one subscriber per agency"
                )
        finally:
            metrics.SUBSCRIBERS.dec()
            reader_task.cancel()
            with contextlib.suppress(BaseException):
                await reader_task
            self.app.close_session(me, session)
            # What this stream left in flight stays leased until its deadline (or the
            # agency's next stream), so the attempt counts and dead letters stay honest.
