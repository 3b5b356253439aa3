"""RFC 9162 arithmetic over stored complete subtrees (pure).

A log keeps, for every complete subtree, its hash under a node address
``(level, index)``: the subtree over leaves ``[index * 2**level, (index + 1) * 2**level)``.
Level 0 holds the leaf hashes. A node is written once, when its last leaf is
appended, and never changes.

Every hash an RFC 9162 inclusion or consistency proof needs is the hash of a
leaf range ``[lo, hi)`` whose ``lo`` is aligned to a power of two at least
``hi - lo``; such a range splits into at most ``log2(n)`` complete subtrees,
and its hash is the right fold of theirs (RFC 9162 2.1.1). So a proof for any
leaf of an n-leaf log needs O(log n) stored nodes (:func:`inclusion_ranges`,
:func:`consistency_ranges`, :func:`nodes_for`, :func:`hash_ranges`), and an
append needs only the current frontier (:func:`frontier`, :func:`append`).

The results are checked against :mod:`broker.core.merkle` (the recursive
definitions) in tests/tlog.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from broker.core.merkle import empty_root, node_hash

Node = tuple[int, int]
"""(level, index): the complete subtree over leaves [index * 2**level, (index + 1) * 2**level)."""
Range = tuple[int, int]
"""[lo, hi): a range of leaves."""


def _split(n: int) -> int:
    """Largest power of two strictly less than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def frontier(size: int) -> list[Node]:
    """Return the complete subtrees whose concatenation is the tree of `size` leaves.

    Left to right (largest first): one per bit set in `size`. Their right fold
    is the root; appending needs no other node.
    """
    if size < 0:
        raise ValueError(f"tree size {size} is negative")
    nodes = []
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            nodes.append((level, (size >> level) - 1))
    return nodes


def append(
    size: int, leaf_hashes: Sequence[bytes], known: Mapping[Node, bytes]
) -> dict[Node, bytes]:
    """Return every node created by appending `leaf_hashes` to a tree of `size` leaves.

    `known` must hold the nodes of :func:`frontier` (size). The result holds
    the new leaves (level 0) and every complete subtree they complete.
    """
    created: dict[Node, bytes] = {}

    def get(node: Node) -> bytes:
        value = created.get(node)
        if value is None:
            value = known.get(node)
        if value is None:
            raise KeyError(f"node {node} is not in the frontier given")
        return value

    for offset, leaf in enumerate(leaf_hashes):
        index = size + offset
        created[(0, index)] = leaf
        level, i, h = 0, index, leaf
        while i & 1:
            h = node_hash(get((level, i - 1)), h)
            level, i = level + 1, i >> 1
            created[(level, i)] = h
    return created


def range_nodes(lo: int, hi: int) -> list[Node]:
    """Split [lo, hi) into maximal aligned complete subtrees, left to right."""
    if not 0 <= lo <= hi:
        raise ValueError(f"invalid leaf range [{lo}, {hi})")
    nodes = []
    while lo < hi:
        level = 0
        while lo % (2 << level) == 0 and lo + (2 << level) <= hi:
            level += 1
        nodes.append((level, lo >> level))
        lo += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """Right fold of subtree hashes: H(h0, H(h1, ... H(h_{k-2}, h_{k-1}))); empty: empty root."""
    if not hashes:
        return empty_root()
    value = hashes[-1]
    for h in reversed(hashes[:-1]):
        value = node_hash(h, value)
    return value


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """Return the ranges whose hashes form PATH(index, D[size]) in order (RFC 9162 2.1.3.1)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} outside tree of size {size}")
    lo, hi = 0, size
    stack: list[Range] = []
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            stack.append((lo + k, hi))
            hi = lo + k
        else:
            stack.append((lo, lo + k))
            lo += k
    return stack[::-1]


def consistency_ranges(old_size: int, new_size: int) -> list[Range]:
    """Return the ranges whose hashes form PROOF(old_size, D[new_size]) (RFC 9162 2.1.4.1).

    Raises ValueError unless 0 < old_size <= new_size.
    """
    if not 0 < old_size <= new_size:
        raise ValueError(f"old size {old_size} invalid for tree of size {new_size}")
    out: list[Range] = []

    def sub(m: int, lo: int, hi: int, complete: bool) -> None:
        n = hi - lo
        if m == n:
            if not complete:
                out.append((lo, hi))
            return
        k = _split(n)
        if m <= k:
            sub(m, lo, lo + k, complete)
            out.append((lo + k, hi))
        else:
            sub(m - k, lo + k, hi, False)
            out.append((lo, lo + k))

    sub(old_size, 0, new_size, True)
    return out


def nodes_for(ranges: Iterable[Range]) -> set[Node]:
    """Return the stored nodes the hashes of `ranges` need."""
    return {node for lo, hi in ranges for node in range_nodes(lo, hi)}


def hash_ranges(ranges: Iterable[Range], nodes: Mapping[Node, bytes]) -> list[bytes]:
    """Return the hash of each range from stored nodes (KeyError if one is missing)."""
    return [fold([nodes[n] for n in range_nodes(lo, hi)]) for lo, hi in ranges]


def root(size: int, nodes: Mapping[Node, bytes]) -> bytes:
    """Return the root of the tree of `size` leaves from its frontier nodes."""
    return fold([nodes[n] for n in frontier(size)])


def extend(
    size: int, known: Mapping[Node, bytes], leaf_hashes: Sequence[bytes]
) -> dict[Node, bytes]:
    """Return the frontier nodes of the tree after appending `leaf_hashes` to `size` leaves.

    For a monitor that checks entries incrementally: it keeps only a frontier.
    """
    created = append(size, leaf_hashes, known)
    new_size = size + len(leaf_hashes)
    merged = {**known, **created}
    return {node: merged[node] for node in frontier(new_size)}
