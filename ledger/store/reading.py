"""Reading the log: entries, sizes and proofs. Rows of the log are immutable, so reads take no lock."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from ledger.errors import InvalidRequestError, NotFoundError
from ledger.store.db import Database, chunks
from ledger.store.models import EntryPayload, LogEntry, TreeNode
from ledger.store.sequencer import header_from_row
from ledger.store.signing import Checkpoints, SignedCheckpoint
from ledger.store.tree import check_size, consistency_proof, inclusion_proofs, root_at, tree_size
from ledger.tlog.entry import EntryHeader
from ledger.tlog.tree import NodeId, ProofPlan, inclusion_ranges


@dataclass(frozen=True, kw_only=True)
class StoredEntry:
    header: EntryHeader
    leaf_hash: bytes
    payload: Any | None
    salt: bytes | None
    erasure_seq: int | None = None  # of the payload.erasure entry naming this one, once erased

    @property
    def erased(self) -> bool:
        return self.payload is None

    def to_json(self) -> dict[str, Any]:
        """DESIGN.md 8, "Erased and withheld": an erased payload carries `erased: true` and the seq of
        its erasure entry; a payload absent with no erasure entry naming it says so (`missing`)."""
        out: dict[str, Any] = {
            "header": self.header.to_json(),
            "payload": self.payload,
            "salt": self.salt.hex() if self.salt is not None else None,
            "leaf_hash": self.leaf_hash.hex(),
            "erased": self.erased and self.erasure_seq is not None,
        }
        if self.erased:
            if self.erasure_seq is not None:
                out["erasure_seq"] = self.erasure_seq
            else:
                out["missing"] = "the payload is absent, and no payload.erasure entry names this entry"
        return out


class LogReader:
    """Entries and proofs."""

    db: Database

    # --- reading -------------------------------------------------------------------------------

    def size(self) -> int:
        with self.db.read() as session:
            return tree_size(session)

    def entry(self, seq: int) -> StoredEntry:
        with self.db.read() as session:
            row = session.get(LogEntry, seq)
            if row is None:
                raise NotFoundError(f"no entry with seq {seq}", seq=seq)
            payload = session.get(EntryPayload, seq)
            return _stored(row, payload, erasure_seqs(session, [seq] if payload is None else []))

    def entries(
        self,
        *,
        kind: str | None = None,
        subject: str | None = None,
        after: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[StoredEntry]:
        """Entries in seq order (or newest first), filtered, starting after seq `after`."""
        with self.db.read() as session:
            q = select(LogEntry, EntryPayload).join(
                EntryPayload, col(EntryPayload.seq) == col(LogEntry.seq), isouter=True
            )
            if kind is not None:
                q = q.where(col(LogEntry.kind) == kind)
            if subject is not None:
                q = q.where(col(LogEntry.subject) == subject)
            if after is not None:
                q = q.where(col(LogEntry.seq) > after)
            order = col(LogEntry.seq).desc() if newest_first else col(LogEntry.seq)
            q = q.order_by(order).limit(limit)
            rows = session.execute(q).all()
            erasures = erasure_seqs(session, [e.seq for e, p in rows if p is None])
            return [_stored(e, p, erasures) for e, p in rows]

    def inclusion_proof(self, seq: int, size: int) -> tuple[bytes, list[bytes]]:
        """Leaf hash and RFC 9162 proof of `seq` in the tree of `size`, in one query.

        Nodes are immutable and committed with their leaves, and seq is gapless, so the leaf at
        size - 1 being present proves the tree of `size` exists; no transaction is needed.
        """
        if 0 <= seq < size:
            plan = ProofPlan.of(inclusion_ranges(seq, size))
            leaf, last = NodeId(0, seq), NodeId(0, size - 1)
            wanted = {n.as_int(): n for n in plan.needed() | {leaf, last}}
            with self.db.statement() as conn:
                rows = conn.execute(
                    select(col(TreeNode.node_id), col(TreeNode.hash)).where(col(TreeNode.node_id).in_(wanted))
                )
                nodes = {wanted[k]: bytes(h) for k, h in rows}
            if last in nodes:
                return nodes[leaf], plan.assemble(nodes)
        return self._checked_inclusion_proof(seq, size)

    def _checked_inclusion_proof(self, seq: int, size: int) -> tuple[bytes, list[bytes]]:
        with self.db.read() as session:
            current = tree_size(session)
            check_size(size, current)
            if not 0 <= seq < size:
                raise InvalidRequestError(f"seq={seq} is not in a tree of size {size}", field="seq")
            row = session.get(LogEntry, seq)
            assert row is not None
            return bytes(row.leaf_hash), inclusion_proofs(session, [seq], size)[seq]

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        with self.db.read() as session:
            check_size(second, tree_size(session), field="second")
            if first > second:
                raise InvalidRequestError(f"first={first} is larger than second={second}", field="first")
            return consistency_proof(session, first, second)


def erasure_seqs(session: Session, seqs: Sequence[int]) -> dict[int, int]:
    """seq -> the seq of the payload.erasure entry naming it, for those of `seqs` that one names."""
    out: dict[int, int] = {}
    for part in chunks([f"entry:{s}" for s in seqs]):
        rows = session.execute(
            select(col(LogEntry.seq), col(LogEntry.subject)).where(
                col(LogEntry.kind) == "payload.erasure", col(LogEntry.subject).in_(part)
            )
        )
        for seq, subject in rows:
            out.setdefault(int(subject.removeprefix("entry:")), int(seq))
    return out


def _stored(row: LogEntry, payload: EntryPayload | None, erasures: dict[int, int] | None = None) -> StoredEntry:
    return StoredEntry(
        header=header_from_row(row),
        leaf_hash=bytes(row.leaf_hash),
        payload=json.loads(payload.payload) if payload is not None else None,
        salt=bytes(payload.salt) if payload is not None else None,
        erasure_seq=(erasures or {}).get(row.seq) if payload is None else None,
    )


@dataclass(frozen=True)
class ProvenEntries:
    """Entries with inclusion proofs, all against one signed checkpoint."""

    checkpoint: SignedCheckpoint
    entries: dict[int, StoredEntry]
    proofs: dict[int, list[bytes]]
    verifier_key: str  # of the key that signed `checkpoint`


def prove_entries(ledger: Checkpoints, seqs: Sequence[int]) -> ProvenEntries:
    """Reads `seqs` and proves each, in one consistent read, against the largest witness-cosigned
    checkpoint that holds them all (its note carries the cosignatures), else against the current tree
    (once proven consistent with the last stored checkpoint)."""
    wanted = sorted(set(seqs))
    signer = ledger.signer  # one signer for the note and the verifier key the bundle names
    with ledger.db.read() as session:
        ledger.require_current_key(session, signer.verifier.key_id.hex())
        size = tree_size(session)
        root = root_at(session, size)
        ledger.require_consistent(session, size, root)
        missing = [s for s in wanted if s >= size]
        if missing:
            raise NotFoundError(f"entries {missing[:5]} are not in the log", seqs=missing[:20])
        cosigned = ledger.latest_cosigned(session, covering=wanted[-1] + 1 if wanted else 0)
        if cosigned is not None and root_at(session, cosigned.size) == cosigned.root:
            size, root = cosigned.size, cosigned.root
        else:
            cosigned = None
        rows = session.execute(
            select(LogEntry, EntryPayload)
            .join(EntryPayload, EntryPayload.seq == LogEntry.seq, isouter=True)  # type: ignore[arg-type]
            .where(LogEntry.seq.in_(wanted))  # type: ignore[attr-defined]
        ).all()
        erasures = erasure_seqs(session, [e.seq for e, p in rows if p is None])
        entries = {e.seq: _stored(e, p, erasures) for e, p in rows}
        proofs = inclusion_proofs(session, wanted, size) if wanted else {}
    note = cosigned.note if cosigned is not None else ledger._sign_cached(signer, size, root)
    return ProvenEntries(SignedCheckpoint(size=size, root=root, note=note), entries, proofs, signer.verifier.line())
