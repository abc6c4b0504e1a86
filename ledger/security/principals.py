"""Principals and API tokens (DESIGN.md 6).

Tokens are 256-bit random strings shown once; only their SHA-256 is stored, and lookups go by that
hash, so the database never holds a usable token and comparison time does not depend on how much of
a guess matches (the final check uses `hmac.compare_digest` anyway).

Every request reads its principal from the database (no cache): a revoked or rotated token answers
401 at once, on every worker and host. Failed attempts are counted per client address in the
database too (`auth_failures`), so every worker and host shares one count; past `max_failures` in a
window, further failures from that address get 429, but a valid token is never refused by it (a
proxy's address shared with a guesser locks no one out).

Names are NFC-normalised, and names holding bidirectional controls or zero-width characters are
refused: two names that look the same are the same name.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, select, text, update
from sqlalchemy.exc import IntegrityError

from ledger.errors import AuthenticationError, ConflictError, InvalidRequestError, NotFoundError, RateLimitedError
from ledger.lineage.names import invisible, nfc
from ledger.store.db import Database
from ledger.store.models import AuthFailure, Principal

ROLES = frozenset({"pipeline", "auditor", "approver", "security", "admin"})
TOKEN_PREFIX = "lgr_"  # noqa: S105  (a prefix that marks tokens in logs and scanners, not a secret)
NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._@-]{0,199}\Z")
TAG_RE = re.compile(r"\A[a-z][a-z0-9_-]{0,63}\Z")


def normal_name(value: str, field: str) -> str:
    """`value` in NFC; InvalidRequestError (400, naming `field`) if it holds a bidirectional control
    or a zero-width character (ledger.lineage.names)."""
    bad = invisible(value)
    if bad is not None:
        raise InvalidRequestError(
            f"{field} holds {bad}: bidirectional controls and zero-width characters are not accepted in names",
            field=field,
        )
    return nfc(value)


def _printable(text: str) -> bool:
    """No control characters and no lone surrogates (neither can be stored in PostgreSQL text)."""
    return not any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in text)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class AuthenticatedPrincipal:
    """Who is calling, as established from their token."""

    name: str
    roles: frozenset[str]
    namespaces: frozenset[str] = field(default_factory=frozenset)
    clearances: frozenset[str] = field(default_factory=frozenset)

    def has_any(self, *roles: str) -> bool:
        return bool(self.roles & set(roles))

    @property
    def reads_scoped(self) -> bool:
        """Pipelines read only their own namespaces (none listed: all); every other role reads all."""
        return not (self.roles - {"pipeline"}) and bool(self.namespaces)

    def may_read_namespace(self, namespace: str) -> bool:
        return not self.reads_scoped or namespace in self.namespaces

    def may_write_namespace(self, namespace: str) -> bool:
        """Admins write anywhere; pipelines only in their namespaces (none listed: unrestricted)."""
        if "admin" in self.roles or not self.namespaces:
            return True
        return namespace in self.namespaces


def _split(value: str) -> frozenset[str]:
    return frozenset(v for v in value.split(",") if v)


def _to_authenticated(p: Any) -> AuthenticatedPrincipal:
    """A `Principal` row, or a row of its columns, as the caller it authenticates."""
    return AuthenticatedPrincipal(p.name, _split(p.roles), _split(p.namespaces), _split(p.clearances))


_BY_TOKEN = select(
    Principal.name,  # type: ignore[call-overload]
    Principal.roles,
    Principal.namespaces,
    Principal.clearances,
    Principal.token_hash,
    Principal.disabled,
).where(Principal.token_hash == bindparam("digest"))


class PrincipalStore:
    """Creates, revokes and rotates principals; authenticates bearer tokens (DESIGN.md 6)."""

    def __init__(self, db: Database, *, max_failures: int = 20, window_seconds: float = 60.0) -> None:
        self.db = db
        self.max_failures = max_failures
        self.window = window_seconds

    def create(
        self,
        name: str,
        *,
        roles: list[str],
        namespaces: list[str] = (),  # type: ignore[assignment]
        clearances: list[str] = (),  # type: ignore[assignment]
    ) -> tuple[AuthenticatedPrincipal, str]:
        """Creates a principal; returns it and its new token (the only time the token exists)."""
        name = normal_name(name, "name")
        namespaces = [normal_name(ns, "namespaces") for ns in namespaces]
        if not NAME_RE.match(name):
            raise InvalidRequestError(f"principal name {name!r} is not valid", field="name")
        bad = sorted(set(roles) - ROLES)
        if bad or not roles:
            raise InvalidRequestError(f"unknown roles {bad}; choose from {sorted(ROLES)}", field="roles")
        for ns in namespaces:
            if not _printable(ns) or not 0 < len(ns.encode("utf-8", "surrogatepass")) <= 1024 or "," in ns:
                raise InvalidRequestError(
                    "a namespace must be 1-1024 bytes of printable text without commas", field="namespaces"
                )
        for tag in clearances:
            if not TAG_RE.match(tag):
                raise InvalidRequestError(
                    f"clearance {tag[:40]!r} must be a lowercase tag such as pii", field="clearances"
                )
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = Principal(
            name=name,
            roles=",".join(sorted(set(roles))),
            namespaces=",".join(sorted(set(namespaces))),
            clearances=",".join(sorted(set(clearances))),
            token_hash=hash_token(token),
            created_at=datetime.now(UTC),
        )
        try:
            with self.db.read() as session:
                session.add(row)
                session.flush()
                created = _to_authenticated(row)
        except IntegrityError as e:
            raise ConflictError(f"principal {name!r} exists already", field="name") from e
        return created, token

    def revoke(self, name: str) -> None:
        """Disables a principal: its token answers 401 from the next request on, on every host."""
        self._set(name, disabled=True)

    def rotate(self, name: str) -> str:
        """Gives a principal a new token (returned, the only time it exists); the old one answers 401
        from the next request on. A revoked principal is enabled again by a rotation."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self._set(name, disabled=False, token_hash=hash_token(token))
        return token

    def _set(self, name: str, **values: object) -> None:
        name = normal_name(name, "name")
        with self.db.read() as session:
            done = session.execute(update(Principal).where(Principal.name == name).values(**values))  # type: ignore[arg-type]
            if done.rowcount != 1:  # type: ignore[attr-defined]
                raise NotFoundError(f"no principal {name!r}", field="name")

    def get(self, name: str) -> AuthenticatedPrincipal | None:
        with self.db.read() as session:
            row = session.execute(select(Principal).where(Principal.name == name)).scalar_one_or_none()
            return _to_authenticated(row) if row is not None and not row.disabled else None

    def count(self) -> int:
        with self.db.read() as session:
            return len(session.execute(select(Principal.id)).all())

    def authenticate(self, token: str | None, *, client: str = "") -> AuthenticatedPrincipal:
        """Returns the principal owning `token`; raises 401, or 429 once this client address has
        failed too often in the window. A valid token is never refused: only failures are limited,
        and a request without a token cannot guess (it gets its 401)."""
        if not token:
            raise AuthenticationError("missing bearer token (Authorization: Bearer <token>)")
        digest = hash_token(token)
        with self.db.statement() as conn:  # one statement, no transaction: every request pays it
            row = conn.execute(_BY_TOKEN, {"digest": digest}).first()
        if row is not None and not row.disabled and hmac.compare_digest(row.token_hash, digest):
            return _to_authenticated(row)
        if self._fail(client) > self.max_failures:
            raise RateLimitedError(
                f"too many failed authentication attempts; retry after {int(self.window)} s",
                retry_after=max(1, int(self.window)),
            )
        raise AuthenticationError("invalid or revoked token")

    _COUNT = text(
        "INSERT INTO auth_failures (client, window_start_ms, failures) VALUES (:client, :now, 1) "
        "ON CONFLICT (client) DO UPDATE SET "
        "failures = CASE WHEN auth_failures.window_start_ms < :cutoff THEN 1 ELSE auth_failures.failures + 1 END, "
        "window_start_ms = CASE WHEN auth_failures.window_start_ms < :cutoff THEN :now "
        "ELSE auth_failures.window_start_ms END "
        "RETURNING failures"
    )

    def _fail(self, client: str) -> int:
        """Counts one failure of `client` in the database (one statement, atomic on both databases,
        shared by every worker and host); returns its failures in the current window. A failure that
        opens a window drops the rows of windows that have passed, so the table holds at most the
        addresses that failed within one window."""
        now = int(time.time() * 1000)
        cutoff = now - int(self.window * 1000)
        key = client[:200]
        with self.db.read() as session:
            failures = int(session.execute(self._COUNT, {"client": key, "now": now, "cutoff": cutoff}).scalar_one())
            if failures == 1:
                session.execute(delete(AuthFailure).where(AuthFailure.window_start_ms < cutoff))  # type: ignore[arg-type]
        return failures
