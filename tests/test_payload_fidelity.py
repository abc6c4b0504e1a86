"""Payload fidelity (README "Payload fidelity"): a payload is stored as its RFC 8785 bytes.

Numbers are IEEE doubles (I-JSON): they come back as the same value, spelled in canonical form by the
export, and integers beyond +-(2**53 - 1), which no double holds exactly, are refused at intake.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import auth
from events import run_event
from spec_ref import same_json

NUMBERS = {
    "one": 1.0,
    "big": 7.043357608576317e16,  # the example that broke the property test: canonically 70433576085763170
    "tiny": 1e-7,
    "huge": 1e21,
    "tenth": 0.1,
    "negative_zero": -0.0,
    "max_safe": 2**53 - 1,
}
# RFC 8785 3.2.2.3 (ECMAScript Number.prototype.toString), keys sorted by UTF-16 code units.
CANONICAL = (
    '{"_producer":"https://example.test/producer","_schemaURL":"https://example.test/schema",'
    '"big":70433576085763170,"huge":1e+21,"max_safe":9007199254740991,'
    '"negative_zero":0,"one":1,"tenth":0.1,"tiny":1e-7}'
)


def _numbers_event() -> dict[str, object]:
    facet = {"_producer": "https://example.test/producer", "_schemaURL": "https://example.test/schema", **NUMBERS}
    return run_event(job="numbers", run_facets={"measurements": facet})


def test_payload_numbers_are_stored_and_exported_in_canonical_form(client, tokens):
    event = _numbers_event()
    r = client.post("/api/v1/lineage", json=event, headers=auth(tokens.pipeline))
    assert r.status_code == 201, r.get_data(as_text=True)
    seq = r.get_json()["receipt"]["seq"]

    line = client.get(f"/api/v1/log/export?start={seq}&end={seq + 1}", headers=auth(tokens.auditor))
    _, header_text, salt_hex, payload_text = line.get_data(as_text=True).rstrip("\n").split("\t")
    header = json.loads(header_text)
    # The exported payload is the stored canonical bytes, and the header's digest commits to them.
    digest = hashlib.sha256(bytes.fromhex(salt_hex) + payload_text.encode()).hexdigest()
    assert header["payload_digest"] == "sha256:" + digest
    stored_facet = payload_text[payload_text.index('"measurements":') + len('"measurements":') :]
    assert stored_facet.startswith(CANONICAL), stored_facet[:200]

    # An entry read serves the same JSON value; as Python types 70433576085763170 != 7.043357608576317e16.
    served = client.get(f"/api/v1/log/entries/{seq}", headers=auth(tokens.auditor)).get_json()["payload"]
    assert same_json(served, event)
    assert served["run"]["facets"]["measurements"]["big"] == 70433576085763170


def test_same_json_compares_values_not_python_types():
    assert same_json({"a": 70433576085763170}, {"a": 7.043357608576317e16})
    assert same_json([1], [1.0])
    assert not same_json([1], [True])
    assert not same_json({"a": 0.1}, {"a": 0.10000000000000002})


@pytest.mark.parametrize("value", [2**53, -(2**53), 10**30])
def test_integers_no_double_holds_are_refused_naming_the_field(client, tokens, runtime, value):
    before = runtime.ledger.size()
    event = run_event(job="numbers", run_facets={"measurements": {"_producer": "p", "_schemaURL": "s", "n": value}})
    r = client.post("/api/v1/lineage", json=event, headers=auth(tokens.pipeline))
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.mimetype == "application/problem+json"
    assert r.get_json().get("field"), r.get_json()
    assert runtime.ledger.size() == before
