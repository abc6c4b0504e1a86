"""Policy evaluation is bounded: a cap on every list in the input and a wall-clock budget. Past
either, and on any evaluation error, the decision is a denial that says why (never an exception, never
a 500); the dry run has the same bounds; a runaway evaluation's process is killed, not left burning.

Real regopy, real worker processes, real policy files; the slow policy is written for the test.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from conftest import auth
from events import run_event
from pipeline import registration, versioned
from test_policy_engine import POLICIES, compliant_promotion

from ledger.policy.engine import PolicyEngine, PolicyLimits, load_policy_bundle, oversized_list
from ledger.policy.errors import PolicyEvaluationError

# A policy whose cost the input chooses: regopy 1.5.2 builds a set in quadratic time, so 30,000
# numbers take minutes; 10 take nothing.
SLOW = """package ledger.slow

import rego.v1

deny contains "negative" if count({x | some x in numbers.range(1, input.n)}) < 0

deny contains "bad time" if time.parse_rfc3339_ns(input.at) < 0

deny contains "zero" if 10 / input.d > 100
"""


def slow_engine(tmp_path: Path, **limits: Any) -> PolicyEngine:
    (tmp_path / "slow.rego").write_text(SLOW, encoding="utf-8")
    return PolicyEngine(load_policy_bundle(tmp_path), limits=PolicyLimits(**limits))


def digest_of(document: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(rfc8785.dumps(document)).hexdigest()


def many_datasets(n: int) -> list[dict[str, Any]]:
    return [
        {
            "namespace": "s3://many",
            "name": f"d{i}",
            "version": "v1",
            "produced_by_run": "9a8b7c6d-0000-4000-8000-000000000001",
            "source": False,
            "tags": [],
            "classified": False,
        }
        for i in range(n)
    ]


def big_promotion(n: int) -> dict[str, Any]:
    """A production promotion input with `n` items in each of its four lists, most of them failing."""
    doc = compliant_promotion()
    doc["upstream"]["datasets"] = [
        {
            "namespace": "s3://x",
            "name": f"d{i}",
            "version": None if i % 3 == 0 else "v1",
            "produced_by_run": None if i % 5 == 0 else "r",
            "source": False,
            "tags": ["pii"] if i % 2 else [],
            "classified": i % 4 == 1,
        }
        for i in range(n)
    ]
    doc["validations"] = [
        {
            "type": ("performance", "bias")[i % 2],
            "passed": i % 7 != 0,
            "recorded_at": "2026-11-02T10:00:00Z",
            "report_digest": "sha256:" + "cd" * 32,
            "seq": 100 + i,
        }
        for i in range(n)
    ]
    doc["approvals"] = [
        {
            "stage": "production",
            "approver": f"u{i}",
            "approver_roles": ["approver"] if i % 3 else [],
            "recorded_at": "2026-11-03T10:00:00Z",
            "seq": 10_000 + i,
        }
        for i in range(n)
    ]
    doc["open_violations"] = [{"id": i, "dataset": f"s3://x:d{i}", "run_id": "r", "reason": "bad"} for i in range(n)]
    return doc


# --- Size ---------------------------------------------------------------------------------------------


def test_oversized_list_names_the_first_list_past_the_cap() -> None:
    assert oversized_list({"a": [1, 2], "b": {"c": [[1, 2, 3]]}}, 3) is None
    assert oversized_list({"a": [1, 2], "b": {"c": [[1, 2, 3, 4]]}}, 3) == ("b.c[0]", 4)
    assert oversized_list([1, 2, 3, 4], 3) == ("input", 4)


def test_a_list_longer_than_the_cap_is_a_denial_naming_it(tmp_path: Path) -> None:
    engine = PolicyEngine(load_policy_bundle(POLICIES), limits=PolicyLimits(max_items=50))
    doc = compliant_promotion()
    doc["upstream"]["datasets"] = many_datasets(51)
    result = engine.evaluate("ledger.promotion", doc)
    assert not result.allowed
    assert result.violations == ("policy input too large: upstream.datasets has 51 items, at most 50",)
    assert result.policy_digest == engine.bundle.digest
    assert result.input_digest == digest_of(doc)

    doc["upstream"]["datasets"] = many_datasets(50)  # at the cap: evaluated
    assert engine.evaluate("ledger.promotion", doc).allowed

    doc["approvals"][0]["approver_roles"] = ["approver"] + [f"r{i}" for i in range(50)]  # nested lists count
    assert engine.evaluate("ledger.promotion", doc).violations == (
        "policy input too large: approvals[0].approver_roles has 51 items, at most 50",
    )


# --- Time ---------------------------------------------------------------------------------------------


def test_an_evaluation_past_its_budget_is_a_denial_and_its_process_is_killed(tmp_path: Path) -> None:
    engine = slow_engine(tmp_path, budget_seconds=0.5, processes=1)
    assert engine.evaluate("ledger.slow", {"n": 10}).allowed  # starts the worker (not part of any budget)
    (worker,) = engine._pool._idle
    pid = worker.process.pid

    start = time.monotonic()
    result = engine.evaluate("ledger.slow", {"n": 30_000})
    elapsed = time.monotonic() - start
    assert result.violations == ("policy evaluation exceeded its 0.5 s budget",)
    assert not result.allowed and result.input_digest == digest_of({"n": 30_000})
    assert elapsed < 0.5 + 1.0, elapsed
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left computing
        os.kill(pid, 0)

    assert engine.evaluate("ledger.slow", {"n": 10}).allowed  # a fresh worker takes over


def test_callers_beyond_the_pool_wait_for_a_worker_not_for_the_budget(tmp_path: Path) -> None:
    engine = slow_engine(tmp_path, budget_seconds=0.5, processes=1)
    engine.evaluate("ledger.slow", {"n": 10})
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(engine.evaluate("ledger.slow", {"n": 30_000}))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert [r.violations for r in results] == [("policy evaluation exceeded its 0.5 s budget",)] * 2


# --- Errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"n": 1, "at": "yesterday"}, "parse time"),
        ({"n": 1, "d": 0}, "divide by zero"),
    ],
)
def test_an_evaluation_error_is_a_denial_with_the_reason(tmp_path: Path, document: dict[str, Any], reason: str) -> None:
    engine = slow_engine(tmp_path)
    result = engine.evaluate("ledger.slow", document)
    assert not result.allowed
    (violation,) = result.violations
    assert violation.startswith("policy evaluation failed: ") and reason in violation, violation
    assert result.input_digest == digest_of(document) and result.policy_digest == engine.bundle.digest
    with pytest.raises(PolicyEvaluationError, match=reason):
        engine.evaluate("ledger.slow", document, errors="raise")
    assert engine.evaluate("ledger.slow", {"n": 1}).allowed  # the worker recovers


def test_a_time_out_of_range_in_the_promotion_input_is_a_denial(tmp_path: Path) -> None:
    engine = PolicyEngine(load_policy_bundle(POLICIES))
    doc = compliant_promotion()
    doc["validations"][0]["recorded_at"] = "99999-01-01T00:00:00Z"
    result = engine.evaluate("ledger.promotion", doc)
    assert not result.allowed
    (violation,) = result.violations
    assert violation.startswith("policy evaluation failed: "), violation


def test_a_worker_that_dies_mid_evaluation_is_a_denial(tmp_path: Path) -> None:
    engine = slow_engine(tmp_path, budget_seconds=30, processes=1)
    engine.evaluate("ledger.slow", {"n": 10})
    (worker,) = engine._pool._idle
    threading.Timer(0.3, worker.process.kill).start()
    result = engine.evaluate("ledger.slow", {"n": 30_000})
    (violation,) = result.violations
    assert violation.startswith("policy evaluation failed: the evaluation process ended"), violation
    assert engine.evaluate("ledger.slow", {"n": 10}).allowed


def test_caller_mistakes_still_raise(tmp_path: Path) -> None:
    engine = slow_engine(tmp_path)
    with pytest.raises(PolicyEvaluationError, match="not defined by policy bundle"):
        engine.evaluate("ledger.nope", {})


def test_limits_must_be_positive() -> None:
    for bad in ({"max_items": 0}, {"budget_seconds": 0}, {"processes": 0}, {"budget_seconds": float("nan")}):
        with pytest.raises(ValueError, match="positive"):
            PolicyLimits(**bad)


# --- Speed: the engine alone ----------------------------------------------------------------------------


def test_a_thousand_items_per_list_are_decided_within_the_budget() -> None:
    engine = PolicyEngine(load_policy_bundle(POLICIES), limits=PolicyLimits(budget_seconds=10))
    engine.evaluate("ledger.promotion", compliant_promotion())
    start = time.monotonic()
    result = engine.evaluate("ledger.promotion", big_promotion(1000))
    elapsed = time.monotonic() - start
    assert not result.allowed and not result.violations[0].startswith("policy evaluation")
    # Per-item rules name 20 items, then count the rest (regopy builds sets in quadratic time).
    assert "and 314 more upstream datasets have no version" in result.violations
    assert "and 980 more open policy violations on upstream datasets" in result.violations
    assert elapsed < 6, elapsed  # about 1 s of CPU; before the policy was made linear, about 10 s


# --- Over HTTP ------------------------------------------------------------------------------------------


def test_dry_run_with_5000_items_per_list_answers_within_seconds(client, tokens, runtime) -> None:  # type: ignore[no-untyped-def]
    size = runtime.ledger.size()
    start = time.monotonic()
    r = client.post("/api/v1/policies/evaluate", json={"input": big_promotion(5000)}, headers=auth(tokens.security))
    elapsed = time.monotonic() - start
    assert r.status_code == 200, r.get_json()
    decision = r.get_json()["decision"]
    assert decision["allowed"] is False and decision["recorded"] is False
    assert decision["policy_digest"] == runtime.policy.bundle.digest
    assert decision["input_digest"].startswith("sha256:")
    # Over 10 minutes of CPU before; now the decision, or the budget's denial, within seconds.
    assert elapsed < runtime.policy.limits.budget_seconds + 10, elapsed
    assert runtime.ledger.size() == size


def test_dry_run_refuses_a_body_with_a_list_past_the_cap(client, tokens, runtime) -> None:  # type: ignore[no-untyped-def]
    doc = compliant_promotion()
    doc["upstream"]["datasets"] = many_datasets(runtime.policy.limits.max_items + 1)
    r = client.post("/api/v1/policies/evaluate", json={"input": doc}, headers=auth(tokens.security))
    assert r.status_code == 413 and r.mimetype == "application/problem+json"
    problem = r.get_json()
    assert problem["field"] == "input.upstream.datasets"
    assert "10001 items, at most 10000" in problem["detail"]


def test_promotion_of_a_model_trained_on_1000_inputs_is_decided_and_recorded(client, tokens, runtime) -> None:  # type: ignore[no-untyped-def]
    inputs = [versioned("s3://wide", f"part-{i:04d}", "v1") for i in range(1000)]
    run_id = None
    for event_type in ("START", "COMPLETE"):
        event = run_event(event_type=event_type, run_id=run_id, namespace="ml", job="train_wide", inputs=inputs)
        event["job"]["facets"] = {"sourceCodeLocation": {"type": "git", "url": "https://git.example/x", "version": "1"}}
        run_id = event["run"]["runId"]
        r = client.post("/api/v1/lineage", json=event, headers=auth(tokens.pipeline))
        assert r.status_code == 201, r.get_json()
    assert run_id is not None
    registrar = runtime.principals.create("ml-registrar", roles=["pipeline"])[1]
    base = "/api/v1/models/churn/versions"
    r = client.post(base, json=registration(run_id), headers=auth(registrar))
    assert r.status_code == 201, r.get_json()

    start = time.monotonic()
    r = client.post(f"{base}/3/promotions", json={"stage": "production"}, headers=auth(tokens.pipeline))
    elapsed = time.monotonic() - start
    assert r.status_code == 403, r.get_json()  # no validations or approvals yet: denied, and recorded
    decision = r.get_json()["decision"]
    assert not any(v.startswith("policy ") for v in decision["violations"]), decision["violations"]
    assert (
        "and 980 more upstream datasets were not produced by a recorded run and are not declared sources"
        in (decision["violations"])
    )
    entry = runtime.ledger.entry(decision["seq"])
    assert entry.header.kind == "promotion.decision" and entry.payload["allowed"] is False
    assert elapsed < 15, elapsed  # 10.6 s before; about 1.3 s (SQLite) and 2-5 s (PostgreSQL) on a busy 2-core host
