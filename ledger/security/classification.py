"""Data classification through lineage (DESIGN.md 6).

Effective tags of a dataset = its own tags (security classifications) and the tags pipelines declared
(`tags` facet), plus the effective tags of every dataset upstream of it (inputs of the jobs that write
it), minus the tags a security principal declassified for it. Propagation is incremental: a new tag
or a new lineage edge recomputes only the datasets downstream of the change, and stops where nothing
changes, never the whole graph.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from ledger.errors import NotFoundError
from ledger.lineage.models import Dataset, JobDataset
from ledger.security.models import Classification, DatasetTags
from ledger.tlog.entry import EntryHeader

# Tags whose data needs a clearance to read (access policy, redaction, intake violations).
SENSITIVE = frozenset({"pii", "phi", "confidential"})
MAX_PROPAGATION = 1_000_000


def declared_tags(facets: dict[str, Any]) -> list[str]:
    """Tags a pipeline declared in the OpenLineage `tags` dataset facet ({"tags": [{"key", "value"}]})."""
    facet = facets.get("tags")
    out: set[str] = set()
    if isinstance(facet, dict) and isinstance(facet.get("tags"), list):
        for t in facet["tags"]:
            if isinstance(t, dict) and isinstance(t.get("key"), str):
                key = t["key"].strip().lower()
                value = t.get("value")
                if key in ("classification", "tag") and isinstance(value, str):
                    out.add(value.strip().lower())
                elif key and (value in (None, True, "true", "yes", "1")):
                    out.add(key)
    return sorted(out)


def _upstream(session: Session, dataset_ids: Iterable[int]) -> dict[int, set[int]]:
    """For each dataset, the inputs of the jobs that write it."""
    ids = list(dataset_ids)
    out: dict[int, set[int]] = {i: set() for i in ids}
    if not ids:
        return out
    writers = session.execute(
        select(JobDataset.job_id, JobDataset.dataset_id).where(
            col(JobDataset.dataset_id).in_(ids), col(JobDataset.direction) == "out"
        )
    ).all()
    jobs = {j for j, _ in writers}
    inputs: dict[int, set[int]] = {}
    if jobs:
        for j, d in session.execute(
            select(JobDataset.job_id, JobDataset.dataset_id).where(
                col(JobDataset.job_id).in_(jobs), col(JobDataset.direction) == "in"
            )
        ):
            inputs.setdefault(j, set()).add(d)
    for j, d in writers:
        out[d] |= inputs.get(j, set())
    return out


def _downstream(session: Session, dataset_id: int) -> set[int]:
    readers = (
        session.execute(
            select(JobDataset.job_id).where(col(JobDataset.dataset_id) == dataset_id, col(JobDataset.direction) == "in")
        )
        .scalars()
        .all()
    )
    if not readers:
        return set()
    return set(
        session.execute(
            select(JobDataset.dataset_id).where(col(JobDataset.job_id).in_(readers), col(JobDataset.direction) == "out")
        ).scalars()
    )


def any_tags(session: Session) -> bool:
    return session.execute(select(DatasetTags.dataset_id).limit(1)).first() is not None


def propagate(session: Session, start: Iterable[int]) -> int:
    """Recomputes the effective tags of `start` and, where they change, of everything downstream.
    Returns how many datasets were recomputed (the incremental cost)."""
    queue = deque(dict.fromkeys(start))
    seen = 0
    while queue and seen < MAX_PROPAGATION:
        d = queue.popleft()
        seen += 1
        row = session.get(DatasetTags, d)
        ups = _upstream(session, [d])[d] - {d}
        up_rows = [session.get(DatasetTags, u) for u in ups]
        inherited = set().union(*(set(r.effective) for r in up_rows if r is not None))
        inherited_unapproved = set().union(*(set(r.unapproved) for r in up_rows if r is not None))
        own = set(row.own) if row else set()
        declared = set(row.declared) if row else set()
        dec = set(row.declassified) if row else set()
        classified_here = row is not None and row.classified
        effective = sorted((own | declared | inherited) - dec)
        unapproved = sorted(((set() if classified_here else declared - own) | inherited_unapproved) - dec - own)
        if row is None:
            if not effective:
                continue
            row = DatasetTags(dataset_id=d, effective=effective, unapproved=unapproved)
            session.add(row)
        elif row.effective == effective and row.unapproved == unapproved:
            continue  # nothing changed here: nothing changes downstream of here either
        else:
            row.effective, row.unapproved = effective, unapproved
        session.flush()
        queue.extend(_downstream(session, d))
    return seen


def record_declared(session: Session, dataset_id: int, facets: dict[str, Any]) -> bool:
    """Stores a dataset's pipeline-declared tags; True if they changed."""
    tags = declared_tags(facets)
    row = session.get(DatasetTags, dataset_id)
    if row is None:
        if not tags:
            return False
        session.add(DatasetTags(dataset_id=dataset_id, declared=tags))
        session.flush()
        return True
    if sorted(set(row.declared) | set(tags)) == row.declared:
        return False
    row.declared = sorted(set(row.declared) | set(tags))
    return True


