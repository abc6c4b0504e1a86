"""Projects OpenLineage entries into the lineage tables, in the append's own transaction.

Run state follows eventType (START/RUNNING -> RUNNING; COMPLETE, FAIL, ABORT are terminal; OTHER
changes nothing). Facets are additive across a run's events and a facet of the same name replaces
the earlier one (OpenLineage spec, "Run cycle"); job and dataset facets merge the same way. Times
come from the log (`integrated_time`) so that a rebuild reproduces every row exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, insert, select, tuple_, update
from sqlmodel import Session

from ledger.lineage.events import utc_time
from ledger.lineage.models import Dataset, DatasetVersion, Job, JobDataset, Namespace, Run, RunDataset, RunEvent
from ledger.store.db import bulk_insert, chunks
from ledger.tlog.entry import EntryHeader

TERMINAL = {"COMPLETE", "FAIL", "ABORT"}
LINEAGE_KINDS = {"openlineage.run_event", "openlineage.dataset_event", "openlineage.job_event"}


def code_version(job_facets: dict[str, Any]) -> str | None:
    """The job's code version: `sourceCodeLocation.version`, else a digest of `sourceCode`."""
    loc = job_facets.get("sourceCodeLocation")
    if isinstance(loc, dict) and loc.get("version"):
        return str(loc["version"])
    src = job_facets.get("sourceCode")
    if isinstance(src, dict) and isinstance(src.get("sourceCode"), str):
        return "sha256:" + hashlib.sha256(src["sourceCode"].encode()).hexdigest()
    return None


def dataset_version(ds: dict[str, Any], io_facets_key: str | None = None) -> str | None:
    """The `version` dataset facet, or a `datasetVersion` input/output facet."""
    facets = ds.get("facets") or {}
    v = facets.get("version")
    if isinstance(v, dict) and v.get("datasetVersion") not in (None, ""):
        return str(v["datasetVersion"])
    if io_facets_key:
        io = ds.get(io_facets_key) or {}
        for key in ("datasetVersion", "version"):
            f = io.get(key)
            if isinstance(f, dict) and f.get("datasetVersion") not in (None, ""):
                return str(f["datasetVersion"])
    return None


def dataset_digest(ds: dict[str, Any]) -> str | None:
    """Our custom `contentDigest` dataset facet (schemas/facets/ContentDigestDatasetFacet.json)."""
    f = (ds.get("facets") or {}).get("contentDigest")
    if isinstance(f, dict) and isinstance(f.get("digest"), str):
        return f["digest"]
    return None


def _merge(old: dict[str, Any] | None, new: Any) -> dict[str, Any]:
    merged = dict(old or {})
    if isinstance(new, dict):
        merged.update(new)
    return merged


Row = dict[str, Any]


