"""Bad input never yields a 500, never half-writes (DESIGN.md 6).

Every refusal must be a 4xx `application/problem+json` whose body names what is wrong (a `field`
member, or the name in `detail`), and must leave the log tables exactly as they were. The examples
come first; Hypothesis tests then throw generated junk at the intake with the same oracle (60
examples each by default; LEDGER_FUZZ_EXAMPLES=1000 for a longer hunt). Tests walk tables of cases
(one database per test, not per case, keeps the PostgreSQL half fast); a failure names the case.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import auth, make_settings
from events import dataset, dataset_event, job_event, run_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spec_ref import same_json
from sqlalchemy import text

from ledger.app import create_app
from ledger.runtime import Runtime, build_runtime, initialise

LINEAGE = "/api/v1/lineage"
BATCH = "/api/v1/lineage/batch"
LOG = "/api/v1/log"


def table_counts(runtime: Runtime) -> tuple[int, int, int]:
    """Rows in every log table: a refused request must change none of them."""
    with runtime.db.read() as session:
        return tuple(  # type: ignore[return-value]
            session.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one()
            for t in ("log_entries", "entry_payloads", "tree_nodes")
        )


def post_raw(
    client: Any,
    token: str,
    data: bytes | str,
    path: str = LINEAGE,
    *,
    content_type: str = "application/json",
    encoding: str | None = None,
) -> Any:
    headers = {**auth(token), "Content-Type": content_type}
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    return client.post(path, data=data, headers=headers)


def assert_refused(r: Any, names: str | None, *, status: int | None = None) -> dict[str, Any]:
    """A 4xx problem+json that names `names` (in `field` or in `detail`)."""
    assert 400 <= r.status_code < 500, (r.status_code, r.get_data(as_text=True)[:500])
    if status is not None:
        assert r.status_code == status, r.get_data(as_text=True)[:500]
    assert r.mimetype == "application/problem+json"
    problem = r.get_json()
    assert problem["status"] == r.status_code
    assert problem["title"]
    assert problem["detail"]
    if names is not None:
        assert names in (problem.get("field") or "") or names in problem["detail"], problem
    return problem  # type: ignore[no-any-return]


@pytest.fixture
def refused(client: Any, tokens: Any, runtime: Runtime) -> Callable[..., dict[str, Any]]:
    """Posts a raw body and checks the refusal; every call also checks that nothing was written."""
    first = client.post(LINEAGE, json=job_event(name="already-there"), headers=auth(tokens.pipeline))
    assert first.status_code == 201

    def check(data: bytes | str, names: str | None, *, status: int = 400, **kw: Any) -> dict[str, Any]:
        before = table_counts(runtime)
        r = post_raw(client, tokens.pipeline, data, **kw)
        try:
            problem = assert_refused(r, names, status=status)
            assert table_counts(runtime) == before, "a refused request wrote to the log"
        except AssertionError as e:
            raise AssertionError(f"posting {data[:120]!r} {kw}: {e}") from None
        return problem

    return check


def without(event: dict[str, Any], path: str) -> dict[str, Any]:
    out = copy.deepcopy(event)
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[p]
    del node[last]
    return out


def with_value(event: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(event)
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    node[int(last) if isinstance(node, list) else last] = value
    return out


def pointer(path: str) -> str:
    return "/" + path.replace(".", "/")


# --- malformed bodies ----------------------------------------------------------------------------

MALFORMED = [
    b"{",
    b'{"eventTime": "2024-01-01T00:00:00Z",}',
    b"{'eventTime': 1}",
    b'{"a": NaN}',
    b'{"a": Infinity}',
    b'{"a": -Infinity}',
    b"[1, 2",
    b"nul",
    b'{"a": 1} {"b": 2}',
    b'"unterminated',
    b"\xef\xbb\xbf{}",  # UTF-8 BOM
    b'{"a": 01}',
    b'{"a": "\x01"}',  # raw control character in a string
    b"",
    b"   ",
    b"\n\t",
]
NOT_UTF8 = [b'{"a": "\xff"}', b"\xc3\x28", b'{"eventTime": "\xed\xa0\x80"}', b"\x80", "{}".encode("utf-16")]


def test_malformed_json_is_400(refused):
    for body in MALFORMED:
        refused(body, "body")
        refused(body, "body", path=BATCH)


def test_non_utf8_body_is_400(refused):
    for body in NOT_UTF8:
        refused(body, "body")
        refused(body, "body", path=BATCH)


def test_duplicate_member_names_are_refused(refused):
    """Regression: `{"eventType": "START", ..., "eventType": "FAIL"}` was stored as whichever came
    last; parsers disagree on that, so a verifier could read a different event from the signed copy."""
    event = run_event(event_type="START")
    body = json.dumps(event)[:-1] + ', "eventType": "FAIL"}'
    assert "eventType" in refused(body, "body")["detail"]
    nested = json.dumps(event).replace('"runId":', '"runId": "x", "runId":', 1)
    assert "runId" in refused(nested, "body")["detail"]
    assert "eventType" in refused("[" + body + "]", "body", path=BATCH)["detail"]


def test_deep_nesting_is_400(refused):
    for depth in (200, 5_000, 100_000):
        refused("[" * depth + "]" * depth, "body")
        refused('{"a":' * depth + "1" + "}" * depth, "body")


def test_event_nested_just_below_the_parser_limit_is_400_not_500(refused):
    """Regression: ~975 levels parsed, then validation or RFC 8785 ran out of stack: a 500 in a batch."""
    for depth in (130, 500, 960, 975, 990):
        event = run_event()
        event["run"]["facets"] = {"x": {"v": "NEST"}}
        body = json.dumps(event).replace('"NEST"', "[" * depth + "]" * depth)
        refused(body, "body")
        refused("[" + body + "]", "body", path=BATCH)


def test_moderately_nested_facets_are_accepted(client, tokens):
    event = run_event()
    event["run"]["facets"] = {"x": {"v": json.loads("[" * 100 + "]" * 100)}}
    assert client.post(LINEAGE, json=event, headers=auth(tokens.pipeline)).status_code == 201


# --- wrong types, missing fields, unknown eventType ----------------------------------------------

REQUIRED = {
    run_event: ["eventTime", "producer", "schemaURL", "run", "run.runId", "job", "job.namespace", "job.name"],
    dataset_event: ["eventTime", "producer", "schemaURL", "dataset", "dataset.namespace", "dataset.name"],
    job_event: ["eventTime", "producer", "schemaURL", "job", "job.namespace", "job.name"],
}


def test_missing_required_fields_are_400_naming_the_field(refused):
    for build, required in REQUIRED.items():
        for path in required:
            problem = refused(json.dumps(without(build(), path)), path.split(".")[-1])
            assert problem["field"] == pointer(path), (build.__name__, path, problem)


def test_run_event_that_lost_its_run_is_not_recorded_as_a_job_event(refused):
    """Regression: a RunEvent without `run` was classified by shape as a JobEvent and stored."""
    problem = refused(json.dumps(without(run_event(), "run")), "run")
    assert problem["field"] == "/run"
    no_url = without(without(run_event(), "run"), "schemaURL")  # eventType alone marks a RunEvent
    assert "/run" in [e["field"] for e in refused(json.dumps(no_url), None)["errors"]]


WRONG_TYPES = [
    (run_event, "eventTime", 1700000000),
    (run_event, "eventTime", "yesterday"),
    (run_event, "eventTime", "2024-01-01T00:00:00"),  # no offset
    (run_event, "eventTime", "2024-13-45T00:00:00Z"),
    (run_event, "eventTime", None),
    (run_event, "producer", 5),
    (run_event, "producer", "not a url"),
    (run_event, "schemaURL", ["https://openlineage.io"]),
    (run_event, "run", "0190f2c4-7c1e-7a3b-9d7e-3b1f9c2d4e5f"),
    (run_event, "run.runId", "not-a-uuid"),
    (run_event, "run.runId", 12345),
    (run_event, "run.runId", None),
    (run_event, "run.facets", []),
    (run_event, "run.facets", {"nominalTime": "2024-01-01"}),  # a facet must be an object
    (run_event, "job", []),
    (run_event, "job.namespace", 7),
    (run_event, "job.namespace", ""),
    (run_event, "job.namespace", "x" * 2000),
    (run_event, "job.name", {"a": 1}),
    (run_event, "job.name", ""),
    (run_event, "job.facets", "none"),
    (run_event, "inputs", {}),
    (run_event, "inputs", [5]),
    (run_event, "inputs", [{"namespace": "s3://raw"}]),
    (run_event, "outputs", "customers"),
    (run_event, "outputs", [{"namespace": "s3://x", "name": 3}]),
    (run_event, "eventType", 5),
    (run_event, "eventType", ["COMPLETE"]),
    (dataset_event, "dataset", "s3://raw/customers"),
    (dataset_event, "dataset.namespace", 1),
    (dataset_event, "dataset.facets", [1]),
    (job_event, "job.name", 1.5),
    (job_event, "inputs", "x"),
]


def test_wrong_types_are_400_naming_the_field(refused):
    for build, path, value in WRONG_TYPES:
        event = build()
        refused(json.dumps(with_value(event, path, value)), pointer(path.split(".")[0]))


def test_unknown_event_type_is_400(refused):
    for event_type in ["FINISHED", "complete", "", " START", "START\n", "\u0000", "\ud800"]:
        body = json.dumps(with_value(run_event(), "eventType", event_type))
        assert refused(body, "eventType")["field"] == "/eventType"


def test_json_that_is_no_event_is_400(refused):
    for body in ["5", '"event"', "null", "true", "[]", "[{}]", "{}", '{"producer": "x"}', '{"run": 1}']:
        refused(body, "/")


def test_run_id_spelled_other_than_the_hyphenated_form_is_refused(refused):
    """Regression: these were accepted, each spelling giving the same run a subject of its own."""
    for run_id in [
        "{0190f2c4-7c1e-7a3b-9d7e-3b1f9c2d4e5f}",
        "urn:uuid:0190f2c4-7c1e-7a3b-9d7e-3b1f9c2d4e5f",
        "0190f2c47c1e7a3b9d7e3b1f9c2d4e5f",
        " 0190f2c4-7c1e-7a3b-9d7e-3b1f9c2d4e5f",
        "0190f2c4-7c1e-7a3b-9d7e-3b1f9c2d4e5f\n",
    ]:
        problem = refused(json.dumps(with_value(run_event(), "run.runId", run_id)), "runId")
        assert problem["field"] == "/run/runId"


def test_upper_case_run_id_gets_the_lower_case_subject(client, tokens):
    run_id = str(uuid.uuid4())
    r = client.post(LINEAGE, json=run_event(run_id=run_id.upper()), headers=auth(tokens.pipeline))
    assert r.status_code == 201
    seq = r.get_json()["receipt"]["seq"]
    entry = client.get(f"{LOG}/entries/{seq}", headers=auth(tokens.auditor)).get_json()
    assert entry["header"]["subject"] == f"run:{run_id}"


def test_control_characters_in_names_are_400_not_500(refused):
    """Regression: a NUL in a namespace or name reached a PostgreSQL text column: a 500, and a batch
    holding such an event lost every valid event with it."""
    names = [(job_event, "job.name"), (job_event, "job.namespace"), (dataset_event, "dataset.namespace"),
             (dataset_event, "dataset.name"), (run_event, "job.namespace"), (run_event, "job.name")]
    for build, path in names:
        for char in ["\u0000", "\n", "\u001f", "\u007f"]:
            problem = refused(json.dumps(with_value(build(), path, f"a{char}b")), path.split(".")[-1])
            assert problem["field"] == pointer(path)


def test_control_character_in_a_name_fails_only_its_batch_entry(client, tokens, runtime):
    base = runtime.ledger.size()
    events = [job_event(name="fine"), job_event(name="a\u0000b"), dataset_event(name="also\u0000bad")]
    r = client.post(BATCH, json=events, headers=auth(tokens.pipeline))
    assert r.status_code == 200
    body = r.get_json()
    assert [f["index"] for f in body["failed_events"]] == [1, 2]
    assert [x["index"] for x in body["receipts"]] == [0]
    assert runtime.ledger.size() == base + 1


def nul_cases() -> list[tuple[dict[str, Any], str]]:
    nul = "a\u0000b"
    version = {"datasetVersion": nul}
    return [
        (run_event(run_facets={"x": {"v": nul}}), "/run/facets/x/v"),
        (run_event(run_facets={"x": {nul: 1}}), "/run/facets/x"),
        (run_event(inputs=[dataset("s3://raw", "t", version=version)]), "/inputs/0/facets/version/datasetVersion"),
        (run_event(job_facets={"sourceCodeLocation": {"version": nul}}), "/job/facets/sourceCodeLocation/version"),
        (run_event(outputs=[dataset("s3://o", "t", contentDigest={"digest": nul})]),
         "/outputs/0/facets/contentDigest/digest"),
        (run_event(inputs=[{"namespace": "n", "name": "x", "inputFacets": {"datasetVersion": version}}]),
         "/inputs/0/inputFacets/datasetVersion/datasetVersion"),
        (dataset_event(dataSource={"name": nul}), "/dataset/facets/dataSource/name"),
        (job_event() | {"producer~/x": nul}, "/producer~0~1x"),
    ]


def test_nul_anywhere_in_an_event_is_400_not_500(refused, client, tokens, runtime):
    """Regression: U+0000 in a dataset version, code version or digest facet reached a PostgreSQL
    text column through the lineage projection: a 500 there, a 201 on SQLite."""
    for event, where in nul_cases():
        assert refused(json.dumps(event), where)["field"] == where
    before = table_counts(runtime)
    events = [job_event(name="ok-1"), *(e for e, _ in nul_cases()), job_event(name="ok-2")]
    r = client.post(BATCH, json=events, headers=auth(tokens.pipeline))
    assert r.status_code == 200
    body = r.get_json()
    assert [f["index"] for f in body["failed_events"]] == list(range(1, len(events) - 1))
    assert [x["index"] for x in body["receipts"]] == [0, len(events) - 1]
    assert table_counts(runtime)[0] == before[0] + 2


def cjk(n: int, seed: int = 0) -> str:
    """n CJK characters, 3 bytes each in UTF-8, that do not compress."""
    rnd = random.Random(seed)
    return "".join(chr(rnd.randrange(0x4E00, 0x9FFF)) for _ in range(n))


def test_identifiers_are_bounded_in_utf8_bytes_not_characters(refused, client, tokens):
    """Regression: 1024 characters of CJK (3072 bytes) passed validation, then overflowed
    PostgreSQL's b-tree row limit (2704 bytes) in the projections' unique keys: a 500."""
    long_name = cjk(342)  # 1026 bytes
    version = {"datasetVersion": long_name}
    for event, where in [
        (dataset_event(namespace=long_name), "/dataset/namespace"),
        (dataset_event(name=long_name), "/dataset/name"),
        (job_event(namespace=long_name), "/job/namespace"),
        (run_event(job=long_name), "/job/name"),
        (run_event(inputs=[dataset(long_name, "t")]), "/inputs/0/namespace"),
        (run_event(outputs=[dataset("n", long_name)]), "/outputs/0/name"),
        (dataset_event(version=version), "/dataset/facets/version/datasetVersion"),
        (run_event(outputs=[{"namespace": "n", "name": "o", "outputFacets": {"version": version}}]),
         "/outputs/0/outputFacets/version/datasetVersion"),
        (dataset_event(version={"datasetVersion": 3}), "/dataset/facets/version/datasetVersion"),
    ]:
        problem = refused(json.dumps(event), where)
        assert problem["field"] == where
    # the limit itself is fine, on both databases
    fits = cjk(341, seed=1) + "x"  # 1024 bytes
    for event in (
        dataset_event(namespace=fits, name=cjk(341, seed=2) + "y", version={"datasetVersion": cjk(341) + "z"}),
        run_event(namespace=fits, job=cjk(341, seed=3) + "j", inputs=[dataset(fits, fits)]),
    ):
        r = client.post(LINEAGE, json=event, headers=auth(tokens.pipeline))
        assert r.status_code == 201, r.get_json()


def test_event_time_must_be_rfc3339(refused, client, tokens):
    """Regression: marshmallow took ISO 8601 times of any length; a 44-character eventTime then
    overflowed the projection's timestamp column on PostgreSQL (a 500)."""
    for bad in [
        "2024-01-01T00:00:00.123456789012345678+00:00",
        "2024-01-01T00:00:00.1234567890Z",
        "2024-01-01T00:00:00,5Z",
        "2024-01-01T00:00:00.5+05:30:15",
        "20240101T000000Z",
        "2024-01-01T00:00:00.123456789+00:00[UTC]",
    ]:
        assert refused(json.dumps(run_event(event_time=bad)), "eventTime")["field"] == "/eventTime"
    for good in [
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00.123456789+00:00",
        "2024-01-01T00:00:00.1-08:00",
        "2024-01-01 00:00:00Z",
    ]:
        for event_type in ("START", "COMPLETE"):
            event = run_event(event_time=good, event_type=event_type)
            r = client.post(LINEAGE, json=event, headers=auth(tokens.pipeline))
            assert r.status_code == 201, (good, r.get_json())


