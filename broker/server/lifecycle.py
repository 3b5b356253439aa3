"""Lifecycle on the broker: the rules a publish must follow for versions and replies,
what a new version does to older ones, and the Act and ListReplies handlers.

Mixed into AgencyService (broker/server/service.py); decisions are in
broker/core/lifecycle.py, storage in broker/store/lifecycle.py.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from broker.core import lifecycle, logleaf
from broker.core.lifecycle import NoticeState
from broker.core.lookup import HIT_KIND
from broker.core.requests import is_step as is_request_step
from broker.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from broker.server.lookup import check_hit_reply
from broker.server.peer import caller, require_agency, require_registered
from broker.server.wire import now_ms, parse
from broker.store.api import NoticeRecord, ReplyRow, Store
from broker.v1 import agency_pb2, notice_pb2

if TYPE_CHECKING:
    from broker.server.app import BrokerApp

REPLY_PREFIX = "reply."
Ctx = Any


def check_version(
    store: Store, record: NoticeRecord, header: notice_pb2.NoticeHeader, recipients: frozenset[str]
) -> NoticeState | None:
    """Lifecycle rules of a publish: versions go 1, 2, 3 ...; nothing is published on a
    closed notice; a reply answers a notice its sender may answer, to whom the law says.
    Returns the notice's state before this publish (None for a new notice)."""
    state: NoticeState | None = store.notice_state(record.notice_id)
    if state is not None and state.originator != record.originator:
        raise PermissionDenied(
            f"notice id {record.notice_id} belongs to another originator; use a new notice id"
        )
    latest = store.latest_version(record.notice_id)
    if record.version <= latest:
        return state  # a re-publish: the store answers duplicate or ALREADY_EXISTS
    if state is not None and state.closed:
        raise FailedPrecondition(f"notice {record.notice_id} is {state.closed}; it cannot change")
    if state is not None and record.kind != state.kind:
        raise InvalidArgument(
            f"notice {record.notice_id} is a {state.kind}; a new version cannot change its kind"
        )
    if record.version != latest + 1:
        raise InvalidArgument(
            f"notice {record.notice_id} is at version {latest}; publish version {latest + 1}"
        )
    if header.kind == HIT_KIND:  # + lookups: from the agency whose lookup hit the notice
        check_hit_reply(store, header, recipients)
    elif header.kind.startswith(REPLY_PREFIX):
        lifecycle.check_reply(header, recipients, store.notice_state(header.in_reply_to))
    elif header.in_reply_to:
        raise InvalidArgument("only reply.* kinds may set in_reply_to")
    return state


def after_publish(
    store: Store,
    record: NoticeRecord,
    header: notice_pb2.NoticeHeader,
    before: NoticeState | None,
    recipients: set[str],
    now: int,
) -> list[str]:
    """Track the new version; tell holders of older versions it supersedes; file replies.
    Returns the agencies told to delete an older version."""
    store.track_notice(record.notice_id, record.expires_at_ms)
    if record.version > 1:
        store.purge_pending(
            record.notice_id, record.version, f"superseded by version {record.version}", now
        )
        dropped = sorted((before.received if before else frozenset()) - recipients)
        if dropped:
            action_id, action = lifecycle.broker_action(
                notice_pb2.LIFECYCLE_SUPERSEDED,
                record.notice_id,
                record.version,
                f"version {record.version} is no longer shared with you: delete earlier versions",
                now,
            )
            store.take_action(
                action_id=action_id,
                notice_id=record.notice_id,
                actor=lifecycle.BROKER,
                kind="superseded",
                action=action,
                signature=b"",
                effect=lifecycle.Effect(tell=tuple(dropped)),
                now_ms=now,
            )
            store.tlog_append(
                [
                    logleaf.lifecycle(
                        kind="superseded",
                        notice_id=record.notice_id,
                        version=record.version,
                        originator=record.originator,
                        recipient=r,
                        detail=f"not in version {record.version}",
                        logged_at_ms=now,
                    )
                    for r in dropped
                ]
            )
    else:
        dropped = []
    if header.kind.startswith(REPLY_PREFIX):
        store.record_reply(
            ReplyRow(
                notice_id=record.notice_id,
                in_reply_to=header.in_reply_to,
                kind=header.kind,
                sender=record.originator,
                recipient="",
                sent_at_ms=now,
                respond_by_ms=header.respond_by_ms,
                answered_by="",
            ),
            sorted(recipients),
        )
    return dropped


def _is_uuid(value: str) -> bool:
    """Client action ids are UUIDs; the broker's own ids (with '/') can never collide."""
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


