"""No split view from the log itself (issue 9, point 3), on SQLite and PostgreSQL: a history rewritten
in the database is refused before anything is signed (503 on appends and on the checkpoint, an error
in the log, a metric); `verify --url --since` catches it from a checkpoint or receipt kept earlier;
`ledger verify RECEIPT` works offline."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import auth
from events import run_event
from rewrite import rewrite_payload
from werkzeug.serving import make_server

from ledger.app import create_app
from ledger.errors import VerificationError
from ledger.store.signing import SplitViewError
from ledger.verify import load_kept, verify_log, verify_receipt


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_a_rewritten_tree_is_never_signed(client, tokens, runtime, database_url, caplog) -> None:  # type: ignore[no-untyped-def]
    for _ in range(6):
        assert client.post("/api/v1/lineage", json=run_event(), headers=auth(tokens.pipeline)).status_code == 201
    stored = runtime.ledger.store_checkpoint()
    assert stored is not None
    before = client.get("/metrics").get_data(as_text=True)
    assert "ledger_split_view_refusals_total" in before

    rewrite_payload(database_url, 3, lambda p: {**p, "eventType": "FAIL"})
    runtime.ledger._sequencer.forget()  # as after a restart (or `ledger rebuild`): the tree is read from the tables
    with caplog.at_level(logging.ERROR, logger="ledger.signing"):
        r = client.get("/api/v1/log/checkpoint")
        assert r.status_code == 503 and r.mimetype == "application/problem+json"
        assert "not consistent with the checkpoint of size" in r.get_json()["detail"]
        size = runtime.ledger.size()
        r = client.post("/api/v1/lineage", json=run_event(), headers=auth(tokens.pipeline))
        assert r.status_code == 503 and r.mimetype == "application/problem+json", r.get_json()
        assert runtime.ledger.size() == size  # nothing written
    assert any("refusing to sign" in rec.getMessage() for rec in caplog.records)
    with pytest.raises(SplitViewError):
        runtime.ledger.store_checkpoint()
    after = client.get("/metrics").get_data(as_text=True)

    def refusals(text: str) -> float:
        line = next(x for x in text.splitlines() if x.startswith("ledger_split_view_refusals_total "))
        return float(line.split()[1])

    assert refusals(after) >= refusals(before) + 3


def test_verify_since_a_kept_checkpoint_or_receipt(client, tokens, runtime, database_url, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    vkey = runtime.ledger.signer.verifier.line()
    receipt = None
    for i in range(5):
        r = client.post("/api/v1/lineage", json=run_event(), headers=auth(tokens.pipeline))
        if i == 2:
            receipt = r.get_json()["receipt"]
    assert receipt is not None
    kept_note = client.get("/api/v1/log/checkpoint").get_data(as_text=True)
    (tmp_path / "receipt.json").write_text(json.dumps(receipt))
    (tmp_path / "checkpoint.txt").write_text(kept_note)
    for _ in range(3):
        client.post("/api/v1/lineage", json=run_event(), headers=auth(tokens.pipeline))

    # A receipt verifies offline, with the log's key alone.
    assert "is in the log" in verify_receipt(receipt, vkey)
    ok = _cli("verify", str(tmp_path / "receipt.json"), "--key", vkey)
    assert ok.returncode == 0 and ok.stdout.startswith(f"OK: entry {receipt['seq']}"), ok.stderr
    forged = {**receipt, "leaf_hash": "00" * 32}
    with pytest.raises(VerificationError):
        verify_receipt(forged, vkey)

    server = make_server("127.0.0.1", 0, create_app(runtime=runtime), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        for kept in ("receipt.json", "checkpoint.txt"):
            r = _cli("verify", "--url", url, "--key", vkey, "--token", tokens.auditor, "--since", str(tmp_path / kept))
            assert r.returncode == 0, r.stderr
            assert "consistent with the kept checkpoint of size" in r.stdout

        # History rewritten below the kept checkpoint, and the log's stored checkpoints deleted with
        # it (so the server's own check has nothing to compare with): only the kept one shows it.
        rewrite_payload(database_url, 2, lambda p: {**p, "eventType": "ABORT"}, drop_checkpoints=True)
        runtime.ledger._sequencer.forget()
        verify_log(url, vkey, token=tokens.auditor)  # self-consistent: passes without --since
        with pytest.raises(VerificationError, match="not consistent with the checkpoint kept from earlier"):
            verify_log(url, vkey, token=tokens.auditor, since=load_kept(kept_note, vkey))
        for kept in ("receipt.json", "checkpoint.txt"):
            r = _cli("verify", "--url", url, "--key", vkey, "--token", tokens.auditor, "--since", str(tmp_path / kept))
            assert r.returncode == 1 and "history was rewritten" in r.stderr, r.stdout + r.stderr
    finally:
        server.shutdown()
