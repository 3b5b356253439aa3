"""RFC 9162 (Certificate Transparency 2.0, same hashing as RFC 6962) Merkle trees.

Pure functions over SHA-256: leaf and node hashing (section 2.1.1), the tree
hash of a list of leaves, inclusion proofs (2.1.3) and consistency proofs
(2.1.4) with their verification algorithms (2.1.3.2 and 2.1.4.2).

Verification raises :class:`ProofError` for any proof that does not verify; it
never returns False, so a forgotten check cannot pass silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


class ProofError(ValueError):
    """A Merkle inclusion or consistency proof does not verify."""


def leaf_hash(data: bytes) -> bytes:
    """Return MTH of a single leaf: SHA-256(0x00 || data)."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the interior node hash SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def empty_root() -> bytes:
    """Return the root of the empty tree, SHA-256 of the empty string."""
    return hashlib.sha256(b"").digest()


def _split(n: int) -> int:
    """Largest power of two strictly less than n (n >= 2)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def root_from_hashes(hashes: Sequence[bytes]) -> bytes:
    """Return the tree head over already-hashed leaves (RFC 9162 2.1.1)."""
    n = len(hashes)
    if n == 0:
        return empty_root()
    level = list(hashes)
    # Bottom-up pairing gives the same tree as the recursive definition: an
    # unpaired last node is promoted unchanged to the next level.
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def root(leaves: Sequence[bytes]) -> bytes:
    """Return the tree head over raw leaf data."""
    return root_from_hashes([leaf_hash(d) for d in leaves])


def inclusion_proof(index: int, hashes: Sequence[bytes]) -> list[bytes]:
    """Return the audit path PATH(index, D[n]) over leaf hashes (RFC 9162 2.1.3.1).

    Raises ValueError when index is outside the tree.
    """
    n = len(hashes)
    if not 0 <= index < n:
        raise ValueError(f"leaf index {index} outside tree of size {n}")
    path: list[bytes] = []
    lo, hi, m = 0, n, index
    stack: list[bytes] = []
    while hi - lo > 1:
        k = _split(hi - lo)
        if m - lo < k:
            stack.append(root_from_hashes(hashes[lo + k : hi]))
            hi = lo + k
        else:
            stack.append(root_from_hashes(hashes[lo : lo + k]))
            lo = lo + k
    path.extend(reversed(stack))
    return path


def all_inclusion_proofs(hashes: Sequence[bytes]) -> list[list[bytes]]:
    """Return the audit path of every leaf, in O(n log n) hashing (RFC 9162 2.1.3.1).

    The same paths as calling inclusion_proof for each index, which costs O(n) each.
    """
    n = len(hashes)
    if n == 0:
        return []
    if n == 1:
        return [[]]
    k = _split(n)
    left, right = hashes[:k], hashes[k:]
    left_root, right_root = root_from_hashes(left), root_from_hashes(right)
    return [[*p, right_root] for p in all_inclusion_proofs(left)] + [
        [*p, left_root] for p in all_inclusion_proofs(right)
    ]


def consistency_proof(old_size: int, hashes: Sequence[bytes]) -> list[bytes]:
    """Return PROOF(m, D[n]) over leaf hashes (RFC 9162 2.1.4.1).

    Raises ValueError unless 0 < old_size <= len(hashes).
    """
    n = len(hashes)
    if not 0 < old_size <= n:
        raise ValueError(f"old size {old_size} invalid for tree of size {n}")
    return _subproof(old_size, hashes, complete=True)


def _subproof(m: int, hashes: Sequence[bytes], *, complete: bool) -> list[bytes]:
    n = len(hashes)
    if m == n:
        return [] if complete else [root_from_hashes(hashes)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, hashes[:k], complete=complete), root_from_hashes(hashes[k:])]
    return [*_subproof(m - k, hashes[k:], complete=False), root_from_hashes(hashes[:k])]


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """Recompute the root from a leaf hash and its audit path (RFC 9162 2.1.3.2).

    Raises ProofError when the proof has the wrong shape for (index, size).
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} outside tree of size {size}")
    if len(leaf) != HASH_SIZE or any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("hashes must be 32 bytes")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof too short")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """Check that leaf hash `leaf` sits at `index` in the tree of `size` with `expected_root`.

    Raises ProofError if it does not.
    """
    if root_from_inclusion(index, size, leaf, proof) != expected_root:
        raise ProofError("inclusion proof does not lead to the expected root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree (old_size, old_root) is a prefix of (new_size, new_root).

    Implements RFC 9162 2.1.4.2. Raises ProofError if it is not proven, including
    for old_size == 0 < new_size (no proof exists from the empty tree).
    """
    if old_size < 0 or new_size < old_size:
        raise ProofError(f"sizes {old_size} -> {new_size} cannot be consistent")
    if any(len(p) != HASH_SIZE for p in proof) or len(old_root) != HASH_SIZE:
        raise ProofError("hashes must be 32 bytes")
    if old_size == new_size:
        if proof:
            raise ProofError("proof must be empty for equal sizes")
        if old_root != new_root:
            raise ProofError("roots differ for equal sizes")
        return
    if old_size == 0:
        # RFC 9162 2.1.4 defines PROOF(m, D[n]) only for 0 < m; accepting size 0 would
        # "verify" without checking either root (transparency-dev/merkle rejects it too).
        raise ProofError("no consistency proof exists from the empty tree")
    if not proof:
        raise ProofError("empty consistency proof")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a subtree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof too short")
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root")
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root")
