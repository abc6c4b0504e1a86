"""Query-string and path parameters, validated with a problem that names the parameter."""

from __future__ import annotations

from flask import request

from ledger.errors import InvalidRequestError

MAX_INT = 2**53 - 1
# Longer than any integer in [-MAX_INT, MAX_INT]; checked before int() so that a huge digit string
# neither costs quadratic time nor trips Python's 4300-digit conversion limit (a ValueError, i.e. 500).
_MAX_DIGITS = len(str(MAX_INT)) + 1


def int_value(name: str, raw: str, *, minimum: int = 0, maximum: int = MAX_INT, what: str = "query parameter") -> int:
    """Parses a decimal integer in [minimum, maximum] (ASCII digits, optional leading '-')."""
    negative = raw.startswith("-")
    digits = raw[1:] if negative else raw
    if not (raw.isascii() and digits.isdigit()):
        raise InvalidRequestError(f"{what} {name!r} must be an integer, got {raw[:40]!r}", field=name)
    significant = digits.lstrip("0") or "0"
    if len(significant) > _MAX_DIGITS:
        raise InvalidRequestError(f"{what} {name!r} must be between {minimum} and {maximum}", field=name)
    value = -int(significant) if negative else int(significant)
    if not minimum <= value <= maximum:
        raise InvalidRequestError(f"{what} {name!r} must be between {minimum} and {maximum}", field=name)
    return value


def int_arg(name: str, *, default: int | None = None, minimum: int = 0, maximum: int = MAX_INT) -> int:
    """An integer query parameter; required unless `default` is given."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        if default is None:
            raise InvalidRequestError(f"query parameter {name!r} is required", field=name)
        return default
    return int_value(name, raw, minimum=minimum, maximum=maximum)


def str_arg(name: str, *, max_length: int = 2048) -> str | None:
    """A string query parameter; NUL is refused (no stored text can hold it, and PostgreSQL rejects it)."""
    raw = request.args.get(name)
    if raw is None:
        return None
    if len(raw) > max_length:
        raise InvalidRequestError(f"query parameter {name!r} is longer than {max_length}", field=name)
    if "\x00" in raw:
        raise InvalidRequestError(f"query parameter {name!r} contains a NUL character", field=name)
    return raw
