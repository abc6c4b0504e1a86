"""A bundle proves every fact of its report, or fails (issue 9, point 1), on SQLite and PostgreSQL.

The bundle is a real one: a failed performance validation, a denied promotion, a refused deployment,
an approval, a classification and an erased entry. Every value of its report is changed in turn,
every item deleted, every payload nulled: `verify_bundle` rejects each mutant.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import auth
from pipeline import build_pipeline, registration, validation

from ledger.governance.audit import REPLAY, derive_report
from ledger.governance.bundle import BundleError, WithheldError, check_bundle, verify_bundle
from ledger.projections import PROJECTIONS

BASE = "/api/v1/models/churn/versions"


def test_derivation_replays_the_projections_in_their_order() -> None:
    assert [(kinds, apply) for kinds, apply in REPLAY] == [(p.kinds, p.apply) for p in PROJECTIONS]


@pytest.fixture
def bundle(client, tokens, runtime) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    def post(path: str, body: Any, token: str, status: int = 201) -> dict[str, Any]:
        r = client.post(path, json=body, headers=auth(token))
        assert r.status_code == status, r.get_json()
        return r.get_json()  # type: ignore[no-any-return]

    runs = build_pipeline(lambda ev: post("/api/v1/lineage", ev, tokens.pipeline))
    post(
        "/api/v1/datasets/s3%3A%2F%2Fraw/customers/classification",
        {"tags": ["internal"], "justification": "CRM data"},
        tokens.security,
    )
    registrar = runtime.principals.create("ml-registrar", roles=["pipeline"])[1]
    post(BASE, registration(runs["train"]), registrar)
    post(f"{BASE}/3/validations", validation("performance", auc=0.7), tokens.pipeline)  # fails its threshold
    post(f"{BASE}/3/validations", validation("bias"), tokens.pipeline)
    post(f"{BASE}/3/approvals", {"stage": "production", "comment": "ok"}, tokens.approver)
    post(f"{BASE}/3/promotions", {"stage": "production"}, tokens.pipeline, 403)  # denied
    post(f"{BASE}/3/deployments", {"stage": "production", "environment": "prod-eu"}, tokens.pipeline, 403)
    staging = post(f"{BASE}/3/approvals", {"stage": "staging", "comment": "later erased"}, tokens.approver)
    erased = staging["receipt"]["seq"]
    post(f"/api/v1/log/entries/{erased}/erasure", {"reason": "GDPR art. 17"}, tokens.security)
    runtime.projector.sync_to_head()
    doc = client.get("/api/v1/provenance/models/churn/versions/3/bundle", headers=auth(tokens.auditor)).get_json()
    report = doc["report"]
    assert [v["passed"] for v in report["validations"]] == [False, True]
    assert report["decisions"][0]["allowed"] is False and report["deployments"][0]["refused"] is True
    assert [e["seq"] for e in report["erasures"]] == [erased]
    assert report["classifications"] and report["approvals"]
    assert not any(e.get("withheld") for e in doc["entries"])
    return doc  # type: ignore[no-any-return]


def test_the_bundle_report_is_the_live_report(client, tokens, runtime, bundle) -> None:  # type: ignore[no-untyped-def]
    """The report a bundle proves is the one the service serves (nothing is lost by deriving it)."""
    live = client.get("/api/v1/provenance/models/churn/versions/3", headers=auth(tokens.auditor)).get_json()
    proven = bundle["report"]
    assert {**proven, "verdicts": None} == {**live, "verdicts": None}
    assert proven["verdicts"] == live["verdicts"]
    result = check_bundle(bundle, runtime.ledger.signer.verifier.line())
    assert result.erased == [e["seq"] for e in proven["erasures"]] and not result.unproven


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) in a JSON document, containers included."""
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*path, i))


