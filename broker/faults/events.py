"""The history of a fault-injection trial: what each party saw, as it saw it.

A history is a sequence of :class:`Entry`, one JSON object a line::

    {"t": 1234567890, "actor": "DE-BKA", "kind": "delivered", "stream": 2, ...}

``t`` is an integer in nanoseconds from one clock shared by every recorder (the
monotonic clock of the process that drives the trial); the checker only ever
orders entries by it, it never measures durations. ``actor`` is who recorded the
entry: an agency id (as publisher or recipient), ``auditor`` or ``harness``.
``kind`` names one of the event types below; the other keys are its fields.

Each event is recorded *after* the fact it reports (an acknowledgement after it
arrived, a delivery after it was read), except the ``*_attempt`` events and
``stream_opened``, which are recorded *before* the request leaves. The checker's
reasoning about order depends on exactly that (see :mod:`broker.faults.history`).
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeAlias

from broker.errors import InvalidArgument

Audience: TypeAlias = Mapping[str, tuple[str, ...]]  # recipient -> sections sealed for it


# -- the harness and the auditor --------------------------------------------------------------
@dataclass(frozen=True)
class Meta:
    """First entry: how to verify the log's checkpoints, and the trial's seed."""

    kind: ClassVar[str] = "meta"
    log_key: str  # C2SP verifier key of the broker's transparency log (brokers/<id>/log.pub)
    seed: int = 0


@dataclass(frozen=True)
class Killed:
    """The harness sent `signal` to the broker process `pid` (it is gone once recorded);
    `starting`: the process had just been started again, and may not have served yet."""

    kind: ClassVar[str] = "killed"
    pid: int
    signal: str = "SIGKILL"
    starting: bool = False


@dataclass(frozen=True)
class Restarted:
    """A broker process serves again on the same data directory."""

    kind: ClassVar[str] = "restarted"
    pid: int


@dataclass(frozen=True)
class CheckpointSeen:
    """The auditor fetched a signed checkpoint whose size or root differs from the last one
    it recorded. `proof` (hex hashes) is the consistency proof between the largest
    checkpoint recorded before (of size `proof_from`) and this one; empty when none was
    needed or when the broker could not give one (a smaller tree has none)."""

    kind: ClassVar[str] = "checkpoint"
    note: str
    proof_from: int = -1  # -1: no checkpoint recorded before
    proof: tuple[str, ...] = ()


@dataclass(frozen=True)
class LogSnapshot:
    """Every log entry (base64 leaf bytes) up to the checkpoint `note`, fetched at the end."""

    kind: ClassVar[str] = "log"
    note: str
    leaves: tuple[str, ...]


# -- publishers ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PublishAttempt:
    """An originator is about to send a sealed notice version. `audience` is read from the
    envelope's key wraps: whom it was sealed for, and which sections each may open."""

    kind: ClassVar[str] = "publish_attempt"
    notice_id: str
    version: int
    audience: Audience


@dataclass(frozen=True)
class PublishOk:
    """The broker acknowledged the publish (it is durable)."""

    kind: ClassVar[str] = "publish_ok"
    notice_id: str
    version: int
    duplicate: bool = False


@dataclass(frozen=True)
class PublishFailed:
    """The publish ended in an error: it may or may not have been stored."""

    kind: ClassVar[str] = "publish_failed"
    notice_id: str
    version: int
    error: str


@dataclass(frozen=True)
class ActAttempt:
    """An agency is about to take a lifecycle action (`action`: withdraw, cancel, suspend,
    resume, extend, flag, lift_flag, request_flag_lift) on a notice."""

    kind: ClassVar[str] = "act_attempt"
    action_id: str
    notice_id: str
    action: str


@dataclass(frozen=True)
class ActOk:
    """The broker acknowledged the action; `told` is whom it promised to tell (the
    originator learns it; a recipient acting gets an empty list)."""

    kind: ClassVar[str] = "act_ok"
    action_id: str
    told: tuple[str, ...] = ()
    duplicate: bool = False


@dataclass(frozen=True)
class ActFailed:
    kind: ClassVar[str] = "act_failed"
    action_id: str
    error: str


@dataclass(frozen=True)
class RestrictAttempt:
    """An originator is about to replace a notice's restrictions; `denied` are the
    recipients the new restrictions exclude."""

    kind: ClassVar[str] = "restrict_attempt"
    notice_id: str
    sequence: int
    denied: tuple[str, ...]


@dataclass(frozen=True)
class RestrictOk:
    kind: ClassVar[str] = "restrict_ok"
    notice_id: str
    sequence: int


@dataclass(frozen=True)
class RestrictFailed:
    kind: ClassVar[str] = "restrict_failed"
    notice_id: str
    sequence: int
    error: str


@dataclass(frozen=True)
class Status:
    """At the end: the broker's delivery state of one recipient's copy, as its originator
    sees it (delivered, pending, in_flight, dead_lettered, withheld, purged)."""

    kind: ClassVar[str] = "status"
    notice_id: str
    version: int
    recipient: str
    state: str


