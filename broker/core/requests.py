"""The lifecycle of a judicial cooperation request, as pure decisions.

A request (mutual legal assistance, European Investigation Order, European Arrest
Warrant, preservation or production order, transfer of proceedings: catalogue kinds
``request.*``) is a sealed notice from an issuing authority to one executing
authority. Its lifecycle is a sequence of signed steps, each a LifecycleAction of a
LIFECYCLE_REQUEST_* kind signed by the party entitled to it::

    issue (issuer) -> issued -> receive (executor) -> received
    received -> recognise -> recognised | refuse(grounds) -> refused
             | ask_info -> info_requested -> provide_info (issuer) -> received
    recognised | in_execution -> partial -> in_execution
    recognised | in_execution -> execute -> executed
    any open state -> withdraw (issuer) -> withdrawn
    received | info_requested -> consent (executor; EAW) : the shorter decision limit

Kinds without a decision limit (production and preservation orders are answered,
not recognised) may go from received straight to partial or execute.

Time limits come from the signed times of the steps (``at_ms``, which the broker
accepts only within ``MAX_SKEW_MS`` of its clock and never before the previous step)
and from the request's signed priority, through the kind's catalogue entry
(:mod:`broker.core.policy.requestkinds`): the decision limit runs from receipt (EIO
Art. 12(3): 30 days; EAW Art. 17: 60 days, 10 after consent), the execution limit
from the decision or from receipt (EIO Art. 12(4): 90 days; production orders, Reg.
2023/1543 Art. 10: 10 days, 8 hours in an emergency). A request for more
information does not stop the clock.

:func:`plan_step` takes the request's state and returns the next one, or raises; the
shell stores it. :func:`replay` rebuilds the state from the signed steps, which is
what a node or an auditor does to check the broker's account.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

from broker.core.policy.requestkinds import FINAL_STATES, RequestSpec
from broker.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from broker.v1 import notice_pb2

HOUR_MS = 3_600_000
MAX_SKEW_MS = 5 * 60_000  # a step's signed time may differ this much from the broker's clock

STEP_NAMES: dict[int, str] = {
    notice_pb2.LIFECYCLE_REQUEST_ISSUE: "issue",
    notice_pb2.LIFECYCLE_REQUEST_RECEIVE: "receive",
    notice_pb2.LIFECYCLE_REQUEST_RECOGNISE: "recognise",
    notice_pb2.LIFECYCLE_REQUEST_REFUSE: "refuse",
    notice_pb2.LIFECYCLE_REQUEST_ASK_INFO: "ask_info",
    notice_pb2.LIFECYCLE_REQUEST_PROVIDE_INFO: "provide_info",
    notice_pb2.LIFECYCLE_REQUEST_PARTIAL: "partial",
    notice_pb2.LIFECYCLE_REQUEST_EXECUTE: "execute",
    notice_pb2.LIFECYCLE_REQUEST_WITHDRAW: "withdraw",
    notice_pb2.LIFECYCLE_REQUEST_CONSENT: "consent",
}
STEP_KINDS = {name: kind for kind, name in STEP_NAMES.items()}
STEPS_ORDER = tuple(STEP_KINDS)
ISSUER_STEPS = frozenset({"issue", "provide_info", "withdraw"})
OPEN_STATES = ("issued", "received", "info_requested", "recognised", "in_execution")
# step -> (the states it may follow, the state it leads to; "" keeps the state)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "receive": (("issued",), "received"),
    "recognise": (("received",), "recognised"),
    "refuse": (("received", "info_requested"), "refused"),
    "ask_info": (("received",), "info_requested"),
    "provide_info": (("info_requested",), "received"),
    "consent": (("received", "info_requested"), ""),
    "partial": (("recognised", "in_execution"), "in_execution"),
    "execute": (("recognised", "in_execution"), "executed"),
    "withdraw": (OPEN_STATES, "withdrawn"),
}
PRIORITY_NAMES: dict[int, str] = {
    notice_pb2.PRIORITY_NORMAL: "normal",
    notice_pb2.PRIORITY_URGENT: "urgent",
}


def is_step(kind: int) -> bool:
    """True for the LifecycleKinds of request steps."""
    return kind in STEP_NAMES


def priority_name(priority: int) -> str:
    """normal or urgent; raise InvalidArgument for any other value."""
    try:
        return PRIORITY_NAMES[priority]
    except KeyError:
        raise InvalidArgument(f"unknown priority {priority}: use normal or urgent") from None


def action_digest(action: bytes) -> bytes:
    """SHA-256 of a step's signed LifecycleAction bytes (what the log keeps)."""
    return hashlib.sha256(action).digest()


