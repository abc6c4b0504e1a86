"""Pure transparency-log math and formats: no I/O, no clock, no database.

RFC 9162 hashing and proofs, C2SP checkpoints in signed notes, and the entry encoding of DESIGN.md 3.
"""

from ledger.tlog.entry import EntryHeader, canonical_json, format_time, payload_digest
from ledger.tlog.errors import InvalidCheckpointError, InvalidEntryError, InvalidProofError, RootMismatchError
from ledger.tlog.hashing import EMPTY_ROOT, leaf_hash, node_hash
from ledger.tlog.note import Checkpoint, NoteSigner, NoteVerifier
from ledger.tlog.proofs import verify_consistency, verify_inclusion
from ledger.tlog.tree import CompactRange, NodeId, ProofPlan

__all__ = [
    "EMPTY_ROOT",
    "Checkpoint",
    "CompactRange",
    "EntryHeader",
    "InvalidCheckpointError",
    "InvalidEntryError",
    "InvalidProofError",
    "NodeId",
    "NoteSigner",
    "NoteVerifier",
    "ProofPlan",
    "RootMismatchError",
    "canonical_json",
    "format_time",
    "leaf_hash",
    "node_hash",
    "payload_digest",
    "verify_consistency",
    "verify_inclusion",
]
