"""AgencyNode: the agency SDK (asyncio).

Publishing (broker/client/publisher.py, its signed view in broker/client/signedview.py):
resolve the audience locally under the administrator-signed policy and registry, wrap
keys only to CA-bound keys (the broker can neither widen an audience nor substitute
keys), seal, publish many notices per call with safe retries (the same bytes are
re-sent, so a retry is idempotent).

Subscribing (here): keep a Subscribe stream open with a credit window, verify
and open each delivery, hand it to the application once, record it in the
local inbox (deduplicated by notice id and version, one durable commit per
response), and acknowledge with signed receipts. Reconnects with backoff;
nothing is lost because the broker redelivers whatever was not receipted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import nacl.bindings
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from broker import pki
from broker.client.audit import load_trust
from broker.client.errors import TypedErrors
from broker.client.findings import Finding, FindingHandler, FindingLog
from broker.client.gossip import Gossip
from broker.client.inbox import Inbox
from broker.client.intake import NodeIntake
from broker.client.lifecycle import NodeLifecycle
from broker.client.logview import LogView
from broker.client.memory import TrustMemory
from broker.client.publisher import NodePublisher, transient
from broker.client.requests import NodeRequests  # + judicial
from broker.client.sent import ActLog, SentLog
from broker.client.statedb import open_state
from broker.client.stream import NodeStream
from broker.client.target import channel_target
from broker.client.types import (
    Draft,
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
from broker.client.verify import NodeVerifier
from broker.core import envelope as env
from broker.core import intake
from broker.core import receipts as rcp
from broker.core.identity import IdentityError
from broker.errors import BrokerError, FailedPrecondition, InvalidArgument, Unavailable
from broker.trustconfig import TRUST_FILE, load_trust_config
from broker.v1 import agency_pb2, agency_pb2_grpc, audit_pb2, audit_pb2_grpc, notice_pb2

__all__ = [  # the node and the values it takes and gives (broker.client.types)
    "AgencyNode",
    "Draft",
    "LifecycleNotice",
    "ListenStats",
    "NodeConfig",
    "PublishedNotice",
    "ReceivedNotice",
    "now_ms",
]
log = logging.getLogger("broker.client")


# Refusals a reconnect cannot fix: the listener stops and says why.
SWEEP_S = 1.0  # how often held notices are released and expired copies erased
VIEW_MAX_AGE_S = 30.0  # how old the signed view deliveries are checked under may be
FATAL = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.ABORTED,  # another Subscribe of this agency replaced the stream
}


def state_file(state_dir: Path, agency_id: str) -> Path:
    """The node's one state database (inbox, what it verified, what it sealed)."""
    return state_dir / f"{agency_id}.inbox.sqlite3"


