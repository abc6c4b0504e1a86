"""Where the time goes: in-process micro-benchmarks of the hot paths the end-to-end benchmarks hit,
each next to a prototype of a cheaper way to do the same thing, so a proposed change can be judged
by numbers before anyone edits ledger/. Nothing here changes the ledger; prototypes live in this file
and are cross-checked against the ledger's own output (the line says "same output: True").

Sections
- jcs: RFC 8785 canonical bytes of one ~1.3 KB RunEvent: `rfc8785.dumps` vs
  `json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`, which is the same bytes
  for documents without floats and without keys outside the BMP (checked), and the ledger's own
  `canonical_json` (which took that fast path in 63f84d7).
- receipts: inclusion proofs for a batch of 500 new leaves against the new size, as `_run_group`
  computes them for receipts (`ledger.store.tree.inclusion_proofs` with the known nodes) vs a
  node-id planner in the style of transparency-dev/merkle `proof.Inclusion` (siblings, one
  ephemeral node, border nodes).
- proof_read: one inclusion proof from PostgreSQL at size N: `Ledger.inclusion_proof` (ORM session,
  three queries) vs one raw query for the proof nodes plus the leaf (0, seq) and the leaf
  (0, size - 1), whose presence shows size <= the log's size (seq is gapless).
- inserts: writing 5,000 entries' rows (log_entries, entry_payloads, tree_nodes) on PostgreSQL:
  `Sequencer.flush` (executemany) vs COPY, inside a transaction that is rolled back.
- statements: SQL statements and wall time per `LineageIntake.record` (one event) and per
  `record_batch` (500), counted with a SQLAlchemy cursor event; log first, these write the log
  alone, so the projector's share (`Projector.sync_to_head` over what they appended: statements
  and µs per event) is counted apart, per single events, per batch and over a 5,000-entry backlog.
- export: server side of `ledger verify --url`: `export_lines` rows/s on PostgreSQL, vs the client
  side: `check_line` + `CompactRange.append` lines/s.
- imports: RSS of a fresh interpreter after importing each dependency in turn and after
  `create_app` (what each server worker pays before serving anything).

    python bench/hotspots.py [--entries 20000] [--only jcs,receipts,proof_read,inserts,statements,export,imports]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO, log, pg_database, remember_start, run_event, write_results


def timeit(fn: Any, *, repeat: int, number: int = 1) -> float:
    """Median seconds per call of fn over `repeat` rounds of `number` calls."""
    rounds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        rounds.append((time.perf_counter() - t0) / number)
    return statistics.median(rounds)


# --- jcs ------------------------------------------------------------------------------------------


def fast_jcs(value: Any) -> bytes | None:
    """RFC 8785 via the C JSON encoder when that is exact: no floats (ECMAScript number formatting
    differs from repr), no keys outside the BMP (JCS sorts by UTF-16 code units, Python by code
    points; they agree inside the BMP). Returns None when the slow path is needed."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            for k, x in v.items():
                if not k.isascii() and any(ord(c) > 0xFFFF for c in k):
                    return None
                stack.append(x)
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, float) or (isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**53 - 1):
            return None
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return None  # a lone surrogate: let rfc8785 raise its error


def bench_jcs() -> dict[str, Any]:
    import rfc8785

    from ledger.tlog.entry import canonical_json

    ev = run_event(1)
    slow = timeit(lambda: rfc8785.dumps(ev), repeat=7, number=300)
    fast = timeit(lambda: fast_jcs(ev), repeat=7, number=300)
    ours = timeit(lambda: canonical_json(ev), repeat=7, number=300)
    return {
        "event_bytes": len(rfc8785.dumps(ev)),
        "rfc8785_us": round(slow * 1e6, 1),
        "fast_path_us": round(fast * 1e6, 1),
        "speedup": round(slow / fast, 1),
        "ledger_canonical_json_us": round(ours * 1e6, 1),
        "same_output": fast_jcs(ev) == rfc8785.dumps(ev) == canonical_json(ev),
    }


# --- receipts -------------------------------------------------------------------------------------


