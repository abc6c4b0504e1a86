"""What one erasure costs (PostgreSQL, in process).

An erasure removes a payload and then replays every projection in the same transaction, so that no
read serves what was erased; appends wait for it. This prints how long that takes at a given log
size, with realistic Airflow-style run events (`common.run_event`).

    python bench/erasure.py [--entries 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import in_process_runtime, log, run_event


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=100_000)
    a = ap.parse_args()
    from ledger.projections import erasure_replay
    from ledger.security.principals import AuthenticatedPrincipal

    with in_process_runtime("bench_erase") as rt:
        who = AuthenticatedPrincipal("bench", frozenset({"pipeline"}))
        for i in range(0, a.entries, 1000):
            rt.intake.record_batch([run_event(j) for j in range(i, min(i + 1000, a.entries))], who)
        size = rt.ledger.size()
        log(f"log of {size:,} entries filled")
        t = time.perf_counter()
        rt.ledger.erase(
            size // 2,
            reason="bench",
            principal="sec",
            reproject=erasure_replay(is_sqlite=rt.db.is_sqlite),
        )
        took = time.perf_counter() - t
    print(
        f"erasure at {size:,} entries (PostgreSQL): {took:.1f} s, appends held meanwhile "
        f"(projections replayed at {size / took:,.0f} entries/s)"
    )


if __name__ == "__main__":
    main()
