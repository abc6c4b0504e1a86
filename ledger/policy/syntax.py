"""A lexical check that a Rego module is written in Rego v1, and what it declares.

Why this exists: regopy 1.5.2 parses Rego v0 without complaint and gives it a different meaning.
`deny[msg] { msg := "x" }` is read as the v1 single-value ref-head rule `deny[msg] := true`, so
`deny` becomes the object `{"x": true}` instead of the set `{"x"}`; `allow { ... }` is accepted as
well. A v0 policy could therefore load and silently never deny. regopy has no option to refuse v0 and
exposes no parse tree before evaluation, so we tokenise the module ourselves (strings, raw strings and
comments are skipped, brackets are counted) and apply these rules; each violation names the line:

1. `import rego.v1` is required. It makes the file mean the same under OPA 0.x, OPA 1.x, Conftest
   and regopy, and states the intent.
2. At bracket depth 0 a `{` opens either a rule body, which Rego v1 requires to follow `if`, or a
   literal value after an operator or keyword (`:=`, `=`, `==`, `!=`, `|`, `&`, `,`, `contains`,
   `in`, `as`). A `{` after anything else (a name, `]`, `)`, `}`, a scalar, `else`) is a v0 body.
3. A rule head (the depth-0 tokens of a line that starts at depth 0, up to `if` or `{`) must not
   assign with a bare `=` (`default allow = true`, `p = 1`): v1 style is `:=` (`opa fmt --v1`).
   `=` after `if` is unification in a one-line body and is allowed.
4. `deny`, `warn` and `violation` (the Conftest rule names) must not be written `deny[...]`: that is
   a v0 partial set, which v1 reads as an object. v1 is `deny contains msg if { ... }`.
5. Exactly one `package ledger.<name>` (dotted identifiers), before any rule.
6. No `with` keyword. In regopy 1.5.2 any query that uses `with` (even `x := 1 with input as {}`)
   crashes the process (SIGSEGV, or abort "shape `rego-localref` has no field `rego-refhead`") as
   soon as a loaded module calls a built-in function. A crash cannot fail closed, so `with` is
   refused everywhere; Rego tests use input cases instead (see `engine.run_rego_tests`).

The check is conservative: it may refuse unusual but valid v1 (a rule head split over several lines
with `=` in it); the message says what to write instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ledger.policy.errors import PolicyLoadError

__all__ = ["RegoModuleInfo", "scan_module"]

_TOKEN = re.compile(
    r"""
      (?P<space>[ \t\r\f\v]+)
    | (?P<newline>\n)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:[^"\\\n]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>:=|==|!=|<=|>=|[-+*/%|&=<>.,;:\[\](){}!])
    """,
    re.VERBOSE,
)
_OPEN = frozenset("([{")
_CLOSE = frozenset(")]}")
# Tokens after which a depth-0 `{` is a literal value (or, after `if`, a v1 rule body).
_BRACE_MAY_FOLLOW = frozenset({"if", "contains", "in", "as", ":=", "=", "==", "!=", "|", "&", ","})
_CONFTEST_SETS = frozenset({"deny", "warn", "violation"})
_PACKAGE = re.compile(r"ledger(\.[A-Za-z_][A-Za-z0-9_]*)+")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    line: int
    depth: int  # bracket depth before this token
    starts_line: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RegoModuleInfo:
    """What a checked module declares: its package and the names of its top-level rules, in order."""

    package: str
    rules: tuple[str, ...]


def _tokenize(file: str, source: str) -> list[_Token]:
    tokens: list[_Token] = []
    line, depth, pos, starts_line = 1, 0, 0, True
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            raise PolicyLoadError(f"unexpected character {source[pos]!r}", file=file, line=line)
        kind, text = match.lastgroup or "", match.group()
        pos = match.end()
        if kind == "newline":
            line, starts_line = line + 1, True
            continue
        if kind in ("space", "comment"):
            continue
        if text in _CLOSE:
            depth = max(depth - 1, 0)
        tokens.append(_Token(kind, text, line, depth, starts_line))
        if text in _OPEN:
            depth += 1
        line += text.count("\n")  # raw strings may span lines
        starts_line = False
    return tokens


def _statement_heads(tokens: list[_Token]) -> list[list[_Token]]:
    """The depth-0 tokens of each line that starts at depth 0, up to (excluding) `if` or `{`."""
    heads: list[list[_Token]] = []
    collecting = False
    for token in tokens:
        if token.starts_line:
            collecting = token.depth == 0
            if collecting:
                heads.append([])
        if not collecting:
            continue
        if token.depth == 0 and token.text in ("if", "{"):
            collecting = False
            continue
        if token.depth == 0:
            heads[-1].append(token)
    return heads


def _check_braces(file: str, tokens: list[_Token]) -> None:
    for previous, token in zip([None, *tokens], tokens, strict=False):
        if token.text != "{" or token.depth != 0:
            continue
        if previous is None or previous.kind in ("string", "raw", "number") or (previous.text not in _BRACE_MAY_FOLLOW):
            after = "the start of the file" if previous is None else f"`{previous.text}`"
            raise PolicyLoadError(
                f"rule body opened after {after} without the `if` keyword (Rego v0 syntax); "
                "Rego v1 is `name if { ... }`, `name := value if { ... }`, "
                "`deny contains msg if { ... }`",
                file=file,
                line=token.line,
            )


def _check_head(file: str, head: list[_Token]) -> None:
    first = head[0]
    if first.text == "default" and any(t.text == "=" for t in head):
        raise PolicyLoadError(
            "`default name = value` is Rego v0 style; write `default name := value`",
            file=file,
            line=first.line,
        )
    if first.text in _CONFTEST_SETS and len(head) > 1 and head[1].text == "[":
        raise PolicyLoadError(
            f"`{first.text}[...]` is a Rego v0 partial set (Rego v1 reads it as an object); "
            f"write `{first.text} contains msg if {{ ... }}`",
            file=file,
            line=first.line,
        )
    if first.text not in ("package", "import") and any(t.text == "=" for t in head):
        raise PolicyLoadError("rule head assigns with `=` (Rego v0 style); write `:=`", file=file, line=first.line)


def _check_no_with(file: str, tokens: list[_Token]) -> None:
    for token in tokens:
        if token.kind == "name" and token.text == "with":
            raise PolicyLoadError(
                "`with` is not supported: regopy 1.5.2 crashes the process on any query using it; "
                'in a *_test.rego file, write an input case (`cases.<name> := {"input": ..., '
                '"deny": ...}`) instead of `... with input as ...`',
                file=file,
                line=token.line,
            )


def scan_module(file: str, source: str) -> RegoModuleInfo:
    """Check that `source` is Rego v1 under a `ledger.` package; return its package and rule names.

    Raises `PolicyLoadError` naming `file` and the line of the first problem.
    """
    tokens = _tokenize(file, source)
    _check_braces(file, tokens)
    _check_no_with(file, tokens)
    package: str | None = None
    has_rego_v1 = False
    rules: list[str] = []
    for head in _statement_heads(tokens):
        if not head:
            continue
        _check_head(file, head)
        first, text = head[0], "".join(t.text for t in head[1:])
        if first.text == "package":
            if package is not None:
                raise PolicyLoadError("a second `package` declaration", file=file, line=first.line)
            if _PACKAGE.fullmatch(text) is None:
                raise PolicyLoadError(
                    f"package `{text}` is not under `ledger.` (write `package ledger.<name>`)",
                    file=file,
                    line=first.line,
                )
            package = text
        elif first.text == "import":
            has_rego_v1 = has_rego_v1 or text == "rego.v1"
        elif package is None:
            raise PolicyLoadError("a rule before the `package` declaration", file=file, line=first.line)
        elif first.kind == "name":
            name = head[1].text if first.text == "default" and len(head) > 1 else first.text
            if name not in rules:
                rules.append(name)
    if package is None:
        raise PolicyLoadError("no `package ledger.<name>` declaration", file=file, line=1)
    if not has_rego_v1:
        raise PolicyLoadError("missing `import rego.v1`: policies must be Rego v1 and say so", file=file, line=1)
    return RegoModuleInfo(package=package, rules=tuple(rules))