def inclusion_nodes(index: int, size: int) -> tuple[list[Any], tuple[int, int] | None, int]:
    """transparency-dev/merkle proof.Inclusion: the node ids of PATH(index, size), leaf side first,
    with at most one ephemeral (non-perfect) node given as a range; returns (ids, ephemeral range,
    position of the ephemeral node)."""
    from ledger.tlog.tree import NodeId

    inner = (index ^ (size - 1)).bit_length()
    ids: list[Any] = []
    eph: tuple[int, int] | None = None
    pos = -1
    for level in range(inner):
        sib = (index >> level) ^ 1
        begin = sib << level
        if begin + (1 << level) > size:  # the right sibling at the top inner level is cut by size
            eph, pos = (begin, size), len(ids)
            ids.append(None)
        else:
            ids.append(NodeId(level, sib))
    rest = index >> inner
    level = inner
    while rest:
        if rest & 1:
            ids.append(NodeId(level, rest ^ 1))
        rest >>= 1
        level += 1
    return ids, eph, pos


def fast_proofs(seqs: list[int], size: int, known: dict[Any, bytes]) -> dict[int, list[bytes]]:
    from ledger.tlog.tree import fold_range, range_nodes

    eph_cache: dict[tuple[int, int], bytes] = {}
    out = {}
    for s in seqs:
        ids, eph, pos = inclusion_nodes(s, size)
        if eph is not None and eph not in eph_cache:
            eph_cache[eph] = fold_range([known[n] for n in range_nodes(*eph)])
        proof = [known[n] if n is not None else b"" for n in ids]
        if eph is not None:
            proof[pos] = eph_cache[eph]
        out[s] = proof
    return out


def bench_receipts(old_size: int = 999_500, batch: int = 500) -> dict[str, Any]:
    from ledger.store.tree import inclusion_proofs
    from ledger.tlog.tree import CompactRange, range_nodes

    # The state `_run_group` has: the frontier of the old tree and every node the batch created.
    rng = random.Random(5)
    frontier_ids = range_nodes(0, old_size)
    hashes = [rng.randbytes(32) for _ in frontier_ids]
    cr = CompactRange(old_size, hashes)
    known = dict(zip(frontier_ids, hashes, strict=True))
    for i in range(batch):
        known.update(cr.append(hashlib.sha256(b"%d" % i).digest()))
    seqs = list(range(old_size, old_size + batch))
    size = cr.size
    cur = timeit(lambda: inclusion_proofs(None, seqs, size, known), repeat=5)  # type: ignore[arg-type]
    new = timeit(lambda: fast_proofs(seqs, size, known), repeat=5)
    return {
        "batch": batch,
        "tree_size": size,
        "current_ms_per_batch": round(cur * 1e3, 2),
        "current_us_per_entry": round(cur / batch * 1e6, 1),
        "prototype_ms_per_batch": round(new * 1e3, 2),
        "speedup": round(cur / new, 1),
        "same_output": fast_proofs(seqs, size, known) == inclusion_proofs(None, seqs, size, known),
    }  # type: ignore[arg-type]


# --- a PostgreSQL log for the database sections ---------------------------------------------------


def _runtime(url: str, data_dir: Path) -> Any:
    from ledger.config import Settings
    from ledger.runtime import build_runtime, initialise

    s = Settings.from_env(
        {"LEDGER_DATA_DIR": str(data_dir), "LEDGER_DATABASE_URL": url, "LEDGER_POLICY_DIR": str(REPO / "policies")}
    )
    initialise(s)
    return build_runtime(s)


def _fill(rt: Any, n: int) -> None:
    from ledger.store.sequencer import PendingEntry
    from ledger.tlog.entry import canonical_json

    size = rt.ledger.size()
    while size < n:
        k = min(5000, n - size)
        evs = [run_event(size + i) for i in range(k)]
        rt.ledger.append(
            [
                PendingEntry(
                    kind="openlineage.run_event",
                    subject=f"run:{e['run']['runId']}",
                    principal="bench",
                    payload=e,
                    dedup_key="sha256:" + hashlib.sha256(canonical_json(e)).hexdigest(),
                )
                for e in evs
            ]
        )
        size += k


def one_query_proof(conn: Any, seq: int, size: int) -> tuple[bytes, list[bytes]]:
    """The prototype read path: one round trip, no ORM."""
    from sqlalchemy import select

    from ledger.store.models import TreeNode
    from ledger.tlog.tree import NodeId, ProofPlan, inclusion_ranges

    plan = ProofPlan.of(inclusion_ranges(seq, size))
    ids = plan.needed() | {NodeId(0, seq), NodeId(0, size - 1)}
    q = select(TreeNode.node_id, TreeNode.hash).where(TreeNode.node_id.in_([n.as_int() for n in ids]))  # type: ignore[attr-defined]
    rows = conn.execute(q).all()
    got = {NodeId.from_int(int(k)): bytes(h) for k, h in rows}
    if NodeId(0, size - 1) not in got:
        raise ValueError("tree_size is larger than the log")
    return got[NodeId(0, seq)], plan.assemble(got)


