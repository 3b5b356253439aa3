"""Judicial cooperation requests from an agency node: issue a request to one executing
authority, take the steps of its lifecycle (each signed by this node), send results,
and list the requests this agency issued or must execute, checked against the signed
steps. Mixed into AgencyNode.

The listing does not take the broker's word: each step's signature is verified with
the actor's key from the node's verified directory, and the state, the running time
limit and "overdue" are recomputed from the signed steps under the signed policy's
catalogue (broker/core/requests.py replay). A disagreement is reported on the request
(`problem`), never hidden.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from broker import pki
from broker.client.directory import View
from broker.client.logview import LogView
from broker.client.reasons import seal_reason
from broker.client.types import PublishedNotice, now_ms
from broker.core import lifecycle, requests
from broker.core.requests import RequestNotice
from broker.errors import BrokerError, InvalidArgument
from broker.v1 import agency_pb2, notice_pb2, requests_pb2

PRIORITIES = {"normal": notice_pb2.PRIORITY_NORMAL, "urgent": notice_pb2.PRIORITY_URGENT}


class _Node(Protocol):
    me: str
    credentials: pki.AgencyCredentials
    log_view: LogView
    stub: Any

    @property
    def _retry(self) -> Callable[..., Awaitable[Any]]: ...

    @property
    def publish(self) -> Callable[..., Awaitable[PublishedNotice]]: ...

    @property
    def directory(self) -> Callable[..., Awaitable[View]]: ...

    @property
    def request_step(self) -> Callable[..., Awaitable[agency_pb2.ActResponse]]: ...

    @property
    def _reason_keys(self) -> Callable[[str], Awaitable[dict[str, bytes]]]: ...


@dataclass(frozen=True)
class StepView:
    """One signed step as the node verified it."""

    step: str
    actor: str
    at_ms: int  # the actor's signed time
    grounds: tuple[str, ...] = ()
    result_notice_id: str = ""


@dataclass(frozen=True)
class RequestView:
    """A request as this node recomputed it from its signed steps."""

    notice_id: str
    kind: str
    issuer: str
    executor: str
    priority: str
    state: str
    deadline: str  # decision | execution | "" (none running)
    deadline_ms: int
    overdue: bool
    issued_at_ms: int
    steps: tuple[StepView, ...]
    grounds: tuple[str, ...] = ()
    problem: str = ""  # why the broker's account does not hold ("" when it does)


def check_summary(summary: requests_pb2.RequestSummary, view: View, as_of_ms: int) -> RequestView:
    """Verify every step of `summary` and recompute it (pure but for the view)."""
    priority = requests.PRIORITY_NAMES.get(summary.priority, "normal")  # replaced by the signed
    problem = ""
    actions: list[notice_pb2.LifecycleAction] = []
    for signed in summary.steps:
        try:
            action = lifecycle.peek_action(signed)
            member = view.members.get(action.actor)
            if member is None:
                raise InvalidArgument(f"step by {action.actor}, who is not in the directory")
            actions.append(lifecycle.verify_action(signed, member.keys.verify_key))
        except BrokerError as exc:
            problem = f"a step does not verify: {exc}"
            break
    steps = tuple(
        StepView(
            requests.STEP_NAMES.get(a.kind, "unknown"),
            a.actor,
            a.at_ms,
            tuple(a.grounds),
            a.result_notice_id,
        )
        for a in actions
    )
    state, deadline_name, deadline_ms, overdue = summary.state, summary.deadline, 0, False
    spec = view.policy.catalogue.requests.get(summary.kind)
    if not problem and spec is None:
        problem = f"the signed policy has no request kind {summary.kind}"
    if not problem and spec is not None:
        notice = RequestNotice(
            summary.notice_id, summary.issuer, summary.kind, frozenset({summary.executor}), priority
        )
        try:
            replayed = requests.replay(actions, notice, spec)
        except BrokerError as exc:
            problem = f"the signed steps do not follow the rules: {exc}"
        else:
            running = requests.deadline(replayed, spec)
            state, priority = replayed.state, replayed.priority
            deadline_name = running.name if running else ""
            deadline_ms = running.at_ms if running else 0
            overdue = running is not None and as_of_ms > running.at_ms
            if (state, deadline_name, deadline_ms, priority) != (
                summary.state,
                summary.deadline,
                summary.deadline_ms,
                requests.PRIORITY_NAMES.get(summary.priority, "normal"),
            ):
                reported = requests.PRIORITY_NAMES.get(summary.priority, "normal")
                problem = (
                    f"the broker reports {reported} {summary.state} "
                    f"({summary.deadline or 'no limit'} {summary.deadline_ms}); the signed "
                    f"steps say {priority} {state} ({deadline_name or 'no limit'} {deadline_ms})"
                )
    return RequestView(
        notice_id=summary.notice_id,
        kind=summary.kind,
        issuer=summary.issuer,
        executor=summary.executor,
        priority=priority,
        state=state,
        deadline=deadline_name,
        deadline_ms=deadline_ms or summary.deadline_ms,
        overdue=overdue if not problem else summary.overdue,
        issued_at_ms=summary.issued_at_ms,
        steps=steps,
        grounds=tuple(summary.grounds),
        problem=problem,
    )


class NodeRequests:
    """Judicial requests of an AgencyNode."""

    async def issue_request(
        self: _Node,
        kind: str,
        executor: str,
        sections: Mapping[str, bytes | str],
        *,
        purpose: str,
        priority: str = "normal",
        data_subject: int = notice_pb2.DATA_SUBJECT_SUSPECT,
        tlp: str = "AMBER",
        expires_in_days: int = 365,
    ) -> PublishedNotice:
        """Seal a request of `kind` for `executor` only, publish it and sign its issue
        step. Returns the published notice (its id is the request's id)."""
        if priority not in PRIORITIES:
            raise InvalidArgument(f"priority must be one of {', '.join(PRIORITIES)}")
        published = await self.publish(
            kind=kind,
            purpose=purpose,
            sections=sections,
            tlp=tlp,
            data_subject=data_subject,
            recipients=[executor],
            restrictions=notice_pb2.OriginatorRestrictions(allow_agencies=[executor]),
            expires_in_days=expires_in_days,
            priority=PRIORITIES[priority],
        )
        await self.request_step(
            "issue", published.notice_id, target=executor, priority=PRIORITIES[priority]
        )
        return published

    async def request_step(
        self: _Node,
        step: str,
        notice_id: str,
        *,
        target: str = "",
        grounds: Collection[str] = (),
        reason: str = "",
        result_notice_id: str = "",
        action_id: str | None = None,
        at_ms: int | None = None,
        priority: int = notice_pb2.PRIORITY_NORMAL,
    ) -> agency_pb2.ActResponse:
        """Sign and send one step (issue, receive, recognise, refuse, ask_info,
        provide_info, partial, execute, withdraw, consent); safe to retry with the same
        action id."""
        kind = requests.STEP_KINDS.get(step)
        if kind is None:
            raise InvalidArgument(
                f"unknown step {step[:32]!r}: use {', '.join(requests.STEP_KINDS)}"
            )
        # The free-text reason is sealed to the two parties (broker/client/reasons.py).
        digest, sealed = seal_reason(reason, await self._reason_keys(notice_id))
        action = notice_pb2.LifecycleAction(
            action_id=action_id or str(uuid.uuid4()),
            notice_id=notice_id,
            actor=self.me,
            kind=kind,  # type: ignore[arg-type]
            reason=digest,
            sealed_reason=sealed,
            at_ms=now_ms() if at_ms is None else at_ms,
            target=target,
            grounds=list(grounds),
            result_notice_id=result_notice_id,
            priority=priority,  # type: ignore[arg-type]
            checkpoint_size=self.log_view.head[0],  # this node's view of the log, signed in
            checkpoint_root=self.log_view.head[1],
        ).SerializeToString(deterministic=True)
        signed = notice_pb2.SignedLifecycleAction(
            action=action, signature=lifecycle.sign_action(action, self.credentials.signing_key)
        )
        response: agency_pb2.ActResponse = await self._retry(self.stub.Act, signed)
        return response

    async def send_result(
        self: _Node,
        request_id: str,
        issuer: str,
        sections: Mapping[str, bytes | str],
        *,
        purpose: str,
        final: bool = False,
        reason: str = "",
    ) -> PublishedNotice:
        """Executing authority: seal results for the issuer (a reply.request_result to
        the request) and sign a partial step (or, with `final`, the execute step)
        naming it."""
        result = await self.publish(
            kind="reply.request_result",
            purpose=purpose,
            sections=sections,
            recipients=[issuer],
            restrictions=notice_pb2.OriginatorRestrictions(allow_agencies=[issuer]),
            in_reply_to=request_id,
        )
        await self.request_step(
            "execute" if final else "partial",
            request_id,
            result_notice_id=result.notice_id,
            reason=reason,
        )
        return result

    async def requests(
        self: _Node, *, role: str = "", open_only: bool = False, as_of_ms: int = 0
    ) -> list[RequestView]:
        """The requests this agency issued (role 'issuer'), must execute ('executor') or
        both, each verified and recomputed from its signed steps; "overdue" is judged at
        `as_of_ms` (0: now)."""
        response: requests_pb2.ListRequestsResponse = await self._retry(
            self.stub.ListRequests,
            requests_pb2.ListRequestsRequest(role=role, open_only=open_only, as_of_ms=as_of_ms),
        )
        view = await self.directory()
        at = as_of_ms or now_ms()  # this node's clock, not the broker's
        return [check_summary(s, view, at) for s in response.requests]