@dataclass(frozen=True)
class RequestNotice:
    """What the broker knows of the request's notice when the issue step arrives."""

    notice_id: str
    originator: str
    kind: str
    audience: frozenset[str]  # the agencies the notice was sealed for
    priority: str  # from the signed header
    closed: str = ""


@dataclass(frozen=True)
class RequestState:
    """A request after its steps so far. Times are the actors' signed times."""

    notice_id: str
    kind: str
    issuer: str
    executor: str
    priority: str
    state: str
    issued_at_ms: int
    last_at_ms: int
    received_at_ms: int = 0
    decided_at_ms: int = 0  # recognised or refused
    consent_at_ms: int = 0
    closed_at_ms: int = 0
    grounds: tuple[str, ...] = ()
    partials: int = 0
    steps: int = 1

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def party(self, agency: str) -> bool:
        return agency in (self.issuer, self.executor)


@dataclass(frozen=True)
class Deadline:
    """The time limit now running on a request."""

    name: str  # decision | execution
    at_ms: int
    remind_at_ms: int  # when both parties are reminded


def deadline(state: RequestState, spec: RequestSpec) -> Deadline | None:
    """The time limit running in `state` (None when the request is issued but not
    received, or closed)."""
    limits = spec.limits(state.priority)
    remind = limits.remind_hours * HOUR_MS
    if state.state in ("received", "info_requested") and limits.decision_hours:
        at = state.received_at_ms + limits.decision_hours * HOUR_MS
        if state.consent_at_ms and spec.consent_decision_hours:
            at = min(at, state.consent_at_ms + spec.consent_decision_hours * HOUR_MS)
        return Deadline("decision", at, at - remind)
    if state.state in ("received", "info_requested", "recognised", "in_execution"):
        start = state.received_at_ms
        if limits.execution_from == "decision" and state.decided_at_ms:
            start = state.decided_at_ms
        at = start + limits.execution_hours * HOUR_MS
        return Deadline("execution", at, at - remind)
    return None


def overdue(state: RequestState, spec: RequestSpec, now_ms: int) -> bool:
    """True when the time limit running in `state` has passed at `now_ms`."""
    running = deadline(state, spec)
    return running is not None and now_ms > running.at_ms


def _check_time(action: notice_pb2.LifecycleAction, last_at_ms: int, now_ms: int) -> None:
    if abs(action.at_ms - now_ms) > MAX_SKEW_MS:
        raise InvalidArgument(
            f"at_ms {action.at_ms} is more than {MAX_SKEW_MS // 60_000} minutes from the "
            f"broker's clock ({now_ms}): sign the step with the current time"
        )
    if action.at_ms < last_at_ms:
        raise InvalidArgument(
            f"at_ms {action.at_ms} is before the request's previous step ({last_at_ms})"
        )


def issue(
    action: notice_pb2.LifecycleAction,
    notice: RequestNotice,
    spec: RequestSpec | None,
    *,
    now_ms: int,
) -> RequestState:
    """Plan the issue step: the notice's originator names the executing authority
    (`target`), the only agency the request was sealed for. Raises PermissionDenied,
    FailedPrecondition or InvalidArgument."""
    if action.actor != notice.originator:
        raise PermissionDenied(f"only the issuer of notice {notice.notice_id} may issue it")
    if spec is None:
        raise InvalidArgument(
            f"notice {notice.notice_id} is a {notice.kind}, not a request kind (request.*)"
        )
    if notice.closed:
        raise FailedPrecondition(f"notice {notice.notice_id} is {notice.closed}")
    if not action.target or action.target == notice.originator:
        raise InvalidArgument("target must name the executing authority")
    if priority_name(action.priority) != notice.priority:
        raise InvalidArgument(
            f"the issue step's priority must be the request header's ({notice.priority})"
        )
    if notice.audience != {action.target}:
        raise FailedPrecondition(
            f"a request goes to one executing authority: seal notice {notice.notice_id} "
            f"for {action.target} only (restrictions.allow_agencies)"
        )
    _check_time(action, 0, now_ms)
    return RequestState(
        notice_id=notice.notice_id,
        kind=notice.kind,
        issuer=notice.originator,
        executor=action.target,
        priority=notice.priority,
        state="issued",
        issued_at_ms=action.at_ms,
        last_at_ms=action.at_ms,
    )


