"""Storage invariants, on SQLite and on PostgreSQL (the `database_url` fixture), schema from Alembic.

- the log tables are append-only at the database level: raw UPDATE, DELETE, TRUNCATE and upserts fail
  whatever the connection, and a payload can be deleted only after its `payload.erasure` entry;
- a dedup key is stored once, in separate calls, inside one batch and from racing threads;
- group commit: one caller's failing projection refuses that caller only, seq stays gapless;
- every root and proof at any size costs a constant number of statements and O(log n) rows.

The tests that append end by checking the whole log against the slow RFC 9162 reference
(`spec_ref`): seq is 0..n-1, leaf hashes recomputed from the headers, payload digests, the stored root
and its signed checkpoint. The log may not start empty: `ledger init` records the policy bundle.
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, StatementError

from ledger.runtime import Runtime
from ledger.store.ledger import Clause, Ledger, Receipt, StaleStateError, Unless
from ledger.store.models import JobRun
from ledger.store.sequencer import AppendedEntry, PendingEntry
from ledger.store.tree import root_at
from ledger.tlog.entry import EntryHeader, check_payload


def load_reference() -> ModuleType:
    """The independent RFC 9162 / signed-note reference, written from the specs (tests/spec_ref.py)."""
    import spec_ref

    return spec_ref


@pytest.fixture(scope="module")
def ref() -> ModuleType:
    return load_reference()


# Regression (group_retry_keeps_refused_result): in the savepoint-per-caller retry a refused caller
# kept its result, so its rolled-back seqs entered the proof step and every caller was refused.


def entry(i: int | str, *, dedup_key: str | None = None) -> PendingEntry:
    return PendingEntry(
        kind="openlineage.run_event",
        subject=f"run:{i}",
        principal="etl-nightly",
        payload={"i": str(i), "n": [1, 2.5, "é"]},
        dedup_key=dedup_key,
    )


@dataclass(frozen=True)
class StoredLog:
    headers: list[EntryHeader]
    leaves: list[bytes]
    root: bytes


def check_log(rt: Runtime, ref: ModuleType) -> StoredLog:
    """Reads every stored row and checks the log against the reference; returns the headers."""
    with rt.db.engine.connect() as c:
        rows = c.execute(
            text(
                "SELECT e.seq, e.kind, e.subject, e.integrated_time, e.principal, e.payload_digest, "
                "e.leaf_hash, p.salt, p.payload FROM log_entries e "
                "LEFT JOIN entry_payloads p ON p.seq = e.seq ORDER BY e.seq"
            )
        ).all()
    headers: list[EntryHeader] = []
    leaves: list[bytes] = []
    for expected_seq, r in enumerate(rows):
        assert r.seq == expected_seq, f"seq gap or duplicate at {expected_seq}: found {r.seq}"
        header = EntryHeader(
            seq=r.seq,
            kind=r.kind,
            subject=r.subject,
            integrated_time=r.integrated_time,
            principal=r.principal,
            payload_digest=r.payload_digest,
        )
        # The leaf is recomputed from the header, never taken from the stored leaf_hash.
        leaf = ref.leaf_hash(header.canonical())
        assert bytes(r.leaf_hash) == leaf, f"stored leaf_hash of entry {r.seq} is not the header's"
        if r.payload is not None:
            check_payload(header, bytes(r.salt), r.payload.encode())
        headers.append(header)
        leaves.append(leaf)
    cp = rt.ledger.checkpoint()
    root = ref.mth(leaves)
    assert cp.size == len(rows)
    assert cp.root == root, "stored root differs from the recomputed Merkle Tree Hash"
    text_ = ref.verify_note(cp.note, rt.ledger.signer.verifier.line())
    assert ref.parse_checkpoint(text_)[1:] == (len(rows), root)
    return StoredLog(headers, leaves, root)


def verify_receipt(ref: ModuleType, rt: Runtime, receipt: Receipt) -> None:
    """A receipt's inclusion proof holds against the signed checkpoint it carries."""
    _origin, size, root = ref.parse_checkpoint(ref.verify_note(receipt.checkpoint, rt.ledger.signer.verifier.line()))
    assert ref.verify_inclusion(receipt.seq, size, receipt.leaf_hash, receipt.inclusion_proof, root)


