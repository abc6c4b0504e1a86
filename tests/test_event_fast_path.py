"""The hot path of `validate_event` skips the marshmallow load when `_proven` shows the envelope
valid. That is sound only if whatever `_proven` passes, the schema passes too: checked here on
mutated events (members dropped, retyped or replaced, facets made odd), and on the schema's whole
field list (a field kind the plan does not know stops the import)."""

from __future__ import annotations

import copy
from typing import Any

from events import dataset_event, job_event, run_event
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from ledger.lineage.events import _PLANS, _SCHEMAS, _proven, classify

ODD = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-3, max_value=3)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(
        [
            "",
            "x",
            " ",
            "\x01",
            "ü" * 400,
            "2024-01-01T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "https://example.com",
            "not a url",
            "00000000-0000-4000-8000-000000000000",
        ]
    )
    | st.just([]).map(list)
    | st.just({}).map(dict)
    | st.just([{}])
    | st.just({"datasetVersion": 5})
    | st.just({"datasetVersion": "v" * 2000})
    | st.just({"f": None})
    | st.just({"f": []})
)


def rich() -> list[dict[str, Any]]:
    ds = {"namespace": "s3://a", "name": "b", "facets": {"version": {"datasetVersion": "1"}, "schema": {"fields": []}}}
    return [
        run_event(
            inputs=[{**ds, "inputFacets": {"x": {}}}],
            outputs=[{**ds, "outputFacets": {"y": {}}}],
            run_facets={"parent": {"run": {"runId": "x"}}},
            job_facets={"sql": {"query": "q"}},
        ),
        dataset_event(version={"datasetVersion": "7"}),
        job_event(),
    ]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(paths(v, (*prefix, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(paths(v, (*prefix, i)))
    return out


@settings(max_examples=1500, deadline=None)
@given(data=st.data(), base=st.sampled_from(range(3)))
def test_what_the_fast_path_passes_the_schema_passes(data: st.DataObject, base: int) -> None:
    event = copy.deepcopy(rich()[base])
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        candidates = paths(event)
        path = data.draw(st.sampled_from(candidates))
        parent: Any = event
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(data.draw(ODD))  # drawn values are shared: never mutate them
    try:
        kind = classify(event)
    except Exception:
        return
    if _proven(_PLANS[kind], event):
        try:
            _SCHEMAS[kind].load(event)
        except ValidationError as e:
            raise AssertionError(f"fast path passed what the schema refuses: {e.messages}") from e


def test_the_fast_path_passes_the_usual_events() -> None:
    for event in rich():
        assert _proven(_PLANS[classify(event)], event)
