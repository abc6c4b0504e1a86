"""Policy bundles (the `*.rego` files in force, hashed) and their in-process evaluation with regopy.

Invariants:
- A decision exists only if evaluation succeeded and the package produced a `deny` set of strings.
  Anything else (unknown package, no `deny` rule, `deny` not a set, an evaluation or built-in error,
  input that is not JSON) raises `PolicyEvaluationError`: the engine never allows by accident.
- `allowed` is exactly "`deny` is empty"; `warn` never blocks.
- Every decision cites the bundle digest and the digest of the exact input bytes evaluated
  (RFC 8785 canonical JSON), so a decision can be re-derived from the log.
- Rego v1 only (see `ledger.policy.syntax`); every module's package is under `ledger.`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import rfc8785

from ledger.policy import rego
from ledger.policy.errors import PolicyEvaluationError, PolicyLoadError
from ledger.policy.syntax import RegoModuleInfo, scan_module

__all__ = [
    "PolicyBundle",
    "PolicyEngine",
    "PolicyResult",
    "RegoTestResult",
    "bundle_digest",
    "load_policy_bundle",
    "run_rego_tests",
]

TEST_FILE_SUFFIX = "_test.rego"

logger = logging.getLogger(__name__)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def bundle_digest(files: Mapping[str, str]) -> str:
    """The bundle digest: `"sha256:" + hex(SHA-256(RFC 8785 canonical JSON of files))`.

    `files` maps each file name (no directory) to `"sha256:<hex of SHA-256 of its bytes>"`.
    RFC 8785 sorts the members by name, so this is the hash of the sorted list of
    (file name, file digest) pairs, e.g. for one file the hashed bytes are
    `{"promotion.rego":"sha256:9f86..."}`. Anyone holding the `files` object (as published by
    `GET /api/v1/policies`) or the files themselves can recompute it.
    """
    return _sha256(rfc8785.dumps(dict(files)))


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyBundle:
    """The policy files in force.

    `files` maps every `*.rego` file name, `*_test.rego` included, to the SHA-256 of its bytes;
    `sources` maps the same names to their UTF-8 text; `digest` is `bundle_digest(files)`.
    Treat the dicts as read-only.
    """

    digest: str
    files: dict[str, str]
    sources: dict[str, str]

    @property
    def policy_sources(self) -> dict[str, str]:
        """The modules that are evaluated: every file except `*_test.rego`."""
        return {n: s for n, s in sorted(self.sources.items()) if not n.endswith(TEST_FILE_SUFFIX)}


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyResult:
    """One decision: `allowed` iff `violations` (the `deny` set, sorted) is empty."""

    allowed: bool
    violations: tuple[str, ...]
    warnings: tuple[str, ...]
    policy_digest: str
    input_digest: str


class RegoTestResult(NamedTuple):
    """One Rego test: `ledger.promotion_test.test_<name>` or `ledger.promotion_test.cases.<name>`."""

    name: str
    passed: bool


def _read_sources(directory: Path) -> tuple[dict[str, str], dict[str, str]]:
    if not directory.is_dir():
        raise PolicyLoadError("policy directory does not exist", file=str(directory))
    files: dict[str, str] = {}
    sources: dict[str, str] = {}
    for path in sorted(directory.glob("*.rego")):
        if not path.is_file():
            continue
        data = path.read_bytes()  # bytes, not read_text: no newline translation before hashing
        try:
            sources[path.name] = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise PolicyLoadError(f"not UTF-8 ({e.reason} at byte {e.start})", file=path.name) from e
        files[path.name] = _sha256(data)
    return files, sources


def _check(sources: Mapping[str, str]) -> tuple[Any, dict[str, RegoModuleInfo]]:
    """Parse every module into a fresh interpreter (regopy's syntax errors first: they are precise),
    then check that it is Rego v1 under a `ledger.` package."""
    interpreter = rego.new_interpreter()
    infos: dict[str, RegoModuleInfo] = {}
    for name, source in sorted(sources.items()):
        rego.add_module(interpreter, name, source)
        infos[name] = scan_module(name, source)
    return interpreter, infos


def load_policy_bundle(directory: Path) -> PolicyBundle:
    """Read every `*.rego` file directly in `directory` and check the policies.

    All files count towards the digest; the non-test ones must parse, be Rego v1 and declare a
    `ledger.` package. Raises `PolicyLoadError` naming the file (and line) otherwise, or when there
    is no policy file at all.
    """
    files, sources = _read_sources(directory)
    bundle = PolicyBundle(digest=bundle_digest(files), files=files, sources=sources)
    if not bundle.policy_sources:
        raise PolicyLoadError("no policy files (*.rego other than *_test.rego)", file=str(directory))
    _check(bundle.policy_sources)
    return bundle


def _messages(document: Mapping[str, Any], rule: str, *, package: str) -> tuple[str, ...]:
    value = document.get(rule, [])
    # Rego sets serialise as JSON arrays. An object here is a v1 ref-head rule (`deny[msg] if`),
    # not a set of messages: refuse it rather than guess.
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise PolicyEvaluationError(
            f"`{rule}` must be a set of strings (`{rule} contains msg if {{ ... }}`)", package=package
        )
    return tuple(sorted(value))


class _Runtime(NamedTuple):
    interpreter: Any
    decisions: dict[str, Any]  # package -> compiled decision bundle


class PolicyEngine:
    """Evaluates the bundle's packages; safe to share between threads.

    regopy calls run without the GIL and an interpreter holds mutable state (the input), so each
    thread gets its own interpreter and compiled decisions, built on first use (about 60 ms of CPU
    for the default policies) and reused: a decision then costs 3-5 ms (see `ledger.policy.rego`).
    """

    def __init__(self, bundle: PolicyBundle) -> None:
        """Check and compile the bundle's policies; raises `PolicyLoadError` like `load_policy_bundle`."""
        self._bundle = bundle
        self._sources = bundle.policy_sources
        interpreter, infos = _check(self._sources)
        rules: dict[str, set[str]] = {}
        for info in infos.values():
            rules.setdefault(info.package, set()).update(info.rules)
        self._packages = frozenset(rules)
        self._decidable = frozenset(p for p, names in rules.items() if "deny" in names)
        self._local = threading.local()
        self._local.runtime = self._compile(interpreter)

    def _compile(self, interpreter: Any) -> _Runtime:
        decisions = {p: rego.compile_decision(interpreter, p) for p in sorted(self._decidable)}
        return _Runtime(interpreter, decisions)

    def _runtime(self) -> _Runtime:
        runtime: _Runtime | None = getattr(self._local, "runtime", None)
        if runtime is None:
            interpreter = rego.new_interpreter()
            for name, source in self._sources.items():
                rego.add_module(interpreter, name, source)
            runtime = self._local.runtime = self._compile(interpreter)
        return runtime

    @property
    def bundle(self) -> PolicyBundle:
        """The bundle this engine evaluates."""
        return self._bundle

    @property
    def packages(self) -> frozenset[str]:
        """The packages the bundle's policy files declare, e.g. `ledger.promotion`."""
        return self._packages

    def evaluate(self, package: str, input: Mapping[str, Any]) -> PolicyResult:
        """Evaluate the `deny` and `warn` sets of `package` (e.g. `ledger.promotion`) for `input`.

        Raises `PolicyEvaluationError` rather than return a decision it cannot stand behind.
        """
        if package not in self._packages:
            known = ", ".join(sorted(self._packages))
            raise PolicyEvaluationError(
                f"not defined by policy bundle {self._bundle.digest} (defined: {known})", package=package
            )
        if package not in self._decidable:
            raise PolicyEvaluationError("defines no `deny` rule", package=package)
        if not isinstance(input, Mapping):
            raise PolicyEvaluationError("input must be a JSON object", package=package)
        try:
            canonical = rfc8785.dumps(dict(input))
        except (rfc8785.CanonicalizationError, TypeError) as e:
            raise PolicyEvaluationError(f"input is not canonical JSON: {e}", package=package) from e
        runtime = self._runtime()
        try:
            # Evaluate exactly the bytes that were hashed (RFC 8785 output is JSON).
            rego.set_input(runtime.interpreter, canonical.decode("utf-8"), package=package)
            document = rego.query_decision(runtime.interpreter, runtime.decisions[package], package=package)
        except PolicyEvaluationError:
            self._local.runtime = None  # do not reuse an interpreter in an unknown state
            raise
        if document is None:
            raise PolicyEvaluationError("`deny` is undefined", package=package)
        violations = _messages(document, "deny", package=package)
        return PolicyResult(
            allowed=not violations,
            violations=violations,
            warnings=_messages(document, "warn", package=package),
            policy_digest=self._bundle.digest,
            input_digest=_sha256(canonical),
        )


def _case_failure(case: Any, result: PolicyResult | None) -> str | None:
    """Why an input case fails (`None` if it passes); `result` is `None` for a malformed case."""
    if result is None:
        return 'a case must be {"input": {...}, "deny": [msg, ...], optionally "warn": [...]}'
    if list(result.violations) != sorted(set(case["deny"])):
        return f"deny: expected {sorted(set(case['deny']))!r}, got {list(result.violations)!r}"
    if "warn" in case and list(result.warnings) != sorted(set(case["warn"])):
        return f"warn: expected {sorted(set(case['warn']))!r}, got {list(result.warnings)!r}"
    return None


def _well_formed_case(case: Any) -> bool:
    def strings(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(m, str) for m in value)

    return (
        isinstance(case, dict)
        and isinstance(case.get("input"), dict)
        and strings(case.get("deny"))
        and ("warn" not in case or strings(case["warn"]))
    )


def _run_cases(engine: PolicyEngine, interpreter: Any, package: str) -> list[RegoTestResult]:
    target = package.removesuffix("_test")
    try:
        values = rego.query(interpreter, f"data.{package}.cases", package=package)
    except PolicyEvaluationError as e:
        logger.warning("Rego test cases %s.cases cannot be evaluated: %s", package, e)
        return [RegoTestResult(f"{package}.cases", False)]
    cases = values[0] if len(values) == 1 else None
    if not isinstance(cases, dict):
        logger.warning("%s.cases must be an object of named cases", package)
        return [RegoTestResult(f"{package}.cases", False)]
    results = []
    for name, case in sorted(cases.items()):
        test = f"{package}.cases.{name}"
        try:
            result = engine.evaluate(target, case["input"]) if _well_formed_case(case) else None
            failure = _case_failure(case, result)
        except PolicyEvaluationError as e:
            failure = str(e)
        if failure is not None:
            logger.warning("Rego test %s failed: %s", test, failure)
        results.append(RegoTestResult(test, failure is None))
    return results


def run_rego_tests(directory: Path) -> list[RegoTestResult]:
    """Run the Rego unit tests of the `*_test.rego` files in `directory`; one result per test.

    A test file declares `package <policy package>_test` and holds two kinds of tests:
    - `test_*` rules (OPA convention), evaluated with no input; a test passes iff it is `true`.
    - Input cases: `cases.<name> := {"input": {...}, "deny": {msg, ...}, "warn": {msg, ...}}`. Each
      input is evaluated against `<policy package>` by `PolicyEngine.evaluate`, exactly as the
      service evaluates it; the case passes iff the `deny` set (and `warn`, when given) is exactly
      the one expected.
    Cases replace OPA's `with input as {...}`, which crashes regopy 1.5.2 (`ledger.policy.syntax`).
    Why a test failed is logged at WARNING. Raises `PolicyLoadError` if any file fails to load.
    """
    files, sources = _read_sources(directory)
    interpreter, infos = _check(sources)
    policies = {n: f for n, f in files.items() if not n.endswith(TEST_FILE_SUFFIX)}
    policy_sources = {n: sources[n] for n in policies}
    engine = PolicyEngine(PolicyBundle(digest=bundle_digest(policies), files=policies, sources=policy_sources))
    results: list[RegoTestResult] = []
    for name, info in sorted(infos.items()):
        if not name.endswith(TEST_FILE_SUFFIX):
            continue
        if not info.package.endswith("_test"):
            raise PolicyLoadError(f"test package `{info.package}` must end in `_test`", file=name)
        for rule in info.rules:
            if not rule.startswith("test_"):
                continue
            test = f"{info.package}.{rule}"
            try:
                values = rego.query(interpreter, f"data.{test}", package=info.package)
            except PolicyEvaluationError as e:
                logger.warning("Rego test %s failed with an error: %s", test, e)
                interpreter, _ = _check(sources)
                values = []
            results.append(RegoTestResult(test, values == [True]))
        if "cases" in info.rules:
            results.extend(_run_cases(engine, interpreter, info.package))
    return results
