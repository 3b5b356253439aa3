"""Wire forms of the console's read-only views (AuditService.GetQueues and
AdminService.ListKeyStatements); the handlers sit at the end of audit_service.py
and admin_service.py. Routing metadata only: ids, kinds, states, counts, times."""

from __future__ import annotations

from collections.abc import Iterable

from broker.store.api import DEAD, DELIVERED, IN_FLIGHT, PENDING, PURGED, WITHHELD, AgencyRecord
from broker.store.console_reads import QueuedRow, QueueSnapshot
from broker.v1 import admin_pb2, audit_pb2, notice_pb2

MAX_ROWS = 500


def _item(row: QueuedRow) -> audit_pb2.QueuedItem:
    return audit_pb2.QueuedItem(
        notice_id=row.notice_id,
        version=row.version,
        recipient=row.recipient,
        originator=row.originator,
        kind=row.kind,
        state=row.state,
        attempts=row.attempts,
        accepted_at_ms=row.accepted_at_ms,
        not_before_ms=row.not_before_ms,
        deadline_ms=row.deadline_ms,
        control=row.control,
    )


def queues_message(snapshot: QueueSnapshot, at_ms: int) -> audit_pb2.QueuesResponse:
    resp = audit_pb2.QueuesResponse(at_ms=at_ms)
    for r in snapshot.recipients:
        resp.recipients.add(
            recipient=r.recipient,
            pending=r.states.get(PENDING, 0),
            in_flight=r.states.get(IN_FLIGHT, 0),
            delivered=r.states.get(DELIVERED, 0),
            dead=r.states.get(DEAD, 0),
            withheld=r.states.get(WITHHELD, 0),
            purged=r.states.get(PURGED, 0),
            embargoed=r.embargoed,
            oldest_waiting_ms=r.oldest_waiting_ms,
            controls_waiting=r.controls_waiting,
            controls_dead=r.controls_dead,
        )
    resp.waiting.extend(_item(r) for r in snapshot.waiting)
    resp.dead_letters.extend(_item(r) for r in snapshot.dead)
    for o in snapshot.overdue:
        resp.overdue_replies.add(
            notice_id=o.notice_id,
            in_reply_to=o.in_reply_to,
            kind=o.kind,
            sender=o.sender,
            recipient=o.recipient,
            sent_at_ms=o.sent_at_ms,
            respond_by_ms=o.respond_by_ms,
        )
    for priority, waiting, oldest in snapshot.priorities:  # + judicial
        resp.priority_waits.add(
            priority=priority,
            waiting=waiting,
            oldest_accepted_at_ms=oldest,
        )
    return resp


def key_statements_message(
    records: Iterable[AgencyRecord],
) -> admin_pb2.ListKeyStatementsResponse:
    return admin_pb2.ListKeyStatementsResponse(
        statements=[
            admin_pb2.AgencyKeyStatement(
                agency_id=r.id, statement=notice_pb2.SignedKeyStatement.FromString(r.statement)
            )
            for r in sorted(records, key=lambda r: r.id)
        ]
    )
