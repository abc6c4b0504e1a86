"""Entry headers and payload digests (DESIGN.md 3.1, normative).

The Merkle leaf is the RFC 8785 (JCS) encoding of the header; the payload is bound to it by
`payload_digest = "sha256:" + hex(SHA-256(salt || JCS(payload)))` with a 32-byte random salt, so the
payload can be erased later without breaking any proof.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import rfc8785

from ledger.tlog.errors import InvalidEntryError
from ledger.tlog.hashing import leaf_hash

ENTRY_FORMAT = "ledger-entry/v1"
SALT_SIZE = 32
HEADER_KEYS = frozenset({"format", "seq", "kind", "subject", "integrated_time", "principal", "payload_digest"})
TIME_RE = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z\Z")
DIGEST_RE = re.compile(r"\Asha256:[0-9a-f]{64}\Z")


def valid_time(value: str) -> bool:
    """True for RFC 3339 UTC with 6 fractional digits and `Z` that names a real instant."""
    if not TIME_RE.match(value):
        return False
    try:
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return False
    return True


# DESIGN.md 3.1: the closed set of kinds in v1 and the prefix each subject carries.
KINDS: dict[str, str] = {
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


_MAX_SAFE_INT = 2**53 - 1
_encode_str = json.JSONEncoder(ensure_ascii=False).encode


_dumps_sorted = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"), check_circular=False
).encode


# A character outside the BMP: UTF-16 orders it by its surrogates, so JCS may sort it differently.
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def _plain(value: Any) -> bool:
    """True if `value` holds only what `json.dumps(sort_keys=True)` encodes exactly as RFC 8785 does:
    strings, booleans, null, integers within +-(2**53 - 1), and object keys that are strings within
    the BMP (where code-point order is UTF-16 code-unit order). Floats take the general encoder (ES6
    number form).

    This walk is on every event's hot path (bench/hot_path.py), so it does per value only what a
    value needs: a dict's keys are checked at once (`"".join` refuses a key that is not a string;
    a joined ASCII string answers the BMP question in O(1)), strings are skipped by one type test.
    """
    t = type(value)
    if t is not dict and t is not list:
        return t is str or t is bool or value is None or (t is int and -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT)
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        v = pop()
        if type(v) is dict:
            try:
                keys = "".join(v)
            except TypeError:  # a key that is not a string: RFC 8785 has no form for it
                return False
            if not keys.isascii() and _ASTRAL.search(keys):
                return False
            children = v.values()
        else:
            children = v
        for x in children:
            t = type(x)
            if t is str:
                continue
            if t is dict or t is list:
                push(x)
            elif t is int:
                if not -_MAX_SAFE_INT <= x <= _MAX_SAFE_INT:
                    return False
            elif t is not bool and x is not None:
                return False
    return True


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical bytes of a JSON value.

    Documents without floats (most OpenLineage events) go through the C JSON encoder, which produces
    the same bytes for them (RFC 8785 3.2.2.2 string escaping is JSON's minimal escaping, keys sorted);
    tests cross-check this against `rfc8785` on generated documents. Anything else takes `rfc8785`.
    """
    try:
        if _plain(value):
            return _dumps_sorted(value).encode()
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as e:  # UnicodeEncodeError is a ValueError
        raise InvalidEntryError(f"value cannot be canonicalised (RFC 8785): {e}") from e


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def payload_digest(salt: bytes, canonical_payload: bytes) -> str:
    """DESIGN.md 3.1: "sha256:" + hex(SHA-256(salt || JCS(payload)))."""
    return "sha256:" + hashlib.sha256(salt + canonical_payload).hexdigest()


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 / ISO 8601 time (a trailing `Z` allowed), or None when absent or malformed."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with exactly 6 fractional digits and `Z`."""
    if moment.tzinfo is None:
        raise ValueError("integrated_time must be timezone-aware")
    t = moment.astimezone(UTC)
    # Formatted by hand: strftime("%Y") does not zero-pad years below 1000 on glibc.
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{t.microsecond:06d}Z"


