"""Marquez-compatible reads of the lineage projections (shapes follow Marquez's API v1)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text
from sqlmodel import Session

from ledger.errors import InvalidRequestError, NotFoundError
from ledger.lineage.models import Dataset, DatasetVersion, Job, JobDataset, Namespace, Run, RunDataset
from ledger.security.classification import SENSITIVE, effective_tags
from ledger.store.db import chunks
from ledger.tlog.entry import parse_time

MAX_DEPTH = 100


def namespace_json(n: Namespace) -> dict[str, Any]:
    return {
        "name": n.name,
        "createdAt": n.created_at,
        "updatedAt": n.updated_at,
        "ownerName": n.owner,
        "description": None,
        "isHidden": False,
    }


def _fields(facets: dict[str, Any]) -> list[dict[str, Any]]:
    schema = facets.get("schema")
    fields = schema.get("fields") if isinstance(schema, dict) else None
    if not isinstance(fields, list):
        return []
    return [
        {"name": f.get("name"), "type": f.get("type"), "tags": [], "description": f.get("description")}
        for f in fields
        if isinstance(f, dict)
    ]


# Facets that say where a dataset is, who owns it and how big it is, not what it holds: the only ones
# shown to a principal not cleared for its tags. Everything else is withheld, including facets this
# list does not know (custom ones): schema, columnLineage, dataQualityMetrics (column minimums and
# maximums are data), dataQualityAssertions, documentation, subset (partition values), dataSource
# (connection strings) and the rest.
STRUCTURE_FACETS = frozenset(
    {
        "version",
        "datasetVersion",
        "datasetType",
        "storage",
        "symlinks",
        "lifecycleStateChange",
        "ownership",
        "catalog",
        "tags",
        "inputStatistics",
        "outputStatistics",
    }
)


def redacted(facets: dict[str, Any], tags: list[str], clearances: frozenset[str] | None) -> dict[str, Any]:
    """The facets a principal with `clearances` may see (None: no redaction)."""
    missing = sorted((set(tags) & SENSITIVE) - (clearances or frozenset()))
    if clearances is None or not missing:
        return facets
    out = {k: v for k, v in facets.items() if k in STRUCTURE_FACETS}
    out["redacted"] = {"facets": sorted(k for k in facets if k not in STRUCTURE_FACETS), "missing_clearances": missing}
    return out


def dataset_json(d: Dataset, *, tags: Any = None, clearances: frozenset[str] | None = None) -> dict[str, Any]:
    effective = list(tags.effective) if tags is not None else []
    facets = redacted(d.facets, effective, clearances)
    return {
        "id": {"namespace": d.namespace, "name": d.name},
        "type": "DB_TABLE",
        "name": d.name,
        "physicalName": d.name,
        "createdAt": d.created_at,
        "updatedAt": d.updated_at,
        "namespace": d.namespace,
        "sourceName": d.namespace,
        "fields": _fields(facets),
        "tags": effective,
        "classification": {
            "effective": effective,
            "own": list(tags.own) if tags is not None else [],
            "declassified": list(tags.declassified) if tags is not None else [],
            "unapproved": list(tags.unapproved) if tags is not None else [],
        },
        "lastModifiedAt": d.updated_at,
        "description": None,
        "facets": facets,
        "currentVersion": d.current_version,
        "declaredSource": d.source,
        "deleted": False,
    }


def _duration_ms(start: str | None, end: str | None) -> int | None:
    a, b = parse_time(start), parse_time(end)
    if a is None or b is None:
        return None
    return int((b - a).total_seconds() * 1000)


def run_json(r: Run, job: Job | None, io: list[tuple[RunDataset, Dataset]] | None = None) -> dict[str, Any]:
    ios = io or []
    return {
        "id": r.run_id,
        "createdAt": r.started_at or r.updated_at,
        "updatedAt": r.updated_at,
        "nominalStartTime": None,
        "nominalEndTime": None,
        "state": r.state,
        "startedAt": r.started_at,
        "endedAt": r.ended_at,
        "durationMs": _duration_ms(r.started_at, r.ended_at),
        "args": {},
        "jobVersion": {"namespace": job.namespace, "name": job.name, "version": r.code_version} if job else None,
        "inputDatasetVersions": [
            {"datasetVersionId": {"namespace": d.namespace, "name": d.name, "version": e.version}}
            for e, d in ios
            if e.direction == "in"
        ],
        "outputDatasetVersions": [
            {"datasetVersionId": {"namespace": d.namespace, "name": d.name, "version": e.version}}
            for e, d in ios
            if e.direction == "out"
        ],
        "context": {},
        "facets": r.facets,
        "principals": r.principals,
        "entries": r.seqs,
    }


def job_json(j: Job, edges: list[tuple[str, Dataset]], latest: Run | None) -> dict[str, Any]:
    return {
        "id": {"namespace": j.namespace, "name": j.name},
        "type": "BATCH",
        "name": j.name,
        "simpleName": j.name,
        "parentJobName": None,
        "createdAt": j.created_at,
        "updatedAt": j.updated_at,
        "namespace": j.namespace,
        "inputs": [{"namespace": d.namespace, "name": d.name} for direction, d in edges if direction == "in"],
        "outputs": [{"namespace": d.namespace, "name": d.name} for direction, d in edges if direction == "out"],
        "location": (j.facets.get("sourceCodeLocation") or {}).get("url")
        if isinstance(j.facets.get("sourceCodeLocation"), dict)
        else None,
        "description": None,
        "latestRun": run_json(latest, j) if latest else None,
        "facets": j.facets,
        "currentVersion": j.code_version,
    }


class LineageReader:
    """Queries over the lineage projections, in one read transaction each."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def namespaces(self) -> list[Namespace]:
        return list(self.s.execute(select(Namespace).order_by(Namespace.name)).scalars())

    def namespace(self, name: str) -> Namespace:
        ns = self.s.get(Namespace, name)
        if ns is None:
            raise NotFoundError(f"namespace {name!r} not found", field="namespace")
        return ns

    def datasets(self, namespace: str, *, limit: int, offset: int) -> tuple[int, list[Dataset]]:
        self.namespace(namespace)
        total = self.s.execute(
            select(func.count()).select_from(Dataset).where(Dataset.namespace == namespace)
        ).scalar_one()
        rows = (
            self.s.execute(
                select(Dataset).where(Dataset.namespace == namespace).order_by(Dataset.name).limit(limit).offset(offset)
            )
            .scalars()
            .all()
        )
        return int(total), list(rows)

    def dataset(self, namespace: str, name: str) -> Dataset:
        d = self.s.execute(
            select(Dataset).where(Dataset.namespace == namespace, Dataset.name == name)
        ).scalar_one_or_none()
        if d is None:
            raise NotFoundError(f"dataset {namespace}:{name} not found", field="name")
        return d

    def dataset_versions(self, d: Dataset) -> list[DatasetVersion]:
        q = select(DatasetVersion).where(DatasetVersion.dataset_id == d.id).order_by(DatasetVersion.seq.desc())  # type: ignore[attr-defined]
        return list(self.s.execute(q).scalars())

    def jobs(self, namespace: str, *, limit: int, offset: int) -> tuple[int, list[Job]]:
        self.namespace(namespace)
        total = self.s.execute(select(func.count()).select_from(Job).where(Job.namespace == namespace)).scalar_one()
        rows = (
            self.s.execute(select(Job).where(Job.namespace == namespace).order_by(Job.name).limit(limit).offset(offset))
            .scalars()
            .all()
        )
        return int(total), list(rows)

    def job(self, namespace: str, name: str) -> Job:
        j = self.s.execute(select(Job).where(Job.namespace == namespace, Job.name == name)).scalar_one_or_none()
        if j is None:
            raise NotFoundError(f"job {namespace}:{name} not found", field="name")
        return j

    def job_edges(self, j: Job) -> list[tuple[str, Dataset]]:
        q = (
            select(JobDataset.direction, Dataset)
            .join(Dataset, Dataset.id == JobDataset.dataset_id)  # type: ignore[arg-type]
            .where(JobDataset.job_id == j.id)
            .order_by(Dataset.namespace, Dataset.name)
        )
        return [(direction, d) for direction, d in self.s.execute(q).all()]

    def runs(self, j: Job, *, limit: int, offset: int) -> tuple[int, list[Run]]:
        total = self.s.execute(select(func.count()).select_from(Run).where(Run.job_id == j.id)).scalar_one()
        q = select(Run).where(Run.job_id == j.id).order_by(Run.first_seq.desc()).limit(limit).offset(offset)  # type: ignore[attr-defined]
        return int(total), list(self.s.execute(q).scalars())

    def run(self, run_id: str) -> Run:
        r = self.s.get(Run, run_id.lower())
        if r is None:
            raise NotFoundError(f"run {run_id!r} not found", field="runId")
        return r

    def run_io(self, run_id: str) -> list[tuple[RunDataset, Dataset]]:
        q = (
            select(RunDataset, Dataset)
            .join(Dataset, Dataset.id == RunDataset.dataset_id)  # type: ignore[arg-type]
            .where(RunDataset.run_id == run_id)
            .order_by(Dataset.namespace, Dataset.name)
        )
        return [(e, d) for e, d in self.s.execute(q).all()]

    def job_by_id(self, job_id: int) -> Job | None:
        return self.s.get(Job, job_id)

    # --- the lineage graph ------------------------------------------------------------------------

    def tags(self, dataset_ids: Any) -> dict[int, Any]:
        return effective_tags(self.s, dataset_ids)

    def graph(
        self, node_id: str, *, depth: int, direction: str = "both", clearances: frozenset[str] | None = None
    ) -> list[dict[str, Any]]:
        """Marquez's `GET /api/v1/lineage`: every job and dataset within `depth` job hops of the node.

        One recursive query over the indexed job/dataset adjacency finds the jobs, so the cost follows
        the size of the answer, not of the graph; `direction` limits the walk to producers
        (upstream) or consumers (downstream).
        """
        if direction not in ("both", "upstream", "downstream"):
            raise InvalidRequestError("direction must be both, upstream or downstream", field="direction")
        kind, _, rest = node_id.partition(":")
        datasets: set[int] = set()
        jobs: set[int] = set()
        if kind == "dataset":
            datasets.add(self._node_dataset(rest).id)  # type: ignore[arg-type]
        elif kind == "job":
            jobs.add(self._node_job(rest).id)  # type: ignore[arg-type]
        elif kind == "run":
            jobs.add(self.run(rest).job_id)
        else:
            raise InvalidRequestError(
                "nodeId must be dataset:<namespace>:<name>, job:<namespace>:<name> or run:<id>", field="nodeId"
            )
        up = direction in ("both", "upstream")
        down = direction in ("both", "downstream")
        seed_ds = next(iter(datasets), None)
        seed_job = next(iter(jobs), None)
        jobs = self._walk(seed_ds, seed_job, depth=depth, up=up, down=down)
        edges: set[tuple[int, int, str]] = set()
        rows = self._edges(JobDataset.job_id, jobs)
        for _job_id, ds_id, dirn in rows:  # each job's datasets in the allowed directions
            if (dirn == "in" and up) or (dirn == "out" and down):
                datasets.add(ds_id)
        for job_id, ds_id, dirn in rows:  # and every edge between nodes of the graph
            if ds_id in datasets:
                edges.add((job_id, ds_id, dirn))
        return self._graph_json(datasets, jobs, edges, clearances)

    # One recursive query walks the job-to-job adjacency (a job is upstream of another when it
    # writes a dataset the other reads), so a depth-20 query costs four round trips, not forty.
    _WALK = """
        WITH RECURSIVE walk(job_id, depth) AS (
            SELECT job_id, 1 FROM lineage_job_datasets
             WHERE dataset_id = :seed_ds
               AND ((direction = 'out' AND :up = 1) OR (direction = 'in' AND :down = 1))
            UNION
            SELECT CAST(:seed_job AS BIGINT), 0 WHERE CAST(:seed_job AS BIGINT) IS NOT NULL
            UNION
            SELECT b.job_id, w.depth + 1
              FROM walk w
              JOIN lineage_job_datasets a ON a.job_id = w.job_id
              JOIN lineage_job_datasets b ON b.dataset_id = a.dataset_id AND b.job_id <> a.job_id
             WHERE w.depth < :depth
               AND ((a.direction = 'in' AND b.direction = 'out' AND :up = 1)
                 OR (a.direction = 'out' AND b.direction = 'in' AND :down = 1))
        )
        SELECT DISTINCT job_id FROM walk WHERE depth <= :depth
    """

    def _walk(self, seed_ds: int | None, seed_job: int | None, *, depth: int, up: bool, down: bool) -> set[int]:
        params = {
            "seed_ds": seed_ds if seed_ds is not None else -1,
            "seed_job": seed_job,
            "depth": depth,
            "up": int(up),
            "down": int(down),
        }
        return {int(r[0]) for r in self.s.execute(text(self._WALK), params) if r[0] is not None}

    def _node_dataset(self, rest: str) -> Dataset:
        # Dataset namespaces may contain ':' (s3://bucket, postgres://host:5432): try each split.
        for i in [i for i, c in enumerate(rest) if c == ":"][::-1]:
            d = self.s.execute(
                select(Dataset).where(Dataset.namespace == rest[:i], Dataset.name == rest[i + 1 :])
            ).scalar_one_or_none()
            if d is not None:
                return d
        raise NotFoundError(f"dataset node {rest!r} not found", field="nodeId")

    def _node_job(self, rest: str) -> Job:
        for i in [i for i, c in enumerate(rest) if c == ":"][::-1]:
            j = self.s.execute(
                select(Job).where(Job.namespace == rest[:i], Job.name == rest[i + 1 :])
            ).scalar_one_or_none()
            if j is not None:
                return j
        raise NotFoundError(f"job node {rest!r} not found", field="nodeId")

    def _edges(self, column: Any, ids: set[int]) -> list[tuple[int, int, str]]:
        out: list[tuple[int, int, str]] = []
        for part in chunks(ids, 1000):
            q = select(JobDataset.job_id, JobDataset.dataset_id, JobDataset.direction).where(column.in_(part))
            out += [(a, b, c) for a, b, c in self.s.execute(q).all()]
        return out

    def _graph_json(
        self, ds_ids: set[int], job_ids: set[int], edges: set[tuple[int, int, str]], clearances: frozenset[str] | None
    ) -> list[dict[str, Any]]:
        ds_rows = {d.id: d for d in self._load(Dataset, Dataset.id, ds_ids)}
        tags = self.tags(ds_ids)
        job_rows = {j.id: j for j in self._load(Job, Job.id, job_ids)}

        def did(i: int) -> str:
            d = ds_rows[i]
            return f"dataset:{d.namespace}:{d.name}"

        def jid(i: int) -> str:
            j = job_rows[i]
            return f"job:{j.namespace}:{j.name}"

        in_edges: dict[str, list[dict[str, str]]] = {}
        out_edges: dict[str, list[dict[str, str]]] = {}
        for job_id, ds_id, dirn in sorted(edges):
            if job_id not in job_rows or ds_id not in ds_rows:
                continue
            origin, dest = (did(ds_id), jid(job_id)) if dirn == "in" else (jid(job_id), did(ds_id))
            e = {"origin": origin, "destination": dest}
            out_edges.setdefault(origin, []).append(e)
            in_edges.setdefault(dest, []).append(e)
        graph: list[dict[str, Any]] = []
        for i, d in sorted(ds_rows.items(), key=lambda kv: (kv[1].namespace, kv[1].name)):
            nid = did(i)
            graph.append(
                {
                    "id": nid,
                    "type": "DATASET",
                    "data": dataset_json(d, tags=tags.get(i), clearances=clearances),
                    "inEdges": in_edges.get(nid, []),
                    "outEdges": out_edges.get(nid, []),
                }
            )
        for i, j in sorted(job_rows.items(), key=lambda kv: (kv[1].namespace, kv[1].name)):
            nid = jid(i)
            graph.append(
                {
                    "id": nid,
                    "type": "JOB",
                    "data": job_json(j, [], None) | {"latestRunId": j.latest_run_id},
                    "inEdges": in_edges.get(nid, []),
                    "outEdges": out_edges.get(nid, []),
                }
            )
        return graph

    def _load(self, model: Any, column: Any, ids: set[int]) -> list[Any]:
        out: list[Any] = []
        for part in chunks(ids, 1000):
            out += self.s.execute(select(model).where(column.in_(part))).scalars().all()
        return out