class _Batch:
    """The rows one append touches, held as plain dicts: loaded with one query per table, changed in
    memory event by event (in seq order), and written back with one multi-row statement per table.

    New datasets and jobs get their ids first, in order of first appearance in the log, so that a
    rebuild (which replays in seq order too) assigns exactly the same ids.
    """

    def __init__(self, session: Session, events: list[tuple[EntryHeader, dict[str, Any]]]) -> None:
        self.session = session
        ds_keys: dict[tuple[str, str], EntryHeader] = {}
        job_keys: dict[tuple[str, str], EntryHeader] = {}
        run_ids: set[str] = set()
        for h, ev in events:  # first appearances, in processing order
            if "job" in ev:
                job_keys.setdefault((ev["job"]["namespace"], ev["job"]["name"]), h)
            for d in [*(ev.get("inputs") or []), *(ev.get("outputs") or [])]:
                ds_keys.setdefault((d["namespace"], d["name"]), h)
            if "dataset" in ev:
                ds_keys.setdefault((ev["dataset"]["namespace"], ev["dataset"]["name"]), h)
            if "run" in ev:
                run_ids.add(str(ev["run"]["runId"]).lower())
        t = _tables()
        self.namespaces: dict[str, Row] = {
            r["name"]: r for r in self._in(t["ns"], t["ns"].c.name, {k[0] for k in [*ds_keys, *job_keys]})
        }
        self.datasets: dict[tuple[str, str], Row] = {
            (r["namespace"], r["name"]): r for r in self._pairs(t["ds"], ds_keys)
        }
        self.jobs: dict[tuple[str, str], Row] = {
            (r["namespace"], r["name"]): r for r in self._pairs(t["job"], job_keys)
        }
        self._create(
            t["ds"],
            ds_keys,
            self.datasets,
            {
                "facets": {},
                "current_version": None,
                "source": False,
                "source_seq": None,
                "source_name": None,
                "source_uri": None,
            },
        )
        self._create(
            t["job"],
            job_keys,
            self.jobs,
            {"facets": {}, "code_version": None, "latest_run_id": None, "parent_job_name": None},
        )
        self.runs: dict[str, Row] = {r["run_id"]: r for r in self._in(t["run"], t["run"].c.run_id, run_ids)}
        ds_ids = {r["id"] for r in self.datasets.values()}
        self.versions: dict[tuple[int, str], Row] = {
            (r["dataset_id"], r["version"]): r for r in self._in(t["ver"], t["ver"].c.dataset_id, ds_ids)
        }
        self.run_edges: dict[tuple[str, int, str], Row] = {
            (r["run_id"], r["dataset_id"], r["direction"]): r for r in self._in(t["rds"], t["rds"].c.run_id, run_ids)
        }
        job_ids = {r["id"] for r in self.jobs.values()}
        self.job_edges: set[tuple[int, int, str]] = {
            (r["job_id"], r["dataset_id"], r["direction"]) for r in self._in(t["jds"], t["jds"].c.job_id, job_ids)
        }
        self.new: dict[str, list[Row]] = {"ns": [], "run": [], "ver": [], "rds": [], "jds": [], "evt": []}
        self._fresh: set[int] = set()  # id() of every row in `new`: they are inserted, never updated
        self.dirty: dict[str, dict[Any, Row]] = {"ns": {}, "ds": {}, "job": {}, "run": {}, "ver": {}, "rds": {}}

    def _in(self, table: Any, column: Any, values: Iterable[Any]) -> list[Row]:
        out: list[Row] = []
        for part in chunks(sorted(values)):
            out += [dict(r._mapping) for r in self.session.execute(select(table).where(column.in_(part)))]
        return out

    def _pairs(self, table: Any, keys: dict[tuple[str, str], EntryHeader]) -> list[Row]:
        out: list[Row] = []
        for part in chunks(keys):
            q = select(table).where(tuple_(table.c.namespace, table.c.name).in_(part))
            out += [dict(r._mapping) for r in self.session.execute(q)]
        return out

    def _create(
        self, table: Any, keys: dict[tuple[str, str], EntryHeader], known: dict[tuple[str, str], Row], defaults: Row
    ) -> None:
        rows = [
            {
                "namespace": k[0],
                "name": k[1],
                "created_at": h.integrated_time,
                "updated_at": h.integrated_time,
                "last_seq": h.seq,
                **defaults,
            }
            for k, h in keys.items()
            if k not in known
        ]
        if not rows:
            return
        # One multi-row INSERT ... RETURNING; ids follow first appearance (the list's order).
        result = self.session.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows)
        for row, (new_id,) in zip(rows, result.all(), strict=True):
            row["id"] = new_id
            known[(row["namespace"], row["name"])] = row

    def namespace(self, name: str, h: EntryHeader) -> None:
        ns = self.namespaces.get(name)
        if ns is None:
            ns = {"name": name, "created_at": h.integrated_time, "updated_at": h.integrated_time, "owner": h.principal}
            self.namespaces[name] = ns
            self._add("ns", ns)
        elif ns["updated_at"] != h.integrated_time:
            ns["updated_at"] = h.integrated_time
            if id(ns) not in self._fresh:
                self.dirty["ns"][name] = ns

    def dataset(self, d: dict[str, Any], h: EntryHeader) -> Row:
        key = (d["namespace"], d["name"])
        self.namespace(key[0], h)
        ds = self.datasets[key]
        ds["facets"] = _merge(ds["facets"], d.get("facets"))
        source = (d.get("facets") or {}).get("dataSource")
        if isinstance(source, dict) and isinstance(source.get("name"), str) and source["name"]:
            ds["source_name"] = source["name"]
            ds["source_uri"] = source.get("uri") if isinstance(source.get("uri"), str) else None
        ds["updated_at"] = h.integrated_time
        ds["last_seq"] = h.seq
        self.dirty["ds"][ds["id"]] = ds
        return ds

    def version(self, ds: Row, version: str | None, d: dict[str, Any], h: EntryHeader, produced_by: str | None) -> None:
        if version is None:
            return
        ds["current_version"] = version
        schema = (d.get("facets") or {}).get("schema")
        fields = schema.get("fields") if isinstance(schema, dict) else None
        fields = fields if isinstance(fields, list) else None
        key = (ds["id"], version)
        v = self.versions.get(key)
        if v is None:
            v = {
                "dataset_id": ds["id"],
                "version": version,
                "digest": dataset_digest(d),
                "schema_fields": fields,
                "produced_by_run": produced_by,
                "created_at": h.integrated_time,
                "seq": h.seq,
            }
            self.versions[key] = v
            self._add("ver", v)
            return
        changed = False
        if produced_by and not v["produced_by_run"]:
            v["produced_by_run"], changed = produced_by, True
        if v["digest"] is None and dataset_digest(d):
            v["digest"], changed = dataset_digest(d), True
        if v["schema_fields"] is None and fields is not None:
            v["schema_fields"], changed = fields, True
        if changed and id(v) not in self._fresh:
            self.dirty["ver"][v["id"]] = v

    def job(self, j: dict[str, Any], h: EntryHeader) -> Row:
        key = (j["namespace"], j["name"])
        self.namespace(key[0], h)
        job = self.jobs[key]
        job["facets"] = _merge(job["facets"], j.get("facets"))
        job["code_version"] = code_version(job["facets"]) or job["code_version"]
        job["updated_at"] = h.integrated_time
        job["last_seq"] = h.seq
        self.dirty["job"][job["id"]] = job
        return job

    def job_edge(self, job: Row, ds: Row, direction: str) -> None:
        key = (job["id"], ds["id"], direction)
        if key not in self.job_edges:
            self.job_edges.add(key)
            self._add("jds", {"job_id": job["id"], "dataset_id": ds["id"], "direction": direction})

    def run_edge(self, run_id: str, ds: Row, direction: str, version: str | None) -> None:
        key = (run_id, ds["id"], direction)
        edge = self.run_edges.get(key)
        if edge is None:
            edge = {"run_id": run_id, "dataset_id": ds["id"], "direction": direction, "version": version}
            self.run_edges[key] = edge
            self._add("rds", edge)
        elif version is not None and edge["version"] != version:
            edge["version"] = version
            if id(edge) not in self._fresh:
                self.dirty["rds"][key] = edge

    def run(self, run_id: str, job: Row, h: EntryHeader) -> Row:
        run = self.runs.get(run_id)
        if run is None:
            run = {
                "run_id": run_id,
                "job_id": job["id"],
                "state": "NEW",
                "facets": {},
                "code_version": None,
                "started_at": None,
                "ended_at": None,
                "completed_at": None,
                "updated_at": h.integrated_time,
                "principals": [],
                "seqs": [],
                "first_seq": h.seq,
                "last_seq": h.seq,
            }
            self.runs[run_id] = run
            self._add("run", run)
        elif id(run) not in self._fresh:
            self.dirty["run"][run_id] = run
        return run

    def _add(self, table: str, row: Row) -> None:
        self.new[table].append(row)
        self._fresh.add(id(row))

    def write(self) -> None:
        """One statement per table for the inserts, one executemany per table for the updates."""
        t = _tables()
        s = self.session
        for name in ("ns", "run", "ver", "rds", "jds", "evt"):
            bulk_insert(s, t[name], self.new[name])
        updates = {
            "ns": (t["ns"].c.name, "name"),
            "ds": (t["ds"].c.id, "id"),
            "job": (t["job"].c.id, "id"),
            "run": (t["run"].c.run_id, "run_id"),
            "ver": (t["ver"].c.id, "id"),
        }
        for name, (pk_col, pk) in updates.items():
            rows = list(self.dirty[name].values())
            if not rows:
                continue
            cols = [c.name for c in t[name].columns if c.name != pk]
            stmt = update(t[name]).where(pk_col == bindparam("_pk")).values({c: bindparam(c) for c in cols})
            s.execute(stmt, [{**{c: r[c] for c in cols}, "_pk": r[pk]} for r in rows])
        if self.dirty["rds"]:
            rds = t["rds"]
            stmt = (
                update(rds)
                .where(
                    rds.c.run_id == bindparam("_run"),
                    rds.c.dataset_id == bindparam("_ds"),
                    rds.c.direction == bindparam("_dir"),
                )
                .values(version=bindparam("version"))
            )
            s.execute(
                stmt,
                [
                    {"_run": k[0], "_ds": k[1], "_dir": k[2], "version": r["version"]}
                    for k, r in self.dirty["rds"].items()
                ],
            )
        s.expire_all()  # ORM objects read earlier in this transaction must not shadow these rows


