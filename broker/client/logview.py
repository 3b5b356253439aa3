"""A node's view of the transparency log: the newest cosigned checkpoint it verified.

The node relies on a checkpoint (for the key directory, and as the view it signs into
its headers, receipts and actions) only if the broker's log key signed it, at least k
trusted witnesses cosigned it (trust.toml), the newest cosignature is at most
max_lag_s old, and it is consistent with the checkpoint the node verified before
(kept in its state database, so a restart or a fresh CLI call cannot be rolled back).
An older checkpoint is a rollback, one of the same size with another root a split
view: both are refused, and the two signed notes are kept as evidence.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from broker.client.audit import Trust
from broker.client.memory import CHECKPOINT, TrustMemory
from broker.core import auditing
from broker.errors import PermissionDenied, Unavailable
from broker.trustconfig import TrustConfig


@dataclass(frozen=True)
class Evidence:
    """Two signed checkpoints that cannot both be honest."""

    kind: str  # rollback | split-view
    kept_note: str
    served_note: str
    detail: str


class LogRefused(PermissionDenied):
    """The broker served a checkpoint the node must not rely on; `evidence` says why."""

    def __init__(self, message: str, evidence: Evidence | None = None) -> None:
        super().__init__(message)
        self.evidence = evidence


class LogView:
    def __init__(self, trust: Trust, config: TrustConfig, memory: TrustMemory) -> None:
        self.trust = trust
        self.config = config
        self.memory = memory
        self._opened: tuple[str, auditing.VerifiedCheckpoint] | None = None

    @property
    def kept(self) -> auditing.VerifiedCheckpoint | None:
        """The checkpoint kept, read from the state database once and verified once: it
        is on every send's path (headers, receipts, actions carry it); accept() keeps the
        copy in memory current."""
        if self._opened is None:
            note = self.memory.detail(CHECKPOINT).decode()
            if not note:
                return None
            self._opened = (note, self.trust.open(note, min_cosignatures=0))
        return self._opened[1]

    @property
    def head(self) -> tuple[int, bytes]:
        """(size, root) of the newest checkpoint verified; (0, b"") before the first."""
        kept = self.kept
        return (0, b"") if kept is None else (kept.checkpoint.size, kept.checkpoint.root)

    def accept(
        self, note: str, consistency: Sequence[bytes], *, now_s: float | None = None
    ) -> auditing.VerifiedCheckpoint:
        """Verify a served checkpoint against the trust config and the one kept; keep it
        if it is newer. Raises LogRefused (PermissionDenied) with evidence for a rollback
        or a split view, Unavailable when it is not cosigned recently enough (witnesses
        may just not have caught up: retry), PermissionDenied for a bad signature."""
        try:
            new = self.trust.open(note, min_cosignatures=self.config.min_cosignatures)
        except auditing.CheckpointError as exc:
            if "cosignature" in str(exc):
                raise Unavailable(f"{exc}: waiting for the witnesses; retry") from None
            raise PermissionDenied(
                f"the broker served a checkpoint that does not verify: {exc}"
            ) from None
        if self.config.min_cosignatures:
            now = time.time() if now_s is None else now_s
            age = now - new.cosigned_at
            if age > self.config.max_lag_s:
                raise Unavailable(
                    f"the newest cosignature of checkpoint {new.checkpoint.size} is {age:.0f} s "
                    f"old (at most {self.config.max_lag_s} s): the witnesses lag; retry"
                )
        kept = self.kept
        if kept is not None:
            served = new.checkpoint
            if served.size < kept.checkpoint.size:
                detail = (
                    f"the broker served checkpoint {served.size}, older than checkpoint "
                    f"{kept.checkpoint.size} this node verified: a rollback"
                )
                raise LogRefused(detail, Evidence("rollback", kept.note, note, detail))
            try:
                auditing.check_consistency(kept.checkpoint, served, consistency)
            except auditing.ForkError as exc:
                kind = "split-view" if served.size == kept.checkpoint.size else "fork"
                raise LogRefused(str(exc), Evidence(kind, kept.note, note, str(exc))) from None
        self.memory.accept(CHECKPOINT, "", new.checkpoint.size, detail=note.encode())
        self._opened = (note, new)
        return new

    def settle(
        self, note: str, consistency: Sequence[bytes], *, now_s: float | None = None
    ) -> bool:
        """Whether this node can rely on a checkpoint the broker served with other
        material (a proof of delivery): True when it is signed by the log key and is a
        prefix of the cosigned checkpoint kept, or is itself acceptable (then kept);
        False when it is newer than the one kept and not cosigned (enough) yet.

        `consistency` relates it to the kept checkpoint (auditing.consistency_sizes).
        Raises LogRefused with evidence when it forks from the kept one, PermissionDenied
        when it does not verify.
        """
        try:
            served = self.trust.open(note, min_cosignatures=0)
        except auditing.CheckpointError as exc:
            raise PermissionDenied(
                f"the broker served a checkpoint that does not verify: {exc}"
            ) from None
        kept = self.kept
        if kept is not None and served.checkpoint.size <= kept.checkpoint.size:
            try:
                auditing.check_consistency(kept.checkpoint, served.checkpoint, consistency)
            except auditing.ForkError as exc:
                same = served.checkpoint.size == kept.checkpoint.size
                kind = "split-view" if same else "fork"
                raise LogRefused(str(exc), Evidence(kind, kept.note, note, str(exc))) from None
            return True
        try:
            self.accept(note, consistency, now_s=now_s)
        except Unavailable:
            return False
        return True
