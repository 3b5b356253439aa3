"""A notice's expiry, as the broker's housekeeping applies it in one store operation.

:func:`expire_notice` takes the broker's "expired" lifecycle action (the
ciphertext and undelivered copies purged, every recipient that holds a copy told
to delete it), logs the LifecycleEvent leaf, and records the event that tells the
originator whom the notice never reached. BrokerApp's expiry loop
(broker/server/app.py) calls it under a savepoint per notice.
"""

from __future__ import annotations

from broker.core import lifecycle, logleaf
from broker.store.api import Event, Store
from broker.v1 import notice_pb2


def expire_notice(store: Store, notice_id: str, now: int) -> list[Event]:
    """At expiry: purge the ciphertext and undelivered copies, tell every recipient that
    holds a copy to delete it, and tell the originator (naming whom it never reached)."""
    state = store.notice_state(notice_id)
    if state is None or state.closed:
        return []
    version = store.latest_version(notice_id)
    action_id, action = lifecycle.broker_action(
        notice_pb2.LIFECYCLE_EXPIRED, notice_id, version, "retention period ended: delete", now
    )
    effect = lifecycle.Effect(
        tell=tuple(sorted(state.received)), purge_pending=True, closed="expired"
    )
    store.take_action(
        action_id=action_id,
        notice_id=notice_id,
        actor=lifecycle.BROKER,
        kind="expired",
        action=action,
        signature=b"",
        effect=effect,
        now_ms=now,
    )
    store.tlog_append(
        [
            logleaf.lifecycle(
                kind="expired",
                notice_id=notice_id,
                version=version,
                originator=state.originator,
                recipient="",
                detail="retention period ended; ciphertext purged",
                logged_at_ms=now,
            )
        ]
    )
    never = sorted(state.pending)
    detail = "expired and purged; " + (
        f"never delivered to {', '.join(never)}" if never else "every recipient had received it"
    )
    return [store.add_event(state.originator, "expired", notice_id, version, "", detail, now)]
