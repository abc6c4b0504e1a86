"""Reading request bodies: content type, gzip, size, UTF-8 and strict JSON."""

from __future__ import annotations

import gc
import json
import zlib
from typing import Any

from flask import current_app, request

from ledger.errors import InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError

# Far deeper than any OpenLineage event (facets nest a few levels; schema fields a few more).
MAX_DEPTH = 128


class MalformedJSONError(InvalidRequestError):
    """Malformed JSON."""

    title = "Malformed JSON"

    def __init__(self, detail: str) -> None:
        super().__init__(f"body is not valid JSON: {detail}", field="body")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """RFC 8259 4 / RFC 7493 2.3: member names must be unique. Parsers disagree on which duplicate
    wins, so a signed copy of an ambiguous object could be read differently by a verifier: refuse."""
    obj: dict[str, Any] = {}
    for name, value in pairs:
        if name in obj:
            raise ValueError(f"duplicate member name {name!r}")
        obj[name] = value
    return obj


def _decompress(raw: bytes, limit: int) -> bytes:
    """Inflates a gzip body, never past `limit` bytes (a small bomb must not cost memory).

    RFC 1952 2.2: a gzip stream is a series of members, and HTTP gzip coding (RFC 9110 8.4.1.3) is
    that format, so every member is inflated: dropping the ones after the first would silently lose
    events. Bytes after the last member that are not another member are refused.
    """
    out = bytearray()
    data = raw
    while True:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            # max_length >= 1 here (len(out) <= limit), and 0 would mean "unbounded" to zlib.
            out += d.decompress(data, limit + 1 - len(out))
        except zlib.error as e:
            raise InvalidRequestError(f"body is not valid gzip: {e}", field="Content-Encoding") from e
        if len(out) > limit or d.unconsumed_tail:
            raise PayloadTooLargeError(
                f"decompressed body is larger than LEDGER_MAX_BODY_BYTES ({limit} bytes)", field="body"
            )
        if not d.eof:
            raise InvalidRequestError("gzip body is truncated", field="Content-Encoding")
        data = d.unused_data
        if not data:
            return bytes(out)


def _check_depth(document: Any, limit: int, *, containers: int) -> None:
    """Refuses documents nested deeper than `limit` (iteratively: the check itself cannot overflow).

    `json.loads` copes with about 1000 levels, but everything after it (validation, RFC 8785, the
    JSON encoder, projections) recurses too, from deeper in the stack: a document that barely
    parsed would fail later, as a 500 or half-way through a batch.

    `containers` is the number of `{` and `[` in the text, an upper bound on the depth (some may be
    inside strings): a single event rarely has more than `limit` of them, and then costs no walk.
    Otherwise the walk goes level by level and looks at containers only.
    """
    if containers <= limit:
        return
    level = [document] if type(document) is dict or type(document) is list else []
    depth = 1
    while level:
        if depth > limit:
            raise InvalidRequestError(f"JSON is nested deeper than {limit} levels", field="body")
        deeper: list[Any] = []
        add = deeper.append
        for value in level:
            for child in value.values() if type(value) is dict else value:
                if type(child) is dict or type(child) is list:
                    add(child)
        level = deeper
        depth += 1


def json_body(*, check_strings: bool = True) -> Any:
    """The request's JSON document; raises a 4xx LedgerError naming what is wrong.

    `check_strings=False` leaves NUL and unpaired surrogates to the caller (the lineage batch refuses
    them per event, so one bad event does not refuse its batch).
    """
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaTypeError(
            f"Content-Type must be application/json, not {request.content_type or 'missing'!r}",
            field="Content-Type",
        )
    limit = int(current_app.config["MAX_CONTENT_LENGTH"])
    raw = request.get_data(cache=False)
    encoding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding in ("gzip", "x-gzip"):  # RFC 9110 8.4.1.3: x-gzip is an alias
        raw = _decompress(raw, limit)
    elif encoding != "identity":
        raise UnsupportedMediaTypeError(
            f"Content-Encoding {encoding!r} is not supported (gzip is)", field="Content-Encoding"
        )
    return parse_json(raw, check_strings=check_strings)


def parse_json(raw: bytes, *, check_strings: bool = True) -> Any:
    """Strict JSON from (decompressed) body bytes: UTF-8, unique member names, no NaN or Infinity,
    at most `MAX_DEPTH` levels; raises a 4xx LedgerError naming what is wrong. Flask-free, so the
    hot-path benchmark (bench/hot_path.py) measures exactly what a request pays."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidRequestError(f"body is not valid UTF-8 at byte {e.start}", field="body") from e
    if not text.strip():
        raise InvalidRequestError("body is empty; a JSON document is required", field="body")
    # A parsed JSON document holds no reference cycles, so the cyclic GC has nothing to find in it;
    # left on, it traverses the half-built document again and again (a batch of 500 events parsed
    # at twice the cost, bench/hot_path.py). Paused only if it was on, and only for the parse.
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        document = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_members)
    except RecursionError as e:
        raise InvalidRequestError("JSON is nested too deeply", field="body") from e
    except ValueError as e:
        where = f" (line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
        msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
        raise MalformedJSONError(msg + where) from e
    finally:
        if paused:
            gc.enable()
    _check_depth(document, MAX_DEPTH, containers=raw.count(b"{") + raw.count(b"["))
    pointer = _unstorable(document) if check_strings else None
    if pointer is not None:
        raise InvalidRequestError(
            f"{pointer}: NUL characters and unpaired surrogates are not accepted in any string", field=pointer
        )
    return document


def _bad_text(s: str) -> bool:
    if "\x00" in s:
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate: no UTF-8, no JSON canonical form, no PostgreSQL text
        return True
    return False


def _unstorable(document: Any) -> str | None:
    """JSON pointer of the first string (member names included) no database could store, if any."""
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _bad_text(value):
                return path or "/"
        elif isinstance(value, dict):
            for k, v in value.items():
                key = k.replace("~", "~0").replace("/", "~1")
                if _bad_text(k):
                    return f"{path}/{key}"
                stack.append((f"{path}/{key}", v))
        elif isinstance(value, list):
            stack.extend((f"{path}/{i}", v) for i, v in enumerate(value))
    return None
