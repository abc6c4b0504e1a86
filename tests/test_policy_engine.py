"""Policy bundles, the Rego v1 gate, fail-closed evaluation, and the Rego tests in `policies/`.

Everything runs the real regopy interpreter on real policy files: nothing here is mocked.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from ledger.errors import LedgerError, PolicyError
from ledger.policy.engine import (
    PolicyBundle,
    PolicyEngine,
    PolicyResult,
    RegoTestResult,
    bundle_digest,
    load_policy_bundle,
    run_rego_tests,
)
from ledger.policy.errors import PolicyEvaluationError, PolicyLoadError
from ledger.policy.syntax import scan_module

POLICIES = Path(__file__).resolve().parent.parent / "policies"

MINIMUM_REGO_TESTS = 55  # 59 when written; fewer means tests were lost, not that they pass

HEADER = "package ledger.example\n\nimport rego.v1\n\n"


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8", newline="")
    return directory


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine(load_policy_bundle(POLICIES))


def compliant_promotion() -> dict[str, Any]:
    """The production promotion input of DESIGN.md section 5 that satisfies every default rule."""
    run_id = "0b7a2c1e-7f7e-4a55-9d8e-1c2b3a4d5e6f"
    return {
        "stage": "production",
        "now": "2026-11-21T22:41:07.123456Z",
        "config": {"max_validation_age_days": 90, "required_validations": ["performance", "bias"]},
        "requester": {"name": "ci-bot", "roles": ["pipeline"]},
        "model": {
            "name": "churn",
            "version": "3",
            "artifact": {"uri": "s3://models/churn/3", "digest": "sha256:" + "ab" * 32},
            "registered_by": "ml-team",
            "training_run_id": run_id,
        },
        "training_run": {
            "id": run_id,
            "state": "COMPLETE",
            "completed_at": "2026-11-01T10:00:00Z",
            "job": {"namespace": "ml", "name": "train_churn", "code_version": "4f2a9c1"},
            "principals": ["etl-nightly"],
        },
        "upstream": {
            "datasets": [
                {
                    "namespace": "s3://raw",
                    "name": "customers",
                    "version": "v1",
                    "produced_by_run": None,
                    "source": True,
                    "tags": ["pii"],
                    "classified": True,
                },
                {
                    "namespace": "s3://features",
                    "name": "churn_features",
                    "version": "v7",
                    "produced_by_run": "9a8b7c6d-0000-4000-8000-000000000001",
                    "source": False,
                    "tags": [],
                    "classified": False,
                },
            ]
        },
        "validations": [
            {
                "type": kind,
                "passed": True,
                "recorded_at": f"2026-11-02T1{seq - 12}:00:00Z",
                "report_digest": "sha256:" + "cd" * 32,
                "seq": seq,
            }
            for kind, seq in (("performance", 12), ("bias", 13))
        ],
        "approvals": [
            {
                "stage": "production",
                "approver": "alice",
                "approver_roles": ["approver"],
                "recorded_at": "2026-11-03T10:00:00Z",
                "seq": 14,
            }
        ],
        "open_violations": [],
    }


def cleared_read() -> dict[str, Any]:
    return {
        "principal": {"name": "bob", "roles": ["analyst"], "clearances": ["pii"]},
        "dataset": {"namespace": "s3://raw", "name": "customers", "tags": ["pii"]},
        "action": "read",
        "purpose": "fraud-investigation",
        "config": {"allowed_purposes": {"pii": ["fraud-investigation", "regulatory-reporting"]}},
    }


# --- The Rego tests in policies/ --------------------------------------------------------------------


@pytest.fixture(scope="module")
def rego_tests() -> list[RegoTestResult]:
    """The Rego tests of `policies/`, run once when first needed (not at import)."""
    return run_rego_tests(POLICIES)


def test_rego(rego_tests: list[RegoTestResult], subtests: pytest.Subtests) -> None:
    """Each Rego test is a subtest of its own, reported (and failing) by name."""
    for name, passed in rego_tests:
        with subtests.test(name):
            assert passed, f"{name} failed; the captured log says why"


def test_rego_tests_are_all_found(rego_tests: list[RegoTestResult]) -> None:
    names = [t.name for t in rego_tests]
    assert len(names) >= MINIMUM_REGO_TESTS
    assert len(set(names)) == len(names)
    for prefix in (
        "ledger.promotion_test.cases.",
        "ledger.access_test.cases.",
        "ledger.promotion_test.test_",
    ):
        assert any(n.startswith(prefix) for n in names), prefix


def test_a_failing_rego_test_is_reported_as_failed(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "example.rego": HEADER + 'deny contains "no" if input.bad\n',
            "example_test.rego": "package ledger.example_test\n\nimport rego.v1\n\n"
            "test_true if true\n\ntest_false if false\n\n"
            'cases.right := {"input": {"bad": true}, "deny": {"no"}}\n\n'
            'cases.wrong := {"input": {"bad": true}, "deny": set()}\n\n'
            'cases.malformed := {"deny": set()}\n',
        },
    )
    assert sorted(run_rego_tests(tmp_path)) == [
        ("ledger.example_test.cases.malformed", False),
        ("ledger.example_test.cases.right", True),
        ("ledger.example_test.cases.wrong", False),
        ("ledger.example_test.test_false", False),
        ("ledger.example_test.test_true", True),
    ]


def test_test_files_must_use_a_test_package(tmp_path: Path) -> None:
    write(tmp_path, {"example.rego": HEADER + "deny contains 1 if false\n", "example_test.rego": HEADER})
    with pytest.raises(PolicyLoadError, match=re.escape("example_test.rego")):
        run_rego_tests(tmp_path)


# --- Loading: syntax errors and the Rego v1 gate ----------------------------------------------------


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, {"good.rego": HEADER + "deny contains 1 if false\n"})
    write(tmp_path, {"broken.rego": HEADER + "deny contains msg if {\n\tmsg := \n}\n"})
    with pytest.raises(PolicyLoadError) as caught:
        load_policy_bundle(tmp_path)
    assert caught.value.file == "broken.rego"
    assert caught.value.line in (6, 7)
    assert str(caught.value).startswith(f"broken.rego:{caught.value.line}: Rego syntax error")
    assert isinstance(caught.value, PolicyError)
    assert isinstance(caught.value, LedgerError)


V0_MODULES = {
    "partial set without contains/if": ('deny[msg] {\n\tmsg := "x"\n}\n', 5),
    "v1 ref head for a Conftest set": ('deny[msg] if {\n\tmsg := "x"\n}\n', 5),
    "boolean rule without if": ("allow {\n\ttrue\n}\n", 5),
    "default with =": ("default allow = false\n", 5),
    "rule head with =": ("p = 1\n", 5),
    "function without if": ("f(x) {\n\tx > 1\n}\n", 5),
    "value rule without if": ('p := "x" {\n\ttrue\n}\n', 5),
    "else without if": ("p := 1 if {\n\tfalse\n} else {\n\ttrue\n}\n", 7),
    "second body": ("p if {\n\tfalse\n} {\n\ttrue\n}\n", 7),
    "warn partial set": ("warn[msg] {\n\tmsg := 1\n}\n", 5),
}


@pytest.mark.parametrize(("body", "line"), V0_MODULES.values(), ids=V0_MODULES.keys())
def test_rego_v0_is_refused_with_file_and_line(tmp_path: Path, body: str, line: int) -> None:
    write(tmp_path, {"old.rego": HEADER + body})
    with pytest.raises(PolicyLoadError) as caught:
        load_policy_bundle(tmp_path)
    assert (caught.value.file, caught.value.line) == ("old.rego", line)
    assert str(caught.value).startswith(f"old.rego:{line}: ")


def test_regopy_alone_would_read_v0_as_something_else(tmp_path: Path) -> None:
    """Why the gate exists: regopy 1.5.2 accepts `deny[msg] { ... }` and makes `deny` an object."""
    from ledger.policy import rego

    interpreter = rego.new_interpreter()
    rego.add_module(interpreter, "old.rego", HEADER + 'deny[msg] {\n\tmsg := "x"\n}\n')
    assert rego.query(interpreter, "data.ledger.example.deny", package="ledger.example") == [{"x": True}]


REFUSED = {
    "missing import rego.v1": ("package ledger.example\n\ndeny contains 1 if false\n", 1, "import rego.v1"),
    "package outside ledger": ("package other\n\nimport rego.v1\n", 1, "ledger."),
    "with (crashes regopy)": (HEADER + "p := x if {\n\tx := 1 with input as {}\n}\n", 6, "`with`"),
}


@pytest.mark.parametrize(("text", "line", "reason"), REFUSED.values(), ids=REFUSED.keys())
def test_modules_outside_the_contract_are_refused(tmp_path: Path, text: str, line: int, reason: str) -> None:
    write(tmp_path, {"p.rego": text})
    with pytest.raises(PolicyLoadError, match=reason) as caught:
        load_policy_bundle(tmp_path)
    assert (caught.value.file, caught.value.line) == ("p.rego", line)


def test_valid_v1_is_accepted(tmp_path: Path) -> None:
    text = HEADER + (
        "# deny[msg] { in a comment } and p = 1 are fine\n"
        'note := "deny[msg] { in a string }"\n'
        "raw := `p = 1 {`\n"
        'table := {"a": {1, 2}, "b": [{"c": 1}]}\n'
        "default level := 0\n"
        "level := 2 if {\n\tinput.x == 2\n} else := 1 if {\n\tinput.x == 1\n}\n"
        "unified if x = 1\n"
        'deny contains {"x": 1} if false\n'
        'deny contains msg if {\n\tsome k in {1, 2}\n\tmsg := sprintf("%v", [k])\n\tinput.x == k\n}\n'
        'warn contains "three" if input.x = 3\n'
        "f(x) := y if {\n\ty := x + 1\n}\n"
        "x := 1\n"
    )
    write(tmp_path, {"v1.rego": text})
    result = PolicyEngine(load_policy_bundle(tmp_path)).evaluate("ledger.example", {"x": 2})
    assert (result.allowed, result.violations, result.warnings) == (False, ("2",), ())


def test_test_files_are_hashed_but_not_evaluated(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "example.rego": HEADER + "deny contains 1 if false\n",
            "example_test.rego": "this is not Rego {",
        },
    )
    bundle = load_policy_bundle(tmp_path)
    assert set(bundle.files) == {"example.rego", "example_test.rego"}
    assert set(bundle.policy_sources) == {"example.rego"}
    with pytest.raises(PolicyLoadError, match=re.escape("example_test.rego")):
        run_rego_tests(tmp_path)


def test_empty_or_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="does not exist"):
        load_policy_bundle(tmp_path / "absent")
    write(tmp_path, {"only_test.rego": "package ledger.x_test\n", "README.md": "x"})
    with pytest.raises(PolicyLoadError, match="no policy files"):
        load_policy_bundle(tmp_path)


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "latin1.rego").write_bytes(HEADER.encode() + b'x := "caf\xe9"\n')
    with pytest.raises(PolicyLoadError, match=r"latin1\.rego: not UTF-8"):
        load_policy_bundle(tmp_path)


# --- The bundle digest ------------------------------------------------------------------------------


def test_digest_is_the_documented_hash(tmp_path: Path) -> None:
    texts = {"b.rego": HEADER + "deny contains 1 if false\n", "a_test.rego": "package ledger.a_test\n"}
    write(tmp_path, texts)
    bundle = load_policy_bundle(tmp_path)
    files = {n: "sha256:" + hashlib.sha256(t.encode()).hexdigest() for n, t in texts.items()}
    # RFC 8785 of an object with ASCII keys and string values is sorted, compact JSON.
    manifest = json.dumps(files, sort_keys=True, separators=(",", ":")).encode()
    assert bundle.files == files
    assert bundle.digest == "sha256:" + hashlib.sha256(manifest).hexdigest() == bundle_digest(files)
    assert bundle.sources == texts


def test_digest_is_stable_and_changes_with_any_policy_file(tmp_path: Path) -> None:
    base = {"p.rego": HEADER + "deny contains 1 if false\n", "p_test.rego": "package ledger.example_test\n"}
    write(tmp_path, base)
    digest = load_policy_bundle(tmp_path).digest
    assert load_policy_bundle(tmp_path).digest == digest
    write(tmp_path, {"README.md": "not a policy"})
    assert load_policy_bundle(tmp_path).digest == digest

    seen = {digest}
    for change in (
        {"p.rego": base["p.rego"] + "\n"},  # whitespace counts: bytes are hashed
        {"p.rego": base["p.rego"].replace("\n", "\r\n")},  # no newline normalisation
        {"p_test.rego": base["p_test.rego"] + "# a test changed\n"},
        {"q.rego": "package ledger.q\n\nimport rego.v1\n"},
    ):
        write(tmp_path, {**base, **change})
        seen.add(load_policy_bundle(tmp_path).digest)
        for name in change:
            if name not in base:
                (tmp_path / name).unlink()
    assert len(seen) == 5
    write(tmp_path, base)
    assert load_policy_bundle(tmp_path).digest == digest

    (tmp_path / "p.rego").rename(tmp_path / "renamed.rego")
    assert load_policy_bundle(tmp_path).digest != digest


def test_default_bundle_loads(engine: PolicyEngine) -> None:
    bundle = engine.bundle
    assert {"promotion.rego", "access.rego", "promotion_test.rego", "access_test.rego"} <= set(bundle.files)
    assert engine.packages == {"ledger.promotion", "ledger.access"}
    assert bundle.digest == bundle_digest(bundle.files)


# --- Evaluation fails closed ------------------------------------------------------------------------


def test_undefined_package_fails_closed(engine: PolicyEngine) -> None:
    for package in ("ledger.nope", "ledger.promotion_test", "ledger", "data.ledger.promotion", ""):
        with pytest.raises(PolicyEvaluationError, match="not defined by policy bundle"):
            engine.evaluate(package, compliant_promotion())


def fail_closed_engine(tmp_path: Path) -> PolicyEngine:
    write(
        tmp_path,
        {
            "nodeny.rego": "package ledger.nodeny\n\nimport rego.v1\n\nwarn contains 1 if true\n",
            "errors.rego": "package ledger.errors\n\nimport rego.v1\n\n"
            'deny contains "too big" if 10 / input.n > 1\n'
            'deny contains "unknown" if {\n\tinput.call\n\tnosuch.fn(1)\n}\n'
            'deny contains "late" if time.parse_rfc3339_ns(input.at) > 0\n'
            "deny contains 42 if input.number\n",
        },
    )
    return PolicyEngine(load_policy_bundle(tmp_path))


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"n": 0}, "divide by zero"),
        ({"call": True}, "Function not found"),
        ({"at": "yesterday"}, "evaluation failed"),
        ({"number": True}, "must be a set of strings"),
    ],
)
def test_evaluation_errors_fail_closed(tmp_path: Path, document: dict[str, Any], reason: str) -> None:
    engine = fail_closed_engine(tmp_path)
    assert engine.evaluate("ledger.errors", {"n": 100}).allowed
    with pytest.raises(PolicyEvaluationError, match=reason):
        engine.evaluate("ledger.errors", document, errors="raise")
    assert engine.evaluate("ledger.errors", {"n": 100}).allowed  # the engine recovers


def test_package_without_deny_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(PolicyEvaluationError, match="no `deny` rule"):
        fail_closed_engine(tmp_path).evaluate("ledger.nodeny", {})


@pytest.mark.parametrize(
    "document",
    [
        {"x": math.nan},
        {"x": {1, 2}},
        {"x": b"bytes"},
        {"x": 2**64},
        {1: "non-string key"},
        ["not", "an", "object"],
    ],
    ids=["nan", "set", "bytes", "huge-int", "int-key", "list"],
)
def test_input_that_is_not_json_fails_closed(engine: PolicyEngine, document: Any) -> None:
    with pytest.raises(PolicyEvaluationError):
        engine.evaluate("ledger.access", document)


def test_malformed_timestamp_fails_closed(engine: PolicyEngine) -> None:
    document = compliant_promotion()
    document["validations"][0]["recorded_at"] = "last tuesday"
    with pytest.raises(PolicyEvaluationError, match="Unable to parse time"):
        engine.evaluate("ledger.promotion", document, errors="raise")
    del document["validations"][0]["recorded_at"]
    assert engine.evaluate("ledger.promotion", document).violations == (
        "no qualifying performance validation of model churn version 3: seq 12 is older than 90 days"
        " and was not recorded after the training run completed",
    )


def test_module_without_package_is_refused() -> None:
    # regopy refuses such a file first; the scanner does too, for modules regopy would accept.
    with pytest.raises(PolicyLoadError, match=re.escape("no `package ledger.<name>` declaration")):
        scan_module("p.rego", "import rego.v1\n")


# --- Decisions of the default policies --------------------------------------------------------------


def test_compliant_promotion_is_allowed(engine: PolicyEngine) -> None:
    document = compliant_promotion()
    result = engine.evaluate("ledger.promotion", document)
    assert result == PolicyResult(
        allowed=True,
        violations=(),
        warnings=(),
        policy_digest=engine.bundle.digest,
        input_digest="sha256:" + hashlib.sha256(rfc8785.dumps(document)).hexdigest(),
    )


def test_input_digest_ignores_key_order(engine: PolicyEngine) -> None:
    document = compliant_promotion()
    reordered = json.loads(json.dumps(document, sort_keys=True))
    reordered = dict(reversed(list(reordered.items())))
    assert (
        engine.evaluate("ledger.promotion", reordered).input_digest
        == engine.evaluate("ledger.promotion", document).input_digest
    )


def test_segregation_of_duties_and_every_violation_listed(engine: PolicyEngine) -> None:
    document = compliant_promotion()
    document["approvals"][0]["approver"] = "etl-nightly"
    document["training_run"]["state"] = "RUNNING"
    document["upstream"]["datasets"][1]["version"] = None
    result = engine.evaluate("ledger.promotion", document)
    assert not result.allowed
    assert result.violations == (
        "no qualifying approval of model churn version 3 for stage production (segregation of duties:"
        " the approver must hold the approver role and be neither the registrant nor a trainer):"
        " etl-nightly trained the model",
        "training run 0b7a2c1e-7f7e-4a55-9d8e-1c2b3a4d5e6f is RUNNING, not COMPLETE",
        "upstream dataset s3://features:churn_features has no version",
    )


def test_dataset_name_with_quotes_survives_regopy_output(engine: PolicyEngine) -> None:
    """Regression: with regopy's `Input`, such a name made the output invalid JSON."""
    document = compliant_promotion()
    dataset = document["upstream"]["datasets"][1]
    dataset["name"], dataset["version"] = 'warehouse."Sales"\\q3\n', None
    result = engine.evaluate("ledger.promotion", document)
    assert result.violations == ('upstream dataset s3://features:warehouse."Sales"\\q3\n has no version',)


