"""Shared fixtures for the pure transparency-log tests: vector paths, trees built with the real
`ledger.tlog.tree` code, and the independent reference verifier (tests/spec_ref.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ledger.tlog.tree import CompactRange, NodeId, ProofPlan, consistency_ranges, inclusion_ranges

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
MERKLE_VECTORS = VECTORS / "transparency-dev-merkle"

BIG_TREE_SIZE = 4096


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class BuiltTree:
    """A tree grown leaf by leaf with `CompactRange`, keeping every node it completed."""

    data: tuple[bytes, ...]
    leaf_hashes: tuple[bytes, ...]
    nodes: Mapping[NodeId, bytes]
    roots: tuple[bytes, ...]  # roots[n] is the root of the first n leaves, roots[0] the empty root

    @property
    def size(self) -> int:
        return len(self.data)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return ProofPlan.of(inclusion_ranges(index, size)).assemble(self.nodes)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        return ProofPlan.of(consistency_ranges(first, second)).assemble(self.nodes)


def build_tree(data: Iterable[bytes]) -> BuiltTree:
    data = tuple(data)
    tree = CompactRange()
    nodes: dict[NodeId, bytes] = {}
    roots = [tree.root()]
    for d in data:
        created = tree.append_data(d)
        for node, h in created:
            assert node not in nodes, f"node {node} created twice"
            nodes[node] = h
        roots.append(tree.root())
    leaf_hashes = tuple(nodes[NodeId(0, i)] for i in range(len(data)))
    return BuiltTree(data, leaf_hashes, nodes, tuple(roots))


def leaf_data(i: int) -> bytes:
    return f"leaf {i}".encode()


@pytest.fixture(scope="session")
def tree_builder() -> Callable[[Iterable[bytes]], BuiltTree]:
    return build_tree


@pytest.fixture(scope="session")
def merkle_reference() -> Any:
    """transparency-dev/merkle's reference data (testonly/constants.go and friends)."""
    return load_json(MERKLE_VECTORS / "reference-trees.json")


@pytest.fixture(scope="session")
def reference_tree(merkle_reference: Any) -> BuiltTree:
    """The 8-leaf tree of merkle's testonly.LeafInputs(), built with our code."""
    return build_tree(bytes.fromhex(h) for h in merkle_reference["reference_tree"]["leaf_inputs_hex"])


@pytest.fixture(scope="session")
def big_tree() -> BuiltTree:
    """A 4096-leaf tree; its nodes answer proofs for every size up to 4096."""
    return build_tree(leaf_data(i) for i in range(BIG_TREE_SIZE))


@pytest.fixture(scope="session")
def tlog_ref() -> ModuleType:
    """The independent reference verifier, written from the specs alone (tests/spec_ref.py)."""
    import spec_ref

    return spec_ref
