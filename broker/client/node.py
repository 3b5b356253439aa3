"""AgencyNode: the agency SDK (asyncio).

Publishing (broker/client/publisher.py): resolve the audience locally under the
administrator-signed policy and registry, wrap keys only to CA-bound keys (the
broker can neither widen an audience nor substitute keys), seal, publish many
notices per call with safe retries (the same bytes are re-sent, so a retry is
idempotent).

Subscribing (here): keep a Subscribe stream open with a credit window, verify
and open each delivery, hand it to the application once, record it in the
local inbox (deduplicated by notice id and version, one durable commit per
response), and acknowledge with signed receipts. Reconnects with backoff;
nothing is lost because the broker redelivers whatever was not receipted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Any

import grpc
import nacl.bindings
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from broker import pki
from broker.client.inbox import Inbox
from broker.client.lifecycle import NodeLifecycle
from broker.client.publisher import NodePublisher
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
from broker.core import envelope as env
from broker.core import lifecycle
from broker.core import receipts as rcp
from broker.core.identity import IdentityError
from broker.errors import InvalidArgument
from broker.v1 import agency_pb2, agency_pb2_grpc, notice_pb2

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
FATAL = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED,
}


class AgencyNode(NodePublisher, NodeLifecycle):
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
        self._init_publisher()
        # Our own X25519 public key, once: opening a wrap then costs one scalar multiplication.
        self._encryption_public_key = bytes(
            nacl.bindings.crypto_scalarmult_base(self.credentials.encryption_private_key)
        )

    async def __aenter__(self) -> AgencyNode:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()
        self.inbox.close()

    # -- subscribing --------------------------------------------------------------------
    def _originator_key(self, delivery: notice_pb2.Delivery) -> bytes:
        originator = env.peek_originator(delivery.header)
        try:
            keys = self.verified.statement(delivery.originator_statement, now_ms(), originator)
        except IdentityError as exc:
            raise env.OpenError() from exc
        return keys.signing_key

    def open(self, delivery: notice_pb2.Delivery) -> ReceivedNotice:
        """Verify and open one delivery; raise OpenError (opaque) if anything is wrong."""
        opened = env.open_delivery(
            delivery,
            self.me,
            self.credentials.encryption_private_key,
            self._originator_key(delivery),
            self._encryption_public_key,
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

    def _take(
        self, delivery: notice_pb2.Delivery, batch: set[tuple[str, int]]
    ) -> tuple[ReceivedNotice | None, notice_pb2.Receipt | None]:
        """Open a delivery: (the notice if the application has not seen it, its receipt).
        A delivery that does not open gets neither (it is never receipted)."""
        try:
            notice = self.open(delivery)
        except env.OpenError:
            self.stats.rejected += 1
            log.warning(
                "delivery did not open; not receipted", extra={"sequence": delivery.sequence}
            )
            return None, None
        key = (notice.notice_id, notice.version)
        if key in batch or self.inbox.has(*key):
            self.stats.duplicates += 1
            return None, self._receipt(notice)
        batch.add(key)
        return notice, self._receipt(notice)

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
            keys = self.verified.statement(control.actor_statement, now_ms(), actor)
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
        """Take in one response: open, hand new notices to the application, apply lifecycle
        actions and events, all recorded in ONE inbox transaction (one fsync per response,
        not per delivery), then receipt what was taken in.

        The application sees a notice before the transaction commits; if the node dies in
        between, nothing was receipted, the broker redelivers, and the application sees
        that notice again (at least once to the application across node crashes; exactly
        once otherwise, since the inbox deduplicates redeliveries)."""
        receipts = []
        taken: set[tuple[str, int]] = set()
        with self.inbox.batch():
            for delivery in response.deliveries:
                notice, receipt = self._take(delivery, taken)
                if notice is not None:
                    await handler(notice)
                    self.inbox.take_in(
                        notice.notice_id,
                        notice.version,
                        delivery.SerializeToString(),
                        now_ms(),
                        handled=True,
                    )
                    self.stats.received += 1
                if receipt is not None:
                    receipts.append(receipt)
            for control in response.controls:
                receipt = await self._take_control(control, on_lifecycle)
                if receipt is not None:
                    receipts.append(receipt)
            for event in response.events:
                if on_event is not None and not self.inbox.event_seen(event.sequence):
                    await on_event(event)
        if receipts:
            batch = rcp.sign_receipts(self.me, receipts, self.credentials.signing_seed)
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