def test_access_decisions(engine: PolicyEngine) -> None:
    assert engine.evaluate("ledger.access", cleared_read()).allowed
    document = cleared_read()
    document["principal"]["clearances"] = []
    document["purpose"] = "marketing"
    assert engine.evaluate("ledger.access", document).violations == (
        "principal bob lacks the pii clearance required to read dataset s3://raw:customers",
        "purpose marketing is not allowed for pii data (dataset s3://raw:customers);"
        " allowed purposes: fraud-investigation, regulatory-reporting",
    )


# --- Concurrency and speed --------------------------------------------------------------------------


def test_concurrent_evaluations_match_sequential_ones(engine: PolicyEngine) -> None:
    documents = []
    for i in range(24):
        document = compliant_promotion()
        document["model"]["version"] = str(i)
        if i % 3 == 0:
            document["approvals"] = []
        documents.append(document)
    expected = [engine.evaluate("ledger.promotion", d) for d in documents]
    with ThreadPoolExecutor(max_workers=6) as pool:
        for _ in range(3):
            assert list(pool.map(lambda d: engine.evaluate("ledger.promotion", d), documents)) == expected
    assert threading.active_count() >= 1


def test_a_promotion_decision_takes_a_few_milliseconds(engine: PolicyEngine) -> None:
    document = compliant_promotion()
    engine.evaluate("ledger.promotion", document)  # this thread's interpreter is built once
    cpu_ms = []
    for _ in range(30):
        start = time.thread_time()
        engine.evaluate("ledger.promotion", copy.deepcopy(document))
        cpu_ms.append((time.thread_time() - start) * 1000)
    # About 4 ms here; re-compiling per call (Interpreter.query) would cost 30 ms or more.
    assert statistics.median(cpu_ms) < 15


def test_bundle_is_a_frozen_value(engine: PolicyEngine) -> None:
    with pytest.raises(AttributeError):
        engine.bundle.digest = "sha256:0"  # type: ignore[misc]
    assert isinstance(engine.bundle, PolicyBundle)