def bench_proof_read(rt: Any, samples: int = 2000) -> dict[str, Any]:
    size = rt.ledger.size()
    rng = random.Random(9)
    seqs = [rng.randrange(size) for _ in range(samples)]
    for s in seqs[:50]:
        rt.ledger.inclusion_proof(s, size)
    lat_cur = []
    for s in seqs:
        t0 = time.perf_counter()
        rt.ledger.inclusion_proof(s, size)
        lat_cur.append(time.perf_counter() - t0)
    # A single statement is its own snapshot: no BEGIN/COMMIT round trips needed (autocommit).
    lat_new = []
    same = True
    with rt.db.engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        for s in seqs[:50]:
            one_query_proof(conn, s, size)
        for s in seqs:
            t0 = time.perf_counter()
            one_query_proof(conn, s, size)
            lat_new.append(time.perf_counter() - t0)
        for s in seqs[:20]:
            same = same and one_query_proof(conn, s, size) == rt.ledger.inclusion_proof(s, size)
    med = statistics.median
    return {
        "tree_size": size,
        "current_p50_ms": round(med(lat_cur) * 1e3, 3),
        "prototype_p50_ms": round(med(lat_new) * 1e3, 3),
        "speedup": round(med(lat_cur) / med(lat_new), 1),
        "same_output": same,
    }


def bench_inserts(rt: Any, n: int = 5000) -> dict[str, Any]:
    import secrets

    from ledger.store.sequencer import PendingRows, Sequencer
    from ledger.tlog.tree import NodeId

    base = 10**12  # far past the log, and rolled back anyway
    now = "2026-11-21T10:00:00.000000Z"

    def rows() -> PendingRows:
        r = PendingRows()
        for i in range(n):
            s = base + i
            r.entries.append(
                {
                    "seq": s,
                    "kind": "openlineage.run_event",
                    "subject": f"run:{s}",
                    "integrated_time": now,
                    "principal": "bench",
                    "payload_digest": "sha256:" + "0" * 64,
                    "leaf_hash": secrets.token_bytes(32),
                    "dedup_key": f"sha256:{s:064d}",
                }
            )
            r.payloads.append({"seq": s, "salt": secrets.token_bytes(32), "payload": json.dumps(run_event(i))})
            r.nodes.append((NodeId(0, s), secrets.token_bytes(32)))
            if i % 2:
                r.nodes.append((NodeId(1, s >> 1), secrets.token_bytes(32)))
        return r

    def executemany() -> float:
        r = rows()
        with rt.db.engine.connect() as c:
            from sqlmodel import Session

            with Session(bind=c) as session:
                t0 = time.perf_counter()
                Sequencer.flush(session, r)
                session.flush()
                dt = time.perf_counter() - t0
                session.rollback()
        return dt

    def copy() -> float:
        r = rows()
        with rt.db.engine.connect() as c:
            raw = c.connection.driver_connection
            t0 = time.perf_counter()
            with raw.cursor() as cur:
                cols = (
                    "seq",
                    "kind",
                    "subject",
                    "integrated_time",
                    "principal",
                    "payload_digest",
                    "leaf_hash",
                    "dedup_key",
                )
                with cur.copy(f"COPY log_entries ({', '.join(cols)}) FROM STDIN") as cp:
                    for e in r.entries:
                        cp.write_row([e[k] for k in cols])
                with cur.copy("COPY entry_payloads (seq, salt, payload) FROM STDIN") as cp:
                    for p in r.payloads:
                        cp.write_row((p["seq"], p["salt"], p["payload"]))
                with cur.copy("COPY tree_nodes (node_id, hash) FROM STDIN") as cp:
                    for node, h in r.nodes:
                        cp.write_row((node.as_int(), h))
            dt = time.perf_counter() - t0
            raw.rollback()
        return dt

    cur_t = statistics.median(executemany() for _ in range(3))
    new_t = statistics.median(copy() for _ in range(3))
    return {
        "entries": n,
        "executemany_ms": round(cur_t * 1e3, 1),
        "copy_ms": round(new_t * 1e3, 1),
        "executemany_us_per_entry": round(cur_t / n * 1e6, 1),
        "copy_us_per_entry": round(new_t / n * 1e6, 1),
        "speedup": round(cur_t / new_t, 1),
    }