def lookup_dataset(session: Session, namespace: str, name: str) -> Dataset | None:
    return session.execute(
        select(Dataset).where(col(Dataset.namespace) == namespace, col(Dataset.name) == name)
    ).scalar_one_or_none()


def find_dataset(session: Session, namespace: str, name: str) -> Dataset:
    d = lookup_dataset(session, namespace, name)
    if d is None:
        raise NotFoundError(f"dataset {namespace}:{name} is not recorded in the lineage", field="dataset")
    return d


def _dataset_for_classification(session: Session, namespace: str, name: str, h: EntryHeader) -> Dataset:
    """The classified dataset. A classification is refused for a dataset the lineage does not know, so
    one can be missing only in a replay after the erasure of the event that recorded it: the row is
    then made bare, and the tags hold for whatever later events say of that dataset."""
    d = lookup_dataset(session, namespace, name)
    if d is None:
        d = Dataset(
            namespace=namespace,
            name=name,
            facets={},
            created_at=h.integrated_time,
            updated_at=h.integrated_time,
            last_seq=h.seq,
        )
        session.add(d)
        session.flush()
    return d


def project_classifications(session: Session, entries: list[tuple[EntryHeader, Any]]) -> None:
    """Applies `dataset.classification` entries and propagates their effect downstream."""
    touched: list[int] = []
    for h, p in entries:
        if h.kind != "dataset.classification" or p is None:
            continue
        ns, name = p["dataset"]["namespace"], p["dataset"]["name"]
        d = _dataset_for_classification(session, ns, name, h)
        assert d.id is not None
        tags = sorted({t.lower() for t in p["tags"]})
        session.add(
            Classification(
                dataset_id=d.id,
                tags=tags,
                declassify=bool(p.get("declassify")),
                justification=p.get("justification") or "",
                principal=h.principal,
                recorded_at=h.integrated_time,
                seq=h.seq,
            )
        )
        row = session.get(DatasetTags, d.id)
        if row is None:
            row = DatasetTags(dataset_id=d.id)
            session.add(row)
        if p.get("declassify"):
            row.declassified = sorted(set(row.declassified) | set(tags))
            row.own = sorted(set(row.own) - set(tags))
        else:
            row.own = sorted(set(row.own) | set(tags))
            row.declassified = sorted(set(row.declassified) - set(tags))
        row.classified = True
        session.flush()
        touched.append(d.id)
    if touched:
        propagate(session, touched)


def effective_tags(session: Session, dataset_ids: Iterable[int]) -> dict[int, DatasetTags]:
    ids = list(dataset_ids)
    if not ids:
        return {}
    rows = session.execute(select(DatasetTags).where(col(DatasetTags.dataset_id).in_(ids))).scalars().all()
    return {r.dataset_id: r for r in rows}


def classifications_of(session: Session, dataset_ids: Iterable[int]) -> list[Classification]:
    ids = list(dataset_ids)
    if not ids:
        return []
    q = select(Classification).where(col(Classification.dataset_id).in_(ids)).order_by(col(Classification.seq))
    return list(session.execute(q).scalars())


def classify(
    ledger: Any, *, namespace: str, name: str, tags: list[str], justification: str, declassify: bool, principal: str
) -> tuple[dict[str, Any], Any]:
    """Records a `dataset.classification` entry (security role) and propagates it; returns the
    classification and the receipt."""
    from ledger.store.sequencer import AppendResult, PendingEntry

    payload = {
        "dataset": {"namespace": namespace, "name": name},
        "tags": sorted({t.lower() for t in tags}),
        "justification": justification,
        "declassify": declassify,
    }

    def build(session: Session) -> PendingEntry:
        find_dataset(session, namespace, name)
        return PendingEntry(
            kind="dataset.classification", subject=f"dataset:{namespace}:{name}", principal=principal, payload=payload
        )

    def project(session: Session, result: AppendResult) -> None:
        project_classifications(session, [(e.header, e.payload) for e in result.entries])

    _, receipts = ledger.append_built(build, project=project)
    with ledger.db.read() as session:
        d = find_dataset(session, namespace, name)
        row = session.get(DatasetTags, d.id)
        effective = row.effective if row else []
    return {**payload, "seq": receipts[0].seq, "effective_tags": effective}, receipts[0]
