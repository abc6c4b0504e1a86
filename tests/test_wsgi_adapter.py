"""The HTTP front's WSGI adapter (ledger.wsgi_adapter) under a real granian: a small Flask app behind
the same front as `ledger serve` (tests/wsgi_adapter_app.py) for streams, failures and closes, and a
real `ledger serve` for names with `%2F`, HEAD, chunked bodies and the log export."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from conftest import Server, free_port, start_server, stop_server
from events import run_event

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def granian(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """tests/wsgi_adapter_app.py under granian's ASGI interface, one worker; yields its URL."""
    log_path = tmp_path_factory.mktemp("granian") / "granian.log"
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    command = [sys.executable, "-m", "granian", "--interface", "asginl", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*command, "--workers", "1", "--no-ws", "wsgi_adapter_app:app"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, log_path.read_text()
                try:
                    if requests.get(url + "/stats", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _stats(url: str) -> dict[str, int]:
    return requests.get(url + "/stats", timeout=5).json()


def _wait_closed(url: str) -> dict[str, int]:
    deadline = time.monotonic() + 10
    while (s := _stats(url))["closed"] != s["started"]:
        assert time.monotonic() < deadline, s
        time.sleep(0.05)
    return s


def test_a_streamed_body_of_several_megabytes_arrives_whole_and_in_order(granian: str) -> None:
    n = 8000  # 8 MB in 1000-byte lines, so well over a hundred hops
    r = requests.get(f"{granian}/lines", params={"n": n}, timeout=30, stream=True)
    assert r.status_code == 200 and "content-length" not in r.headers  # streamed, not buffered whole
    got = r.raw.read()
    lines = got.split(b"\n")[:-1]
    assert len(got) == n * 1000 and len(lines) == n
    assert [int(line[:9]) for line in lines] == list(range(n))
    assert _wait_closed(granian)["closed"] >= 1


def test_a_stalled_then_vanished_client_stops_the_stream_and_closes_it(granian: str) -> None:
    before = _stats(granian)
    n = 200_000  # 200 MB, if anything read it all
    s = socket.create_connection(("127.0.0.1", int(granian.rsplit(":", 1)[1])), timeout=10)
    try:
        s.sendall(f"GET /lines?n={n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = 0
        while got < 1 << 20:
            got += len(s.recv(65536))
        time.sleep(1.0)  # the client reads nothing: the app must wait for it, not fill memory
        stalled = _stats(granian)["lines"] - before["lines"]
        print(f"lines produced while the client stalled: {stalled}")
        assert stalled < 30_000, stalled  # socket buffers and granian's channel: megabytes, not the 200
    finally:
        s.close()
    after = _wait_closed(granian)  # the iterable was closed (its generator's finally ran)
    assert after["started"] == before["started"] + 1
    assert after["lines"] - before["lines"] < 40_000  # and it stopped soon after the client went
    assert requests.get(f"{granian}/stats", timeout=5).status_code == 200  # the worker still answers


def test_an_exception_out_of_the_app_is_a_500_problem(granian: str) -> None:
    for path in ("/escape", "/lines?n=10&fail_at=0"):  # before anything was sent: the adapter answers
        r = requests.get(granian + path, timeout=10)
        assert r.status_code == 500, path
        assert r.headers["Content-Type"] == "application/problem+json"
        assert r.json()["title"] == "Internal Server Error"
    r = requests.get(granian + "/boom", timeout=10)  # a view's exception: Flask answers it
    assert r.status_code == 500
    # After the headers went out, the response can only end early, without the last chunk, so the
    # client sees it cut rather than complete; the stream is closed all the same.
    r = requests.get(granian + "/lines", params={"n": 5000, "fail_at": 4000}, timeout=10, stream=True)
    assert r.status_code == 200
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _ = r.content
    _wait_closed(granian)
    assert requests.get(granian + "/stats", timeout=5).status_code == 200


def test_head_sends_the_headers_of_get_and_no_body(granian: str) -> None:
    s = socket.create_connection(("127.0.0.1", int(granian.rsplit(":", 1)[1])), timeout=5)
    try:  # pipelined: the GET's answer must follow the HEAD's headers at once
        s.sendall(b"HEAD /stats HTTP/1.1\r\nHost: x\r\n\r\nGET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = b""
        while raw.count(b"\r\n\r\n") < 2 or not raw.endswith(b"}\n"):
            raw += s.recv(65536)
    finally:
        s.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    got, _, body = rest.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and got.startswith(b"HTTP/1.1 200")
    assert b"content-length: %d" % len(body) in head.lower()


def test_chunked_request_bodies_reach_the_app_whole(granian: str) -> None:
    body = os.urandom(300_000)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 7000):
            yield body[i : i + 7000]

    r = requests.post(granian + "/echo", data=chunks(), timeout=10)  # Transfer-Encoding: chunked
    assert r.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_concurrent_requests_each_get_their_own_answer(granian: str) -> None:
    bodies = [os.urandom(100 + i) for i in range(200)]

    def one(b: bytes) -> bool:
        return requests.post(granian + "/echo", data=b, timeout=10).json()["sha256"] == hashlib.sha256(b).hexdigest()

    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(one, bodies))


# --- a real `ledger serve` -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("serve")
    srv = start_server(tmp, f"sqlite:///{tmp / 'ledger.db'}", workers=1)
    try:
        yield srv
    finally:
        stop_server(srv)


def test_ledger_serve_keeps_percent_2f_in_names_apart(ledger: Server) -> None:
    token = ledger.add_principal("adapter-names", "pipeline")
    event = run_event(job="names", inputs=[{"namespace": "s3://b", "name": n} for n in ("a/b", "a%2Fb")])
    r = requests.post(f"{ledger.url}/api/v1/lineage", json=event, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    admin = {"Authorization": f"Bearer {ledger.admin_token}"}
    deadline = time.monotonic() + 10
    for segment, name in (("a%2Fb", "a/b"), ("a%252Fb", "a%2Fb")):
        while True:
            r = requests.get(f"{ledger.url}/api/v1/namespaces/s3:%2F%2Fb/datasets/{segment}", headers=admin)
            if r.status_code != 404 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r.status_code == 200 and r.json()["name"] == name, r.text


def test_ledger_serve_head_chunked_body_and_request_id(ledger: Server) -> None:
    token = ledger.add_principal("adapter-chunked", "pipeline")
    body = json.dumps(run_event(job="chunked")).encode()
    rid = f"adapter-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "X-Request-Id": rid}
    r = requests.post(f"{ledger.url}/api/v1/lineage", data=iter([body[:10], body[10:]]), headers=headers)
    assert r.status_code == 201, r.text
    assert r.headers["X-Request-Id"] == rid
    get = requests.get(f"{ledger.url}/api/v1/log/checkpoint")
    head = requests.head(f"{ledger.url}/api/v1/log/checkpoint")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(get.content))


def test_ledger_serve_streams_an_export_of_several_megabytes_whole_and_in_order(ledger: Server) -> None:
    token = ledger.add_principal("adapter-export", "pipeline")
    h = {"Authorization": f"Bearer {token}"}
    doc = {"documentation": {"_producer": "x", "_schemaURL": "x", "description": "d" * 6000}}
    for _ in range(8):  # 800 events of ~7 KB: an export of over 5 MB
        batch = [run_event(job=f"export{i % 5}", job_facets=doc) for i in range(100)]
        r = requests.post(f"{ledger.url}/api/v1/lineage/batch", json=batch, headers=h, timeout=60)
        assert r.status_code == 200 and r.json()["summary"]["successful"] == 100, r.text
    admin = {"Authorization": f"Bearer {ledger.admin_token}"}
    r = requests.get(f"{ledger.url}/api/v1/log/export", headers=admin, timeout=60)
    assert r.status_code == 200 and len(r.content) > 5_000_000
    seqs = [json.loads(line.split(b"\t")[1])["seq"] for line in r.content.splitlines()]
    assert len(seqs) >= 800 and seqs == list(range(len(seqs)))
