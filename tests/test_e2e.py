"""End to end against a real `ledger serve` (gunicorn, 2 workers) on each database: the real
openlineage-python client, `ledger verify --url` on an intact and on a tampered log, and the checkpoint
job running once per deployment. (`.ci/run` also runs the external conformance checker, when it is beside
the checkout; the suite itself needs nothing outside the repository.)"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import requests
from conftest import Server, start_server, stop_server
from events import dataset_event, run_event
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import (
    DatasetEvent,
    InputDataset,
    Job,
    JobEvent,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
    StaticDataset,
)
from openlineage.client.facet_v2 import schema_dataset, source_code_location_job
from openlineage.client.transport.http import ApiKeyTokenProvider, HttpCompression, HttpConfig, HttpTransport
from spec_ref import verify_note
from sqlalchemy import create_engine, text

PRODUCER = "https://github.com/OpenLineage/OpenLineage/tree/1.54.0/client/python"


def _client(server: Server, token: str, *, gzip: bool) -> OpenLineageClient:
    config = HttpConfig(
        url=server.url,
        auth=ApiKeyTokenProvider({"apiKey": token}),
        compression=HttpCompression.GZIP if gzip else None,
        timeout=30,
    )
    return OpenLineageClient(transport=HttpTransport(config))


def _entries(server: Server, token: str) -> list[dict]:
    out: list[dict] = []
    after = -1
    while True:
        r = requests.get(
            f"{server.url}/api/v1/log/entries",
            params={"after": after, "limit": 1000},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        r.raise_for_status()
        page = r.json()
        out += page["entries"]
        if page["next_after"] is None:
            return out
        after = page["next_after"]


def _fill(server: Server, token: str, n: int) -> None:
    h = {"Authorization": f"Bearer {token}"}
    batch = [run_event(job=f"job{i % 7}", inputs=[{"namespace": "s3://raw", "name": f"t{i}"}]) for i in range(n)]
    r = requests.post(f"{server.url}/api/v1/lineage/batch", json=batch, headers=h, timeout=60)
    assert r.status_code == 200 and r.json()["summary"]["successful"] == n, r.text
    for _ in range(5):
        assert (
            requests.post(
                f"{server.url}/api/v1/lineage", json=dataset_event(name=str(uuid.uuid4())), headers=h, timeout=30
            ).status_code
            == 201
        )


def test_openlineage_python_client_posts_to_a_real_server(server: Server) -> None:
    token = server.add_principal("airflow-prod", "pipeline")
    run_id = str(uuid.uuid4())
    job = Job(
        namespace="airflow",
        name="daily_churn.train",
        facets={
            "sourceCodeLocation": source_code_location_job.SourceCodeLocationJobFacet(
                type="git", url="https://git.example/churn", version="4f2a9c1"
            )
        },
    )
    inputs = [
        InputDataset(
            namespace="s3://lake",
            name="features/churn",
            facets={
                "schema": schema_dataset.SchemaDatasetFacet(
                    fields=[schema_dataset.SchemaDatasetFacetFields(name="customer_id", type="string")]
                )
            },
        )
    ]
    outputs = [OutputDataset(namespace="s3://models", name="churn")]
    for gzip_body, state in ((False, RunState.START), (True, RunState.COMPLETE)):
        client = _client(server, token, gzip=gzip_body)
        client.emit(
            RunEvent(
                eventType=state,
                eventTime="2026-11-21T10:00:00.000Z",
                run=Run(runId=run_id),
                job=job,
                producer=PRODUCER,
                inputs=inputs,
                outputs=outputs,
            )
        )
    client.emit(
        DatasetEvent(
            eventTime="2026-11-21T09:00:00.000Z",
            producer=PRODUCER,
            dataset=StaticDataset(namespace="s3://lake", name="raw/customers"),
        )
    )
    client.emit(
        JobEvent(eventTime="2026-11-21T09:00:00.000Z", producer=PRODUCER, job=job, inputs=inputs, outputs=outputs)
    )

    entries = [e for e in _entries(server, token) if e["header"]["kind"].startswith("openlineage.")]
    kinds = [e["header"]["kind"] for e in entries]
    assert kinds == [
        "openlineage.run_event",
        "openlineage.run_event",
        "openlineage.dataset_event",
        "openlineage.job_event",
    ]
    assert {e["header"]["principal"] for e in entries} == {"airflow-prod"}
    assert entries[0]["header"]["subject"] == f"run:{run_id}"
    assert entries[1]["payload"]["eventType"] == "COMPLETE"
    assert entries[1]["payload"]["job"]["facets"]["sourceCodeLocation"]["version"] == "4f2a9c1"
    # The same event again (the client retries, say) is stored once.
    client.emit(
        JobEvent(eventTime="2026-11-21T09:00:00.000Z", producer=PRODUCER, job=job, inputs=inputs, outputs=outputs)
    )
    assert len(_entries(server, token)) == 1 + 4  # the policy.bundle entry, then the four events


def _tamper(database_url: str, sql: str, trigger_table: str) -> None:
    """Changes a stored row behind the service's back, with the append-only trigger disabled."""
    eng = create_engine(database_url)
    with eng.begin() as c:
        if eng.dialect.name == "postgresql":
            c.execute(text(f"ALTER TABLE {trigger_table} DISABLE TRIGGER USER"))
            c.execute(text(sql))
            c.execute(text(f"ALTER TABLE {trigger_table} ENABLE TRIGGER USER"))
        else:
            triggers = c.execute(
                text("SELECT name, sql FROM sqlite_master WHERE type='trigger' AND tbl_name=:t"), {"t": trigger_table}
            ).all()
            for name, _ in triggers:
                c.execute(text(f"DROP TRIGGER {name}"))
            c.execute(text(sql))
            for _, ddl in triggers:
                c.execute(text(ddl))
    eng.dispose()