def bench_statements(rt: Any) -> dict[str, Any]:
    """Log first: the intake writes the log alone, and the projector applies the entries later (in
    the server, a background thread per worker). Both halves are counted here: the intake
    (`record`, `record_batch`; this runtime's projector is not started, so nothing is applied
    meanwhile), then `Projector.sync_to_head` over what the intake appended (lineage,
    classification, governance, the violation screen)."""
    from sqlalchemy import event

    from ledger.security.principals import AuthenticatedPrincipal

    counter = [0]

    def count(*_a: Any, **_k: Any) -> None:
        counter[0] += 1

    who = AuthenticatedPrincipal("bench", frozenset({"pipeline"}))
    t0 = time.perf_counter()
    rt.projector.sync_to_head(timeout=600)  # the fill's backlog, not counted
    log(f"  projected the fill's backlog in {time.perf_counter() - t0:.1f} s")
    event.listen(rt.db.engine, "before_cursor_execute", count)
    # The append group speaks to psycopg directly (ledger.store.groupio, pipelined): counted too.
    raw_execute = None
    if not rt.db.is_sqlite:
        import psycopg

        raw_execute = psycopg.Connection.execute

        def counted(conn: Any, *a: Any, **k: Any) -> Any:
            counter[0] += 1
            return raw_execute(conn, *a, **k)

        psycopg.Connection.execute = counted  # type: ignore[method-assign]

    def project(n: int) -> dict[str, Any]:
        counter[0] = 0
        t0 = time.perf_counter()
        rt.projector.sync_to_head(timeout=600)
        dt = time.perf_counter() - t0
        return {
            "statements_per_event": round(counter[0] / n, 1),
            "us_per_event": round(dt / n * 1e6, 1),
        }

    try:
        out: dict[str, Any] = {}
        base = 10_000_000
        for _ in range(3):  # warm caches
            rt.intake.record(run_event(base), who)
            base += 1
        rt.projector.sync_to_head(timeout=600)
        n = 100
        counter[0] = 0
        t0 = time.perf_counter()
        for i in range(n):
            rt.intake.record(run_event(base + i), who)
        dt = time.perf_counter() - t0
        out["single"] = {"statements_per_event": round(counter[0] / n, 1), "ms_per_event": round(dt / n * 1e3, 2)}
        out["single_projected_later"] = project(n)
        base += n
        for k in (8, 16):
            counter[0] = 0
            t0 = time.perf_counter()
            for j in range(0, n, k):
                rt.intake.record_batch([run_event(base + j + i) for i in range(k)], who)
            dt = time.perf_counter() - t0
            out[f"groups_of_{k}"] = {
                "statements_per_event": round(counter[0] / n, 1),
                "ms_per_event": round(dt / n * 1e3, 2),
            }
            rt.projector.sync_to_head(timeout=600)
            base += n
        evs = [run_event(base + i) for i in range(500)]
        counter[0] = 0
        t0 = time.perf_counter()
        rt.intake.record_batch(evs, who)
        dt = time.perf_counter() - t0
        out["batch_500"] = {
            "statements": counter[0],
            "ms_per_batch": round(dt * 1e3, 1),
            "us_per_event": round(dt / 500 * 1e6, 1),
        }
        out["batch_500_projected_later"] = project(500)
        base += 500
        evs = [run_event(base + i) for i in range(5000)]
        for i in range(0, 5000, 500):
            rt.intake.record_batch(evs[i : i + 500], who)
        out["backlog_5000_projected"] = project(5000)
        # Pieces of the batch path, without the database.
        from ledger.lineage.events import validate_event

        evs = [run_event(i) for i in range(500)]
        t0 = time.perf_counter()
        for e in evs:
            validate_event(e)
        out["validate_event_us"] = round((time.perf_counter() - t0) / 500 * 1e6, 1)
    finally:
        event.remove(rt.db.engine, "before_cursor_execute", count)
        if raw_execute is not None:
            import psycopg

            psycopg.Connection.execute = raw_execute  # type: ignore[method-assign]
    return out