def test_numbers_rfc8785_cannot_encode_are_400(refused):
    template = json.dumps(run_event(run_facets={"x": {"n": 0}}))
    for literal, names in [(str(2**53), "/"), (str(-(2**53)), "/"), ("1" + "0" * 30, "/"), ("9" * 5000, "body"),
                           ("1.5e400", "/"), ("-1e999", "/")]:
        refused(template.replace('"n": 0', f'"n": {literal}'), names)


def test_lone_surrogate_escapes_are_400(refused):
    for where in ["facet", "name", "namespace", "key", "runId"]:
        event = run_event(run_facets={"x": {"s": "SURROGATE"}})
        if where == "name":
            event["job"]["name"] = "SURROGATE"
        elif where == "namespace":
            event["job"]["namespace"] = "SURROGATE"
        elif where == "key":
            event["run"]["facets"]["x"] = {"SURROGATE": 1}
        elif where == "runId":
            event["run"]["runId"] = "SURROGATE"
        for escape in ("\\ud800", "\\udfff", "\\udc00\\ud800"):
            refused(json.dumps(event).replace("SURROGATE", escape), "/")


def test_valid_surrogate_pair_escape_is_accepted(client, tokens, runtime):
    body = json.dumps(run_event(run_facets={"x": {"s": "S"}})).replace('"S"', '"\\ud83d\\ude00"')
    r = post_raw(client, tokens.pipeline, body)
    assert r.status_code == 201
    seq = r.get_json()["receipt"]["seq"]
    entry = client.get(f"{LOG}/entries/{seq}", headers=auth(tokens.auditor)).get_json()
    assert entry["payload"]["run"]["facets"]["x"]["s"] == "\U0001f600"


