"""broker.core.auditing: trusting checkpoints, counting witnesses, telling forks apart."""

from __future__ import annotations

import pytest

from broker.core import auditing, merkle
from broker.core.checkpoint import (
    Checkpoint,
    Signer,
    cosign,
    format_checkpoint,
    sign_note,
)

LOG = Signer(auditing.log_origin("broker"), bytes(range(32)))
OTHER = Signer(auditing.log_origin("broker"), bytes(range(1, 33)))
WITNESS_SEEDS = {"EU-HUB": b"\x07" * 32, "DE-BKA": b"\x08" * 32}
WITNESSES = {
    a: auditing.witness_verifier(a, Signer("x", seed).verifier.public_key)
    for a, seed in WITNESS_SEEDS.items()
}
LEAVES = [merkle.leaf_hash(bytes([i])) for i in range(20)]


def checkpoint(size: int, leaves: list[bytes] = LEAVES) -> Checkpoint:
    return Checkpoint(LOG.name, size, merkle.root_from_hashes(leaves[:size]))


def signed(cp: Checkpoint, signer: Signer = LOG, *witnesses: str) -> str:
    text = format_checkpoint(cp)
    note = sign_note(text, signer.name, signer.seed)
    for w in witnesses:
        note += cosign(text, auditing.witness_name(w), WITNESS_SEEDS[w], 1_700_000_000) + "\n"
    return note


def test_opens_a_checkpoint_signed_by_the_log() -> None:
    got = auditing.open_log_checkpoint(signed(checkpoint(5)), LOG.verifier, origin=LOG.name)
    assert got.checkpoint == checkpoint(5)
    assert got.cosigners == ()
    assert got.text == format_checkpoint(checkpoint(5))


def test_refuses_another_key_and_another_origin() -> None:
    with pytest.raises(auditing.CheckpointError, match=r"known key|not signed"):
        auditing.open_log_checkpoint(signed(checkpoint(5), OTHER), LOG.verifier)
    stranger = Signer("elsewhere", LOG.seed)
    note = signed(Checkpoint("elsewhere", 5, checkpoint(5).root), stranger)
    with pytest.raises(auditing.CheckpointError):
        auditing.open_log_checkpoint(note, LOG.verifier)
    note = sign_note(
        format_checkpoint(Checkpoint("x/y", 5, checkpoint(5).root)), LOG.name, LOG.seed
    )
    with pytest.raises(auditing.CheckpointError, match="origin"):
        auditing.open_log_checkpoint(note, LOG.verifier, origin=LOG.name)


def test_a_tampered_note_does_not_verify() -> None:
    note = signed(checkpoint(5)).replace("\n5\n", "\n6\n", 1)
    with pytest.raises(auditing.CheckpointError):
        auditing.open_log_checkpoint(note, LOG.verifier)


def test_counts_trusted_cosignatures() -> None:
    note = signed(checkpoint(7), LOG, "EU-HUB", "DE-BKA")
    both = list(WITNESSES.values())
    got = auditing.open_log_checkpoint(note, LOG.verifier, witnesses=both, min_cosignatures=2)
    assert got.cosigners == ("urn:broker:agency:DE-BKA", "urn:broker:agency:EU-HUB")
    only_hub = [WITNESSES["EU-HUB"]]
    with pytest.raises(auditing.CheckpointError, match="1 trusted cosignature"):
        auditing.open_log_checkpoint(note, LOG.verifier, witnesses=only_hub, min_cosignatures=2)
    # a cosignature over another checkpoint is a bad signature from a known key
    other = signed(checkpoint(8), LOG)
    forged = (
        other
        + cosign(
            format_checkpoint(checkpoint(7)), "urn:broker:agency:EU-HUB", WITNESS_SEEDS["EU-HUB"], 1
        )
        + "\n"
    )
    with pytest.raises(auditing.CheckpointError, match="invalid cosignature"):
        auditing.open_log_checkpoint(forged, LOG.verifier, witnesses=only_hub)


def proof(old: int, new: int, leaves: list[bytes] = LEAVES) -> list[bytes]:
    sizes = auditing.consistency_sizes(old, new)
    return [] if sizes is None else merkle.consistency_proof(sizes[0], leaves[: sizes[1]])


@pytest.mark.parametrize(
    ("kept", "new", "verdict"),
    [
        (5, 5, auditing.SAME),
        (5, 12, auditing.EXTENDS),
        (12, 5, auditing.OLDER),
        (0, 4, auditing.EXTENDS),
    ],
)
def test_consistent_checkpoints(kept: int, new: int, verdict: str) -> None:
    got = auditing.check_consistency(checkpoint(kept), checkpoint(new), proof(kept, new))
    assert got == verdict


def test_forks_are_caught() -> None:
    forked = [*LEAVES[:3], merkle.leaf_hash(b"rewritten"), *LEAVES[4:]]
    with pytest.raises(auditing.ForkError, match="FORK: two checkpoints of size 10"):
        auditing.check_consistency(checkpoint(10), checkpoint(10, forked), [])
    with pytest.raises(auditing.ForkError, match="not consistent"):
        auditing.check_consistency(checkpoint(6), checkpoint(15, forked), proof(6, 15, forked))
    with pytest.raises(auditing.ForkError, match="not consistent"):
        auditing.check_consistency(checkpoint(15), checkpoint(6, forked), proof(6, 15))
    with pytest.raises(auditing.ForkError, match="empty root"):
        auditing.check_consistency(Checkpoint(LOG.name, 0, b"\x01" * 32), checkpoint(3), [])
    with pytest.raises(auditing.ForkError, match="from log"):
        auditing.check_consistency(checkpoint(3), Checkpoint("other", 3, checkpoint(3).root), [])
