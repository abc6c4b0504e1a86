"""Errors of the pure transparency-log layer."""

from __future__ import annotations

from ledger.errors import VerificationError


class InvalidProofError(VerificationError):
    """A proof is malformed for the sizes it claims (wrong length, bad indices)."""


class RootMismatchError(VerificationError):
    """A proof is well formed but leads to a different root than the expected one."""

    def __init__(self, expected: bytes, calculated: bytes) -> None:
        super().__init__(
            f"calculated root {calculated.hex()} does not match expected root {expected.hex()}",
            expected=expected.hex(),
            calculated=calculated.hex(),
        )
        self.expected = expected
        self.calculated = calculated


class InvalidCheckpointError(VerificationError):
    """A checkpoint or signed note is malformed, or its signature does not verify."""


class InvalidEntryError(VerificationError):
    """An entry header or payload does not match its digests."""
