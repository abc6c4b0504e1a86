"""The read service over the lineage projections, behind Marquez's API v1 (presented in ledger/api/marquez.py).

Scope and redaction happen here, so no view can forget them: every read takes the viewing
principal; a pipeline scoped to namespaces reads only those (403 on a named one, filtered out of
lists, graphs and searches), and a dataset's content facets are withheld from a principal without
the clearance for its sensitive tags (`redacted`). Every list is paged with a capped limit.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import JSON, Text, and_, cast, func, or_, select, text, tuple_
from sqlmodel import Session, col

from ledger.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from ledger.lineage.models import Dataset, DatasetVersion, Job, JobDataset, Namespace, Run, RunDataset, RunEvent
from ledger.lineage.nodeid import NodeId, NodeRef
from ledger.lineage.stats import EVENT_TYPES, Interval, bucket_of, cumulative, minute_start
from ledger.security.classification import SENSITIVE, effective_tags
from ledger.security.models import DatasetTags
from ledger.security.principals import AuthenticatedPrincipal
from ledger.security.visibility import PayloadGate
from ledger.store.db import chunks
from ledger.store.models import EntryPayload, LogEntry
from ledger.tlog.entry import format_time

MAX_DEPTH = 100
MAX_PAGE = 1000
# A lineage graph answer is bounded whatever the depth: at most this many nodes (jobs and datasets)
# and job-dataset edges, found within this wall-clock budget (each query is bounded too, by its IN
# list and, on PostgreSQL, by GRAPH_STATEMENT_TIMEOUT_MS); past any of them the walk stops and the
# answer says `truncated`.
MAX_GRAPH_NODES = 2000
MAX_GRAPH_EDGES = 10_000
GRAPH_BUDGET_SECONDS = 2.0
GRAPH_STATEMENT_TIMEOUT_MS = 2000
# Datasets a column-lineage walk may visit: the answer is bounded whatever the depth.
MAX_COLUMN_DATASETS = 1000
# Runs an upstream run-lineage walk may list: the answer is bounded whatever the depth.
MAX_UPSTREAM_RUNS = 1000
DEFAULT_SOURCE = "default"  # Marquez's source of a dataset without a `dataSource` facet

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


@dataclass(frozen=True)
class DatasetView:
    """A dataset as one principal may see it: `facets` already redacted, `hidden` when content was withheld."""

    row: Dataset
    tags: DatasetTags | None
    facets: dict[str, Any]
    hidden: bool

    @property
    def effective_tags(self) -> list[str]:
        return list(self.tags.effective) if self.tags is not None else []

    @property
    def source_name(self) -> str:
        return (self.row.source_name if "dataSource" in self.facets else None) or DEFAULT_SOURCE


@dataclass(frozen=True)
class RunView:
    """A run as one principal may see it: `facets` redacted by the tags of the data it touched."""

    row: Run
    job: Job | None
    io: list[tuple[RunDataset, Dataset]] = field(default_factory=list)
    facets: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobView:
    """A job as one principal may see it: `facets` redacted by the tags of the data its runs touched."""

    row: Job
    edges: list[tuple[str, Dataset]]
    latest: RunView | None
    facets: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionView:
    dataset: DatasetView
    row: DatasetVersion
    producer: RunView | None


@dataclass(frozen=True)
class Graph:
    """Marquez's lineage graph: nodes and the job-dataset edges between them (`in`: dataset -> job)."""

    datasets: list[DatasetView]
    jobs: list[Job]
    edges: list[tuple[Job, Dataset, str]]
    job_facets: dict[int, dict[str, Any]] = field(default_factory=dict)  # job id -> facets, redacted
    truncated: bool = False


@dataclass(frozen=True)
class InputField:
    namespace: str
    dataset: str
    field: str
    transformation_description: str | None
    transformation_type: str | None


@dataclass(frozen=True)
class ColumnNode:
    """One dataset field of a column-lineage graph, with the fields it is derived from."""

    namespace: str
    dataset: str
    field: str
    field_type: str | None
    version: str | None
    inputs: list[InputField]


@dataclass(frozen=True)
class SourceView:
    name: str
    connection_url: str | None
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class SearchHit:
    type: str  # DATASET or JOB
    namespace: str
    name: str
    updated_at: str


@dataclass(frozen=True)
class EventsPage:
    total: int
    events: list[dict[str, Any]]


@dataclass(frozen=True)
class JobVersionView:
    """One code version of a job (`code_version`: `sourceCodeLocation.version`, or the digest of
    `sourceCode`), with the datasets its runs read and wrote and its latest run."""

    job: Job
    version: str
    created_at: str
    location: str | None
    edges: list[tuple[str, str, str]]  # (direction, namespace, name)
    latest: RunView | None


@dataclass(frozen=True)
class UpstreamInput:
    """A dataset (version) a run read, and the run that produced it when that run is visible."""

    namespace: str
    name: str
    version: str | None
    produced_by: str | None


@dataclass(frozen=True)
class UpstreamRun:
    run: Run
    job: Job
    depth: int
    inputs: list[UpstreamInput]


@dataclass(frozen=True)
class LineageEventCounts:
    """Marquez's LineageMetric: the run events of each counted type in one interval."""

    interval: Interval
    counts: dict[str, int]


@dataclass(frozen=True)
class IntervalCount:
    """Marquez's IntervalMetric: how many things existed by the end of one interval."""

    interval: Interval
    count: int


def redacted_for(facets: dict[str, Any], tags: list[str], clearances: frozenset[str]) -> tuple[dict[str, Any], bool]:
    """`redacted`, and whether anything was withheld."""
    hidden = bool((set(tags) & SENSITIVE) - clearances)
    return (redacted(facets, tags, clearances) if hidden else facets), hidden


