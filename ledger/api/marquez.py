"""Presenters of Marquez API v1 shapes (marquez/service/models/*.java), from the read service's views.

Every timestamp is Marquez's form: ISO 8601 in UTC with 6 fractional digits and `Z`. Run states
are Marquez's (DESIGN.md 8, normative): NEW, RUNNING, COMPLETED, ABORTED, FAILED.
"""

from __future__ import annotations

from typing import Any

from ledger.lineage.events import utc_time
from ledger.lineage.models import Dataset, Job, Namespace, marquez_run_state
from ledger.lineage.stats import Interval
from ledger.reads.lineage import (
    ColumnNode,
    DatasetView,
    Graph,
    IntervalCount,
    JobVersionView,
    JobView,
    LineageEventCounts,
    RunView,
    SearchHit,
    SourceView,
    UpstreamRun,
    VersionView,
)
from ledger.tlog.entry import format_time, parse_time


def namespace_json(n: Namespace) -> dict[str, Any]:
    return {
        "name": n.name,
        "createdAt": utc_time(n.created_at),
        "updatedAt": utc_time(n.updated_at),
        "ownerName": n.owner,
        "description": None,
        "isHidden": False,
    }


def _field_json(f: Any) -> dict[str, Any]:
    return {"name": f.get("name"), "type": f.get("type"), "tags": [], "description": f.get("description")}


def _fields(facets: dict[str, Any]) -> list[dict[str, Any]]:
    schema = facets.get("schema")
    fields = schema.get("fields") if isinstance(schema, dict) else None
    if not isinstance(fields, list):
        return []
    return [_field_json(f) for f in fields if isinstance(f, dict)]


def dataset_json(v: DatasetView) -> dict[str, Any]:
    d = v.row
    effective = v.effective_tags
    return {
        "id": {"namespace": d.namespace, "name": d.name},
        "type": "DB_TABLE",
        "name": d.name,
        "physicalName": d.name,
        "createdAt": utc_time(d.created_at),
        "updatedAt": utc_time(d.updated_at),
        "namespace": d.namespace,
        "sourceName": v.source_name,
        "fields": _fields(v.facets),
        "tags": effective,
        "classification": {
            "effective": effective,
            "own": list(v.tags.own) if v.tags is not None else [],
            "declassified": list(v.tags.declassified) if v.tags is not None else [],
            "unapproved": list(v.tags.unapproved) if v.tags is not None else [],
        },
        "lastModifiedAt": utc_time(d.updated_at),
        "lastLifecycleState": None,
        "description": None,
        "currentVersion": d.current_version,
        "columnLineage": None,
        "facets": v.facets,
        "deleted": False,
        "declaredSource": d.source,
    }


def version_json(v: VersionView) -> dict[str, Any]:
    d = v.dataset.row
    fields = [] if v.dataset.hidden else [_field_json(f) for f in (v.row.schema_fields or []) if isinstance(f, dict)]
    return {
        "id": {"namespace": d.namespace, "name": d.name, "version": v.row.version},
        "type": "DB_TABLE",
        "name": d.name,
        "physicalName": d.name,
        "createdAt": utc_time(v.row.created_at),
        "version": v.row.version,
        "namespace": d.namespace,
        "sourceName": v.dataset.source_name,
        "fields": fields,
        "tags": v.dataset.effective_tags,
        "lifecycleState": None,
        "description": None,
        "digest": v.row.digest,
        "createdByRun": run_json(v.producer) if v.producer else None,
        "facets": {},
        "entry": v.row.seq,
    }


def _duration_ms(start: str | None, end: str | None) -> int | None:
    a, b = parse_time(utc_time(start)), parse_time(utc_time(end))
    if a is None or b is None:
        return None
    return int((b - a).total_seconds() * 1000)


def _nominal(facets: dict[str, Any], key: str) -> str | None:
    nominal = facets.get("nominalTime")
    return utc_time(nominal.get(key)) if isinstance(nominal, dict) else None


def _parent_run_id(facets: dict[str, Any]) -> str | None:
    parent = facets.get("parent")
    run = parent.get("run") if isinstance(parent, dict) else None
    run_id = run.get("runId") if isinstance(run, dict) else None
    return run_id if isinstance(run_id, str) else None


def _dataset_versions(io: list[Any], direction: str) -> list[dict[str, Any]]:
    return [
        {"datasetVersionId": {"namespace": d.namespace, "name": d.name, "version": e.version}, "facets": {}}
        for e, d in io
        if e.direction == direction
    ]


