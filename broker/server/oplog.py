"""The operator's log lines: one structured line for every publish, delivery state change,
registry change (registration, update, suspension, reactivation, revocation, key rotation),
policy activation and refused caller.

Every line carries an ``event`` field (``notice.published``, ``delivery.sent`` ...) and
only ids, versions, digests, counts and states: never a section, a subject or a reason
text written by an agency. broker/logs.py renders them as JSON or key=value text.
"""

from __future__ import annotations

import logging

from broker.store.api import NoticeRecord, PublishOutcome

log = logging.getLogger("broker.ops")

# Delivery states an operator follows (delivery.<state>).
SENT = "sent"
DELIVERED = "delivered"
WITHHELD = "withheld"
REQUEUED = "requeued"
DEAD_LETTERED = "dead_lettered"


def published(outcome: PublishOutcome, record: NoticeRecord) -> int:
    """A notice version was accepted and stored; returns how many addressed recipients
    the policy refused some section (withheld at publish)."""
    to = sorted(outcome.recipients)
    withheld = len({recipient for recipient, _section, _rules in record.refused})
    log.info(
        "notice published",
        extra={
            "event": "notice.published",
            "notice_id": outcome.notice_id,
            "version": outcome.version,
            "originator": record.originator,
            "kind": record.kind,
            "header_digest": outcome.header_digest.hex()[:32],
            "recipients": len(to),
            "to": ",".join(to),
            "withheld": withheld,
            "log_index": outcome.log_index,
            "policy_version": outcome.policy_version[:12],
        },
    )
    return withheld


def deliveries(
    state: str, recipient: str, items: list[tuple[str, int]], attempts: list[int] | None = None
) -> None:
    """Several deliveries to one recipient changed state together (sent in one stream
    message, delivered by one batch of receipts): one line naming each (`deliveries`:
    "notice_id/vN", `attempts` in the same order for delivery.sent). One line per batch
    instead of one per delivery: at full load a line per delivery cost about a tenth of
    the broker's CPU (docs/performance.md)."""
    if not items or not log.isEnabledFor(logging.INFO):
        return
    extra: dict[str, object] = {
        "event": f"delivery.{state}",
        "recipient": recipient,
        "count": len(items),
        "deliveries": [f"{n}/v{v}" for n, v in items],
    }
    if attempts is not None:
        extra["attempts"] = attempts
    log.info(f"deliveries {state}", extra=extra)


def delivery(state: str, notice_id: str, version: int, recipient: str, **more: object) -> None:
    """A delivery changed state (sent, delivered, withheld, requeued, dead_lettered)."""
    level = logging.WARNING if state == DEAD_LETTERED else logging.INFO
    if not log.isEnabledFor(level):  # per delivery: build nothing when nobody listens
        return
    log.log(
        level,
        f"delivery {state}",
        extra={
            "event": f"delivery.{state}",
            "notice_id": notice_id,
            "version": version,
            "recipient": recipient,
            **more,
        },
    )


def registry_changed(action: str, agency: str, admin: str, status: str, revision: int) -> None:
    """An administrator changed an agency's registry entry (`action`: agency.register,
    agency.suspended, agency.active ...)."""
    log.info(
        f"registry {action.removeprefix('agency.')}",
        extra={
            "event": action,
            "agency": agency,
            "admin": admin,
            "status": status,
            "revision": revision,
        },
    )


def policy_activated(version: str, admin: str, sequence: int) -> None:
    """An administrator's signed activation of a policy bundle took effect."""
    log.info(
        "policy activated",
        extra={
            "event": "policy.activate",
            "policy_version": version,
            "admin": admin,
            "sequence": sequence,
        },
    )


def caller_refused(peer: str, party: str, why: str) -> None:
    """A connection's certificate was refused after the TLS handshake (revoked, unreadable,
    or naming no party). `why` is the broker's own message, never the caller's data."""
    log.warning(
        "handshake refused",
        extra={"event": "handshake.refused", "peer": peer, "party": party, "why": why},
    )
