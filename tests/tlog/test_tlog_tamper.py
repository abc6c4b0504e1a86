"""Altered proofs must fail: every single-bit flip, wrong sizes and indices, swapped roots, truncated
or extended proofs and wrong leaves raise `RootMismatchError` or `InvalidProofError`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.errors import VerificationError
from ledger.tlog.errors import InvalidProofError, RootMismatchError
from ledger.tlog.hashing import EMPTY_ROOT, leaf_hash
from ledger.tlog.proofs import verify_consistency, verify_inclusion

REJECTED = (RootMismatchError, InvalidProofError)
BIG = 4096  # conftest.BIG_TREE_SIZE
HYPO = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
OTHER = leaf_hash(b"not in the tree")

INCLUSION_CASES = [
    (0, 1), (0, 2), (1, 2), (2, 3), (0, 3), (0, 8), (5, 8), (7, 8), (6, 7), (4, 5), (12, 13),
    (0, 64), (63, 64), (64, 65), (100, 255), (254, 255), (255, 256), (256, 257), (1000, 4095),
    (2048, 4095), (4094, 4095),
]  # fmt: skip
CONSISTENCY_CASES = [
    (1, 2), (1, 8), (2, 5), (3, 7), (4, 8), (6, 8), (6, 7), (7, 8), (8, 9), (63, 64), (64, 65),
    (100, 300), (255, 256), (256, 257), (1000, 4095), (2048, 4095), (4094, 4095), (1, 4095),
]  # fmt: skip


def flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def every_bit_flip(proof: list[bytes]) -> Iterator[list[bytes]]:
    for i, h in enumerate(proof):
        for bit in range(len(h) * 8):
            yield [*proof[:i], flip(h, bit), *proof[i + 1 :]]


def reordered(proof: list[bytes]) -> Iterator[list[bytes]]:
    if len(proof) > 1:
        yield proof[::-1]
        for i in range(len(proof) - 1):
            yield [*proof[:i], proof[i + 1], proof[i], *proof[i + 2 :]]


def malformed_elements(proof: list[bytes]) -> Iterator[list[bytes]]:
    for i, h in enumerate(proof):
        for bad in (h[:-1], h + b"\x00", b"", h.hex().encode()):
            yield [*proof[:i], bad, *proof[i + 1 :]]


def truncated_and_extended(proof: list[bytes], root: bytes) -> Iterator[list[bytes]]:
    if proof:
        yield proof[:-1]
        yield proof[1:]
        yield [proof[0], *proof]
        yield [*proof, proof[-1]]
    for extra in (b"\x00" * 32, root, EMPTY_ROOT, OTHER, b"", b"\x00" * 31, b"\x00" * 33):
        yield [*proof, extra]
        yield [extra, *proof]
        if len(proof) > 1:
            yield [proof[0], extra, *proof[1:]]


def assert_all_rejected(
    verify: Callable[[list[bytes]], None], proofs: Iterator[list[bytes]], error: type[VerificationError]
) -> int:
    count = 0
    for p in proofs:
        with pytest.raises(error):
            verify(p)
        count += 1
    return count


def test_both_errors_are_verification_errors() -> None:
    assert issubclass(RootMismatchError, VerificationError)
    assert issubclass(InvalidProofError, VerificationError)
    e = RootMismatchError(b"\x01" * 32, b"\x02" * 32)
    assert e.expected == b"\x01" * 32
    assert e.calculated == b"\x02" * 32
    assert e.extra == {"expected": "01" * 32, "calculated": "02" * 32}


# --- inclusion ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("index", "size"), INCLUSION_CASES)
def test_inclusion_tampering(big_tree: Any, index: int, size: int) -> None:
    leaf, root = big_tree.leaf_hashes[index], big_tree.roots[size]
    proof = big_tree.inclusion_proof(index, size)
    verify_inclusion(index, size, leaf, proof, root)

    def with_proof(p: list[bytes]) -> None:
        verify_inclusion(index, size, leaf, p, root)

    # Same length: the proof is well formed and leads elsewhere. Other lengths: malformed.
    flips = assert_all_rejected(with_proof, every_bit_flip(proof), RootMismatchError)
    assert flips == 256 * len(proof)
    assert_all_rejected(with_proof, reordered(proof), RootMismatchError)
    assert_all_rejected(with_proof, truncated_and_extended(proof, root), InvalidProofError)
    assert_all_rejected(with_proof, malformed_elements(proof), InvalidProofError)

    # Wrong leaf: every bit flip, a neighbour's leaf hash; or not a hash at all.
    wrong_leaves = [flip(leaf, bit) for bit in range(256)] + [OTHER]
    wrong_leaves += [big_tree.leaf_hashes[j] for j in (index - 1, index + 1) if 0 <= j < size]
    for wrong in wrong_leaves:
        with pytest.raises(RootMismatchError):
            verify_inclusion(index, size, wrong, proof, root)
    for not_a_hash in (big_tree.data[index], b"", leaf + b"\x00", leaf[:-1]):
        with pytest.raises(InvalidProofError):
            verify_inclusion(index, size, not_a_hash, proof, root)

    # Wrong root: every bit flip, swapped in the tree's other roots.
    for wrong in [flip(root, bit) for bit in range(256)] + [big_tree.roots[size - 1], EMPTY_ROOT]:
        with pytest.raises(RootMismatchError):
            verify_inclusion(index, size, leaf, proof, wrong)

    # Wrong index, within and outside the tree.
    for wrong_index in {index - 1, index + 1, index ^ 1, index ^ 2, size, -1, size + index}:
        if wrong_index != index:
            with pytest.raises(REJECTED):
                verify_inclusion(wrong_index, size, leaf, proof, root)

    # Wrong size, checked against that size's own root as a verifier holding its checkpoint would.
    for wrong_size in (size - 1, size + 1, size * 2, size // 2, size + 64):
        if 0 < wrong_size <= BIG and wrong_size != size:
            with pytest.raises(REJECTED):
                verify_inclusion(index, wrong_size, leaf, proof, big_tree.roots[wrong_size])
    with pytest.raises(InvalidProofError):
        verify_inclusion(index, index, leaf, proof, root)  # size must exceed index
    with pytest.raises(InvalidProofError):
        verify_inclusion(index, 0, leaf, proof, root)


def test_inclusion_proof_does_not_bind_the_size_alone(big_tree: Any) -> None:
    # RFC 9162 2.1.3.2 only uses the size to shape the path: PATH(0, D[3]) and PATH(0, D[4]) have the
    # same shape, so the size-3 proof and root "verify" at size 4. What commits to the size is the
    # root, which is why callers must take (size, root) from one signed checkpoint.
    proof = big_tree.inclusion_proof(0, 3)
    verify_inclusion(0, 4, big_tree.leaf_hashes[0], proof, big_tree.roots[3])
    with pytest.raises(RootMismatchError):
        verify_inclusion(0, 4, big_tree.leaf_hashes[0], proof, big_tree.roots[4])


@settings(HYPO, max_examples=200)
@given(data=st.data())
def test_random_inclusion_bit_flip(big_tree: Any, data: Any) -> None:
    size = data.draw(st.integers(2, BIG), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = big_tree.inclusion_proof(index, size)
    element = data.draw(st.integers(0, len(proof)), label="element")  # len(proof): the leaf hash
    bit = data.draw(st.integers(0, 255), label="bit")
    leaf = big_tree.leaf_hashes[index]
    if element == len(proof):
        leaf = flip(leaf, bit)
    else:
        proof[element] = flip(proof[element], bit)
    with pytest.raises(RootMismatchError):
        verify_inclusion(index, size, leaf, proof, big_tree.roots[size])


@settings(HYPO, max_examples=200)
@given(data=st.data())
def test_random_inclusion_at_another_position(big_tree: Any, data: Any) -> None:
    size = data.draw(st.integers(2, BIG), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index), label="other")
    proof = big_tree.inclusion_proof(index, size)
    with pytest.raises(REJECTED):
        verify_inclusion(other, size, big_tree.leaf_hashes[index], proof, big_tree.roots[size])


# --- consistency ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("first", "second"), CONSISTENCY_CASES)
def test_consistency_tampering(big_tree: Any, first: int, second: int) -> None:
    r1, r2 = big_tree.roots[first], big_tree.roots[second]
    proof = big_tree.consistency_proof(first, second)
    verify_consistency(first, second, r1, r2, proof)

    def with_proof(p: list[bytes]) -> None:
        verify_consistency(first, second, r1, r2, p)

    flips = assert_all_rejected(with_proof, every_bit_flip(proof), RootMismatchError)
    assert flips == 256 * len(proof)
    assert_all_rejected(with_proof, reordered(proof), RootMismatchError)
    assert_all_rejected(with_proof, truncated_and_extended(proof, r2), InvalidProofError)
    assert_all_rejected(with_proof, malformed_elements(proof), InvalidProofError)
    with pytest.raises(InvalidProofError):
        verify_consistency(first, second, r1, r2, [])

    # Wrong roots: every bit flip in either, swapped, or both replaced by another tree's roots.
    for bit in range(256):
        with pytest.raises(REJECTED):
            verify_consistency(first, second, flip(r1, bit), r2, proof)
        with pytest.raises(REJECTED):
            verify_consistency(first, second, r1, flip(r2, bit), proof)
    with pytest.raises(REJECTED):
        verify_consistency(first, second, r2, r1, proof)
    with pytest.raises(REJECTED):
        verify_consistency(first, second, r1, r1, proof)
    with pytest.raises(REJECTED):
        verify_consistency(first, second, r2, r2, proof)
    with pytest.raises(InvalidProofError):
        verify_consistency(second, first, r2, r1, proof)

    # Wrong first size, with the claimed roots or that size's own root.
    for wrong in (first - 1, first + 1, first * 2, first // 2):
        if wrong != first and 0 <= wrong <= second:
            with pytest.raises(REJECTED):
                verify_consistency(wrong, second, r1, r2, proof)
            with pytest.raises(REJECTED):
                verify_consistency(wrong, second, big_tree.roots[wrong], r2, proof)
    # Wrong second size, checked against that size's own root.
    for wrong in (second - 1, second + 1, second * 2, second + 64):
        if wrong != second and first <= wrong <= BIG:
            with pytest.raises(REJECTED):
                verify_consistency(first, wrong, r1, big_tree.roots[wrong], proof)


@settings(HYPO, max_examples=200)
@given(data=st.data())
def test_random_consistency_bit_flip(big_tree: Any, data: Any) -> None:
    second = data.draw(st.integers(2, BIG), label="second")
    first = data.draw(st.integers(1, second - 1), label="first")
    proof = big_tree.consistency_proof(first, second)
    roots = [big_tree.roots[first], big_tree.roots[second]]
    element = data.draw(st.integers(0, len(proof) + 1), label="element")  # +0, +1: the two roots
    bit = data.draw(st.integers(0, 255), label="bit")
    if element < len(proof):
        proof[element] = flip(proof[element], bit)
    else:
        roots[element - len(proof)] = flip(roots[element - len(proof)], bit)
    with pytest.raises(RootMismatchError):
        verify_consistency(first, second, roots[0], roots[1], proof)


@settings(HYPO, max_examples=150)
@given(data=st.data())
def test_random_consistency_with_wrong_sizes(big_tree: Any, data: Any) -> None:
    second = data.draw(st.integers(2, BIG), label="second")
    first = data.draw(st.integers(1, second - 1), label="first")
    proof = big_tree.consistency_proof(first, second)
    wrong_second = data.draw(st.integers(2, BIG), label="wrong_second")
    wrong_first = data.draw(st.integers(1, wrong_second - 1), label="wrong_first")
    if (wrong_first, wrong_second) == (first, second):
        return
    with pytest.raises(REJECTED):
        verify_consistency(
            wrong_first, wrong_second, big_tree.roots[wrong_first], big_tree.roots[wrong_second], proof
        )
