"""The layers (STYLE.md "Arrows point inward"): tlog <- store <- lineage, governance, security,
policy <- api <- app <- cli. Every `ledger` import, at module level or inside a function, is checked."""

from __future__ import annotations

import ast

from conftest import REPO

PACKAGE = REPO / "ledger"
DOMAINS = {"lineage", "governance", "security", "policy"}
# What each part may import (besides itself, `ledger.errors` and `ledger.config`).
ALLOWED: dict[str, set[str]] = {
    "tlog": set(),
    "store": {"tlog"},
    "policy": {"tlog", "store"},
    "lineage": {"tlog", "store"},
    "security": {"tlog", "store", "lineage", "policy"},  # data is classified through lineage
    "governance": {"tlog", "store", "lineage", "security", "policy"},
    "reads": {"tlog", "store", "lineage", "security", "policy"},  # the lineage graph as a principal sees it
}
# Known arrows against the layers, each with its reason; the list may only shrink.
KNOWN: dict[tuple[str, str], str] = {}
TOP = {"api", "app", "cli", "server", "wsgi_adapter", "runtime", "demo", "verify", "jobs", "projections", "applier"}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports() -> list[tuple[str, str]]:
    out = []
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ledger"):
                out.append((module, node.module))
            elif isinstance(node, ast.Import):
                out += [(module, a.name) for a in node.names if a.name.startswith("ledger")]
    return out


def test_every_import_points_inward() -> None:
    wrong = []
    seen_known = set()
    for importer, imported in _imports():
        src, dst = _part(importer), _part(imported)
        if src == dst or dst in ("errors", "config") or src in TOP:
            continue
        if dst in TOP:
            wrong.append((importer, imported))
            continue
        if src in ALLOWED and dst not in ALLOWED[src]:
            if (importer, imported) in KNOWN:
                seen_known.add((importer, imported))
                continue
            wrong.append((importer, imported))
    assert not wrong, f"imports against the layers: {sorted(set(wrong))}"
    assert seen_known == set(KNOWN), f"no longer needed, drop from KNOWN: {sorted(set(KNOWN) - seen_known)}"


def test_lineage_never_imports_security_for_its_projection() -> None:
    """Propagation is a projection of its own (security.classification); lineage's projection does not
    reach into security, lazily or otherwise (it once did, to break an import cycle)."""
    tree = ast.parse((PACKAGE / "lineage" / "projection.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(m.startswith("ledger.security") for m in imported), imported
