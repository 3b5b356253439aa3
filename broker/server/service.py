"""AgencyService handlers.

Requests arrive as raw bytes and are parsed here, so malformed protobuf gets
INVALID_ARGUMENT with a message instead of gRPC's generic deserialisation
failure. Every handler resolves the caller from its certificate first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError, Message

from broker.core import delivery, keymap, relay
from broker.core import envelope as env
from broker.core.decisions import decided_under, still_decided
from broker.core.identity import Party
from broker.errors import (
    Aborted,
    BrokerError,
    InvalidArgument,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    prefixed,
)
from broker.server import evidence, lookup, metrics, oplog
from broker.server.audit_service import checkpoint_message
from broker.server.lifecycle import LifecycleHandlers, after_publish, check_version
from broker.server.peer import caller, require_agency, require_registered
from broker.server.quotas import Refusal
from broker.server.receipts import ReceiptHandlers
from broker.server.republish import republished
from broker.server.requests import RequestHandlers
from broker.server.restrictions import RestrictionHandlers
from broker.server.status import abort, status_of, unary_handler
from broker.server.wire import now_ms, parse
from broker.store.api import (
    DeliveryPlan,
    Event,
    LeasedControl,
    LeasedDelivery,
    NoticeRecord,
    Store,
    StoredCheckpoint,
)
from broker.v1 import agency_pb2, audit_pb2, lookup_pb2, notice_pb2

if TYPE_CHECKING:
    from broker.server.app import BrokerApp

log = logging.getLogger("broker.server")
Ctx: TypeAlias = Any  # grpc.aio.ServicerContext (grpc ships no type information)

SUBSCRIBE_BATCH = 64
SUBSCRIBE_BYTES = 6 * 1024 * 1024  # below the 8 MiB message limit, whatever the batch holds
EVENT_KINDS = {
    "dead_lettered": agency_pb2.EVENT_KIND_DEAD_LETTERED,
    "withheld": agency_pb2.EVENT_KIND_WITHHELD,
    "review_due": agency_pb2.EVENT_KIND_REVIEW_DUE,
    "expired": agency_pb2.EVENT_KIND_EXPIRED,
    "purged": agency_pb2.EVENT_KIND_PURGED,
}


def key_of(o: Any) -> tuple[str, int]:
    return (o.notice_id, o.version)


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
    events: list[Event] = store.events(agency, after_event, 64)
    return leased, controls, events


class AgencyService(RequestHandlers, ReceiptHandlers, RestrictionHandlers, LifecycleHandlers):
    """Implements broker.v1.AgencyService on a BrokerApp."""

    def __init__(self, app: BrokerApp) -> None:
        self.app = app

    # -- wiring ------------------------------------------------------------------
    def handler(self) -> grpc.GenericRpcHandler:
        def unary(
            name: str, fn: Callable[[bytes, Ctx], Awaitable[Message]]
        ) -> grpc.RpcMethodHandler:
            return unary_handler(name, fn)

        async def subscribe(requests: AsyncIterator[bytes], context: Ctx) -> AsyncIterator[bytes]:
            try:
                async for response in self.subscribe(requests, context):
                    yield response
            except BrokerError as exc:
                metrics.RPCS.labels("Subscribe", status_of(exc).name).inc()
                await abort(context, exc)
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except Exception as exc:
                metrics.RPCS.labels("Subscribe", "INTERNAL").inc()
                await abort(context, exc)

        return grpc.method_handlers_generic_handler(
            "broker.v1.AgencyService",
            {
                "ResolveAudience": unary("ResolveAudience", self.resolve_audience),
                "Publish": unary("Publish", self.publish),
                "Lookup": unary("Lookup", self.lookup),  # + lookups (broker/server/lookup.py)
                "SubmitReceipts": unary("SubmitReceipts", self.submit_receipts),
                "GetDeliveryStatus": unary("GetDeliveryStatus", self.delivery_status),
                "GetActivePolicy": unary("GetActivePolicy", self.active_policy),
                "UpdateRestrictions": unary("UpdateRestrictions", self.update_restrictions),
                "Act": unary("Act", self.act),
                "ListReplies": unary("ListReplies", self.list_replies),
                "GetDirectory": unary("GetDirectory", self.get_directory),
                "ListRequests": unary("ListRequests", self.list_requests),  # + judicial
                "Subscribe": grpc.stream_stream_rpc_method_handler(subscribe),
            },
        )

    def _agency(self, context: Ctx) -> str:
        agency = require_agency(caller(context, self.app.revoked))
        return require_registered(agency, self.app.registry)

    # -- ResolveAudience -------------------------------------------------------------
    async def resolve_audience(
        self, data: bytes, context: Ctx
    ) -> agency_pb2.ResolveAudienceResponse:
        me = self._agency(context)
        req = parse(agency_pb2.ResolveAudienceRequest, data)
        registry, policy = self.app.registry, self.app.policy
        decisions = relay.resolve_audience(
            req.draft, req.restrictions, list(req.sections), me, registry, policy, now_ms()
        )
        resp = agency_pb2.ResolveAudienceResponse(policy_version=policy.version)
        for rd in decisions:
            if rd.allowed:
                statement = notice_pb2.SignedKeyStatement()
                statement.ParseFromString(registry[rd.recipient].statement)
                member = resp.members.add(
                    agency_id=rd.recipient,
                    sections=sorted(rd.allowed_sections),
                    key_statement=statement,
                )
                signed_entry = registry[rd.recipient].signed_entry
                if signed_entry is not None:
                    member.entry.ParseFromString(signed_entry)
            resp.withheld.extend(relay.withholdings(rd.decisions))
        return resp

    # -- GetDirectory ----------------------------------------------------------------------
    async def get_directory(self, data: bytes, context: Ctx) -> agency_pb2.Directory:
        """The key directory with the checkpoint that commits to it: every logged agency's
        signed entry and key statement with its map proof, and the consistency proof from
        the checkpoint the node knows. Read in one store operation, after the log caught
        up with the registry, so the proofs and the checkpoint describe the same state."""
        self._agency(context)
        req = parse(agency_pb2.GetDirectoryRequest, data)
        app = self.app
        resp = agency_pb2.Directory(digest=app.registry_key, policy_version=app.policy.version)
        if req.known_digest and req.known_digest == app.registry_key:
            resp.unchanged = True
            return resp
        signer = app.checkpoints.signer
        known, k = req.known_size, req.min_cosignatures

        def read(
            store: Store,
        ) -> tuple[StoredCheckpoint, list[tuple[str, bytes, bytes]], dict[str, list[bytes]]] | None:
            store.tlog_issue_checkpoint(signer, now_ms())  # the log catches up with the registry
            cp = store.tlog_directory_checkpoint(k)
            if cp is None:
                return None
            consistency = store.tlog_consistency(known, cp.size) if 0 < known <= cp.size else []
            rows = store.directory_entries()
            return cp, rows, {"": consistency, **keymap.proofs(store.tlog_directory())}

        got = await app.runner.call(read)
        if got is None:
            raise Unavailable(
                f"no checkpoint of the current key directory carries {k} witness "
                "cosignature(s) yet; retry in a moment"
            )
        cp, rows, proofs = got
        resp.checkpoint.CopyFrom(checkpoint_message(cp))
        resp.consistency.extend(proofs.pop(""))
        for agency_id, signed_entry, statement in rows:
            proof = proofs.get(agency_id)
            if proof is None or not signed_entry:
                continue  # not (yet) in the logged directory, or never signed: nodes refuse it
            resp.agencies.add(signed_entry=signed_entry, key_statement=statement, map_proof=proof)
        return resp

    # -- Publish -------------------------------------------------------------------------
    async def publish(self, data: bytes, context: Ctx) -> agency_pb2.PublishResponse:
        me = self._agency(context)
        started = time.perf_counter()
        quotas = self.app.quotas
        try:  # + fair sharing: before parsing, then for the batch
            quotas.precheck_publish(me, len(data))
            req = parse(agency_pb2.PublishRequest, data)
            limits = self.app.config.limits
            if not req.envelopes:
                raise InvalidArgument("PublishRequest carries no envelopes")
            if len(req.envelopes) > limits.max_publish_batch:
                raise ResourceExhausted(f"at most {limits.max_publish_batch} envelopes per Publish")
            quotas.admit_publish(me, len(req.envelopes), len(data))
        except Refusal as refusal:
            raise await quotas.hold(me, refusal) from None
        app = self.app  # + fair sharing: a re-publish is answered from the store
        again = await republished(app.runner, app.registry, app.registry_key, me, req)
        if again is not None:
            return again
        now = now_ms()
        registry, policy, registry_key = app.registry, app.policy, app.registry_key
        items = []
        parsed: list[notice_pb2.NoticeHeader] = []
        seen: set[tuple[str, int]] = set()
        originator = registry.get(me)
        statement = originator.statement if originator is not None else b""
        indexes: dict[tuple[str, int], list[bytes]] = {}  # + lookups: tokens per notice
        for i, e in enumerate(req.envelopes):
            if i:  # + fair sharing: a big batch lets other agencies' calls in between
                await asyncio.sleep(0)
            metrics.PUBLISH_CHECKS.inc()
            try:
                accepted = relay.accept_publish(
                    e.SerializeToString(deterministic=True),
                    me,
                    registry,
                    policy,
                    now,
                    limits,
                    cache=app.decisions,
                    registry_key=registry_key,
                    envelope=e,
                    suites=app.config.crypto,
                )
                header = accepted.checked.header
                cut = delivery.cut_notice(
                    e,
                    accepted.checked,
                    statement,
                    [(p.recipient, p.sections, p.obligations) for p in accepted.plans],
                )
            except BrokerError as exc:
                if len(req.envelopes) == 1:
                    raise
                raise prefixed(exc, f"envelope {i}: ") from exc
            key = (header.notice_id, header.version)
            if key in seen:
                raise InvalidArgument(f"envelope {i}: notice {key[0]} v{key[1]} appears twice")
            seen.add(key)
            try:  # + lookups: the tokens the signed header commits to
                indexes[key] = lookup.index_of_envelope(header, e)
                # + evidence: attachment descriptors bound to sealed sections, within limits
                evidence.check_publish(
                    header, set(accepted.checked.sections), app.config.attachments.max_bytes
                )
            except BrokerError as exc:
                if len(req.envelopes) == 1:
                    raise
                raise prefixed(exc, f"envelope {i}: ") from exc
            record = NoticeRecord(
                notice_id=header.notice_id,
                version=header.version,
                originator=me,
                kind=header.kind,
                header_digest=accepted.checked.header_digest,
                envelope_digest=accepted.envelope_digest,
                envelope=cut.stripped_envelope,
                created_at_ms=header.created_at_ms,
                expires_at_ms=header.expires_at_ms,
                accepted_at_ms=now,
                policy_version=accepted.policy_version,
                decisions=accepted.decision_record(),
                head=cut.head,
                ciphertexts=cut.ciphertexts,
                sections=accepted.facts.sections if accepted.facts else (),
                refused=accepted.refused(),
                priority=header.priority,  # + judicial: urgent deliveries leased first
            )
            embargo = accepted.checked.restrictions.embargo_until_ms
            token = decided_under(policy.version, registry_key, "", embargo if embargo > now else 0)
            plans = [
                DeliveryPlan(
                    p.recipient,
                    p.sections,
                    p.not_before_ms,
                    cut=c.sections,
                    wrap=c.wrap,
                    obligations=c.obligations,
                    decided_under=token,
                )
                for p, c in zip(accepted.plans, cut.deliveries, strict=True)
            ]
            items.append((record, plans))
            parsed.append(header)

        headers = {(r.notice_id, r.version): h for (r, _p), h in zip(items, parsed, strict=True)}
        self.app.quotas.admit_queued(me, sum(len(plans) for _r, plans in items))

        told: list[str] = []  # holders of older versions told they were dropped

        def write(store: Store) -> Any:
            told.clear()
            before = {
                r.notice_id: check_version(
                    store,
                    r,
                    headers[(r.notice_id, r.version)],
                    frozenset(p.recipient for p in plans),
                )
                for r, plans in items
            }
            # + transparency log: the new notices' leaves, in the same transaction
            outcomes = store.publish_logged(items, now_ms())
            for o, (record, _plans) in zip(outcomes, items, strict=True):
                if not o.duplicate:
                    told.extend(
                        after_publish(
                            store,
                            record,
                            headers[(o.notice_id, o.version)],
                            before[o.notice_id],
                            set(o.recipients),
                            now,
                        )
                    )
                    # + lookups: replace the notice's index entries in the same transaction
                    lookup.store_index(store, o.notice_id, o.version, indexes[key_of(o)])
            return outcomes

        outcomes = await self.app.runner.call(write)
        records = {(r.notice_id, r.version): r for r, _plans in items}
        for agency_id in told:
            self.app.wake(agency_id)
        resp = agency_pb2.PublishResponse(directory_digest=registry_key)
        for o in outcomes:
            resp.results.add(
                notice_id=o.notice_id,
                version=o.version,
                header_digest=o.header_digest,
                duplicate=o.duplicate,
                recipients=list(o.recipients),
                policy_version=o.policy_version,
                log_index=max(o.log_index, 0),
            )
            if o.duplicate:
                metrics.DUPLICATES.inc()
            else:
                metrics.PUBLISHED.inc()
                # Withheld at publish: addressed recipients the policy refused sections.
                metrics.WITHHELD.inc(oplog.published(o, records[(o.notice_id, o.version)]))
                self.app.quotas.queued_more(me, len(o.recipients))
                for r in o.recipients:
                    self.app.wake(r)
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
        return resp

    # -- Lookup (broker/server/lookup.py) -------------------------------------------------
    async def lookup(self, data: bytes, context: Ctx) -> lookup_pb2.LookupResponse:
        me = self._agency(context)
        try:  # + fair sharing
            self.app.quotas.admit_lookup(me)
        except Refusal as refusal:
            raise await self.app.quotas.hold(me, refusal) from None
        return await lookup.handle_lookup(self.app, me, data)

    # -- policy for nodes; restrictions after publishing; re-check at forwarding -----------
    async def active_policy(self, data: bytes, context: Ctx) -> agency_pb2.ActivePolicy:
        self._agency(context)
        parse(agency_pb2.GetActivePolicyRequest, data)
        row = await self.app.runner.call(lambda s: s.active_bundle())
        resp = agency_pb2.ActivePolicy(version=self.app.policy.version)
        if row is not None and row.version == self.app.policy.version:
            resp.bundle.ParseFromString(row.bundle)
            if row.signed_activation is not None:
                resp.activation.ParseFromString(row.signed_activation)
        return resp

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
                    oplog.delivery(oplog.SENT, d.notice_id, d.version, me, attempt=d.attempt)
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
            oplog.delivery(oplog.SENT, d.notice_id, d.version, me, attempt=d.attempt)
        if logged:
            await app.runner.call(lambda s: s.tlog_append(logged))
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
                leased, controls, events = await self.app.runner.call(
                    partial(_poll, me, min(credits, SUBSCRIBE_BATCH), limits.lease_ms, last_event)
                )
                sent = False
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
                    sent = True
                if controls:
                    credits -= len(controls)
                    yield self._controls(controls).SerializeToString()
                    sent = True
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
                    sent = True
                if sent:
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
