"""History rewritten in the database, as an attacker with the database would (issue 9): one entry's
payload replaced, with a new salt, digest and leaf, and every tree node above it recomputed, with the
append-only triggers bypassed and restored. The log's own tables then hold a consistent, different
tree; only a checkpoint seen before (stored, kept by a client, or held by a witness) shows the fork."""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

import rfc8785
from spec_ref import leaf_hash, mth
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection

from ledger.tlog.tree import NodeId

TABLES = ("log_entries", "entry_payloads", "tree_nodes", "checkpoints", "cosignatures")


def _unguarded(c: Connection, tables: tuple[str, ...]) -> list[tuple[str, str]]:
    if c.dialect.name == "postgresql":
        for t in tables:
            c.execute(text(f"ALTER TABLE {t} DISABLE TRIGGER USER"))
        return []
    triggers = [
        (name, ddl)
        for t in tables
        for name, ddl in c.execute(
            text("SELECT name, sql FROM sqlite_master WHERE type='trigger' AND tbl_name=:t"), {"t": t}
        ).all()
    ]
    for name, _ in triggers:
        c.execute(text(f"DROP TRIGGER {name}"))
    return triggers


def _guarded(c: Connection, tables: tuple[str, ...], triggers: list[tuple[str, str]]) -> None:
    if c.dialect.name == "postgresql":
        for t in tables:
            c.execute(text(f"ALTER TABLE {t} ENABLE TRIGGER USER"))
    for _, ddl in triggers:
        c.execute(text(ddl))


def rewrite_payload(database_url: str, seq: int, change: Any, *, drop_checkpoints: bool = False) -> None:
    """Replaces entry `seq`'s payload by `change(payload)`, re-salted, re-digested, re-leafed, and
    recomputes every stored tree node; with `drop_checkpoints`, also deletes the stored checkpoints
    and cosignatures (the log's own memory of what it signed: the check of point 3 bypassed)."""
    eng = create_engine(database_url)
    with eng.begin() as c:
        triggers = _unguarded(c, TABLES)
        row = c.execute(
            text("SELECT kind, subject, integrated_time, principal FROM log_entries WHERE seq = :s"), {"s": seq}
        ).one()
        payload = json.loads(
            c.execute(text("SELECT payload FROM entry_payloads WHERE seq = :s"), {"s": seq}).scalar_one()
        )
        new = change(payload)
        salt = secrets.token_bytes(32)
        canonical = rfc8785.dumps(new)

        digest = "sha256:" + hashlib.sha256(salt + canonical).hexdigest()
        header = {
            "format": "ledger-entry/v1",
            "seq": seq,
            "kind": row[0],
            "subject": row[1],
            "integrated_time": row[2],
            "principal": row[3],
            "payload_digest": digest,
        }
        leaf = leaf_hash(rfc8785.dumps(header))
        c.execute(
            text("UPDATE entry_payloads SET salt = :salt, payload = :p WHERE seq = :s"),
            {"salt": salt, "p": canonical.decode(), "s": seq},
        )
        c.execute(
            text("UPDATE log_entries SET payload_digest = :d, leaf_hash = :l WHERE seq = :s"),
            {"d": digest, "l": leaf, "s": seq},
        )
        leaves = [bytes(h) for (h,) in c.execute(text("SELECT leaf_hash FROM log_entries ORDER BY seq")).all()]
        for (node_id,) in c.execute(text("SELECT node_id FROM tree_nodes")).all():
            n = NodeId.from_int(int(node_id))
            c.execute(
                text("UPDATE tree_nodes SET hash = :h WHERE node_id = :n"),
                {"h": mth(leaves[n.begin : n.end]), "n": node_id},
            )
        if drop_checkpoints:
            c.execute(text("DELETE FROM checkpoints"))
            c.execute(text("DELETE FROM cosignatures"))
        _guarded(c, TABLES, triggers)
    eng.dispose()
