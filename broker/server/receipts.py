"""Receipts on the broker: SubmitReceipts (and receipts sent on a Subscribe stream) and
GetDeliveryStatus, which hands the originator every signed receipt and the key statement
that verifies it, so its SDK checks them itself (broker/client/verify.py).

Mixed into AgencyService (broker/server/service.py); storage in broker/store/.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from broker.core import logleaf, relay
from broker.errors import InvalidArgument, ResourceExhausted
from broker.server import metrics, oplog
from broker.server.peer import caller, require_agency, require_registered
from broker.server.status import status_of
from broker.server.wire import now_ms, parse
from broker.store.api import (
    DEAD,
    DELIVERED,
    IN_FLIGHT,
    PENDING,
    PURGED,
    WITHHELD,
    ControlReceipt,
    ControlRow,
    ReceiptRecord,
    Store,
)
from broker.v1 import agency_pb2, notice_pb2

if TYPE_CHECKING:
    from broker.server.app import BrokerApp

log = logging.getLogger("broker.server")
Ctx = Any

STATE = {
    PENDING: agency_pb2.DELIVERY_STATE_PENDING,
    IN_FLIGHT: agency_pb2.DELIVERY_STATE_IN_FLIGHT,
    DELIVERED: agency_pb2.DELIVERY_STATE_DELIVERED,
    DEAD: agency_pb2.DELIVERY_STATE_DEAD_LETTERED,
    WITHHELD: agency_pb2.DELIVERY_STATE_WITHHELD,
    PURGED: agency_pb2.DELIVERY_STATE_PURGED,
}
MAX_RECEIPT_BATCHES = 16


class ReceiptHandlers:
    """SubmitReceipts and GetDeliveryStatus."""

    app: BrokerApp

    def _agency(self, context: Ctx) -> str:
        agency = require_agency(caller(context, self.app.revoked))
        return require_registered(agency, self.app.registry)

    # -- receipts ------------------------------------------------------------------------
    async def _store_receipts(
        self, me: str, batches: Sequence[notice_pb2.ReceiptBatch], *, partial: bool = False
    ) -> tuple[list[agency_pb2.ReceiptAck], list[agency_pb2.ReceiptRefusal]]:
        """Verify every batch, then store them in one transaction: (acknowledged, refused).

        A receipt counts only for what was streamed to the caller (see
        Store.record_receipts). With `partial` (a Subscribe stream) receipts that do not
        count are refused one by one and the others stored; otherwise the first refusal
        is raised and nothing is stored.
        """
        verified = [
            pair
            for batch in batches
            for pair in relay.accept_receipts(batch, me, self.app.registry, self.app.config.limits)
        ]
        now = now_ms()
        records = []
        controls = []
        for p, r in verified:
            if r.action_id:
                controls.append(
                    ControlReceipt(
                        r.action_id, r.recipient, r.header_digest, p.SerializeToString(), now
                    )
                )
                continue
            records.append(
                ReceiptRecord(
                    r.notice_id,
                    r.version,
                    r.recipient,
                    r.header_digest,
                    p.SerializeToString(),
                    now,
                    sections=tuple(r.sections),
                    claimed_at_ms=r.received_at_ms,
                    receipt_digest=logleaf.receipt_digest(p.receipt),
                    batch_root=p.batch_root,
                )
            )

        delivered: list[tuple[str, int]] = []  # first receipts: the delivery is delivered

        def write(
            store: Store,
        ) -> tuple[list[agency_pb2.ReceiptAck], list[agency_pb2.ReceiptRefusal]]:
            acks = []
            refused = []
            delivered.clear()
            for o in store.receive_receipts_logged(records, now):  # + transparency log
                if o.error is None:
                    acks.append(agency_pb2.ReceiptAck(notice_id=o.notice_id, version=o.version))
                    if o.first:
                        delivered.append((o.notice_id, o.version))
                elif partial:
                    refused.append(
                        agency_pb2.ReceiptRefusal(
                            notice_id=o.notice_id,
                            version=o.version,
                            code=status_of(o.error).name,
                            reason=str(o.error),
                        )
                    )
                else:
                    raise o.error
            done = []
            for action_id, notice_id, new, error in store.receive_control_receipts(controls):
                if error is None:
                    done.append((action_id, notice_id, new))
                elif partial:
                    refused.append(
                        agency_pb2.ReceiptRefusal(
                            notice_id=notice_id,
                            action_id=action_id,
                            code=status_of(error).name,
                            reason=str(error),
                        )
                    )
                else:
                    raise error
            first = [(a, n) for a, n, new in done if new]  # a resent receipt is not logged again
            if first:
                store.tlog_append(
                    [
                        logleaf.lifecycle(
                            kind="acknowledged",
                            notice_id=notice_id,
                            version=0,
                            originator=store.notice_owner(notice_id) or "",
                            recipient=me,
                            detail=action_id,
                            logged_at_ms=now,
                        )
                        for action_id, notice_id in first
                    ]
                )
            acks += [agency_pb2.ReceiptAck(action_id=a, notice_id=n) for a, n, _ in done]
            return acks, refused

        acks, refused = await self.app.runner.call(write)
        metrics.RECEIPTS.inc(len(acks))
        oplog.deliveries(oplog.DELIVERED, me, delivered)
        for refusal in refused:
            log.warning(
                "receipt refused",
                extra={"notice_id": refusal.notice_id, "recipient": me, "code": refusal.code},
            )
        return acks, refused

    async def submit_receipts(self, data: bytes, context: Ctx) -> agency_pb2.SubmitReceiptsResponse:
        me = self._agency(context)
        req = parse(agency_pb2.SubmitReceiptsRequest, data)
        if not req.batches:
            raise InvalidArgument("SubmitReceiptsRequest carries no batches")
        if len(req.batches) > MAX_RECEIPT_BATCHES:
            raise ResourceExhausted(f"at most {MAX_RECEIPT_BATCHES} receipt batches per request")
        acks, _refused = await self._store_receipts(me, list(req.batches))
        return agency_pb2.SubmitReceiptsResponse(accepted=acks)

    # -- GetDeliveryStatus ---------------------------------------------------------------
    async def delivery_status(self, data: bytes, context: Ctx) -> agency_pb2.DeliveryStatusResponse:
        me = self._agency(context)
        req = parse(agency_pb2.DeliveryStatusRequest, data)
        if not req.notice_id:
            raise InvalidArgument("DeliveryStatusRequest.notice_id is required")

        def read(store: Store) -> tuple[list[Any], list[ControlRow]]:
            return (
                store.delivery_status(me, req.notice_id, req.version),
                store.action_status(req.notice_id),
            )

        rows, actions = await self.app.runner.call(read)
        registry = self.app.registry
        resp = agency_pb2.DeliveryStatusResponse()
        for row in rows:
            status = resp.recipients.add(
                recipient=row.recipient,
                version=row.version,
                state=STATE[row.state],
                attempts=row.attempts,
                sections=list(row.sections),
            )
            if row.receipt is not None:
                status.receipt.ParseFromString(row.receipt)
                # The key that verifies it: the originator checks it against the CA itself.
                if row.recipient in registry:
                    status.key_statement.ParseFromString(registry[row.recipient].statement)
        for a in actions:
            action = resp.actions.add(
                action_id=a.action_id,
                kind=a.kind,
                actor=a.actor,
                recipient=a.recipient,
                state=STATE.get(a.state, agency_pb2.DELIVERY_STATE_UNSPECIFIED),
                attempts=a.attempts,
            )
            if a.receipt is not None:
                action.receipt.ParseFromString(a.receipt)
                if a.recipient in registry:
                    action.key_statement.ParseFromString(registry[a.recipient].statement)
        return resp
