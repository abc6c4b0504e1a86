"""CPU per event of the intake's hot path, in process: what a `POST /api/v1/lineage` pays between
the body bytes and the Merkle leaf, without HTTP, the database or the policy engine.

Stages, each timed alone over the same events (µs of CPU per event, `time.process_time`):
- parse: `ledger.api.body.parse_json` of the body bytes (UTF-8, strict JSON, unique members, depth),
  as the lineage endpoints call it (`check_strings=False`: `validate_event` names NUL itself).
- validate: `ledger.lineage.events.validate_event` (the envelope schema, facets, identifiers,
  eventTime window, NUL scan, canonical JSON and the dedup hash, since it returns both).
- canonical: `ledger.tlog.entry.canonical_json` alone (RFC 8785), for reference: inside `validate`.
- dedup: SHA-256 of the canonical bytes alone, for reference: inside `validate`.
- payload digest: a fresh 32-byte salt and `payload_digest(salt, canonical)` (what the sequencer does).
- leaf hash: `EntryHeader(...).leaf_hash()` (JCS of the header, RFC 9162 leaf hash).
- total: parse + validate + payload digest + leaf hash in one loop, per event; the figure the
  budget is about (0.3 ms). For a batch, one body of `--batch` events is parsed once.

The events are Spark-like RunEvents (openlineage-spark 1.x shapes: spark_version, processing_engine,
parent and environment-properties run facets; jobType; inputs with schema, dataSource and symlinks;
outputs with schema, columnLineage, outputStatistics and lifecycleStateChange), 3-8 KiB each, every
one with its own runId and names, so no cache helps.

    python bench/hot_path.py [--events 5000] [--batch 500] [--columns 4] [--profile]

`--profile` prints a pyinstrument profile of `validate_event` (pip install pyinstrument into .venv).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger.api.body import parse_json
from ledger.lineage.events import validate_event
from ledger.tlog.entry import SALT_SIZE, EntryHeader, canonical_json, payload_digest

PRODUCER = "https://github.com/OpenLineage/OpenLineage/tree/1.23.0/integration/spark"
SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
FACETS = "https://openlineage.io/spec/facets/1-1-1"


def _facet(facet: str, /, **body: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": f"{FACETS}/{facet}.json#/$defs/{facet}", **body}


def _fields(i: int, n: int) -> list[dict[str, Any]]:
    types = ["long", "string", "double", "timestamp", "boolean", "decimal(18,2)"]
    return [{"name": f"col_{i % 7}_{k}", "type": types[k % len(types)], "description": None} for k in range(n)]


def spark_event(i: int, columns: int = 4) -> dict[str, Any]:
    """A COMPLETE RunEvent as openlineage-spark sends it for an INSERT ... SELECT over two tables of
    `columns` columns each into a third (4 columns: ~6.3 KiB as compact JSON; 8: ~7.7 KiB)."""
    inputs = [
        {
            "namespace": "hdfs://namenode:8020",
            "name": f"/warehouse/raw.db/orders_{i % 97}",
            "facets": {
                "dataSource": _facet("DatasourceDatasetFacet", name="hdfs://namenode:8020", uri="hdfs://namenode:8020"),
                "schema": _facet("SchemaDatasetFacet", fields=_fields(i, columns)),
                "symlinks": _facet(
                    "SymlinksDatasetFacet",
                    identifiers=[
                        {"namespace": "hive://metastore:9083", "name": f"raw.orders_{i % 97}", "type": "TABLE"}
                    ],
                ),
                "version": _facet("DatasetVersionDatasetFacet", datasetVersion=f"{i * 7 % 100_000}"),
            },
            "inputFacets": {},
        },
        {
            "namespace": "s3://lake",
            "name": f"reference/customers/day={i % 28 + 1}",
            "facets": {
                "dataSource": _facet("DatasourceDatasetFacet", name="s3://lake", uri="s3://lake"),
                "schema": _facet("SchemaDatasetFacet", fields=_fields(i + 1, columns)),
            },
            "inputFacets": {},
        },
    ]
    out_fields = _fields(i + 2, columns)
    column_lineage = {
        f["name"]: {
            "inputFields": [
                {
                    "namespace": inputs[k % 2]["namespace"],
                    "name": inputs[k % 2]["name"],
                    "field": inputs[k % 2]["facets"]["schema"]["fields"][k]["name"],
                    "transformations": [{"type": "DIRECT", "subtype": "IDENTITY", "description": "", "masking": False}],
                }
            ]
        }
        for k, f in enumerate(out_fields)
    }
    return {
        "eventType": "COMPLETE",
        "eventTime": f"2026-11-21T10:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
        "producer": PRODUCER,
        "schemaURL": SCHEMA,
        "run": {
            "runId": str(uuid.UUID(int=i * 2654435761 % (1 << 122) | (4 << 76) | (2 << 62))),
            "facets": {
                "parent": _facet(
                    "ParentRunFacet",
                    run={"runId": str(uuid.UUID(int=(i + 1) * 40503 % (1 << 122) | (4 << 76) | (2 << 62)))},
                    job={"namespace": "spark", "name": f"nightly_orders_{i % 13}"},
                ),
                "spark_version": _facet("SparkVersionFacet", **{"spark-version": "3.5.1"}),
                "processing_engine": _facet(
                    "ProcessingEngineRunFacet", version="3.5.1", name="spark", openlineageAdapterVersion="1.23.0"
                ),
                "environment-properties": _facet(
                    "EnvironmentPropertiesRunFacet",
                    **{"environment-properties": {"spark.master": "yarn", "spark.app.name": f"orders_{i % 13}"}},
                ),
            },
        },
        "job": {
            "namespace": "spark",
            "name": f"nightly_orders_{i % 13}.execute_insert_into_hadoop_fs_relation_command.warehouse_orders_{i}",
            "facets": {
                "jobType": _facet("JobTypeJobFacet", processingType="BATCH", integration="SPARK", jobType="SQL_JOB"),
            },
        },
        "inputs": inputs,
        "outputs": [
            {
                "namespace": "hdfs://namenode:8020",
                "name": f"/warehouse/curated.db/orders_enriched_{i % 97}",
                "facets": {
                    "dataSource": _facet(
                        "DatasourceDatasetFacet", name="hdfs://namenode:8020", uri="hdfs://namenode:8020"
                    ),
                    "schema": _facet("SchemaDatasetFacet", fields=out_fields),
                    "columnLineage": _facet("ColumnLineageDatasetFacet", fields=column_lineage),
                    "lifecycleStateChange": _facet(
                        "LifecycleStateChangeDatasetFacet", lifecycleStateChange="OVERWRITE"
                    ),
                },
                "outputFacets": {
                    "outputStatistics": _facet("OutputStatisticsOutputDatasetFacet", rowCount=1000 + i, size=65536 + i)
                },
            }
        ],
    }


def cpu_us_per_event(fn: Callable[[], Any], count: int, repeat: int) -> float:
    """Best of `repeat` rounds: CPU µs per event of `fn`, which handles `count` events per call."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, (time.process_time() - t0) / count * 1e6)
    return best