class LifecycleHandlers:
    """AgencyService's lifecycle RPCs."""

    app: BrokerApp

    async def request_step(  # + judicial: RequestHandlers (broker/server/requests.py)
        self, signed: notice_pb2.SignedLifecycleAction, action: notice_pb2.LifecycleAction, me: str
    ) -> agency_pb2.ActResponse:
        raise NotImplementedError

    def _caller(self, context: Ctx) -> str:
        agency = require_agency(caller(context, self.app.revoked))
        return require_registered(agency, self.app.registry)

    # -- lifecycle ---------------------------------------------------------------------
    async def act(self, data: bytes, context: Ctx) -> agency_pb2.ActResponse:
        me = self._caller(context)
        signed = parse(notice_pb2.SignedLifecycleAction, data)
        agency = self.app.registry.get(me)
        if agency is None:
            raise PermissionDenied(f"{me} is not in the agency registry")
        if agency.profile.status != "active":
            raise FailedPrecondition(f"{me} is {agency.profile.status} and may not act on notices")
        action = lifecycle.verify_action(signed, agency.verify_key)
        if len(action.reason.encode()) > lifecycle.MAX_REASON_BYTES:
            raise InvalidArgument(f"reason is limited to {lifecycle.MAX_REASON_BYTES} bytes")
        lifecycle.check_reason(action)  # a digest and sealed boxes, never the text
        if action.actor != me:
            raise PermissionDenied(f"you are {me}; you cannot act as {action.actor!r}")
        if not action.notice_id or not _is_uuid(action.action_id):
            raise InvalidArgument("notice_id is required and action_id must be a lower-case UUID")
        if action.kind in lifecycle.BROKER_ONLY:
            raise PermissionDenied("only the broker declares a notice expired or superseded")
        if is_request_step(action.kind):  # + judicial: broker/server/requests.py
            return await self.request_step(signed, action, me)
        now = now_ms()
        policy = self.app.policy

        def write(store: Store) -> tuple[tuple[str, ...], int, bool, bool]:
            prior = store.lifecycle_action(action.action_id)
            if prior is not None:
                notice_id, actor, action_bytes, told, purged = prior
                if actor != me or action_bytes != signed.action:
                    raise AlreadyExists(f"action id {action.action_id} is already used")
                owner = store.notice_owner(notice_id)
                return told, purged, True, owner == me
            state: NoticeState | None = store.notice_state(action.notice_id)
            if state is None or me not in {state.originator} | state.received | state.pending:
                raise NotFound(f"no notice {action.notice_id} that you sent or received")
            spec = policy.kinds.get(state.kind)
            effect = lifecycle.plan_action(
                action, state, now_ms=now, retention_days=spec.retention_days if spec else 0
            )
            kind = lifecycle.NAMES[action.kind]
            purged = store.take_action(
                action_id=action.action_id,
                notice_id=action.notice_id,
                actor=me,
                kind=kind,
                action=signed.action,
                signature=signed.signature,
                effect=effect,
                now_ms=now,
            )
            store.tlog_append(
                [
                    logleaf.lifecycle(
                        kind=kind,
                        notice_id=action.notice_id,
                        version=0,
                        originator=state.originator,
                        recipient="" if me == state.originator else me,
                        detail=lifecycle.reason_digest(action.reason),
                        logged_at_ms=now,
                    )
                ]
            )
            return effect.tell, purged, False, state.originator == me

        told, purged, duplicate, is_originator = await self.app.runner.call(write)
        for agency_id in told:
            self.app.wake(agency_id)
        # Only the originator learns who was told: a recipient must not learn the others.
        return agency_pb2.ActResponse(
            action_id=action.action_id,
            told=list(told) if is_originator else [],
            purged=purged,
            duplicate=duplicate,
        )

    async def list_replies(self, data: bytes, context: Ctx) -> agency_pb2.ListRepliesResponse:
        me = self._caller(context)
        req = parse(agency_pb2.ListRepliesRequest, data)
        rows = await self.app.runner.call(lambda s: s.replies_for(me, req.open_only))
        now = now_ms()
        return agency_pb2.ListRepliesResponse(
            replies=[
                agency_pb2.ReplyInfo(
                    notice_id=r.notice_id,
                    in_reply_to=r.in_reply_to,
                    kind=r.kind,
                    to=r.recipient,
                    sent_at_ms=r.sent_at_ms,
                    respond_by_ms=r.respond_by_ms,
                    answered_by=r.answered_by,
                    overdue=bool(r.respond_by_ms and not r.answered_by and now > r.respond_by_ms),
                    **{"from": r.sender},
                )
                for r in rows
            ]
        )
