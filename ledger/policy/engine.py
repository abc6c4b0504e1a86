"""Policy bundles (the `*.rego` files in force, hashed) and their in-process evaluation with regopy.

Invariants:
- An allowing decision exists only if evaluation succeeded and the package produced an empty `deny`
  set. The caller's own mistakes (unknown package, a package without `deny`, input that is not a
  JSON object) raise `PolicyEvaluationError`. Everything that can go wrong with a valid request (an
  evaluation or built-in error, `deny` not a set of strings, a list in the input longer than
  `PolicyLimits.max_items`, an evaluation past `PolicyLimits.budget_seconds`) is a denial whose one
  violation says why: the engine never allows by accident, and a promotion is never left undecided.
- `allowed` is exactly "`deny` is empty"; `warn` never blocks.
- Evaluations run in worker processes (`ledger.policy.worker`), so one past its budget is killed,
  not left running: the caller waits at most the budget (plus the round trip), however long the
  policy would have run.
- Every decision cites the bundle digest and the digest of the exact input bytes evaluated
  (RFC 8785 canonical JSON), so a decision can be re-derived from the log.
- Rego v1 only (see `ledger.policy.syntax`); every module's package is under `ledger.`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

import rfc8785

from ledger.policy import rego
from ledger.policy.errors import PolicyEvaluationError, PolicyLoadError
from ledger.policy.syntax import RegoModuleInfo, scan_module
from ledger.policy.worker import frame

__all__ = [
    "DEFAULT_BUDGET_SECONDS",
    "DEFAULT_MAX_ITEMS",
    "PolicyBundle",
    "PolicyEngine",
    "PolicyLimits",
    "PolicyResult",
    "RegoTestResult",
    "bundle_digest",
    "load_policy_bundle",
    "run_rego_tests",
]

TEST_FILE_SUFFIX = "_test.rego"
DEFAULT_MAX_ITEMS = 10_000
DEFAULT_BUDGET_SECONDS = 2.0
# How long a worker may take to start and compile the bundle (about 0.3 s; more on a loaded host).
WORKER_START_SECONDS = 60.0

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


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyLimits:
    """Bounds on one evaluation; past either, the decision is a denial that names the bound.

    `max_items`: the most items any list in the input may hold, nested lists included.
    `budget_seconds`: wall-clock time from sending the input to a worker to its answer.
    `processes`: worker processes kept for evaluations (started on first use); callers beyond that
    many wait for a free one, which each busy one becomes within its budget.
    """

    max_items: int = DEFAULT_MAX_ITEMS
    budget_seconds: float = DEFAULT_BUDGET_SECONDS
    processes: int = 2

    def __post_init__(self) -> None:
        if self.max_items < 1 or not self.budget_seconds > 0 or self.processes < 1:
            raise ValueError(f"policy limits must be positive: {self!r}")


def oversized_list(document: Any, max_items: int) -> tuple[str, int] | None:
    """The path (e.g. `upstream.datasets`, `approvals[3].approver_roles`) and length of the first list
    in `document` longer than `max_items`, if any. One iterative pass over the containers; scalars
    are not visited."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(document, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, Mapping):
            children: Any = value.items()
        elif isinstance(value, list | tuple):
            if len(value) > max_items:
                return _path_text(path), len(value)
            children = enumerate(value)
        else:
            continue
        stack.extend((child, (*path, key)) for key, child in children if isinstance(child, Mapping | list | tuple))
    return None