def run_json(v: RunView) -> dict[str, Any]:
    r, job, facets = v.row, v.job, v.facets
    return {
        "id": r.run_id,
        "createdAt": utc_time(r.started_at) or utc_time(r.updated_at),
        "updatedAt": utc_time(r.updated_at),
        "nominalStartTime": _nominal(facets, "nominalStartTime"),
        "nominalEndTime": _nominal(facets, "nominalEndTime"),
        "state": marquez_run_state(r.state),
        "startedAt": utc_time(r.started_at),
        "endedAt": utc_time(r.ended_at),
        "durationMs": _duration_ms(r.started_at, r.ended_at),
        "args": {},
        "jobVersion": {"namespace": job.namespace, "name": job.name, "version": r.code_version} if job else None,
        "inputDatasetVersions": _dataset_versions(v.io, "in"),
        "outputDatasetVersions": _dataset_versions(v.io, "out"),
        "context": {},
        "facets": facets,
        "parentRunId": _parent_run_id(facets),
        "principals": r.principals,
        "entries": r.seqs,
    }


def _location(facets: dict[str, Any]) -> str | None:
    loc = facets.get("sourceCodeLocation")
    url = loc.get("url") if isinstance(loc, dict) else None
    return url if isinstance(url, str) else None


def job_json(v: JobView) -> dict[str, Any]:
    j = v.row
    return _job(j, v.edges, v.facets) | {"latestRun": run_json(v.latest) if v.latest else None}


def _job(j: Job, edges: list[tuple[str, Dataset]], facets: dict[str, Any]) -> dict[str, Any]:
    """A job's Marquez shape; `facets` as the reader redacted them (never `j.facets` itself)."""
    return {
        "id": {"namespace": j.namespace, "name": j.name},
        "type": "BATCH",
        "name": j.name,
        "simpleName": j.name,
        "parentJobName": j.parent_job_name,
        "parentJobUuid": None,
        "createdAt": utc_time(j.created_at),
        "updatedAt": utc_time(j.updated_at),
        "namespace": j.namespace,
        "inputs": [{"namespace": d.namespace, "name": d.name} for direction, d in edges if direction == "in"],
        "outputs": [{"namespace": d.namespace, "name": d.name} for direction, d in edges if direction == "out"],
        "location": _location(facets),
        "description": None,
        "facets": facets,
        "currentVersion": j.code_version,
        "labels": [],
        "tags": [],
    }


def dataset_node_id(namespace: str, name: str) -> str:
    return f"dataset:{namespace}:{name}"


def job_node_id(namespace: str, name: str) -> str:
    return f"job:{namespace}:{name}"


def graph_json(g: Graph) -> dict[str, Any]:
    """Marquez's Lineage: `{graph: [{id, type, data, inEdges, outEdges}]}`."""
    in_edges: dict[str, list[dict[str, str]]] = {}
    out_edges: dict[str, list[dict[str, str]]] = {}
    for job, ds, dirn in g.edges:
        d_id, j_id = dataset_node_id(ds.namespace, ds.name), job_node_id(job.namespace, job.name)
        origin, dest = (d_id, j_id) if dirn == "in" else (j_id, d_id)
        e = {"origin": origin, "destination": dest}
        out_edges.setdefault(origin, []).append(e)
        in_edges.setdefault(dest, []).append(e)
    nodes: list[dict[str, Any]] = []
    for v in g.datasets:
        nid = dataset_node_id(v.row.namespace, v.row.name)
        nodes.append(
            {
                "id": nid,
                "type": "DATASET",
                "data": dataset_json(v),
                "inEdges": in_edges.get(nid, []),
                "outEdges": out_edges.get(nid, []),
            }
        )
    for j in g.jobs:
        nid = job_node_id(j.namespace, j.name)
        nodes.append(
            {
                "id": nid,
                "type": "JOB",
                "data": _job(j, [], g.job_facets.get(j.id, {})) | {"latestRun": None, "latestRunId": j.latest_run_id},  # type: ignore[arg-type]
                "inEdges": in_edges.get(nid, []),
                "outEdges": out_edges.get(nid, []),
            }
        )
    return {"graph": nodes, **({"truncated": True} if g.truncated else {})}


def _field_node_id(namespace: str, dataset: str, field: str) -> str:
    return f"datasetField:{namespace}:{dataset}:{field}"