def test_verify_then_tamper(server: Server, database_url: str) -> None:
    token = server.add_principal("etl", "pipeline")
    auditor = server.add_principal("auditor", "auditor")
    _fill(server, token, 120)
    vkey = server.verifier_key()
    # An erased payload must not break verify.
    security = server.add_principal("sec", "security")
    r = requests.post(
        f"{server.url}/api/v1/log/entries/5/erasure",
        json={"reason": "GDPR request"},
        headers={"Authorization": f"Bearer {security}"},
        timeout=30,
    )
    assert r.status_code == 201, r.text

    ok = server.ledger("verify", "--url", server.url, "--key", vkey, "--token", auditor, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK: 127 entries verified")  # policy.bundle + 120 + 5 + the erasure
    assert "1 erased, 0 withheld" in ok.stdout

    # A wrong key is refused.
    other = server.ledger(
        "verify",
        "--url",
        server.url,
        "--key",
        vkey.replace("+", "x", 1).replace("x", "+", 1)[:-4] + "AAA=",
        "--token",
        auditor,
        check=False,
    )
    assert other.returncode != 0

    # A payload deleted behind the service's back (no payload.erasure entry): verify fails on it.
    _tamper(database_url, "DELETE FROM entry_payloads WHERE seq = 30", "entry_payloads")
    bad = server.ledger("verify", "--url", server.url, "--key", vkey, "--token", auditor, check=False)
    assert bad.returncode == 1, bad.stdout
    assert "entry 30: the payload is absent, and no payload.erasure entry names it" in bad.stderr

    # Alter one payload: verify names that entry.
    _tamper(
        database_url,
        "UPDATE entry_payloads SET payload = replace(payload, 'job3', 'jobX') WHERE seq = 18",
        "entry_payloads",
    )
    bad = server.ledger("verify", "--url", server.url, "--key", vkey, "--token", auditor, check=False)
    assert bad.returncode == 1, bad.stdout
    assert "entry 18: payload does not match" in bad.stderr

    # Alter a header field of an earlier entry: its leaf no longer matches the tree.
    _tamper(database_url, "UPDATE log_entries SET principal = 'mallory' WHERE seq = 9", "log_entries")
    bad = server.ledger("verify", "--url", server.url, "--key", vkey, "--token", auditor, check=False)
    assert bad.returncode == 1
    assert "entry 9: header does not hash to the stored leaf" in bad.stderr


def test_checkpoint_job_runs_once_per_deployment(tmp_path: Path, database_url: str) -> None:
    """Two hosts (two `ledger serve`, 2 workers each) share one database; the job runs once a second."""
    interval = {"LEDGER_CHECKPOINT_INTERVAL": "1"}
    a = start_server(tmp_path / "a", database_url, **interval)
    try:
        token = a.add_principal("etl", "pipeline")
        # A second host of the same deployment holds the same signing key (copied, or shared storage).
        shared_key = {"LEDGER_SIGNING_KEY": str(tmp_path / "a" / "srv" / "signing-key.pem")}
        b = (
            start_server(tmp_path / "b", database_url, **interval, **shared_key)
            if database_url.startswith("postgres")
            else None
        )
        try:
            eng = create_engine(database_url)
            with eng.connect() as c:
                before = c.execute(text("SELECT count(*) FROM checkpoints")).scalar_one()
            t0 = time.monotonic()
            while time.monotonic() - t0 < 8:  # grow the log so every run has a new size to store
                requests.post(
                    f"{a.url}/api/v1/lineage",
                    json=run_event(),
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                )
                time.sleep(0.05)
            elapsed = time.monotonic() - t0
            with eng.connect() as c:
                stored = c.execute(text("SELECT count(*) FROM checkpoints")).scalar_one() - before
                notes = [r[0] for r in c.execute(text("SELECT note FROM checkpoints"))]
            eng.dispose()
        finally:
            if b is not None:
                stop_server(b)
    finally:
        stop_server(a)
    # Once per interval (the lease allows a run every 0.9 s): never once per worker or per host.
    assert 2 <= stored <= elapsed / 0.9 + 2, stored
    vkey = a.verifier_key()
    for note in notes:
        verify_note(note, vkey)


def test_ledger_demo_runs_the_whole_story(server: Server, tmp_path: Path) -> None:
    """`ledger demo`: denied, fixed, allowed, deployed, bundle exported and verified offline."""
    out = tmp_path / "demo"
    result = server.ledger("demo", "--url", server.url, "--token", server.admin_token, "--out", str(out), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ask for production: the policy denies it" in result.stdout
    assert "no bias validation" in result.stdout
    assert "verdicts: reproducible=ok, traceable=ok, verifiable=ok" in result.stdout
    bundle = next(out.glob("bundle-*.json"))
    verify = server.ledger("verify", str(bundle), "--key", server.verifier_key(), check=False)
    assert verify.returncode == 0, verify.stderr
    tampered = bundle.read_text().replace('"auc": 0.91', '"auc": 0.97')  # report and entry alike
    bad = tmp_path / "tampered.json"
    bad.write_text(tampered)
    refused = server.ledger("verify", str(bad), "--key", server.verifier_key(), check=False)
    assert refused.returncode == 1
    assert "payload does not match" in refused.stderr
