"""The history checker: pure functions that judge a recorded trial (broker.faults.events).

It reports four kinds of violation:

* **lost**: an acknowledged publish that did not reach an authorised recipient's
  application (or whose receipt never reached the broker), or an acknowledged lifecycle
  action that did not reach a party holding the notice;
* **duplicated**: an application handed the same notice version, or the same lifecycle
  action, twice;
* **unauthorised**: a recipient was sent a notice version it is not in the sealed audience
  of, a section not sealed for it, or a copy after a withdrawal, a supersession, a
  restriction or a suspension took effect;
* **inconsistent**: a checkpoint that does not verify, that is not consistent with the
  largest one before it (a fork) or is smaller (a rollback), a log whose entries do not
  hash to its checkpoint, an acknowledged publish missing from the log or logged twice,
  a receipt logged twice or not at all.

Order, not duration. Every rule that says "after X took effect" compares recorded times
only where the order is certain: an acknowledgement is recorded after the broker
committed; a stream is recorded as opened before the request leaves, so everything the
broker leased for that stream was leased after that time. A copy sent on a stream that
was opened after the broker is known to have committed a withdrawal was therefore leased
after the withdrawal: a violation, whatever the network did. A copy read on a stream
opened before may have been leased before: it is allowed. The same holds for what a
recipient reads after it applied an action on its own stream (the broker leases
deliveries and actions in order on a stream).

What may or may not have happened (a publish or action whose call failed) excuses what
it would have caused, and is never held against the broker.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from broker.core import logleaf
from broker.core import tlog as tree
from broker.core.auditing import CheckpointError, ForkError, check_consistency, open_log_checkpoint
from broker.core.checkpoint import Checkpoint, NoteError, Verifier, parse_verifier_key
from broker.core.merkle import leaf_hash
from broker.faults.events import (
    ActAttempt,
    ActFailed,
    ActionHandled,
    ActOk,
    CheckpointSeen,
    ControlReceived,
    Delivered,
    Entry,
    Handled,
    Killed,
    LogSnapshot,
    Meta,
    PublishAttempt,
    PublishFailed,
    PublishOk,
    Restarted,
    RestrictAttempt,
    RestrictOk,
    Status,
    StreamOpened,
)

LOST = "lost"
DUPLICATED = "duplicated"
UNAUTHORISED = "unauthorised"
INCONSISTENT = "inconsistent"
CATEGORIES = (LOST, DUPLICATED, UNAUTHORISED, INCONSISTENT)

CLOSING = frozenset({"withdraw", "cancel"})  # after these nothing more is sent
TELL_HOLDERS = frozenset({"suspend", "resume", "withdraw", "cancel", "extend"})
TELL_OTHERS = frozenset({"flag", "lift_flag"})  # the originator and the holders but the actor
NEVER = 2**63  # a time later than any recorded

Key = tuple[str, int]  # (notice id, version)


@dataclass(frozen=True)
class Violation:
    category: str
    detail: str
    t: int = 0  # when the offending entry was recorded (0: at the end)


@dataclass(frozen=True)
class Report:
    violations: tuple[Violation, ...]
    stats: Mapping[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def counts(self) -> dict[str, int]:
        """Violations per category, every category present."""
        found = Counter(v.category for v in self.violations)
        return {c: found.get(c, 0) for c in CATEGORIES}

    def text(self, limit: int = 20) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts().items())
        lines = [f"violations: {counts}"]
        lines += [f"  {v.category}: {v.detail}" for v in self.violations[:limit]]
        if len(self.violations) > limit:
            lines.append(f"  ... and {len(self.violations) - limit} more")
        return "\n".join(lines)


@dataclass(frozen=True)
class Outstanding:
    """What the history says is still owed: (recipient, notice id, version) deliveries the
    application has not been handed, and (party, action id) actions not yet applied."""

    deliveries: frozenset[tuple[str, str, int]]
    controls: frozenset[tuple[str, str]]
    # Copies handed to an application whose receipt the broker must end up holding.
    receipts: frozenset[tuple[str, str, int]] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.deliveries or self.controls)


class _Index:
    """The history, indexed for the rules below."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        self.entries = sorted(entries, key=lambda e: e.t)
        self.meta: Meta | None = None
        self.attempts: dict[Key, tuple[int, str, PublishAttempt]] = {}
        self.acked: dict[Key, int] = {}
        self.publish_failed: set[Key] = set()
        self.acts: dict[str, tuple[int, str, ActAttempt]] = {}
        self.act_ok: dict[str, tuple[int, ActOk]] = {}
        self.restricts: list[tuple[int, RestrictAttempt]] = []
        self.restrict_ok: dict[tuple[str, int], int] = {}
        self.streams: dict[tuple[str, int], int] = {}
        self.delivered: list[tuple[int, str, Delivered]] = []
        self.handled: list[tuple[int, str, Handled]] = []
        self.controls: list[tuple[int, str, ControlReceived]] = []
        self.actions_handled: list[tuple[int, str, ActionHandled]] = []
        self.statuses: dict[tuple[str, int, str], str] = {}
        self.checkpoints: list[tuple[int, CheckpointSeen]] = []
        self.logs: list[tuple[int, LogSnapshot]] = []
        self.kills = self.restarts = self.kills_starting = 0
        for e in self.entries:
            self._add(e)
        self.versions: dict[str, list[int]] = defaultdict(list)
        for notice_id, version in sorted(self.attempts):
            self.versions[notice_id].append(version)
        self.acts_on: dict[str, list[tuple[int, str, ActAttempt]]] = defaultdict(list)
        for attempt in self.acts.values():
            self.acts_on[attempt[2].notice_id].append(attempt)
        self.first_handled: dict[tuple[str, str], int] = {}  # (recipient, notice) -> t
        self.handled_versions: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        for t, who, h in self.handled:
            self.first_handled.setdefault((who, h.notice_id), t)
            self.handled_versions[(who, h.notice_id)].append((t, h.version))
        self.applied: dict[tuple[str, str], int] = {}  # (party, action id) -> first t
        for t, who, c in self.controls:
            if c.applied:
                self.applied.setdefault((who, c.action_id), t)

    def _add(self, e: Entry) -> None:
        ev, t = e.event, e.t
        if isinstance(ev, Meta):
            self.meta = ev
        elif isinstance(ev, PublishAttempt):
            self.attempts.setdefault((ev.notice_id, ev.version), (t, e.actor, ev))
        elif isinstance(ev, PublishOk):
            self.acked.setdefault((ev.notice_id, ev.version), t)
        elif isinstance(ev, PublishFailed):
            self.publish_failed.add((ev.notice_id, ev.version))
        elif isinstance(ev, ActAttempt):
            self.acts.setdefault(ev.action_id, (t, e.actor, ev))
        elif isinstance(ev, ActOk):
            self.act_ok.setdefault(ev.action_id, (t, ev))
        elif isinstance(ev, RestrictAttempt):
            self.restricts.append((t, ev))
        elif isinstance(ev, RestrictOk):
            self.restrict_ok.setdefault((ev.notice_id, ev.sequence), t)
        elif isinstance(ev, StreamOpened):
            self.streams.setdefault((e.actor, ev.stream), t)
        elif isinstance(ev, Delivered):
            self.delivered.append((t, e.actor, ev))
        elif isinstance(ev, Handled):
            self.handled.append((t, e.actor, ev))
        elif isinstance(ev, ControlReceived):
            self.controls.append((t, e.actor, ev))
        elif isinstance(ev, ActionHandled):
            self.actions_handled.append((t, e.actor, ev))
        elif isinstance(ev, Status):
            self.statuses[(ev.notice_id, ev.version, ev.recipient)] = ev.state
        elif isinstance(ev, CheckpointSeen):
            self.checkpoints.append((t, ev))
        elif isinstance(ev, LogSnapshot):
            self.logs.append((t, ev))
        elif isinstance(ev, Killed):
            self.kills += 1
            self.kills_starting += ev.starting
        elif isinstance(ev, Restarted):
            self.restarts += 1

    # -- facts derived from the history ---------------------------------------------------
    def audience(self, key: Key) -> Mapping[str, tuple[str, ...]] | None:
        attempt = self.attempts.get(key)
        return None if attempt is None else attempt[2].audience

    def originator(self, notice_id: str) -> str:
        versions = self.versions.get(notice_id)
        return self.attempts[(notice_id, versions[0])][1] if versions else ""

    def version_known(self, notice_id: str, version: int) -> int:
        """The earliest time by which the broker had surely committed this version: its
        acknowledgement, or anyone being sent it or told of what it superseded."""
        times = [self.acked.get((notice_id, version), NEVER)]
        times += [
            t for t, _w, d in self.delivered if (d.notice_id, d.version) == (notice_id, version)
        ]
        supersession = f"{notice_id}/v{version}/superseded"
        times += [t for t, _w, c in self.controls if c.action_id == supersession]
        return min(times)

    def action_known(self, action_id: str) -> int:
        """The earliest time by which the broker had surely committed this action."""
        times = [self.act_ok[action_id][0]] if action_id in self.act_ok else [NEVER]
        times += [t for t, _w, c in self.controls if c.action_id == action_id]
        return min(times)

    def stream_opened(self, who: str, stream: int) -> int | None:
        return self.streams.get((who, stream))


