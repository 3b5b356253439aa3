"""AgencyService handlers.

Requests arrive as raw bytes and are parsed here, so malformed protobuf gets
INVALID_ARGUMENT with a message instead of gRPC's generic deserialisation
failure. Every handler resolves the caller from its certificate first.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from google.protobuf.message import Message

from broker.core import delivery, keymap, relay
from broker.core.decisions import decided_under
from broker.errors import (
    BrokerError,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    prefixed,
)
from broker.server import evidence, lookup, metrics, oplog
from broker.server.audit_service import checkpoint_message
from broker.server.lifecycle import LifecycleHandlers, after_publish, check_version
from broker.server.peer import caller, require_agency, require_registered
from broker.server.quotas import Refusal
from broker.server.republish import republished
from broker.server.requests import RequestHandlers
from broker.server.status import abort, status_of, unary_handler
from broker.server.subscribe import SubscribeHandlers
from broker.server.wire import now_ms, parse
from broker.store.api import (
    DeliveryPlan,
    NoticeRecord,
    Store,
    StoredCheckpoint,
)
from broker.v1 import agency_pb2, lookup_pb2, notice_pb2

if TYPE_CHECKING:
    from broker.server.app import BrokerApp

log = logging.getLogger("broker.server")
Ctx: TypeAlias = Any  # grpc.aio.ServicerContext (grpc ships no type information)


def key_of(o: Any) -> tuple[str, int]:
    return (o.notice_id, o.version)


class _ProofCache:
    """The map proofs of the last key directory served: every GetDirectory of an unchanged
    directory reuses them (all proofs of 5,000 agencies cost about 50 ms to build). Keyed
    by a digest of the whole directory, so a changed value is never served a stale proof;
    one store thread replaces the pair at once, so another reads the old or the new."""

    def __init__(self) -> None:
        self._last: tuple[bytes, dict[str, list[bytes]]] = (b"", {})

    def of(self, values: dict[str, bytes]) -> dict[str, list[bytes]]:
        digest = hashlib.sha256()
        for agency in sorted(values):
            name = agency.encode()
            digest.update(len(name).to_bytes(4, "big") + name + values[agency])
        key = digest.digest()
        last_key, proofs = self._last
        if key != last_key:
            proofs = keymap.proofs(values)
            self._last = (key, proofs)
        return proofs


_DIRECTORY_PROOFS = _ProofCache()


class AgencyService(SubscribeHandlers, RequestHandlers, LifecycleHandlers):
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
        signer, pq = app.checkpoints.signer, app.checkpoints.pq_signer
        known, k = req.known_size, req.min_cosignatures

        def read(
            store: Store,
        ) -> tuple[StoredCheckpoint, list[tuple[str, bytes, bytes]], dict[str, list[bytes]]] | None:
            store.tlog_issue_checkpoint(
                signer, now_ms(), pq
            )  # the log catches up with the registry
            cp = store.tlog_directory_checkpoint(k)
            if cp is None:
                return None
            consistency = store.tlog_consistency(known, cp.size) if 0 < known <= cp.size else []
            rows = store.directory_entries()
            return cp, rows, {"": consistency, **_DIRECTORY_PROOFS.of(store.tlog_directory())}

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
                    [(p.recipient, p.sections, p.wire_obligations) for p in accepted.plans],
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
