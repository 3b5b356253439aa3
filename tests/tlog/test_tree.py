"""broker.core.tlog: stored-subtree arithmetic agrees with the RFC 9162 definitions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core import merkle
from broker.core import tlog as tree


def hashes(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def build(leaves: list[bytes], batches: list[int]) -> dict[tree.Node, bytes]:
    """Append in the given batch sizes, each time from the frontier only."""
    nodes: dict[tree.Node, bytes] = {}
    size = 0
    for b in batches:
        chunk = leaves[size : size + b]
        known = {n: nodes[n] for n in tree.frontier(size)}
        nodes.update(tree.append(size, chunk, known))
        size += len(chunk)
    assert size == len(leaves)
    return nodes


LEAVES = hashes(130)
NODES = build(LEAVES, [1, 2, 3, 5, 8, 13, 21, 34, 43])


def test_frontier_is_the_binary_decomposition() -> None:
    assert tree.frontier(0) == []
    assert tree.frontier(1) == [(0, 0)]
    assert tree.frontier(6) == [(2, 0), (1, 2)]
    assert tree.frontier(13) == [(3, 0), (2, 2), (0, 12)]


def test_every_complete_subtree_is_stored_once() -> None:
    n = len(LEAVES)
    expected = {(lv, i) for lv in range(8) for i in range(n >> lv)}
    assert set(NODES) == expected
    for (level, index), h in NODES.items():
        lo = index << level
        assert h == merkle.root_from_hashes(LEAVES[lo : lo + (1 << level)])


@pytest.mark.parametrize("size", range(0, 131))
def test_root_matches(size: int) -> None:
    assert tree.root(size, NODES) == merkle.root_from_hashes(LEAVES[:size])


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 31, 64, 65, 100, 130])
def test_inclusion_proofs_match(size: int) -> None:
    for index in range(size):
        ranges = tree.inclusion_ranges(index, size)
        assert tree.hash_ranges(ranges, NODES) == merkle.inclusion_proof(index, LEAVES[:size])
        assert len(tree.nodes_for(ranges)) <= 2 * size.bit_length()


@pytest.mark.parametrize("size", [1, 2, 5, 8, 17, 64, 99, 130])
def test_consistency_proofs_match(size: int) -> None:
    for old in range(1, size + 1):
        ranges = tree.consistency_ranges(old, size)
        assert tree.hash_ranges(ranges, NODES) == merkle.consistency_proof(old, LEAVES[:size])


def test_extend_keeps_only_the_frontier() -> None:
    frontier: dict[tree.Node, bytes] = {}
    size = 0
    for step in (3, 1, 60, 66):
        frontier = tree.extend(size, frontier, LEAVES[size : size + step])
        size += step
        assert set(frontier) == set(tree.frontier(size))
        assert tree.root(size, frontier) == merkle.root_from_hashes(LEAVES[:size])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        tree.inclusion_ranges(5, 5)
    with pytest.raises(ValueError):
        tree.consistency_ranges(0, 5)
    with pytest.raises(ValueError):
        tree.consistency_ranges(6, 5)
    with pytest.raises(ValueError):
        tree.range_nodes(3, 2)
    with pytest.raises(KeyError):
        tree.append(3, LEAVES[3:4], {})  # the frontier is needed


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=12),
    data=st.data(),
)
def test_random_batches_give_the_same_tree(sizes: list[int], data: st.DataObject) -> None:
    n = sum(sizes)
    leaves = hashes(n)
    nodes = build(leaves, sizes)
    index = data.draw(st.integers(0, n - 1))
    old = data.draw(st.integers(1, n))
    assert tree.root(n, nodes) == merkle.root_from_hashes(leaves)
    proof = tree.hash_ranges(tree.inclusion_ranges(index, n), nodes)
    merkle.verify_inclusion(index, n, leaves[index], proof, tree.root(n, nodes))
    proof = tree.hash_ranges(tree.consistency_ranges(old, n), nodes)
    merkle.verify_consistency(old, n, tree.root(old, nodes), tree.root(n, nodes), proof)