# -- unauthorised ----------------------------------------------------------------------------
def _unauthorised(ix: _Index) -> list[Violation]:
    out = []
    for t, who, d in ix.delivered:
        reason = _why_unauthorised(ix, t, who, d)
        if reason:
            out.append(
                Violation(UNAUTHORISED, f"{who} was sent {d.notice_id} v{d.version} {reason}", t)
            )
    return out


def _why_unauthorised(ix: _Index, t: int, who: str, d: Delivered) -> str:
    """Why this copy should not have been sent (empty: it was allowed)."""
    audience = ix.audience((d.notice_id, d.version))
    if audience is None:
        return "though nobody published that version"
    if who not in audience:
        return f"though it was sealed for {', '.join(sorted(audience)) or 'nobody'} only"
    beyond = sorted(set(d.sections) - set(audience[who]))
    if beyond:
        return f"with section(s) {', '.join(beyond)} not sealed for it"
    opened = ix.stream_opened(who, d.stream)
    # The broker leased it no earlier than this (a stream never recorded: no claim).
    after = -1 if opened is None else opened
    mine = {c.action_id for ct, w, c in ix.controls if w == who and c.applied and ct < t}
    return (
        _after_action(ix, t, d, after, mine)
        or _after_version(ix, who, d, after, mine)
        or _after_restriction(ix, who, d, after)
    )