class AgencyNode(NodePublisher, NodeIntake, NodeVerifier, NodeLifecycle, NodeRequests, NodeStream):
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
        self.revoked = pki.revoked_parties(config.keys_dir)
        self._sent_purposes: dict[str, str] = {}  # notice id -> purpose (for replies)
        creds = grpc.ssl_channel_credentials(
            root_certificates=files.ca_cert.read_bytes(),
            private_key=files.key.read_bytes(),
            certificate_chain=files.cert.read_bytes(),
        )
        target, balance = channel_target(config.broker, config.lb_policy)  # one, or replicas
        self.channel = grpc.aio.secure_channel(
            target,
            creds,
            options=[
                *balance,
                ("grpc.max_receive_message_length", 8 * 1024 * 1024),
                ("grpc.max_send_message_length", 8 * 1024 * 1024),
                ("grpc.keepalive_time_ms", 30_000),
                # Come back quickly after a broker restart (gRPC's default waits up to 120 s).
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", int(config.reconnect_max_s * 1000)),
            ],
            interceptors=[TypedErrors()],  # refusals raise broker.client.errors types
        )
        self.stub = agency_pb2_grpc.AgencyServiceStub(self.channel)
        self.audit_stub = audit_pb2_grpc.AuditServiceStub(self.channel)
        # One state database: inbox, what this node verified, what it sealed.
        state = open_state(state_file(config.state_dir, config.agency_id))
        self.inbox = Inbox(state)
        self.memory = TrustMemory(state)
        self.sent = SentLog(state)
        self.acts = ActLog(state)
        self.findings = FindingLog(state)
        self._found: list[Finding] = []  # found during the current response, not yet handed
        self._expectations = intake.ExpectationCache()  # per notice shape (NodeIntake)
        self.trust_config = load_trust_config(config.trust_file or config.keys_dir / TRUST_FILE)
        self.log_view = LogView(
            load_trust(
                config.keys_dir,
                self.trust_config.broker_id,
                witnesses=self.trust_config.witnesses,
                min_cosignatures=self.trust_config.min_cosignatures,
                log_suite=self.trust_config.log_suite,  # "hybrid": both log signatures
            ),
            self.trust_config,
            self.memory,
        )
        self.gossip = Gossip(self.log_view, self._consistency_proof, self._report)
        # The stream and the sweep task share the state connection: one transaction at a
        # time, so neither's rollback undoes the other's work.
        self._state_lock = asyncio.Lock()
        self.stats = ListenStats()
        self._init_publisher()
        # Our own X25519 public key, once: opening a wrap then costs one scalar multiplication.
        self._encryption_public_key = bytes(
            nacl.bindings.crypto_scalarmult_base(self.credentials.encryption_private_key)
        )

    async def __aenter__(self) -> AgencyNode:
        return self

    async def __aexit__(self, kind: object, *exc: object) -> None:
        await self.close_notice_streams(handled=kind is None)  # `async for` left early
        await self.close()

    async def close(self) -> None:
        await self.close_notice_streams()  # stream.py
        await self.channel.close()
        self.inbox.close()

    # -- subscribing --------------------------------------------------------------------
    def _originator_key(self, delivery: notice_pb2.Delivery) -> bytes:
        originator = env.peek_originator(delivery.header)
        try:
            keys = self.verified.statement(delivery.originator_statement, now_ms(), originator)
        except IdentityError as exc:
            raise env.OpenError() from exc
        return keys.verify_key  # Ed25519, or Ed25519 || ML-DSA-65 (hybrid suite)

    def open(self, delivery: notice_pb2.Delivery) -> ReceivedNotice:
        """Verify and open one delivery; raise OpenError (opaque) if anything is wrong."""
        opened = env.open_delivery(
            delivery,
            self.me,
            self.credentials.encryption_private_key,
            self._originator_key(delivery),
            self._encryption_public_key,
            self.credentials.pq_encryption_private_key,
        )
        return ReceivedNotice(
            opened.header,
            opened.header_digest,
            dict(opened.sections),
            delivery.attempt,
            tuple(delivery.obligations),
            dict(opened.manifest),
        )

    @contextlib.asynccontextmanager
    async def _batch(self) -> AsyncIterator[None]:
        with self.inbox.batch():
            yield

    async def _consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """The broker's consistency proof; FailedPrecondition when it refuses to give one,
        Unavailable when it does not answer (or asks to wait): that is no evidence."""
        try:
            got = await self._retry(
                self.audit_stub.GetConsistencyProof,
                audit_pb2.GetConsistencyProofRequest(old_size=old_size, new_size=new_size),
            )
        except grpc.aio.AioRpcError as exc:
            if transient(exc) or exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise Unavailable(f"{exc.code().name}: {exc.details()}") from None
            raise FailedPrecondition(f"{exc.code().name}: {exc.details()}") from None
        return list(got.hashes)

    def _receipt(self, notice: ReceivedNotice) -> notice_pb2.Receipt:
        size, root = self.log_view.head  # this node's view, signed in (broker/client/gossip.py)
        return notice_pb2.Receipt(
            checkpoint_size=size,
            checkpoint_root=root,
            notice_id=notice.notice_id,
            version=notice.version,
            recipient=self.me,
            header_digest=notice.header_digest,
            sections=sorted(notice.sections),
            received_at_ms=now_ms(),
            obligations=sorted(f"{o.section}:{o.kind}:{o.rule}" for o in notice.obligations),
        )

    async def _redispatch(self, handler: Handler) -> None:
        """Hand over notices taken in but not handled before the node last stopped (not
        those an embargo still holds: the sweep releases them)."""
        for data in self.inbox.unhandled(now_ms()):
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

    async def listen(
        self,
        handler: Handler,
        *,
        stop: asyncio.Event,
        on_event: EventHandler | None = None,
        on_lifecycle: LifecycleHandler | None = None,
        on_finding: FindingHandler | None = None,
    ) -> ListenStats:
        """Receive notices until `stop` is set, reconnecting as needed. Returns statistics.

        `on_finding` gets what the node finds the broker did wrong or could not prove (a
        stale version, an unsigned erasure, dropped obligations ...: broker/client/
        findings.py); they are also kept in the node's state database.
        Raises grpc.aio.AioRpcError for refusals that retrying cannot fix
        (unauthenticated, permission denied).
        """
        self._on_finding = on_finding
        try:
            # The signed policy and this node's own signed entry: what it recomputes
            # obligations and embargoes with. Without them it still receives, holds
            # embargoed notices until their signed embargo ends, and applies what it got.
            await self.directory()
        except (grpc.aio.AioRpcError, BrokerError) as exc:
            log.warning("no signed view of the registry yet", extra={"error": str(exc)})
        await self._redispatch(handler)
        sweeper = asyncio.create_task(self._sweeping(handler, stop, on_lifecycle))
        try:
            await self._listening(handler, stop, on_event, on_lifecycle)
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        return self.stats

    async def _sweeping(
        self, handler: Handler, stop: asyncio.Event, on_lifecycle: LifecycleHandler | None
    ) -> None:
        """Once a second: release embargoed notices that are due, erase copies past their
        signed expiry or maximum retention (broker/client/intake.py)."""
        while not stop.is_set():
            await self._sweep(handler, on_lifecycle)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=SWEEP_S)

    async def _sweep(self, handler: Handler, on_lifecycle: LifecycleHandler | None) -> None:
        now = now_ms()
        async with self._state_lock, self._batch():
            for data in self.inbox.due_releases(now):
                delivery = notice_pb2.Delivery.FromString(data)
                try:
                    notice = self.open(delivery)
                except env.OpenError:
                    self.inbox.mark_handled_bytes(data)
                    continue
                await handler(notice)
                self.inbox.mark_handled(notice.notice_id, notice.version)
                self.stats.received += 1
            for notice_id, version, why in self.inbox.due_erasures(now):
                erased = self.inbox.erase(notice_id, version, why)
                if erased and on_lifecycle is not None:
                    # Erased here, at the signed deadline: the node's own act, recorded.
                    action = notice_pb2.LifecycleAction(
                        notice_id=notice_id,
                        actor=self.me,
                        kind=notice_pb2.LIFECYCLE_EXPIRED,
                        version=version,
                        reason=f"{why}: erased at its signed deadline",
                        at_ms=now,
                    )
                    await on_lifecycle(LifecycleNotice(action, erased, action.reason))
        # The originator's side: are the notices it published provably in the log?
        await self._verify_logged_now()
        await self.gossip.recheck()
        await self._hand_findings()

    async def _fresh_view(self) -> None:
        """Fetch the signed view again (the policy or a registry entry may have changed);
        on failure keep the one held (its entries' own validity windows still apply)."""
        try:
            await self.directory(refresh=True)
        except (grpc.aio.AioRpcError, BrokerError) as exc:
            log.warning("signed view not refreshed", extra={"error": str(exc)})

    async def _hand_findings(self) -> None:
        found, self._found = self._found, []
        handler = getattr(self, "_on_finding", None)
        if handler is not None:
            for f in found:
                await handler(f)

    async def _listening(
        self,
        handler: Handler,
        stop: asyncio.Event,
        on_event: EventHandler | None,
        on_lifecycle: LifecycleHandler | None,
    ) -> None:
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

    async def _handle(
        self,
        call: Any,
        response: agency_pb2.SubscribeResponse,
        handler: Handler,
        on_event: EventHandler | None,
        on_lifecycle: LifecycleHandler | None = None,
    ) -> None:
        """Take in one response: open, hand new notices to the application, apply lifecycle
        actions and events, all recorded in ONE inbox transaction (one fsync per response,
        not per delivery), then receipt what was taken in.

        The application sees a notice before the transaction commits; if the node dies in
        between, nothing was receipted, the broker redelivers, and the application sees
        that notice again (at least once to the application across node crashes; exactly
        once otherwise, since the inbox deduplicates redeliveries)."""
        receipts = []
        taken: set[tuple[str, int]] = set()
        if response.deliveries and time.monotonic() - self._view_at > VIEW_MAX_AGE_S:
            await self._fresh_view()
        async with self._state_lock, self._batch():
            # Lifecycle actions first: a withdrawal in the same response as the notice
            # closes it before the notice could reach the application.
            for control in response.controls:
                receipt = await self._take_control(control, on_lifecycle)
                if receipt is not None:
                    receipts.append(receipt)
            for delivery in response.deliveries:
                notice, receipt = self._take(delivery, taken)
                if notice is not None:
                    await handler(notice)
                    now = now_ms()
                    self.inbox.take_in(
                        notice.notice_id,
                        notice.version,
                        delivery.SerializeToString(),
                        now,
                        handled=True,
                        expires_at_ms=notice.header.expires_at_ms,
                        erase_at_ms=intake.erase_deadline(notice.obligations, now, 0),
                    )
                    self.stats.received += 1
                if receipt is not None:
                    receipts.append(receipt)
            for event in response.events:
                if on_event is not None and not self.inbox.event_seen(event.sequence):
                    await on_event(event)
        await self._hand_findings()
        if receipts:
            # hybrid once this agency has a PQ key (credentials.signing_key is then 64 bytes)
            batch = rcp.sign_receipts(self.me, receipts, self.credentials.signing_key)
            await call.write(agency_pb2.SubscribeRequest(receipts=batch))
        taken_n = len(response.deliveries) + len(response.controls)
        if taken_n:
            credit = agency_pb2.Credit(credits=taken_n)
            await call.write(agency_pb2.SubscribeRequest(credit=credit))
        for ack in response.receipt_acks:
            self.stats.receipts_acked += 1
            self.stats.acked.add((ack.action_id or ack.notice_id, ack.version))
        for refusal in response.receipt_refusals:
            # Not counted (e.g. its lease ran out first): the broker delivers it again.
            self.stats.receipts_refused += 1
            log.warning(
                "receipt refused by the broker",
                extra={"notice_id": refusal.notice_id, "code": refusal.code},
            )
        if response.events:
            up_to = response.events[-1].sequence
            await call.write(
                agency_pb2.SubscribeRequest(ack_events=agency_pb2.AckEvents(up_to_sequence=up_to))
            )
