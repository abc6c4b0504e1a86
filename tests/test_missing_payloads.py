"""A missing payload is an erasure or an error (issue 9, point 2), on SQLite and PostgreSQL: reads and
the export tell erased (with the erasure's seq) from withheld (with the reason) from missing; a
violation whose payload is gone stays open until resolved; verify fails on a payload deleted behind
the service's back."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from conftest import auth
from events import run_event
from sqlalchemy import create_engine, text

from ledger.verify import EntryVerificationError, _Erasures, check_line


def delete_payload(database_url: str, seq: int) -> None:
    """Deletes a payload row behind the service's back: triggers bypassed, no payload.erasure entry."""
    eng = create_engine(database_url)
    with eng.begin() as c:
        if eng.dialect.name == "postgresql":
            c.execute(text("ALTER TABLE entry_payloads DISABLE TRIGGER USER"))
            c.execute(text("DELETE FROM entry_payloads WHERE seq = :s"), {"s": seq})
            c.execute(text("ALTER TABLE entry_payloads ENABLE TRIGGER USER"))
        else:
            triggers = c.execute(
                text("SELECT name, sql FROM sqlite_master WHERE type='trigger' AND tbl_name='entry_payloads'")
            ).all()
            for name, _ in triggers:
                c.execute(text(f"DROP TRIGGER {name}"))
            c.execute(text("DELETE FROM entry_payloads WHERE seq = :s"), {"s": seq})
            for _, ddl in triggers:
                c.execute(text(ddl))
    eng.dispose()


def _export(client, token: str) -> dict[int, list[bytes]]:  # type: ignore[no-untyped-def]
    r = client.get("/api/v1/log/export", headers=auth(token))
    assert r.status_code == 200
    return {json.loads(f[1])["seq"]: f for f in (line.split(b"\t") for line in r.get_data().splitlines())}


def test_reads_and_export_tell_erased_withheld_and_missing_apart(
    client, tokens, runtime, pipeline_runs, database_url
) -> None:
    # The first lineage entry: erased through the service.
    lineage = [e.header.seq for e in runtime.ledger.entries(kind="openlineage.run_event")]
    erased, deleted = lineage[0], lineage[1]
    r = client.post(f"/api/v1/log/entries/{erased}/erasure", json={"reason": "GDPR"}, headers=auth(tokens.security))
    erasure_seq = r.get_json()["receipt"]["seq"]
    e = client.get(f"/api/v1/log/entries/{erased}", headers=auth(tokens.auditor)).get_json()
    assert e["erased"] is True and e["erasure_seq"] == erasure_seq and e["payload"] is None and "withheld" not in e
    line = _export(client, tokens.auditor)[erased]
    assert line[2:4] == [b"-", b"-"] and json.loads(line[4]) == {"erased": True, "erasure_seq": erasure_seq}
    check_line(erased, b"\t".join(line))

    # Withheld: a principal not cleared for pii, once the raw data is classified.
    r = client.post(
        f"/api/v1/datasets/{quote('s3://raw', safe='')}/customers/classification",
        json={"tags": ["pii"], "justification": "emails"},
        headers=auth(tokens.security),
    )
    assert r.status_code == 201
    runtime.projector.sync_to_head()
    withheld = next(
        e["header"]["seq"]
        for e in client.get("/api/v1/log/entries?kind=openlineage.run_event", headers=auth(tokens.auditor)).get_json()[
            "entries"
        ]
        if e.get("withheld")
    )
    e = client.get(f"/api/v1/log/entries/{withheld}", headers=auth(tokens.auditor)).get_json()
    assert e["erased"] is False and "erasure_seq" not in e and "pii" in e["withheld"]
    line = _export(client, tokens.auditor)[withheld]
    assert line[2:4] == [b"-", b"-"] and "pii" in json.loads(line[4])["withheld"]
    assert check_line(withheld, b"\t".join(line))[2] == {"withheld": json.loads(line[4])["withheld"]}

    # Deleted behind the service's back: neither erased nor withheld; verify fails on it.
    delete_payload(database_url, deleted)
    e = client.get(f"/api/v1/log/entries/{deleted}", headers=auth(tokens.admin)).get_json()
    assert e["erased"] is False and "erasure_seq" not in e and "no payload.erasure entry" in e["missing"]
    line = _export(client, tokens.admin)[deleted]
    assert "missing" in json.loads(line[4])
    with pytest.raises(EntryVerificationError, match=r"no payload\.erasure entry names it"):
        check_line(deleted, b"\t".join(line))
    # A line that claims an erasure is held to it: the erasure entry must exist and name the entry.
    forged = b"\t".join([*line[:4], json.dumps({"erased": True, "erasure_seq": erasure_seq}).encode()])
    claims = _Erasures()

    def replay() -> None:
        for seq in range(erasure_seq + 1):
            if seq == deleted:
                claims.erased(deleted, check_line(deleted, forged)[2]["erasure_seq"])  # type: ignore[index]
            claims.entry(seq, runtime.ledger.entry(seq).header.to_json())

    with pytest.raises(EntryVerificationError, match=f"entry {deleted}: said erased by entry {erasure_seq}, which"):
        replay()