def _after_action(ix: _Index, t: int, d: Delivered, after: int, mine: set[str]) -> str:
    acts = ix.acts_on.get(d.notice_id, [])
    for at, _actor, act in acts:
        if act.action in CLOSING:
            if after > ix.action_known(act.action_id):
                return f"on a stream opened after the {act.action} was committed"
            if act.action_id in mine:
                return f"after it had applied the {act.action}"
        elif (
            act.action == "suspend"
            and after > ix.action_known(act.action_id)
            # A resume may have taken effect once it was attempted.
            and not any(r.action == "resume" and at < rt < t for rt, _a, r in acts)
        ):
            return "on a stream opened after the notice was suspended, and never resumed"
    return ""


def _after_version(ix: _Index, who: str, d: Delivered, after: int, mine: set[str]) -> str:
    for later in ix.versions.get(d.notice_id, ()):
        if later <= d.version:
            continue
        newer = ix.audience((d.notice_id, later)) or {}
        if who in newer and set(d.sections) <= set(newer[who]):
            continue  # the newer version shares at least as much with it
        if after > ix.version_known(d.notice_id, later):
            return f"on a stream opened after v{later}, which no longer shares it so, was committed"
        if f"{d.notice_id}/v{later}/superseded" in mine:
            return f"after it had been told v{later} superseded it"
    return ""