# --- content type and encoding -------------------------------------------------------------------


def test_wrong_content_type_is_415(refused):
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "application/xml", "text/json", ""]:
        refused(json.dumps(run_event()), "Content-Type", status=415, content_type=content_type)
        refused(json.dumps([run_event()]), "Content-Type", status=415, path=BATCH, content_type=content_type)


def test_missing_content_type_is_415(client, tokens, runtime):
    before = table_counts(runtime)
    r = client.post(LINEAGE, data=json.dumps(run_event()).encode(), headers=auth(tokens.pipeline))
    assert_refused(r, "Content-Type", status=415)
    assert table_counts(runtime) == before


def test_unsupported_content_encoding_is_415(refused):
    body = gzip.compress(json.dumps(run_event()).encode())
    for encoding in ["br", "deflate", "compress", "zstd", "gzip, br"]:
        refused(body, "Content-Encoding", status=415, encoding=encoding)


def test_bad_gzip_is_400(refused):
    text = json.dumps(run_event()).encode()
    for body in [
        text,  # not compressed at all
        gzip.compress(text)[:-12],  # truncated
        gzip.compress(text)[:10],  # header only
        gzip.compress(text) + b"trailing junk",
        b"",
    ]:
        refused(body, "Content-Encoding", encoding="gzip")