def _like(q: str) -> str:
    """A LIKE pattern matching `q` anywhere, its own `%`, `_` and `\\` taken literally."""
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class LineageReader:
    """Queries over the lineage projections for one principal, in one read transaction."""

    def __init__(self, session: Session, viewer: AuthenticatedPrincipal) -> None:
        self.s = session
        self.viewer = viewer

    # --- scope ------------------------------------------------------------------------------------

    def _scope(self, namespace: str) -> None:
        if not self.viewer.may_read_namespace(namespace):
            raise PermissionDeniedError(
                f"principal {self.viewer.name!r} may not read namespace {namespace!r}", field="namespace"
            )

    def _in_scope(self, column: Any) -> Any:
        """A WHERE clause keeping rows of namespaces this principal reads (true when unscoped)."""
        if not self.viewer.reads_scoped:
            return text("1 = 1")
        return col(column).in_(sorted(self.viewer.namespaces))

    def _views(self, rows: list[Dataset]) -> list[DatasetView]:
        tags = effective_tags(self.s, [d.id for d in rows])
        out = []
        for d in rows:
            t = tags.get(d.id)  # type: ignore[arg-type]
            facets, hidden = redacted_for(d.facets, list(t.effective) if t else [], self.viewer.clearances)
            out.append(DatasetView(d, t, facets, hidden))
        return out

    # --- job and run facets follow the data (DESIGN.md 6) -------------------------------------------

    def _touched_tags(self, dataset_ids: set[int]) -> list[str]:
        """The effective tags of the datasets a run or a job read or wrote."""
        tags = effective_tags(self.s, dataset_ids) if dataset_ids else {}
        return sorted({t for row in tags.values() for t in row.effective})

    def _follow(self, facets: dict[str, Any], dataset_ids: set[int]) -> dict[str, Any]:
        """Job or run facets as this principal may see them: the allowlist of dataset facets applies
        when the data the run (or the job's runs) touched carries a tag it is not cleared for, since
        a `sql` facet or an `errorMessage` can hold that data as well as the dataset can."""
        if not facets or self.viewer.clearances >= SENSITIVE:
            return facets
        return redacted(facets, self._touched_tags(dataset_ids), self.viewer.clearances)

    def _run_view(self, r: Run, j: Job | None) -> RunView:
        io = self._run_io(r.run_id)
        facets = self._follow(r.facets, {d.id for _, d in io})  # type: ignore[misc]
        return RunView(r, j, [(e, d) for e, d in io if self.viewer.may_read_namespace(d.namespace)], facets)

    # --- namespaces -------------------------------------------------------------------------------

    def namespaces(self, *, limit: int, offset: int) -> tuple[int, list[Namespace]]:
        where = self._in_scope(Namespace.name)
        total = self.s.execute(select(func.count()).select_from(Namespace).where(where)).scalar_one()
        q = select(Namespace).where(where).order_by(col(Namespace.name)).limit(limit).offset(offset)
        return int(total), list(self.s.execute(q).scalars())

    def namespace(self, name: str) -> Namespace:
        self._scope(name)
        ns = self.s.get(Namespace, name)
        if ns is None:
            raise NotFoundError(f"namespace {name!r} not found", field="namespace")
        return ns

    # --- datasets ---------------------------------------------------------------------------------

    def datasets(self, namespace: str, *, limit: int, offset: int) -> tuple[int, list[DatasetView]]:
        self.namespace(namespace)
        where = col(Dataset.namespace) == namespace
        total = self.s.execute(select(func.count()).select_from(Dataset).where(where)).scalar_one()
        q = select(Dataset).where(where).order_by(col(Dataset.name)).limit(limit).offset(offset)
        return int(total), self._views(list(self.s.execute(q).scalars()))

    def _dataset_row(self, namespace: str, name: str) -> Dataset:
        self._scope(namespace)
        d = self.s.execute(
            select(Dataset).where(col(Dataset.namespace) == namespace, col(Dataset.name) == name)
        ).scalar_one_or_none()
        if d is None:
            raise NotFoundError(f"dataset {namespace}:{name} not found", field="name")
        return d

    def dataset(self, namespace: str, name: str) -> DatasetView:
        return self._views([self._dataset_row(namespace, name)])[0]

    def dataset_versions(self, namespace: str, name: str, *, limit: int, offset: int) -> tuple[int, list[VersionView]]:
        view = self.dataset(namespace, name)
        where = col(DatasetVersion.dataset_id) == view.row.id
        total = self.s.execute(select(func.count()).select_from(DatasetVersion).where(where)).scalar_one()
        q = select(DatasetVersion).where(where).order_by(col(DatasetVersion.seq).desc()).limit(limit).offset(offset)
        return int(total), [self._version(view, v) for v in self.s.execute(q).scalars()]

    def dataset_version(self, namespace: str, name: str, version: str) -> VersionView:
        view = self.dataset(namespace, name)
        v = self.s.execute(
            select(DatasetVersion).where(
                col(DatasetVersion.dataset_id) == view.row.id, col(DatasetVersion.version) == version
            )
        ).scalar_one_or_none()
        if v is None:
            raise NotFoundError(f"dataset {namespace}:{name} has no version {version!r}", field="version")
        return self._version(view, v)

    def _version(self, view: DatasetView, v: DatasetVersion) -> VersionView:
        producer = None
        if v.produced_by_run:
            run = self.s.get(Run, v.produced_by_run)
            if run is not None:
                producer = self._run_view(run, self.s.get(Job, run.job_id))
        return VersionView(view, v, producer)

    # --- jobs and runs ----------------------------------------------------------------------------

    def jobs(self, namespace: str, *, limit: int, offset: int) -> tuple[int, list[JobView]]:
        self.namespace(namespace)
        where = col(Job.namespace) == namespace
        total = self.s.execute(select(func.count()).select_from(Job).where(where)).scalar_one()
        q = select(Job).where(where).order_by(col(Job.name)).limit(limit).offset(offset)
        return int(total), [self._job_view(j) for j in self.s.execute(q).scalars()]

    def _job_row(self, namespace: str, name: str) -> Job:
        self._scope(namespace)
        j = self.s.execute(
            select(Job).where(col(Job.namespace) == namespace, col(Job.name) == name)
        ).scalar_one_or_none()
        if j is None:
            raise NotFoundError(f"job {namespace}:{name} not found", field="name")
        return j

    def job(self, namespace: str, name: str) -> JobView:
        return self._job_view(self._job_row(namespace, name))

    def _job_view(self, j: Job) -> JobView:
        latest = self.s.get(Run, j.latest_run_id) if j.latest_run_id else None
        edges = self._job_edges(j)
        facets = self._follow(j.facets, {d.id for _, d in edges})  # type: ignore[misc]
        edges = [(dirn, d) for dirn, d in edges if self.viewer.may_read_namespace(d.namespace)]  # scope: graph edges
        return JobView(j, edges, self._run_view(latest, j) if latest else None, facets)

    def _job_edges(self, j: Job) -> list[tuple[str, Dataset]]:
        q = (
            select(JobDataset.direction, Dataset)
            .join(Dataset, col(Dataset.id) == col(JobDataset.dataset_id))
            .where(col(JobDataset.job_id) == j.id)
            .order_by(col(Dataset.namespace), col(Dataset.name))
        )
        return [(direction, d) for direction, d in self.s.execute(q).all()]

    def runs(self, namespace: str, name: str, *, limit: int, offset: int) -> tuple[int, list[RunView]]:
        j = self._job_row(namespace, name)
        where = col(Run.job_id) == j.id
        total = self.s.execute(select(func.count()).select_from(Run).where(where)).scalar_one()
        q = select(Run).where(where).order_by(col(Run.first_seq).desc()).limit(limit).offset(offset)
        return int(total), [self._run_view(r, j) for r in self.s.execute(q).scalars()]

    def run(self, run_id: str) -> RunView:
        r = self.s.get(Run, run_id.lower())
        j = self.s.get(Job, r.job_id) if r is not None else None
        if r is None or (
            not self.viewer.may_read_namespace(j.namespace) if j is not None else self.viewer.reads_scoped
        ):
            # Out of scope reads as absent: a run id names no namespace the caller could have known.
            raise NotFoundError(f"run {run_id!r} not found", field="runId")
        return self._run_view(r, j)

    def _run_io(self, run_id: str) -> list[tuple[RunDataset, Dataset]]:
        q = (
            select(RunDataset, Dataset)
            .join(Dataset, col(Dataset.id) == col(RunDataset.dataset_id))
            .where(col(RunDataset.run_id) == run_id)
            .order_by(col(Dataset.namespace), col(Dataset.name))
        )
        return [(e, d) for e, d in self.s.execute(q).all()]

    # --- node ids ---------------------------------------------------------------------------------

    # A node outside the principal's scope answers as a missing one does: the same 404, after the
    # same work (DESIGN.md 6), so a node id cannot probe another namespace.

    def _node_dataset(self, node: NodeId) -> tuple[Dataset, NodeRef]:
        for ref in node.candidates():
            d = self.s.execute(
                select(Dataset).where(col(Dataset.namespace) == ref.namespace, col(Dataset.name) == ref.name)
            ).scalar_one_or_none()
            if d is not None and self.viewer.may_read_namespace(d.namespace):
                return d, ref
        raise NotFoundError(f"no dataset is node {str(node)[:200]!r}", field="nodeId")

    def _node_job(self, node: NodeId) -> Job:
        for ref in node.candidates():
            j = self.s.execute(
                select(Job).where(col(Job.namespace) == ref.namespace, col(Job.name) == ref.name)
            ).scalar_one_or_none()
            if j is not None and self.viewer.may_read_namespace(j.namespace):
                return j
        raise NotFoundError(f"no job is node {str(node)[:200]!r}", field="nodeId")

    # --- the lineage graph ------------------------------------------------------------------------

    def graph(self, node: NodeId, *, depth: int, direction: str = "both") -> Graph:
        """Marquez's `GET /api/v1/lineage`: every job and dataset within `depth` job hops of the node.

        A breadth-first walk over the indexed job/dataset adjacency that expands each job and each
        dataset once (`_walk`), so the cost follows the size of the answer and is linear in it, and
        is bounded by MAX_GRAPH_NODES, MAX_GRAPH_EDGES and GRAPH_BUDGET_SECONDS (`truncated` says the
        walk stopped at one). `direction` limits the walk to producers (upstream) or consumers
        (downstream). Nodes outside the principal's scope are left out and not walked through.
        """
        if direction not in ("both", "upstream", "downstream"):
            raise InvalidRequestError("direction must be both, upstream or downstream", field="direction")
        if self.s.get_bind().dialect.name == "postgresql":
            self.s.execute(text(f"SET LOCAL statement_timeout = {int(GRAPH_STATEMENT_TIMEOUT_MS)}"))
        datasets: set[int] = set()
        seed_ds: int | None = None
        seed_job: int | None = None
        if node.kind == "dataset":
            seed_ds = self._node_dataset(node)[0].id
            datasets.add(seed_ds)  # type: ignore[arg-type]
        elif node.kind == "job":
            seed_job = self._node_job(node).id
        elif node.kind == "run":
            seed_job = self.run(node.run_id).row.job_id
        else:
            raise InvalidRequestError("a lineage nodeId is a dataset, job or run", field="nodeId")
        up = direction in ("both", "upstream")
        down = direction in ("both", "downstream")
        job_rows, rows, truncated = self._walk(seed_ds, seed_job, depth=depth, up=up, down=down)
        for _job_id, ds_id, dirn in rows:  # each job's datasets in the allowed directions
            if (dirn == "in" and up) or (dirn == "out" and down):
                datasets.add(ds_id)
        if len(datasets) + len(job_rows) > MAX_GRAPH_NODES:
            truncated = True
            kept = sorted(datasets - {seed_ds})[: MAX_GRAPH_NODES - len(job_rows) - (seed_ds is not None)]
            datasets = set(kept) | ({seed_ds} if seed_ds is not None else set())
        ds_rows = {
            d.id: d for d in self._load(Dataset, Dataset.id, datasets) if self.viewer.may_read_namespace(d.namespace)
        }
        edges = [(job_rows[j], ds_rows[d], dirn) for j, d, dirn in sorted(set(rows)) if j in job_rows and d in ds_rows]
        touched: dict[int, set[int]] = {}
        for j, d, _dirn in rows:  # every dataset of the job, in scope or not, decides its redaction
            touched.setdefault(j, set()).add(d)
        return Graph(
            datasets=self._views(sorted(ds_rows.values(), key=lambda d: (d.namespace, d.name))),
            jobs=sorted(job_rows.values(), key=lambda j: (j.namespace, j.name)),
            edges=edges,
            job_facets={i: self._follow(j.facets, touched.get(i, set())) for i, j in job_rows.items()},
            truncated=truncated,
        )

    def _walk(
        self, seed_ds: int | None, seed_job: int | None, *, depth: int, up: bool, down: bool
    ) -> tuple[dict[int, Job], list[tuple[int, int, str]], bool]:
        """Breadth first from the seed: a job is upstream of another when it writes a dataset the
        other reads. Returns the jobs reached (those this principal reads; others are not walked
        through), every edge of theirs, and whether a bound stopped the walk.

        Each job's edges are read once and each dataset's readers or writers once, one query per
        level and kind for a whole frontier: a hub read and written by 300 jobs costs a few queries,
        not 300 x depth walks through it."""
        deadline = time.monotonic() + GRAPH_BUDGET_SECONDS
        jobs: dict[int, Job] = {}
        rows: list[tuple[int, int, str]] = []
        expanded: set[tuple[int, str]] = set()  # (dataset, direction of the jobs wanted from it)
        truncated = False

        def neighbours(wanted: set[tuple[int, str]]) -> set[int]:
            """The jobs with an edge of the given direction to the given datasets."""
            found: set[int] = set()
            for dirn in ("in", "out"):
                ids = sorted(d for d, w in wanted if w == dirn)
                for part in chunks(ids, 1000):
                    q = select(JobDataset.job_id).where(
                        col(JobDataset.dataset_id).in_(part), col(JobDataset.direction) == dirn
                    )
                    found.update(self.s.execute(q).scalars())
            expanded.update(wanted)
            return found

        if seed_job is not None:
            frontier = {seed_job}
            level = 0
        else:
            wanted = {(seed_ds, "out")} if up else set()
            wanted |= {(seed_ds, "in")} if down else set()
            frontier = neighbours(wanted)  # type: ignore[arg-type]
            level = 1
        tried: set[int] = set()  # jobs loaded, in scope or not
        while frontier and level <= depth:
            new = frontier - tried
            room = MAX_GRAPH_NODES - 1 - len(jobs)  # one node is left for a dataset at least
            if len(new) > room:
                truncated, new = True, set(sorted(new)[:room])
            tried |= new
            loaded = [j for j in self._load(Job, Job.id, new) if self.viewer.may_read_namespace(j.namespace)]
            jobs.update({j.id: j for j in loaded})  # type: ignore[misc]
            found = self._edges({j.id for j in loaded})  # type: ignore[misc]
            if len(rows) + len(found) > MAX_GRAPH_EDGES:
                truncated = True
                found = found[: MAX_GRAPH_EDGES - len(rows)]
            rows += found
            if truncated or time.monotonic() > deadline:
                truncated = True
                break
            if level == depth:
                break
            wanted = {(d, "out") for _, d, dirn in found if dirn == "in" and up}  # the writers of its inputs
            wanted |= {(d, "in") for _, d, dirn in found if dirn == "out" and down}  # the readers of its outputs
            frontier = neighbours(wanted - expanded) - tried
            level += 1
        return jobs, rows, truncated

    def _edges(self, job_ids: set[int]) -> list[tuple[int, int, str]]:
        out: list[tuple[int, int, str]] = []
        for part in chunks(job_ids, 1000):
            q = select(JobDataset.job_id, JobDataset.dataset_id, JobDataset.direction).where(
                col(JobDataset.job_id).in_(part)
            )
            out += [(a, b, c) for a, b, c in self.s.execute(q).all()]
        return out

    def _load(self, model: Any, column: Any, ids: set[int]) -> list[Any]:
        out: list[Any] = []
        for part in chunks(ids, 1000):
            out += self.s.execute(select(model).where(column.in_(part))).scalars().all()
        return out

    # --- column lineage ---------------------------------------------------------------------------

    def column_lineage(self, node: NodeId, *, depth: int, with_downstream: bool) -> list[ColumnNode]:
        """Marquez's `GET /api/v1/column-lineage`, from the `columnLineage` facets of the datasets.

        From a dataset (or one of its fields, or a job's outputs) the walk follows each field's
        `inputFields` upstream, and with `with_downstream` also the fields derived from it, `depth`
        hops each way. A dataset whose facets are withheld from this principal, or outside its
        scope, contributes no field and is named by none.
        """
        fields_of: str | None = None
        if node.kind in ("dataset", "datasetField"):
            d, ref = self._node_dataset(node)
            seeds = {(d.namespace, d.name)}
            fields_of = ref.field
        elif node.kind == "job":
            j = self._node_job(node)
            seeds = {(ds.namespace, ds.name) for dirn, ds in self._job_edges(j) if dirn == "out"}
        else:
            raise InvalidRequestError("a column-lineage nodeId is a dataset, dataset field or job", field="nodeId")
        views: dict[tuple[str, str], DatasetView | None] = {}
        nodes: dict[tuple[str, str, str], ColumnNode] = {}

        def load(keys: set[tuple[str, str]]) -> None:
            new = sorted(k for k in keys if k not in views)
            if len(views) + len(new) > MAX_COLUMN_DATASETS:
                raise InvalidRequestError(
                    f"the column lineage reaches more than {MAX_COLUMN_DATASETS} datasets; lower depth", field="depth"
                )
            for part in chunks(new, 500):
                q = select(Dataset).where(tuple_(col(Dataset.namespace), col(Dataset.name)).in_(part))
                for v in self._views(list(self.s.execute(q).scalars())):
                    views[(v.row.namespace, v.row.name)] = v
            for k in new:
                views.setdefault(k, None)

        def visible(key: tuple[str, str]) -> bool:
            v = views.get(key)
            return self.viewer.may_read_namespace(key[0]) and (v is None or not v.hidden)

        def fields(key: tuple[str, str]) -> list[ColumnNode]:
            v = views.get(key)
            if v is None or not visible(key):
                return []
            return _column_nodes(v, visible)

        # Upstream: fields of the seeds, then the fields they come from, `depth` hops.
        load(seeds)
        frontier = [n for k in sorted(seeds) for n in fields(k) if fields_of is None or n.field == fields_of]
        for _ in range(depth + 1):
            if not frontier:
                break
            for n in frontier:
                nodes[(n.namespace, n.dataset, n.field)] = n
            wanted = {(i.namespace, i.dataset, i.field) for n in frontier for i in n.inputs}
            load({(ns, name) for ns, name, _ in wanted})
            frontier = [
                n
                for ns, name in sorted({(ns, name) for ns, name, _ in wanted})
                for n in fields((ns, name))
                if (n.namespace, n.dataset, n.field) in wanted and (n.namespace, n.dataset, n.field) not in nodes
            ]
        if with_downstream:
            # From the node itself: its field, or any field of its datasets.
            reached = {(ns, name, fields_of) for ns, name in seeds} if fields_of is not None else set()
            whole = set() if fields_of is not None else set(seeds)
            frontier_keys = set(seeds)
            for _ in range(depth):
                consumers = self._consumers(frontier_keys)
                load(consumers)
                found = [
                    n
                    for k in sorted(consumers)
                    for n in fields(k)
                    if any(
                        (i.namespace, i.dataset, i.field) in reached or (i.namespace, i.dataset) in whole
                        for i in n.inputs
                    )
                    and (n.namespace, n.dataset, n.field) not in reached
                ]
                if not found:
                    break
                for n in found:
                    nodes[(n.namespace, n.dataset, n.field)] = n
                    reached.add((n.namespace, n.dataset, n.field))
                frontier_keys = {(n.namespace, n.dataset) for n in found}
        return [nodes[k] for k in sorted(nodes)]

    def _consumers(self, keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """The datasets written by jobs that read any of `keys`."""
        out: set[tuple[str, str]] = set()
        for part in chunks(sorted(keys), 500):
            read = (
                select(JobDataset.job_id)
                .join(Dataset, col(Dataset.id) == col(JobDataset.dataset_id))
                .where(col(JobDataset.direction) == "in", tuple_(col(Dataset.namespace), col(Dataset.name)).in_(part))
            )
            q = (
                select(Dataset.namespace, Dataset.name)
                .join(JobDataset, col(JobDataset.dataset_id) == col(Dataset.id))
                .where(col(JobDataset.direction) == "out", col(JobDataset.job_id).in_(read))
            )
            out |= {(ns, name) for ns, name in self.s.execute(q).all()}
        return out

    # --- job versions and run facets ----------------------------------------------------------------

    def job_versions(self, namespace: str, name: str, *, limit: int, offset: int) -> tuple[int, list[JobVersionView]]:
        """Marquez's `GET .../jobs/<job>/versions`, newest first: one version per code version the
        job's runs recorded (a run without one belongs to none), and the job's own code version when
        a JobEvent declared it before any run used it."""
        j = self._job_row(namespace, name)
        where = and_(col(Run.job_id) == j.id, col(Run.code_version).is_not(None))
        total = int(self.s.execute(select(func.count(func.distinct(Run.code_version))).where(where)).scalar_one())
        declared = j.code_version
        if declared is not None and self._run_versions(j, [declared]):
            declared = None
        if declared is not None:  # the newest: it arrived after every run
            total += 1
            if offset == 0:
                return total, [self._declared_version(j, declared), *self._version_page(j, limit - 1, 0)]
            offset -= 1
        return total, self._version_page(j, limit, offset)

    def job_version(self, namespace: str, name: str, version: str) -> JobVersionView:
        j = self._job_row(namespace, name)
        found = self._run_versions(j, [version])
        if found:
            return self._version_views(j, found)[0]
        if j.code_version == version:
            return self._declared_version(j, version)
        raise NotFoundError(f"job {namespace}:{name} has no version {version!r}", field="version")

    _VERSION_COLUMNS = (Run.code_version, func.min(Run.first_seq), func.max(Run.first_seq))

    def _run_versions(self, j: Job, versions: list[str]) -> list[tuple[str, int, int]]:
        """(version, first seq, latest run's first seq) of those of `versions` the job's runs recorded."""
        q = (
            select(*self._VERSION_COLUMNS)
            .where(col(Run.job_id) == j.id, col(Run.code_version).in_(versions))
            .group_by(col(Run.code_version))
        )
        return [(v, a, b) for v, a, b in self.s.execute(q).all()]

    def _version_page(self, j: Job, limit: int, offset: int) -> list[JobVersionView]:
        if limit <= 0:
            return []
        q = (
            select(*self._VERSION_COLUMNS)
            .where(col(Run.job_id) == j.id, col(Run.code_version).is_not(None))
            .group_by(col(Run.code_version))
            .order_by(func.min(Run.first_seq).desc())
            .limit(limit)
            .offset(offset)
        )
        return self._version_views(j, [(v, a, b) for v, a, b in self.s.execute(q).all()])

    def _version_views(self, j: Job, rows: list[tuple[str, int, int]]) -> list[JobVersionView]:
        """Views of (version, first seq, latest run's first seq): a few queries for the whole page."""
        if not rows:
            return []
        times: dict[int, str] = dict(
            self.s.execute(
                select(LogEntry.seq, LogEntry.integrated_time).where(col(LogEntry.seq).in_([a for _, a, _ in rows]))
            ).all()
        )
        latest = {
            r.first_seq: r
            for r in self.s.execute(
                select(Run).where(col(Run.job_id) == j.id, col(Run.first_seq).in_([b for _, _, b in rows]))
            ).scalars()
        }
        job_facets = self._run_job_facets(list(latest.values()))
        q = (
            select(Run.code_version, RunDataset.direction, Dataset.namespace, Dataset.name)
            .join(RunDataset, col(RunDataset.run_id) == col(Run.run_id))
            .join(Dataset, col(Dataset.id) == col(RunDataset.dataset_id))
            .where(col(Run.job_id) == j.id, col(Run.code_version).in_([v for v, _, _ in rows]))
            .distinct()
            .order_by(col(Dataset.namespace), col(Dataset.name))
        )
        edges: dict[str, list[tuple[str, str, str]]] = {}
        for v, direction, ns, name in self.s.execute(q).all():
            edges.setdefault(v, []).append((direction, ns, name))
        out = []
        job_own = self._follow(j.facets, {d.id for _, d in self._job_edges(j)})  # type: ignore[misc]
        for v, first, last in rows:
            run = latest.get(last)
            view = self._run_view(run, j) if run is not None else None
            facets = self._follow(job_facets.get(run.run_id, {}), {d.id for _, d in view.io}) if view else {}  # type: ignore[misc,union-attr]
            location = job_location(facets) or (job_location(job_own) if v == j.code_version else None)
            out.append(JobVersionView(j, v, times.get(first, j.created_at), location, edges.get(v, []), view))
        return out

    def _declared_version(self, j: Job, version: str) -> JobVersionView:
        """A code version only a JobEvent carries so far: the job's own datasets, no run; created at
        the job's last update (the projection keeps no earlier time for it)."""
        own = self._job_edges(j)
        edges = [(direction, d.namespace, d.name) for direction, d in own]
        location = job_location(self._follow(j.facets, {d.id for _, d in own}))  # type: ignore[misc]
        return JobVersionView(j, version, j.updated_at, location, edges, None)

    def run_facets(self, run_id: str, kind: str) -> tuple[str, dict[str, Any]]:
        """Marquez's `GET /jobs/runs/<id>/facets?type=run|job`: the run's facets as `/jobs/runs/<id>`
        serves them, or the job facets its own events carried (merged in log order). Out of scope
        reads as absent, as for the run itself."""
        view = self.run(run_id)
        r = view.row
        if kind == "run":
            return r.run_id, view.facets
        if kind == "job":
            return r.run_id, self._follow(self._run_job_facets([r]).get(r.run_id, {}), {d.id for _, d in view.io})  # type: ignore[misc]
        raise InvalidRequestError("type must be run or job", field="type")

    def _run_job_facets(self, runs: list[Run]) -> dict[str, dict[str, Any]]:
        """run id -> the job facets of its run events, a facet of the same name replacing the earlier.

        Read from the log's payloads (the projection keeps only the job's latest facets); an erased
        payload contributes nothing. The caller redacts them by the data the run touched (`_follow`).
        """
        owner = {seq: r.run_id for r in runs for seq in r.seqs}
        out: dict[str, dict[str, Any]] = {r.run_id: {} for r in runs}
        for part in chunks(sorted(owner), 1000):
            q = select(EntryPayload.seq, EntryPayload.payload).where(col(EntryPayload.seq).in_(part))
            for seq, payload in sorted(self.s.execute(q).all()):
                event = json.loads(payload)
                job = event.get("job") if isinstance(event, dict) else None
                facets = job.get("facets") if isinstance(job, dict) else None
                if isinstance(facets, dict):
                    out[owner[seq]].update(facets)
        return out

    # --- run lineage ------------------------------------------------------------------------------

    def run_upstream(self, run_id: str, *, depth: int) -> list[UpstreamRun]:
        """Marquez's `GET /api/v1/runlineage/upstream`: the run, the runs that produced the dataset
        versions it read, theirs in turn, `depth` hops; by depth, then job name.

        A dataset version's producer is the run that wrote that version, or (unversioned, or a version
        no run claims) the last run that wrote the dataset before the consumer started, the rule of the
        provenance closure. Scope: the run itself is 404 outside it, as `/jobs/runs/<id>`; runs and
        datasets of other namespaces are left out and not walked through, and a producer outside it is
        not named. Nothing here is a facet, so classification withholds nothing.
        """
        seed = self.run(run_id)
        if seed.job is None:
            return []
        seen: dict[str, tuple[Run, Job]] = {seed.row.run_id: (seed.row, seed.job)}  # visible runs
        checked: set[str] = set(seen)
        listed: set[str] = set()
        frontier = [seed.row.run_id]
        out: list[UpstreamRun] = []
        for level in range(depth + 1):
            inputs = {rid: self._inputs(seen[rid][0]) for rid in frontier}
            producers = {p for found in inputs.values() for _, _, p in found if p is not None}
            self._load_visible_runs(producers - checked, seen)
            checked |= producers
            for rid in frontier:
                run, job = seen[rid]
                ups = [UpstreamInput(d.namespace, d.name, v, p if p in seen else None) for d, v, p in inputs[rid]]
                out.append(UpstreamRun(run, job, level, ups))
                listed.add(rid)
            frontier = sorted(p for p in producers if p in seen and p not in listed)
            if not frontier:
                break
        return sorted(out, key=lambda u: (u.depth, u.job.name, u.job.namespace, u.run.run_id))

    def _load_visible_runs(self, run_ids: set[str], seen: dict[str, tuple[Run, Job]]) -> None:
        """Adds to `seen` the runs of `run_ids` whose job this principal may read."""
        for part in chunks(sorted(run_ids), 1000):
            q = select(Run, Job).join(Job, col(Job.id) == col(Run.job_id)).where(col(Run.run_id).in_(part))
            for run, job in self.s.execute(q).all():
                if self.viewer.may_read_namespace(job.namespace):
                    seen[run.run_id] = (run, job)
        if len(seen) > MAX_UPSTREAM_RUNS:
            raise InvalidRequestError(
                f"the upstream lineage reaches more than {MAX_UPSTREAM_RUNS} runs; lower depth", field="depth"
            )

    def _inputs(self, run: Run) -> list[tuple[Dataset, str | None, str | None]]:
        """(dataset, version, producing run id) of each input of `run` this principal may read."""
        edges = [
            (e, d)
            for e, d in self._run_io(run.run_id)
            if e.direction == "in" and self.viewer.may_read_namespace(d.namespace)
        ]
        keys = [(d.id, e.version) for e, d in edges if e.version is not None]
        claimed: dict[tuple[int, str], str] = {}
        for part in chunks(keys, 500):
            q = select(DatasetVersion.dataset_id, DatasetVersion.version, DatasetVersion.produced_by_run).where(
                tuple_(col(DatasetVersion.dataset_id), col(DatasetVersion.version)).in_(part),
                col(DatasetVersion.produced_by_run).is_not(None),
            )
            claimed |= {(ds, v): p for ds, v, p in self.s.execute(q).all()}
        out = []
        for e, d in edges:
            producer = claimed.get((d.id, e.version)) if e.version is not None else None  # type: ignore[arg-type]
            out.append((d, e.version, producer or self._last_writer(d, e.version, run)))
        return out

    def _last_writer(self, d: Dataset, version: str | None, consumer: Run) -> str | None:
        """The last run that wrote `d` (that version of it, if given) before `consumer` started."""
        q = (
            select(Run.run_id)
            .join(RunDataset, col(RunDataset.run_id) == col(Run.run_id))
            .where(
                col(RunDataset.dataset_id) == d.id,
                col(RunDataset.direction) == "out",
                col(Run.first_seq) < consumer.first_seq,
            )
            .order_by(col(Run.first_seq).desc())
            .limit(1)
        )
        if version is not None:
            q = q.where(col(RunDataset.version) == version)
        return self.s.execute(q).scalar_one_or_none()

    # --- stats ------------------------------------------------------------------------------------

    def lineage_event_stats(self, buckets: list[Interval]) -> list[LineageEventCounts]:
        """Marquez's `GET /api/v1/stats/lineage-events`: run events per type and interval, by
        `eventTime`, of the namespaces this principal reads. The type is read from the event in the
        log; an erased event is no longer counted. Counts reveal no facet, so nothing is withheld."""
        counts = [dict.fromkeys(EVENT_TYPES, 0) for _ in buckets]
        if not buckets:
            return []
        event_type = self._json_text(EntryPayload.payload, "eventType")
        minute = func.substr(RunEvent.event_time, 1, 16)
        q = (
            select(minute, event_type, func.count())
            .select_from(RunEvent)
            .join(EntryPayload, col(EntryPayload.seq) == col(RunEvent.seq))
            .where(
                col(RunEvent.event_time) >= format_time(buckets[0].start),
                col(RunEvent.event_time) < format_time(buckets[-1].end),
                self._in_scope(RunEvent.namespace),
            )
            .group_by(minute, event_type)
        )
        for key, kind, n in self.s.execute(q).all():
            i = bucket_of(buckets, minute_start(key))
            if i is not None and kind in counts[i]:
                counts[i][kind] += n
        return [LineageEventCounts(b, c) for b, c in zip(buckets, counts, strict=True)]

    def _json_text(self, column: Any, key: str) -> Any:
        """The text of a top-level member of a JSON document held as text, in this database's SQL."""
        if self.s.get_bind().dialect.name == "postgresql":
            return func.json_extract_path_text(cast(column, JSON), key)
        return func.json_extract(column, f"$.{key}")

    def created_stats(self, kind: str, buckets: list[Interval]) -> list[IntervalCount]:
        """Marquez's `GET /api/v1/stats/jobs|datasets|sources`: how many existed by the end of each
        interval (by when each was first recorded), of those this principal may list."""
        times: Any
        if kind == "jobs":
            times = select(col(Job.created_at).label("t")).where(self._in_scope(Job.namespace))
        elif kind == "datasets":
            times = select(col(Dataset.created_at).label("t")).where(self._in_scope(Dataset.namespace))
        elif kind == "sources":  # a source is first recorded with its first dataset, as /sources says
            times = (
                select(func.min(Dataset.created_at).label("t"))
                .where(self._source_where())
                .group_by(col(Dataset.source_name))
            )
        else:
            raise InvalidRequestError("stats are of lineage-events, jobs, datasets or sources", field="kind")
        if not buckets:
            return []
        t = times.subquery().c.t
        start, end = format_time(buckets[0].start), format_time(buckets[-1].end)
        before = self.s.execute(select(func.count()).where(t < start)).scalar_one()
        minute = func.substr(t, 1, 16)
        rows = self.s.execute(select(minute, func.count()).where(t >= start, t < end).group_by(minute)).all()
        totals = cumulative(buckets, int(before), [(k, int(n)) for k, n in rows])
        return [IntervalCount(b, n) for b, n in zip(buckets, totals, strict=True)]

    # --- events -----------------------------------------------------------------------------------

    def run_events(
        self, *, before: str, after: str, ascending: bool, limit: int, offset: int, namespace: str | None = None
    ) -> EventsPage:
        """Marquez's `GET /api/v1/events/lineage`: RunEvents with `after <= eventTime < before`.

        Scope: only events written to namespaces this principal reads. An event naming a dataset
        classified beyond the principal's clearance is served as its identity only (the log withholds
        its payload for the same reason, ledger.security.visibility), marked `withheld`.
        """
        where = and_(
            col(RunEvent.event_time) < before, col(RunEvent.event_time) >= after, self._in_scope(RunEvent.namespace)
        )
        if namespace is not None:  # marquez-python's list_events(namespace)
            self._scope(namespace)
            where = and_(where, col(RunEvent.namespace) == namespace)
        total = self.s.execute(select(func.count()).select_from(RunEvent).where(where)).scalar_one()
        order = [col(RunEvent.event_time), col(RunEvent.seq)]
        q = (
            select(RunEvent.seq, EntryPayload.payload)
            .join(EntryPayload, col(EntryPayload.seq) == col(RunEvent.seq))
            .where(where)
            .order_by(*(order if ascending else [c.desc() for c in order]))
            .limit(limit)
            .offset(offset)
        )
        rows = [(seq, json.loads(payload)) for seq, payload in self.s.execute(q).all()]
        hidden = PayloadGate(self.viewer).withheld(self.s, [(seq, "openlineage.run_event", p) for seq, p in rows])
        return EventsPage(int(total), [_identity(p, hidden[seq]) if seq in hidden else p for seq, p in rows])

    # --- sources, tags, search --------------------------------------------------------------------

    def _source_where(self) -> Any:
        """Datasets whose source this principal may see: in scope, and their dataSource not withheld."""
        clauses = [col(Dataset.source_name).is_not(None), self._in_scope(Dataset.namespace)]
        missing = sorted(SENSITIVE - self.viewer.clearances)
        if missing:
            tagged = select(DatasetTags.dataset_id).where(
                or_(*[cast(DatasetTags.effective, Text).like(f'%"{t}"%') for t in missing])
            )
            clauses.append(col(Dataset.id).not_in(tagged))
        return and_(*clauses)

    _SOURCE_COLUMNS = (
        Dataset.source_name,
        func.max(Dataset.source_uri),
        func.min(Dataset.created_at),
        func.max(Dataset.updated_at),
    )

    def sources(self, *, limit: int, offset: int) -> tuple[int, list[SourceView]]:
        where = self._source_where()
        total = self.s.execute(select(func.count(func.distinct(Dataset.source_name))).where(where)).scalar_one()
        q = (
            select(*self._SOURCE_COLUMNS)
            .where(where)
            .group_by(col(Dataset.source_name))
            .order_by(col(Dataset.source_name))
            .limit(limit)
            .offset(offset)
        )
        return int(total), [SourceView(n, u, c, up) for n, u, c, up in self.s.execute(q).all()]

    def source(self, name: str) -> SourceView:
        q = (
            select(*self._SOURCE_COLUMNS)
            .where(self._source_where(), col(Dataset.source_name) == name)
            .group_by(col(Dataset.source_name))
        )
        row = self.s.execute(q).first()
        if row is None:
            raise NotFoundError(f"source {name!r} not found", field="name")
        return SourceView(*row)

    def tags(self, *, limit: int, offset: int) -> tuple[int, list[str]]:
        """Every tag on a dataset this principal reads (classification and `tags` facets, effective)."""
        q = (
            select(cast(DatasetTags.effective, Text))
            .join(Dataset, col(Dataset.id) == col(DatasetTags.dataset_id))
            .where(self._in_scope(Dataset.namespace))
            .distinct()
        )
        names = sorted({t for (raw,) in self.s.execute(q).all() for t in json.loads(raw or "[]")})
        return len(names), names[offset : offset + limit]

    def search(
        self,
        query: str,
        *,
        kind: str | None,
        sort: str,
        limit: int,
        namespace: str | None,
        before: str | None,
        after: str | None,
    ) -> list[SearchHit]:
        """Marquez's `GET /api/v1/search`: jobs and datasets whose name contains `query` (any case)."""
        hits: list[SearchHit] = []
        for hit_type, model in (("DATASET", Dataset), ("JOB", Job)):
            if kind not in (None, hit_type):
                continue
            clauses = [func.lower(model.name).like(_like(query.lower()), escape="\\"), self._in_scope(model.namespace)]
            if namespace is not None:
                clauses.append(col(model.namespace) == namespace)
            if before is not None:
                clauses.append(col(model.updated_at) < before)
            if after is not None:
                clauses.append(col(model.updated_at) >= after)
            order = col(model.updated_at).desc() if sort == "updated_at" else col(model.name)
            q = select(model.namespace, model.name, model.updated_at).where(*clauses).order_by(order).limit(limit)
            hits += [SearchHit(hit_type, ns, name, up) for ns, name, up in self.s.execute(q).all()]
        by_time = sort == "updated_at"
        hits.sort(key=(lambda h: h.updated_at) if by_time else (lambda h: h.name), reverse=by_time)
        return hits[:limit]


def _column_nodes(view: DatasetView, visible: Any) -> list[ColumnNode]:
    """The fields of a dataset's (visible) `columnLineage` facet, each with its visible input fields."""
    facet = view.facets.get("columnLineage")
    fields = facet.get("fields") if isinstance(facet, dict) else None
    if not isinstance(fields, dict):
        return []
    schema = view.facets.get("schema")
    types = {
        f.get("name"): f.get("type")
        for f in (schema.get("fields") if isinstance(schema, dict) and isinstance(schema.get("fields"), list) else [])
        if isinstance(f, dict)
    }
    out = []
    for name, spec in sorted(fields.items()):
        if not isinstance(spec, dict):
            continue
        inputs = []
        for i in spec.get("inputFields") or []:
            if not isinstance(i, dict) or not all(isinstance(i.get(k), str) for k in ("namespace", "name", "field")):
                continue
            if not visible((i["namespace"], i["name"])):
                continue
            transformation = next((t for t in i.get("transformations") or [] if isinstance(t, dict)), {})
            inputs.append(
                InputField(
                    i["namespace"],
                    i["name"],
                    i["field"],
                    _str(spec.get("transformationDescription")) or _str(transformation.get("description")),
                    _str(spec.get("transformationType")) or _str(transformation.get("type")),
                )
            )
        out.append(
            ColumnNode(view.row.namespace, view.row.name, name, _str(types.get(name)), view.row.current_version, inputs)
        )
    return out


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def job_location(facets: dict[str, Any]) -> str | None:
    """Marquez's job `location`: the `sourceCodeLocation` facet's url."""
    loc = facets.get("sourceCodeLocation")
    url = loc.get("url") if isinstance(loc, dict) else None
    return url if isinstance(url, str) else None


IDENTITY_KEYS = ("eventType", "eventTime", "producer", "schemaURL")


def _identity(event: dict[str, Any], reason: str) -> dict[str, Any]:
    """A RunEvent reduced to what names it: no facet of the run, job or any dataset."""
    out: dict[str, Any] = {k: event[k] for k in IDENTITY_KEYS if k in event}
    run = event.get("run") or {}
    job = event.get("job") or {}
    out["run"] = {"runId": run.get("runId"), "facets": {}}
    out["job"] = {"namespace": job.get("namespace"), "name": job.get("name"), "facets": {}}
    for key in ("inputs", "outputs"):
        out[key] = [
            {"namespace": d.get("namespace"), "name": d.get("name"), "facets": {}}
            for d in event.get(key) or []
            if isinstance(d, dict)
        ]
    out["withheld"] = reason
    return out
