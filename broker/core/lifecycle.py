"""The lifecycle of a published notice, as pure decisions.

Who may do what (INTERPOL RPD Art. 81; SIS Reg. 2018/1862 Arts. 24, 53, 55):
the originator suspends (for a bounded time), resumes, withdraws, cancels and
extends (with a justification); a recipient that received the notice flags it
("the action will not be taken on our territory") and lifts its flag; the
originator may ask a flagging recipient to lift it. Each action reaches every
recipient concerned, which acknowledges it with a receipt; copies not yet
delivered are purged from the broker when the notice is withdrawn.

`plan_action` takes the notice's state and returns the effect, or raises; the
shell applies the effect in one transaction.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from broker.core import bounds
from broker.core.hybrid import sign_as, valid_as
from broker.core.requests import STEP_NAMES as REQUEST_STEP_NAMES
from broker.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from broker.v1 import notice_pb2

LIFECYCLE_CONTEXT = b"broker.v1 lifecycle\x00"
DAY_MS = 86_400_000
MAX_SUSPEND_MS = 183 * DAY_MS  # INTERPOL: a notice may be suspended for up to six months
BROKER = "broker"
MAX_REASON_BYTES = 1024  # reasons and justifications are short free text

K = notice_pb2.LifecycleKind
NAMES = {
    notice_pb2.LIFECYCLE_SUSPEND: "suspend",
    notice_pb2.LIFECYCLE_RESUME: "resume",
    notice_pb2.LIFECYCLE_WITHDRAW: "withdraw",
    notice_pb2.LIFECYCLE_CANCEL: "cancel",
    notice_pb2.LIFECYCLE_EXTEND: "extend",
    notice_pb2.LIFECYCLE_FLAG: "flag",
    notice_pb2.LIFECYCLE_REQUEST_FLAG_LIFT: "request_flag_lift",
    notice_pb2.LIFECYCLE_LIFT_FLAG: "lift_flag",
    notice_pb2.LIFECYCLE_EXPIRED: "expired",
    notice_pb2.LIFECYCLE_SUPERSEDED: "superseded",
    notice_pb2.LIFECYCLE_RESTRICTED: "restricted",
    # + judicial: request steps (rules in broker/core/requests.py, not plan_action)
    **{kind: f"request_{name}" for kind, name in REQUEST_STEP_NAMES.items()},
}
ORIGINATOR_ONLY = frozenset(
    {
        notice_pb2.LIFECYCLE_SUSPEND,
        notice_pb2.LIFECYCLE_RESUME,
        notice_pb2.LIFECYCLE_WITHDRAW,
        notice_pb2.LIFECYCLE_CANCEL,
        notice_pb2.LIFECYCLE_EXTEND,
        notice_pb2.LIFECYCLE_REQUEST_FLAG_LIFT,
    }
)
BROKER_ONLY = frozenset({notice_pb2.LIFECYCLE_EXPIRED, notice_pb2.LIFECYCLE_SUPERSEDED})
# After these a recipient must delete its copy.
DELETING = frozenset(
    {
        notice_pb2.LIFECYCLE_WITHDRAW,
        notice_pb2.LIFECYCLE_CANCEL,
        notice_pb2.LIFECYCLE_EXPIRED,
        notice_pb2.LIFECYCLE_SUPERSEDED,
    }
)


def reason_digest(reason: str) -> str:
    """What the transparency log keeps of a free-text reason: its SHA-256, never the text
    (it may name people)."""
    return "sha256:" + hashlib.sha256(reason.encode()).hexdigest() if reason else ""


MAX_SEALED_REASONS = 4096  # one box per agency told
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def check_reason(action: notice_pb2.LifecycleAction) -> None:
    """The broker keeps no free text that can name a person: a reason travels as its
    digest ("sha256:<hex>", signed) with the text sealed to the agencies told. Raises
    InvalidArgument for a plain reason or oversized boxes."""
    if action.reason and not _DIGEST.fullmatch(action.reason):
        raise InvalidArgument(
            "reason must be the SHA-256 of the text ('sha256:<hex>') with the text sealed to "
            "the agencies told in sealed_reason: the broker keeps no free text (the SDK does it)"
        )
    if len(action.sealed_reason) > MAX_SEALED_REASONS:
        raise InvalidArgument(f"at most {MAX_SEALED_REASONS} sealed reasons per action")
    if action.sealed_reason and not action.reason:
        raise InvalidArgument("sealed_reason without the reason's digest in reason")
    for box in action.sealed_reason:
        if not box.agency_id or len(box.sealed) > MAX_REASON_BYTES + 48:
            raise InvalidArgument(
                f"each sealed reason names an agency and holds at most {MAX_REASON_BYTES} bytes"
            )


def sign_action(action: bytes, signing_seed: bytes) -> bytes:
    """The actor's signature over a serialized LifecycleAction: Ed25519 with a 32-byte seed,
    hybrid Ed25519 + ML-DSA-65 with a 64-byte hybrid key (broker.core.hybrid.sign_as)."""
    return sign_as(signing_seed, LIFECYCLE_CONTEXT, action)


def peek_action(signed: notice_pb2.SignedLifecycleAction) -> notice_pb2.LifecycleAction:
    """Parse the action (to learn whose key verifies it) and check its bounds; raise
    InvalidArgument."""
    action = notice_pb2.LifecycleAction()
    try:
        action.ParseFromString(signed.action)
    except DecodeError as exc:
        raise InvalidArgument("action is not a valid broker.v1.LifecycleAction") from exc
    bounds.check(action, "action")
    return action


def verify_action(
    signed: notice_pb2.SignedLifecycleAction, signing_key: bytes
) -> notice_pb2.LifecycleAction:
    """Verify the actor's signature, then parse. Raises InvalidArgument.

    `signing_key` is the actor's verify key: Ed25519, or Ed25519 || ML-DSA-65 when its
    statement carries a PQ key, and then only a hybrid signature verifies."""
    if not valid_as(signing_key, signed.signature, LIFECYCLE_CONTEXT, signed.action):
        raise InvalidArgument("the lifecycle action's signature does not verify with your key")
    return peek_action(signed)


@dataclass(frozen=True)
class NoticeState:
    """What the broker knows of a notice when an action arrives."""

    notice_id: str
    originator: str
    kind: str
    created_at_ms: int
    expires_at_ms: int
    received: frozenset[str]  # recipients holding a copy (delivered or in flight)
    pending: frozenset[str]  # recipients whose copies are not delivered yet
    suspended_until_ms: int = 0
    closed: str = ""  # "withdrawn", "cancelled", "expired" once final
    flags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Effect:
    """What an accepted action changes."""

    tell: tuple[str, ...]  # agencies that receive the action (and must acknowledge it)
    purge_pending: bool = False  # remove undelivered copies from the broker
    suspended_until_ms: int | None = None  # new suspension end (0: resumed)
    closed: str = ""  # the notice's new final state, if any
    expires_at_ms: int | None = None
    flags: frozenset[str] | None = None


def plan_action(
    action: notice_pb2.LifecycleAction,
    state: NoticeState,
    *,
    now_ms: int,
    retention_days: int,
) -> Effect:
    """Decide what an agency's lifecycle action does. Raises PermissionDenied when the
    actor may not take it, FailedPrecondition when the notice's state forbids it,
    InvalidArgument when it is malformed."""
    kind, actor = action.kind, action.actor
    if (
        kind not in NAMES
        or kind in BROKER_ONLY
        or kind == notice_pb2.LIFECYCLE_RESTRICTED
        or kind in REQUEST_STEP_NAMES
    ):
        # (RESTRICTED travels as the originator's signed restriction update: UpdateRestrictions)
        raise InvalidArgument("kind must be suspend, resume, withdraw, cancel, extend or a flag")
    if kind in ORIGINATOR_ONLY and actor != state.originator:
        raise PermissionDenied(f"only the originator may {NAMES[kind]} notice {state.notice_id}")
    if state.closed:
        raise FailedPrecondition(f"notice {state.notice_id} is {state.closed}")

    def others(actor: str) -> tuple[str, ...]:
        """The originator and every recipient holding a copy, but the actor."""
        return tuple(sorted(({state.originator} | state.received) - {actor}))

    if kind == notice_pb2.LIFECYCLE_SUSPEND:
        if not now_ms < action.until_ms <= now_ms + MAX_SUSPEND_MS:
            raise InvalidArgument("until_ms must be in the future and at most six months ahead")
        return Effect(tell=tuple(sorted(state.received)), suspended_until_ms=action.until_ms)
    if kind == notice_pb2.LIFECYCLE_RESUME:
        if state.suspended_until_ms <= now_ms:
            raise FailedPrecondition(f"notice {state.notice_id} is not suspended")
        return Effect(tell=tuple(sorted(state.received)), suspended_until_ms=0)
    if kind in (notice_pb2.LIFECYCLE_WITHDRAW, notice_pb2.LIFECYCLE_CANCEL):
        closed = "withdrawn" if kind == notice_pb2.LIFECYCLE_WITHDRAW else "cancelled"
        # Everyone in the signed audience, those whose copy is still pending too: each keeps
        # a tombstone, so a copy a broker delivers later anyway is never shown.
        everyone = tuple(sorted(state.received | state.pending))
        return Effect(tell=everyone, purge_pending=True, closed=closed)
    if kind == notice_pb2.LIFECYCLE_EXTEND:
        if not action.reason.strip():
            raise InvalidArgument("an extension needs a justification in reason")
        if action.until_ms <= state.expires_at_ms:
            raise InvalidArgument("until_ms must be later than the current expiry")
        if action.until_ms > now_ms + retention_days * DAY_MS:
            raise InvalidArgument(
                f"{state.kind} may be extended by at most {retention_days} days from now"
            )
        return Effect(tell=tuple(sorted(state.received)), expires_at_ms=action.until_ms)
    if kind == notice_pb2.LIFECYCLE_FLAG:
        if actor not in state.received:
            raise PermissionDenied(f"only a recipient of notice {state.notice_id} may flag it")
        if actor in state.flags:
            raise FailedPrecondition(f"{actor} has already flagged notice {state.notice_id}")
        if not action.reason.strip():
            raise InvalidArgument("a flag needs a reason")
        return Effect(tell=others(actor), flags=state.flags | {actor})
    if kind == notice_pb2.LIFECYCLE_REQUEST_FLAG_LIFT:
        if action.target not in state.flags:
            raise FailedPrecondition(f"{action.target or 'nobody'} has no flag on this notice")
        return Effect(tell=(action.target,))
    # LIFT_FLAG
    if actor not in state.flags:
        raise FailedPrecondition(f"{actor} has no flag on notice {state.notice_id}")
    return Effect(tell=others(actor), flags=state.flags - {actor})


def check_reply(
    header: notice_pb2.NoticeHeader,
    recipients: frozenset[str],
    referenced: NoticeState | None,
) -> None:
    """A reply (kind reply.*) must answer a notice and go to whom the law says.

    Hit reports and requests for information go from a recipient of the notice to
    its originator only; corrections go from the originator to recipients of the
    notice (Law Enforcement Directive Art. 7(3)). Raises PermissionDenied or NotFound.
    """
    if not header.in_reply_to:
        raise InvalidArgument(f"a {header.kind} must name the notice it answers (in_reply_to)")
    sender = header.originator
    if referenced is None or sender not in (
        {referenced.originator} | referenced.received | referenced.pending
    ):
        # The same answer whether the notice exists or not: outsiders learn nothing.
        raise NotFound(f"no notice {header.in_reply_to} that you sent or received")
    if referenced.closed:
        raise FailedPrecondition(f"notice {referenced.notice_id} is {referenced.closed}")
    if header.kind == "reply.correction":
        if sender != referenced.originator:
            raise PermissionDenied("only the originator of a notice may send corrections of it")
        outside = sorted(recipients - referenced.received - referenced.pending)
        if outside:
            raise PermissionDenied(f"{', '.join(outside)} did not receive the notice corrected")
        return
    if sender not in referenced.received:
        raise PermissionDenied(
            f"only a recipient of notice {referenced.notice_id} may send a {header.kind} about it"
        )
    if recipients != {referenced.originator}:
        raise PermissionDenied(f"a {header.kind} goes to the notice's originator only")


def restricted_action_id(notice_id: str, sequence: int) -> str:
    """The id of the control that carries an originator's signed restriction update to a
    holder it excludes (erase your copy). Like the broker's own ids it holds '/', so it
    can never collide with a client's UUID."""
    return f"{notice_id}/v{sequence}/restricted"


def broker_action_id(kind: notice_pb2.LifecycleKind.ValueType, notice_id: str, version: int) -> str:
    """The id of the broker's own action of `kind` on a notice's `version` (broker_action):
    a node refuses a broker order under any other id, so the broker cannot take over the
    id of an agency's signed action (which the node would then record as seen)."""
    return f"{notice_id}/v{version}/{NAMES[kind]}"


def broker_action(
    kind: notice_pb2.LifecycleKind.ValueType, notice_id: str, version: int, reason: str, at_ms: int
) -> tuple[str, bytes]:
    """An action the broker itself takes (EXPIRED, SUPERSEDED): (action id, bytes).

    The id is derived from the notice, version and kind, so taking it twice is one
    action. It carries no signature: it only ever tells recipients to delete.
    """
    action_id = broker_action_id(kind, notice_id, version)
    action = notice_pb2.LifecycleAction(
        action_id=action_id,
        notice_id=notice_id,
        actor=BROKER,
        kind=kind,
        reason=reason,
        at_ms=at_ms,
        version=version,
    )
    return action_id, action.SerializeToString(deterministic=True)
