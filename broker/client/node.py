"""AgencyNode: the agency SDK (asyncio).

Publishing: resolve the audience, check every recipient's key statement
against the deployment CA (the broker cannot substitute keys), seal, publish
with safe retries (the same bytes are re-sent, so a retry is idempotent).

Subscribing: keep a Subscribe stream open with a credit window, verify and
open each delivery, take it into the local inbox (deduplicated by notice id
and version, durably) before handing it to the application once, and
acknowledge with signed receipts. Reconnects with backoff; nothing is lost
because the broker redelivers whatever was not receipted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import Collection, Mapping
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from broker import pki
from broker.client.inbox import Inbox
from broker.client.lifecycle import NodeLifecycle
from broker.client.types import (
    EventHandler,
    Handler,
    LifecycleHandler,
    LifecycleNotice,
    ListenStats,
    NodeConfig,
    PublishedNotice,
    ReceivedNotice,
    now_ms,
)
from broker.core import activation as act
from broker.core import envelope as env
from broker.core import lifecycle, lookup, relay
from broker.core import receipts as rcp
from broker.core.identity import IdentityError, Party, verify_key_statement
from broker.core.policy import AgencyProfile, Bundle, compile_bundle
from broker.core.relay import TLP_NAMES
from broker.errors import INTERNAL_TEXT, InvalidArgument, PermissionDenied, Unavailable
from broker.v1 import agency_pb2, agency_pb2_grpc, notice_pb2

__all__ = [  # the node and the values it takes and gives (broker.client.types)
    "AgencyNode",
    "LifecycleNotice",
    "ListenStats",
    "NodeConfig",
    "PublishedNotice",
    "ReceivedNotice",
    "now_ms",
]
log = logging.getLogger("broker.client")
TLP_VALUES = {name: value for value, name in TLP_NAMES.items()}
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def _transient(exc: grpc.aio.AioRpcError) -> bool:
    """Worth retrying: the broker is unreachable, slow, or the connection broke under the
    call (gRPC reports a write on a dropped connection as INTERNAL from its core; the
    broker's own INTERNAL answers carry its fixed text and are not retried)."""
    if exc.code() in RETRYABLE:
        return True
    return exc.code() == grpc.StatusCode.INTERNAL and (exc.details() or "") != INTERNAL_TEXT


# Refusals a reconnect cannot fix: the listener stops and says why.
FATAL = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED,
}
DAY_MS = 86_400_000