# -- recipients ------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamOpened:
    """A recipient is about to open Subscribe stream number `stream` (1, 2, ...)."""

    kind: ClassVar[str] = "stream_opened"
    stream: int


@dataclass(frozen=True)
class Delivered:
    """A recipient read a delivery from its stream (before opening it). `sections` are the
    section names the delivery carries or its wrap names; `opened` whether it verified."""

    kind: ClassVar[str] = "delivered"
    stream: int
    notice_id: str
    version: int
    sections: tuple[str, ...]
    attempt: int = 1
    opened: bool = True


@dataclass(frozen=True)
class Handled:
    """The recipient's application was handed a notice version."""

    kind: ClassVar[str] = "handled"
    notice_id: str
    version: int


@dataclass(frozen=True)
class ControlReceived:
    """A recipient read a lifecycle action from its stream and processed it (`applied`:
    it verified and was acknowledged)."""

    kind: ClassVar[str] = "control"
    stream: int
    action_id: str
    notice_id: str
    action: str
    version: int = 0
    applied: bool = True


@dataclass(frozen=True)
class ActionHandled:
    """The recipient's application was told of a lifecycle action."""

    kind: ClassVar[str] = "action_handled"
    action_id: str
    notice_id: str
    action: str


Event: TypeAlias = (
    Meta
    | Killed
    | Restarted
    | CheckpointSeen
    | LogSnapshot
    | PublishAttempt
    | PublishOk
    | PublishFailed
    | ActAttempt
    | ActOk
    | ActFailed
    | RestrictAttempt
    | RestrictOk
    | RestrictFailed
    | Status
    | StreamOpened
    | Delivered
    | Handled
    | ControlReceived
    | ActionHandled
)
KINDS: dict[str, type[Event]] = {cls.kind: cls for cls in typing.get_args(Event)}


@dataclass(frozen=True)
class Entry:
    """One line of a history: when (`t`, ns), who recorded it, what."""

    t: int
    actor: str
    event: Event

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": self.t, "actor": self.actor, "kind": self.event.kind}
        for f in fields(self.event):
            value = getattr(self.event, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = {k: list(v) for k, v in sorted(value.items())}
            out[f.name] = value
        return out


def _field_value(cls: type[Event], name: str, hint: Any, value: Any, where: str) -> Any:
    """Check one JSON value against the field's type; return it in the field's shape."""
    bad = InvalidArgument(f"{where}: {cls.kind}.{name} must be {hint}, not {value!r:.60}")
    if hint is int:
        if type(value) is not int:
            raise bad
        return value
    if hint is str or hint is bool:
        if type(value) is not hint:
            raise bad
        return value
    if hint == tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad
        return tuple(value)
    # Audience: {recipient: [section, ...]}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(s, str) for s in v)
        for k, v in value.items()
    ):
        raise bad
    return {k: tuple(v) for k, v in value.items()}


_HINTS = {cls: typing.get_type_hints(cls) for cls in KINDS.values()}


def entry_from_json(raw: object, where: str = "history") -> Entry:
    """Parse one history line (already decoded JSON); raise InvalidArgument saying what is
    wrong, prefixed with `where` (e.g. "history.jsonl:12")."""
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{where}: an entry must be a JSON object")
    t, actor, kind = raw.get("t"), raw.get("actor"), raw.get("kind")
    if type(t) is not int or not isinstance(actor, str) or not isinstance(kind, str):
        raise InvalidArgument(f"{where}: an entry needs an integer t, an actor and a kind")
    cls = KINDS.get(kind)
    if cls is None:
        raise InvalidArgument(f"{where}: unknown kind {kind!r:.40}; known: {', '.join(KINDS)}")
    hints = _HINTS[cls]
    values = {}
    for f in fields(cls):
        if f.name in raw:
            values[f.name] = _field_value(cls, f.name, hints[f.name], raw[f.name], where)
    extra = sorted(set(raw) - {"t", "actor", "kind"} - {f.name for f in fields(cls)})
    if extra:
        raise InvalidArgument(f"{where}: {kind} has no field(s) {', '.join(extra)}")
    try:
        event = cls(**values)
    except TypeError:
        missing = [f.name for f in fields(cls) if f.name not in values]
        raise InvalidArgument(f"{where}: {kind} needs {', '.join(missing)}") from None
    return Entry(t, actor, event)


def dumps(entries: Iterable[Entry]) -> str:
    """A history as JSON lines (each line ends in a newline)."""
    return "".join(json.dumps(e.to_json(), sort_keys=True) + "\n" for e in entries)


def loads(text: str, name: str = "history") -> list[Entry]:
    """Parse JSON lines (blank lines skipped); raise InvalidArgument naming the line."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            raw = json.loads(line)
        except ValueError as exc:
            raise InvalidArgument(f"{where}: not JSON ({exc})") from None
        out.append(entry_from_json(raw, where))
    return out


def by_kind(entries: Sequence[Entry], cls: type[Event]) -> list[Entry]:
    """The entries whose event is a `cls`, in order."""
    return [e for e in entries if isinstance(e.event, cls)]