@dataclass(frozen=True, kw_only=True, slots=True)
class EntryHeader:
    """The signed-over part of an entry; its JCS bytes are the Merkle leaf."""

    seq: int
    kind: str
    subject: str
    integrated_time: str
    principal: str
    payload_digest: str
    format: str = ENTRY_FORMAT

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "seq": self.seq,
            "kind": self.kind,
            "subject": self.subject,
            "integrated_time": self.integrated_time,
            "principal": self.principal,
            "payload_digest": self.payload_digest,
        }

    def canonical(self) -> bytes:
        """RFC 8785 bytes of the header.

        The header has fixed ASCII keys and only string and small integer values, so JCS reduces to
        the keys in code-unit order and each string escaped as JSON does with `ensure_ascii=False`
        (RFC 8785 3.2.2.2 escapes exactly `"`, `\\` and U+0000..U+001F, with the short forms for
        \\b \\t \\n \\f \\r and lowercase \\u00xx otherwise, as `json.dumps` does). This is ~10x
        faster than a general encoder; tests cross-check it against `rfc8785` on arbitrary strings.
        """
        if not 0 <= self.seq <= _MAX_SAFE_INT:
            raise InvalidEntryError(f"seq {self.seq} is outside the range RFC 8785 can encode")
        enc = _encode_str
        try:
            return (
                f'{{"format":{enc(self.format)},"integrated_time":{enc(self.integrated_time)},'
                f'"kind":{enc(self.kind)},"payload_digest":{enc(self.payload_digest)},'
                f'"principal":{enc(self.principal)},"seq":{self.seq},"subject":{enc(self.subject)}}}'
            ).encode()
        except UnicodeEncodeError as e:  # a lone surrogate: not representable in UTF-8 or JCS
            raise InvalidEntryError(f"entry {self.seq}: header holds a string RFC 8785 cannot encode") from e

    def leaf_hash(self) -> bytes:
        return leaf_hash(self.canonical())

    @staticmethod
    def from_json(obj: Any) -> EntryHeader:
        """Validates a header object strictly (keys, types, formats)."""
        if not isinstance(obj, dict):
            raise InvalidEntryError("entry header is not an object")
        keys = set(obj)
        if keys != HEADER_KEYS:
            raise InvalidEntryError(
                f"entry header keys differ: missing {sorted(HEADER_KEYS - keys)}, extra {sorted(keys - HEADER_KEYS)}"
            )
        if obj["format"] != ENTRY_FORMAT:
            raise InvalidEntryError(f"entry format {obj['format']!r} is not {ENTRY_FORMAT}")
        seq = obj["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise InvalidEntryError(f"entry seq {seq!r} is not a non-negative integer")
        for k in ("kind", "subject", "integrated_time", "principal", "payload_digest"):
            if not isinstance(obj[k], str):
                raise InvalidEntryError(f"entry {seq}: header field {k} is not a string")
        prefix = KINDS.get(obj["kind"])
        if prefix is None:
            raise InvalidEntryError(f"entry {seq}: unknown kind {obj['kind']!r}")
        if not obj["subject"].startswith(prefix):
            raise InvalidEntryError(f"entry {seq}: subject {obj['subject']!r} does not start with {prefix!r}")
        if not valid_time(obj["integrated_time"]):
            raise InvalidEntryError(f"entry {seq}: integrated_time {obj['integrated_time']!r} is not RFC 3339 UTC")
        if not DIGEST_RE.match(obj["payload_digest"]):
            raise InvalidEntryError(f"entry {seq}: payload_digest {obj['payload_digest']!r} is malformed")
        return EntryHeader(
            seq=seq,
            kind=obj["kind"],
            subject=obj["subject"],
            integrated_time=obj["integrated_time"],
            principal=obj["principal"],
            payload_digest=obj["payload_digest"],
        )


def check_payload(header: EntryHeader, salt: bytes, canonical_payload: bytes) -> None:
    """Raises `InvalidEntryError` unless the payload bytes and salt match the header's digest."""
    if len(salt) != SALT_SIZE:
        raise InvalidEntryError(f"entry {header.seq}: salt has {len(salt)} bytes, expected {SALT_SIZE}")
    if payload_digest(salt, canonical_payload) != header.payload_digest:
        raise InvalidEntryError(f"entry {header.seq}: payload does not match payload_digest")