def test_gzip_of_non_utf8_or_malformed_json_is_400(refused):
    refused(gzip.compress(b'{"a": "\xff"}'), "body", encoding="gzip")
    refused(gzip.compress(b"{"), "body", encoding="gzip")
    refused(gzip.compress(b""), "body", encoding="gzip")


def test_gzip_bomb_on_the_default_limit_is_413(refused):
    bomb = gzip.compress(b'{"a": "' + b" " * (6 * 1024 * 1024) + b'"}', 9)
    assert len(bomb) < 64 * 1024
    refused(bomb, "body", status=413, encoding="gzip")
    refused(bomb, "body", status=413, path=BATCH, encoding="gzip")


# --- body size limit (LEDGER_MAX_BODY_BYTES) -----------------------------------------------------


@pytest.fixture
def small(tmp_path: Path, database_url: str) -> Iterator[tuple[Any, Runtime, str]]:
    """An app with LEDGER_MAX_BODY_BYTES=2048, its runtime and a pipeline token."""
    s = make_settings(tmp_path / "small", database_url, LEDGER_MAX_BODY_BYTES="2048")
    initialise(s)
    rt = build_runtime(s)
    app = create_app(runtime=rt)
    app.config["TESTING"] = True
    token = rt.principals.create("etl", roles=["pipeline"])[1]
    try:
        yield app.test_client(), rt, token
    finally:
        rt.close()


