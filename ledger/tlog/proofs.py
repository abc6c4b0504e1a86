"""RFC 9162 inclusion and consistency proof verification.

Compute and compare are split: `root_from_*` return the root a proof leads to (raising
`InvalidProofError` when the proof cannot be well formed for the sizes given), `verify_*` compare it
with the expected root and raise `RootMismatchError`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.tlog.errors import InvalidProofError, RootMismatchError
from ledger.tlog.hashing import EMPTY_ROOT, HASH_SIZE, node_hash


def _check_hashes(proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise InvalidProofError(f"proof hash {i} has {len(h)} bytes, expected {HASH_SIZE}")


def root_from_inclusion_proof(index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 2.1.3.2: the root that `proof` leads to from leaf `index` of a tree of `size`.

    Requires 0 <= index < size.
    """
    if not 0 <= index < size:
        raise InvalidProofError(f"index {index} is outside a tree of size {size}")
    if len(leaf_hash) != HASH_SIZE:
        raise InvalidProofError(f"leaf hash has {len(leaf_hash)} bytes")
    _check_hashes(proof)
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:  # 2.1.3.2 step 6.1: the proof is longer than the path
            raise InvalidProofError(f"inclusion proof for index {index} of size {size} is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:  # 2.1.3.2 step 7: the proof is shorter than the path
        raise InvalidProofError(f"inclusion proof for index {index} of size {size} is too short")
    return r


def verify_inclusion(index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raises unless `proof` shows leaf `index` with `leaf_hash` is in the tree of `size` with `root`."""
    calculated = root_from_inclusion_proof(index, size, leaf_hash, proof)
    if calculated != root:
        raise RootMismatchError(root, calculated)


def roots_from_consistency_proof(
    first: int, second: int, first_root: bytes, proof: Sequence[bytes]
) -> tuple[bytes, bytes]:
    """RFC 9162 2.1.4.2: the (first, second) roots that `proof` leads to.

    Requires 0 < first < second (equal or empty sizes need no proof and are handled by the caller,
    see `verify_consistency`).
    """
    if not 0 < first < second:
        raise InvalidProofError(f"consistency needs 0 < first < second, got {first}, {second}")
    if not proof:
        raise InvalidProofError(f"empty consistency proof from {first} to {second}")
    _check_hashes(proof)
    nodes = list(proof)
    # 2.1.4.2 step 2: if first is an exact power of 2, prepend first_hash to the proof.
    if first & (first - 1) == 0:
        nodes.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:  # step 4: right-shift both while LSB(fn) is set
        fn >>= 1
        sn >>= 1
    fr = sr = nodes[0]
    for c in nodes[1:]:
        if sn == 0:
            raise InvalidProofError(f"consistency proof {first}->{second} is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProofError(f"consistency proof {first}->{second} is too short")
    return fr, sr


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]) -> None:
    """Raises unless `proof` shows the tree of `first` leaves is a prefix of the tree of `second`.

    Requires 0 <= first <= second.
    """
    if not 0 <= first <= second:
        raise InvalidProofError(f"consistency needs 0 <= first <= second, got {first}, {second}")
    if first == 0:
        if proof:
            raise InvalidProofError("a consistency proof from the empty tree must be empty")
        if first_root != EMPTY_ROOT:  # RFC 9162 2.1.1: the empty tree has exactly one root
            raise RootMismatchError(EMPTY_ROOT, first_root)
        if second == 0 and second_root != EMPTY_ROOT:
            raise RootMismatchError(EMPTY_ROOT, second_root)
        return
    if first == second:
        if proof:
            raise InvalidProofError("a consistency proof between equal sizes must be empty")
        if first_root != second_root:
            raise RootMismatchError(second_root, first_root)
        return
    fr, sr = roots_from_consistency_proof(first, second, first_root, proof)
    if fr != first_root:
        raise RootMismatchError(first_root, fr)
    if sr != second_root:
        raise RootMismatchError(second_root, sr)
