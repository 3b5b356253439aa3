"""Judicial cooperation requests on the broker: the steps of a request (arriving
through AgencyService.Act as LIFECYCLE_REQUEST_* actions) and ListRequests.

Each step is checked against the request's state, replayed from its stored signed
steps with the pure rules of broker/core/requests.py; an accepted step is stored as a
lifecycle action (so it is delivered to the other party and acknowledged with a
receipt like any other), appended to the request's steps and logged as a
RequestStepLogged leaf, all in one transaction. Mixed into AgencyService.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError

from broker.core import lifecycle, logleaf, requests
from broker.core.lifecycle import Effect
from broker.core.policy.requestkinds import RequestSpec
from broker.core.requests import RequestNotice, RequestState
from broker.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from broker.server.peer import caller, require_agency, require_registered
from broker.server.wire import now_ms, parse
from broker.store.api import Store
from broker.store.requests import RequestRow
from broker.v1 import agency_pb2, notice_pb2, requests_pb2

if TYPE_CHECKING:
    from broker.server.app import BrokerApp

Ctx = Any
PRIORITY_VALUES = {"normal": notice_pb2.PRIORITY_NORMAL, "urgent": notice_pb2.PRIORITY_URGENT}
ROLES = ("", "issuer", "executor")


def _not_found(notice_id: str) -> NotFound:
    # The same answer whether the request exists or not: outsiders learn nothing.
    return NotFound(f"no request {notice_id} that you issued or must execute")


def header_priority(head: bytes) -> str:
    """The signed priority in a stored notice head (Delivery fields 2 and 6)."""
    try:
        delivery = notice_pb2.Delivery.FromString(head)
        header = notice_pb2.NoticeHeader.FromString(delivery.header.header_bytes)
    except DecodeError:
        return "normal"  # the broker's own row; an originator cannot reach this
    return requests.priority_name(header.priority)


def current_state(row: RequestRow, spec: RequestSpec) -> RequestState:
    """Replay the stored steps (the broker's own, already checked when taken)."""
    notice = RequestNotice(
        row.notice_id, row.issuer, row.kind, frozenset({row.executor}), row.priority
    )
    actions = [notice_pb2.LifecycleAction.FromString(a) for a, _sig in row.steps]
    return requests.replay(actions, notice, spec)


class RequestHandlers:
    """AgencyService's request steps and ListRequests."""

    app: BrokerApp

    async def request_step(
        self, signed: notice_pb2.SignedLifecycleAction, action: notice_pb2.LifecycleAction, me: str
    ) -> agency_pb2.ActResponse:
        """Take one signed step (Act has checked the signature, the actor and the ids)."""
        now = now_ms()
        specs = self.app.policy.catalogue.requests
        step = requests.STEP_NAMES[action.kind]

        def write(store: Store) -> tuple[tuple[str, ...], bool]:
            prior = store.lifecycle_action(action.action_id)
            if prior is not None:
                _nid, actor, action_bytes, told, _purged = prior
                if actor != me or action_bytes != signed.action:
                    raise AlreadyExists(f"action id {action.action_id} is already used")
                return told, True
            notice_state = store.notice_state(action.notice_id)
            parties = (
                {notice_state.originator} | notice_state.received | notice_state.pending
                if notice_state is not None
                else set()
            )
            row = store.request_row(action.notice_id)
            if notice_state is None or me not in parties:
                raise _not_found(action.notice_id)
            if row is None:
                if step != "issue":
                    raise FailedPrecondition(f"request {action.notice_id} is not issued yet")
                notice = RequestNotice(
                    notice_id=action.notice_id,
                    originator=notice_state.originator,
                    kind=notice_state.kind,
                    audience=notice_state.received | notice_state.pending,
                    priority=header_priority(store.request_head(action.notice_id)),
                    closed=notice_state.closed,
                )
                new = requests.issue(action, notice, specs.get(notice.kind), now_ms=now)
                spec = specs[notice.kind]
            else:
                if me not in (row.issuer, row.executor):
                    raise _not_found(action.notice_id)
                known = specs.get(row.kind)
                if known is None:
                    raise FailedPrecondition(
                        f"the active policy no longer knows request kind {row.kind}"
                    )
                spec = known
                if notice_state.closed and step != "withdraw":
                    raise FailedPrecondition(f"notice {action.notice_id} is {notice_state.closed}")
                new = requests.plan_step(action, current_state(row, spec), spec, now_ms=now)
            other = new.executor if me == new.issuer else new.issuer
            store.take_action(
                action_id=action.action_id,
                notice_id=action.notice_id,
                actor=me,
                kind=lifecycle.NAMES[action.kind],
                action=signed.action,
                signature=signed.signature,
                effect=Effect(tell=(other,)),
                now_ms=now,
            )
            running = requests.deadline(new, spec)
            store.save_request_step(new, running, action.action_id, signed.action, signed.signature)
            store.tlog_append(
                [
                    logleaf.request_step(
                        notice_id=new.notice_id,
                        kind=new.kind,
                        step=step,
                        actor=me,
                        issuer=new.issuer,
                        executor=new.executor,
                        state=new.state,
                        signed_at_ms=action.at_ms,
                        action=signed.action,
                        deadline=running.name if running else "",
                        deadline_ms=running.at_ms if running else 0,
                        grounds=new.grounds if step == "refuse" else (),
                        priority=PRIORITY_VALUES[new.priority],
                        logged_at_ms=now,
                    )
                ]
            )
            return (other,), False

        told, duplicate = await self.app.runner.call(write)
        for agency_id in told:
            self.app.wake(agency_id)
        return agency_pb2.ActResponse(
            action_id=action.action_id, told=list(told), duplicate=duplicate
        )

    async def list_requests(self, data: bytes, context: Ctx) -> requests_pb2.ListRequestsResponse:
        me = require_registered(
            require_agency(caller(context, self.app.revoked)), self.app.registry
        )
        req = parse(requests_pb2.ListRequestsRequest, data)
        if req.role not in ROLES:
            raise InvalidArgument("role must be issuer, executor or empty (both)")
        if req.as_of_ms < 0:
            raise InvalidArgument("as_of_ms must not be negative (0: now)")
        as_of = req.as_of_ms or now_ms()
        rows = await self.app.runner.call(lambda s: s.requests_for(me, req.role, req.open_only))
        return requests_pb2.ListRequestsResponse(
            as_of_ms=as_of,
            requests=[
                requests_pb2.RequestSummary(
                    notice_id=r.notice_id,
                    kind=r.kind,
                    issuer=r.issuer,
                    executor=r.executor,
                    priority=PRIORITY_VALUES.get(r.priority, notice_pb2.PRIORITY_NORMAL),
                    state=r.state,
                    deadline=r.deadline,
                    deadline_ms=r.deadline_ms,
                    overdue=bool(r.deadline and as_of > r.deadline_ms),
                    issued_at_ms=r.issued_at_ms,
                    updated_at_ms=r.updated_at_ms,
                    grounds=list(r.grounds),
                    steps=[
                        notice_pb2.SignedLifecycleAction(action=a, signature=sig)
                        for a, sig in r.steps
                    ],
                )
                for r in rows
            ],
        )