def fill(ledger: Ledger, n: int, start: int = 0) -> list[AppendedEntry]:
    return ledger.append([entry(i) for i in range(start, start + n)])[0]


def refused(rt: Runtime, sql: str, pattern: str = "append-only|refused|payload.erasure|cannot be updated") -> None:
    """Runs `sql` in a transaction of its own and requires the database to refuse it."""
    with pytest.raises(DBAPIError, match=pattern), rt.db.engine.begin() as c:
        c.execute(text(sql))


def snapshot(rt: Runtime, table: str) -> list[tuple[Any, ...]]:
    with rt.db.engine.connect() as c:
        return [tuple(r) for r in c.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2"))]


# --- 1. append-only, enforced by the database --------------------------------------------------

FORGERIES = {
    "log_entries": [
        "UPDATE log_entries SET subject = 'run:forged' WHERE seq = 0",
        "UPDATE log_entries SET seq = seq + 100",
        "DELETE FROM log_entries WHERE seq = 2",
        "DELETE FROM log_entries",
    ],
    "tree_nodes": [
        "UPDATE tree_nodes SET hash = (SELECT hash FROM tree_nodes WHERE node_id = 1) WHERE node_id = 0",
        "DELETE FROM tree_nodes WHERE node_id = 0",
        "DELETE FROM tree_nodes",
    ],
    "checkpoints": [
        "UPDATE checkpoints SET note = 'forged'",
        "DELETE FROM checkpoints WHERE size >= 0",
        "DELETE FROM checkpoints",
    ],
}


@pytest.mark.parametrize("table", sorted(FORGERIES))
def test_log_tables_refuse_update_delete_truncate(runtime: Runtime, ref: ModuleType, table: str) -> None:
    fill(runtime.ledger, 3)
    assert runtime.ledger.store_checkpoint() is not None
    before = snapshot(runtime, table)
    assert before
    statements = list(FORGERIES[table])
    if not runtime.db.is_sqlite:  # SQLite has no TRUNCATE; `DELETE FROM t` above is its truncate
        statements += [f"TRUNCATE {table}", f"TRUNCATE {table} CASCADE"]
    for sql in statements:
        refused(runtime, sql)
    assert snapshot(runtime, table) == before
    check_log(runtime, ref)


DEDUP_KEY = "sha256:" + "1" * 64


def _upserts(is_sqlite: bool) -> list[str]:
    if is_sqlite:
        # INSERT OR REPLACE deletes the colliding row without firing DELETE triggers (unless
        # recursive_triggers is on), so the migration refuses the colliding insert itself.
        return [
            "INSERT OR REPLACE INTO log_entries SELECT seq, kind, 'run:forged', integrated_time, principal, "
            "payload_digest, leaf_hash, dedup_key FROM log_entries WHERE seq = 0",
            # a new seq reusing a stored dedup key would replace the entry that holds it
            "INSERT OR REPLACE INTO log_entries SELECT 9999, kind, subject, integrated_time, principal, "
            f"payload_digest, leaf_hash, dedup_key FROM log_entries WHERE dedup_key = '{DEDUP_KEY}'",
            "REPLACE INTO tree_nodes (node_id, hash) SELECT 0, hash FROM tree_nodes WHERE node_id = 1",
            "REPLACE INTO checkpoints (size, key_id, note, created_at) "
            "SELECT size, key_id, 'forged', created_at FROM checkpoints",
            "REPLACE INTO entry_payloads (seq, salt, payload) SELECT 0, salt, '{}' FROM entry_payloads WHERE seq = 1",
        ]
    return [
        "INSERT INTO log_entries SELECT * FROM log_entries WHERE seq = 0 "
        "ON CONFLICT (seq) DO UPDATE SET subject = 'run:forged'",
        "INSERT INTO tree_nodes SELECT 0, hash FROM tree_nodes WHERE node_id = 1 "
        "ON CONFLICT (node_id) DO UPDATE SET hash = EXCLUDED.hash",
        "INSERT INTO checkpoints SELECT * FROM checkpoints ON CONFLICT (size, key_id) DO UPDATE SET note = 'forged'",
        "INSERT INTO entry_payloads SELECT 0, salt, '{}' FROM entry_payloads WHERE seq = 1 "
        "ON CONFLICT (seq) DO UPDATE SET payload = EXCLUDED.payload",
    ]


def test_regression_sqlite_insert_or_replace_bypassed_append_only_triggers(runtime: Runtime, ref: ModuleType) -> None:
    runtime.ledger.append([entry(0), entry(1, dedup_key=DEDUP_KEY), entry(2)])
    assert runtime.ledger.store_checkpoint() is not None
    tables = ("log_entries", "tree_nodes", "checkpoints", "entry_payloads")
    before = {t: snapshot(runtime, t) for t in tables}
    for sql in _upserts(runtime.db.is_sqlite):
        refused(runtime, sql)
    assert {t: snapshot(runtime, t) for t in tables} == before
    check_log(runtime, ref)


def test_payload_deleted_only_after_its_erasure_entry(runtime: Runtime, ref: ModuleType) -> None:
    a, b, c_ = (e.header.seq for e in fill(runtime.ledger, 3))
    for sql in (
        f"UPDATE entry_payloads SET payload = '{{}}' WHERE seq = {a}",
        f"DELETE FROM entry_payloads WHERE seq = {a}",
        "DELETE FROM entry_payloads",
    ):
        refused(runtime, sql)
    if not runtime.db.is_sqlite:
        refused(runtime, "TRUNCATE entry_payloads")

    (erasure,), (receipt,) = runtime.ledger.append(
        [
            PendingEntry(
                kind="payload.erasure",
                subject=f"entry:{a}",
                principal="sec",
                payload={"seq": a, "reason": "gdpr"},
            )
        ]
    )
    assert erasure.header.seq == c_ + 1
    with runtime.db.engine.begin() as c:
        assert c.execute(text(f"DELETE FROM entry_payloads WHERE seq = {a}")).rowcount == 1
    # Still refused: the others have no erasure entry, and payloads stay uneditable.
    refused(runtime, f"DELETE FROM entry_payloads WHERE seq = {b}")
    refused(runtime, "DELETE FROM entry_payloads")
    refused(runtime, f"UPDATE entry_payloads SET payload = '{{}}' WHERE seq = {b}")
    assert [r[0] for r in snapshot(runtime, "entry_payloads")] == [*range(a), b, c_, c_ + 1]

    erased = runtime.ledger.entry(a)
    assert erased.erased
    assert erased.salt is None
    log = check_log(runtime, ref)
    assert erased.header == log.headers[a]  # the header, hence every proof, is untouched
    size = len(log.headers)
    leaf, proof = runtime.ledger.inclusion_proof(a, size)
    assert ref.verify_inclusion(a, size, leaf, proof, log.root)
    verify_receipt(ref, runtime, receipt)


def test_timestamps_are_utc_instants_whatever_the_session_time_zone(runtime: Runtime) -> None:
    """Regression: the timestamp columns were naive, so PostgreSQL stored local wall time."""
    if not runtime.db.is_sqlite:
        name = runtime.db.engine.url.database
        with runtime.db.engine.execution_options(isolation_level="AUTOCOMMIT").connect() as c:
            c.execute(text(f"ALTER DATABASE \"{name}\" SET timezone TO 'America/New_York'"))
        runtime.db.engine.dispose()  # new connections pick the database's time zone up
        with runtime.db.engine.connect() as c:
            assert c.execute(text("SHOW timezone")).scalar_one() == "America/New_York"
    fill(runtime.ledger, 1)
    before = datetime.now(UTC)
    runtime.ledger.store_checkpoint()
    after = datetime.now(UTC)
    (stored,) = runtime.ledger.stored_checkpoints()
    assert stored.created_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= stored.created_at <= after + timedelta(seconds=1)
    with pytest.raises(StatementError, match=r"time ?zone"), runtime.db.write() as session:
        session.add(JobRun(name="naive", last_run_at=datetime(2026, 1, 1), holder="x"))


# --- 4. dedup ------------------------------------------------------------------------------------


def _dedup_rows(rt: Runtime, key: str) -> int:
    with rt.db.engine.connect() as c:
        return int(c.execute(text("SELECT count(*) FROM log_entries WHERE dedup_key = :k"), {"k": key}).scalar_one())


def test_dedup_key_stored_once_across_calls_and_within_a_batch(runtime: Runtime, ref: ModuleType) -> None:
    ledger = runtime.ledger
    base = ledger.size()  # entries the runtime itself wrote (a policy.bundle, say)
    k1, k2 = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    (first,), _ = ledger.append([entry("first", dedup_key=k1)])
    assert not first.duplicate

    # Again in a separate call, with another payload: the original comes back.
    (again,), (receipt,) = ledger.append([entry("again", dedup_key=k1)])
    assert again.duplicate
    assert again.header == first.header
    assert again.leaf_hash == first.leaf_hash
    assert receipt.duplicate
    assert receipt.seq == first.header.seq
    verify_receipt(ref, runtime, receipt)

    # Inside one batch, both a stored key and a key new to the batch.
    batch, receipts = ledger.append(
        [entry("x", dedup_key=k2), entry("y"), entry("z", dedup_key=k2), entry("w", dedup_key=k1)]
    )
    assert [e.duplicate for e in batch] == [False, False, True, True]
    assert batch[2].header == batch[0].header
    assert batch[3].header == first.header
    assert [r.seq - base for r in receipts] == [1, 2, 1, 0]
    for r in receipts:
        verify_receipt(ref, runtime, r)
    assert _dedup_rows(runtime, k1) == _dedup_rows(runtime, k2) == 1
    assert len(check_log(runtime, ref).headers) == base + 3


def test_dedup_key_stored_once_when_threads_race(runtime: Runtime, ref: ModuleType) -> None:
    shared = "sha256:" + "c" * 64
    threads = 8
    base = runtime.ledger.size()
    barrier = threading.Barrier(threads)
    results: dict[int, list[AppendedEntry]] = {}

    def worker(t: int) -> None:
        barrier.wait()
        results[t] = runtime.ledger.append([entry(f"own-{t}"), entry(f"shared-{t}", dedup_key=shared)])[0]

    run_threads(worker, threads)
    originals = [r[1] for r in results.values() if not r[1].duplicate]
    assert len(originals) == 1
    assert all(r[1].header == originals[0].header for r in results.values())
    assert _dedup_rows(runtime, shared) == 1
    log = check_log(runtime, ref)
    assert len(log.headers) == base + threads + 1
    assert log.headers[originals[0].header.seq] == originals[0].header


def run_threads(fn: Callable[[int], None], n: int, *, stagger: float = 0.0) -> None:
    """Runs fn(0..n-1) in threads and re-raises the first failure."""
    errors: list[BaseException] = []

    def guarded(t: int) -> None:
        try:
            fn(t)
        except BaseException as e:
            errors.append(e)

    pool = [threading.Thread(target=guarded, args=(t,)) for t in range(n)]
    for t in pool:
        t.start()
        time.sleep(stagger)
    for t in pool:
        t.join(timeout=60)
        assert not t.is_alive(), "append hung"
    if errors:
        raise errors[0]


# --- 5. group commit isolation -------------------------------------------------------------------

BLOCKER = "blocker"  # the subject of an entry in the log that a refused caller's precondition names


def precondition(*, fail: bool) -> Unless:
    """A refused caller's precondition matches the blocker entry; the others' match nothing."""
    return Unless(0, (Clause(subjects=frozenset({BLOCKER if fail else "nothing-has-this-subject"})),))


@dataclass
class Outcome:
    entries: list[AppendedEntry] | None = None
    receipts: list[Receipt] | None = None
    error: BaseException | None = None


def _check_isolation(
    runtime: Runtime, ref: ModuleType, base: int, outcomes: dict[int, Outcome], failing: set[int]
) -> None:
    log = check_log(runtime, ref)
    stored_subjects = {h.subject: h for h in log.headers}
    for caller, out in outcomes.items():
        if caller in failing:
            assert isinstance(out.error, StaleStateError), out.error
            assert out.entries is None
            assert not any(s.startswith(f"run:c{caller}-") for s in stored_subjects)
        else:
            assert out.error is None, f"caller {caller} got {out.error!r}"
            assert out.entries is not None
            assert out.receipts is not None
            for e, r in zip(out.entries, out.receipts, strict=True):
                assert stored_subjects[e.header.subject] == e.header == log.headers[e.header.seq]
                verify_receipt(ref, runtime, r)
    stored = sum(len(o.entries or []) for o in outcomes.values())
    assert len(log.headers) == base + stored


def _blocked(runtime: Runtime) -> int:
    runtime.ledger.append([PendingEntry(kind="test.blocker", subject=BLOCKER, principal="t", payload={})])
    return runtime.ledger.size()


def test_group_commit_refuses_only_the_failing_callers(runtime: Runtime, ref: ModuleType) -> None:
    """Callers queue behind a held lock so that they commit as one group, some of them refused."""
    ledger = runtime.ledger
    base = _blocked(runtime)
    held = threading.Event()
    release = threading.Event()
    plan = {0: False, 1: False, 2: True, 3: False, 4: False, 5: True, 6: True}  # caller -> refused
    outcomes = {c: Outcome() for c in plan}

    def hold_the_lock() -> None:  # another writer (another process, say) holds the sequencer lock
        with runtime.db.write() as session:
            session.connection()  # SQLite takes its write lock at BEGIN IMMEDIATE, when a connection is used
            held.set()
            assert release.wait(timeout=30)

    def worker(caller: int) -> None:
        pending = [entry(f"c{caller}-{j}") for j in range(1 + caller % 3)]
        try:
            outcomes[caller].entries, outcomes[caller].receipts = ledger.append(
                pending, unless=precondition(fail=plan[caller])
            )
        except StaleStateError as e:
            outcomes[caller].error = e

    def release_when_all_queued() -> None:
        deadline = time.monotonic() + 5
        while len(getattr(ledger, "_queue", ())) < len(plan) - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    assert held.wait(timeout=30)
    releaser = threading.Thread(target=release_when_all_queued)
    releaser.start()
    try:
        run_threads(worker, len(plan), stagger=0.02)
    finally:
        release.set()
        releaser.join()
        holder.join()
    _check_isolation(runtime, ref, base, outcomes, {c for c, f in plan.items() if f})
    # Callers 1..6 were queued while caller 0 waited for the lock: they committed as one group.
    sizes = {
        ref.parse_checkpoint(ref.verify_note(o.receipts[0].checkpoint, ledger.signer.verifier.line()))[1]
        for c, o in outcomes.items()
        if c and o.receipts
    }
    assert len(sizes) == 1


def test_group_commit_isolation_under_contention(runtime: Runtime, ref: ModuleType) -> None:
    base = _blocked(runtime)
    rng = random.Random(7)
    callers = 24
    plan = {c: rng.random() < 0.35 for c in range(callers)}
    outcomes = {c: Outcome() for c in plan}
    barrier = threading.Barrier(8)

    def worker(t: int) -> None:
        barrier.wait()
        for caller in range(t, callers, 8):
            pending = [entry(f"c{caller}-{j}") for j in range(1 + caller % 4)]
            try:
                out = runtime.ledger.append(pending, unless=precondition(fail=plan[caller]))
                outcomes[caller].entries, outcomes[caller].receipts = out
            except StaleStateError as e:
                outcomes[caller].error = e

    run_threads(worker, 8)
    _check_isolation(runtime, ref, base, outcomes, {c for c, f in plan.items() if f})


# --- 3. proofs and roots cost O(log n) reads -----------------------------------------------------


@dataclass
class Reads:
    statements: int = 0
    rows: int = 0


@contextmanager
def counting_reads(rt: Runtime) -> Iterator[Reads]:
    """Counts statements touching the log tables and an upper bound on the rows they return.

    PostgreSQL reports the rows a SELECT returned in `rowcount`; SQLite does not (-1), so there the
    bound is the number of bound keys (every query is a primary-key lookup or an aggregate).
    """
    reads = Reads()

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if not re.search(r"\b(log_entries|tree_nodes)\b", statement):
            return
        assert statement.lstrip().upper().startswith("SELECT"), statement
        reads.statements += 1
        if cursor.rowcount is not None and cursor.rowcount >= 0:
            reads.rows += cursor.rowcount
        else:
            reads.rows += max(1, len(parameters or ()))

    event.listen(rt.db.engine, "after_cursor_execute", after)
    try:
        yield reads
    finally:
        event.remove(rt.db.engine, "after_cursor_execute", after)


def test_proofs_and_roots_read_log_n_rows(runtime: Runtime, ref: ModuleType) -> None:
    ledger = runtime.ledger
    base = ledger.size()
    appended, receipts = ledger.append([entry(i) for i in range(5000)])
    assert [e.header.seq for e in appended] == list(range(base, base + 5000))
    log = check_log(runtime, ref)
    n = len(log.headers)
    for r in receipts[:: n // 7]:
        verify_receipt(ref, runtime, r)
    leaves = log.leaves
    bound = 4 * math.ceil(math.log2(n)) + 4

    rng = random.Random(1)
    edges = {v for k in range(1, 13, 2) for v in (2**k - 1, 2**k, 2**k + 1)}
    sizes = sorted({1, 2, 3, n - 1, n, *edges, *(rng.randint(1, n) for _ in range(8))})
    roots: dict[int, bytes] = {}

    def root_of(size: int) -> bytes:
        if size not in roots:
            roots[size] = ref.mth(leaves[:size])
        return roots[size]

    for size in sizes:
        with counting_reads(runtime) as reads, runtime.db.read() as session:
            assert root_at(session, size) == root_of(size)
        assert reads.statements == 1, (size, reads)
        assert reads.rows <= bound, (size, reads)
        for seq in {0, size - 1, rng.randrange(size)}:
            with counting_reads(runtime) as reads:
                leaf, proof = ledger.inclusion_proof(seq, size)
            assert leaf == leaves[seq]
            assert ref.verify_inclusion(seq, size, leaf, proof, root_of(size)), (seq, size)
            assert reads.statements <= 3, (seq, size, reads)  # size, the leaf, the nodes
            assert reads.rows <= bound, (seq, size, reads)
        for first in {1, size - 1, rng.randint(1, size)} - {0}:
            with counting_reads(runtime) as reads:
                proof = ledger.consistency_proof(first, size)
            assert ref.verify_consistency(first, size, root_of(first), root_of(size), proof), (first, size)
            assert reads.statements <= 2, (first, size, reads)  # size, the nodes
            assert reads.rows <= bound, (first, size, reads)
    with counting_reads(runtime) as reads:
        cp = ledger.checkpoint()
    assert cp.root == root_of(n)
    assert reads.statements <= 2
    assert reads.rows <= bound
