"""Errors of the policy layer.

Both families derive from `ledger.errors.PolicyError`: a policy that cannot be loaded or evaluated
never yields a decision, so callers fail closed.
"""

from __future__ import annotations

from ledger.errors import PolicyError

__all__ = ["PolicyError", "PolicyEvaluationError", "PolicyLoadError"]


class PolicyLoadError(PolicyError):
    """A policy file cannot be read, does not parse, or is not Rego v1; names the file and line."""

    def __init__(self, detail: str, *, file: str, line: int | None = None) -> None:
        where = file if line is None else f"{file}:{line}"
        super().__init__(f"{where}: {detail}", file=file, line=line)
        self.file = file
        self.line = line


class PolicyEvaluationError(PolicyError):
    """Evaluation failed or produced no usable `deny` set; there is no decision (fail closed)."""

    def __init__(self, detail: str, *, package: str) -> None:
        super().__init__(f"policy package {package}: {detail}", package=package)
        self.package = package
        self.reason = detail