def _after_restriction(ix: _Index, who: str, d: Delivered, after: int) -> str:
    """The newest restriction update committed before the stream opened must allow it."""
    committed = [
        r
        for _t, r in ix.restricts
        if r.notice_id == d.notice_id
        and ix.restrict_ok.get((r.notice_id, r.sequence), NEVER) < after
    ]
    if committed:
        newest = max(committed, key=lambda r: r.sequence)
        if who in newest.denied:
            return f"on a stream opened after restriction update {newest.sequence} excluded it"
    return ""


# -- lost ------------------------------------------------------------------------------------
def _excused(ix: _Index, notice_id: str, version: int, who: str) -> bool:
    """Whether something that may have happened lets the broker not deliver this copy."""
    if any(v > version for v in ix.versions.get(notice_id, ())):
        return True  # superseded: the broker purges what a newer version replaces
    acts = sorted(ix.acts_on.get(notice_id, ()), key=lambda a: a[0])
    if any(a.action in CLOSING for _t, _w, a in acts):
        return True
    if any(r.notice_id == notice_id and who in r.denied for _t, r in ix.restricts):
        return True
    holds = [a for a in acts if a[2].action in ("suspend", "resume")]
    if holds:
        last = holds[-1][2]
        return last.action == "suspend" or last.action_id not in ix.act_ok
    return False


def outstanding(entries: Iterable[Entry]) -> Outstanding:
    """What is still owed according to the history (see :class:`Outstanding`)."""
    return _outstanding(_Index(entries))


def _outstanding(ix: _Index) -> Outstanding:
    handed = {(w, h.notice_id, h.version) for _t, w, h in ix.handled}
    owed = set()
    for notice_id, version in ix.acked:
        audience = ix.audience((notice_id, version)) or {}
        for who in audience:
            if not _excused(ix, notice_id, version, who):
                owed.add((who, notice_id, version))
    controls = set()
    for (who, aid), _t in _expected_controls(ix).items():
        if (who, aid) not in ix.applied:
            controls.add((who, aid))
    receipts = {(w, n, v) for w, n, v in handed if not _excused(ix, n, v, w)}
    return Outstanding(frozenset(owed - handed), frozenset(controls), frozenset(receipts))


def _holders(ix: _Index, notice_id: str, before: int) -> set[str]:
    """Recipients whose application was handed a version of the notice before `before`
    and that no newer version attempted before then left out. With `before` the time an
    action was attempted (before its request left), each was sent its copy before the
    broker committed the action: the broker must count it among those holding the notice."""
    out = set()
    for (who, nid), versions in ix.handled_versions.items():
        if nid != notice_id:
            continue
        held = [v for t, v in versions if t < before]
        if not held:
            continue
        dropped = any(
            later > max(held)
            and ix.attempts[(notice_id, later)][0] < before
            and who not in ix.attempts[(notice_id, later)][2].audience
            for later in ix.versions[notice_id]
        )
        if not dropped:
            out.add(who)
    return out


