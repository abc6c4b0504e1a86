"""Independent witnesses (issue 9, point 4; C2SP tlog-witness, tlog-cosignature), on SQLite and
PostgreSQL: two witnesses beside a log cosign its checkpoints, which receipts and bundles carry; a
history rewritten in the database (the log's own check bypassed) is refused by both, and verify with
--witness fails on the forked checkpoint; a witness killed with SIGKILL keeps its state; a log that
cannot reach a witness keeps serving, and its /metrics say the witness is behind."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import REPO, auth, free_port, make_settings, shared_policy
from rewrite import rewrite_payload
from spec_ref import verify_cosignature, verify_note
from witnesses import RunningWitness, serve, start_witness

from ledger.app import create_app
from ledger.errors import VerificationError
from ledger.jobs.witnesses import WitnessConfig, send_to_witnesses, submit
from ledger.runtime import Runtime, build_runtime, initialise
from ledger.store.ledger import Ledger
from ledger.store.sequencer import PendingEntry
from ledger.tlog.cosignature import check_quorum
from ledger.tlog.note import NoteSigner
from ledger.verify import verify_log, verify_receipt
from ledger.witness import Witness, WitnessState, create_witness_app, load_or_create_key


@pytest.fixture
def witnesses(tmp_path: Path) -> Iterator[list[RunningWitness]]:
    out = [start_witness(tmp_path / n, f"witness.test/{n}") for n in ("w1", "w2")]
    yield out
    for w in out:
        w.server.shutdown()


@pytest.fixture
def log(tmp_path: Path, database_url: str, witnesses: list[RunningWitness]) -> Iterator[Runtime]:
    """A log whose LEDGER_WITNESSES names the two witnesses and one that is never reachable."""
    dead = f"http://127.0.0.1:{free_port()}"
    unreachable = load_or_create_key(tmp_path / "w3", "witness.test/w3").verifier.line()
    pairs = [f"{w.url} {w.vkey}" for w in witnesses] + [f"{dead} {unreachable}"]
    settings = make_settings(tmp_path, database_url, LEDGER_WITNESSES=", ".join(pairs))
    initialise(settings, policy=shared_policy(settings.policy_dir))
    rt = build_runtime(settings, policy=shared_policy(settings.policy_dir))
    for w in witnesses:
        w.trust(rt.ledger.signer.verifier.line())
    yield rt
    rt.close()


def _append(ledger: Ledger, n: int, tag: str = "a") -> None:
    for i in range(n):
        ledger.append(
            [PendingEntry(kind="policy.bundle", subject="policy:test", principal="t", payload={"i": i, "tag": tag})]
        )


def _configs(rt: Runtime) -> list[WitnessConfig]:
    return WitnessConfig.of(rt.settings.witnesses)


def test_two_witnesses_cosign_and_everything_carries_it(log: Runtime, witnesses: list[RunningWitness]) -> None:
    ledger = log.ledger
    vkey = ledger.signer.verifier.line()
    _append(ledger, 5)
    ledger.store_checkpoint()
    t0 = time.monotonic()
    results = send_to_witnesses(ledger, _configs(log))
    assert results["witness.test/w1"].startswith("cosigned") and results["witness.test/w2"].startswith("cosigned")
    assert results["witness.test/w3"].startswith("unreachable")
    assert time.monotonic() - t0 < 10  # bounded: the dead witness costs one connection attempt
    # Grown: each witness gets a consistency proof from the size it cosigned.
    _append(ledger, 7, "b")
    ledger.store_checkpoint()
    size = ledger.size()
    assert send_to_witnesses(ledger, _configs(log))["witness.test/w1"] == f"cosigned {size}"
    assert send_to_witnesses(ledger, _configs(log))["witness.test/w1"] == "up to date"

    client = create_app(runtime=log).test_client()
    note = client.get("/api/v1/log/checkpoint/cosigned").get_data(as_text=True)
    assert f"\n{size}\n" in note
    verify_note(note, vkey)
    for w in witnesses:  # checked by code written from the spec alone
        assert verify_cosignature(note, w.vkey) > 1_700_000_000
    assert len(check_quorum(note, [w.vkey for w in witnesses], 2)) == 2
    current = client.get("/api/v1/log/checkpoint").get_data(as_text=True)
    assert current == note  # the current tree is the cosigned one: its cosignatures come with it

    # A witness serves what it cosigned (monitoring prefix).
    import hashlib

    origin = hashlib.sha256(ledger.signer.name.encode()).hexdigest()
    held = requests.get(f"{witnesses[0].url}/{origin}/checkpoint", timeout=5).text
    verify_cosignature(held, witnesses[0].vkey)

    # Receipts carry the cosigned checkpoint; `ledger verify RECEIPT` checks it offline.
    admin = log.principals.create("root", roles=["admin"])[1]
    receipt = client.get("/api/v1/log/entries/3/receipt", headers=auth(admin)).get_json()
    assert receipt["checkpoint"] == note
    assert "cosigned by witness.test/w1" in verify_receipt(receipt, vkey, witnesses=[w.vkey for w in witnesses])
    # An entry past the cosigned checkpoint gets the current, not yet cosigned, one.
    _append(ledger, 1, "c")
    later = client.get(f"/api/v1/log/entries/{size}/receipt", headers=auth(admin)).get_json()
    verify_receipt(later, vkey)
    with pytest.raises(VerificationError, match="0 of 1 required witness cosignatures"):
        verify_receipt(later, vkey, witnesses=[witnesses[0].vkey])


def test_the_command_line_verifies_with_witnesses(
    log: Runtime, witnesses: list[RunningWitness], tmp_path: Path
) -> None:
    ledger = log.ledger
    vkey = ledger.signer.verifier.line()
    _append(ledger, 4)
    ledger.store_checkpoint()
    send_to_witnesses(ledger, _configs(log))
    server, url = serve(create_app(runtime=log))
    auditor = log.principals.create("audit", roles=["auditor"])[1]
    try:
        wkeys = [a for w in witnesses for a in ("--witness", w.vkey)]

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "ledger.cli", *args],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )

        ok = cli("verify", "--url", url, "--key", vkey, "--token", auditor, *wkeys, "--quorum", "2")
        assert ok.returncode == 0, ok.stderr
        assert "cosigned by witness.test/w1" in ok.stdout and "cosigned by witness.test/w2" in ok.stdout
        checker = REPO.parent / "shared" / "conformance" / "check_log.py"
        if checker.exists():  # the independent conformance checker, when it is beside the checkout
            r = subprocess.run(
                [sys.executable, str(checker), "--url", url, "--key", vkey, "--token", auditor, *wkeys],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert r.returncode == 0, r.stdout + r.stderr
        other = load_or_create_key(tmp_path / "w9", "witness.test/w9").verifier.line()
        bad = cli("verify", "--url", url, "--key", vkey, "--token", auditor, "--witness", other)
        assert bad.returncode == 1 and "0 of 1 required witness cosignatures" in bad.stderr
        one = cli(
            "verify", "--url", url, "--key", vkey, "--token", auditor, "--witness", other, *wkeys, "--quorum", "2"
        )
        assert one.returncode == 0, one.stderr
    finally:
        server.shutdown()


def test_a_rewritten_history_is_refused_by_both_witnesses(
    log: Runtime, witnesses: list[RunningWitness], database_url: str
) -> None:
    ledger = log.ledger
    vkey = ledger.signer.verifier.line()
    _append(ledger, 9)
    ledger.store_checkpoint()
    send_to_witnesses(ledger, _configs(log))
    size = ledger.size()
    wkeys = [w.vkey for w in witnesses]

    # The attacker rewrites entry 4 and every node above it, and deletes what the log stored of its
    # checkpoints and cosignatures (the log's own check, point 3, has nothing left to compare with).
    rewrite_payload(database_url, 4, lambda p: {**p, "tag": "rewritten"}, drop_checkpoints=True)
    restarted = Ledger(db=ledger.db, signer=ledger.signer)  # a restarted server over the same database
    forked = restarted.checkpoint()
    assert forked.size == size and forked.root != witnesses[0].witness.state.read()[ledger.signer.name]["root"]
    assert restarted.store_checkpoint() is not None  # the log signs a second root at the same size
    results = send_to_witnesses(restarted, _configs(log))
    for w in witnesses:
        assert results[w.witness.signer.name].startswith("refused: HTTP 422"), results
        held = w.witness.state.read()[ledger.signer.name]
        assert held["size"] == size and base64.b64decode(held["root"]) != forked.root  # unchanged
    # verify --witness fails on the forked checkpoint, served or kept.
    with pytest.raises(VerificationError, match="0 of 2 required witness cosignatures"):
        check_quorum(restarted.checkpoint().note, wkeys, None)
    server, url = serve(create_app(runtime=log))
    auditor = log.principals.create("audit", roles=["auditor"])[1]
    try:
        verify_log(url, vkey, token=auditor)  # without witnesses the fork verifies: it is self-consistent
        with pytest.raises(VerificationError, match="no witness-cosigned checkpoint"):
            verify_log(url, vkey, token=auditor, witnesses=wkeys)
    finally:
        server.shutdown()
    # Growing the fork does not help: the proof from the witnesses' size does not verify.
    _append(restarted, 3, "more")
    restarted.store_checkpoint()
    assert all(
        r.startswith("refused: HTTP 422")
        for n, r in send_to_witnesses(restarted, _configs(log)).items()
        if n != "witness.test/w3"
    )


def test_a_log_that_cannot_reach_a_witness_keeps_serving(log: Runtime, witnesses: list[RunningWitness]) -> None:
    ledger = log.ledger
    _append(ledger, 3)
    ledger.store_checkpoint()
    send_to_witnesses(ledger, _configs(log))
    _append(ledger, 2, "b")  # appends go on while a witness is unreachable
    ledger.store_checkpoint()
    witnesses[1].server.shutdown()  # w2 goes away too
    send_to_witnesses(ledger, _configs(log))
    client = create_app(runtime=log).test_client()
    assert client.get("/api/v1/log/checkpoint").status_code == 200
    metrics = client.get("/metrics").get_data(as_text=True)
    size = ledger.size()
    assert 'ledger_witness_behind_entries{witness="witness.test/w1"} 0.0' in metrics
    assert 'ledger_witness_behind_entries{witness="witness.test/w2"} 2.0' in metrics
    assert f'ledger_witness_behind_entries{{witness="witness.test/w3"}} {float(size)}' in metrics
    assert f'ledger_witness_cosigned_size{{witness="witness.test/w2"}} {float(size - 2)}' in metrics


def test_a_slow_witness_blocks_no_append(log: Runtime, witnesses: list[RunningWitness]) -> None:
    """A witness that accepts the connection and never answers: the job gives up after its read
    timeout, and appends made meanwhile commit at once (the job holds no lock while it waits)."""
    import socket

    ledger = log.ledger
    _append(ledger, 2)
    ledger.store_checkpoint()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections complete in the backlog; nothing ever reads or answers
    slow = WitnessConfig(f"http://127.0.0.1:{silent.getsockname()[1]}", _configs(log)[0].verifier)
    done = threading.Event()
    outcome: dict[str, str] = {}

    def job() -> None:
        outcome.update(send_to_witnesses(ledger, [slow]))
        done.set()

    try:
        t0 = time.monotonic()
        threading.Thread(target=job, daemon=True).start()
        _append(ledger, 5, "meanwhile")
        assert not done.is_set()  # the witness is still being waited for, and the appends are in
        assert done.wait(30)
        assert outcome["witness.test/w1"].startswith("unreachable: ReadTimeout")
        assert time.monotonic() - t0 < 15
    finally:
        silent.close()


def _post(url: str, body: str) -> requests.Response:
    return requests.post(f"{url}/add-checkpoint", data=body.encode(), timeout=10)


def test_a_witness_killed_with_sigkill_keeps_its_state(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url)
    initialise(settings, policy=shared_policy(settings.policy_dir))
    rt = build_runtime(settings, policy=shared_policy(settings.policy_dir))
    try:
        ledger = rt.ledger
        vkey = ledger.signer.verifier.line()
        directory = tmp_path / "witness"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}

        def start(port: int) -> subprocess.Popen[bytes]:
            proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "ledger.cli", "witness", "serve", "--dir", str(directory)),
                    *("--name", "witness.test/w1", "--log", vkey, "--port", str(port)),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        return proc
                except requests.RequestException:
                    time.sleep(0.05)
            proc.kill()
            raise RuntimeError("the witness did not start")

        port = free_port()
        proc = start(port)
        w = WitnessConfig(f"http://127.0.0.1:{port}", load_or_create_key(directory, "witness.test/w1").verifier)
        http = requests.Session()
        _append(ledger, 6)
        first = ledger.checkpoint()
        assert submit(w, first.note, 0, [], http=http).status == 200
        _append(ledger, 4, "b")
        second = ledger.checkpoint()
        sub = submit(w, second.note, first.size, ledger.consistency_proof(first.size, second.size), http=http)
        assert sub.status == 200
        os.kill(proc.pid, signal.SIGKILL)  # right after it answered: the state was on disk before that
        proc.wait()
        http.close()
        proc = start(port)
        try:
            again = submit(w, second.note, 0, [], http=requests.Session())
            assert again.status == 409 and again.witness_size == second.size  # it remembers
            r = _post(w.url, f"old 0\n\n{second.note}")
            assert r.headers["Content-Type"].startswith("text/x.tlog.size") and r.text == f"{second.size}\n"
            # ... and still refuses a rollback to the first checkpoint.
            assert submit(w, first.note, second.size, [], http=requests.Session()).status == 400
            assert submit(w, second.note, second.size, [], http=requests.Session()).status == 200
        finally:
            proc.kill()
            proc.wait()
    finally:
        rt.close()


def test_witness_answers_per_c2sp(tmp_path: Path) -> None:
    """404 unknown origin, 403 bad signature, 400 malformed, 409 wrong old size (with its size),
    422 bad proof or a fork at the same size or a non-empty proof from 0; 200 with a cosignature."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ledger.tlog.hashing import EMPTY_ROOT, leaf_hash
    from ledger.tlog.note import Checkpoint
    from ledger.tlog.tree import CompactRange

    log_signer = NoteSigner(name="log.test/a", private_key=Ed25519PrivateKey.generate())
    stranger = NoteSigner(name="log.test/a", private_key=Ed25519PrivateKey.generate())
    w = Witness(load_or_create_key(tmp_path, "witness.test/w"), [log_signer.verifier.line()], WitnessState(tmp_path))
    client = create_witness_app(w).test_client()
    leaves = [leaf_hash(bytes([i])) for i in range(9)]

    def cp(n: int, signer: NoteSigner = log_signer, origin: str = "log.test/a") -> str:
        c = CompactRange()
        for leaf in leaves[:n]:
            c.append(leaf)
        root = c.root() if n else EMPTY_ROOT
        return signer.sign(Checkpoint(origin, n, root).text())

    def post(body: str):  # type: ignore[no-untyped-def]
        return client.post("/add-checkpoint", data=body.encode())

    other = NoteSigner(name="log.test/b", private_key=Ed25519PrivateKey.generate())
    assert post(f"old 0\n\n{cp(3, other, 'log.test/b')}").status_code == 404
    assert post(f"old 0\n\n{cp(3, stranger)}").status_code == 403
    assert post("old 0\n").status_code == 400
    assert post(f"old 01\n\n{cp(3)}").status_code == 400
    assert post(f"old 4\n\n{cp(3)}").status_code == 400  # old size beyond the checkpoint
    r = post(f"old 0\n\n{cp(3)}")
    assert r.status_code == 200 and r.get_data(as_text=True).startswith("\u2014 witness.test/w ")
    verify_cosignature(cp(3) + r.get_data(as_text=True), w.signer.verifier.line())
    r = post(f"old 0\n\n{cp(5)}")
    assert r.status_code == 409 and r.get_data(as_text=True) == "3\n" and r.mimetype == "text/x.tlog.size"
    # a wrong proof from 3 to 5
    bad = base64.b64encode(leaves[0]).decode()
    assert post(f"old 3\n{bad}\n\n{cp(5)}").status_code == 422
    # a fork at the same size
    fork = log_signer.sign(Checkpoint("log.test/a", 3, leaves[8]).text())
    assert post(f"old 3\n\n{fork}").status_code == 422
    assert w.state.read()["log.test/a"]["size"] == 3
