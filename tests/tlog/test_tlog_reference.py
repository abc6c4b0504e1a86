"""Cross-checks of `ledger.tlog.tree` and `.proofs` against the recursive RFC 9162 2.1 reference in
`reference.py`, over every tree size up to 300 and sampled sizes up to 4096."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ledger.tlog.hashing import split_point
from ledger.tlog.proofs import (
    root_from_inclusion_proof,
    roots_from_consistency_proof,
    verify_consistency,
    verify_inclusion,
)
from ledger.tlog.tree import (
    CompactRange,
    NodeId,
    ProofPlan,
    consistency_ranges,
    inclusion_ranges,
    range_nodes,
    root_plan,
)
from tlog import reference

SMALL = 300
EXHAUSTIVE = 64
BIG = 4096  # conftest.BIG_TREE_SIZE

# Session fixtures are shared on purpose; hypothesis only warns about function-scoped ones.
HYPO = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def size_and_index(draw: Any, max_size: int, min_size: int = 1) -> tuple[int, int]:
    size = draw(st.integers(min_size, max_size))
    return size, draw(st.integers(0, size - 1))


@st.composite
def two_sizes(draw: Any, max_size: int, min_size: int = 1) -> tuple[int, int]:
    second = draw(st.integers(min_size, max_size))
    return draw(st.integers(1, second)), second


def test_split_point_is_rfc_k() -> None:
    for n in range(2, 2000):
        assert split_point(n) == reference.largest_power_of_two_below(n)
    with pytest.raises(ValueError):
        split_point(1)


def test_roots_for_every_size_up_to_300(big_tree: Any) -> None:
    for n in range(SMALL + 1):
        assert big_tree.roots[n] == reference.mth(big_tree.data[:n]), f"root of size {n}"


def test_root_plan_folds_to_the_root(big_tree: Any) -> None:
    for n in [*range(SMALL + 1), 1023, 1024, 1025, BIG - 1, BIG]:
        hashes = [big_tree.nodes[node] for node in root_plan(n)]
        assert ProofPlan.of([(0, n)]).assemble(big_tree.nodes) == [big_tree.roots[n]]
        assert CompactRange(n, hashes).root() == big_tree.roots[n]


def test_created_nodes_are_subtree_hashes(big_tree: Any) -> None:
    for node, h in big_tree.nodes.items():
        if node.end <= SMALL:
            assert h == reference.mth(big_tree.data[node.begin : node.end]), f"node {node}"


@settings(HYPO, max_examples=30)
@given(level=st.integers(0, 12), data=st.data())
def test_sampled_big_nodes_are_subtree_hashes(big_tree: Any, level: int, data: Any) -> None:
    node = NodeId(level, data.draw(st.integers(0, (BIG >> level) - 1)))
    assert big_tree.nodes[node] == reference.mth(big_tree.data[node.begin : node.end])


def test_every_proof_of_small_trees(big_tree: Any, tlog_ref: Any) -> None:
    for n in range(1, EXHAUSTIVE + 1):
        d, root = big_tree.data[:n], big_tree.roots[n]
        for m in range(n):
            got = big_tree.inclusion_proof(m, n)
            assert got == reference.path(m, d), f"PATH({m}, D[{n}])"
            verify_inclusion(m, n, big_tree.leaf_hashes[m], got, root)
            assert tlog_ref.verify_inclusion(m, n, big_tree.leaf_hashes[m], got, root)
        for m in range(1, n + 1):
            got = big_tree.consistency_proof(m, n)
            assert got == reference.proof(m, d), f"PROOF({m}, D[{n}])"
            verify_consistency(m, n, big_tree.roots[m], root, got)
            assert tlog_ref.verify_consistency(m, n, big_tree.roots[m], root, got)


@settings(HYPO, max_examples=150)
@given(case=size_and_index(SMALL))
@example(case=(SMALL, SMALL - 1))
@example(case=(256, 255))
@example(case=(257, 256))
def test_inclusion_matches_reference(big_tree: Any, tlog_ref: Any, case: tuple[int, int]) -> None:
    size, index = case
    got = big_tree.inclusion_proof(index, size)
    assert got == reference.path(index, big_tree.data[:size])
    assert root_from_inclusion_proof(index, size, big_tree.leaf_hashes[index], got) == big_tree.roots[size]
    verify_inclusion(index, size, big_tree.leaf_hashes[index], got, big_tree.roots[size])
    assert tlog_ref.verify_inclusion(index, size, big_tree.leaf_hashes[index], got, big_tree.roots[size])


@settings(HYPO, max_examples=60)
@given(case=size_and_index(BIG, min_size=SMALL))
@example(case=(BIG, BIG - 1))
@example(case=(BIG, 0))
@example(case=(BIG - 1, BIG - 2))
@example(case=(2049, 2048))
def test_inclusion_matches_reference_in_big_trees(big_tree: Any, case: tuple[int, int]) -> None:
    size, index = case
    got = big_tree.inclusion_proof(index, size)
    assert got == reference.path(index, big_tree.data[:size])
    verify_inclusion(index, size, big_tree.leaf_hashes[index], got, big_tree.roots[size])


@settings(HYPO, max_examples=150)
@given(case=two_sizes(SMALL))
@example(case=(SMALL, SMALL))
@example(case=(128, 129))
@example(case=(127, 128))
def test_consistency_matches_reference(big_tree: Any, tlog_ref: Any, case: tuple[int, int]) -> None:
    first, second = case
    got = big_tree.consistency_proof(first, second)
    assert got == reference.proof(first, big_tree.data[:second])
    r1, r2 = big_tree.roots[first], big_tree.roots[second]
    if first < second:
        assert roots_from_consistency_proof(first, second, r1, got) == (r1, r2)
    verify_consistency(first, second, r1, r2, got)
    assert tlog_ref.verify_consistency(first, second, r1, r2, got)


@settings(HYPO, max_examples=60)
@given(case=two_sizes(BIG, min_size=SMALL))
@example(case=(2048, BIG))
@example(case=(2047, 2049))
@example(case=(1, BIG))
@example(case=(BIG - 1, BIG))
def test_consistency_matches_reference_in_big_trees(big_tree: Any, case: tuple[int, int]) -> None:
    first, second = case
    got = big_tree.consistency_proof(first, second)
    assert got == reference.proof(first, big_tree.data[:second])
    verify_consistency(first, second, big_tree.roots[first], big_tree.roots[second], got)


@settings(HYPO, max_examples=60)
@given(leaves=st.lists(st.binary(max_size=48), min_size=1, max_size=70), data=st.data())
def test_arbitrary_leaf_data(tree_builder: Any, leaves: list[bytes], data: Any) -> None:
    tree = tree_builder(leaves)
    n = len(leaves)
    assert tree.roots[n] == reference.mth(leaves)
    index = data.draw(st.integers(0, n - 1), label="index")
    assert tree.inclusion_proof(index, n) == reference.path(index, leaves)
    verify_inclusion(index, n, tree.leaf_hashes[index], tree.inclusion_proof(index, n), tree.roots[n])
    first = data.draw(st.integers(1, n), label="first")
    assert tree.consistency_proof(first, n) == reference.proof(first, leaves)
    verify_consistency(first, n, tree.roots[first], tree.roots[n], tree.consistency_proof(first, n))


# --- CompactRange ---------------------------------------------------------------------------------


def _resume(big_tree: Any, size: int) -> CompactRange:
    return CompactRange(size, [big_tree.nodes[node] for node in range_nodes(0, size)])


def test_resumed_compact_range_equals_fresh_build(big_tree: Any) -> None:
    for start in range(SMALL + 1):
        resumed = _resume(big_tree, start)
        assert resumed.size == start
        assert resumed.root() == big_tree.roots[start]
        for i in range(start, min(start + 70, SMALL)):
            created = resumed.append_data(big_tree.data[i])
            # The same nodes, in the same order (the leaf first), as the fresh build created.
            assert created[0] == (NodeId(0, i), big_tree.leaf_hashes[i])
            assert all(big_tree.nodes[node] == h for node, h in created)
            assert [node.level for node, _ in created] == list(range(len(created)))
            assert resumed.root() == big_tree.roots[i + 1]


@settings(HYPO, max_examples=25)
@given(case=two_sizes(BIG))
def test_resumption_at_large_sizes(big_tree: Any, case: tuple[int, int]) -> None:
    start, end = case
    resumed = _resume(big_tree, start)
    for i in range(start, min(end, start + 300)):
        resumed.append(big_tree.leaf_hashes[i])
    assert resumed.root() == big_tree.roots[min(end, start + 300)]


def test_compact_range_needs_exactly_the_range_node_hashes() -> None:
    h = b"\x00" * 32
    CompactRange(0, [])
    CompactRange(6, [h, h])  # [0, 4) and [4, 6)
    for size, count in [(0, 1), (1, 0), (6, 1), (6, 3), (7, 2)]:
        with pytest.raises(ValueError):
            CompactRange(size, [h] * count)


def test_copy_is_independent(big_tree: Any) -> None:
    a = _resume(big_tree, 5)
    b = a.copy()
    b.append_data(big_tree.data[5])
    assert a.size == 5
    assert a.root() == big_tree.roots[5]
    assert b.root() == big_tree.roots[6]


# --- Node ids, ranges and plans -------------------------------------------------------------------


@given(level=st.integers(0, 63), index=st.integers(0, (1 << 48) - 1))
def test_node_id_packs_into_one_integer(level: int, index: int) -> None:
    node = NodeId(level, index)
    assert NodeId.from_int(node.as_int()) == node
    assert node.end - node.begin == 1 << level
    assert node.begin == index << level


@settings(max_examples=300)
@given(begin=st.integers(0, 1 << 40), length=st.integers(0, 1 << 20))
def test_range_nodes_cover_the_range_with_aligned_perfect_subtrees(begin: int, length: int) -> None:
    end = begin + length
    nodes = range_nodes(begin, end)
    pos = begin
    for node in nodes:
        assert node.begin == pos
        pos = node.end
    assert pos == end
    # At most two nodes per level (a rising then a falling staircase).
    assert len(nodes) <= 2 * max(1, length.bit_length())
    if begin == 0:
        levels = [n.level for n in nodes]
        assert levels == sorted(levels, reverse=True)
        assert len(set(levels)) == len(levels)


def test_range_nodes_rejects_bad_ranges() -> None:
    with pytest.raises(ValueError):
        range_nodes(5, 4)
    with pytest.raises(ValueError):
        range_nodes(-1, 4)


def test_ranges_reject_bad_arguments() -> None:
    for index, size in [(0, 0), (3, 3), (-1, 3)]:
        with pytest.raises(ValueError):
            inclusion_ranges(index, size)
    for first, second in [(4, 3), (-1, 3)]:
        with pytest.raises(ValueError):
            consistency_ranges(first, second)
    assert consistency_ranges(0, 5) == []
    assert consistency_ranges(5, 5) == []


def test_plan_needs_only_stored_nodes_and_fails_loudly_without_them(big_tree: Any) -> None:
    plan = ProofPlan.of(inclusion_ranges(5, 13))
    assert plan.needed() == {n for group in plan.nodes for n in group}
    assert plan.needed() <= set(big_tree.nodes)
    missing = dict(big_tree.nodes)
    del missing[next(iter(plan.needed()))]
    with pytest.raises(KeyError):
        plan.assemble(missing)
