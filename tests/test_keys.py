"""Signing keys: created 0600, never served or logged; rotation keeps old checkpoints verifiable."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
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


def _env(tmp_path: Path, database_url: str, host: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "LEDGER_DATA_DIR": str(tmp_path / host),
        "LEDGER_DATABASE_URL": database_url,
        "LEDGER_POLICY_DIR": str(REPO / "policies"),
        "LEDGER_ORIGIN": "ledger.test/hosts",
        **extra,
    }


def test_a_host_with_another_key_is_refused_and_nothing_is_retired(tmp_path: Path, database_url: str) -> None:
    """Two hosts on one log must hold the same key: a host that made up its own would sign
    checkpoints that no verifier of this log accepts, and must not retire the log's key either."""
    a = _env(tmp_path, database_url, "a")
    assert _cli(a, "init").returncode == 0
    vkey = _cli(a, "keys", "verifier").stdout.strip()

    b = _env(tmp_path, database_url, "b")  # no key file on b
    r = _cli(b, "init")
    assert r.returncode == 1
    assert "no signing key at" in r.stderr and "copy the key file" in r.stderr
    assert not (tmp_path / "b" / "signing-key.pem").exists()  # did not make one up

    (tmp_path / "b").mkdir(exist_ok=True)
    from ledger.security.keys import create_signing_key

    create_signing_key(tmp_path / "b" / "signing-key.pem")  # a key of its own
    r = _cli(b, "init")
    assert r.returncode == 1 and "this log's current key is" in r.stderr

    shared = _env(tmp_path, database_url, "c", LEDGER_SIGNING_KEY=str(tmp_path / "a" / "signing-key.pem"))
    assert _cli(shared, "init").returncode == 0  # the same key: welcome
    elsewhere = {**shared, "LEDGER_ORIGIN": "ledger.test/other"}  # same key, another origin: another key id
    r = _cli(elsewhere, "init")
    assert r.returncode == 1 and "LEDGER_ORIGIN=ledger.test/hosts" in r.stderr
    listing = _cli(a, "keys", "list").stdout.strip().splitlines()
    assert listing == [line for line in listing if vkey in line] and len(listing) == 1 and "(current)" in listing[0]


def test_running_server_follows_a_rotation_and_stale_hosts_stop_signing(tmp_path: Path, database_url: str) -> None:
    from conftest import start_server, stop_server

    srv = start_server(tmp_path / "a", database_url, LEDGER_CHECKPOINT_INTERVAL="1")
    stale = None
    try:
        old_vkey = srv.verifier_key()
        old = NoteVerifier.parse(old_vkey)
        old.verify(requests.get(f"{srv.url}/api/v1/log/checkpoint", timeout=10).text)
        # A second host that keeps a copy of the old key file.
        copy = tmp_path / "stale-key.pem"
        copy.write_bytes((tmp_path / "a" / "srv" / "signing-key.pem").read_bytes())
        copy.chmod(0o600)
        if database_url.startswith("postgres"):
            stale = start_server(tmp_path / "b", database_url, LEDGER_SIGNING_KEY=str(copy))

        r = srv.ledger("keys", "rotate", check=False)
        assert r.returncode == 0, r.stderr
        new = NoteVerifier.parse(r.stdout.strip().splitlines()[-1])

        # No restart: the workers sign with the new key at once.
        note = requests.get(f"{srv.url}/api/v1/log/checkpoint", timeout=10).text
        new.verify(note)
        with pytest.raises(InvalidCheckpointError):
            old.verify(note)
        token = srv.add_principal("etl", "pipeline")
        receipt = requests.post(f"{srv.url}/api/v1/lineage", json=run_event(), headers=auth(token), timeout=30).json()
        new.verify(receipt["receipt"]["checkpoint"])
        keys = requests.get(f"{srv.url}/api/v1/log/keys", timeout=10).json()["keys"]
        assert [(k["verifier_key"], k["current"]) for k in keys] == [(old_vkey, False), (new.line(), True)]
        assert keys[0]["valid_until"] is not None and keys[1]["valid_until"] is None

        # The scheduler process follows too: the next stored checkpoint is signed by the new key.
        from sqlalchemy import create_engine, text

        eng = create_engine(database_url)
        deadline = time.monotonic() + 30
        while True:
            with eng.connect() as c:
                rows = c.execute(
                    text("SELECT size, key_id FROM checkpoints WHERE size = (SELECT max(seq) + 1 FROM log_entries)")
                ).all()
            if any(kid == new.key_id.hex() for _, kid in rows) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        eng.dispose()
        assert any(kid == new.key_id.hex() for _, kid in rows), rows
        assert all(kid == new.key_id.hex() for _, kid in rows)  # nothing new signed by the retired key

        if stale is not None:
            # The host that missed the rotation refuses to sign rather than sign with a retired key.
            refused = requests.get(f"{stale.url}/api/v1/log/checkpoint", timeout=10)
            assert refused.status_code == 503
            assert refused.headers["Content-Type"].startswith("application/problem+json")
            assert new.key_id.hex() in refused.json()["detail"]
            # Nor does it accept entries whose receipts it would sign with the retired key.
            stale_token = srv.add_principal("etl-b", "pipeline")
            size = requests.get(f"{srv.url}/api/v1/log/checkpoint", timeout=10).text.splitlines()[1]
            post = requests.post(
                f"{stale.url}/api/v1/lineage", json=run_event(), headers=auth(stale_token), timeout=30
            )
            assert post.status_code == 503, post.text
            assert new.key_id.hex() in post.json()["detail"]
            assert requests.get(f"{srv.url}/api/v1/log/checkpoint", timeout=10).text.splitlines()[1] == size
            again = stale.ledger("init", check=False)
            assert again.returncode == 1 and "was retired at" in again.stderr
    finally:
        if stale is not None:
            stop_server(stale)
        stop_server(srv)


def test_an_interrupted_rotation_is_finished_on_the_next_start(tmp_path: Path, database_url: str) -> None:
    """The database names the new key before the file is renamed; a crash in between is repaired."""
    from ledger.config import Settings
    from ledger.runtime import build_runtime, initialise
    from ledger.security.keys import prepare_next_key
    from ledger.tlog.note import NoteSigner

    settings = Settings.from_env(_env(tmp_path, database_url, "a"))
    initialise(settings)
    rt = build_runtime(settings)
    try:
        new = NoteSigner(name=settings.origin, private_key=prepare_next_key(settings.signing_key_path))
        rt.keyring.rotate_to(new)  # ... and the process dies before install_next_key
    finally:
        rt.close()
    initialise(settings)
    rt = build_runtime(settings)
    try:
        assert rt.ledger.signer.verifier.line() == new.verifier.line()
        new.verifier.verify(rt.ledger.checkpoint().note)
    finally:
        rt.close()
    assert not settings.signing_key_path.with_suffix(".new").exists()
    assert len(list((tmp_path / "a" / "retired-keys").iterdir())) == 1