def plan_step(
    action: notice_pb2.LifecycleAction,
    state: RequestState,
    spec: RequestSpec,
    *,
    now_ms: int,
) -> RequestState:
    """Plan a step after issue; return the request's next state. Raises PermissionDenied
    when the actor is not the party entitled to the step, FailedPrecondition when the
    request's state forbids it, InvalidArgument when it is malformed. The state passed
    in is never changed."""
    step = STEP_NAMES.get(action.kind)
    if step is None:
        raise InvalidArgument("kind must be a request step")
    entitled = state.issuer if step in ISSUER_STEPS else state.executor
    if action.actor != entitled:
        role = "issuing" if step in ISSUER_STEPS else "executing"
        raise PermissionDenied(
            f"only the {role} authority ({entitled}) may {step} request {state.notice_id}"
        )
    if step == "issue":
        raise FailedPrecondition(f"request {state.notice_id} is already issued")
    sources, target = TRANSITIONS[step]
    if step in ("partial", "execute") and not spec.deadlines["normal"].decision_hours:
        sources = (*sources, "received")  # answered, not recognised (production orders)
    if state.state not in sources:
        raise FailedPrecondition(
            f"request {state.notice_id} is {state.state}: {step} needs it {' or '.join(sources)}"
        )
    if step == "refuse":
        if not action.grounds:
            raise InvalidArgument(
                f"a refusal needs its grounds: codes of {state.kind} ({', '.join(spec.grounds)})"
            )
        unknown = [g for g in action.grounds if g not in spec.grounds]
        if unknown:
            raise InvalidArgument(
                f"{unknown[0][:32]!r} is not a refusal ground of {state.kind}: "
                f"use {', '.join(spec.grounds)}"
            )
    elif action.grounds:
        raise InvalidArgument("only a refusal carries grounds")
    if step == "consent":
        if not spec.consent_decision_hours:
            raise FailedPrecondition(f"{state.kind} has no consent procedure")
        if state.consent_at_ms:
            raise FailedPrecondition(f"consent is already recorded on {state.notice_id}")
    if action.result_notice_id and step not in ("partial", "execute"):
        raise InvalidArgument("only partial and execute steps name a result notice")
    _check_time(action, state.last_at_ms, now_ms)
    return _apply(state, step, target, action)


def _apply(
    state: RequestState, step: str, target: str, action: notice_pb2.LifecycleAction
) -> RequestState:
    at = action.at_ms
    new = replace(state, state=target or state.state, last_at_ms=at, steps=state.steps + 1)
    if step == "receive":
        new = replace(new, received_at_ms=at)
    elif step in ("recognise", "refuse"):
        new = replace(new, decided_at_ms=at)
    elif step == "consent":
        new = replace(new, consent_at_ms=at)
    elif step == "partial":
        new = replace(new, partials=state.partials + 1)
    if step == "refuse":
        new = replace(new, grounds=tuple(action.grounds))
    if new.final:
        new = replace(new, closed_at_ms=at)
    return new


def replay(
    actions: Sequence[notice_pb2.LifecycleAction],
    notice: RequestNotice,
    spec: RequestSpec,
) -> RequestState:
    """Rebuild a request's state from its steps in order, applying the same rules with
    each step's own signed time as the clock. Raises like :func:`plan_step` when the
    sequence is not one the rules allow (a broker that reordered or invented steps)."""
    if not actions:
        raise InvalidArgument(f"request {notice.notice_id} has no steps")
    first = actions[0]
    if STEP_NAMES.get(first.kind) != "issue":
        raise FailedPrecondition(f"request {notice.notice_id} does not start with its issue")
    # The priority is the issuer's, signed in the issue step (and checked against the
    # header when the broker took it): a replaying node need not believe anyone else's.
    notice = replace(notice, priority=PRIORITY_NAMES.get(first.priority, notice.priority))
    state = issue(first, notice, spec, now_ms=first.at_ms)
    for action in actions[1:]:
        state = plan_step(action, state, spec, now_ms=action.at_ms)
    return state
