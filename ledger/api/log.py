"""Log and proof endpoints (DESIGN.md 4, normative paths)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Response, current_app, jsonify, stream_with_context, url_for
from flask_smorest import Blueprint

from ledger.api.auth import current_principal, requires
from ledger.api.params import int_arg, int_value, str_arg
from ledger.api.schemas import (
    ConsistencyProofSchema,
    EntryPageSchema,
    EntrySchema,
    InclusionProofSchema,
    KeysSchema,
    ProblemSchema,
    ReceiptSchema,
)
from ledger.errors import InvalidRequestError, NotFoundError
from ledger.security.visibility import PayloadGate, withhold_for
from ledger.store.export import export_lines
from ledger.store.ledger import Ledger, prove_entries
from ledger.tlog.entry import KINDS

blp = Blueprint("log", __name__, url_prefix="/api/v1/log", description="The signed log and its proofs")

MAX_PAGE = 1000


def _int_params(*names: str) -> list[dict[str, object]]:
    schema = {"type": "integer", "minimum": 0}
    return [{"in": "query", "name": n, "required": True, "schema": schema} for n in names]


def _ledger() -> Ledger:
    return current_app.extensions["ledger.ledger"]  # type: ignore[no-any-return]


@blp.route("/checkpoint", methods=["GET"])
@blp.doc(responses={"200": {"description": "signed note", "content": {"text/plain": {"schema": {"type": "string"}}}}})
def checkpoint() -> Response:
    """The current signed checkpoint (C2SP signed note; public)."""
    cp = _ledger().checkpoint()
    return Response(cp.note, mimetype="text/plain", headers={"Cache-Control": "no-store"})


@blp.route("/checkpoint/cosigned", methods=["GET"])
@blp.doc(
    responses={
        "200": {
            "description": "signed note with cosignatures",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        "404": {"description": "no checkpoint has been cosigned yet"},
    }
)
def cosigned_checkpoint() -> Response:
    """The largest stored checkpoint that witnesses cosigned, with every cosignature (public)."""
    ledger = _ledger()
    with ledger.db.read() as session:
        cp = ledger.latest_cosigned(session)
    if cp is None:
        raise NotFoundError("no checkpoint of this log has been cosigned by a witness yet")
    return Response(cp.note, mimetype="text/plain", headers={"Cache-Control": "no-store"})


@blp.route("/keys", methods=["GET"])
@blp.response(200, KeysSchema)
def keys() -> dict[str, object]:
    """Every key that has signed this log's checkpoints, with its validity (public)."""
    return current_app.extensions["ledger.keyring"].describe()  # type: ignore[no-any-return]


# `seq` is taken as a string and parsed here, so that "abc", "-1" or a number beyond any seq get a
# 400 naming `seq` (an int converter would answer a bare 404, and let 10**30 reach the database,
# where it overflows BIGINT: a 500).
@blp.route(
    "/entries/<seq>",
    methods=["GET"],
    endpoint="entry",
    parameters=[{"in": "path", "name": "seq", "schema": {"type": "integer", "minimum": 0}}],
)
@blp.doc(security=[{"bearer": []}])
@blp.alt_response(200, schema=EntrySchema, description="the entry")
@blp.alt_response(400, schema=ProblemSchema, description="seq is not a non-negative integer")
@blp.alt_response(404, schema=ProblemSchema, description="no such entry")
@requires()
def entry(seq: str) -> Response:
    """One entry: header, payload and salt (null once erased), leaf hash."""
    return jsonify(_visible([_ledger().entry(int_value("seq", seq, what="path parameter")).to_json()])[0])


@blp.route(
    "/entries/<seq>/receipt",
    methods=["GET"],
    endpoint="receipt",
    parameters=[{"in": "path", "name": "seq", "schema": {"type": "integer", "minimum": 0}}],
)
@blp.doc(security=[{"bearer": []}])
@blp.alt_response(200, schema=ReceiptSchema, description="the entry's receipt")
@blp.alt_response(400, schema=ProblemSchema, description="seq is not a non-negative integer")
@blp.alt_response(404, schema=ProblemSchema, description="no such entry")
@requires()
def receipt(seq: str) -> Response:
    """A receipt for entry `seq` (DESIGN.md 3.3) against the largest witness-cosigned checkpoint that
    holds it (cosignatures in its note), else the current one; `ledger verify RECEIPT` checks it."""
    n = int_value("seq", seq, what="path parameter")
    proven = prove_entries(_ledger(), [n])
    e = proven.entries[n]
    return jsonify(
        {
            "seq": n,
            "leaf_hash": e.leaf_hash.hex(),
            "integrated_time": e.header.integrated_time,
            "entry_url": url_for("log.entry", seq=n, _external=True),
            "checkpoint": proven.checkpoint.note,
            "inclusion_proof": [h.hex() for h in proven.proofs[n]],
        }
    )


