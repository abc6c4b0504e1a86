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

from sqlalchemy import select, tuple_
from sqlmodel import Session, col

from ledger.errors import NotFoundError
from ledger.lineage.events import LINEAGE_KINDS, mentioned_datasets
from ledger.lineage.models import Dataset, Job, JobDataset
from ledger.security.models import Classification, DatasetTags
from ledger.store.db import chunks
from ledger.store.ledger import Ledger, Receipt
from ledger.store.projector import Projector
from ledger.store.sequencer import PendingEntry
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


def project_tags(session: Session, entries: list[tuple[EntryHeader, Any]]) -> None:
    """The classification projection: security classifications, pipeline-declared tags and their
    propagation along lineage edges. It runs after the lineage projection of the same entries, whose
    tables it reads; effective tags are a fixpoint of the graph, so the batches they come in make no
    difference (a rebuild ends where following the log did)."""
    start: dict[int, None] = dict.fromkeys(_lineage_starts(session, entries))
    start.update(dict.fromkeys(_apply_classifications(session, entries)))
    if start:
        propagate(session, start)


def _lineage_starts(session: Session, entries: list[tuple[EntryHeader, Any]]) -> list[int]:
    """Datasets whose effective tags lineage entries may have changed: those whose declared tags
    changed, and every output of a job these entries mention (it may have gained an input)."""
    mentioned: set[tuple[str, str]] = set()
    jobs: set[tuple[str, str]] = set()
    for h, p in entries:
        if h.kind not in LINEAGE_KINDS or p is None:
            continue
        mentioned |= mentioned_datasets(h.kind, p)
        job = p.get("job")
        if isinstance(job, dict):
            jobs.add((job["namespace"], job["name"]))
    if not mentioned:
        return []
    starts: list[int] = []
    for batch in chunks(sorted(mentioned)):
        for d in session.execute(
            select(Dataset).where(tuple_(col(Dataset.namespace), col(Dataset.name)).in_(batch))
        ).scalars():
            if "tags" in (d.facets or {}) and record_declared(session, d.id, d.facets):  # type: ignore[arg-type]
                starts.append(d.id)  # type: ignore[arg-type]
    if not starts and not any_tags(session):
        return []  # no tags anywhere: new edges carry nothing
    for batch in chunks(sorted(jobs)):
        job_ids = select(Job.id).where(tuple_(col(Job.namespace), col(Job.name)).in_(batch))
        starts += session.execute(
            select(JobDataset.dataset_id).where(col(JobDataset.job_id).in_(job_ids), col(JobDataset.direction) == "out")
        ).scalars()
    return starts


def _apply_classifications(session: Session, entries: list[tuple[EntryHeader, Any]]) -> list[int]:
    """Applies `dataset.classification` entries; returns the datasets they touched."""
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
    return touched


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
    ledger: Ledger,
    projector: Projector,
    *,
    namespace: str,
    name: str,
    tags: list[str],
    justification: str,
    declassify: bool,
    principal: str,
) -> tuple[dict[str, Any], Receipt]:
    """Records a `dataset.classification` entry (security role); returns the classification, with the
    effective tags once the projections have applied it, and the receipt."""
    payload = {
        "dataset": {"namespace": namespace, "name": name},
        "tags": sorted({t.lower() for t in tags}),
        "justification": justification,
        "declassify": declassify,
    }
    projector.sync_to_head()  # the dataset is checked on everything recorded before this request
    with ledger.db.read() as session:
        find_dataset(session, namespace, name)
    entry = PendingEntry(
        kind="dataset.classification", subject=f"dataset:{namespace}:{name}", principal=principal, payload=payload
    )
    _, receipts = ledger.append([entry])
    projector.sync(receipts[0].seq + 1)
    with ledger.db.read() as session:
        d = find_dataset(session, namespace, name)
        row = session.get(DatasetTags, d.id)
        effective = row.effective if row else []
    return {**payload, "seq": receipts[0].seq, "effective_tags": effective}, receipts[0]