def _tables() -> dict[str, Any]:
    return {
        "ns": Namespace.__table__,  # type: ignore[attr-defined]
        "ds": Dataset.__table__,  # type: ignore[attr-defined]
        "ver": DatasetVersion.__table__,  # type: ignore[attr-defined]
        "job": Job.__table__,  # type: ignore[attr-defined]
        "run": Run.__table__,  # type: ignore[attr-defined]
        "rds": RunDataset.__table__,  # type: ignore[attr-defined]
        "jds": JobDataset.__table__,  # type: ignore[attr-defined]
        "evt": RunEvent.__table__,  # type: ignore[attr-defined]
    }


def project_run_event(b: _Batch, h: EntryHeader, ev: dict[str, Any]) -> None:
    job = b.job(ev["job"], h)
    run_id = str(ev["run"]["runId"]).lower()
    run = b.run(run_id, job, h)
    event_type = ev.get("eventType") or "OTHER"
    run["facets"] = _merge(run["facets"], ev["run"].get("facets"))
    run["code_version"] = code_version(ev["job"].get("facets") or {}) or run["code_version"] or job["code_version"]
    run["principals"] = sorted({*run["principals"], h.principal})
    run["seqs"] = [*run["seqs"], h.seq]
    run["last_seq"] = h.seq
    run["updated_at"] = h.integrated_time
    when = ev.get("eventTime")
    if event_type in ("START", "RUNNING"):
        if run["state"] not in TERMINAL:
            run["state"] = "RUNNING"
        if event_type == "START":
            run["started_at"] = run["started_at"] or when
    elif event_type in TERMINAL:
        run["state"] = event_type
        run["ended_at"] = when
        if event_type == "COMPLETE":
            run["completed_at"] = when
    job["latest_run_id"] = run_id
    parent = (ev["run"].get("facets") or {}).get("parent")
    parent_job = parent.get("job") if isinstance(parent, dict) else None
    if isinstance(parent_job, dict) and isinstance(parent_job.get("name"), str):
        job["parent_job_name"] = parent_job["name"]
    b.new["evt"].append(
        {
            "seq": h.seq,
            "event_time": utc_time(when) or h.integrated_time,
            "namespace": ev["job"]["namespace"],
            "run_id": run_id,
        }
    )
    for d in ev.get("inputs") or []:
        ds = b.dataset(d, h)
        version = dataset_version(d, "inputFacets")
        b.version(ds, version, d, h, None)
        b.run_edge(run_id, ds, "in", version)
        b.job_edge(job, ds, "in")
    for d in ev.get("outputs") or []:
        ds = b.dataset(d, h)
        version = dataset_version(d, "outputFacets")
        b.version(ds, version, d, h, run_id)
        b.run_edge(run_id, ds, "out", version)
        b.job_edge(job, ds, "out")