def _expected_controls(ix: _Index) -> dict[tuple[str, str], int]:
    """(party, action id) -> when the action was acknowledged, for every party that must be
    told of it: those the broker promised, and those holding the notice at that time."""
    out: dict[tuple[str, str], int] = {}
    for aid, (t_ok, ok) in ix.act_ok.items():
        if aid not in ix.acts:
            continue
        t_attempt, actor, act = ix.acts[aid]
        parties = set(ok.told)
        if act.action in TELL_HOLDERS | TELL_OTHERS:
            parties |= _holders(ix, act.notice_id, t_attempt)
        if act.action in TELL_OTHERS:
            parties.add(ix.originator(act.notice_id))
        for who in parties - {actor, ""}:
            out[(who, aid)] = t_ok
    for (notice_id, version), t_ok in ix.acked.items():
        if version < 2 or (notice_id, version - 1) not in ix.attempts:
            continue
        audience = ix.audience((notice_id, version)) or {}
        before = ix.audience((notice_id, version - 1)) or {}
        attempted = ix.attempts[(notice_id, version)][0]
        for who in _holders(ix, notice_id, attempted):
            if who in before and who not in audience:
                out[(who, f"{notice_id}/v{version}/superseded")] = t_ok
    return out


def _lost(ix: _Index) -> list[Violation]:
    left = _outstanding(ix)
    out = [
        Violation(LOST, f"{who} never received {nid} v{version}, acknowledged to its originator")
        for who, nid, version in sorted(left.deliveries)
    ]
    for who, aid in sorted(left.controls):
        act = ix.acts.get(aid)
        what = f"{act[2].action} {aid} of {act[2].notice_id}" if act else aid
        out.append(Violation(LOST, f"{who} was never told of the acknowledged {what}"))
    handed = {(w, h.notice_id, h.version) for _t, w, h in ix.handled}
    for (nid, version, who), state in sorted(ix.statuses.items()):
        if (
            (who, nid, version) in handed
            and state != "delivered"
            and not _excused(ix, nid, version, who)
        ):
            out.append(
                Violation(LOST, f"{who} was handed {nid} v{version} but the broker says {state}")
            )
    return out


# -- duplicated ------------------------------------------------------------------------------
def _duplicated(ix: _Index) -> list[Violation]:
    out = []
    notices = Counter((w, h.notice_id, h.version) for _t, w, h in ix.handled)
    for (who, nid, version), n in sorted(notices.items()):
        if n > 1:
            out.append(Violation(DUPLICATED, f"{who}'s application saw {nid} v{version} {n} times"))
    actions = Counter((w, a.action_id) for _t, w, a in ix.actions_handled)
    for (who, aid), n in sorted(actions.items()):
        if n > 1:
            out.append(Violation(DUPLICATED, f"{who}'s application saw action {aid} {n} times"))
    return out


# -- inconsistent ----------------------------------------------------------------------------
def _open(note: str, verifier: Verifier) -> Checkpoint:
    return open_log_checkpoint(note, verifier).checkpoint


def _inconsistent(ix: _Index) -> list[Violation]:
    if not ix.checkpoints and not ix.logs:
        return []
    if ix.meta is None:
        return [Violation(INCONSISTENT, "checkpoints were recorded without the log key (meta)")]
    try:
        verifier = parse_verifier_key(ix.meta.log_key)
    except NoteError as exc:
        return [Violation(INCONSISTENT, f"the history's log key is unusable: {exc}")]
    out = []
    kept: Checkpoint | None = None
    seen: set[tuple[int, bytes]] = set()
    for t, c in ix.checkpoints:
        try:
            cp = _open(c.note, verifier)
        except CheckpointError as exc:
            out.append(Violation(INCONSISTENT, f"a checkpoint does not verify: {exc}", t))
            continue
        seen.add((cp.size, cp.root))
        if kept is None:
            kept = cp
            continue
        if cp.size < kept.size:
            out.append(
                Violation(
                    INCONSISTENT, f"rollback: checkpoint {cp.size} after checkpoint {kept.size}", t
                )
            )
            continue
        if cp.size > kept.size and kept.size > 0 and c.proof_from != kept.size:
            out.append(
                Violation(
                    INCONSISTENT,
                    f"checkpoint {cp.size} came with no proof from checkpoint {kept.size}",
                    t,
                )
            )
            continue
        try:
            check_consistency(kept, cp, [bytes.fromhex(h) for h in c.proof])
        except (ForkError, ValueError) as exc:
            out.append(Violation(INCONSISTENT, str(exc), t))
            continue
        kept = cp
    for t, snapshot in ix.logs:
        out += _check_log(ix, verifier, seen, t, snapshot)
    return out


