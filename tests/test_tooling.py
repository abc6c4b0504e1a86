"""The project's own checks run with the suite: ruff over the tree, mypy --strict on the pure core."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs ruff, mypy and the CLI in processes of their own

REPO = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / name
    found = str(exe) if exe.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (it is a test dependency: pip install -e '.[test]')")
    return found


def test_ruff_passes_on_the_whole_tree() -> None:
    r = subprocess.run([_tool("ruff"), "check", "."], cwd=REPO, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("package", ["ledger/tlog", "ledger/policy"])
def test_mypy_strict_passes(package: str) -> None:
    r = subprocess.run(
        [_tool("mypy"), "--strict", package], cwd=REPO, capture_output=True, text=True, check=False, timeout=600
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_ledger_rebuild_command(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "LEDGER_DATA_DIR": str(tmp_path / "d"), "LEDGER_POLICY_DIR": str(REPO / "policies")}
    run = [sys.executable, "-m", "ledger.cli"]
    assert subprocess.run([*run, "init"], env=env, capture_output=True, check=False).returncode == 0
    r = subprocess.run([*run, "rebuild"], env=env, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert "rebuilt: entries replayed 1" in r.stdout  # the policy.bundle entry
