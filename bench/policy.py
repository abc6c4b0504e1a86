"""Policy evaluation: time and CPU of `PolicyEngine.evaluate("ledger.promotion", ...)` as the input grows.

In process, no database: inputs shaped like the service's (policies/promotion.rego documents the
shape). Two series: `datasets N` (a training run with N upstream datasets, the rest as in a
compliant promotion) and `lists N` (N items in each of upstream.datasets, validations, approvals and
open_violations, most of them failing, as a hostile dry run would send). Each figure is the wall
time of one evaluation, the caller's CPU and the evaluation process's CPU (children's rusage).

    python bench/policy.py [--budget SECONDS] [--sizes 1000,3000] [--lists 1000,5000]

Compare with another commit: `git worktree add /tmp/before <commit>`, then
`python bench/policy.py --tree /tmp/before --no-limits` evaluates that tree's `ledger` and `policies/`
(before the bounds, the engine took no `limits`).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TREE = Path(sys.argv[sys.argv.index("--tree") + 1]).resolve() if "--tree" in sys.argv else REPO
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(TREE))

from test_policy_bounds import big_promotion  # noqa: E402
from test_policy_engine import compliant_promotion  # noqa: E402

from ledger.policy import engine as policy_engine  # noqa: E402


def with_datasets(n: int) -> dict[str, Any]:
    doc = compliant_promotion()
    doc["upstream"]["datasets"] = [
        {
            "namespace": "s3://wide",
            "name": f"part-{i:05d}",
            "version": "v1",
            "digest": "sha256:" + "ab" * 32,
            "produced_by_run": None,  # as when the inputs have no recorded producer: one violation each
            "source": False,
            "tags": ["pii"] if i % 10 == 0 else [],
            "classified": False,
            "consumed_by_runs": [doc["training_run"]["id"]],
        }
        for i in range(n)
    ]
    return doc


def children_cpu() -> float:
    """CPU seconds of this process's children: the live evaluation workers (from /proc) and the
    reaped ones (a worker killed at its budget)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = r.ru_utime + r.ru_stime
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # fields[1] is ppid; utime and stime are fields 14, 15 of stat
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def measure(engine: Any, label: str, doc: dict[str, Any]) -> None:
    cpu, child, wall = time.process_time(), children_cpu(), time.perf_counter()
    result = engine.evaluate("ledger.promotion", doc)
    wall = time.perf_counter() - wall
    cpu, child = time.process_time() - cpu, children_cpu() - child
    outcome = (
        result.violations[0]
        if result.violations and result.violations[0].startswith("policy ")
        else (f"{len(result.violations)} violations")
    )
    print(
        f"{label:<16} wall {wall:7.3f} s  caller CPU {cpu:6.3f} s  evaluator CPU {child:6.3f} s  {outcome}", flush=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=2.0)
    parser.add_argument("--sizes", default="100,1000,3000")
    parser.add_argument("--lists", default="1000,5000")
    parser.add_argument("--tree", default=str(REPO), help="the source tree to evaluate (default: this one)")
    parser.add_argument("--no-limits", action="store_true", help="for a tree from before PolicyLimits")
    args = parser.parse_args()
    print(f"tree {TREE}, ledger from {Path(policy_engine.__file__).parent}", flush=True)
    bundle = policy_engine.load_policy_bundle(TREE / "policies")
    if args.no_limits:
        engine = policy_engine.PolicyEngine(bundle)
    else:
        limits = policy_engine.PolicyLimits(budget_seconds=args.budget, processes=1)  # type: ignore[attr-defined]
        engine = policy_engine.PolicyEngine(bundle, limits=limits)  # type: ignore[call-arg]
    measure(engine, "warm-up", compliant_promotion())
    for n in (int(x) for x in args.sizes.split(",") if x):
        measure(engine, f"datasets {n}", with_datasets(n))
    for n in (int(x) for x in args.lists.split(",") if x):
        measure(engine, f"lists {n}", big_promotion(n))


if __name__ == "__main__":
    main()
