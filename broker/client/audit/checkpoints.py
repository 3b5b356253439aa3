"""Following the log's checkpoints: the monitor step and the witness's cosignature.

:func:`monitor` verifies the latest checkpoint under a :class:`Trust` and checks it
against the one kept on disk (:class:`MonitorState`): consistent (RFC 9162 proof),
else a fork, a rollback or unprovable, with both signed checkpoints written beside
the state as evidence; with ``check_entries`` the entries must hash to its root
(the frontier is kept, so each step checks only new entries). :func:`cosign` is a
witness's monitor step, then its C2SP cosignature. Findings come back in a
:class:`MonitorResult`, never raised. Part of :mod:`broker.client.audit`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker import pki
from broker.client.audit.client import AuditClient, AuditFailure
from broker.client.audit.trust import Trust, now_ms
from broker.core import auditing
from broker.core import tlog as tree
from broker.core.checkpoint import cosign as cosign_note
from broker.core.merkle import leaf_hash
from broker.errors import BrokerError, FailedPrecondition, NotFound, Unavailable

ROLLBACK = "rollback"  # monitor findings (MonitorResult.verdict)
UNPROVABLE = "unprovable"


@dataclass
class MonitorState:
    """The last checkpoint a monitor verified (and, if it checks entries, its frontier)."""

    note: str
    entries_size: int = -1  # entries verified up to here; -1: entries not checked
    frontier: dict[tree.Node, bytes] = field(default_factory=dict)

    @staticmethod
    def load(path: Path) -> MonitorState | None:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise FailedPrecondition(f"monitor state {path} is unreadable: {exc}") from None
        try:
            return MonitorState(
                note=str(raw["note"]),
                entries_size=int(raw.get("entries_size", -1)),
                frontier={
                    (int(level), int(index)): base64.b64decode(h)
                    for level, index, h in raw.get("frontier", [])
                },
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FailedPrecondition(f"monitor state {path} is malformed: {exc}") from None

    def save(self, path: Path) -> None:
        data = {
            "note": self.note,
            "entries_size": self.entries_size,
            "frontier": [
                [level, index, base64.b64encode(h).decode()]
                for (level, index), h in sorted(self.frontier.items(), reverse=True)
            ],
        }
        _write_atomic(path, json.dumps(data, indent=2).encode())


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class MonitorResult:
    ok: bool
    # first | same | extends (ok) | rollback | unprovable | fork | bad-checkpoint |
    # entries-mismatch | too-few-cosignatures (findings)
    verdict: str
    message: str
    kept_size: int | None
    size: int
    root: bytes
    cosigners: tuple[str, ...] = ()
    entries_checked: int = 0
    evidence: Path | None = None
    cosignatures: int = 0  # after a witness's cosignature
    text: str = ""  # the checkpoint text verified (empty when it did not verify)

    @property
    def findings(self) -> list[dict[str, Any]]:
        """What went wrong, with its evidence: empty when ok."""
        if self.ok:
            return []
        evidence = None if self.evidence is None else str(self.evidence)
        return [{"kind": self.verdict, "detail": self.message, "evidence": evidence}]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "findings": self.findings,
            "verdict": self.verdict,
            "message": self.message,
            "kept_size": self.kept_size,
            "size": self.size,
            "root": self.root.hex(),
            "cosigners": list(self.cosigners),
            "entries_checked": self.entries_checked,
            "evidence": None if self.evidence is None else str(self.evidence),
            "cosignatures": self.cosignatures,
        }


def _evidence(
    state_path: Path, kept: str | None, new: str, message: str, proof: list[bytes]
) -> Path:
    path = state_path.with_name(f"{state_path.name}.fork-{now_ms()}.json")
    data = {
        "message": message,
        "kept_checkpoint": kept,
        "new_checkpoint": new,
        "consistency_proof": [h.hex() for h in proof],
        "detected_at_ms": now_ms(),
    }
    _write_atomic(path, json.dumps(data, indent=2).encode())
    return path


async def _verify_entries(
    client: AuditClient, start: int, frontier: dict[tree.Node, bytes], end: int
) -> tuple[dict[tree.Node, bytes], int]:
    entries = await client.entries(start, end)
    if [e.index for e in entries] != list(range(start, end)):
        raise AuditFailure(
            f"the broker served {len(entries)} entries for [{start}, {end}), not every one"
        )
    return tree.extend(start, frontier, [leaf_hash(e.leaf) for e in entries]), len(entries)


def _replaced_hint(state_path: Path) -> str:
    return (
        f" (a new data directory?); if a new deployment was started on purpose, move "
        f"{state_path} away"
    )


async def monitor(
    client: AuditClient,
    trust: Trust,
    state_path: Path,
    *,
    check_entries: bool = False,
    full: bool = False,
) -> MonitorResult:
    """One monitoring step (see the module docstring). Never raises for what it finds:
    a bad checkpoint, a fork or entries that do not match come back with ok=False."""
    state = MonitorState.load(state_path)
    try:
        fetched = await client.checkpoint(min_cosignatures=trust.min_cosignatures)
    except NotFound as exc:
        if not trust.min_cosignatures:
            raise
        message = f"no checkpoint can be trusted yet: {exc}"
        return MonitorResult(False, "too-few-cosignatures", message, None, 0, b"")
    try:
        new = trust.open(fetched.note)
    except auditing.CheckpointError as exc:
        return MonitorResult(False, "bad-checkpoint", str(exc), None, fetched.size, fetched.root)
    cp = new.checkpoint
    kept = None if state is None else trust.open(state.note, min_cosignatures=0).checkpoint
    verdict, proof = "first", []
    if kept is not None:
        sizes = auditing.consistency_sizes(kept.size, cp.size)
        try:
            proof = [] if sizes is None else await client.consistency(*sizes)
        except Unavailable:
            raise
        except BrokerError as exc:
            message = (
                f"the broker cannot prove checkpoint {cp.size} consistent with checkpoint "
                f"{kept.size} this monitor verified ({exc}): the log was truncated or rewritten"
            )
            if kept.size > cp.size:
                message = (
                    f"the log now has {cp.size} entries but this monitor verified {kept.size} "
                    f"before ({state_path}): the broker's log was rolled back or replaced"
                    f"{_replaced_hint(state_path)} ({exc})"
                )
            evidence = _evidence(state_path, state.note if state else None, new.note, message, [])
            return MonitorResult(
                False, UNPROVABLE, message, kept.size, cp.size, cp.root, new.cosigners, 0, evidence
            )
        try:
            verdict = auditing.check_consistency(kept, cp, proof)
        except auditing.ForkError as exc:
            evidence = _evidence(
                state_path, state.note if state else None, new.note, str(exc), proof
            )
            return MonitorResult(
                False, "fork", str(exc), kept.size, cp.size, cp.root, new.cosigners, 0, evidence
            )
    kept_size = None if kept is None else kept.size
    if verdict == auditing.OLDER and kept is not None and state is not None:
        # A log only grows: a head older than one verified is a rollback, whatever proof
        # of consistency the broker adds (a truncated log can prove its own prefix).
        message = (
            f"the broker served checkpoint {cp.size}, older than checkpoint {kept.size} this "
            f"monitor verified: a rollback or truncation of the log{_replaced_hint(state_path)}"
        )
        evidence = _evidence(state_path, state.note, new.note, message, proof)
        return MonitorResult(
            False, ROLLBACK, message, kept_size, cp.size, cp.root, new.cosigners, 0, evidence
        )

    checked = 0
    next_state = MonitorState(new.note)
    if check_entries:
        start, frontier = 0, {}
        if state is not None and not full and 0 <= state.entries_size <= cp.size:
            start, frontier = state.entries_size, state.frontier
        try:
            frontier, checked = await _verify_entries(client, start, frontier, cp.size)
            root = tree.root(cp.size, frontier)
        except Unavailable:
            raise
        except (AuditFailure, BrokerError) as exc:
            message = f"the broker cannot serve the entries checkpoint {cp.size} commits to: {exc}"
            evidence = _evidence(state_path, state.note if state else None, new.note, message, [])
            return MonitorResult(
                False, "entries-mismatch", message, kept_size, cp.size, cp.root, (), 0, evidence
            )
        if root != cp.root:
            message = (
                f"the log's entries do not hash to checkpoint {cp.size}'s root: an entry was "
                "altered, added or removed"
            )
            evidence = _evidence(state_path, state.note if state else None, new.note, message, [])
            return MonitorResult(
                False,
                "entries-mismatch",
                message,
                kept_size,
                cp.size,
                cp.root,
                (),
                checked,
                evidence,
            )
        next_state = MonitorState(new.note, cp.size, frontier)
    elif state is not None and state.entries_size >= 0 and verdict == auditing.SAME:
        next_state = state
    next_state.save(state_path)
    text = new.text
    if verdict == "first":
        message = f"checkpoint {cp.size} verified and kept (first seen: trusted on first use)"
    elif verdict == auditing.SAME:
        message = f"checkpoint {cp.size} unchanged"
    else:
        message = f"checkpoint {cp.size} is consistent with the one kept ({kept_size})"
    return MonitorResult(
        True, verdict, message, kept_size, cp.size, cp.root, new.cosigners, checked, text=text
    )


async def cosign(
    client: AuditClient, trust: Trust, state_path: Path, agency: pki.AgencyCredentials
) -> MonitorResult:
    """Witness: verify the latest checkpoint against the one kept, then cosign it."""
    result = await monitor(client, trust, state_path)
    if not result.ok:
        return result
    name = auditing.witness_name(agency.agency_id)
    line = cosign_note(result.text, name, agency.signing_seed, int(time.time()))
    count = await client.add_cosignature(result.size, line)
    return dataclasses.replace(
        result, message=f"{result.message}; cosigned as {name}", cosignatures=count
    )
