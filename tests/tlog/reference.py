"""A slow reference of RFC 9162 section 2.1, written from the recursive definitions only.

Nothing here imports `ledger`: it exists to cross-check the iterative code in `ledger.tlog` (compact
ranges, proof plans, verifiers) against the spec text. Inputs are the leaf *data* D[0:n], exactly as
the RFC states them; every function recomputes subtree hashes from scratch, so it is quadratic-ish
and only fit for tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def largest_power_of_two_below(n: int) -> int:
    """RFC 9162 2.1.1: k is the largest power of two smaller than n (requires n > 1)."""
    assert n > 1
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: Sequence[bytes]) -> bytes:
    """RFC 9162 2.1.1: the Merkle Tree Hash of the list of leaf data D[n]."""
    n = len(d)
    if n == 0:
        # MTH({}) = SHA-256()
        return _sha256(b"")
    if n == 1:
        # MTH({d(0)}) = SHA-256(0x00 || d(0))
        return _sha256(b"\x00" + d[0])
    k = largest_power_of_two_below(n)
    # MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))
    return _sha256(b"\x01" + mth(d[:k]) + mth(d[k:]))


def path(m: int, d: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1: PATH(m, D[n]), the inclusion proof of leaf m (requires 0 <= m < n)."""
    n = len(d)
    assert 0 <= m < n
    if n == 1:
        # PATH(0, {d(0)}) = {}
        return []
    k = largest_power_of_two_below(n)
    if m < k:
        # PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])
        return [*path(m, d[:k]), mth(d[k:])]
    # PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k])
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    """RFC 9162 2.1.4.1: SUBPROOF(m, D[n], b) (requires 0 < m <= n)."""
    n = len(d)
    assert 0 < m <= n
    if m == n:
        # SUBPROOF(m, D[m], true) = {}; SUBPROOF(m, D[m], false) = {MTH(D[m])}
        return [] if b else [mth(d)]
    k = largest_power_of_two_below(n)
    if m <= k:
        # SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
        return [*subproof(m, d[:k], b), mth(d[k:])]
    # SUBPROOF(m, D[n], b) = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 2.1.4.1: PROOF(m, D[n]) = SUBPROOF(m, D[n], true), for 0 < m <= n."""
    return subproof(m, d, True)
