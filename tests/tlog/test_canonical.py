"""The fast path of `canonical_json` must produce exactly `rfc8785.dumps`'s bytes, or refuse alike."""

from __future__ import annotations

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.tlog.entry import canonical_json
from ledger.tlog.errors import InvalidEntryError

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) - 5, max_value=2**53 + 5)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
documents = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=40,
)


@settings(max_examples=600, deadline=None)
@given(documents)
def test_canonical_json_equals_rfc8785(doc: object) -> None:
    try:
        expected = rfc8785.dumps(doc)
    except (rfc8785.CanonicalizationError, ValueError, TypeError):
        with pytest.raises(InvalidEntryError):
            canonical_json(doc)
        return
    assert canonical_json(doc) == expected


@pytest.mark.parametrize(
    "doc",
    [
        {"\U0001f600": 1, "\ue000": 2},  # key order: UTF-16 code units, not code points
        {"a": '\u2028\u2029\x7f\x00\x1f"\\'},
        {"n": 2**53 - 1, "m": -(2**53 - 1)},
        [1.0, 0.1, 1e21, -0.0, 5e-324],
    ],
)
def test_edge_cases_match(doc: object) -> None:
    assert canonical_json(doc) == rfc8785.dumps(doc)


@pytest.mark.parametrize("doc", [{"x": "\ud800"}, {"x": 2**53 + 1}, {"x": float("nan")}])
def test_refused_like_rfc8785(doc: object) -> None:
    with pytest.raises(InvalidEntryError):
        canonical_json(doc)