@blp.route("/entries", methods=["GET"])
@blp.doc(
    security=[{"bearer": []}],
    parameters=[
        {"in": "query", "name": "kind", "schema": {"type": "string", "enum": sorted(KINDS)}},
        {"in": "query", "name": "subject", "schema": {"type": "string"}},
        {"in": "query", "name": "after", "schema": {"type": "integer", "minimum": -1}},
        {"in": "query", "name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
    ],
)
@blp.alt_response(200, schema=EntryPageSchema, description="a page of entries in seq order")
@requires()
def entries() -> Response:
    """Entries in seq order, optionally by kind and subject; page with `after` = last seq seen."""
    kind = str_arg("kind")
    if kind is not None and kind not in KINDS:
        raise InvalidRequestError(f"unknown kind {kind!r}; expected one of {', '.join(sorted(KINDS))}", field="kind")
    after = int_arg("after", default=-1, minimum=-1)
    limit = int_arg("limit", default=100, minimum=1, maximum=MAX_PAGE)
    rows = _ledger().entries(kind=kind, subject=str_arg("subject"), after=after, limit=limit)
    return jsonify(
        {
            "entries": _visible([r.to_json() for r in rows]),
            "next_after": rows[-1].header.seq if len(rows) == limit else None,
        }
    )


@blp.route("/export", methods=["GET"])
@blp.doc(
    security=[{"bearer": []}],
    responses={"200": {"description": "entries as lines", "content": {"text/tab-separated-values": {}}}},
)
@requires()
def export() -> Response:
    """Streams entries [start, end) as `leaf_hash TAB header TAB salt TAB payload` lines (for verify)."""
    ledger = _ledger()
    size = ledger.size()
    start = int_arg("start", default=0)
    end = int_arg("end", default=size)
    if end > size:
        raise InvalidRequestError(f"end={end} is larger than the log ({size} entries)", field="end")
    if start > end:
        raise InvalidRequestError(f"start={start} is larger than end={end}", field="start")

    gate = PayloadGate(current_principal())

    def generate() -> Iterator[bytes]:
        yield from export_lines(ledger.db, start, end, gate=None if gate.open else gate)

    return Response(stream_with_context(generate()), mimetype="text/tab-separated-values")


def _visible(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entry JSON with the payloads this principal may not read withheld (see ledger.security.visibility)."""
    return withhold_for(current_principal(), _ledger().db, entries)


@blp.route("/proof/inclusion", methods=["GET"])
@blp.doc(security=[{"bearer": []}], parameters=_int_params("seq", "tree_size"))
@blp.alt_response(200, schema=InclusionProofSchema, description="RFC 9162 inclusion proof")
@requires()
def inclusion() -> Response:
    """Inclusion proof of entry `seq` in the tree of `tree_size` (hashes leaf side first)."""
    seq = int_arg("seq")
    size = int_arg("tree_size", minimum=1)
    leaf, proof = _ledger().inclusion_proof(seq, size)
    return jsonify({"seq": seq, "tree_size": size, "leaf_hash": leaf.hex(), "hashes": [h.hex() for h in proof]})


@blp.route("/proof/consistency", methods=["GET"])
@blp.doc(security=[{"bearer": []}], parameters=_int_params("first", "second"))
@blp.alt_response(200, schema=ConsistencyProofSchema, description="RFC 9162 consistency proof")
@requires()
def consistency() -> Response:
    """Consistency proof between the trees of `first` and `second` entries."""
    first = int_arg("first")
    second = int_arg("second")
    proof = _ledger().consistency_proof(first, second)
    return jsonify({"first": first, "second": second, "hashes": [h.hex() for h in proof]})
