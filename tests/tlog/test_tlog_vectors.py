"""Known-answer tests: RFC 6962/9162 vectors of transparency-dev/merkle (Apache-2.0, see
tests/vectors/transparency-dev-merkle/README.md) against `ledger.tlog.hashing`, `.tree` and `.proofs`."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from ledger.errors import VerificationError
from ledger.tlog.errors import InvalidProofError, RootMismatchError
from ledger.tlog.hashing import EMPTY_ROOT, leaf_hash, node_hash
from ledger.tlog.proofs import verify_consistency, verify_inclusion
from ledger.tlog.tree import CompactRange, NodeId, ProofPlan, fold_range, inclusion_ranges, range_nodes
from tlog import reference

MERKLE = Path(__file__).resolve().parents[1] / "vectors" / "transparency-dev-merkle"
INCLUSION_PROBES = sorted((MERKLE / "inclusion").rglob("*.json"))
CONSISTENCY_PROBES = sorted((MERKLE / "consistency").rglob("*.json"))

# Where transparency-dev/merkle rejects a probe and ledger.tlog does not. merkle treats any
# consistency proof from size 0 as an error ("meaningless"); ledger.tlog deliberately accepts the
# empty tree as a prefix of every tree (verify_consistency: "Requires 0 <= first <= second").
ACCEPTED_BY_DESIGN = {
    # 0 -> 1 with root1 = SHA-256() (the real empty root) and an empty proof: sound to accept.
    "consistency/additional/size1-is-zero-and-size2-is-not-zero.json",
}

# a checkpoint of size 0 with any other root is consistent with nothing.

def _b(value: str | None) -> bytes:
    # Go marshals nil []byte as null and empty ones as "".
    return base64.b64decode(value) if value else b""


def _proof(values: list[str] | None) -> list[bytes]:
    return [_b(v) for v in values or []]


def _probe_params(paths: list[Path]) -> list[Any]:
    params = []
    for p in paths:
        rel = p.relative_to(MERKLE).as_posix()
        marks = []
        params.append(pytest.param(p, id=rel, marks=marks))
    return params


def _unhex(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


# --- RFC 6962 hasher known answers (merkle rfc6962/rfc6962_test.go) ---------------------------


def test_empty_root_is_sha256_of_nothing(merkle_reference: Any) -> None:
    want = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert merkle_reference["hasher"]["empty_root"] == want
    assert EMPTY_ROOT.hex() == want
    assert CompactRange().root().hex() == want
    assert fold_range([]).hex() == want


def test_leaf_hash_of_empty_string(merkle_reference: Any) -> None:
    want = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert merkle_reference["hasher"]["empty_leaf"]["leaf_hash"] == want
    assert leaf_hash(b"").hex() == want
    # The empty tree and the tree holding one empty leaf must differ (domain separation).
    assert leaf_hash(b"") != EMPTY_ROOT


def test_leaf_and_node_known_answers(merkle_reference: Any) -> None:
    kat = merkle_reference["hasher"]
    assert leaf_hash(bytes.fromhex(kat["leaf"]["data_hex"])).hex() == kat["leaf"]["leaf_hash"]
    node = kat["node"]
    left, right = bytes.fromhex(node["left_hex"]), bytes.fromhex(node["right_hex"])
    assert node_hash(left, right).hex() == node["node_hash"]
    # Same answers computed straight from the RFC 6962 definitions.
    assert kat["leaf"]["leaf_hash"] == hashlib.sha256(b"\x00L123456").hexdigest()
    assert node["node_hash"] == hashlib.sha256(b"\x01N123N456").hexdigest()


def test_node_hash_is_ordered_and_not_a_leaf_hash() -> None:
    a, b = leaf_hash(b"Hello"), leaf_hash(b"World")
    assert node_hash(a, b) != node_hash(b, a)
    assert node_hash(a, b) != leaf_hash(a + b)


# --- merkle testonly reference tree (8 leaves) -------------------------------------------------


def test_reference_tree_node_hashes(merkle_reference: Any, reference_tree: Any) -> None:
    levels = merkle_reference["reference_tree"]["node_hashes_by_level"]
    want = {NodeId(level, i): bytes.fromhex(h) for level, row in enumerate(levels) for i, h in enumerate(row)}
    # CompactRange.append returned exactly the perfect subtrees of the 8-leaf tree, with these hashes.
    assert dict(reference_tree.nodes) == want


def test_reference_tree_roots_by_size(merkle_reference: Any, reference_tree: Any) -> None:
    want = _unhex(merkle_reference["reference_tree"]["root_hashes_by_size"])
    assert len(want) == 9
    assert list(reference_tree.roots) == want
    data = reference_tree.data
    for n, root in enumerate(want):
        assert reference.mth(data[:n]) == root, f"reference MTH disagrees with merkle at size {n}"


def test_reference_tree_compact_range_resumes(merkle_reference: Any, reference_tree: Any) -> None:
    want = _unhex(merkle_reference["reference_tree"]["root_hashes_by_size"])
    for n in range(len(want)):
        # merkle testonly.CompactTrees(): the hashes of range_nodes(0, n) in the reference tree.
        resumed = CompactRange(n, [reference_tree.nodes[node] for node in range_nodes(0, n)])
        assert resumed.root() == want[n]
        for d in reference_tree.data[n:]:
            resumed.append_data(d)
        assert resumed.root() == want[-1]


def _reference_cases(kind: str, first: str, second: str) -> list[Any]:
    data = json.loads((MERKLE / "reference-trees.json").read_text(encoding="utf-8"))
    return [pytest.param(c, id=f"{c[first]}:{c[second]}") for c in data["reference_tree"][kind]]


@pytest.mark.parametrize("case", _reference_cases("inclusion_proofs", "index", "size"))
def test_reference_inclusion_proof(case: Any, reference_tree: Any) -> None:
    index, size, want = case["index"], case["size"], _unhex(case["proof"])
    assert reference_tree.inclusion_proof(index, size) == want
    assert reference.path(index, reference_tree.data[:size]) == want
    verify_inclusion(index, size, reference_tree.leaf_hashes[index], want, reference_tree.roots[size])


@pytest.mark.parametrize("case", _reference_cases("consistency_proofs", "size1", "size2"))
def test_reference_consistency_proof(case: Any, reference_tree: Any) -> None:
    first, second, want = case["size1"], case["size2"], _unhex(case["proof"])
    assert reference_tree.consistency_proof(first, second) == want
    assert reference.proof(first, reference_tree.data[:second]) == want
    verify_consistency(first, second, reference_tree.roots[first], reference_tree.roots[second], want)


# --- merkle testdata/ probes --------------------------------------------------------------------


def test_probe_files_are_present() -> None:
    assert len(INCLUSION_PROBES) == 98
    assert len(CONSISTENCY_PROBES) == 98


@pytest.mark.parametrize("path", _probe_params(INCLUSION_PROBES))
def test_inclusion_probe(path: Path) -> None:
    p = json.loads(path.read_text(encoding="utf-8"))
    args = (p["leafIdx"], p["treeSize"], _b(p["leafHash"]), _proof(p["proof"]), _b(p["root"]))
    if p["wantErr"]:
        with pytest.raises((RootMismatchError, InvalidProofError)):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", _probe_params(CONSISTENCY_PROBES))
def test_consistency_probe(path: Path) -> None:
    p = json.loads(path.read_text(encoding="utf-8"))
    args = (p["size1"], p["size2"], _b(p["root1"]), _b(p["root2"]), _proof(p["proof"]))
    if p["wantErr"] and path.relative_to(MERKLE).as_posix() not in ACCEPTED_BY_DESIGN:
        with pytest.raises((RootMismatchError, InvalidProofError)):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_empty_tree_consistency_accepts_only_an_empty_proof() -> None:
    # The ledger's documented choice (ACCEPTED_BY_DESIGN above), pinned so that it is visible.
    verify_consistency(0, 5, EMPTY_ROOT, b"\x07" * 32, [])
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(InvalidProofError):
        verify_consistency(0, 5, EMPTY_ROOT, b"\x07" * 32, [EMPTY_ROOT])


def test_regression_consistency_from_size_zero_ignores_first_root() -> None:
    with pytest.raises(VerificationError):
        verify_consistency(0, 5, b"\x01" * 32, b"\x07" * 32, [])
    with pytest.raises(VerificationError):
        verify_consistency(0, 0, b"\x01" * 32, b"\x01" * 32, [])


def _happy(paths: list[Path]) -> list[Any]:
    return [
        pytest.param(p, id=p.relative_to(MERKLE).as_posix())
        for p in paths
        if p.name == "happy-path.json" and p.parent.name.isdigit()
    ]


@pytest.mark.parametrize("path", _happy(INCLUSION_PROBES))
def test_generated_inclusion_proof_equals_probe(path: Path, reference_tree: Any) -> None:
    p = json.loads(path.read_text(encoding="utf-8"))
    index, size = p["leafIdx"], p["treeSize"]
    assert _b(p["leafHash"]) == reference_tree.leaf_hashes[index]
    assert _b(p["root"]) == reference_tree.roots[size]
    assert reference_tree.inclusion_proof(index, size) == _proof(p["proof"])


@pytest.mark.parametrize("path", _happy(CONSISTENCY_PROBES))
def test_generated_consistency_proof_equals_probe(path: Path, reference_tree: Any) -> None:
    p = json.loads(path.read_text(encoding="utf-8"))
    first, second = p["size1"], p["size2"]
    assert _b(p["root1"]) == reference_tree.roots[first]
    assert _b(p["root2"]) == reference_tree.roots[second]
    assert reference_tree.consistency_proof(first, second) == _proof(p["proof"])


def test_happy_paths_cover_every_numbered_probe_dir() -> None:
    assert len(_happy(INCLUSION_PROBES)) == 5
    assert len(_happy(CONSISTENCY_PROBES)) == 5


def test_single_entry_probe_matches_our_leaf_hash(tree_builder: Any) -> None:
    p = json.loads((MERKLE / "inclusion" / "single-entry" / "matching-root-and-leaf.json").read_text())
    assert _b(p["leafHash"]) == leaf_hash(b"data") == tree_builder([b"data"]).roots[1]


# --- draft-ietf-plants-merkle-tree-certs subtree vectors (via merkle testonly/vectors_test.go) ----


def _subtree_is_valid(start: int, end: int) -> bool:
    # merkle testonly.isSubtreeValid: start == 0, or empty, or start a multiple of bit_ceil(end - start).
    if start in (0, end):
        return True
    bit_ceil = 1 << (end - start - 1).bit_length()
    return start % bit_ceil == 0


def test_subtree_hash_vector(merkle_reference: Any, tree_builder: Any) -> None:
    vec = merkle_reference["subtree_vectors"]
    n = vec["max_size"]
    tree = tree_builder(bytes([i]) for i in range(n))
    rolling = hashlib.sha256()
    for end in range(n + 1):
        for start in range(end + 1):
            if _subtree_is_valid(start, end):
                h = fold_range([tree.nodes[node] for node in range_nodes(start, end)])
                rolling.update(f"[{start}, {end}) {h.hex()}\n".encode())
    assert rolling.hexdigest() == vec["subtree_hashes_sha256"]


def test_subtree_inclusion_proof_vector(merkle_reference: Any, tree_builder: Any) -> None:
    # A subtree inclusion proof is PATH(index - start, D[start:end]); for start == 0 these are all
    # the inclusion proofs of every tree of size <= 130, generated by inclusion_ranges + ProofPlan.
    vec = merkle_reference["subtree_vectors"]
    n = vec["max_size"]
    tree = tree_builder(bytes([i]) for i in range(n))
    rolling = hashlib.sha256()
    for end in range(n + 1):
        for start in range(end + 1):
            if not _subtree_is_valid(start, end):
                continue
            for index in range(start, end):
                ranges = [(b + start, e + start) for b, e in inclusion_ranges(index - start, end - start)]
                proof = ProofPlan.of(ranges).assemble(tree.nodes)
                line = f"{index} [{start}, {end})" + "".join(f" {h.hex()}" for h in proof) + "\n"
                rolling.update(line.encode())
    assert rolling.hexdigest() == vec["subtree_inclusion_proofs_sha256"]
