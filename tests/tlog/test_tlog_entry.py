"""Entry headers and payload digests (`ledger.tlog.entry`, DESIGN.md 3.1)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ledger.errors import VerificationError
from ledger.tlog.entry import (
    KINDS,
    EntryHeader,
    canonical_json,
    check_payload,
    format_time,
    payload_digest,
)
from ledger.tlog.errors import InvalidEntryError

DIGEST = "sha256:" + "ab" * 32
DESIGN_EXAMPLE: dict[str, Any] = {
    "format": "ledger-entry/v1",
    "seq": 41,
    "kind": "openlineage.run_event",
    "subject": "run:0190f2c4-7c1e-7a3b-9d7e-3b1f9c2d4e5f",
    "integrated_time": "2026-11-21T22:41:07.123456Z",
    "principal": "etl-nightly",
    "payload_digest": DIGEST,
}
# The JCS bytes of DESIGN_EXAMPLE, written out by hand: keys sorted, no whitespace.
DESIGN_EXAMPLE_JCS = (
    b'{"format":"ledger-entry/v1","integrated_time":"2026-11-21T22:41:07.123456Z",'
    b'"kind":"openlineage.run_event","payload_digest":"sha256:' + b"ab" * 32 + b'",'
    b'"principal":"etl-nightly","seq":41,"subject":"run:0190f2c4-7c1e-7a3b-9d7e-3b1f9c2d4e5f"}'
)


def header(**changes: Any) -> EntryHeader:
    fields = {k: v for k, v in DESIGN_EXAMPLE.items() if k != "format"} | changes
    return EntryHeader(**fields)


# --- canonical bytes and leaf hash -------------------------------------------------------------------


def test_design_example_canonical_bytes_and_leaf_hash() -> None:
    h = EntryHeader.from_json(DESIGN_EXAMPLE)
    assert h == header()
    assert h.to_json() == DESIGN_EXAMPLE
    assert h.canonical() == DESIGN_EXAMPLE_JCS
    assert h.canonical() == rfc8785.dumps(DESIGN_EXAMPLE)
    assert h.leaf_hash() == hashlib.sha256(b"\x00" + DESIGN_EXAMPLE_JCS).digest()


def test_canonical_bytes_do_not_depend_on_key_order() -> None:
    shuffled = dict(reversed(list(DESIGN_EXAMPLE.items())))
    assert canonical_json(shuffled) == DESIGN_EXAMPLE_JCS


def _subject(kind: str) -> st.SearchStrategy[str]:
    return st.text(max_size=40).map(lambda rest: KINDS[kind] + rest)


@st.composite
def headers(draw: Any) -> EntryHeader:
    kind = draw(st.sampled_from(sorted(KINDS)))
    moment = draw(st.datetimes(min_value=datetime(1000, 1, 1), timezones=st.just(UTC)))
    return EntryHeader(
        seq=draw(st.integers(0, 2**53 - 1)),
        kind=kind,
        subject=draw(_subject(kind)),
        integrated_time=format_time(moment),
        principal=draw(st.text(max_size=40)),
        payload_digest="sha256:" + draw(st.binary(min_size=32, max_size=32)).hex(),
    )


@settings(max_examples=100, deadline=None)
@given(h=headers())
def test_header_jcs_equals_rfc8785_and_round_trips(h: EntryHeader) -> None:
    canonical = h.canonical()
    assert canonical == rfc8785.dumps(h.to_json())
    assert h.leaf_hash() == hashlib.sha256(b"\x00" + canonical).digest()
    assert EntryHeader.from_json(json.loads(canonical)) == h


JSON_TRICKY = '"\\\x00\x08\t\n\x0c\r\x1f\x7f\u00e9\u2028\u2029\ufeff\U0001f600</script>'


@settings(max_examples=150, deadline=None)
@given(
    seq=st.integers(0, 2**53 - 1),
    fields=st.lists(st.text(), min_size=6, max_size=6),
)
@example(seq=2**53 - 1, fields=[JSON_TRICKY] * 6)
@example(seq=0, fields=[""] * 6)
def test_header_canonical_matches_rfc8785_on_arbitrary_strings(seq: int, fields: list[str]) -> None:
    # EntryHeader.canonical() is a hand-written JCS fast path; rfc8785 is the oracle.
    fmt, kind, subject, time, principal, digest = fields
    h = EntryHeader(
        seq=seq,
        kind=kind,
        subject=subject,
        integrated_time=time,
        principal=principal,
        payload_digest=digest,
        format=fmt,
    )
    assert h.canonical() == rfc8785.dumps(h.to_json())


@pytest.mark.parametrize("seq", [2**53, 2**63, -1])
def test_header_canonical_rejects_seq_outside_the_json_safe_range(seq: int) -> None:
    with pytest.raises(InvalidEntryError):
        header(seq=seq).canonical()


def test_regression_header_with_lone_surrogate_raises_unicode_error() -> None:
    # json.loads turns the escape "\ud800" into a lone surrogate; from_json accepts it and the JCS
    # fast path then fails with UnicodeEncodeError instead of InvalidEntryError (rfc8785 would raise
    # CanonicalizationError, which canonical_json wraps).
    obj = json.loads(json.dumps(DESIGN_EXAMPLE).replace("run:", "run:\\ud800"))
    with pytest.raises(InvalidEntryError):
        EntryHeader.from_json(obj).canonical()


def test_canonical_json_wraps_foreign_errors() -> None:
    for bad in (float("nan"), float("inf"), {1, 2}, 2**64, {"k": object()}, {1: "non-string key"}):
        with pytest.raises(InvalidEntryError):
            canonical_json(bad)


# --- from_json validation ----------------------------------------------------------------------------


def _without(key: str) -> dict[str, Any]:
    return {k: v for k, v in DESIGN_EXAMPLE.items() if k != key}


BAD_HEADERS: dict[str, Any] = {
    "not an object": [DESIGN_EXAMPLE],
    "string": json.dumps(DESIGN_EXAMPLE),
    "null": None,
    "empty": {},
    "extra key": DESIGN_EXAMPLE | {"salt": "00"},
    "payload key": DESIGN_EXAMPLE | {"payload": {}},
    "differently cased key": _without("seq") | {"Seq": 41},
    "other format": DESIGN_EXAMPLE | {"format": "ledger-entry/v2"},
    "format not a string": DESIGN_EXAMPLE | {"format": 1},
    "seq bool": DESIGN_EXAMPLE | {"seq": True},
    "seq negative": DESIGN_EXAMPLE | {"seq": -1},
    "seq float": DESIGN_EXAMPLE | {"seq": 41.0},
    "seq string": DESIGN_EXAMPLE | {"seq": "41"},
    "seq null": DESIGN_EXAMPLE | {"seq": None},
    "kind int": DESIGN_EXAMPLE | {"kind": 1},
    "subject list": DESIGN_EXAMPLE | {"subject": ["run:x"]},
    "time int": DESIGN_EXAMPLE | {"integrated_time": 1763764867},
    "principal null": DESIGN_EXAMPLE | {"principal": None},
    "principal int": DESIGN_EXAMPLE | {"principal": 7},
    "digest bytes-like list": DESIGN_EXAMPLE | {"payload_digest": [0] * 32},
    "unknown kind": DESIGN_EXAMPLE | {"kind": "openlineage.other_event"},
    "kind in other case": DESIGN_EXAMPLE | {"kind": "OpenLineage.run_event"},
    "empty kind": DESIGN_EXAMPLE | {"kind": ""},
    "time without fraction": DESIGN_EXAMPLE | {"integrated_time": "2026-11-21T22:41:07Z"},
    "time with millis": DESIGN_EXAMPLE | {"integrated_time": "2026-11-21T22:41:07.123Z"},
    "time with nanos": DESIGN_EXAMPLE | {"integrated_time": "2026-11-21T22:41:07.123456789Z"},
    "time with offset": DESIGN_EXAMPLE | {"integrated_time": "2026-11-21T22:41:07.123456+00:00"},
    "time with lowercase z": DESIGN_EXAMPLE | {"integrated_time": "2026-11-21T22:41:07.123456z"},
    "time with space": DESIGN_EXAMPLE | {"integrated_time": "2026-11-21 22:41:07.123456Z"},
    "time lowercase t": DESIGN_EXAMPLE | {"integrated_time": "2026-11-21t22:41:07.123456Z"},
    "date only": DESIGN_EXAMPLE | {"integrated_time": "2026-11-21"},
    "naive time": DESIGN_EXAMPLE | {"integrated_time": "2026-11-21T22:41:07.123456"},
    "time with leading space": DESIGN_EXAMPLE | {"integrated_time": " 2026-11-21T22:41:07.123456Z"},
    "digest without prefix": DESIGN_EXAMPLE | {"payload_digest": "ab" * 32},
    "digest sha512 prefix": DESIGN_EXAMPLE | {"payload_digest": "sha512:" + "ab" * 32},
    "digest uppercase hex": DESIGN_EXAMPLE | {"payload_digest": "sha256:" + "AB" * 32},
    "digest short": DESIGN_EXAMPLE | {"payload_digest": "sha256:" + "ab" * 31},
    "digest long": DESIGN_EXAMPLE | {"payload_digest": "sha256:" + "ab" * 33},
    "digest base64": DESIGN_EXAMPLE | {"payload_digest": "sha256:" + "q6ur" * 10 + "q6s="},
}
BAD_HEADERS |= {f"missing {k}": _without(k) for k in DESIGN_EXAMPLE}


@pytest.mark.parametrize("obj", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_from_json_rejects(obj: Any) -> None:
    with pytest.raises(InvalidEntryError):
        EntryHeader.from_json(obj)


def _prefix_mismatches() -> list[Any]:
    cases = []
    for kind, prefix in sorted(KINDS.items()):
        for other in sorted(set(KINDS.values()) - {prefix}):
            cases.append(pytest.param(kind, other + "x", id=f"{kind}-{other}"))
        cases.append(pytest.param(kind, prefix.upper() + "x", id=f"{kind}-upper"))
        cases.append(pytest.param(kind, prefix.rstrip(":"), id=f"{kind}-no-colon"))
        cases.append(pytest.param(kind, " " + prefix + "x", id=f"{kind}-leading-space"))
    return cases


@pytest.mark.parametrize(("kind", "subject"), _prefix_mismatches())
def test_from_json_rejects_subject_prefix_mismatch(kind: str, subject: str) -> None:
    with pytest.raises(InvalidEntryError, match="does not start with"):
        EntryHeader.from_json(DESIGN_EXAMPLE | {"kind": kind, "subject": subject})


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_is_accepted_with_its_prefix(kind: str) -> None:
    subject = KINDS[kind] + "ns:name@1"
    assert EntryHeader.from_json(DESIGN_EXAMPLE | {"kind": kind, "subject": subject}).kind == kind


def test_kinds_are_the_closed_set_of_the_design() -> None:
    assert KINDS == {
        "openlineage.run_event": "run:",
        "openlineage.dataset_event": "dataset:",
        "openlineage.job_event": "job:",
        "model.version": "model:",
        "validation.result": "model:",
        "approval": "model:",
        "promotion.decision": "model:",
        "deployment": "model:",
        "dataset.classification": "dataset:",
        "access.decision": "dataset:",
        "policy.bundle": "policy:",
        "payload.erasure": "entry:",
    }


def test_error_names_the_entry_and_field() -> None:
    with pytest.raises(InvalidEntryError, match=r"entry 41: integrated_time"):
        EntryHeader.from_json(DESIGN_EXAMPLE | {"integrated_time": "yesterday"})
    assert issubclass(InvalidEntryError, VerificationError)


# Laxness found while writing these tests: `$` in TIME_RE and DIGEST_RE also matches before a final
# "\n", `\d` matches any Unicode digit, and the regex does not check that the date exists.
LAX_TIMES = {
    "trailing newline": "2026-11-21T22:41:07.123456Z\n",
    "arabic-indic digits": "\u0662\u0660\u0662\u0666-11-21T22:41:07.123456Z",
    "month 13": "2026-13-21T22:41:07.123456Z",
    "hour 25": "2026-11-21T25:41:07.123456Z",
}


@pytest.mark.parametrize("value", LAX_TIMES.values(), ids=LAX_TIMES.keys())
def test_regression_lax_integrated_time_is_accepted(value: str) -> None:
    with pytest.raises(InvalidEntryError):
        EntryHeader.from_json(DESIGN_EXAMPLE | {"integrated_time": value})


def test_regression_payload_digest_with_trailing_newline_is_accepted() -> None:
    with pytest.raises(InvalidEntryError):
        EntryHeader.from_json(DESIGN_EXAMPLE | {"payload_digest": DIGEST + "\n"})


# --- integrated_time formatting -----------------------------------------------------------------------


def test_format_time() -> None:
    assert format_time(datetime(2026, 11, 21, 22, 41, 7, 123456, tzinfo=UTC)) == "2026-11-21T22:41:07.123456Z"
    assert format_time(datetime(2026, 11, 21, 22, 41, 7, tzinfo=UTC)) == "2026-11-21T22:41:07.000000Z"
    plus_one = timezone(timedelta(hours=1))
    assert format_time(datetime(2026, 11, 21, 23, 41, 7, 5, tzinfo=plus_one)) == "2026-11-21T22:41:07.000005Z"
    with pytest.raises(ValueError):
        format_time(datetime(2026, 11, 21, 22, 41, 7))  # naive: refuse to guess the zone


@settings(max_examples=100, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(1000, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.timezones(),
        allow_imaginary=False,
    )
)
def test_format_time_is_accepted_and_exact(moment: datetime) -> None:
    text = format_time(moment)
    parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    # Compare in UTC: PEP 495 makes inter-zone == False for ambiguous (folded) local times.
    assert parsed == moment.astimezone(UTC)
    EntryHeader.from_json(DESIGN_EXAMPLE | {"integrated_time": text})


def test_regression_format_time_of_early_years_is_not_rfc3339() -> None:
    # strftime("%Y") does not pad years below 1000 on glibc, so from_json rejects what format_time made.
    text = format_time(datetime(999, 1, 1, tzinfo=UTC))
    EntryHeader.from_json(DESIGN_EXAMPLE | {"integrated_time": text})


# --- payload digests ---------------------------------------------------------------------------------

SALT = bytes(range(32))
PAYLOAD = {"b": [1, "x", None, True], "a": "\u00e9", "c": {"z": 0.5, "y": -0.0}}
# RFC 8785 by hand: sorted keys, shortest number forms (-0.0 becomes 0), UTF-8 without escaping.
PAYLOAD_JCS = b'{"a":"\xc3\xa9","b":[1,"x",null,true],"c":{"y":0,"z":0.5}}'


def test_payload_digest_known_answer() -> None:
    assert canonical_json(PAYLOAD) == PAYLOAD_JCS
    want = "sha256:" + hashlib.sha256(SALT + PAYLOAD_JCS).hexdigest()
    assert want == "sha256:be626f881ea44fd6f75afb1c61ff76f96178b138fc06cf8348b1ade1c91b9454"
    assert payload_digest(SALT, PAYLOAD_JCS) == want


def test_check_payload() -> None:
    h = header(payload_digest=payload_digest(SALT, PAYLOAD_JCS))
    check_payload(h, SALT, PAYLOAD_JCS)
    with pytest.raises(InvalidEntryError, match="salt"):
        check_payload(h, SALT[:31], PAYLOAD_JCS)
    with pytest.raises(InvalidEntryError, match="salt"):
        check_payload(h, SALT + b"\x00", PAYLOAD_JCS)
    with pytest.raises(InvalidEntryError, match="does not match"):
        check_payload(h, bytes(32), PAYLOAD_JCS)
    with pytest.raises(InvalidEntryError, match="does not match"):
        check_payload(h, SALT, PAYLOAD_JCS.replace(b"0.5", b"0.6"))
    with pytest.raises(InvalidEntryError, match="does not match"):
        check_payload(h, SALT, json.dumps(PAYLOAD).encode())  # not canonical bytes


@settings(max_examples=100, deadline=None)
@given(salt=st.binary(min_size=32, max_size=32), payload=st.binary(max_size=200), bit=st.integers(0, 255))
def test_payload_digest_binds_salt_and_payload(salt: bytes, payload: bytes, bit: int) -> None:
    digest = payload_digest(salt, payload)
    assert digest == "sha256:" + hashlib.sha256(salt + payload).hexdigest()
    flipped = bytearray(salt)
    flipped[bit // 8] ^= 1 << (bit % 8)
    h = header(payload_digest=digest)
    check_payload(h, salt, payload)
    with pytest.raises(InvalidEntryError):
        check_payload(h, bytes(flipped), payload)
    with pytest.raises(InvalidEntryError):
        check_payload(h, salt, payload + b" ")
