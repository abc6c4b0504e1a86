"""Every failure of the `ledger` command is one clear line on stderr and a non-zero exit, never a
traceback: a wrong token, a busy port, an unreachable URL or database, a missing file, a bad key.

Regressions: `ledger demo` with a wrong token printed a 40-line traceback; `ledger serve` on a busy
port printed 12 lines of gunicorn retries.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Server, free_port, start_server, stop_server
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("cli")
    srv = start_server(tmp, f"sqlite:///{tmp / 'ledger.db'}", workers=1)
    try:
        yield srv
    finally:
        stop_server(srv)


def ledger(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args],
        env=env if env is not None else dict(os.environ),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line_failure(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Asserts a non-zero exit and a single line on stderr containing every one of `words`."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def some_vkey(name: str = "other.example/log") -> str:
    """A well-formed verifier key line (C2SP signed-note) of a key no log here signs with."""
    raw = b"\x01" + Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    key_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    return f"{name}+{key_id.hex()}+{base64.b64encode(raw).decode()}"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update({"LEDGER_DATA_DIR": str(tmp_path / "data"), **extra})
    return env


def test_demo_with_a_wrong_token(sqlite_server: Server, tmp_path: Path) -> None:
    r = ledger(
        "demo", "--url", sqlite_server.url, "--token", "lgr_wrong", "--out", str(tmp_path), env=sqlite_server.env
    )
    one_line_failure(r, "401", "token")


def test_verify_url_with_a_wrong_token(sqlite_server: Server) -> None:
    r = ledger("verify", "--url", sqlite_server.url, "--key", sqlite_server.verifier_key(), "--token", "lgr_wrong")
    one_line_failure(r, "401", "invalid or revoked token")


def test_verify_url_with_another_logs_key(sqlite_server: Server) -> None:
    r = ledger("verify", "--url", sqlite_server.url, "--key", some_vkey())
    one_line_failure(r, "FAILED", "signature")


def test_serve_on_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = ledger("serve", "--port", str(port), env=_env(tmp_path))
    one_line_failure(r, f"127.0.0.1:{port}", "in use")


@pytest.mark.parametrize("command", ["demo", "verify"])
def test_an_unreachable_url(command: str, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    vkey = some_vkey()
    args = (
        ["demo", "--url", url, "--token", "t", "--out", str(tmp_path)]
        if command == "demo"
        else [
            "verify",
            "--url",
            url,
            "--key",
            vkey,
        ]
    )
    one_line_failure(ledger(*args), "cannot reach", url)


def test_verify_a_missing_bundle(tmp_path: Path) -> None:
    vkey = some_vkey()
    one_line_failure(ledger("verify", str(tmp_path / "missing.json"), "--key", vkey), "missing.json")


def test_verify_with_a_malformed_key(tmp_path: Path) -> None:
    bundle = tmp_path / "b.json"
    bundle.write_text("{}")
    one_line_failure(ledger("verify", str(bundle), "--key", "not-a-key"), "verifier key")


def test_a_signing_key_file_that_is_not_a_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("garbage\n")
    one_line_failure(ledger("keys", "verifier", env=_env(tmp_path, LEDGER_SIGNING_KEY=str(bad))), "bad.pem")


def test_an_unreachable_database(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"
    r = ledger("principals", "add", "x", "--role", "pipeline", env=_env(tmp_path, LEDGER_DATABASE_URL=url))
    one_line_failure(r, "database is unavailable")


def test_a_database_url_of_no_known_kind(tmp_path: Path) -> None:
    r = ledger("keys", "list", env=_env(tmp_path, LEDGER_DATABASE_URL="nonsense://x"))
    one_line_failure(r, "LEDGER_DATABASE_URL")


def test_debug_lets_the_traceback_through(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("garbage\n")
    env = _env(tmp_path, LEDGER_SIGNING_KEY=str(bad), LEDGER_DEBUG="1")
    r = ledger("keys", "verifier", env=env)
    assert r.returncode != 0
    assert "Traceback" in r.stderr