def test_a_violation_closes_only_through_a_resolution(client, tokens, runtime, pipeline_runs, database_url) -> None:
    client.post(
        f"/api/v1/datasets/{quote('s3://raw', safe='')}/customers/classification",
        json={"tags": ["pii"], "justification": "emails"},
        headers=auth(tokens.security),
    )
    event = run_event(
        job="retrain",
        namespace="ml",
        inputs=[{"namespace": "s3://features", "name": "churn"}],
        outputs=[{"namespace": "s3://models", "name": "churn"}],
    )
    assert client.post("/api/v1/lineage", json=event, headers=auth(tokens.pipeline)).status_code == 201
    runtime.projector.sync_to_head()
    listed = client.get("/api/v1/violations", headers=auth(tokens.security)).get_json()["violations"]
    assert len(listed) == 1
    seq = listed[0]["seq"]

    # Its payload deleted behind the service's back: the violation stays open (known by its header).
    delete_payload(database_url, seq)
    still = client.get("/api/v1/violations", headers=auth(tokens.security)).get_json()["violations"]
    assert [v["seq"] for v in still] == [seq] and still[0]["dataset"] == "s3://features:churn"
    # Only a recorded resolution closes it.
    r = client.post(f"/api/v1/violations/{seq}/resolution", json={"reason": "DPO ok"}, headers=auth(tokens.security))
    assert r.status_code == 201, r.get_json()
    assert client.get("/api/v1/violations", headers=auth(tokens.security)).get_json()["violations"] == []


def test_an_erased_violation_stays_open(client, tokens, runtime, pipeline_runs) -> None:
    client.post(
        f"/api/v1/datasets/{quote('s3://raw', safe='')}/customers/classification",
        json={"tags": ["pii"], "justification": "emails"},
        headers=auth(tokens.security),
    )
    event = run_event(
        job="retrain",
        namespace="ml",
        inputs=[{"namespace": "s3://features", "name": "churn"}],
        outputs=[{"namespace": "s3://models", "name": "churn"}],
    )
    client.post("/api/v1/lineage", json=event, headers=auth(tokens.pipeline))
    runtime.projector.sync_to_head()
    seq = client.get("/api/v1/violations", headers=auth(tokens.security)).get_json()["violations"][0]["seq"]
    r = client.post(f"/api/v1/log/entries/{seq}/erasure", json={"reason": "GDPR"}, headers=auth(tokens.security))
    assert r.status_code == 201
    runtime.projector.sync_to_head()
    assert [
        v["seq"] for v in client.get("/api/v1/violations", headers=auth(tokens.security)).get_json()["violations"]
    ] == [seq]
