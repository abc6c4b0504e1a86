"""OpenLineage intake over HTTP (DESIGN.md 3.3, 4): receipts checked with the independent reference.

Every receipt is verified with `tests/spec_ref.py`, written from the specs alone, which shares no code with the
ledger: the checkpoint's signature with the log's verifier key, the inclusion proof against that
checkpoint's root, the leaf hash against the JCS bytes of the header fetched from `entry_url`, and
the payload digest against the salt and the JCS bytes of the payload.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
import rfc8785
from conftest import auth
from events import dataset, dataset_event, job_event, run_event
from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
from openlineage.client.serde import Serde
from spec_ref import leaf_hash, parse_checkpoint, verify_inclusion, verify_note

KINDS = {
    "run": ("openlineage.run_event", run_event),
    "dataset": ("openlineage.dataset_event", dataset_event),
    "job": ("openlineage.job_event", job_event),
}


def verify_receipt(client: Any, token: str, vkey: str, receipt: dict[str, Any]) -> dict[str, Any]:
    """Checks a receipt end to end with the reference; returns the entry its `entry_url` serves."""
    assert set(receipt) == {
        "seq", "leaf_hash", "integrated_time", "entry_url", "checkpoint", "inclusion_proof"
    }
    origin, size, root = parse_checkpoint(verify_note(receipt["checkpoint"], vkey))
    assert origin == "ledger.test/log"
    leaf = bytes.fromhex(receipt["leaf_hash"])
    proof = [bytes.fromhex(h) for h in receipt["inclusion_proof"]]
    assert verify_inclusion(receipt["seq"], size, leaf, proof, root)

    r = client.get(urlsplit(receipt["entry_url"]).path, headers=auth(token))
    assert r.status_code == 200, r.get_json()
    entry = r.get_json()
    header = entry["header"]
    assert header["seq"] == receipt["seq"]
    assert header["integrated_time"] == receipt["integrated_time"]
    assert header["format"] == "ledger-entry/v1"
    # DESIGN.md 3.1: leaf_hash = SHA-256(0x00 || JCS(header))
    assert leaf_hash(rfc8785.dumps(header)) == leaf
    assert entry["leaf_hash"] == receipt["leaf_hash"]
    # payload_digest = "sha256:" + hex(SHA-256(salt || JCS(payload)))
    salt = bytes.fromhex(entry["salt"])
    assert len(salt) == 32
    digest = hashlib.sha256(salt + rfc8785.dumps(entry["payload"])).hexdigest()
    assert header["payload_digest"] == "sha256:" + digest
    assert entry["erased"] is False
    return entry  # type: ignore[no-any-return]


def post(client: Any, token: str, body: Any, path: str = "/api/v1/lineage", **headers: str) -> Any:
    return client.post(path, json=body, headers={**auth(token), **headers})


def post_raw(
    client: Any, token: str, data: bytes | str, path: str = "/api/v1/lineage", *, encoding: str | None = None
) -> Any:
    headers = {**auth(token), "Content-Type": "application/json"}
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    return client.post(path, data=data, headers=headers)




# --- one event ---------------------------------------------------------------------------------


@pytest.mark.parametrize("which", sorted(KINDS))
def test_each_event_type_gets_a_verifiable_receipt(client, tokens, runtime, base, vkey, which):
    kind, build = KINDS[which]
    event = build()
    r = post(client, tokens.pipeline, event)
    assert r.status_code == 201, r.get_json()
    assert r.mimetype == "application/json"
    receipt = r.get_json()["receipt"]
    assert receipt["seq"] == base
    entry = verify_receipt(client, tokens.pipeline, vkey, receipt)
    assert entry["payload"] == event  # stored as received
    assert entry["header"]["kind"] == kind
    assert entry["header"]["principal"] == "etl-nightly"
    expected_subject = {
        "run": f"run:{event.get('run', {}).get('runId')}",
        "dataset": "dataset:s3://raw:customers",
        "job": "job:etl:clean_customers",
    }[which]
    assert entry["header"]["subject"] == expected_subject
    assert runtime.ledger.size() == base + 1


def test_receipts_of_successive_events_verify_against_growing_trees(client, tokens, runtime, base, vkey):
    seen = []
    for i in range(7):
        event = [run_event, dataset_event, job_event][i % 3]()
        if "dataset" in event:
            event["dataset"]["name"] = f"table_{i}"
        r = post(client, tokens.pipeline, event)
        assert r.status_code == 201, r.get_json()
        receipt = r.get_json()["receipt"]
        assert receipt["seq"] == base + i
        _, size, _ = parse_checkpoint(verify_note(receipt["checkpoint"], vkey))
        assert size == base + i + 1
        verify_receipt(client, tokens.pipeline, vkey, receipt)
        seen.append(receipt["integrated_time"])
    assert seen == sorted(seen)
    assert runtime.ledger.size() == base + 7


def test_header_principal_is_the_authenticated_principal(client, tokens, vkey):
    r = post(client, tokens.admin, run_event())
    assert r.status_code == 201
    entry = verify_receipt(client, tokens.admin, vkey, r.get_json()["receipt"])
    assert entry["header"]["principal"] == "root"


def test_event_claiming_another_principal_is_still_recorded_under_the_caller(client, tokens, vkey):
    event = run_event(run_facets={"x": {"principal": "someone-else"}})
    event["principal"] = "someone-else"
    r = post(client, tokens.pipeline, event)
    assert r.status_code == 201
    entry = verify_receipt(client, tokens.pipeline, vkey, r.get_json()["receipt"])
    assert entry["header"]["principal"] == "etl-nightly"


def test_gzip_body_is_accepted(client, tokens, vkey):
    event = run_event(inputs=[dataset("s3://raw", "customers")], outputs=[dataset("s3://clean", "customers")])
    body = gzip.compress(json.dumps(event).encode())
    r = post_raw(client, tokens.pipeline, body, encoding="gzip")
    assert r.status_code == 201, r.get_json()
    entry = verify_receipt(client, tokens.pipeline, vkey, r.get_json()["receipt"])
    assert entry["payload"] == event


def test_gzip_body_of_several_members_is_read_whole(client, tokens, vkey):
    """Regression: only the first gzip member was inflated, so the rest of the body was ignored."""
    events = [job_event(name=f"job_{i}") for i in range(3)]
    text = json.dumps(events).encode()
    cut = len(text) // 2
    body = gzip.compress(text[:cut]) + gzip.compress(text[cut:])  # RFC 1952: a series of members
    r = post_raw(client, tokens.pipeline, body, "/api/v1/lineage/batch", encoding="gzip")
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["summary"] == {"received": 3, "successful": 3, "failed": 0}


def test_event_from_the_openlineage_python_client_is_accepted(client, tokens, vkey):
    """The bytes the real client sends (Serde.to_json of event_v2 objects), gzipped as its transport does."""
    event = RunEvent(
        eventType=RunState.COMPLETE,
        eventTime=datetime.now(UTC).isoformat(),
        run=Run(runId=str(uuid.uuid4())),
        job=Job(namespace="etl", name="daily.load"),
        producer="https://github.com/OpenLineage/OpenLineage/tree/1.54.0/client/python",
    )
    text = Serde.to_json(event)
    r = post_raw(client, tokens.pipeline, gzip.compress(text.encode()), encoding="gzip")
    assert r.status_code == 201, r.get_json()
    entry = verify_receipt(client, tokens.pipeline, vkey, r.get_json()["receipt"])
    assert entry["payload"] == json.loads(text)
    assert entry["header"]["subject"] == f"run:{event.run.runId}"


def test_same_event_again_returns_the_original_receipt_and_is_stored_once(client, tokens, runtime, vkey):
    event = run_event()
    first = post(client, tokens.pipeline, event)
    assert first.status_code == 201
    original = first.get_json()["receipt"]
    # the tree grows in between, so the repeat's proof is against a later checkpoint
    assert post(client, tokens.pipeline, dataset_event()).status_code == 201
    assert post(client, tokens.pipeline, job_event()).status_code == 201
    size = runtime.ledger.size()

    # same canonical bytes: members reordered, other whitespace
    reordered = json.dumps(dict(reversed(list(event.items()))), indent=3)
    again = post_raw(client, tokens.pipeline, reordered)
    assert again.status_code == 200, again.get_json()
    repeat = again.get_json()["receipt"]
    for k in ("seq", "leaf_hash", "integrated_time", "entry_url"):
        assert repeat[k] == original[k]
    assert runtime.ledger.size() == size
    _, checkpoint_size, _ = parse_checkpoint(verify_note(repeat["checkpoint"], vkey))
    assert checkpoint_size == size
    verify_receipt(client, tokens.pipeline, vkey, repeat)

    # a third time, from another principal: still the one entry
    third = post(client, tokens.admin, event)
    assert third.status_code == 200
    assert third.get_json()["receipt"]["seq"] == original["seq"]
    assert runtime.ledger.size() == size


def test_events_differing_in_one_member_are_both_stored(client, tokens, runtime, base):
    event = run_event()
    assert post(client, tokens.pipeline, event).status_code == 201
    other = json.loads(json.dumps(event))
    other["eventType"] = "FAIL"
    assert post(client, tokens.pipeline, other).status_code == 201
    assert runtime.ledger.size() == base + 2


# --- batches -----------------------------------------------------------------------------------


def test_batch_of_valid_events_succeeds(client, tokens, runtime, base, vkey):
    events = [run_event(), dataset_event(), job_event(), run_event(event_type="START")]
    r = post(client, tokens.pipeline, events, "/api/v1/lineage/batch")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["status"] == "success"
    assert body["summary"] == {"received": 4, "successful": 4, "failed": 0}
    assert body["failed_events"] == []
    assert [x["index"] for x in body["receipts"]] == [0, 1, 2, 3]
    assert sorted(x["receipt"]["seq"] for x in body["receipts"]) == [base, base + 1, base + 2, base + 3]
    for x in body["receipts"]:
        entry = verify_receipt(client, tokens.pipeline, vkey, x["receipt"])
        assert entry["payload"] == events[x["index"]]
    assert runtime.ledger.size() == base + 4


def test_batch_records_valid_events_and_reports_invalid_ones_by_index(client, tokens, runtime, base, vkey):
    no_time = run_event()
    del no_time["eventTime"]
    bad_type = run_event()
    bad_type["eventType"] = "FINISHED"
    events = [run_event(), {"x": 1}, dataset_event(), no_time, 5, job_event(), bad_type, None, []]
    r = post(client, tokens.pipeline, events, "/api/v1/lineage/batch")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["status"] == "partial_success"
    assert body["summary"] == {"received": 9, "successful": 3, "failed": 6}
    failed = {f["index"]: f for f in body["failed_events"]}
    assert sorted(failed) == [1, 3, 4, 6, 7, 8]
    assert all(f["reason"] for f in failed.values())
    assert "eventTime" in failed[3]["reason"]
    assert failed[3]["field"] == "/eventTime"
    assert "eventType" in failed[6]["reason"]
    recorded = {x["index"]: x["receipt"] for x in body["receipts"]}
    assert sorted(recorded) == [0, 2, 5]
    # nothing silently dropped: every index is either recorded or reported
    assert sorted([*failed, *recorded]) == list(range(len(events)))
    for i, receipt in recorded.items():
        assert verify_receipt(client, tokens.pipeline, vkey, receipt)["payload"] == events[i]
    assert runtime.ledger.size() == base + 3


def test_batch_duplicates_are_stored_once(client, tokens, runtime, base, vkey):
    single = job_event(name="earlier")
    earlier = post(client, tokens.pipeline, single).get_json()["receipt"]
    a, b = run_event(), dataset_event()
    events = [a, b, a, json.loads(json.dumps(a)), single, b]
    r = post(client, tokens.pipeline, events, "/api/v1/lineage/batch")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["status"] == "success"
    assert body["summary"] == {"received": 6, "successful": 6, "failed": 0}
    seqs = {x["index"]: x["receipt"]["seq"] for x in body["receipts"]}
    assert seqs[0] == seqs[2] == seqs[3]
    assert seqs[1] == seqs[5]
    assert seqs[4] == earlier["seq"]
    assert len({seqs[0], seqs[1], seqs[4]}) == 3
    assert runtime.ledger.size() == base + 3
    for x in body["receipts"]:
        verify_receipt(client, tokens.pipeline, vkey, x["receipt"])


def test_empty_batch_succeeds_with_nothing_recorded(client, tokens, runtime, base):
    r = post(client, tokens.pipeline, [], "/api/v1/lineage/batch")
    assert r.status_code == 200
    assert r.get_json() == {
        "status": "success",
        "summary": {"received": 0, "successful": 0, "failed": 0},
        "failed_events": [],
        "receipts": [],
    }
    assert runtime.ledger.size() == base


@pytest.mark.parametrize("body", ['{"eventTime": "x"}', '"events"', "3", "null"])
def test_batch_that_is_not_an_array_is_refused(client, tokens, runtime, base, body):
    r = post_raw(client, tokens.pipeline, body, "/api/v1/lineage/batch")
    assert r.status_code == 400
    assert r.mimetype == "application/problem+json"
    assert r.get_json()["field"] == "/"
    assert runtime.ledger.size() == base


def test_large_batches_round_trip_every_byte(client, tokens, runtime, vkey):
    """Batches big enough for the bulk path (COPY on PostgreSQL) store exactly what was posted: text
    with tabs, newlines, backslashes, quotes and non-ASCII, in payloads and in projected facets."""
    from conftest import projection_snapshot

    from ledger.projections import rebuild_all
    from ledger.tlog.entry import EntryHeader, canonical_json, check_payload

    tricky = 'tab\there\nnew line \\N back\\slash "quoted" \u00e9\u4e2d\U0001f600 \\\\. end'
    events = [
        run_event(
            job=f"job_{i}",
            inputs=[dataset("s3://in", f"raw_{i}", documentation={"_producer": "p", "_schemaURL": "s", "d": tricky})],
            outputs=[dataset("s3://out", f"clean_{i}", schema={"fields": [{"name": tricky, "type": "STRING"}]})],
            job_facets={"sql": {"_producer": "p", "_schemaURL": "s", "query": f"SELECT '{tricky}' -- {i}"}},
        )
        for i in range(60)
    ]
    r = client.post("/api/v1/lineage/batch", json=events, headers=auth(tokens.pipeline))
    assert r.status_code == 200 and r.get_json()["summary"]["successful"] == 60
    receipts = sorted(r.get_json()["receipts"], key=lambda x: x["index"])
    for rec, ev in zip(receipts, events, strict=True):
        e = client.get(f"/api/v1/log/entries/{rec['receipt']['seq']}", headers=auth(tokens.auditor)).get_json()
        assert e["payload"] == ev
        check_payload(EntryHeader.from_json(e["header"]), bytes.fromhex(e["salt"]), canonical_json(e["payload"]))
        assert EntryHeader.from_json(e["header"]).leaf_hash().hex() == e["leaf_hash"] == rec["receipt"]["leaf_hash"]
    ds = client.get("/api/v1/namespaces/s3%3A%2F%2Fout/datasets/clean_7", headers=auth(tokens.auditor)).get_json()
    assert ds["fields"][0]["name"] == tricky
    job = client.get("/api/v1/namespaces/etl/jobs/job_7", headers=auth(tokens.auditor)).get_json()
    assert job["facets"]["sql"]["query"] == f"SELECT '{tricky}' -- 7"
    state = projection_snapshot(runtime)
    rebuild_all(runtime.projector)
    assert projection_snapshot(runtime) == state
