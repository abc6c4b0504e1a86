"""The bulk export `ledger verify --url` reads: one line per entry, in seq order.

Line format (UTF-8; RFC 8785 output never contains a raw tab or newline, since JSON escapes every
control character): `<leaf hash hex> TAB <JCS(header)> TAB <salt hex | -> TAB <JCS(payload) | ->`.
A line without its payload (`-`) has a fifth field saying why (DESIGN.md 8, "Erased and withheld"):
`JCS({"erased": true, "erasure_seq": N})`, `JCS({"withheld": "<reason>"})`, or, for a payload absent
with no erasure entry naming it, `JCS({"missing": "..."})`, on which `ledger verify` fails.
The leaf hash is the one the stored tree holds, so a verifier can tell which entry differs from it.
Rows are read as plain tuples (no ORM objects); log rows are immutable, so each chunk is one
statement without a transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from sqlalchemy import select

from ledger.store.db import Database, chunks
from ledger.store.models import EntryPayload, LogEntry
from ledger.tlog.entry import EntryHeader, canonical_json

CHUNK = 20_000


class Gate(Protocol):
    """Says which payloads to leave out for the reader (ledger.security.visibility.PayloadGate)."""

    def withheld(self, conn: Any, entries: Any) -> dict[int, str]: ...


def export_lines(db: Database, start: int, end: int, *, gate: Gate | None = None) -> Iterator[bytes]:
    """Yields chunks of export lines for entries [start, end), reading CHUNK rows per query.

    A payload the `gate` withholds is exported like an erased one (`-`): its header still counts."""
    e = LogEntry.__table__.c  # type: ignore[attr-defined]
    p = EntryPayload.__table__.c  # type: ignore[attr-defined]
    columns = (
        e.seq,
        e.kind,
        e.subject,
        e.integrated_time,
        e.principal,
        e.payload_digest,
        e.leaf_hash,
        p.salt,
        p.payload,
    )
    pos = start
    while pos < end:
        upto = min(end, pos + CHUNK)
        q = (
            select(*columns)
            .select_from(LogEntry.__table__.outerjoin(EntryPayload.__table__, p.seq == e.seq))  # type: ignore[attr-defined]
            .where(e.seq >= pos, e.seq < upto)
            .order_by(e.seq)
        )
        parts: list[bytes] = []
        with db.statement() as conn:
            rows = conn.execute(q).all()
            hidden = gate.withheld(conn, ((r[0], r[1], r[8]) for r in rows)) if gate is not None else {}
            erasures = _erasures(conn, [r[0] for r in rows if r[8] is None])
            for seq, kind, subject, when, principal, digest, leaf, stored_salt, stored_payload in rows:
                salt, payload = (None, None) if seq in hidden else (stored_salt, stored_payload)
                header = EntryHeader(
                    seq=seq,
                    kind=kind,
                    subject=subject,
                    integrated_time=when,
                    principal=principal,
                    payload_digest=digest,
                )
                line = b"%s\t%s\t%s\t%s" % (
                    bytes(leaf).hex().encode(),
                    header.canonical(),
                    bytes(salt).hex().encode() if salt is not None else b"-",
                    payload.encode() if payload is not None else b"-",
                )
                if payload is None:
                    line += b"\t" + canonical_json(_absence(seq, hidden, erasures))
                parts.append(line + b"\n")
        yield b"".join(parts)
        pos = upto


def _absence(seq: int, hidden: dict[int, str], erasures: dict[int, int]) -> dict[str, Any]:
    if seq in erasures:
        return {"erased": True, "erasure_seq": erasures[seq]}
    if seq in hidden:
        return {"withheld": hidden[seq]}
    return {"missing": "the payload is absent, and no payload.erasure entry names this entry"}


def _erasures(conn: Any, seqs: list[int]) -> dict[int, int]:
    """seq -> the seq of the payload.erasure entry naming it."""
    e = LogEntry.__table__.c  # type: ignore[attr-defined]
    out: dict[int, int] = {}
    for part in chunks([f"entry:{s}" for s in seqs]):
        for seq, subject in conn.execute(
            select(e.seq, e.subject).where(e.kind == "payload.erasure", e.subject.in_(part))
        ).all():
            out.setdefault(int(subject.removeprefix("entry:")), int(seq))
    return out
