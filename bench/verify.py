"""Whole-log verification rate: `ledger verify --url URL --key VKEY --token T`.

What it measures: the real command, as a subprocess, against `ledger serve --workers 2` on
PostgreSQL holding N entries (1,000,000 by default). The command fetches the signed checkpoint,
streams `GET /api/v1/log/export` in ranges, recomputes every leaf hash and payload digest and the
whole tree, and compares the root with the checkpoint's. Reported: the rate the command prints
("... in T s, R entries/s"), our own wall-clock rate (including interpreter start-up), and the CPU
(in cores) of the verifier process and of the server during the run, which shows which side bounds
the rate. Target (issue): >= 100,000 entries/s.

The log is filled as in proofs.py (`--fill direct`, default, or `--fill http`).

    python bench/verify.py [--quick] [--entries 1000000] [--fill direct|http] [--repeat 1]
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    CpuMeter,
    Server,
    add_server_env,
    log,
    log_size,
    parse_env,
    remember_start,
    running_server,
    write_results,
)

TARGET = 100_000
RATE_RE = re.compile(r"OK: (\d+) entries verified .* in ([\d.]+) s, ([\d,]+) entries/s")


def verify_once(srv: Server) -> dict[str, Any]:
    cmd = [
        str(Path(sys.executable).parent / "ledger"),
        "verify",
        "--url",
        srv.url,
        "--key",
        srv.vkey,
        "--token",
        srv.token,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with CpuMeter(srv, srv.dbname) as cpu:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    verifier_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    m = RATE_RE.search(proc.stdout)
    out: dict[str, Any] = {
        "command": " ".join([*cmd[:2], "--url", srv.url, "--key", "VKEY", "--token", "TOKEN"]),
        "exit_code": proc.returncode,
        "output": proc.stdout.strip()[-400:],
        "wall_s": round(wall, 2),
        "verifier_cpu_cores": round(verifier_cpu / wall, 3),
        "verifier_max_rss_mb": round(after.ru_maxrss / 1024, 1),
        "cpu": cpu.report(),
    }
    if m:
        n, secs, rate = int(m.group(1)), float(m.group(2)), int(m.group(3).replace(",", ""))
        out.update(entries=n, reported_seconds=secs, entries_per_s=rate, wall_entries_per_s=round(n / wall))
    else:
        out["stderr"] = proc.stderr.strip()[-800:]
    return out


def run(srv: Server, *, repeat: int = 1) -> dict[str, Any]:
    size = log_size(srv)
    runs = []
    for i in range(repeat):
        log(f"ledger verify --url over {size:,} entries (run {i + 1}/{repeat})")
        r = verify_once(srv)
        log(
            f"  {r.get('entries_per_s', 'FAILED')} entries/s (exit {r['exit_code']}), verifier "
            f"{r['verifier_cpu_cores']} cores, server {r['cpu'].get('server_cores')} cores"
        )
        runs.append(r)
    good = [r for r in runs if "entries_per_s" in r]
    best = max(good, key=lambda r: r["entries_per_s"]) if good else runs[-1]
    return {"tree_size": size, "runs": runs, "entries_per_s": best.get("entries_per_s"), "best": best}


def print_summary(r: dict[str, Any]) -> None:
    b = r["best"]
    print(f"\nledger verify --url over {r['tree_size']:,} entries (PostgreSQL, ledger serve --workers 2)")
    if "entries_per_s" not in b:
        print(f"  FAILED (exit {b['exit_code']}): {b.get('stderr') or b['output']}")
        return
    print(
        f"  reported {b['entries_per_s']:,} entries/s ({b['reported_seconds']} s); wall incl. start-up "
        f"{b['wall_entries_per_s']:,}/s; verifier {b['verifier_cpu_cores']:.2f} cores, "
        f"server {b['cpu']['server_cores']:.2f} cores, postgres {b['cpu']['postgres_backend_cores']:.2f} cores, "
        f"machine {b['cpu']['machine_busy_cores']:.2f} cores"
    )
    print(f"  target: >= {TARGET:,} entries/s")


def main(argv: list[str] | None = None) -> None:
    from proofs import ensure_size

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="100,000 entries")
    p.add_argument("--entries", type=int, help="log size (default 1,000,000)")
    p.add_argument("--fill", choices=["direct", "http"], default="direct")
    p.add_argument("--repeat", type=int, default=1)
    add_server_env(p)
    a = p.parse_args(argv)
    remember_start()
    entries = a.entries or (100_000 if a.quick else 1_000_000)
    with running_server(env=parse_env(a.server_env)) as srv:
        fill = ensure_size(srv, entries, a.fill)
        r = run(srv, repeat=a.repeat)
    r["fill"] = fill
    print_summary(r)
    write_results("verify", {"command": " ".join(["python", *sys.argv]), "verify": r})


if __name__ == "__main__":
    main()