def _other(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.5
    if isinstance(value, str):
        return value + "x"
    if value is None:
        return "x"
    if isinstance(value, list):
        return [*value, "x"]
    return {**value, "forged": True}


def _at(doc: dict[str, Any], path: tuple[Any, ...]) -> tuple[Any, Any]:
    parent: Any = doc
    for k in path[:-1]:
        parent = parent[k]
    return parent, path[-1]


def _mutants(bundle: dict[str, Any]) -> Iterator[tuple[str, Callable[[dict[str, Any]], None]]]:
    for path, value in _paths(bundle["report"]):
        if not path:
            continue
        full = ("report", *path)

        def change(b: dict[str, Any], full: tuple[Any, ...] = full, value: Any = value) -> None:
            parent, key = _at(b, full)
            parent[key] = _other(value)

        def delete(b: dict[str, Any], full: tuple[Any, ...] = full) -> None:
            parent, key = _at(b, full)
            del parent[key]

        yield f"change {'.'.join(map(str, path))}", change
        yield f"delete {'.'.join(map(str, path))}", delete
    for i, e in enumerate(bundle["entries"]):
        if e["payload"] is None:
            continue

        def null(b: dict[str, Any], i: int = i) -> None:
            b["entries"][i]["payload"] = None
            b["entries"][i]["salt"] = None

        def withhold(b: dict[str, Any], i: int = i) -> None:
            b["entries"][i].update(payload=None, salt=None, withheld="claimed withheld")

        yield f"null payload of entry {e['header']['seq']}", null
        yield f"withhold payload of entry {e['header']['seq']}", withhold


def test_every_mutant_of_a_real_bundle_is_rejected(runtime, bundle) -> None:  # type: ignore[no-untyped-def]
    vkey = runtime.ledger.signer.verifier.line()
    verify_bundle(bundle, vkey)
    kinds = {e["header"]["kind"] for e in bundle["entries"]}
    assert {"validation.result", "promotion.decision", "deployment", "approval", "payload.erasure"} <= kinds
    accepted, count = [], 0
    for name, mutate in _mutants(bundle):
        mutant = copy.deepcopy(bundle)
        mutate(mutant)
        if mutant == bundle:
            continue  # e.g. a value that stays the same
        count += 1
        try:
            verify_bundle(mutant, vkey)
        except BundleError:
            continue
        accepted.append(name)
    assert count > 400, count
    assert not accepted, f"{len(accepted)} of {count} mutants verified: {accepted[:20]}"


def test_the_attacks_of_the_issue_are_named(runtime, bundle) -> None:  # type: ignore[no-untyped-def]
    vkey = runtime.ledger.signer.verifier.line()

    def mutant(mutate: Callable[[dict[str, Any]], None]) -> str:
        b = copy.deepcopy(bundle)
        mutate(b)
        with pytest.raises(BundleError) as err:
            verify_bundle(b, vkey)
        return err.value.detail

    def all_ok(b: dict[str, Any]) -> None:
        for v in b["report"]["verdicts"].values():
            v.update(ok=True, missing=[])

    assert "report.verdicts.verifiable.ok differs" in mutant(all_ok)

    def rewrite_validation(b: dict[str, Any]) -> None:
        seq = b["report"]["validations"][0]["seq"]
        next(e for e in b["entries"] if e["header"]["seq"] == seq).update(payload=None, salt=None)
        b["report"]["validations"][0]["passed"] = True

    assert "no payload.erasure entry naming it" in mutant(rewrite_validation)

    def unrefuse(b: dict[str, Any]) -> None:
        b["report"]["deployments"][0]["refused"] = False

    assert "report.deployments[0].refused differs" in mutant(unrefuse)

    def drop_decision(b: dict[str, Any]) -> None:
        b["report"]["decisions"].pop()

    assert "report.decisions[0] differs" in mutant(drop_decision)

    def other_digest(b: dict[str, Any]) -> None:
        b["report"]["upstream"]["datasets"][0]["digest"] = "sha256:" + "0" * 64

    assert "report.upstream.datasets[0].digest differs" in mutant(other_digest)

    def registered_by(b: dict[str, Any]) -> None:
        b["report"]["model"]["registered_by"] = "mallory"

    assert "report.model.registered_by differs" in mutant(registered_by)

    def drop_erasure(b: dict[str, Any]) -> None:
        seq = b["report"]["erasures"][0]["erasure_seq"]
        b["entries"] = [e for e in b["entries"] if e["header"]["seq"] != seq]
        b["report"]["entries"].remove(seq)

    assert "no payload.erasure entry naming it" in mutant(drop_erasure)

    def claim_withheld(b: dict[str, Any]) -> None:
        seq = b["report"]["upstream"]["runs"][0]["entries"][0]
        next(e for e in b["entries"] if e["header"]["seq"] == seq).update(payload=None, salt=None, withheld="x")

    detail = mutant(claim_withheld)
    assert "unproven" in detail and "upstream" in detail
    b = copy.deepcopy(bundle)
    claim_withheld(b)
    assert "except those unproven" in verify_bundle(b, vkey, allow_withheld=True)
    # A withheld payload never covers a governance fact: those are never withheld.
    b["report"]["validations"][0]["passed"] = True
    with pytest.raises(BundleError, match=r"report\.validations"):
        verify_bundle(b, vkey, allow_withheld=True)
    with pytest.raises(WithheldError):
        verify_bundle(bundle | {"entries": b["entries"]}, vkey)


def test_derive_report_needs_the_registration(bundle) -> None:  # type: ignore[no-untyped-def]
    from ledger.tlog.entry import EntryHeader

    rows = [
        (EntryHeader.from_json(e["header"]), bytes.fromhex(e["leaf_hash"]), None, e["payload"])
        for e in bundle["entries"]
        if e["header"]["kind"] != "model.version"
    ]
    assert derive_report(rows, "churn", "3", log_size=10**6) is None


def test_a_bundle_carries_the_cosigned_checkpoint(client, tokens, runtime, bundle, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from spec_ref import verify_cosignature
    from witnesses import start_witness

    from ledger.jobs.witnesses import send_to_witnesses

    vkey = runtime.ledger.signer.verifier.line()
    ws = [start_witness(tmp_path / n, f"witness.test/{n}", vkey) for n in ("w1", "w2")]
    try:
        runtime.ledger.store_checkpoint()
        assert all(
            r.startswith("cosigned") for r in send_to_witnesses(runtime.ledger, [w.config() for w in ws]).values()
        )
        doc = client.get("/api/v1/provenance/models/churn/versions/3/bundle", headers=auth(tokens.auditor)).get_json()
    finally:
        for w in ws:
            w.server.shutdown()
    keys = [w.vkey for w in ws]
    for k in keys:
        verify_cosignature(doc["checkpoint"], k)  # by code written from the spec alone
    assert "and 2 witness(es)" in verify_bundle(doc, vkey, witnesses=keys, quorum=2)
    with pytest.raises(BundleError, match="0 of 1 required witness cosignatures"):
        verify_bundle(bundle, vkey, witnesses=keys[:1])  # the same bundle fetched before: not cosigned
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(doc))
    import subprocess
    import sys

    args = ["verify", str(path), "--key", vkey, "--witness", keys[0], "--witness", keys[1], "--quorum", "2"]
    r = subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert r.returncode == 0 and r.stdout.startswith("OK: bundle for churn@3"), r.stderr