def test_body_size_limit(small):
    client, rt, token = small
    before = table_counts(rt)
    # over the limit, as sent: 413
    event = run_event(run_facets={"x": {"pad": "p" * 3000}})
    for path, body in ((LINEAGE, event), (BATCH, [event])):
        r = post_raw(client, token, json.dumps(body), path)
        assert_refused(r, "body", status=413)
        assert "2048" in r.get_json()["detail"]
    # over the limit once inflated (a gzip bomb): 413, without inflating it all
    for inflated in (2049, 10_000, 1_000_000):
        event = run_event(run_facets={"x": {"pad": "p" * inflated}})
        bomb = gzip.compress(json.dumps(event).encode(), 9)
        assert len(bomb) < 2048
        r = post_raw(client, token, bomb, encoding="gzip")
        assert_refused(r, "body", status=413)
        assert "2048" in r.get_json()["detail"]
    # several gzip members that only together exceed the limit
    member = gzip.compress(b" " * 1500)
    r = post_raw(client, token, member + member + gzip.compress(b"{}"), encoding="gzip")
    assert_refused(r, "body", status=413)
    assert table_counts(rt) == before

    # within the limit, plain and inflated: recorded
    text = json.dumps(run_event())
    assert len(text) < 2048
    assert post_raw(client, token, text).status_code == 201
    padded = run_event(run_facets={"x": {"pad": ""}})
    padded["run"]["facets"]["x"]["pad"] = " " * (2048 - len(json.dumps(padded)))
    assert len(json.dumps(padded)) == 2048
    body = gzip.compress(json.dumps(padded).encode())
    assert post_raw(client, token, body, encoding="gzip").status_code == 201
    assert table_counts(rt)[0] == before[0] + 2


