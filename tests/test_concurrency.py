"""Several processes append to one database at once; seq stays gapless and the tree stays right.

Each process is a fresh interpreter (as gunicorn workers and other hosts are) that builds its own
runtime with `build_runtime(settings)` and appends from several threads, singly and in batches, so
the cross-process lock (advisory lock on PostgreSQL, IMMEDIATE transactions on SQLite) and the
in-process group commit are both exercised. All of them also race to append one shared dedup key.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_store import check_log, load_reference

from ledger.config import Settings
from ledger.runtime import Runtime

pytestmark = pytest.mark.slow  # starts interpreters

PROCESSES = 3
THREADS = 3
SINGLES = 4
BATCHES = 2
BATCH_SIZE = 4
SHARED_KEY = "sha256:" + "5" * 64

WORKER = r"""
import json, sys, threading, time
from pathlib import Path

from ledger.config import Settings
from ledger.runtime import build_runtime
from ledger.store.sequencer import PendingEntry

cfg = json.loads(sys.argv[1])
settings = Settings.from_env(cfg["env"])
rt = build_runtime(settings)
out, errors = [], []


def pending(label, dedup_key=None):
    return PendingEntry(kind="openlineage.run_event", subject=f"run:{label}", principal=f"w{cfg['worker']}",
                        payload={"label": label, "worker": cfg["worker"]}, dedup_key=dedup_key)


def record(entries, receipts):
    for e, r in zip(entries, receipts, strict=True):
        out.append({"seq": e.header.seq, "subject": e.header.subject, "digest": e.header.payload_digest,
                    "leaf": e.leaf_hash.hex(), "duplicate": e.duplicate, "checkpoint": r.checkpoint,
                    "proof": [h.hex() for h in r.inclusion_proof]})


def thread(t):
    try:
        base = f"p{cfg['worker']}-t{t}"
        # Interleave singles and batches; the shared dedup key goes in the middle of a batch.
        for j in range(cfg["singles"]):
            record(*rt.ledger.append([pending(f"{base}-s{j}")]))
            if j < cfg["batches"]:
                batch = [pending(f"{base}-b{j}-{k}") for k in range(cfg["batch_size"])]
                if j == 1:
                    batch.insert(2, pending(f"{base}-shared", dedup_key=cfg["shared_key"]))
                record(*rt.ledger.append(batch))
    except BaseException as e:
        errors.append(repr(e))


Path(cfg["ready"]).touch()
go = Path(cfg["go"])
deadline = time.monotonic() + 60
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.002)
threads = [threading.Thread(target=thread, args=(t,)) for t in range(cfg["threads"])]
for th in threads:
    th.start()
for th in threads:
    th.join()
rt.close()
print(json.dumps({"results": out, "errors": errors}))
"""


def _env(settings: Settings) -> dict[str, str]:
    return {
        "LEDGER_DATA_DIR": str(settings.data_dir),
        "LEDGER_DATABASE_URL": settings.database_url,
        "LEDGER_ORIGIN": settings.origin,
        "LEDGER_SIGNING_KEY": str(settings.signing_key_path),
        "LEDGER_POLICY_DIR": str(settings.policy_dir),
        "LEDGER_SCHEDULER": "0",
    }


def run_workers(settings: Settings, tmp_path: Path) -> list[dict[str, Any]]:
    """Starts every process, lets them all go at once, and returns what each appended."""
    go = tmp_path / "go"
    procs = []
    for w in range(PROCESSES):
        cfg = {
            "env": _env(settings),
            "worker": w,
            "threads": THREADS,
            "singles": SINGLES,
            "batches": BATCHES,
            "batch_size": BATCH_SIZE,
            "shared_key": SHARED_KEY,
            "ready": str(tmp_path / f"ready-{w}"),
            "go": str(go),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, json.dumps(cfg)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready-{w}").exists() for w in range(PROCESSES)):
            assert all(p.poll() is None for p in procs), [
                p.communicate() for p in procs if p.poll() is not None
            ]
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.01)
        go.touch()
        outputs = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=120)
            assert p.returncode == 0, stderr
            report = json.loads(stdout.strip().splitlines()[-1])
            assert report["errors"] == [], report["errors"]
            outputs.extend(report["results"])
        return outputs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


def test_processes_append_concurrently_gapless(runtime: Runtime, settings: Settings, tmp_path: Path) -> None:
    ref = load_reference()
    base = runtime.ledger.size()  # entries `ledger init` itself wrote (a policy.bundle, say)
    results = run_workers(settings, tmp_path)

    per_thread = SINGLES + BATCHES * BATCH_SIZE
    unique = PROCESSES * THREADS * per_thread + 1  # + the shared dedup key, stored once
    assert len(results) == PROCESSES * THREADS * (per_thread + 1)

    log = check_log(runtime, ref)  # seq 0..n-1, leaves from headers, digests, root vs reference
    assert len(log.headers) == base + unique

    # Every seq was handed out exactly once, and what each caller was told is what is stored.
    originals = [r for r in results if not r["duplicate"]]
    assert sorted(r["seq"] for r in originals) == list(range(base, base + unique))
    for r in results:
        header = log.headers[r["seq"]]
        assert (header.subject, header.payload_digest) == (r["subject"], r["digest"])  # duplicates too
        assert bytes.fromhex(r["leaf"]) == log.leaves[r["seq"]]
    shared = [r for r in results if r["subject"].endswith("-shared")]
    assert all(r in shared for r in results if r["duplicate"])
    assert len(shared) == PROCESSES * THREADS
    assert len({r["seq"] for r in shared}) == 1
    assert sum(not r["duplicate"] for r in shared) == 1

    # Each receipt proves its entry against the signed checkpoint it came with.
    vkey = runtime.ledger.signer.verifier.line()
    roots: dict[int, bytes] = {}
    for r in results:
        _origin, size, root = ref.parse_checkpoint(ref.verify_note(r["checkpoint"], vkey))
        if size not in roots:
            roots[size] = ref.mth(log.leaves[:size])
        assert root == roots[size]
        proof = [bytes.fromhex(h) for h in r["proof"]]
        assert ref.verify_inclusion(r["seq"], size, log.leaves[r["seq"]], proof, root)
