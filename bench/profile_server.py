"""Where the server's time goes under each benchmark load: py-spy on every server worker
(`.venv/bin/pip install py-spy`), top frames printed, idle threads left out. One server, one fill.

Sections (in this order, on one log of `--entries` entries, default 100,000, filled in-process and
projected before anything is sampled):
- proofs: `GET /api/v1/log/proof/inclusion` from 1 connection, back to back, `--seconds` s;
- single: `POST /api/v1/lineage` from 16 keep-alive connections (closed loop), `--seconds` s;
- batch: `POST /api/v1/lineage/batch` (500 events) from 4 clients, `--seconds` s;
- verify: `ledger verify --url` three times over the whole log;
- erasure: `POST /api/v1/log/entries/<seq>/erasure` with 16 connections of single-event intake
  (erasure.py's load), sampled from start to end of the erasure.
Collapsed stacks go to bench/results/profile-<section>-<pid>.txt (speedscope reads them).

    python bench/profile_server.py [--entries 100000] [--seconds 15] [--only proofs,single,batch,verify,erasure]
"""

from __future__ import annotations

import argparse
import random
import sys
from typing import Any

import erasure
from common import (
    EventFactory,
    auth_headers,
    batch_successes,
    fill_direct,
    log,
    log_size,
    parse_env,
    percentiles,
    print_profile,
    profiled,
    remember_start,
    run_load,
    running_server,
    wait_projections,
    write_results,
)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", type=int, default=100_000)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--only", default="proofs,single,batch,verify,erasure")
    p.add_argument("--server-env", action="append")
    a = p.parse_args(argv)
    only = set(a.only.split(","))
    remember_start()
    out: dict[str, Any] = {}
    with running_server(env=parse_env(a.server_env)) as srv:
        out["fill"] = fill_direct(srv, a.entries)
        size = log_size(srv)
        if "proofs" in only:
            rng = random.Random(1)
            h = auth_headers(srv.token)

            def proof(_i: int) -> tuple[str, str, bytes, bytes, int]:
                return "GET", f"/api/v1/log/proof/inclusion?seq={rng.randrange(size)}&tree_size={size}", h, b"", 1

            log(f"profiling proofs at {size:,}")
            with profiled(srv, "proofs") as prof:
                res = run_load(srv.port, proof, concurrency=1, duration=a.seconds, warmup=20)
            out["proofs"] = {"latency": percentiles(res.latencies), "profile": prof}
        factory = EventFactory()
        hj = auth_headers(srv.token, json_body=True)
        if "single" in only:
            log("profiling single-event intake, 16 connections")
            with profiled(srv, "single16") as prof:
                res = run_load(
                    srv.port,
                    lambda _i: ("POST", "/api/v1/lineage", hj, factory.one(), 1),
                    concurrency=16,
                    duration=a.seconds,
                    warmup=1,
                )
            out["single"] = {**res.summary(), "profile": prof}
            out["single_projections_after"] = wait_projections(srv, timeout=300)
        if "batch" in only:
            log("profiling batch intake, 500/request, 4 clients")
            with profiled(srv, "batch500") as prof:
                res = run_load(
                    srv.port,
                    lambda _i: ("POST", "/api/v1/lineage/batch", hj, factory.batch(500), 500),
                    concurrency=4,
                    duration=a.seconds,
                    check=batch_successes,
                    warmup=1,
                )
            out["batch"] = {**res.summary(), "profile": prof}
            out["batch_projections_after"] = wait_projections(srv, timeout=300)
        if "verify" in only:
            import verify

            log("profiling ledger verify --url (3 runs)")
            with profiled(srv, "verify") as prof:
                runs = [verify.verify_once(srv) for _ in range(3)]
            # The verifier itself, under py-spy (GIL holder), once.
            import subprocess
            from pathlib import Path

            from common import RESULTS_DIR, summarise_profile

            vpath = RESULTS_DIR / "profile-verifier-gil.txt"
            exe = Path(sys.executable).parent
            cmd = [str(exe / "py-spy"), "record", "--gil", "-r", "200", "-f", "raw", "-o", str(vpath), "--"]
            cmd += [str(exe / "ledger"), "verify", "--url", srv.url, "--key", srv.vkey, "--token", srv.token]
            subprocess.run(cmd, capture_output=True, check=False, timeout=600)
            out["verify"] = {
                "runs": [r.get("entries_per_s") for r in runs],
                "profile": prof,
                "verifier_profile": summarise_profile([vpath]) if vpath.exists() else {},
            }
        if "erasure" in only:
            log("profiling an erasure under single-event load")
            with profiled(srv, "erasure") as prof:
                r = erasure.run(srv, before=2.0, after=1.0)
            out["erasure"] = {**r, "profile": prof}
    for name in ("proofs", "single", "batch", "verify", "erasure"):
        if name in out:
            x = out[name]
            lat = x.get("latency") or x.get("during") or {}
            rate = x.get("items_per_s")
            print(
                f"\n{name}: p50 {lat.get('p50_ms')} ms, p99 {lat.get('p99_ms')} ms"
                + (f", {rate:,.0f}/s" if rate else "")
            )
            print_profile(name, x["profile"])
            if x.get("verifier_profile"):
                print_profile("verify (the verifier process)", x["verifier_profile"])
    write_results("profile_server", {"command": " ".join(["python", *sys.argv]), "profile_server": out})


if __name__ == "__main__":
    main()