# --- query and path parameters -------------------------------------------------------------------

HUGE = "9" * 5000


@pytest.fixture
def read_refused(client: Any, tokens: Any, runtime: Runtime) -> Iterator[Callable[..., None]]:
    """GETs a URL and checks for a 400 naming `names`, with nothing written. `{n}` in the URL is the
    log's size (three events after whatever `ledger init` recorded)."""
    r = client.post(BATCH, json=[run_event(), dataset_event(), job_event()], headers=auth(tokens.pipeline))
    assert r.get_json()["summary"]["successful"] == 3
    before = table_counts(runtime)
    n = before[0]

    def check(url: str, names: str) -> None:
        url = url.replace("{n}", str(n)).replace("{n+1}", str(n + 1))
        try:
            assert_refused(client.get(url, headers=auth(tokens.auditor)), names, status=400)
        except AssertionError as e:
            raise AssertionError(f"GET {url[:120]}: {e}") from None
        assert table_counts(runtime) == before

    yield check
    assert table_counts(runtime) == before


def test_bad_entry_seq_is_400_naming_seq(read_refused):
    """Regression: a seq beyond BIGINT reached the database (500); a non-numeric one got a bare 404."""
    for seq in ["-1", "abc", "1.5", "1e3", "0x1", HUGE, "9" * 23, "9223372036854775808", "٣", "3%20", "+1"]:
        read_refused(f"{LOG}/entries/{seq}", "seq")


def test_bad_inclusion_parameters_are_400(read_refused):
    for query, names in [
        ("seq=-1&tree_size=3", "seq"),
        ("seq=abc&tree_size=3", "seq"),
        ("seq=&tree_size=3", "seq"),
        ("tree_size=3", "seq"),
        ("seq={n}&tree_size={n}", "seq"),  # seq must be below tree_size
        (f"seq={HUGE}&tree_size=3", "seq"),
        ("seq=0&tree_size=0", "tree_size"),
        ("seq=0&tree_size=-5", "tree_size"),
        ("seq=0&tree_size={n+1}", "tree_size"),  # beyond the log
        ("seq=0&tree_size=9007199254740991", "tree_size"),
        ("seq=0&tree_size=99999999999999999999", "tree_size"),
        (f"seq=0&tree_size={HUGE}", "tree_size"),
        ("seq=0&tree_size=1.0", "tree_size"),
        ("seq=0", "tree_size"),
    ]:
        read_refused(f"{LOG}/proof/inclusion?" + query, names)


def test_bad_consistency_parameters_are_400(read_refused):
    for query, names in [
        ("first=-1&second=2", "first"),
        ("first=x&second=2", "first"),
        ("second=2", "first"),
        ("first=3&second=2", "first"),  # first beyond second
        (f"first={HUGE}&second=2", "first"),
        ("first=1&second={n+1}", "second"),  # beyond the log
        ("first=1&second=-1", "second"),
        ("first=1", "second"),
        (f"first=1&second={HUGE}", "second"),
        ("first=1&second=18446744073709551616", "second"),
    ]:
        read_refused(f"{LOG}/proof/consistency?" + query, names)


def test_bad_entries_parameters_are_400(read_refused):
    for query, names in [
        ("after=-2", "after"),
        ("after=x", "after"),
        (f"after={HUGE}", "after"),
        ("after=99999999999999999999", "after"),
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        (f"limit={HUGE}", "limit"),
        ("kind=openlineage.nothing", "kind"),
        ("subject=a%00b", "subject"),  # PostgreSQL cannot compare text holding NUL: was a 500
        ("subject=" + "s" * 3000, "subject"),
    ]:
        read_refused(f"{LOG}/entries?{query}", names)


