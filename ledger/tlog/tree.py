"""Merkle tree structure (RFC 9162 2.1) in terms of perfect subtrees.

A `NodeId(level, index)` names the perfect subtree over leaves `[index * 2**level, (index + 1) * 2**level)`.
Every hash a proof or a root needs is the Merkle Tree Hash of a range that decomposes into at most
O(log n) perfect subtrees, so a store that keeps every perfect subtree's hash answers any proof or
root at any size with O(log n) reads. The functions here only plan which nodes are needed and fold
their hashes; they do no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ledger.tlog.hashing import EMPTY_ROOT, leaf_hash, node_hash, split_point

# A node id fits one signed 64-bit integer: level in the top bits, index below.
INDEX_BITS = 48


@dataclass(frozen=True, order=True, slots=True)
class NodeId:
    """The perfect subtree of height `level` at position `index` on that level."""

    level: int
    index: int

    @property
    def begin(self) -> int:
        return self.index << self.level

    @property
    def end(self) -> int:
        return (self.index + 1) << self.level

    def as_int(self) -> int:
        """Packs the id into one integer (the storage key)."""
        return (self.level << INDEX_BITS) | self.index

    @staticmethod
    def from_int(value: int) -> NodeId:
        return NodeId(value >> INDEX_BITS, value & ((1 << INDEX_BITS) - 1))


def range_nodes(begin: int, end: int) -> list[NodeId]:
    """The maximal aligned perfect subtrees covering `[begin, end)`, left to right.

    Requires 0 <= begin <= end. For the ranges RFC 9162 proofs use (left-aligned, as produced by
    its recursive split) the sizes are strictly decreasing, and `fold_range` gives their MTH.
    """
    if not 0 <= begin <= end:
        raise ValueError(f"bad range [{begin}, {end})")
    nodes: list[NodeId] = []
    while begin < end:
        # The largest power of two that both divides `begin` and fits in the rest of the range.
        level = (end - begin).bit_length() - 1
        if begin:
            level = min(level, (begin & -begin).bit_length() - 1)
        nodes.append(NodeId(level, begin >> level))
        begin += 1 << level
    return nodes


def fold_range(hashes: Sequence[bytes]) -> bytes:
    """MTH of a left-aligned range from the hashes of its `range_nodes`, folding right to left.

    RFC 9162 2.1.1: MTH(D[n]) = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n])), and D[0:k] is perfect.
    """
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose MTHs form PATH(index, D[size]) (RFC 9162 2.1.3.1), leaf side first.

    Requires 0 <= index < size.
    """
    if not 0 <= index < size:
        raise ValueError(f"inclusion proof needs 0 <= index < size, got index={index} size={size}")
    path: list[tuple[int, int]] = []
    begin, end = 0, size
    while end - begin > 1:
        k = split_point(end - begin)
        if index < begin + k:  # PATH(m, D[0:k]) : MTH(D[k:n])
            path.append((begin + k, end))
            end = begin + k
        else:  # PATH(m - k, D[k:n]) : MTH(D[0:k])
            path.append((begin, begin + k))
            begin += k
    path.reverse()
    return path


def consistency_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """The ranges whose MTHs form PROOF(first, D[second]) (RFC 9162 2.1.4.1).

    Requires 0 <= first <= second. The proof is empty when first is 0 or equals second.
    """
    if not 0 <= first <= second:
        raise ValueError(f"consistency proof needs 0 <= first <= second, got {first}, {second}")
    if first in (0, second):
        return []
    proof: list[tuple[int, int]] = []
    begin, end, whole = 0, second, True
    while True:
        if first == end:  # SUBPROOF(m, D[m], b): [] if b else [MTH(D[m])]
            if not whole:
                proof.append((begin, end))
            break
        k = split_point(end - begin)
        if first - begin <= k:  # SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            proof.append((begin + k, end))
            end = begin + k
        else:  # SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            proof.append((begin, begin + k))
            begin += k
            whole = False
    proof.reverse()
    return proof


@dataclass(frozen=True)
class ProofPlan:
    """Which stored nodes a set of proof elements needs, and how to fold them."""

    ranges: tuple[tuple[int, int], ...]
    nodes: tuple[tuple[NodeId, ...], ...]

    @staticmethod
    def of(ranges: Iterable[tuple[int, int]]) -> ProofPlan:
        rs = tuple(ranges)
        return ProofPlan(rs, tuple(tuple(range_nodes(b, e)) for b, e in rs))

    def needed(self) -> set[NodeId]:
        return {n for group in self.nodes for n in group}

    def assemble(self, hashes: Mapping[NodeId, bytes]) -> list[bytes]:
        """Folds each range from the looked-up node hashes (KeyError if one is missing)."""
        return [fold_range([hashes[n] for n in group]) for group in self.nodes]


def root_plan(size: int) -> list[NodeId]:
    """The nodes whose fold is the root of the tree of `size` leaves."""
    return range_nodes(0, size)


class CompactRange:
    """The right edge of a growing tree: O(log n) perfect-subtree hashes covering [0, size).

    Appending a leaf returns the perfect subtrees it completes, which is exactly what a store must
    persist to answer proofs later.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        """Starts from a tree of `size` leaves given the hashes of `range_nodes(0, size)`."""
        if len(hashes) != len(range_nodes(0, size)):
            raise ValueError(f"a compact range of size {size} needs {len(range_nodes(0, size))} hashes")
        self._size = size
        self._hashes = list(hashes)

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> list[tuple[NodeId, bytes]]:
        """Adds one leaf hash; returns every newly completed node, the leaf (level 0) first."""
        index = self._size
        created = [(NodeId(0, index), leaf)]
        acc = leaf
        level = 0
        # Each trailing 1 bit of the old size is a left sibling that now completes a parent.
        while (index >> level) & 1:
            acc = node_hash(self._hashes.pop(), acc)
            level += 1
            created.append((NodeId(level, index >> level), acc))
        self._hashes.append(acc)
        self._size += 1
        return created

    def append_data(self, data: bytes) -> list[tuple[NodeId, bytes]]:
        return self.append(leaf_hash(data))

    def root(self) -> bytes:
        return fold_range(self._hashes)

    def copy(self) -> CompactRange:
        return CompactRange(self._size, self._hashes)
