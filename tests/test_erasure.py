"""Erasure (security role): payload and salt go, a payload.erasure entry records it, and every
proof, bundle and `ledger verify` still holds; on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from conftest import auth
from events import run_event
from pipeline import build_pipeline, registration, validation

from ledger.governance.bundle import verify_bundle


def test_erasure_keeps_every_proof(client, tokens, runtime) -> None:
    import spec_ref

    receipt = client.post("/api/v1/lineage", json=run_event(), headers=auth(tokens.pipeline)).get_json()["receipt"]
    seq = receipt["seq"]
    before = client.get(f"/api/v1/log/entries/{seq}", headers=auth(tokens.auditor)).get_json()
    assert before["erased"] is False and before["payload"] is not None

    for token, status in ((tokens.pipeline, 403), (tokens.auditor, 403), (tokens.admin, 403)):
        assert (
            client.post(f"/api/v1/log/entries/{seq}/erasure", json={"reason": "x"}, headers=auth(token)).status_code
            == status
        )
    r = client.post(
        f"/api/v1/log/entries/{seq}/erasure", json={"reason": "GDPR art. 17 request #42"}, headers=auth(tokens.security)
    )
    assert r.status_code == 201, r.get_json()
    erasure = runtime.ledger.entry(r.get_json()["receipt"]["seq"])
    assert erasure.header.kind == "payload.erasure" and erasure.header.subject == f"entry:{seq}"
    assert erasure.payload == {"seq": seq, "reason": "GDPR art. 17 request #42"}

    after = client.get(f"/api/v1/log/entries/{seq}", headers=auth(tokens.auditor)).get_json()
    erasure_seq = r.get_json()["receipt"]["seq"]
    assert after == {**before, "payload": None, "salt": None, "erased": True, "erasure_seq": erasure_seq}
    # The header still hashes to the leaf, and the leaf is still in the signed tree.
    note = client.get("/api/v1/log/checkpoint").get_data(as_text=True)
    _, size, root = spec_ref.parse_checkpoint(spec_ref.verify_note(note, runtime.ledger.signer.verifier.line()))
    proof = client.get(
        f"/api/v1/log/proof/inclusion?seq={seq}&tree_size={size}", headers=auth(tokens.auditor)
    ).get_json()
    import rfc8785

    leaf = spec_ref.leaf_hash(rfc8785.dumps(after["header"]))
    assert leaf.hex() == after["leaf_hash"]
    assert spec_ref.verify_inclusion(seq, size, leaf, [bytes.fromhex(h) for h in proof["hashes"]], root)

    # Twice, an unknown seq, or an erasure record itself: refused, nothing written.
    size_now = runtime.ledger.size()
    assert (
        client.post(
            f"/api/v1/log/entries/{seq}/erasure", json={"reason": "again"}, headers=auth(tokens.security)
        ).status_code
        == 409
    )
    assert (
        client.post(
            f"/api/v1/log/entries/{erasure.header.seq}/erasure", json={"reason": "x"}, headers=auth(tokens.security)
        ).status_code
        == 409
    )
    assert (
        client.post(
            "/api/v1/log/entries/99999/erasure", json={"reason": "x"}, headers=auth(tokens.security)
        ).status_code
        == 404
    )
    assert client.post(f"/api/v1/log/entries/{seq}/erasure", json={}, headers=auth(tokens.security)).status_code == 400
    assert runtime.ledger.size() == size_now


def test_bundle_with_an_erased_entry_still_verifies(client, tokens, runtime) -> None:
    def post(event: dict[str, Any]) -> None:
        assert client.post("/api/v1/lineage", json=event, headers=auth(tokens.pipeline)).status_code == 201

    runs = build_pipeline(post)
    base = "/api/v1/models/churn/versions"
    assert client.post(base, json=registration(runs["train"]), headers=auth(tokens.pipeline)).status_code == 201
    v = client.post(f"{base}/3/validations", json=validation("performance"), headers=auth(tokens.pipeline)).get_json()
    run_entry = runtime.ledger.entries(kind="openlineage.run_event", limit=1)[0].header.seq
    for seq in (run_entry, v["receipt"]["seq"]):
        assert (
            client.post(
                f"/api/v1/log/entries/{seq}/erasure", json={"reason": "test"}, headers=auth(tokens.security)
            ).status_code
            == 201
        )
    bundle = client.get("/api/v1/provenance/models/churn/versions/3/bundle", headers=auth(tokens.auditor)).get_json()
    erased = [e for e in bundle["entries"] if e["erased"]]
    assert {e["header"]["seq"] for e in erased} == {run_entry, v["receipt"]["seq"]}
    # The report names each erasure (when, by whom, why); the erased validation no longer counts.
    report = bundle["report"]
    assert [(e["seq"], e["kind"], e["erased_by"], e["reason"]) for e in report["erasures"]] == [
        (run_entry, "openlineage.run_event", "sec", "test"),
        (v["receipt"]["seq"], "validation.result", "sec", "test"),
    ]
    records = {e["erasure_seq"] for e in report["erasures"]}
    assert records <= set(report["entries"]) and None not in records
    assert report["validations"] == []
    assert "no performance validation" in " ".join(report["verdicts"]["verifiable"]["missing"])
    # Each erasure replayed only the projections its entry feeds; a full rebuild agrees.
    from conftest import projection_snapshot

    from ledger.projections import rebuild_all

    state = projection_snapshot(runtime)
    rebuild_all(runtime.projector)
    assert projection_snapshot(runtime) == state
    assert "3 entries" not in verify_bundle(bundle, runtime.ledger.signer.verifier.line())


def test_erased_content_leaves_every_read_and_rebuild_agrees(client, tokens, runtime) -> None:
    """What an erasure removes from the log is gone from the projections too (dataset, job and run
    reads), and `ledger rebuild` afterwards reproduces exactly the state the erasure left."""
    from conftest import projection_snapshot
    from events import dataset

    from ledger.projections import rebuild_all

    secret = "SELECT * FROM patients WHERE ssn = '078-05-1120'"
    run_id = "0192b6a1-3c4d-7e8f-9a0b-1c2d3e4f5a6b"
    base = {"run_id": run_id, "namespace": "etl", "job": "load_patients"}
    start = run_event(
        **base,
        event_type="START",
        job_facets={"sql": {"_producer": "p", "_schemaURL": "s", "query": secret}},
        outputs=[dataset("s3://lake", "patients", description={"_producer": "p", "_schemaURL": "s", "note": secret})],
    )
    done = run_event(**base, outputs=[dataset("s3://lake", "patients")])
    seqs = []
    for ev in (start, done):
        r = client.post("/api/v1/lineage", json=ev, headers=auth(tokens.pipeline))
        assert r.status_code == 201
        seqs.append(r.get_json()["receipt"]["seq"])

    reads = (
        "/api/v1/namespaces/etl/jobs/load_patients",
        "/api/v1/namespaces/s3%3A%2F%2Flake/datasets/patients",
        f"/api/v1/jobs/runs/{run_id}",
    )

    def served() -> str:
        out = []
        for path in reads:
            r = client.get(path, headers=auth(tokens.auditor))
            assert r.status_code == 200, (path, r.get_json())
            out.append(r.get_data(as_text=True))
        return "\n".join(out)

    assert secret in served()
    r = client.post(f"/api/v1/log/entries/{seqs[0]}/erasure", json={"reason": "GDPR"}, headers=auth(tokens.security))
    assert r.status_code == 201
    after = served()
    assert secret not in after and "078-05-1120" not in after
    run = client.get(f"/api/v1/jobs/runs/{run_id}", headers=auth(tokens.auditor)).get_json()
    assert run["state"] == "COMPLETED"  # what the remaining event says still stands

    state = projection_snapshot(runtime)
    assert "078-05-1120" not in repr(state)
    rebuild_all(runtime.projector)
    assert projection_snapshot(runtime) == state


def test_erasing_what_later_entries_build_on(client, tokens, runtime) -> None:
    """Later entries may name what only the erased one recorded: a classification of its dataset, the
    validations of its model version. The erasure goes through, the classification still holds for
    what later events say of that dataset, and a rebuild agrees."""
    from conftest import projection_snapshot
    from events import dataset

    from ledger.projections import rebuild_all

    def post(event: dict[str, Any]) -> int:
        r = client.post("/api/v1/lineage", json=event, headers=auth(tokens.pipeline))
        assert r.status_code == 201, r.get_json()
        return int(r.get_json()["receipt"]["seq"])

    first = post(run_event(job="export", outputs=[dataset("s3://crm", "contacts")]))
    r = client.post(
        "/api/v1/datasets/s3%3A%2F%2Fcrm/contacts/classification",
        json={"tags": ["pii"], "justification": "names and phone numbers", "declassify": False},
        headers=auth(tokens.security),
    )
    assert r.status_code == 201
    post(run_event(job="report", inputs=[dataset("s3://crm", "contacts")], outputs=[dataset("s3://bi", "calls")]))

    def tags(ns: str, name: str) -> list[str]:
        path = f"/api/v1/namespaces/{quote(ns, safe='')}/datasets/{quote(name, safe='')}"
        d = client.get(path, headers=auth(tokens.security)).get_json()
        return sorted(d["tags"])

    assert tags("s3://crm", "contacts") == ["pii"] and tags("s3://bi", "calls") == ["pii"]
    r = client.post(f"/api/v1/log/entries/{first}/erasure", json={"reason": "GDPR"}, headers=auth(tokens.security))
    assert r.status_code == 201, r.get_json()
    assert tags("s3://crm", "contacts") == ["pii"] and tags("s3://bi", "calls") == ["pii"]

    # A model version with a validation, whose registration is then erased.
    runs = build_pipeline(post)
    base = "/api/v1/models/churn/versions"
    reg = client.post(base, json=registration(runs["train"]), headers=auth(tokens.pipeline))
    assert reg.status_code == 201
    v = client.post(f"{base}/3/validations", json=validation("performance"), headers=auth(tokens.pipeline))
    assert v.status_code == 201
    seq = reg.get_json()["receipt"]["seq"]
    r = client.post(f"/api/v1/log/entries/{seq}/erasure", json={"reason": "test"}, headers=auth(tokens.security))
    assert r.status_code == 201, r.get_json()
    assert client.get(f"{base}/3", headers=auth(tokens.auditor)).status_code == 404

    state = projection_snapshot(runtime)
    rebuild_all(runtime.projector)
    assert projection_snapshot(runtime) == state


def test_erasure_answers_at_once_and_reads_wait_for_the_replay(client, tokens, runtime) -> None:
    """The erasure request appends and deletes (milliseconds under the append lock) and returns; the
    projector replays what the payload fed. Until it has, a read that must see the erasure waits,
    bounded, and answers 503 with Retry-After, never the erased content; the log's own reads do
    not wait. PostgreSQL only: on SQLite the projector's lock is the one write lock itself."""
    import threading
    import time

    import pytest
    from events import dataset

    if runtime.db.is_sqlite:
        pytest.skip("SQLite has one writer: the projector's lock is the append lock there")
    secret = "diagnosis: 078-05-1120"
    ev = run_event(
        outputs=[dataset("s3://lake", "visits", description={"_producer": "p", "_schemaURL": "s", "n": secret})]
    )
    seq = client.post("/api/v1/lineage", json=ev, headers=auth(tokens.pipeline)).get_json()["receipt"]["seq"]
    plain = run_event(outputs=[dataset("s3://lake", "visits")])  # stays: the dataset outlives the erasure
    assert client.post("/api/v1/lineage", json=plain, headers=auth(tokens.pipeline)).status_code == 201
    path = "/api/v1/namespaces/s3%3A%2F%2Flake/datasets/visits"
    assert secret in client.get(path, headers=auth(tokens.auditor)).get_data(as_text=True)

    held, release = threading.Event(), threading.Event()

    def hold_projector() -> None:  # as a long replay would
        with runtime.db.projecting() as session:
            assert session is not None
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_projector)
    holder.start()
    try:
        assert held.wait(10)
        t0 = time.monotonic()
        r = client.post(f"/api/v1/log/entries/{seq}/erasure", json={"reason": "GDPR"}, headers=auth(tokens.security))
        assert r.status_code == 201, r.get_json()
        assert time.monotonic() - t0 < 2  # not held by the projector
        assert client.get("/api/v1/log/checkpoint").status_code == 200  # the log's own reads go on
        waiting = client.get(path, headers=auth(tokens.auditor))
        assert waiting.status_code == 503, waiting.get_data(as_text=True)
        assert waiting.headers["Retry-After"] and waiting.mimetype == "application/problem+json"
        assert secret not in waiting.get_data(as_text=True)
    finally:
        release.set()
        holder.join()
    after = client.get(path, headers=auth(tokens.auditor))
    assert after.status_code == 200 and secret not in after.get_data(as_text=True)
    entry = client.get(f"/api/v1/log/entries/{seq}", headers=auth(tokens.auditor)).get_json()
    assert entry["erased"] is True and entry["payload"] is None
