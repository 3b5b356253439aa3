"""What an auditor, a monitor or a witness decides about checkpoints (pure).

* :func:`open_log_checkpoint`: a checkpoint note must carry a valid signature
  from the broker's log key (C2SP signed-note, tlog-checkpoint), name the
  expected origin, and, when asked, at least k valid cosignatures from trusted
  witnesses (C2SP tlog-cosignature). Given the log's ML-DSA-65 key (a deployment on
  the hybrid suite, trust.toml ``[log] suite = "hybrid"``) it must also carry a valid
  ML-DSA-65 line from it over the same text (broker/core/pqnote.py): both halves, or
  nothing. Witness cosignatures stay Ed25519.
* :func:`check_consistency`: a checkpoint seen now against the one kept from
  before: the same tree, a proven extension of it, or an older prefix of it.
  Anything else is a fork, reported as :class:`ForkError` with both heads.
* Witnesses are agencies: a witness cosigns with its CA-bound Ed25519 signing
  key, under the name :func:`witness_name` (its party URI). The cosignature
  message has its own prefix ("cosignature/v1"), so it cannot be confused with
  a notice header or a receipt batch signed by the same key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from broker.core.checkpoint import (
    SIG_TYPE_COSIGNATURE_V1,
    SIG_TYPE_ED25519,
    Checkpoint,
    NoteError,
    Verifier,
    format_checkpoint,
    open_checkpoint,
)
from broker.core.identity import Party
from broker.core.merkle import ProofError, empty_root, verify_consistency
from broker.core.pqnote import PQVerifier, require_pq_signature
from broker.errors import InvalidArgument

SAME = "same"
EXTENDS = "extends"
OLDER = "older"


class CheckpointError(InvalidArgument):
    """A checkpoint that cannot be trusted: bad signature, wrong origin, too few cosignatures."""


class ForkError(InvalidArgument):
    """Two checkpoints of one log that cannot both be true: the log forked or was rewritten."""


def log_origin(broker_id: str) -> str:
    """The checkpoint origin (and log key name) of a broker."""
    return f"sealed-notice-broker/{broker_id}"


def witness_name(agency_id: str) -> str:
    """The key name an agency cosigns under: its party URI."""
    return Party("agency", agency_id).uri()


def witness_verifier(agency_id: str, signing_key: bytes) -> Verifier:
    """The cosigner (type 0x04) verifier of an agency's CA-bound Ed25519 signing key."""
    return Verifier(witness_name(agency_id), signing_key, SIG_TYPE_COSIGNATURE_V1)


@dataclass(frozen=True)
class VerifiedCheckpoint:
    checkpoint: Checkpoint
    note: str  # the whole signed note as received
    cosigners: tuple[str, ...]  # names of trusted witnesses whose cosignatures verified
    cosigned_at: int = 0  # unix seconds of the newest trusted cosignature (0: none)

    @property
    def text(self) -> str:
        return format_checkpoint(self.checkpoint)


def open_log_checkpoint(
    note: str,
    log_verifier: Verifier,
    *,
    origin: str | None = None,
    witnesses: Sequence[Verifier] = (),
    min_cosignatures: int = 0,
    pq_verifier: PQVerifier | None = None,
) -> VerifiedCheckpoint:
    """Verify a signed checkpoint; return it with the names of the witnesses that cosigned.

    Raises CheckpointError when the note is malformed, the log's signature is
    missing or wrong, the origin is not `origin`, a signature from a known key
    fails, or fewer than `min_cosignatures` trusted witnesses cosigned; with
    `pq_verifier` (the hybrid log key's ML-DSA-65 half) also when its line is
    missing or does not verify.
    """
    if log_verifier.sig_type != SIG_TYPE_ED25519:
        raise CheckpointError("the log key must be an Ed25519 (type 0x01) verifier key")
    if any(w.sig_type != SIG_TYPE_COSIGNATURE_V1 for w in witnesses):
        raise CheckpointError("witness keys must be cosigner (type 0x04) keys")
    try:
        cp, opened = open_checkpoint(note, [log_verifier, *witnesses])
    except NoteError as exc:
        raise CheckpointError(f"checkpoint does not verify: {exc}") from None
    signed_by_log = any(
        s.name == log_verifier.name and s.key_id == log_verifier.key_id for s in opened.signatures
    )
    if not signed_by_log:
        raise CheckpointError(f"checkpoint is not signed by the log key {log_verifier.name}")
    if pq_verifier is not None:
        try:
            require_pq_signature(opened, pq_verifier)
        except NoteError as exc:
            raise CheckpointError(f"checkpoint does not verify: {exc}") from None
    if origin is not None and cp.origin != origin:
        raise CheckpointError(f"checkpoint origin is {cp.origin!r}, expected {origin!r}")
    witness_ids = {(w.name, w.key_id) for w in witnesses}
    cosigners = tuple(
        sorted(s.name for s in opened.signatures if (s.name, s.key_id) in witness_ids)
    )
    if len(cosigners) < min_cosignatures:
        raise CheckpointError(
            f"checkpoint {cp.size} has {len(cosigners)} trusted cosignature(s); "
            f"{min_cosignatures} required"
        )
    cosigned_at = max(
        (
            s.timestamp or 0
            for s in opened.signatures
            if (s.name, s.key_id) in witness_ids and s.timestamp is not None
        ),
        default=0,
    )
    return VerifiedCheckpoint(cp, note, cosigners, cosigned_at)


def consistency_sizes(kept_size: int, new_size: int) -> tuple[int, int] | None:
    """The (old, new) sizes of the consistency proof that relates two checkpoints, if any."""
    lo, hi = sorted((kept_size, new_size))
    if lo in (0, hi):
        return None
    return lo, hi


def check_consistency(kept: Checkpoint, new: Checkpoint, proof: Sequence[bytes]) -> str:
    """Relate the checkpoint seen now to the one kept; return SAME, EXTENDS or OLDER.

    `proof` is the consistency proof for :func:`consistency_sizes` (empty when
    that is None). Raises ForkError, saying what does not hold.
    """
    heads = f"kept {kept.size} {kept.root.hex()[:16]}…, new {new.size} {new.root.hex()[:16]}…"
    if kept.origin != new.origin:
        raise ForkError(f"checkpoint is from log {new.origin!r}, not {kept.origin!r}")
    if kept.size == new.size:
        if kept.root != new.root:
            raise ForkError(
                f"FORK: two checkpoints of size {new.size} with different roots ({heads})"
            )
        return SAME
    old, cur = (kept, new) if kept.size < new.size else (new, kept)
    if old.size == 0:
        if old.root != empty_root():
            raise ForkError(f"checkpoint of size 0 does not carry the empty root ({heads})")
    else:
        try:
            verify_consistency(old.size, cur.size, old.root, cur.root, proof)
        except ProofError as exc:
            raise ForkError(
                f"FORK: checkpoint {new.size} is not consistent with checkpoint {kept.size} "
                f"({exc}; {heads})"
            ) from None
    return EXTENDS if new.size > kept.size else OLDER
