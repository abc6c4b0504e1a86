"""Our transparency log against pymerkle 7 on the same leaves, in one process, one run.

Leaves: N canonical (RFC 8785) ~1.3 KB OpenLineage RunEvents, the same bytes for both. pymerkle gets
each as an entry (`append_entry(bytes)`, leaf = SHA-256(0x00 || bytes), RFC 9162 hashing); we get
the same event as the payload of a log entry (`Ledger.append([PendingEntry(payload=event)])`), whose
canonical bytes are those same bytes (our leaf is the entry header, which binds them by salted
digest, DESIGN.md 3.1, so the two roots differ by design; the work per leaf is what is compared).

What it measures
1. in-memory append: `ledger.tlog.tree.CompactRange.append_data(bytes)` vs `pymerkle.InmemoryTree
   .append_entry(bytes)`, N leaves, then the root.
2. durable append, one commit per leaf: `SqliteTree.append_entry` vs `Ledger.append([one])` on
   SQLite (WAL, synchronous=FULL), `--single` leaves (fsync-bound on both sides).
3. durable bulk append: `SqliteTree.append_entries(all)` (one transaction) vs `Ledger.append` in
   batches of 5,000 on SQLite, and on PostgreSQL (our store also writes the payload, salt, header
   row and every completed subtree hash, and computes a receipt with an inclusion proof per entry).
4. inclusion-proof latency at size N, random leaves: `SqliteTree.prove_inclusion(i + 1, N)` (cold:
   the first 20 calls, with pymerkle's subroot cache empty; warm: after) vs `Ledger.inclusion_proof
   (i, N)` on SQLite and on PostgreSQL.
Ratios are ours / pymerkle for throughput (above 1: ours faster) and pymerkle / ours for latency
(above 1: ours faster).

    python bench/pymerkle_compare.py [--quick] [--leaves 100000] [--single 2000] [--no-postgres]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from common import REPO, log, percentiles, pg_database, remember_start, run_event, write_results


def make_leaves(n: int) -> tuple[list[dict[str, Any]], list[bytes]]:
    from ledger.tlog.entry import canonical_json

    rng = random.Random(7)
    events = [run_event(i, str(uuid.UUID(int=rng.getrandbits(128), version=4))) for i in range(n)]
    return events, [canonical_json(e) for e in events]


def _pending(events: list[dict[str, Any]], leaves: list[bytes]) -> list[Any]:
    import hashlib

    from ledger.store.sequencer import PendingEntry

    return [
        PendingEntry(
            kind="openlineage.run_event",
            subject=f"run:{e['run']['runId']}",
            principal="bench",
            payload=e,
            dedup_key="sha256:" + hashlib.sha256(b).hexdigest(),
        )
        for e, b in zip(events, leaves, strict=True)
    ]


def _runtime(data_dir: Path, url: str) -> Any:
    from ledger.config import Settings
    from ledger.runtime import build_runtime, initialise

    env = {"LEDGER_DATA_DIR": str(data_dir), "LEDGER_DATABASE_URL": url, "LEDGER_POLICY_DIR": str(REPO / "policies")}
    s = Settings.from_env(env)
    initialise(s)
    return build_runtime(s)


def rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds else 0.0


def inmemory(leaves: list[bytes]) -> dict[str, Any]:
    from pymerkle import InmemoryTree

    from ledger.tlog.tree import CompactRange

    t0 = time.perf_counter()
    cr = CompactRange()
    for b in leaves:
        cr.append_data(b)
    cr.root()
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    tree = InmemoryTree()
    for b in leaves:
        tree.append_entry(b)
    tree.get_root()
    theirs = time.perf_counter() - t0
    return {
        "ours_per_s": rate(len(leaves), ours),
        "pymerkle_per_s": rate(len(leaves), theirs),
        "ratio_ours_over_pymerkle": round(theirs / ours, 2),
    }


def single_commits(work: Path, events: list[dict[str, Any]], leaves: list[bytes], n: int) -> dict[str, Any]:
    from pymerkle import SqliteTree

    pend = _pending(events[:n], leaves[:n])
    rt = _runtime(work / "ours-single", f"sqlite:///{work / 'ours-single.db'}")
    try:
        t0 = time.perf_counter()
        for p in pend:
            rt.ledger.append([p])
        ours = time.perf_counter() - t0
    finally:
        rt.close()
    tree = SqliteTree(str(work / "pymerkle-single.db"))
    try:
        t0 = time.perf_counter()
        for b in leaves[:n]:
            tree.append_entry(b)
        theirs = time.perf_counter() - t0
    finally:
        tree.close()
    return {
        "leaves": n,
        "ours_sqlite_per_s": rate(n, ours),
        "pymerkle_sqlite_per_s": rate(n, theirs),
        "ratio_ours_over_pymerkle": round(theirs / ours, 2),
    }


def bulk_ours(rt: Any, events: list[dict[str, Any]], leaves: list[bytes], batch: int = 5000) -> float:
    pend = _pending(events, leaves)
    t0 = time.perf_counter()
    last = t0
    for i in range(0, len(pend), batch):
        rt.ledger.append(pend[i : i + batch])
        if time.perf_counter() - last > 15:
            last = time.perf_counter()
            log(f"  ours: {i + batch:,}/{len(pend):,} ({(i + batch) / (last - t0):,.0f}/s)")
    return time.perf_counter() - t0


def proof_latency_ours(rt: Any, n: int, samples: int) -> dict[str, Any]:
    rng = random.Random(3)
    for _ in range(20):
        rt.ledger.inclusion_proof(rng.randrange(n), n)
    lat = []
    for _ in range(samples):
        s = rng.randrange(n)
        t0 = time.perf_counter()
        rt.ledger.inclusion_proof(s, n)
        lat.append(time.perf_counter() - t0)
    return percentiles(lat)


def proof_latency_pymerkle(tree: Any, n: int, samples: int) -> dict[str, Any]:
    rng = random.Random(3)
    cold = []
    for _ in range(20):
        i = rng.randrange(n)
        t0 = time.perf_counter()
        tree.prove_inclusion(i + 1, n)
        cold.append(time.perf_counter() - t0)
    lat = []
    for _ in range(samples):
        i = rng.randrange(n)
        t0 = time.perf_counter()
        tree.prove_inclusion(i + 1, n)
        lat.append(time.perf_counter() - t0)
    return {"cold_first_20": percentiles(cold), "warm": percentiles(lat)}


def run(*, leaves_n: int, single_n: int, samples: int, postgres: bool) -> dict[str, Any]:
    from pymerkle import SqliteTree

    log(f"making {leaves_n:,} leaves")
    events, leaves = make_leaves(leaves_n)
    out: dict[str, Any] = {"leaves": leaves_n, "leaf_bytes_mean": sum(map(len, leaves)) // len(leaves)}
    log("in-memory append")
    out["inmemory_append"] = inmemory(leaves)
    log(f"  {out['inmemory_append']}")
    work = Path(tempfile.mkdtemp(prefix="bench-pymerkle-"))
    try:
        log(f"durable append, one commit per leaf ({single_n:,} leaves)")
        out["single_commit_append"] = single_commits(work, events, leaves, single_n)
        log(f"  {out['single_commit_append']}")

        log(f"bulk append on SQLite ({leaves_n:,} leaves)")
        rt = _runtime(work / "ours", f"sqlite:///{work / 'ours.db'}")
        tree = SqliteTree(str(work / "pymerkle.db"))
        try:
            ours = bulk_ours(rt, events, leaves)
            t0 = time.perf_counter()
            tree.append_entries(leaves)
            theirs = time.perf_counter() - t0
            bulk: dict[str, Any] = {
                "ours_sqlite_per_s": rate(leaves_n, ours),
                "pymerkle_sqlite_per_s": rate(leaves_n, theirs),
                "ratio_ours_sqlite_over_pymerkle": round(theirs / ours, 2),
            }
            log(f"  {bulk}")
            log(f"inclusion proofs at size {leaves_n:,} ({samples} samples)")
            proofs: dict[str, Any] = {
                "ours_sqlite": proof_latency_ours(rt, leaves_n, samples),
                "pymerkle_sqlite": proof_latency_pymerkle(tree, leaves_n, samples),
            }
            db_sizes = {
                "ours_sqlite_mb": round((work / "ours.db").stat().st_size / 2**20, 1),
                "pymerkle_sqlite_mb": round((work / "pymerkle.db").stat().st_size / 2**20, 1),
            }
        finally:
            rt.close()
            tree.close()
        if postgres:
            log(f"bulk append on PostgreSQL ({leaves_n:,} leaves)")
            with pg_database("bench_pm") as url:
                rt = _runtime(work / "ours-pg", url)
                try:
                    ours_pg = bulk_ours(rt, events, leaves)
                    bulk["ours_postgres_per_s"] = rate(leaves_n, ours_pg)
                    bulk["ratio_ours_postgres_over_pymerkle"] = round(theirs / ours_pg, 2)
                    proofs["ours_postgres"] = proof_latency_ours(rt, leaves_n, samples)
                finally:
                    rt.close()
        out["bulk_append"] = bulk
        pm = proofs["pymerkle_sqlite"]["warm"]["p50_ms"]
        proofs["p50_ratio_pymerkle_warm_over_ours_sqlite"] = round(pm / proofs["ours_sqlite"]["p50_ms"], 2)
        proofs["p50_ratio_pymerkle_cold_over_ours_sqlite"] = round(
            proofs["pymerkle_sqlite"]["cold_first_20"]["p50_ms"] / proofs["ours_sqlite"]["p50_ms"], 2
        )
        if "ours_postgres" in proofs:
            proofs["p50_ratio_pymerkle_warm_over_ours_postgres"] = round(pm / proofs["ours_postgres"]["p50_ms"], 2)
        out["inclusion_proof"] = proofs
        out["db_sizes"] = db_sizes
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def print_summary(r: dict[str, Any]) -> None:
    print(f"\nours vs pymerkle 7, {r['leaves']:,} leaves of ~{r['leaf_bytes_mean']} bytes")
    m = r["inmemory_append"]
    print(
        f"  in-memory append       ours {m['ours_per_s']:>12,.0f}/s   pymerkle {m['pymerkle_per_s']:>10,.0f}/s"
        f"   ours/pymerkle {m['ratio_ours_over_pymerkle']:.2f}x"
    )
    s = r["single_commit_append"]
    print(
        f"  commit per leaf SQLite ours {s['ours_sqlite_per_s']:>12,.0f}/s   pymerkle "
        f"{s['pymerkle_sqlite_per_s']:>10,.0f}/s   ours/pymerkle {s['ratio_ours_over_pymerkle']:.2f}x "
        f"({s['leaves']:,} leaves)"
    )
    b = r["bulk_append"]
    print(
        f"  bulk append SQLite     ours {b['ours_sqlite_per_s']:>12,.0f}/s   pymerkle "
        f"{b['pymerkle_sqlite_per_s']:>10,.0f}/s   ours/pymerkle {b['ratio_ours_sqlite_over_pymerkle']:.2f}x"
    )
    if "ours_postgres_per_s" in b:
        print(
            f"  bulk append PostgreSQL ours {b['ours_postgres_per_s']:>12,.0f}/s   (vs pymerkle SQLite "
            f"{b['ratio_ours_postgres_over_pymerkle']:.2f}x)"
        )
    p = r["inclusion_proof"]
    print(
        f"  inclusion proof p50    ours SQLite {p['ours_sqlite']['p50_ms']:.3f} ms"
        + (f", ours PostgreSQL {p['ours_postgres']['p50_ms']:.3f} ms" if "ours_postgres" in p else "")
        + f"; pymerkle warm {p['pymerkle_sqlite']['warm']['p50_ms']:.3f} ms, "
        f"cold {p['pymerkle_sqlite']['cold_first_20']['p50_ms']:.3f} ms"
    )
    print(
        f"  proof p50 ratio pymerkle/ours (SQLite): warm {p['p50_ratio_pymerkle_warm_over_ours_sqlite']:.2f}x, "
        f"cold {p['p50_ratio_pymerkle_cold_over_ours_sqlite']:.2f}x"
        + (
            f"; vs ours PostgreSQL warm {p['p50_ratio_pymerkle_warm_over_ours_postgres']:.2f}x"
            if "ours_postgres" in p
            else ""
        )
    )
    d = r["db_sizes"]
    print(
        f"  database size: ours {d['ours_sqlite_mb']} MB (headers, payloads, every subtree), "
        f"pymerkle {d['pymerkle_sqlite_mb']} MB (entries and leaf hashes)"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="20,000 leaves, 500 single commits")
    p.add_argument("--leaves", type=int, help="leaves (default 100,000)")
    p.add_argument("--single", type=int, help="leaves for the commit-per-leaf test (default 2,000)")
    p.add_argument("--samples", type=int, default=2000, help="inclusion proofs timed per store")
    p.add_argument("--no-postgres", action="store_true")
    a = p.parse_args(argv)
    remember_start()
    leaves = a.leaves or (20_000 if a.quick else 100_000)
    single = a.single or (500 if a.quick else 2_000)
    r = run(leaves_n=leaves, single_n=single, samples=a.samples, postgres=not a.no_postgres)
    print_summary(r)
    write_results("pymerkle_compare", {"command": " ".join(["python", *sys.argv]), "pymerkle_compare": r})


if __name__ == "__main__":
    main()
