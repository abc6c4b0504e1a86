"""Times are checked at intake, and every time a promotion input carries parses in Rego.

Before: an `eventTime` of year 9999, 0001 or 2262-04-11 was recorded; the promotion of any model
downstream of it then failed in the Rego engine ("time outside of valid range") and no decision was
recorded. A run completed at `2024-01-01 00:00:00Z` (a space for `T`, accepted at intake as clients
send it) or `2024-01-01T00:00Z` (no seconds) failed the same way ("Unable to parse time").
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import auth
from events import run_event
from pipeline import GIT, build_pipeline, registration, validation, versioned
from sqlalchemy import text

from ledger.config import Settings
from ledger.errors import ConfigurationError, InvalidEventError
from ledger.lineage.events import (
    REGO_TIME_MAX,
    REGO_TIME_MIN,
    EventTimeWindow,
    policy_time,
    validate_event,
)
from ledger.policy import rego
from ledger.tlog.entry import format_time

LINEAGE = "/api/v1/lineage"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def z(moment: datetime) -> str:
    return format_time(moment)


def refused_time(event: dict[str, Any], *, now: datetime = NOW, window: EventTimeWindow | None = None) -> str:
    with pytest.raises(InvalidEventError) as caught:
        validate_event(event, now=now, **({"window": window} if window else {}))
    assert caught.value.extra["field"] == "/eventTime", caught.value.detail
    return caught.value.detail


# --- the validator, with the clock passed in -----------------------------------------------------


@pytest.mark.parametrize(
    "when",
    [
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",  # no UTC instant Python can hold
        "9999-12-31T23:59:59-01:00",
        "2262-04-11T00:00:00Z",
        "2262-04-12T00:00:00Z",
        "1677-09-21T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "1969-12-31T23:59:59.999999999Z",
        "1970-01-01T00:59:59+01:00",  # 1969-12-31T23:59:59Z
        z(NOW + timedelta(days=2)),
        z(NOW + timedelta(days=1, microseconds=1)),
    ],
)
def test_times_outside_the_window_are_refused(when: str) -> None:
    detail = refused_time(run_event(event_time=when))
    assert "/eventTime" in detail and when in detail and "1970-01-01T00:00:00.000000Z" in detail


@pytest.mark.parametrize(
    "when",
    [
        "1970-01-01T00:00:00Z",
        "1970-01-01T01:00:00+01:00",
        "1970-01-01 00:00Z",
        z(NOW + timedelta(hours=23)),
        z(NOW + timedelta(days=1)),  # the bound itself
        z(NOW - timedelta(days=365 * 30)),
    ],
)
def test_times_inside_the_window_are_accepted(when: str) -> None:
    assert validate_event(run_event(event_time=when), now=NOW).subject.startswith("run:")


def test_every_kind_of_event_is_checked() -> None:
    from events import dataset_event, job_event

    for build in (dataset_event, job_event):
        event = build()
        event["eventTime"] = "9999-01-01T00:00:00Z"
        refused_time(event)


def test_the_window_is_configurable_and_the_clock_injectable() -> None:
    window = EventTimeWindow(earliest=datetime(2020, 1, 1, tzinfo=UTC), max_ahead=timedelta(seconds=60))
    refused_time(run_event(event_time="2019-12-31T23:59:59Z"), window=window)
    refused_time(run_event(event_time=z(NOW + timedelta(seconds=61))), window=window)
    validate_event(run_event(event_time=z(NOW + timedelta(seconds=60))), now=NOW, window=window)
    # The clock is the caller's: the same event is refused at one `now` and accepted at another.
    event = run_event(event_time="2030-01-01T00:00:00Z")
    refused_time(event)
    validate_event(event, now=datetime(2029, 12, 31, 1, tzinfo=UTC))


def test_the_window_never_passes_what_rego_cannot_parse() -> None:
    window = EventTimeWindow(earliest=REGO_TIME_MIN, max_ahead=timedelta(days=36_525))
    late = datetime(2262, 4, 10, tzinfo=UTC)
    validate_event(run_event(event_time=z(REGO_TIME_MAX)), now=late, window=window)
    refused_time(run_event(event_time="2262-04-11T23:47:17Z"), now=late, window=window)
    validate_event(run_event(event_time=z(REGO_TIME_MIN)), now=NOW, window=window)
    refused_time(run_event(event_time="1677-09-21T00:12:43.145224Z"), window=window)
    with pytest.raises(ValueError, match="not before"):
        EventTimeWindow(earliest=datetime(1677, 9, 21, tzinfo=UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        EventTimeWindow(earliest=datetime(2000, 1, 1))
    with pytest.raises(ValueError, match="max_ahead"):
        EventTimeWindow(max_ahead=timedelta(seconds=-1))


def test_settings_read_the_window_from_the_environment(tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = {"LEDGER_DATA_DIR": str(tmp_path), "LEDGER_ORIGIN": "ledger.test/log"}
    default = Settings.from_env(base).event_time_window
    assert default == EventTimeWindow(earliest=datetime(1970, 1, 1, tzinfo=UTC), max_ahead=timedelta(days=1))
    custom = Settings.from_env(
        {**base, "LEDGER_EVENT_TIME_MIN": "2000-01-01T00:00:00Z", "LEDGER_EVENT_TIME_MAX_AHEAD_SECONDS": "300"}
    ).event_time_window
    assert custom == EventTimeWindow(earliest=datetime(2000, 1, 1, tzinfo=UTC), max_ahead=timedelta(seconds=300))
    for env, says in [
        ({"LEDGER_EVENT_TIME_MIN": "yesterday"}, "LEDGER_EVENT_TIME_MIN"),
        ({"LEDGER_EVENT_TIME_MIN": "2000-01-01T00:00:00"}, "offset"),
        ({"LEDGER_EVENT_TIME_MIN": "1600-01-01T00:00:00Z"}, "not before"),
        ({"LEDGER_EVENT_TIME_MAX_AHEAD_SECONDS": "-5"}, "LEDGER_EVENT_TIME_MAX_AHEAD_SECONDS"),
        ({"LEDGER_EVENT_TIME_MAX_AHEAD_SECONDS": str(10**12)}, "max_ahead"),
    ]:
        with pytest.raises(ConfigurationError, match=says):
            Settings.from_env({**base, **env})


# --- what a policy sees ---------------------------------------------------------------------------


def _rego_parses(values: list[str]) -> list[bool]:
    # The promotion policy's own conversion (policies/promotion.rego `ts_ns`): Z rewritten as +00:00.
    query = 'is_number(time.parse_rfc3339_ns(replace(replace(input.t, "Z", "+00:00"), "z", "+00:00")))'
    parsed = []
    for value in values:
        interpreter = rego.new_interpreter()
        rego.set_input(interpreter, json.dumps({"t": value}), package="t")
        try:
            parsed.append(rego.query(interpreter, query, package="t") == [True])
        except Exception:
            parsed.append(False)
    return parsed


def test_policy_time_always_parses_in_rego() -> None:
    inputs = [
        "2024-01-01 00:00:00Z",
        "2024-01-01T00:00Z",
        "2024-01-01T00:00:00.123456789+05:30",
        "2024-01-01T00:00:00z",
        "1970-01-01T00:00:00Z",
        z(REGO_TIME_MIN),
        z(REGO_TIME_MAX),
    ]
    outputs = [policy_time(v) for v in inputs]
    assert all(o is not None for o in outputs), outputs
    assert _rego_parses([o for o in outputs if o is not None]) == [True] * len(inputs)
    assert not any(_rego_parses(inputs[:2]))  # the raw forms do not: why the input is normalized
    for outside in ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2262-04-12T00:00:00Z", "x", None, 5]:
        assert policy_time(outside) is None


# --- over HTTP: refused with a problem naming eventTime, nothing written -------------------------


def _log_rows(runtime) -> tuple[int, ...]:  # type: ignore[no-untyped-def]
    with runtime.db.read() as session:
        return tuple(
            session.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one()
            for t in ("log_entries", "entry_payloads", "tree_nodes")
        )


def _bad_times() -> list[str]:
    return [
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "2262-04-11T00:00:00Z",
        "1969-12-31T23:59:59Z",
        z(datetime.now(UTC) + timedelta(days=2)),
    ]


def test_http_single_events_outside_the_window_are_400(client, tokens, runtime) -> None:  # type: ignore[no-untyped-def]
    for when in _bad_times():
        before = _log_rows(runtime)
        r = client.post(LINEAGE, json=run_event(event_time=when), headers=auth(tokens.pipeline))
        assert r.status_code == 400, (when, r.get_json())
        assert r.mimetype == "application/problem+json"
        problem = r.get_json()
        assert problem["field"] == "/eventTime" and when in problem["detail"], problem
        assert _log_rows(runtime) == before, f"{when}: a refused event wrote to the log"


def test_http_batch_refuses_each_event_outside_the_window(client, tokens, runtime) -> None:  # type: ignore[no-untyped-def]
    bad = _bad_times()
    events = []
    for when in bad:
        events += [run_event(), run_event(event_time=when)]
    before = _log_rows(runtime)
    r = client.post(f"{LINEAGE}/batch", json=events, headers=auth(tokens.pipeline))
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["status"] == "partial_success"
    assert body["summary"] == {"received": 2 * len(bad), "successful": len(bad), "failed": len(bad)}
    failed = {f["index"]: f for f in body["failed_events"]}
    assert sorted(failed) == list(range(1, 2 * len(bad), 2))
    for i, when in zip(sorted(failed), bad, strict=True):
        assert failed[i]["field"] == "/eventTime" and when in failed[i]["reason"], failed[i]
    assert sorted(rec["index"] for rec in body["receipts"]) == list(range(0, 2 * len(bad), 2))
    assert _log_rows(runtime)[0] == before[0] + len(bad)  # only the good events are in the log


def test_http_edges_of_the_window_are_accepted(client, tokens) -> None:  # type: ignore[no-untyped-def]
    for when in ["1970-01-01T00:00:00Z", z(datetime.now(UTC) + timedelta(hours=23))]:
        r = client.post(LINEAGE, json=run_event(event_time=when), headers=auth(tokens.pipeline))
        assert r.status_code == 201, (when, r.get_json())


# --- regression: a promotion downstream of any accepted time is decided by the policy -------------


def _train(post: Any, when: str) -> str:
    """A training run (START and COMPLETE at `when`) on the pipeline's pinned features."""
    run_id = str(uuid.uuid4())
    for event_type in ("START", "COMPLETE"):
        post(
            run_event(
                event_type=event_type,
                run_id=run_id,
                namespace="ml",
                job="train_churn",
                inputs=[versioned("s3://features", "churn", "f-5")],
                outputs=[{"namespace": "s3://models", "name": "churn", "facets": {}}],
                job_facets={"sourceCodeLocation": GIT},
                event_time=when,
            )
        )
    return run_id


