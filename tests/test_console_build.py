"""The console's built files (ledger/console/static) are those its sources build, and are served with a
strict Content-Security-Policy.

`console/build.mjs` records the SHA-256 of every input (sources, package.json, package-lock.json, the
script, the bundled licence notes) and of every output in `build-manifest.json`. Without network or
node, this test checks both sides against the files in the checkout, so a source edited without a
rebuild, or a built file edited by hand, fails. Where `console/node_modules` is installed
(`npm --prefix console ci`), it also rebuilds into a temporary directory and compares byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

SRC = REPO / "console"
OUT = REPO / "ledger" / "console" / "static"
MANIFEST = json.loads((OUT / "build-manifest.json").read_text())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_the_build_is_made_from_the_sources_in_the_checkout() -> None:
    inputs = ["package.json", "package-lock.json", "build.mjs"]
    inputs += [f"src/{f}" for f in _files(SRC / "src")] + [f"licenses/{f}" for f in _files(SRC / "licenses")]
    stale = {f for f in inputs if MANIFEST["inputs"].get(f) != _sha(SRC / f)}
    assert set(MANIFEST["inputs"]) == set(inputs), "inputs added or removed since the last build"
    assert not stale, (
        f"changed since the last build (run `npm --prefix console ci && npm --prefix console run build`): {stale}"
    )


def test_the_committed_outputs_are_the_build_outputs() -> None:
    outputs = [f for f in _files(OUT) if f != "build-manifest.json"]
    assert outputs == sorted(MANIFEST["outputs"])
    changed = [f for f in outputs if MANIFEST["outputs"][f] != _sha(OUT / f)]
    assert not changed, f"edited after the build: {changed}"


def test_every_bundled_package_is_pinned_and_its_licence_shipped() -> None:
    package = json.loads((SRC / "package.json").read_text())
    lock = json.loads((SRC / "package-lock.json").read_text())
    for name, version in {**package["dependencies"], **package["devDependencies"]}.items():
        assert version[0].isdigit(), f"{name} is not pinned to one version: {version}"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    notice = (OUT / "licenses" / "THIRD-PARTY.txt").read_text()
    for name in package["dependencies"]:
        assert (OUT / "licenses" / f"{name}.LICENSE.txt").is_file()
        assert f"==== {name} {package['dependencies'][name]} (" in notice
    assert "@dagrejs/dagre" in notice  # bundled inside cytoscape-dagre's dist


@pytest.mark.skipif(
    not (SRC / "node_modules" / ".bin" / "esbuild").exists() or shutil.which("node") is None,
    reason="console/node_modules is not installed (npm --prefix console ci); the manifest checks above still ran",
)
def test_a_rebuild_gives_the_same_bytes(tmp_path: Path) -> None:
    out = tmp_path / "static"
    subprocess.run(
        ["node", "build.mjs"], cwd=SRC, env={**os.environ, "CONSOLE_OUT": str(out)}, check=True, capture_output=True
    )
    assert _files(out) == _files(OUT)
    for f in _files(OUT):
        assert (out / f).read_bytes() == (OUT / f).read_bytes(), f


def _get(client, path: str):  # type: ignore[no-untyped-def]
    r = client.get(path)
    r.get_data()
    r.close()  # a file response holds its file open until closed
    return r


def test_console_pages_and_assets_are_served_with_a_strict_csp(client) -> None:  # type: ignore[no-untyped-def]
    for path in ("/console/", "/console/log", "/console/models/churn/versions/3", "/console/lineage"):
        r = _get(client, path)
        assert r.status_code == 200 and r.mimetype == "text/html", path
        html = r.get_data(as_text=True)
        assert '<script src="/console/assets/console.js" defer></script>' in html
        assert "<script>" not in html and "style=" not in html and "<style" not in html  # nothing inline
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
        assert "connect-src 'self'" in csp and "form-action 'none'" in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert "Set-Cookie" not in r.headers
    js = _get(client, "/console/assets/console.js")
    assert js.status_code == 200 and js.mimetype in ("text/javascript", "application/javascript")
    assert js.get_data() == (OUT / "console.js").read_bytes()
    assert _get(client, "/console/assets/licenses/THIRD-PARTY.txt").status_code == 200
    assert _get(client, "/console/assets/nope.js").status_code == 404
    assert _get(client, "/console/assets/../__init__.py").status_code == 404