def project_dataset_event(b: _Batch, h: EntryHeader, ev: dict[str, Any]) -> None:
    d = ev["dataset"]
    ds = b.dataset(d, h)
    if "dataSource" in (d.get("facets") or {}):
        ds["source"] = True
        ds["source_seq"] = h.seq
    b.version(ds, dataset_version(d), d, h, None)


def project_job_event(b: _Batch, h: EntryHeader, ev: dict[str, Any]) -> None:
    job = b.job(ev["job"], h)
    for direction, key in (("in", "inputs"), ("out", "outputs")):
        for d in ev.get(key) or []:
            b.job_edge(job, b.dataset(d, h), direction)


PROJECTORS = {
    "openlineage.run_event": project_run_event,
    "openlineage.dataset_event": project_dataset_event,
    "openlineage.job_event": project_job_event,
}


def project_lineage(session: Session, events: list[tuple[EntryHeader, dict[str, Any]]]) -> None:
    """Applies lineage entries, in seq order, to the projection tables."""
    events = [(h, p) for h, p in events if h.kind in LINEAGE_KINDS and p is not None]
    if not events:
        return
    session.flush()  # ORM changes made earlier in this transaction must be in the tables we read
    batch = _Batch(session, events)
    for h, ev in events:
        PROJECTORS[h.kind](batch, h, ev)
    batch.write()
