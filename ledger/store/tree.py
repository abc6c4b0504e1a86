"""Reads of the stored tree: every root and proof at any size costs O(log n) node reads."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import func, select
from sqlmodel import Session, col

from ledger.errors import InvalidRequestError
from ledger.store.models import LogEntry, TreeNode
from ledger.tlog.tree import NodeId, ProofPlan, consistency_ranges, fold_range, inclusion_ranges, range_nodes


def tree_size(session: Session) -> int:
    top = session.execute(select(func.max(LogEntry.seq))).scalar_one_or_none()
    return 0 if top is None else int(top) + 1


def fetch_nodes(
    session: Session, ids: Iterable[NodeId], known: Mapping[NodeId, bytes] | None = None
) -> dict[NodeId, bytes]:
    """Looks up perfect-subtree hashes in one query (minus those already `known`)."""
    out: dict[NodeId, bytes] = dict(known or {})
    wanted = {n.as_int(): n for n in ids if n not in out}
    if wanted:
        rows = session.execute(
            select(col(TreeNode.node_id), col(TreeNode.hash)).where(col(TreeNode.node_id).in_(wanted))
        )
        for node_id, h in rows:
            out[wanted[node_id]] = bytes(h)
        missing = set(wanted) - {n.as_int() for n in out}
        if missing:
            raise LookupError(f"tree nodes missing from the store: {sorted(missing)[:5]}")
    return out


def root_at(session: Session, size: int) -> bytes:
    ids = range_nodes(0, size)
    nodes = fetch_nodes(session, ids)
    return fold_range([nodes[n] for n in ids])


def check_size(size: int, current: int, *, field: str = "tree_size") -> None:
    if size > current:
        raise InvalidRequestError(f"{field}={size} is larger than the log ({current} entries)", field=field)


def inclusion_proofs(
    session: Session, seqs: list[int], size: int, known: Mapping[NodeId, bytes] | None = None
) -> dict[int, list[bytes]]:
    """RFC 9162 inclusion proofs of each seq against the tree of `size`, with one node query.

    Proofs of neighbouring leaves share most of their ranges (all but the lowest levels), so each
    distinct range is planned and folded once: for a group of consecutive new leaves that is about
    two ranges per leaf instead of log2(size).
    """
    paths = {s: inclusion_ranges(s, size) for s in seqs}
    plans = {r: range_nodes(*r) for path in paths.values() for r in path}
    nodes = fetch_nodes(session, {n for ids in plans.values() for n in ids}, known)
    hashes = {r: fold_range([nodes[n] for n in ids]) for r, ids in plans.items()}
    return {s: [hashes[r] for r in path] for s, path in paths.items()}


def consistency_proof(session: Session, first: int, second: int) -> list[bytes]:
    plan = ProofPlan.of(consistency_ranges(first, second))
    return plan.assemble(fetch_nodes(session, plan.needed()))