def bench_export(rt: Any) -> dict[str, Any]:
    from ledger.store.export import export_lines
    from ledger.tlog.tree import CompactRange
    from ledger.verify import check_line

    size = rt.ledger.size()
    n = min(size, 50_000)
    t0 = time.perf_counter()
    chunks = list(export_lines(rt.db, 0, n))
    server = time.perf_counter() - t0
    lines = b"".join(chunks).split(b"\n")[:-1]
    t0 = time.perf_counter()
    cr = CompactRange()
    for i, line in enumerate(lines):
        leaf, _ = check_line(i, line)
        cr.append(leaf)
    client = time.perf_counter() - t0
    return {
        "rows": n,
        "server_export_rows_per_s": round(n / server),
        "client_verify_lines_per_s": round(n / client),
        "mean_line_bytes": round(sum(map(len, lines)) / len(lines)),
    }


_RSS = "next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS:')) / 1024"


def bench_imports() -> dict[str, Any]:
    """RSS of a process that imports `ledger.app` and calls `create_app` (each server worker, and
    the master, which runs `initialise` before forking); then, for each heavy package the app pulls
    in, the RSS a bare interpreter gains by importing only that package (shared dependencies are
    counted in each, so the column does not add up)."""
    import os

    app_code = (
        "import json, sys\n"
        f"base = {_RSS}\n"
        "import ledger.app\n"
        f"imported = {_RSS}\n"
        "from ledger.config import Settings\n"
        "app = ledger.app.create_app(Settings.from_env())\n"
        f"built = {_RSS}\n"
        "print(json.dumps({'python': base, 'import_ledger_app': imported, 'create_app': built,\n"
        "                  'packages': sorted({m.split('.')[0] for m in sys.modules})}))\n"
    )
    heavy = [
        "sqlalchemy",
        "sqlmodel",
        "pydantic",
        "psycopg",
        "flask",
        "flask_smorest",
        "marshmallow",
        "cryptography.hazmat.primitives.asymmetric.ed25519",
        "regopy",
        "alembic",
        "mako",
        "pygments",
        "yaml",
        "prometheus_client",
        "rfc8785",
        "openlineage.client",
        "apscheduler.schedulers.blocking",
    ]
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, LEDGER_DATA_DIR=d, LEDGER_POLICY_DIR=str(REPO / "policies"))
        subprocess.run([sys.executable, "-m", "ledger.cli", "init"], env=env, capture_output=True, check=True)
        p = subprocess.run([sys.executable, "-c", app_code], env=env, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            return {"error": p.stderr[-500:]}
        app = json.loads(p.stdout)
        per_package = {}
        for mod in heavy:
            code = f"a = {_RSS}\nimport {mod}\nprint({_RSS} - a)"
            q = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
            if q.returncode == 0:
                per_package[mod] = {
                    "standalone_mb": round(float(q.stdout), 1),
                    "imported_by_app": mod.split(".")[0] in app["packages"],
                }
    return {
        "python_mb": round(app["python"], 1),
        "after_import_ledger_app_mb": round(app["import_ledger_app"], 1),
        "after_create_app_mb": round(app["create_app"], 1),
        "packages": per_package,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", type=int, default=20_000, help="log size for the database sections")
    p.add_argument("--only", default="jcs,receipts,proof_read,inserts,statements,export,imports")
    a = p.parse_args(argv)
    remember_start()
    only = set(a.only.split(","))
    r: dict[str, Any] = {}
    if "jcs" in only:
        r["jcs"] = bench_jcs()
        log(f"jcs: {r['jcs']}")
    if "receipts" in only:
        r["receipts"] = bench_receipts()
        log(f"receipts: {r['receipts']}")
    if only & {"proof_read", "inserts", "statements", "export"}:
        with pg_database("bench_hot") as url, tempfile.TemporaryDirectory() as d:
            rt = _runtime(url, Path(d))
            try:
                log(f"filling {a.entries:,} entries")
                _fill(rt, a.entries)
                for name, fn in (
                    ("proof_read", bench_proof_read),
                    ("inserts", bench_inserts),
                    ("export", bench_export),
                    ("statements", bench_statements),
                ):
                    if name in only:
                        r[name] = fn(rt)
                        log(f"{name}: {r[name]}")
            finally:
                rt.close()
    if "imports" in only:
        r["imports"] = bench_imports()
        log(f"imports: create_app {r['imports'].get('after_create_app_mb')} MB")
    print(json.dumps(r, indent=2))
    write_results("hotspots", {"command": " ".join(["python", *sys.argv]), "hotspots": r})


if __name__ == "__main__":
    main()