class AgencyNode(NodeLifecycle):
    """An agency's connection to the broker. Use `async with AgencyNode(config) as node`."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.me = config.agency_id
        self.credentials = pki.load_agency(config.keys_dir, config.agency_id)
        files = self.credentials.files
        ca_cert = pki.load_ca_certificate(files.ca_cert)
        ca_key = ca_cert.public_key()
        if not isinstance(ca_key, EllipticCurvePublicKey):
            raise InvalidArgument("the deployment CA must use an EC P-256 key")
        self.ca_key = ca_key
        self.ca_cert = ca_cert
        self._policies: dict[str, tuple[Bundle, int]] = {}  # version -> (bundle, activation)
        self._policy_sequence = 0  # the newest activation this node has seen
        self._serials: dict[str, int] = {}  # newest key statement serial seen per agency
        self.revoked = pki.revoked_parties(config.keys_dir)
        self._sent_purposes: dict[str, str] = {}  # notice id -> purpose (for replies)
        creds = grpc.ssl_channel_credentials(
            root_certificates=files.ca_cert.read_bytes(),
            private_key=files.key.read_bytes(),
            certificate_chain=files.cert.read_bytes(),
        )
        self.channel = grpc.aio.secure_channel(
            config.broker,
            creds,
            options=[
                ("grpc.max_receive_message_length", 8 * 1024 * 1024),
                ("grpc.max_send_message_length", 8 * 1024 * 1024),
                ("grpc.keepalive_time_ms", 30_000),
                # Come back quickly after a broker restart (gRPC's default waits up to 120 s).
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", int(config.reconnect_max_s * 1000)),
            ],
        )
        self.stub = agency_pb2_grpc.AgencyServiceStub(self.channel)
        self.inbox = Inbox(config.state_dir / f"{config.agency_id}.inbox.sqlite3")
        self.stats = ListenStats()
        self._signing_keys: dict[bytes, bytes] = {}

    async def __aenter__(self) -> AgencyNode:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()
        self.inbox.close()

    # -- publishing ---------------------------------------------------------------------
    async def resolve_audience(
        self,
        draft: notice_pb2.NoticeHeader,
        restrictions: notice_pb2.OriginatorRestrictions,
        sections: Collection[str],
    ) -> agency_pb2.ResolveAudienceResponse:
        """Ask the broker who may read which sections of a draft."""
        req = agency_pb2.ResolveAudienceRequest(
            draft=draft, restrictions=restrictions, sections=sorted(sections)
        )
        response: agency_pb2.ResolveAudienceResponse = await self._retry(
            self.stub.ResolveAudience, req
        )
        return response

    async def signed_policy(self, version: str) -> Bundle:
        """The active bundle, verified against its administrator-signed activation.

        The node remembers the highest activation sequence it has seen and refuses an
        older activation: a broker cannot roll it back to a once-valid, laxer bundle.
        """
        cached = self._policies.get(version)
        if cached is not None and cached[1] == self._policy_sequence:
            return cached[0]
        active = await self._retry(self.stub.GetActivePolicy, agency_pb2.GetActivePolicyRequest())
        if active.version != version:
            raise Unavailable("the broker's policy changed while resolving the audience; retry")
        if not active.activation.activation:
            raise PermissionDenied(
                "the broker runs an unsigned bootstrap policy: an administrator must activate a "
                "signed bundle (broker admin policy activate) before audiences can be checked"
            )
        verified = act.verify_activation(
            active.activation, self.ca_cert, now_ms(), expected_version=version
        )
        sequence = verified.activation.sequence
        if sequence < self._policy_sequence:
            raise PermissionDenied(
                f"the broker served policy activation {sequence}, older than activation "
                f"{self._policy_sequence} this node has seen; refusing to seal"
            )
        bundle = cached[0] if cached else compile_bundle(act.bundle_files(active.bundle))
        if bundle.version != version:
            raise PermissionDenied("the broker served a bundle that is not the activated version")
        self._policy_sequence = sequence
        self._policies[version] = (bundle, sequence)
        return bundle

    async def check_audience(
        self,
        header: notice_pb2.NoticeHeader,
        restrictions: notice_pb2.OriginatorRestrictions,
        sections: Collection[str],
        audience: agency_pb2.ResolveAudienceResponse,
    ) -> None:
        """Re-evaluate the broker's answer locally under the signed policy and registry.

        Raises PermissionDenied if the broker offered any recipient a section that the
        administrator-signed policy, applied to the administrator-signed registry entry,
        does not allow.
        """
        policy = await self.signed_policy(audience.policy_version)
        facts = relay.facts_of(header, restrictions, sorted(sections))
        now = now_ms()
        for m in audience.members:
            if not m.entry.entry:
                raise PermissionDenied(
                    f"the broker offered {m.agency_id} without an administrator-signed registry "
                    "entry (broker admin agency sign-registry)"
                )
            entry = act.verify_agency_entry(m.entry, self.ca_cert, now).entry
            serial = notice_pb2.KeyStatement.FromString(m.key_statement.statement).serial
            if entry.id != m.agency_id or entry.key_serial != serial:
                raise PermissionDenied(
                    f"the broker's registry entry for {m.agency_id} does not match its keys"
                )
            profile = AgencyProfile(
                id=entry.id,
                country=entry.country,
                roles=frozenset(entry.roles),
                groups=frozenset(entry.groups),
                purposes=frozenset(entry.purposes),
                status=entry.status,
            )
            allowed = policy.decide(facts, profile, now_ms=now).allowed_sections
            extra = sorted(set(m.sections) - allowed)
            if extra:
                raise PermissionDenied(
                    f"the broker offered {m.agency_id} section(s) {', '.join(extra)} that the "
                    f"signed policy {policy.version[:12]} does not allow; nothing was sealed"
                )

    def _recipient_key(self, member: agency_pb2.AudienceMember) -> bytes:
        """The encryption key of an audience member, from its CA-signed statement."""
        try:
            keys = verify_key_statement(
                member.key_statement, self.ca_key, now_ms(), expected_agency=member.agency_id
            )
        except IdentityError as exc:
            raise PermissionDenied(
                f"the broker offered a key for {member.agency_id} that the deployment CA "
                f"did not sign ({exc}); refusing to seal"
            ) from exc
        self._check_fresh(keys.agency_id, keys.serial)
        return keys.encryption_key

    def _check_fresh(self, agency: str, serial: int) -> None:
        """Refuse a revoked agency, or a key statement older than one this node has seen
        (a broker replaying a rotated-out key)."""
        if Party("agency", agency).uri() in self.revoked:
            raise PermissionDenied(f"{agency} is revoked (revoked.txt); refusing to seal for it")
        newest = self._serials.get(agency, 0)
        if serial < newest:
            raise PermissionDenied(
                f"the broker offered key serial {serial} for {agency}, but this node has seen "
                f"serial {newest}: refusing a rotated-out key"
            )
        self._serials[agency] = serial

    async def publish(
        self,
        *,
        kind: str,
        purpose: str,
        sections: Mapping[str, bytes],
        tlp: str = "AMBER",
        data_subject: int = notice_pb2.DATA_SUBJECT_SUSPECT,
        handling_codes: Collection[str] = (),
        evaluation: tuple[str, str] | None = None,
        restrictions: notice_pb2.OriginatorRestrictions | None = None,
        recipients: Collection[str] | None = None,
        expires_in_days: int = 365,
        expires_in_ms: int | None = None,
        notice_id: str | None = None,
        version: int = 1,
        in_reply_to: str = "",
        respond_by_ms: int = 0,
        index_tokens: Collection[bytes] = (),
    ) -> PublishedNotice:
        """Seal and publish a notice to everyone the policy allows (or the named subset).

        ``index_tokens`` are lookup tokens of the notice's selectors (use
        :class:`broker.client.lookup.Lookups` to make them from selectors); the signed
        header commits to them, salted.

        Raises InvalidArgument when nobody may receive it, PermissionDenied when
        the broker offers a key the CA did not sign, and grpc.aio.AioRpcError
        for a refusal by the broker (its status says what to fix).
        """
        if tlp not in TLP_VALUES:
            raise InvalidArgument(f"unknown TLP {tlp!r}; use one of {sorted(TLP_VALUES)}")
        created = now_ms()
        header = notice_pb2.NoticeHeader(
            notice_id=notice_id or str(uuid.uuid4()),
            version=version,
            originator=self.me,
            kind=kind,
            purpose=purpose,
            data_subject=data_subject,  # type: ignore[arg-type]
            tlp=TLP_VALUES[tlp],
            handling_codes=list(handling_codes),
            created_at_ms=created,
            expires_at_ms=created
            + (expires_in_ms if expires_in_ms is not None else expires_in_days * DAY_MS),
            in_reply_to=in_reply_to,
            respond_by_ms=respond_by_ms,
        )
        if evaluation is not None:
            header.evaluation.source, header.evaluation.information = evaluation
        # + lookups: commit the header to the index tokens (salted digest)
        index_salt, tokens, header.lookup_digest = lookup.seal_index(index_tokens, os.urandom)
        restrictions = restrictions or notice_pb2.OriginatorRestrictions()
        audience = await self.resolve_audience(header, restrictions, sections)
        if self.config.verify_audience:
            await self.check_audience(header, restrictions, sections, audience)
        members = [
            m for m in audience.members if recipients is None or m.agency_id in set(recipients)
        ]
        if recipients is not None:
            missing = sorted(set(recipients) - {m.agency_id for m in members})
            if missing:
                raise PermissionDenied(
                    f"the policy does not allow {', '.join(missing)} to receive this notice"
                )
        if not members:
            raise InvalidArgument("the policy allows nobody to receive this notice")
        inputs = [
            env.RecipientInput(
                agency_id=m.agency_id,
                encryption_key=self._recipient_key(m),
                sections=frozenset(m.sections) & frozenset(sections),
            )
            for m in members
        ]
        envelope = env.seal(
            header,
            restrictions,
            [env.SectionInput(name, data) for name, data in sorted(sections.items())],
            inputs,
            self.credentials.signing_seed,
            os.urandom,
        )
        envelope.lookup_tokens.extend(tokens)  # + lookups
        envelope.lookup_salt = index_salt
        response = await self.publish_envelopes([envelope])
        result = response.results[0]
        self._sent_purposes[result.notice_id] = purpose
        return PublishedNotice(
            notice_id=result.notice_id,
            version=result.version,
            header_digest=result.header_digest,
            duplicate=result.duplicate,
            policy_version=result.policy_version,
            audience={i.agency_id: tuple(sorted(i.sections)) for i in inputs},
            withheld=tuple(audience.withheld),
        )

    async def publish_envelopes(
        self, envelopes: list[notice_pb2.Envelope]
    ) -> agency_pb2.PublishResponse:
        """Publish sealed envelopes in one batch, retrying safely on transient failures."""
        req = agency_pb2.PublishRequest(envelopes=envelopes)
        response: agency_pb2.PublishResponse = await self._retry(self.stub.Publish, req)
        return response

    async def delivery_status(
        self, notice_id: str, version: int = 0
    ) -> agency_pb2.DeliveryStatusResponse:
        req = agency_pb2.DeliveryStatusRequest(notice_id=notice_id, version=version)
        response: agency_pb2.DeliveryStatusResponse = await self._retry(
            self.stub.GetDeliveryStatus, req
        )
        return response

    async def update_restrictions(
        self,
        notice_id: str,
        restrictions: notice_pb2.OriginatorRestrictions,
        sequence: int,
    ) -> int:
        """Replace a published notice's restrictions (signed); return how many queued
        deliveries the broker withheld because of the change."""
        update = agency_pb2.RestrictionUpdate(
            notice_id=notice_id, restrictions=restrictions, sequence=sequence, at_ms=now_ms()
        ).SerializeToString(deterministic=True)
        signature = relay.sign_restriction_update(update, self.credentials.signing_seed)
        request = agency_pb2.UpdateRestrictionsRequest(update=update, signature=signature)
        response: agency_pb2.UpdateRestrictionsResponse = await self._retry(
            self.stub.UpdateRestrictions, request
        )
        return response.withheld

    async def _retry(self, method: Any, request: Any) -> Any:
        delay = 0.1
        for attempt in range(1, self.config.publish_attempts + 1):
            try:
                return await method(request, timeout=self.config.rpc_timeout_s)
            except grpc.aio.AioRpcError as exc:
                if not _transient(exc) or attempt == self.config.publish_attempts:
                    raise
                log.info("broker unavailable, retrying", extra={"attempt": attempt})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.reconnect_max_s)
        raise AssertionError("unreachable")

    # -- subscribing --------------------------------------------------------------------
    def _originator_key(self, delivery: notice_pb2.Delivery) -> bytes:
        statement = delivery.originator_statement
        cache_key = statement.SerializeToString(deterministic=True)
        key = self._signing_keys.get(cache_key)
        if key is None:
            originator = env.peek_originator(delivery.header)
            try:
                keys = verify_key_statement(
                    statement, self.ca_key, now_ms(), expected_agency=originator
                )
            except IdentityError as exc:
                raise env.OpenError() from exc
            key = keys.signing_key
            self._signing_keys[cache_key] = key
        return key

    def open(self, delivery: notice_pb2.Delivery) -> ReceivedNotice:
        """Verify and open one delivery; raise OpenError (opaque) if anything is wrong."""
        opened = env.open_delivery(
            delivery,
            self.me,
            self.credentials.encryption_private_key,
            self._originator_key(delivery),
        )
        return ReceivedNotice(
            opened.header,
            opened.header_digest,
            dict(opened.sections),
            delivery.attempt,
            tuple(delivery.obligations),
        )

    def _receipt(self, notice: ReceivedNotice) -> notice_pb2.Receipt:
        return notice_pb2.Receipt(
            notice_id=notice.notice_id,
            version=notice.version,
            recipient=self.me,
            header_digest=notice.header_digest,
            sections=sorted(notice.sections),
            received_at_ms=now_ms(),
            obligations=sorted(f"{o.section}:{o.kind}:{o.rule}" for o in notice.obligations),
        )

    async def _redispatch(self, handler: Handler) -> None:
        """Hand over notices taken in but not handled before the node last stopped."""
        for data in self.inbox.unhandled():
            delivery = notice_pb2.Delivery()
            delivery.ParseFromString(data)
            try:
                notice = self.open(delivery)
            except env.OpenError:
                # No longer opens (e.g. the originator's key statement has expired since):
                # keep it out of the way rather than stop the node at every start.
                log.warning("a stored delivery no longer opens; skipped")
                self.inbox.mark_handled_bytes(data)
                continue
            await handler(notice)
            self.inbox.mark_handled(notice.notice_id, notice.version)
            self.stats.received += 1

    async def _take(
        self, delivery: notice_pb2.Delivery, handler: Handler
    ) -> notice_pb2.Receipt | None:
        try:
            notice = self.open(delivery)
        except env.OpenError:
            self.stats.rejected += 1
            log.warning(
                "delivery did not open; not receipted", extra={"sequence": delivery.sequence}
            )
            return None
        if self.inbox.take_in(
            notice.notice_id, notice.version, delivery.SerializeToString(), now_ms()
        ):
            await handler(notice)
            self.inbox.mark_handled(notice.notice_id, notice.version)
            self.stats.received += 1
        else:
            self.stats.duplicates += 1
        return self._receipt(notice)

    async def listen(
        self,
        handler: Handler,
        *,
        stop: asyncio.Event,
        on_event: EventHandler | None = None,
        on_lifecycle: LifecycleHandler | None = None,
    ) -> ListenStats:
        """Receive notices until `stop` is set, reconnecting as needed. Returns statistics.

        Raises grpc.aio.AioRpcError for refusals that retrying cannot fix
        (unauthenticated, permission denied).
        """
        await self._redispatch(handler)
        delay = 0.1
        while not stop.is_set():
            try:
                await self._stream(handler, stop, on_event, on_lifecycle)
                delay = 0.1
            except grpc.aio.AioRpcError as exc:
                # A broken connection shows up as UNAVAILABLE, CANCELLED or even INTERNAL
                # (a write on a stream the broker dropped); only refusals end the listener.
                if exc.code() in FATAL:
                    raise
                log.info("subscribe stream ended; reconnecting", extra={"code": exc.code().name})
            except asyncio.InvalidStateError:
                log.info("subscribe stream finished under us; reconnecting")
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, self.config.reconnect_max_s)
        return self.stats

    async def _stream(
        self,
        handler: Handler,
        stop: asyncio.Event,
        on_event: EventHandler | None,
        on_lifecycle: LifecycleHandler | None,
    ) -> None:
        call = self.stub.Subscribe()
        self.stats.connects += 1
        stopper = asyncio.create_task(stop.wait())
        try:
            await call.write(
                agency_pb2.SubscribeRequest(credit=agency_pb2.Credit(credits=self.config.window))
            )
            while True:
                reader = asyncio.ensure_future(call.read())
                done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if reader not in done:
                    reader.cancel()
                    return
                response = reader.result()
                if response is grpc.aio.EOF:
                    return
                await self._handle(call, response, handler, on_event, on_lifecycle)
        finally:
            stopper.cancel()
            call.cancel()

    def _actor_key(self, control: notice_pb2.ControlDelivery, actor: str) -> bytes:
        try:
            keys = verify_key_statement(
                control.actor_statement, self.ca_key, now_ms(), expected_agency=actor
            )
        except IdentityError as exc:
            raise InvalidArgument(f"no CA-signed key for {actor}") from exc
        return keys.signing_key

    def _verified_action(self, control: notice_pb2.ControlDelivery) -> notice_pb2.LifecycleAction:
        """Check who took a lifecycle action; raise InvalidArgument if it is not genuine."""
        action = lifecycle.peek_action(control.action)
        if action.actor == lifecycle.BROKER:
            # The broker only ever tells us to delete (expiry, supersession): unsigned.
            if action.kind not in lifecycle.BROKER_ONLY:
                raise InvalidArgument("the broker may only expire or supersede")
            return action
        lifecycle.verify_action(control.action, self._actor_key(control, action.actor))
        if action.kind in lifecycle.BROKER_ONLY:
            raise InvalidArgument("only the broker expires or supersedes")
        return action

    async def _take_control(
        self, control: notice_pb2.ControlDelivery, on_lifecycle: LifecycleHandler | None
    ) -> notice_pb2.Receipt | None:
        """Verify and apply a lifecycle action; return its receipt (None: refused)."""
        signed = control.action
        try:
            action = self._verified_action(control)
        except InvalidArgument as exc:
            self.stats.rejected += 1
            log.warning("lifecycle action refused", extra={"error": str(exc)})
            return None
        erased = 0
        if action.kind == notice_pb2.LIFECYCLE_SUPERSEDED:
            # Only the versions the new one supersedes (the broker cannot reach further).
            erased = self.inbox.delete(action.notice_id, below_version=max(action.version, 1))
        elif action.kind in lifecycle.DELETING:
            erased = self.inbox.delete(action.notice_id)
        first = self.inbox.record_action(
            action.action_id,
            action.notice_id,
            lifecycle.NAMES.get(action.kind, "unknown"),
            action.actor,
            action.reason,
            now_ms(),
        )
        if first and on_lifecycle is not None:
            await on_lifecycle(LifecycleNotice(action, erased))
        self.stats.actions += 1
        return notice_pb2.Receipt(
            notice_id=action.notice_id,
            version=action.version,
            recipient=self.me,
            header_digest=hashlib.sha256(signed.action).digest(),
            received_at_ms=now_ms(),
            action_id=action.action_id,
        )

    async def _handle(
        self,
        call: Any,
        response: agency_pb2.SubscribeResponse,
        handler: Handler,
        on_event: EventHandler | None,
        on_lifecycle: LifecycleHandler | None = None,
    ) -> None:
        receipts = []
        for delivery in response.deliveries:
            receipt = await self._take(delivery, handler)
            if receipt is not None:
                receipts.append(receipt)
        for control in response.controls:
            receipt = await self._take_control(control, on_lifecycle)
            if receipt is not None:
                receipts.append(receipt)
        if receipts:
            batch = rcp.sign_receipts(self.me, receipts, self.credentials.signing_seed)
            await call.write(agency_pb2.SubscribeRequest(receipts=batch))
        taken = len(response.deliveries) + len(response.controls)
        if taken:
            credit = agency_pb2.Credit(credits=taken)
            await call.write(agency_pb2.SubscribeRequest(credit=credit))
        for ack in response.receipt_acks:
            self.stats.receipts_acked += 1
            self.stats.acked.add((ack.action_id or ack.notice_id, ack.version))
        if response.events:
            for event in response.events:
                if on_event is not None and not self.inbox.event_seen(event.sequence):
                    await on_event(event)
            up_to = response.events[-1].sequence
            await call.write(
                agency_pb2.SubscribeRequest(ack_events=agency_pb2.AckEvents(up_to_sequence=up_to))
            )