def _path_text(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "input"


class _BudgetExceededError(Exception):
    pass


class _Worker:
    """One `ledger.policy.worker` process with its bundle compiled."""

    def __init__(self, setup: bytes) -> None:
        env = dict(os.environ)
        # The worker imports this package from wherever this process found it.
        root = str(Path(__file__).resolve().parent.parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-m", "ledger.policy.worker"],  # -P: the installed package, not the cwd
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        try:
            reply = self._exchange([setup], time.monotonic() + WORKER_START_SECONDS)
        except BaseException:
            self.kill()
            raise
        if "error" in reply:
            self.kill()
            raise PolicyEvaluationError(f"the evaluation process refused the bundle: {reply['error']}", package="*")

    def _exchange(self, frames: list[bytes], deadline: float) -> dict[str, Any]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        try:
            # The worker reads whole frames as soon as it is idle, so this does not block for long.
            stdin.write(b"".join(frame(f) for f in frames))
            stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise EOFError(f"the evaluation process is gone ({self._exit()})") from e
        size = int.from_bytes(self._read(stdout, 4, deadline), "big")
        return json.loads(self._read(stdout, size, deadline))  # type: ignore[no-any-return]

    def _read(self, stream: IO[bytes], size: int, deadline: float) -> bytes:
        fd = stream.fileno()
        data = bytearray()
        while len(data) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise _BudgetExceededError
            chunk = os.read(fd, min(size - len(data), 1 << 20))
            if not chunk:
                raise EOFError(f"the evaluation process ended ({self._exit()})")
            data += chunk
        return bytes(data)

    def _exit(self) -> str:
        try:
            code = self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return "still running"
        return f"killed by signal {-code}" if code < 0 else f"exit status {code}"

    def evaluate(self, package: str, canonical: bytes, deadline: float) -> dict[str, Any]:
        """The worker's answer; raises `_BudgetExceededError` at `deadline`, `EOFError` if it died."""
        return self._exchange([package.encode("utf-8"), canonical], deadline)

    def kill(self) -> None:
        """Stop the process now (SIGKILL: rego-cpp cannot be interrupted otherwise) and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


class _Pool:
    """Up to `size` workers, started on demand; a worker that overran or failed is killed, not reused."""

    def __init__(self, setup: bytes, size: int) -> None:
        self._setup = setup
        self._size = size
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._live = 0
        self._pid = os.getpid()
        self._closed = False

    def acquire(self) -> _Worker:
        with self._cond:
            if self._pid != os.getpid():
                # A forked copy of this process (e.g. a pre-forking server): the workers are the
                # parent's; leave them to it and start our own.
                self._idle, self._live, self._pid = [], 0, os.getpid()
            while not self._idle and self._live >= self._size:
                self._cond.wait()
            if self._idle:
                return self._idle.pop()
            self._live += 1
        try:
            return _Worker(self._setup)
        except BaseException:
            with self._cond:
                self._live -= 1
                self._cond.notify()
            raise

    def release(self, worker: _Worker, *, healthy: bool) -> None:
        if healthy and not self._closed:
            with self._cond:
                self._idle.append(worker)
                self._cond.notify()
            return
        worker.kill()
        with self._cond:
            self._live -= 1
            self._cond.notify()

    def close(self) -> None:
        """Stop the idle workers now and the busy ones when they are released."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._live -= len(idle)
        for worker in idle:
            worker.kill()


class PolicyEngine:
    """Evaluates the bundle's packages in worker processes within `limits`; safe to share between threads.

    Workers start on first use (about 0.3 s each: a Python process that compiles the bundle) and are
    reused: a decision then costs 3-5 ms, the input's RFC 8785 encoding and one round trip included.
    They stop when the engine is garbage collected, at exit, or when this process ends.
    """

    def __init__(self, bundle: PolicyBundle, *, limits: PolicyLimits | None = None) -> None:
        """Check and compile the bundle's policies; raises `PolicyLoadError` like `load_policy_bundle`."""
        self._bundle = bundle
        self._limits = limits or PolicyLimits()
        self._sources = bundle.policy_sources
        interpreter, infos = _check(self._sources)
        rules: dict[str, set[str]] = {}
        for info in infos.values():
            rules.setdefault(info.package, set()).update(info.rules)
        self._packages = frozenset(rules)
        self._decidable = frozenset(p for p, names in rules.items() if "deny" in names)
        for package in sorted(self._decidable):  # compile errors surface here, not in a worker
            rego.compile_decision(interpreter, package)
        setup = {"sources": self._sources, "packages": sorted(self._decidable), "budget": self._limits.budget_seconds}
        self._pool = _Pool(json.dumps(setup).encode("utf-8"), self._limits.processes)
        weakref.finalize(self, self._pool.close)

    @property
    def bundle(self) -> PolicyBundle:
        """The bundle this engine evaluates."""
        return self._bundle

    @property
    def limits(self) -> PolicyLimits:
        """The bounds every evaluation runs within."""
        return self._limits

    @property
    def packages(self) -> frozenset[str]:
        """The packages the bundle's policy files declare, e.g. `ledger.promotion`."""
        return self._packages

    def close(self) -> None:
        """Stop the worker processes (a later evaluation starts new ones)."""
        self._pool.close()

    def evaluate(
        self, package: str, input: Mapping[str, Any], *, errors: Literal["deny", "raise"] = "deny"
    ) -> PolicyResult:
        """Evaluate the `deny` and `warn` sets of `package` (e.g. `ledger.promotion`) for `input`.

        Past a bound of `limits`, the result is a denial naming the bound. A failed evaluation is a
        denial with the reason (`errors="deny"`), or raises `PolicyEvaluationError` (`"raise"`, for
        tests of the policy itself). A request that cannot be evaluated at all (unknown package, no
        `deny` rule, input not a JSON object) raises `PolicyEvaluationError`.
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
        oversized = oversized_list(input, self._limits.max_items)  # a denial cites the input digest too
        try:
            canonical = rfc8785.dumps(dict(input))
        except (rfc8785.CanonicalizationError, TypeError) as e:
            raise PolicyEvaluationError(f"input is not canonical JSON: {e}", package=package) from e
        input_digest = _sha256(canonical)
        if oversized is not None:
            path, size = oversized
            limit = self._limits.max_items
            return self._denial(f"policy input too large: {path} has {size} items, at most {limit}", input_digest)
        try:
            document = self._run(package, canonical)
            violations = _messages(document, "deny", package=package)
            warnings = _messages(document, "warn", package=package)
        except _BudgetExceededError:
            budget = self._limits.budget_seconds
            return self._denial(f"policy evaluation exceeded its {budget:g} s budget", input_digest)
        except PolicyEvaluationError as e:
            if errors == "raise":
                raise
            return self._denial(
                f"policy evaluation failed: {e.reason.removeprefix('evaluation failed: ')}", input_digest
            )
        return PolicyResult(
            allowed=not violations,
            violations=violations,
            warnings=warnings,
            policy_digest=self._bundle.digest,
            input_digest=input_digest,
        )

    def _denial(self, reason: str, input_digest: str) -> PolicyResult:
        logger.warning("policy denial without a decision of the policy: %s", reason)
        return PolicyResult(
            allowed=False,
            violations=(reason,),
            warnings=(),
            policy_digest=self._bundle.digest,
            input_digest=input_digest,
        )

    def _run(self, package: str, canonical: bytes) -> dict[str, Any]:
        """The decision document of `package` for the input `canonical`, computed by a worker."""
        try:
            worker = self._pool.acquire()
        except (OSError, EOFError, _BudgetExceededError, ValueError) as e:
            raise PolicyEvaluationError(f"cannot start an evaluation process: {e!r}", package=package) from e
        healthy = False
        try:
            # The budget starts once a worker is ready: waiting for one is not evaluation time.
            reply = worker.evaluate(package, canonical, time.monotonic() + self._limits.budget_seconds)
            healthy = True
        except EOFError as e:  # crashed (rego-cpp can abort the process)
            raise PolicyEvaluationError(str(e), package=package) from e
        finally:
            self._pool.release(worker, healthy=healthy)  # an overrun worker is killed here
        if "error" in reply:
            raise PolicyEvaluationError(str(reply["error"]), package=package)
        document = reply.get("document")
        if document is None:
            raise PolicyEvaluationError("`deny` is undefined", package=package)
        if not isinstance(document, dict):
            raise PolicyEvaluationError(f"unexpected worker answer {reply!r:.200}", package=package)
        return document


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
