"""Signing keys: created 0600, never served or logged; rotation keeps old checkpoints verifiable."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, auth
from events import run_event

from ledger.tlog.errors import InvalidCheckpointError
from ledger.tlog.note import NoteVerifier


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args], env=env, capture_output=True, text=True, check=False, timeout=300
    )


def test_rotation_keeps_old_checkpoints_verifiable(tmp_path: Path, database_url: str) -> None:
    env = {
        **os.environ,
        "LEDGER_DATA_DIR": str(tmp_path / "d"),
        "LEDGER_DATABASE_URL": database_url,
        "LEDGER_POLICY_DIR": str(REPO / "policies"),
        "LEDGER_ORIGIN": "ledger.test/rotate",
    }
    assert _cli(env, "init").returncode == 0
    key = tmp_path / "d" / "signing-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    old_vkey = _cli(env, "keys", "verifier").stdout.strip()

    r = _cli(env, "keys", "rotate")
    assert r.returncode == 0, r.stderr
    new_vkey = r.stdout.strip().splitlines()[-1]
    assert new_vkey != old_vkey and new_vkey == _cli(env, "keys", "verifier").stdout.strip()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    retired = list((tmp_path / "d" / "retired-keys").iterdir())
    assert len(retired) == 1 and stat.S_IMODE(retired[0].stat().st_mode) == 0o600

    from sqlalchemy import create_engine, text

    eng = create_engine(database_url)
    with eng.connect() as c:
        notes = c.execute(text("SELECT key_id, note FROM checkpoints ORDER BY size, key_id")).all()
        keys = c.execute(text("SELECT key_id, valid_until FROM signing_keys ORDER BY valid_from")).all()
    eng.dispose()
    old, new = NoteVerifier.parse(old_vkey), NoteVerifier.parse(new_vkey)
    by_old = [n for kid, n in notes if kid == old.key_id.hex()]
    by_new = [n for kid, n in notes if kid == new.key_id.hex()]
    assert by_old and by_new
    for note in by_old:  # the old key's checkpoints verify with the old key, not the new one
        old.verify(note)
        with pytest.raises(InvalidCheckpointError):
            new.verify(note)
    for note in by_new:
        new.verify(note)
    assert [k[0] for k in keys] == [old.key_id.hex(), new.key_id.hex()]
    assert keys[0][1] is not None and keys[1][1] is None  # the old key's validity ended

    listing = _cli(env, "keys", "list").stdout
    assert old_vkey in listing and f"{new_vkey}" in listing and "(current)" in listing


def test_keys_endpoint_lists_validity_and_serves_no_secret(client, runtime, tokens, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    body = client.get("/api/v1/log/keys").get_json()
    assert body["keys"][0]["verifier_key"] == runtime.ledger.signer.verifier.line()
    assert body["keys"][0]["current"] is True and body["keys"][0]["valid_from"]
    pem = runtime.settings.signing_key_path.read_text()
    secret = pem.splitlines()[1]
    client.post("/api/v1/lineage", json=run_event(), headers=auth(tokens.pipeline))
    client.post("/api/v1/lineage", json=run_event(), headers=auth("lgr_wrong-token-guess"))
    for path in ("/api/v1/log/keys", "/api/v1/log/checkpoint", "/api/v1/openapi.json", "/metrics"):
        assert secret not in client.get(path).get_data(as_text=True)
    assert "PRIVATE" not in repr(runtime.ledger.signer) and secret not in repr(runtime.ledger.signer)
    logged = caplog.text
    assert secret not in logged and tokens.pipeline not in logged and "lgr_wrong-token-guess" not in logged
