"""A newcomer's first command: the project installed (not editable) into a fresh venv, and `ledger serve`
run from the root of a checkout, where the source tree's `ledger/` lies in the current directory.

Regression: `serve` started its children with `python -m`, which puts the current directory first on
the import path, so they imported the checkout's `ledger/` (which has no `ledger._policies`) instead of
the installed package, and the service exited 1 with a traceback.

To stay fast, the fresh venv gets the project itself from a wheel built here, and its dependencies by a
`.pth` line naming this test environment's site-packages (a path added that way has its own `.pth`
files, such as this checkout's editable-install hook, left unprocessed).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import time
import venv
from pathlib import Path

import requests
from conftest import REPO, free_port
from spec_ref import parse_checkpoint, verify_note

NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    "*.egg-info",
    "build",
    "dist",
    "ledger-data",
    ".hypothesis",
    ".*_cache",
    "node_modules",
    "results",
    "demo-out",
    "test-artifacts",
)


def _fresh_install(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the checkout, and a fresh venv with the project installed from a wheel of that copy."""
    clone = tmp_path / "clone"
    shutil.copytree(REPO, clone, ignore=NOT_SOURCE)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), "."],
        cwd=clone,
        check=True,
        capture_output=True,
        timeout=300,
    )
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    fresh_site = next((env_dir / "lib").glob("python3*/site-packages"))
    (fresh_site / "test-deps.pth").write_text(site.getsitepackages()[0] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(env_dir / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(next(wheels.glob("*.whl"))),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return clone, env_dir


def test_installed_ledger_serves_from_the_checkout_root(tmp_path: Path) -> None:
    clone, env_dir = _fresh_install(tmp_path)
    ledger = str(env_dir / "bin" / "ledger")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "PYTHON"))}
    where = subprocess.run(
        [str(env_dir / "bin" / "python"), "-P", "-c", "import ledger._policies as p; print(p.__file__)"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(env_dir) in where.stdout, where.stdout  # the installed package, not the checkout

    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([ledger, "serve", "--port", str(port)], cwd=clone, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or workers still booting
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        note = requests.get(f"{url}/api/v1/log/checkpoint", timeout=10).text
        vkey = subprocess.run(
            [ledger, "keys", "verifier"], cwd=clone, env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        origin, size, _ = parse_checkpoint(verify_note(note, vkey))
        assert size >= 1  # `init` recorded the policy bundle
        assert origin == vkey.split("+", 1)[0]
        assert (clone / "ledger-data" / "ledger.db").exists()  # the default: SQLite in ./ledger-data
        # The console ships in the wheel: its page and built assets come from the installed package.
        page = requests.get(f"{url}/console/models", timeout=10)
        assert page.status_code == 200 and "/console/assets/console.js" in page.text
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        installed = next((env_dir / "lib").glob("python3*/site-packages/ledger/console/static"))
        for asset in ("console.js", "console.css", "licenses/THIRD-PARTY.txt", "licenses/cytoscape.LICENSE.txt"):
            got = requests.get(f"{url}/console/assets/{asset}", timeout=10)
            assert got.status_code == 200, asset
            built = (REPO / "ledger" / "console" / "static" / asset).read_bytes()
            assert got.content == (installed / asset).read_bytes() == built
        served = (tmp_path / "serve.log").read_text()
        assert "admin token: " in served
        assert "Traceback" not in served
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
