"""Operations as an operator meets them, on real `ledger serve` processes: a host added with only the
key file and the database URL, logs an operator can use, a full disk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import Server, start_server, stop_server
from events import run_event
from spec_ref import parse_checkpoint, verify_consistency, verify_inclusion, verify_note


def _post(server: Server, token: str, body: Any, **headers: str) -> requests.Response:
    return requests.post(
        f"{server.url}/api/v1/lineage", json=body, headers={"Authorization": f"Bearer {token}", **headers}, timeout=30
    )


def _check_receipt(receipt: dict[str, Any], vkey: str) -> str:
    origin, size, root = parse_checkpoint(verify_note(receipt["checkpoint"], vkey))
    leaf = bytes.fromhex(receipt["leaf_hash"])
    assert verify_inclusion(receipt["seq"], size, leaf, [bytes.fromhex(h) for h in receipt["inclusion_proof"]], root)
    return str(origin)


def test_new_host_needs_only_the_key_file_and_the_database_url(tmp_path: Path, database_url: str) -> None:
    """The origin lives in the database: host B gets a copy of the key file and the URL, nothing else
    (no LEDGER_ORIGIN, no instance-id file), and signs as the same log."""
    a = start_server(tmp_path / "a", database_url, workers=1, LEDGER_ORIGIN="")
    try:
        vkey = a.verifier_key()
        origin = vkey.split("+")[0]
        assert origin.startswith("ledger.local/")  # made from host A's instance id, on the first start
        token = a.add_principal("etl", "pipeline")
        b_dir = tmp_path / "b-data"
        b_dir.mkdir()
        shutil.copy2(tmp_path / "a" / "srv" / "signing-key.pem", b_dir / "signing-key.pem")
        b = start_server(
            tmp_path / "b", database_url, workers=1, LEDGER_ORIGIN="", LEDGER_DATA_DIR=str(b_dir), LEDGER_SCHEDULER="0"
        )
        try:
            assert sorted(p.name for p in b_dir.iterdir()) == ["signing-key.pem"]  # no instance-id made up
            assert b.verifier_key() == vkey
            r = _post(b, token, run_event())
            assert r.status_code == 201, r.text
            assert _check_receipt(r.json()["receipt"], vkey) == origin
            cp = requests.get(f"{b.url}/api/v1/log/checkpoint", timeout=10).text
            assert verify_note(cp, vkey)
            auditor = a.add_principal("audit", "auditor")
            ok = b.ledger("verify", "--url", b.url, "--key", vkey, "--token", auditor, check=False)
            assert ok.stdout.startswith("OK:"), ok.stderr
        finally:
            stop_server(b)
    finally:
        stop_server(a)


def test_logs_are_one_json_line_each_with_the_request_id_and_no_token_or_payload(
    tmp_path: Path, database_url: str
) -> None:
    srv = start_server(tmp_path, database_url, workers=1, LEDGER_LOG_FORMAT="json")
    try:
        token = srv.add_principal("etl", "pipeline", "auditor")
        marker = "payload-marker-7f3a9c"
        r = _post(srv, token, run_event(job=marker), **{"X-Request-Id": "trace-abc.123"})
        assert r.status_code == 201
        assert r.headers["X-Request-Id"] == "trace-abc.123"
        mine = requests.get(f"{srv.url}/api/v1/log/entries?limit=1", headers={"Authorization": f"Bearer {token}"})
        generated = mine.headers["X-Request-Id"]
        assert len(generated) == 32  # none given: one is made, and returned
        bad = requests.get(f"{srv.url}/api/v1/log/entries/x", headers={"X-Request-Id": "a b\tc" * 40})
        assert bad.headers["X-Request-Id"] != "a b\tc" * 40  # an unusable id is replaced, not echoed
        # The access lines are written once the response is on its way: wait for the last one.
        deadline = time.monotonic() + 10
        while generated not in srv.log_path.read_text():
            assert time.monotonic() < deadline, srv.log_path.read_text()[-2000:]
            time.sleep(0.05)
    finally:
        stop_server(srv)
    text = srv.log_path.read_text()
    assert token not in text
    assert marker not in text
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))  # every structured record is one JSON line
    access = [r for r in records if r.get("logger") == "ledger.access"]
    posted = [r for r in access if r["request_id"] == "trace-abc.123"]
    assert len(posted) == 1
    assert posted[0] | {"time": None, "message": None, "process": None} == {
        "time": None,
        "message": None,
        "process": None,
        "level": "INFO",
        "logger": "ledger.access",
        "request_id": "trace-abc.123",
        "method": "POST",
        "path": "/api/v1/lineage",
        "status": 201,
        "duration_ms": posted[0]["duration_ms"],
        "principal": "etl",
    }
    assert any(r["request_id"] == generated and r["status"] == 200 for r in access)
    assert not any("Authorization" in json.dumps(r) or "Bearer" in json.dumps(r) for r in records)


def _unshare_available() -> str | None:
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return "unshare/nsenter not installed"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
        capture_output=True,
        check=False,
    )
    return None if probe.returncode == 0 else f"cannot mount a tmpfs here: {probe.stderr.decode().strip()}"


def test_full_disk_answers_503_readyz_says_so_and_nothing_is_lost(tmp_path: Path, sqlite_template: Path) -> None:
    """A server whose data directory (SQLite database, key) is a 24 MB tmpfs in a mount namespace of
    its own; the disk is filled from inside that namespace while a client posts."""
    why = _unshare_available()
    if why is not None:
        pytest.skip(why)
    disk = tmp_path / "disk"
    disk.mkdir()
    data = disk / "data"
    launcher = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'mount -t tmpfs -o size=24m tmpfs "{disk}" && exec "$@"',
        "sh",
    ]
    srv = start_server(
        tmp_path,
        f"sqlite:///{data / 'ledger.db'}",
        workers=1,
        LEDGER_DATA_DIR=str(data),
        prefix=launcher,
    )
    inside = ["nsenter", "--target", str(srv.proc.pid), "--mount", "--"]
    try:
        token = srv.add_principal("etl", "pipeline", "auditor", prefix=inside)
        vkey = srv.verifier_key(prefix=inside)
        receipts = []
        for _ in range(5):
            r = _post(srv, token, run_event())
            assert r.status_code == 201
            receipts.append(r.json()["receipt"])
        assert requests.get(f"{srv.url}/readyz", timeout=10).status_code == 200
        fill = subprocess.run(
            [*inside, "sh", "-c", f'cat /dev/zero > "{disk}/filler"'], capture_output=True, check=False
        )
        assert b"No space left" in fill.stderr, fill.stderr
        ready = requests.get(f"{srv.url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert "disk" in ready.json()["reason"] and "full" in ready.json()["reason"]
        statuses = []
        for _ in range(40):
            r = _post(srv, token, run_event(job="big", run_facets={"blob": {"x": "y" * 50_000}}))
            statuses.append(r.status_code)
            if r.status_code == 201:
                receipts.append(r.json()["receipt"])
            else:
                assert r.status_code == 503, r.text
                assert r.headers["Content-Type"] == "application/problem+json"
                assert int(r.headers["Retry-After"]) >= 1
                assert "disk is full" in r.json()["detail"]
        assert 503 in statuses
        subprocess.run([*inside, "rm", f"{disk}/filler"], check=True)
        r = _post(srv, token, run_event())
        assert r.status_code == 201, r.text
        receipts.append(r.json()["receipt"])
        deadline = time.monotonic() + 10
        while requests.get(f"{srv.url}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "never ready again after the disk was freed"
            time.sleep(0.1)
        for receipt in receipts:
            _check_receipt(receipt, vkey)
            entry = requests.get(
                f"{srv.url}/api/v1/log/entries/{receipt['seq']}", headers={"Authorization": f"Bearer {token}"}
            ).json()
            assert entry["leaf_hash"] == receipt["leaf_hash"]
        ok = srv.ledger("verify", "--url", srv.url, "--key", vkey, "--token", token, prefix=inside, check=False)
        assert ok.stdout.startswith("OK:"), ok.stderr
    finally:
        stop_server(srv)


def _backup_and_restore(database_url: str, tmp_path: Path) -> str:
    """Backs the live database up as the README says, restores it into a new database; its URL."""
    if database_url.startswith("sqlite"):
        import sqlite3

        src = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        dst_path = tmp_path / "restored.db"
        dst = sqlite3.connect(dst_path)
        with dst:
            src.backup(dst)  # SQLite's online backup (the sqlite3 shell's `.backup`)
        src.close()
        dst.close()
        return f"sqlite:///{dst_path}"
    from conftest import _admin_exec, _pg_url
    from sqlalchemy.engine import make_url

    dump = tmp_path / "ledger.dump"
    plain = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    subprocess.run(["pg_dump", "--format=custom", f"--file={dump}", plain], check=True)
    name = f"ledger_t_{os.getpid()}_{uuid.uuid4().hex[:12]}"  # dropped by the next run if this one dies
    _admin_exec(f'CREATE DATABASE "{name}"')
    restored = _pg_url(name)
    target = make_url(restored).set(drivername="postgresql").render_as_string(hide_password=False)
    subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", f"--dbname={target}", str(dump)], check=True)
    return restored


def test_backup_under_load_restores_to_a_log_consistent_with_every_checkpoint_handed_out(
    tmp_path: Path, database_url: str
) -> None:
    srv = start_server(tmp_path / "live", database_url, workers=1)
    stop = threading.Event()
    receipts: list[dict[str, Any]] = []
    try:
        token = srv.add_principal("etl", "pipeline", "auditor")
        vkey = srv.verifier_key()

        def load() -> None:
            while not stop.is_set():
                r = _post(srv, token, run_event())
                assert r.status_code == 201, r.text
                receipts.append(r.json()["receipt"])

        poster = threading.Thread(target=load)
        poster.start()
        while len(receipts) < 20:
            assert poster.is_alive()
            time.sleep(0.05)
        handed_out = list(receipts)  # every checkpoint a client held before the backup began
        restored_url = _backup_and_restore(database_url, tmp_path)
        while len(receipts) < len(handed_out) + 10:  # the log goes on growing past the backup
            assert poster.is_alive()
            time.sleep(0.05)
        stop.set()
        poster.join()
    finally:
        stop.set()
        stop_server(srv)
    try:
        key = {"LEDGER_SIGNING_KEY": str(tmp_path / "live" / "srv" / "signing-key.pem")}
        restored = start_server(tmp_path / "restored", restored_url, workers=1, LEDGER_SCHEDULER="0", **key)
        try:
            ok = restored.ledger("verify", "--url", restored.url, "--key", vkey, "--token", token, check=False)
            assert ok.stdout.startswith("OK:"), ok.stderr
            size = parse_checkpoint(verify_note(requests.get(f"{restored.url}/api/v1/log/checkpoint").text, vkey))[1]
            auth_ = {"Authorization": f"Bearer {token}"}
            restored_root = parse_checkpoint(
                verify_note(requests.get(f"{restored.url}/api/v1/log/checkpoint").text, vkey)
            )[2]
            for receipt in handed_out:
                _, first, first_root = parse_checkpoint(verify_note(receipt["checkpoint"], vkey))
                assert first <= size  # the restored log holds everything a client was told of
                entry = requests.get(f"{restored.url}/api/v1/log/entries/{receipt['seq']}", headers=auth_).json()
                assert entry["leaf_hash"] == receipt["leaf_hash"]
                if first < size:
                    proof = requests.get(
                        f"{restored.url}/api/v1/log/proof/consistency?first={first}&second={size}", headers=auth_
                    ).json()["hashes"]
                    assert verify_consistency(first, size, first_root, restored_root, [bytes.fromhex(h) for h in proof])
        finally:
            stop_server(restored)
    finally:
        if not restored_url.startswith("sqlite"):
            from conftest import drop_pg_database

            drop_pg_database(restored_url)


def _children(pid: int) -> set[int]:
    """Every live descendant of `pid` (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _down(answers: list[tuple[float, int, Any]], since: float) -> float:
    return min((t for t, s, _ in answers if t > since and s == 0), default=since)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_master_killed_under_load_leaves_no_process_and_serves_again_within_seconds(
    tmp_path: Path, database_url: str
) -> None:
    from conftest import _start_server_on

    srv = start_server(tmp_path / "first", database_url, workers=2)
    token = srv.add_principal("etl", "pipeline", "auditor")
    vkey = srv.verifier_key()
    stop = threading.Event()
    answers: list[tuple[float, int, dict[str, Any] | None]] = []  # (sent at, status, receipt)

    def load() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                r = _post(srv, token, run_event())
                answers.append((sent, r.status_code, r.json().get("receipt")))
            except requests.RequestException:
                answers.append((sent, 0, None))  # the server is down: try again
                time.sleep(0.05)

    posters = [threading.Thread(target=load) for _ in range(3)]
    for t in posters:
        t.start()
    again = None
    try:
        while sum(s == 201 for _, s, _ in answers) < 20:
            time.sleep(0.05)
        children = _children(srv.proc.pid)
        assert len(children) >= 3, children  # two workers and the scheduler (and policy processes)
        killed_at = time.monotonic()
        srv.proc.kill()  # kill -9 of the master
        srv.proc.wait()
        srv.log_file.close()
        while any(_alive(c) for c in children):
            assert time.monotonic() - killed_at < 1.0, [c for c in children if _alive(c)]
            time.sleep(0.01)
        gone_in = time.monotonic() - killed_at
        started_at = time.monotonic()
        port = int(srv.url.rsplit(":", 1)[1])
        (tmp_path / "again").mkdir()
        again = _start_server_on(port, srv.env, tmp_path / "again", 2, [])
        serving_in = time.monotonic() - started_at
        # Workers may still answer in the 0.2 s before they notice: the outage begins with the first
        # request refused after the kill, and ends with the first 201 to a request sent after that.
        while not any(s == 201 and t > _down(answers, killed_at) for t, s, _ in answers):
            assert time.monotonic() - killed_at < 30
            time.sleep(0.02)
        # (the poll above saw the first 201 to a request sent after the outage began)
        next_201 = time.monotonic() - killed_at
        refused = sum(s == 0 and t > killed_at for t, s, _ in answers)
        print(
            f"children gone {gone_in:.3f} s; serving again in {serving_in:.2f} s; next 201 {next_201:.2f} s "
            f"after the kill ({refused} requests refused meanwhile)"
        )
        # The bound on a restart alone is 5 s: measured here 3 to 5 s, depending on how busy the
        # machine's two cores are (README, Operations); the bound asserted is the one on the next 201.
        assert serving_in <= 10, serving_in
        assert next_201 <= 10, next_201
        while sum(s == 201 and t > killed_at for t, s, _ in answers) < 10:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in posters:
            t.join()
    assert again is not None
    statuses = {s for _, s, _ in answers}
    assert statuses <= {0, 201, 503}, statuses  # refused while down; never a 500
    try:
        for _, status, receipt in answers:
            if status == 201:
                assert receipt is not None
                _check_receipt(receipt, vkey)
                entry = requests.get(
                    f"{again.url}/api/v1/log/entries/{receipt['seq']}", headers={"Authorization": f"Bearer {token}"}
                ).json()
                assert entry["leaf_hash"] == receipt["leaf_hash"]
        ok = again.ledger("verify", "--url", again.url, "--key", vkey, "--token", token, check=False)
        assert ok.stdout.startswith("OK:"), ok.stderr
        survivors = _children(again.proc.pid)
    finally:
        stop_server(again)
    deadline = time.monotonic() + 10
    while any(_alive(c) for c in survivors):
        assert time.monotonic() < deadline, "a child outlived a stopped server"
        time.sleep(0.05)


def _applier(srv: Server) -> int | None:
    for pid in _children(srv.proc.pid):
        try:
            if b"ledger.applier" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    return None


def _lag(srv: Server) -> dict[str, int]:
    return requests.get(f"{srv.url}/readyz", timeout=10).json()["projection_lag"]


def _wait_applied(srv: Server, seconds: float) -> float:
    """Seconds until every projection and follower has applied the log (no read asks them to)."""
    start = time.monotonic()
    while any(_lag(srv).values()):
        assert time.monotonic() - start < seconds, f"projections still behind: {_lag(srv)}"
        time.sleep(0.05)
    return time.monotonic() - start


def test_projections_follow_in_an_applier_process_that_comes_back_when_killed(
    tmp_path: Path, database_url: str
) -> None:
    """`ledger serve` applies the projections in one process of its own, not in its workers: entries
    posted are applied (every projection and the violation screen) with no read asking for them, and
    an applier killed with SIGKILL is started again."""
    srv = start_server(tmp_path, database_url, workers=2)
    try:
        token = srv.add_principal("etl", "pipeline")
        first = _applier(srv)
        assert first is not None, "no applier process beside the workers"
        for _ in range(5):
            assert _post(srv, token, run_event()).status_code == 201
        _wait_applied(srv, 10)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _applier(srv) in (None, first):
            assert time.monotonic() < deadline, "the applier was not started again"
            time.sleep(0.1)
        assert _post(srv, token, run_event()).status_code == 201
        assert _wait_applied(srv, 10) < 10
        marks = _lag(srv)
        assert set(marks) >= {"violations"} and not any(marks.values())
    finally:
        stop_server(srv)


def test_the_applier_poll_interval_is_read_and_bounded(tmp_path: Path) -> None:
    from ledger.config import Settings
    from ledger.errors import ConfigurationError

    env = {"LEDGER_DATA_DIR": str(tmp_path)}
    assert Settings.from_env(env).applier_poll_seconds == 0.2
    assert Settings.from_env({**env, "LEDGER_APPLIER_POLL_SECONDS": "0.5"}).applier_poll_seconds == 0.5
    for bad in ("0", "abc", "inf"):
        with pytest.raises(ConfigurationError, match="LEDGER_APPLIER_POLL_SECONDS"):
            Settings.from_env({**env, "LEDGER_APPLIER_POLL_SECONDS": bad})