def test_bad_export_parameters_are_400(read_refused):
    for query, names in [
        ("start=-1", "start"),
        ("start={n+1}", "start"),
        ("start=2&end=1", "start"),
        ("end={n+1}", "end"),
        (f"end={HUGE}", "end"),
        (f"start={HUGE}", "start"),
        ("end=zz", "end"),
    ]:
        read_refused(f"{LOG}/export?" + query, names)


# --- generated junk ------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=int(os.environ.get("LEDGER_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# JSON scalars including the awkward ones: huge ints, NaN and infinities, lone surrogates.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**53 - 2, max_value=2**64)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=12)
    | st.sampled_from(["\ud800", "\udfff", "\u0000", "START", str(uuid.uuid4()), "2024-01-01T00:00:00Z"])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)


def rich_run_event() -> dict[str, Any]:
    """A RunEvent with the facets the projections read (versions, schema, digest, code version)."""
    return run_event(
        event_type="COMPLETE",
        inputs=[
            dataset("s3://raw", "customers", version={"datasetVersion": "v1"},
                    schema={"fields": [{"name": "id", "type": "int"}]}),
            {"namespace": "s3://raw", "name": "orders", "facets": {},
             "inputFacets": {"datasetVersion": {"datasetVersion": "7"}}},
        ],
        outputs=[dataset("s3://clean", "customers", version={"datasetVersion": "v2"},
                         contentDigest={"digest": "sha256:" + "0" * 64})],
        job_facets={"sourceCodeLocation": {"type": "git", "url": "https://x/y.git", "version": "abc123"},
                    "sourceCode": {"language": "python", "sourceCode": "print(1)"}},
        run_facets={"parent": {"run": {"runId": str(uuid.uuid4())}, "job": {"namespace": "etl", "name": "p"}},
                    "nominalTime": {"nominalStartTime": "2024-01-01T00:00:00Z"}},
    )


def rich_dataset_event() -> dict[str, Any]:
    return dataset_event(
        dataSource={"name": "crm", "uri": "postgres://crm"},
        version={"datasetVersion": "2024-01-01"},
        schema={"fields": [{"name": "email", "type": "string"}]},
    )


BASES = st.sampled_from([run_event, dataset_event, job_event, rich_run_event, rich_dataset_event]).map(
    lambda build: build()
)


def paths(value: Any, max_depth: int = 64) -> list[tuple[Any, ...]]:
    """Every member's path, down to `max_depth` (iteratively: a mutation may nest a member 1,500
    deep, which a recursive walk would not survive)."""
    out: list[tuple[Any, ...]] = []
    stack: list[tuple[tuple[Any, ...], Any]] = [((), value)]
    while stack:
        prefix, v = stack.pop()
        if prefix:
            out.append(prefix)
        if len(prefix) >= max_depth:
            continue
        if isinstance(v, dict):
            stack.extend(((*prefix, k), c) for k, c in v.items())
        elif isinstance(v, list):
            stack.extend(((*prefix, i), c) for i, c in enumerate(v))
    out.sort(key=repr)  # the same order every time: Hypothesis replays examples by index
    return out


def mutate(event: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """Drops, retypes or replaces a few members; may nest deeply or add huge numbers and surrogates."""
    out = copy.deepcopy(event)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3), label="mutations")):
        candidates = paths(out)
        if not candidates:
            break
        path = data.draw(st.sampled_from(candidates), label="path")
        parent: Any = out
        for key in path[:-1]:
            parent = parent[key]
        action = data.draw(
            st.sampled_from(["drop", "retype", "event_type", "deep", "huge", "surrogate"]), label="action"
        )
        if action == "drop":
            del parent[path[-1]]
        elif action == "retype":
            parent[path[-1]] = data.draw(JSON_VALUES, label="value")
        elif action == "event_type":
            types = st.text(max_size=10) | st.sampled_from(["START", "OTHER"])
            out["eventType"] = data.draw(types, label="type")
        elif action == "deep":
            depth = data.draw(st.integers(min_value=1, max_value=1500), label="depth")
            nested: Any = 1
            for _ in range(depth):
                nested = [nested]
            parent[path[-1]] = nested
        elif action == "huge":
            huge = st.integers(min_value=2**53) | st.integers(max_value=-(2**53))
            parent[path[-1]] = data.draw(huge, label="n")
        else:
            parent[path[-1]] = "\ud800" + str(parent[path[-1]])[:10]
    return out


