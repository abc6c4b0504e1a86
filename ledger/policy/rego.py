"""The one place that talks to regopy (rego-cpp): interpreters, modules, compiled decisions, queries.

Pinned behaviour of regopy 1.5.2 that this module works around, each seen in practice:
- Errors are printed to stdout unless the log level is NONE; we set it on every interpreter.
- Built-in errors (`1/0`, a malformed timestamp, a type error) make the expression undefined unless
  `strict_built_in_errors` is set. Undefined inside a `deny` body means "no violation", so a lax
  interpreter fails open; ours are strict, and a built-in error fails the whole query.
- Some evaluation errors ("Function not found", "Recursion detected") come back with `ok() == True`
  and an error term instead of JSON, which makes `Output.__init__` raise `JSONDecodeError` and loses
  the message. We therefore query through the C API wrappers and read the text ourselves; output
  that is not valid JSON (also seen, see `policies/promotion.rego`) is an error too.
- A reference to an unknown rule or function, or an unsafe variable, is not a load-time error (OPA
  would refuse the module): it surfaces only when evaluation reaches it, or the expression is just
  undefined. The Rego tests in `policies/` are the guard.
- `Interpreter.query` re-runs the whole compiler on every call (about 40 ms of CPU for the default
  promotion policy); a bundle compiled once with `build` evaluates the same query in 3-5 ms.
  Decisions use bundles; the Rego test runner uses `query` for `test_*` rules and `cases`.
- `with` (e.g. `with input as {...}`) crashes the process as soon as a loaded module calls a
  built-in, so it is refused at load time (`ledger.policy.syntax`).
- `set_input(Input(value))` stores strings unescaped: a dataset named `db."Schema"` then comes back
  in the output as invalid JSON. `set_input_term` with JSON text (about 1 ms for a typical promotion
  input) keeps strings escaped, so it is the one we use.
"""

from __future__ import annotations

import json
import re
from typing import Any

import regopy  # type: ignore[import-untyped]
from regopy import rego_shared

from ledger.policy.errors import PolicyEvaluationError, PolicyLoadError

__all__ = [
    "add_module",
    "compile_decision",
    "new_interpreter",
    "query",
    "query_decision",
    "set_input",
]

# rego-cpp error terms are S-expressions with length-prefixed strings: `(errormsg 27:Invalid ...)`,
# and a location `(error 6:p.rego|60|2 ...)` = (file name, byte offset, byte length).
_ERRORMSG = re.compile(rb"\(errormsg (\d+):")
_LOCATION = re.compile(rb"\(error (\d+):")


def new_interpreter() -> Any:
    """A fresh interpreter that prints nothing and fails on built-in errors."""
    interpreter = regopy.Interpreter()
    interpreter.log_level = regopy.LogLevel.NONE
    interpreter.strict_built_in_errors = True
    return interpreter


def _messages(term: bytes) -> list[str]:
    messages = []
    for match in _ERRORMSG.finditer(term):
        start = match.end()
        messages.append(term[start : start + int(match.group(1))].decode("utf-8", "replace"))
    return messages


def _detail(e: Exception) -> str:
    return "; ".join(_messages(str(e).encode("utf-8"))) or str(e)


def _location(term: bytes, file: str) -> int | None:
    """Byte offset of the first error located in `file`, if rego-cpp gave one."""
    for match in _LOCATION.finditer(term):
        start = match.end()
        name = term[start : start + int(match.group(1))]
        rest = re.match(rb"\|(\d+)\|", term[start + len(name) :])
        if name.decode("utf-8", "replace") == file and rest is not None:
            return int(rest.group(1))
    return None


def add_module(interpreter: Any, file: str, source: str) -> None:
    """Parse `source` into `interpreter`; raise `PolicyLoadError` naming file, line and rego's message."""
    try:
        interpreter.add_module(file, source)
    except regopy.RegoError as e:
        offset = _location(str(e).encode("utf-8"), file)
        line = None if offset is None else source.encode("utf-8")[:offset].count(b"\n") + 1
        raise PolicyLoadError(f"Rego syntax error: {_detail(e)}", file=file, line=line) from e


def compile_decision(interpreter: Any, package: str) -> Any:
    """Compile the decision query of `package` (its `deny` set and its `warn` set) into a bundle.

    `warn` is optional: iterating an undefined rule in a comprehension gives the empty set, while an
    undefined `deny` makes the whole query undefined.
    """
    text = f"deny := data.{package}.deny; warn := {{m | some m in data.{package}.warn}}"
    try:
        return interpreter.build(text, [])
    except regopy.RegoError as e:
        raise PolicyLoadError(f"cannot compile {package}: {_detail(e)}", file=package) from e


def set_input(interpreter: Any, json_text: str, *, package: str) -> None:
    """Make the JSON document `json_text` the interpreter's `input`."""
    try:
        interpreter.set_input_term(json_text)
    except regopy.RegoError as e:
        raise PolicyEvaluationError(f"input rejected: {_detail(e)}", package=package) from e


def _error_terms(impl: Any) -> list[str]:
    root = rego_shared.rego_output_node(impl)
    children = range(int(rego_shared.rego_node_size(root)))
    return [str(rego_shared.rego_node_json(rego_shared.rego_node_get(root, i))) for i in children]


def _result(impl: Any, *, package: str) -> dict[str, Any] | None:
    """The JSON result held by output `impl` (which this frees); `None` when undefined."""
    try:
        ok = bool(rego_shared.rego_output_ok(impl))
        output = str(rego_shared.rego_output_string(impl))
        if ok and output == "undefined":
            return None
        if ok and not output.startswith("("):
            try:
                result = json.loads(output)
            except ValueError as e:
                # Seen with regopy 1.5.2 when a string holds unescaped quotes (see policies/*.rego).
                raise PolicyEvaluationError(
                    f"regopy returned invalid JSON ({e}): {output[:500]}", package=package
                ) from e
            if isinstance(result, dict):
                return result
        terms = [output] if ok else _error_terms(impl)
        detail = "; ".join(m for term in terms for m in _messages(term.encode("utf-8"))) or output
        raise PolicyEvaluationError(f"evaluation failed: {detail}", package=package)
    finally:
        rego_shared.rego_free_output(impl)


def query_decision(interpreter: Any, bundle: Any, *, package: str) -> dict[str, Any] | None:
    """Run a bundle from `compile_decision`: `{"deny": [...], "warn": [...]}`, or `None` if undefined."""
    try:
        impl = rego_shared.rego_bundle_query(interpreter._impl, bundle._impl)
    except regopy.RegoError as e:
        raise PolicyEvaluationError(f"evaluation failed: {_detail(e)}", package=package) from e
    result = _result(impl, package=package)
    if result is None:
        return None
    bindings = result.get("bindings")
    if not isinstance(bindings, dict):
        raise PolicyEvaluationError(f"unexpected regopy result {result!r:.500}", package=package)
    return bindings


def query(interpreter: Any, text: str, *, package: str) -> list[Any]:
    """Compile and evaluate query `text`: its expression values, `[]` when undefined."""
    try:
        impl = rego_shared.rego_query(interpreter._impl, text)
    except regopy.RegoError as e:
        raise PolicyEvaluationError(f"evaluation failed: {_detail(e)}", package=package) from e
    result = _result(impl, package=package)
    if result is None:
        return []
    expressions = result.get("expressions")
    if not isinstance(expressions, list):
        raise PolicyEvaluationError(f"unexpected regopy result {result!r:.500}", package=package)
    return expressions