def test_promotion_downstream_of_edge_times_is_evaluated(client, tokens, runtime) -> None:  # type: ignore[no-untyped-def]
    """Regression: such a promotion failed in Rego (500, later a denial "policy evaluation failed")."""
    registrar = runtime.principals.create("ml-registrar", roles=["pipeline"])[1]

    def post(event: dict[str, Any]) -> None:
        r = client.post(LINEAGE, json=event, headers=auth(tokens.pipeline))
        assert r.status_code == 201, r.get_json()

    build_pipeline(post)
    base = "/api/v1/models/churn/versions"
    times = {
        "earliest": ("1970-01-01T00:00:00Z", True),
        "latest": (z(datetime.now(UTC) + timedelta(hours=23)), False),  # validations precede completion
        "space": ("2024-01-01 00:00:00Z", True),
        "noseconds": ("2024-01-01T00:00Z", True),
    }
    for version, (when, allowed) in times.items():
        run_id = _train(post, when)
        r = client.post(base, json=registration(run_id, version=version), headers=auth(registrar))
        assert r.status_code == 201, r.get_json()
        for kind in ("performance", "bias"):
            r = client.post(f"{base}/{version}/validations", json=validation(kind), headers=auth(tokens.pipeline))
            assert r.status_code == 201, r.get_json()
        approval = {"stage": "production", "comment": "ok"}
        r = client.post(f"{base}/{version}/approvals", json=approval, headers=auth(tokens.approver))
        assert r.status_code == 201, r.get_json()
        r = client.post(f"{base}/{version}/promotions", json={"stage": "production"}, headers=auth(tokens.pipeline))
        assert r.status_code in (201, 403), (when, r.status_code, r.get_data(as_text=True)[:500])
        decision = r.get_json()["decision"]
        assert not any("evaluation" in v for v in decision["violations"]), (when, decision["violations"])
        assert decision["allowed"] is allowed, (when, decision["violations"])
        if not allowed:  # the times were parsed and compared: completion after the validations
            assert any("not recorded after the training run completed" in v for v in decision["violations"])