def encode(value: Any) -> bytes:
    """JSON text as a client might send it; NaN and lone surrogates come out as tokens and escapes."""
    try:
        return json.dumps(value, allow_nan=True).encode()
    except RecursionError:
        return b"[" * 5000 + b"]" * 5000


def check_outcome(
    client: Any, tokens: Any, runtime: Runtime, r: Any, before: tuple[int, int, int], sent: bytes
) -> None:
    """Either a receipt for a valid event (201 new, 200 repeat) or a problem with nothing written."""
    assert r.status_code < 500, r.get_data(as_text=True)[:500]
    after = table_counts(runtime)
    if r.status_code in (200, 201):
        receipt = r.get_json()["receipt"]
        entry = client.get(f"{LOG}/entries/{receipt['seq']}", headers=auth(tokens.auditor)).get_json()
        # Payloads are stored in RFC 8785 form: compare JSON values as JSON (numbers as the IEEE
        # doubles I-JSON makes them), not as Python types (70433576085763170 == 7.043357608576317e+16).
        assert same_json(entry["payload"], json.loads(sent))
        assert entry["header"]["kind"].startswith("openlineage.")
        assert entry["leaf_hash"] == receipt["leaf_hash"]
        assert after[0] == before[0] + (1 if r.status_code == 201 else 0)
        return
    problem = assert_refused(r, None)
    assert problem.get("field"), problem
    assert after == before


@FUZZ
@given(body=st.binary(max_size=300))
def test_random_bytes_never_500(client, tokens, runtime, body):
    before = table_counts(runtime)
    check_outcome(client, tokens, runtime, post_raw(client, tokens.pipeline, body), before, body)


@FUZZ
@given(value=JSON_VALUES)
def test_random_json_never_500(client, tokens, runtime, value):
    before = table_counts(runtime)
    body = encode(value)
    check_outcome(client, tokens, runtime, post_raw(client, tokens.pipeline, body), before, body)


@FUZZ
@given(data=st.data(), base=BASES)
def test_mutated_events_never_500(client, tokens, runtime, data, base):
    before = table_counts(runtime)
    body = encode(mutate(base, data))
    check_outcome(client, tokens, runtime, post_raw(client, tokens.pipeline, body), before, body)


@FUZZ
@given(data=st.data(), raw=BASES.map(json.dumps))
def test_corrupted_event_text_never_500(client, tokens, runtime, data, raw):
    """Character-level damage to a valid event's text: cut, splice or insert anywhere."""
    pos = data.draw(st.integers(min_value=0, max_value=len(raw)), label="pos")
    cut = data.draw(st.integers(min_value=0, max_value=20), label="cut")
    junk = st.text(max_size=5) | st.sampled_from(["\\ud800", "\\u0000", "{", "]", '"', ","])
    insert = data.draw(junk, label="insert")
    body = (raw[:pos] + insert + raw[pos + cut :]).encode("utf-8", "surrogatepass")
    gz = data.draw(st.booleans(), label="gzip")
    before = table_counts(runtime)
    sent = gzip.compress(body) if gz else body
    r = post_raw(client, tokens.pipeline, sent, encoding="gzip" if gz else None)
    check_outcome(client, tokens, runtime, r, before, body)


@FUZZ
@given(data=st.data(), bases=st.lists(BASES, max_size=5))
def test_mutated_batches_never_500(client, tokens, runtime, data, bases):
    events = [mutate(b, data) if data.draw(st.booleans(), label="mutate") else b for b in bases]
    before = table_counts(runtime)
    r = post_raw(client, tokens.pipeline, encode(events), BATCH)
    assert r.status_code < 500, r.get_data(as_text=True)[:500]
    if r.status_code != 200:
        assert_refused(r, None)
        assert table_counts(runtime) == before
        return
    body = r.get_json()
    failed = {f["index"] for f in body["failed_events"]}
    recorded = {x["index"]: x["receipt"]["seq"] for x in body["receipts"]}
    assert sorted([*failed, *recorded]) == list(range(len(events)))  # nothing silently dropped
    assert body["summary"] == {"received": len(events), "successful": len(recorded), "failed": len(failed)}
    assert body["status"] == ("success" if not failed else "partial_success")
    new = {seq for seq in recorded.values() if seq >= before[0]}
    assert table_counts(runtime)[0] == before[0] + len(new)