def measure(n: int, batch: int, repeat: int, columns: int) -> dict[str, Any]:
    events = [spark_event(i, columns) for i in range(n)]
    bodies = [json.dumps(e, separators=(",", ":")).encode() for e in events]
    parsed = [parse_json(b, check_strings=False) for b in bodies]
    validated = [validate_event(e) for e in parsed]
    canon = [v.canonical for v in validated]
    salts = [secrets.token_bytes(SALT_SIZE) for _ in range(n)]
    digests = [payload_digest(s, c) for s, c in zip(salts, canon, strict=True)]
    sizes = sorted(len(b) for b in bodies)

    def header(i: int, digest: str) -> EntryHeader:
        v = validated[i]
        return EntryHeader(
            seq=1_000_000 + i,
            kind=v.kind,
            subject=v.subject,
            integrated_time="2026-11-21T10:00:00.000000Z",
            principal="pipeline",
            payload_digest=digest,
        )

    def total_one() -> None:
        for i, body in enumerate(bodies):
            v = validate_event(parse_json(body, check_strings=False))
            digest = payload_digest(secrets.token_bytes(SALT_SIZE), v.canonical)
            header(i, digest).leaf_hash()

    batch_bodies = [b"[" + b",".join(bodies[k : k + batch]) + b"]" for k in range(0, n, batch)]

    def total_batch() -> None:
        i = 0
        for body in batch_bodies:
            for event in parse_json(body, check_strings=False):
                v = validate_event(event)
                header(i, payload_digest(secrets.token_bytes(SALT_SIZE), v.canonical)).leaf_hash()
                i += 1

    def each(fn: Callable[[Any], Any], items: list[Any]) -> Callable[[], None]:
        def run() -> None:
            for item in items:
                fn(item)  # results are dropped, as the server drops them: no heap grows under the timing

        return run

    stages: dict[str, Callable[[], None]] = {
        "parse": each(lambda b: parse_json(b, check_strings=False), bodies),
        "validate_event": each(validate_event, parsed),
        "  canonical_json (in validate_event)": each(canonical_json, parsed),
        "  dedup sha256 (in validate_event)": each(lambda c: hashlib.sha256(c).hexdigest(), canon),
        "salt + payload digest": each(lambda c: payload_digest(secrets.token_bytes(SALT_SIZE), c), canon),
        "leaf hash": each(lambda i: header(i, digests[i]).leaf_hash(), list(range(n))),
    }
    out: dict[str, Any] = {
        "events": n,
        "body_bytes": {"min": sizes[0], "median": sizes[len(sizes) // 2], "max": sizes[-1]},
        "stages_us": {name: cpu_us_per_event(fn, n, repeat) for name, fn in stages.items()},
    }
    out["total_us"] = cpu_us_per_event(total_one, n, repeat)
    out["batch"] = batch
    out["batch_parse_us"] = cpu_us_per_event(
        each(lambda b: parse_json(b, check_strings=False), batch_bodies), n, repeat
    )
    out["batch_total_us"] = cpu_us_per_event(total_batch, n, repeat)
    return out


def profile(n: int) -> None:
    from pyinstrument import Profiler  # type: ignore[import-not-found]

    parsed = [json.loads(json.dumps(spark_event(i))) for i in range(n)]
    profiler = Profiler(interval=0.0002)
    profiler.start()
    for _ in range(3):
        for e in parsed:
            validate_event(e)
    profiler.stop()
    print(profiler.output_text(unicode=True, color=False, show_all=False))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--columns", type=int, default=4, help="columns per table: 4 gives ~6.3 KiB events, 8 ~7.7 KiB")
    ap.add_argument("--repeat", type=int, default=3, help="rounds per stage; the best is reported")
    ap.add_argument("--profile", action="store_true", help="print a pyinstrument profile of validate_event")
    args = ap.parse_args(argv)
    if args.profile:
        profile(min(args.events, 2000))
        return
    r = measure(args.events, args.batch, args.repeat, args.columns)
    b = r["body_bytes"]
    print(f"{r['events']} Spark-like RunEvents, body {b['min']}-{b['max']} bytes (median {b['median']})")
    print(f"CPU µs per event (best of {args.repeat}):")
    rows = [
        *r["stages_us"].items(),
        ("TOTAL one event per body", r["total_us"]),
        (f"batch parse ({r['batch']} per body)", r["batch_parse_us"]),
        (f"TOTAL batch ({r['batch']} per body)", r["batch_total_us"]),
    ]
    for name, us in rows:
        print(f"  {name:<40} {us:8.1f}")


if __name__ == "__main__":
    main()
