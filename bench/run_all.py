"""Runs every benchmark against one shared PostgreSQL log and prints a summary table.

Order: an erasure under single-event load at 100,000 entries (erasure.py, its own server and
database); then start `ledger serve --workers 2` on a fresh PostgreSQL database; intake (single
events at 16 and 32 connections, and batches, on the young log); projection lag at a fixed rate
(1,000/s); fill the log to N entries (`--fill direct` through `Ledger.append` in-process, default,
or `--fill http` through the batch API; either way the server's appliers then bring the
projections to the log head);
inclusion-proof latency and server RSS at N; `ledger verify --url` over the N entries; stop the
server and drop the database; single-event intake on SQLite (its own server); then
ours-vs-pymerkle in-process. The summary lists target, measured figure and the exact command that
reproduces each figure alone; the JSON goes to bench/results/run_all-<time>.json.

    python bench/run_all.py            # N = 1,000,000 (takes a while: the fill dominates)
    python bench/run_all.py --quick    # N = 100,000, shorter measurements, 20,000 pymerkle leaves
    options: --entries N, --fill direct|http, --duration S (per intake/lag measurement),
             --skip intake,lag,erasure,proofs,verify,sqlite,pymerkle
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from typing import Any

import erasure
import intake
import projection_lag
import proofs
import pymerkle_compare
import verify
from common import (
    add_server_env,
    fill_direct,
    fill_http,
    log,
    log_size,
    parse_env,
    pg_database,
    remember_start,
    running_server,
    write_results,
)


def _fmt(v: Any, unit: str) -> str:
    if v is None:
        return "n/a"
    if unit == "/s":
        return f"{v:,.0f}/s"
    if unit == "ms":
        return f"{v:.3f} ms"
    if unit == "MB":
        return f"{v:,.0f} MB"
    if unit == "x":
        return f"{v:.2f}x"
    return str(v)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--entries", type=int)
    p.add_argument("--fill", choices=["direct", "http"], default="direct")
    p.add_argument("--skip", default="", help="comma-separated: intake,lag,erasure,proofs,verify,sqlite,pymerkle")
    p.add_argument("--duration", type=float, help="seconds per intake and lag measurement (30, or 10 with --quick)")
    p.add_argument("--erasure-entries", type=int, default=100_000, help="log size for the erasure benchmark")
    add_server_env(p)
    a = p.parse_args(argv)
    remember_start()
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    n = a.entries or (100_000 if a.quick else 1_000_000)
    samples = 2_000 if a.quick else 5_000
    pm_leaves = 20_000 if a.quick else 100_000
    pm_single = 500 if a.quick else 2_000
    results: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]),
        "entries": n,
        "fill_method": a.fill,
        "server_env": parse_env(a.server_env),
    }
    t_start = time.perf_counter()

    def guarded(name: str, fn: Any) -> Any:
        try:
            return fn()
        except Exception as e:  # report and go on: one broken benchmark must not hide the others
            traceback.print_exc()
            results.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"
            return None

    duration = a.duration or (10.0 if a.quick else 30.0)
    fill_fn = fill_http if a.fill == "http" else fill_direct
    if "erasure" not in skip:
        # Its own server and database: the shared log is past 100,000 entries after the intake.
        def erasure_run() -> Any:
            with running_server(env=parse_env(a.server_env)) as srv:
                fill = fill_fn(srv, a.erasure_entries)
                return {**erasure.run(srv), "fill": fill}

        results["erasure"] = guarded("erasure", erasure_run)
    if not {"intake", "lag", "proofs", "verify"} <= skip:
        with pg_database() as url, running_server(url, env=parse_env(a.server_env)) as srv:
            if "intake" not in skip:
                results["intake"] = guarded("intake", lambda: intake.run(srv, quick=a.quick, duration=duration))
            if "lag" not in skip:
                results["projection_lag"] = guarded(
                    "lag", lambda: projection_lag.run(srv, rate=1000.0, duration=duration)
                )
            if not {"proofs", "verify"} <= skip:
                t0 = time.perf_counter()
                fill = guarded("fill", lambda: fill_fn(srv, n))
                results["fill"] = fill
                results["fill_wall_s"] = round(time.perf_counter() - t0, 1)
                log(f"shared log: {log_size(srv):,} entries")
            if "proofs" not in skip:
                results["proofs"] = guarded(
                    "proofs", lambda: proofs.run(srv, entries=n, samples=samples, fill=a.fill, fill_report=fill)
                )
            if "verify" not in skip:
                results["verify"] = guarded("verify", lambda: verify.run(srv))
    if "sqlite" not in skip:

        def sqlite_intake() -> Any:
            with running_server(env=parse_env(a.server_env), sqlite=True) as srv:
                return intake.run(srv, duration=duration, concurrency=[16], batches=False)

        results["sqlite_intake"] = guarded("sqlite", sqlite_intake)
    if "pymerkle" not in skip:
        results["pymerkle_compare"] = guarded(
            "pymerkle",
            lambda: pymerkle_compare.run(leaves_n=pm_leaves, single_n=pm_single, samples=2000, postgres=True),
        )
    results["total_wall_s"] = round(time.perf_counter() - t_start, 1)

    for name, mod in (
        ("intake", intake),
        ("projection_lag", projection_lag),
        ("erasure", erasure),
        ("proofs", proofs),
        ("verify", verify),
        ("pymerkle_compare", pymerkle_compare),
    ):
        if results.get(name):
            mod.print_summary(results[name])
    if results.get("sqlite_intake"):
        intake.print_summary(results["sqlite_intake"])

    rows: list[tuple[str, str, Any, str, str, str]] = []
    it, pr, ve, pm = (results.get(k) or {} for k in ("intake", "proofs", "verify", "pymerkle_compare"))
    lg, er, sq = (results.get(k) or {} for k in ("projection_lag", "erasure", "sqlite_intake"))
    d = f" --duration {duration:g}"
    if it:
        rows += [
            (
                "single intake, 16 conns",
                ">= 1,000/s",
                it.get("single16_events_per_s"),
                "/s",
                ">=1000",
                f"python bench/intake.py{d}",
            ),
            (
                "single intake p99, 16 conns",
                "<= 50 ms",
                it.get("single16_p99_ms"),
                "ms",
                "<=50",
                f"python bench/intake.py{d}",
            ),
            (
                "single intake p50, 16 conns",
                "-",
                it.get("single16_p50_ms"),
                "ms",
                "",
                f"python bench/intake.py{d}",
            ),
            (
                "batched intake (500/req)",
                ">= 10,000/s",
                it.get("batch_events_per_s"),
                "/s",
                ">=10000",
                f"python bench/intake.py{d}",
            ),
        ]
    if lg:
        cmd = f"python bench/projection_lag.py --rate 1000{d}"
        rows += [
            (
                "lag: receipt->visible p99",
                "<= 1 s",
                (lg.get("receipt_to_visible") or {}).get("p99_ms"),
                "ms",
                "<=1000",
                cmd,
            ),
            ("lag: /readyz entries p99", "-", (lg.get("lag_entries_max_over_consumers") or {}).get("p99"), "", "", cmd),
            ("lag: achieved intake rate", "1,000/s", lg.get("achieved_events_per_s"), "/s", "", cmd),
            (
                "lag: measured at the target rate?",
                "-",
                (lg.get("achieved_events_per_s") or 0) >= 950,
                "",
                "rate",
                cmd,
            ),
        ]
    if er:
        cmd = f"python bench/erasure.py --entries {er['entries']}"
        rows += [
            (f"erasure @{er['entries']:,}: intake p99", "<= 1 s", er.get("during_p99_ms"), "ms", "<=1000", cmd),
            ("erasure duration", "-", (er.get("erasure") or {}).get("seconds"), "", "", cmd),
        ]
    if results.get("fill"):
        f = results["fill"]
        rows.append(
            (
                f"fill to {n:,} ({a.fill})",
                "-",
                f.get("events_per_s"),
                "/s",
                "",
                f"python bench/proofs.py --entries {n} --fill {a.fill}",
            )
        )
    if pr:
        cmd = f"python bench/proofs.py --entries {n} --samples {samples}"
        rows += [
            (f"proof p50 HTTP @{pr['tree_size']:,}", "<= 1 ms", pr.get("http_p50_ms"), "ms", "<=1", cmd),
            (f"proof p99 HTTP @{pr['tree_size']:,}", "-", pr.get("http_p99_ms"), "ms", "", cmd),
            ("proof p50 in-process", "-", pr.get("inprocess_p50_ms"), "ms", "", cmd),
            ("server RSS master+workers", "<= 300 MB", pr.get("rss_total_mb"), "MB", "<=300", cmd),
        ]
    if ve:
        rows.append(
            (
                f"ledger verify --url @{ve['tree_size']:,}",
                ">= 100,000/s",
                ve.get("entries_per_s"),
                "/s",
                ">=100000",
                f"python bench/verify.py --entries {n}",
            )
        )
    if sq:
        cmd = f"python bench/intake.py --sqlite --concurrency 16 --no-batch{d}"
        rows += [
            ("SQLite single intake, 16 conns", "report", sq.get("single16_events_per_s"), "/s", "", cmd),
            ("SQLite single p99, 16 conns", "report", sq.get("single16_p99_ms"), "ms", "", cmd),
        ]
    if pm:
        cmd = f"python bench/pymerkle_compare.py --leaves {pm_leaves} --single {pm_single}"
        b, pp = pm["bulk_append"], pm["inclusion_proof"]
        rows += [
            ("vs pymerkle: in-memory append", "-", pm["inmemory_append"]["ratio_ours_over_pymerkle"], "x", "", cmd),
            ("ours bulk append SQLite", "-", b["ours_sqlite_per_s"], "/s", "", cmd),
            ("pymerkle SqliteTree bulk append", "-", b["pymerkle_sqlite_per_s"], "/s", "", cmd),
            ("vs pymerkle: bulk append SQLite", "-", b["ratio_ours_sqlite_over_pymerkle"], "x", "", cmd),
            (
                "vs pymerkle: commit/leaf SQLite",
                "-",
                pm["single_commit_append"]["ratio_ours_over_pymerkle"],
                "x",
                "",
                cmd,
            ),
            ("vs pymerkle: proof p50 (SQLite)", "-", pp["p50_ratio_pymerkle_warm_over_ours_sqlite"], "x", "", cmd),
        ]

    def status(v: Any, rule: str) -> str:
        if rule == "rate":  # the lag target holds only at the stated rate
            return "" if v else "NOT AT RATE"
        if not rule or not isinstance(v, int | float):
            return ""
        if rule.startswith(">="):
            return "met" if v >= float(rule[2:]) else "MISSED"
        return "met" if v <= float(rule[2:]) else "MISSED"

    print(
        f"\nsummary ({'quick, ' if a.quick else ''}{n:,} entries, total {results['total_wall_s']:.0f} s; "
        "ratios: above 1 means ours is faster)"
    )
    print(f"  {'metric':<34}{'target':<14}{'measured':<20}{'':<8}command")
    for name, target, v, unit, rule, cmd in rows:
        print(f"  {name:<34}{target:<14}{_fmt(v, unit) if unit else str(v):<20}{status(v, rule):<8}{cmd}")
    if results.get("errors"):
        print(f"  errors: {results['errors']}")
    write_results("run_all", results)


if __name__ == "__main__":
    main()