def _check_log(
    ix: _Index, verifier: Verifier, seen: set[tuple[int, bytes]], t: int, snapshot: LogSnapshot
) -> list[Violation]:
    try:
        cp = _open(snapshot.note, verifier)
        leaves = [base64.b64decode(leaf, validate=True) for leaf in snapshot.leaves]
    except (CheckpointError, binascii.Error) as exc:
        return [Violation(INCONSISTENT, f"the log snapshot is unusable: {exc}", t)]
    if (cp.size, cp.root) not in seen:
        return [
            Violation(INCONSISTENT, f"the log snapshot's checkpoint {cp.size} was never checked")
        ]
    frontier = tree.extend(0, {}, [leaf_hash(leaf) for leaf in leaves])
    if len(leaves) != cp.size or tree.root(cp.size, frontier) != cp.root:
        return [
            Violation(
                INCONSISTENT,
                f"the {len(leaves)} log entries do not hash to checkpoint {cp.size}'s root",
                t,
            )
        ]
    published: Counter[Key] = Counter()
    receipts: Counter[tuple[str, int, str]] = Counter()
    for leaf_bytes in leaves:
        try:
            leaf = logleaf.parse(leaf_bytes)
        except logleaf.LeafError as exc:
            return [Violation(INCONSISTENT, f"a log entry does not parse: {exc}", t)]
        if leaf.HasField("notice"):
            published[(leaf.notice.notice_id, leaf.notice.version)] += 1
        elif leaf.HasField("receipt"):
            r = leaf.receipt
            receipts[(r.notice_id, r.version, r.recipient)] += 1
    out = []
    for key, at in sorted(ix.acked.items()):
        if at < t and published[key] != 1:
            times = (
                "is not in the log" if not published[key] else f"is logged {published[key]} times"
            )
            out.append(Violation(INCONSISTENT, f"acknowledged {key[0]} v{key[1]} {times}", t))
    for (nid, version, who), n in sorted(receipts.items()):
        if n > 1:
            out.append(
                Violation(
                    INCONSISTENT, f"{who}'s receipt for {nid} v{version} is logged {n} times", t
                )
            )
    for (nid, version, who), state in sorted(ix.statuses.items()):
        if state == "delivered" and not receipts[(nid, version, who)]:
            out.append(
                Violation(
                    INCONSISTENT, f"{who}'s receipt for {nid} v{version} is not in the log", t
                )
            )
    return out


# -- the whole check --------------------------------------------------------------------------
def check(entries: Sequence[Entry]) -> Report:
    """Judge a history; return every violation found and what the history covered."""
    ix = _Index(entries)
    violations = _lost(ix) + _duplicated(ix) + _unauthorised(ix) + _inconsistent(ix)
    stats = {
        "publishes_acknowledged": len(ix.acked),
        "publishes_failed": len(ix.publish_failed - set(ix.acked)),
        "actions_acknowledged": len(ix.act_ok),
        "actions_failed": sum(1 for e in entries if isinstance(e.event, ActFailed)),
        "restrictions_acknowledged": len(ix.restrict_ok),
        "deliveries": len(ix.delivered),
        "handled": len(ix.handled),
        "controls": len(ix.controls),
        "streams": len(ix.streams),
        "checkpoints": len(ix.checkpoints),
        "log_entries": max((len(s.leaves) for _t, s in ix.logs), default=0),
        "kills": ix.kills,
        "kills_while_starting": ix.kills_starting,
        "restarts": ix.restarts,
    }
    return Report(tuple(violations), stats)