def column_lineage_json(nodes: list[ColumnNode]) -> dict[str, Any]:
    """Marquez's ColumnLineageService.toLineage: a DATASET_FIELD node per field and per input field;
    a field's inEdges run from it to each input, an input's outEdges from it to the field (sic)."""
    graph: dict[str, dict[str, Any]] = {}
    for n in nodes:
        nid = _field_node_id(n.namespace, n.dataset, n.field)
        graph[nid] = {
            "id": nid,
            "type": "DATASET_FIELD",
            "data": {
                "namespace": n.namespace,
                "dataset": n.dataset,
                "datasetVersion": n.version,
                "field": n.field,
                "fieldType": n.field_type,
                "transformationDescription": n.inputs[0].transformation_description if n.inputs else None,
                "transformationType": n.inputs[0].transformation_type if n.inputs else None,
                "inputFields": [
                    {
                        "namespace": i.namespace,
                        "dataset": i.dataset,
                        "datasetVersion": None,
                        "field": i.field,
                        "transformationDescription": i.transformation_description,
                        "transformationType": i.transformation_type,
                    }
                    for i in n.inputs
                ],
            },
            "inEdges": [],
            "outEdges": [],
        }
    for n in nodes:
        nid = _field_node_id(n.namespace, n.dataset, n.field)
        for i in n.inputs:
            iid = _field_node_id(i.namespace, i.dataset, i.field)
            graph.setdefault(
                iid,
                {
                    "id": iid,
                    "type": "DATASET_FIELD",
                    "data": {
                        "namespace": i.namespace,
                        "dataset": i.dataset,
                        "datasetVersion": None,
                        "field": i.field,
                        "fieldType": "",
                        "transformationDescription": i.transformation_description,
                        "transformationType": i.transformation_type,
                        "inputFields": [],
                    },
                    "inEdges": [],
                    "outEdges": [],
                },
            )
            edge = {"origin": nid, "destination": iid}
            if edge not in graph[nid]["inEdges"]:
                graph[nid]["inEdges"].append(edge)
            out = {"origin": iid, "destination": nid}
            if out not in graph[iid]["outEdges"]:
                graph[iid]["outEdges"].append(out)
    return {"graph": [graph[k] for k in sorted(graph)]}


def _source_type(uri: str | None) -> str:
    scheme = uri.split(":", 1)[0] if uri and ":" in uri else ""
    return scheme.upper() or "DEFAULT"


def source_json(s: SourceView) -> dict[str, Any]:
    return {
        "type": _source_type(s.connection_url),
        "name": s.name,
        "createdAt": utc_time(s.created_at),
        "updatedAt": utc_time(s.updated_at),
        "connectionUrl": s.connection_url or "",
        "description": None,
    }


def search_json(hits: list[SearchHit]) -> dict[str, Any]:
    return {
        "totalCount": len(hits),
        "results": [
            {
                "type": h.type,
                "name": h.name,
                "updatedAt": utc_time(h.updated_at),
                "namespace": h.namespace,
                "nodeId": (dataset_node_id if h.type == "DATASET" else job_node_id)(h.namespace, h.name),
            }
            for h in hits
        ],
    }


def job_version_json(v: JobVersionView) -> dict[str, Any]:
    """Marquez's JobVersion (marquez/api/models/JobVersion.java)."""
    j = v.job
    return {
        "id": {"namespace": j.namespace, "name": j.name, "version": v.version},
        "name": j.name,
        "createdAt": utc_time(v.created_at),
        "version": v.version,
        "namespace": j.namespace,
        "location": v.location,
        "inputs": [{"namespace": ns, "name": name} for direction, ns, name in v.edges if direction == "in"],
        "outputs": [{"namespace": ns, "name": name} for direction, ns, name in v.edges if direction == "out"],
        "latestRun": run_json(v.latest) if v.latest else None,
    }


def run_upstream_json(runs: list[UpstreamRun]) -> dict[str, Any]:
    """Marquez's UpstreamRunLineage (marquez/service/LineageService.java, LineageDao's summaries)."""
    return {
        "runs": [
            {
                "job": {"namespace": u.job.namespace, "name": u.job.name, "version": u.run.code_version},
                "run": {
                    "id": u.run.run_id,
                    "start": utc_time(u.run.started_at),
                    "end": utc_time(u.run.ended_at),
                    "status": marquez_run_state(u.run.state),
                },
                "inputs": [
                    {"namespace": i.namespace, "name": i.name, "version": i.version, "producedByRunId": i.produced_by}
                    for i in u.inputs
                ],
            }
            for u in runs
        ]
    }


def _interval(i: Interval) -> dict[str, Any]:
    return {"startInterval": format_time(i.start), "endInterval": format_time(i.end)}


def lineage_metrics_json(rows: list[LineageEventCounts]) -> list[dict[str, Any]]:
    """Marquez's LineageMetric list: `{startInterval, endInterval, fail, start, complete, abort}`."""
    return [_interval(r.interval) | {k.lower(): n for k, n in r.counts.items()} for r in rows]


def interval_metrics_json(rows: list[IntervalCount]) -> list[dict[str, Any]]:
    """Marquez's IntervalMetric list: `{startInterval, endInterval, count}`."""
    return [_interval(r.interval) | {"count": r.count} for r in rows]
