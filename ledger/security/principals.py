"""Principals and API tokens (DESIGN.md 6).

Tokens are 256-bit random strings shown once; only their SHA-256 is stored, and lookups go by that
hash, so the database never holds a usable token and comparison time does not depend on how much of
a guess matches (the final check uses `hmac.compare_digest` anyway).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ledger.errors import AuthenticationError, ConflictError, InvalidRequestError, RateLimitedError
from ledger.store.db import Database
from ledger.store.models import Principal

ROLES = frozenset({"pipeline", "auditor", "approver", "security", "admin"})
TOKEN_PREFIX = "lgr_"  # noqa: S105  (a prefix that marks tokens in logs and scanners, not a secret)
NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._@-]{0,199}\Z")
TAG_RE = re.compile(r"\A[a-z][a-z0-9_-]{0,63}\Z")


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


def _to_authenticated(p: Principal) -> AuthenticatedPrincipal:
    return AuthenticatedPrincipal(p.name, _split(p.roles), _split(p.namespaces), _split(p.clearances))


class PrincipalStore:
    """Creates principals and authenticates bearer tokens, with a short positive cache."""

    CACHE_SECONDS = 5.0
    # Failure records are kept per client address; past this many addresses, those with no failure
    # inside the window are dropped (amortised), so a spray of addresses cannot grow memory unbounded.
    MAX_TRACKED_CLIENTS = 10_000

    def __init__(self, db: Database, *, max_failures: int = 20, window_seconds: float = 60.0) -> None:
        self.db = db
        self._cache: dict[str, tuple[float, AuthenticatedPrincipal]] = {}
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self.max_failures = max_failures
        self.window = window_seconds
        self._sweep_at = self.MAX_TRACKED_CLIENTS

    def create(
        self,
        name: str,
        *,
        roles: list[str],
        namespaces: list[str] = (),  # type: ignore[assignment]
        clearances: list[str] = (),  # type: ignore[assignment]
    ) -> tuple[AuthenticatedPrincipal, str]:
        """Creates a principal; returns it and its new token (the only time the token exists)."""
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

    def get(self, name: str) -> AuthenticatedPrincipal | None:
        with self.db.read() as session:
            row = session.execute(select(Principal).where(Principal.name == name)).scalar_one_or_none()
            return _to_authenticated(row) if row is not None and not row.disabled else None

    def count(self) -> int:
        with self.db.read() as session:
            return len(session.execute(select(Principal.id)).all())

    def authenticate(self, token: str | None, *, client: str = "") -> AuthenticatedPrincipal:
        """Returns the principal owning `token`; raises 401 (or 429 after too many failures).

        Only guesses are rate-limited: a request without a token cannot guess, and gets its 401.
        """
        if not token:
            raise AuthenticationError("missing bearer token (Authorization: Bearer <token>)")
        self._check_rate(client)
        digest = hash_token(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self.CACHE_SECONDS:
            return cached[1]
        with self.db.read() as session:
            query = select(Principal).where(Principal.token_hash == digest)
            row = session.execute(query).scalar_one_or_none()
            if row is None or row.disabled or not hmac.compare_digest(row.token_hash, digest):
                self._fail(client)
                raise AuthenticationError("invalid or revoked token")
            principal = _to_authenticated(row)
        self._cache[digest] = (now, principal)
        return principal

    def _check_rate(self, client: str) -> None:
        with self._lock:
            q = self._failures.get(client)
            if q is None:
                return
            cutoff = time.monotonic() - self.window
            while q and q[0] < cutoff:
                q.popleft()
            if not q:
                del self._failures[client]
                return
            if len(q) >= self.max_failures:
                raise RateLimitedError(
                    f"too many failed authentication attempts; retry after {int(self.window)} s",
                    retry_after=int(self.window),
                )

    def _fail(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            if client not in self._failures and len(self._failures) >= self._sweep_at:
                cutoff = now - self.window
                for stale in [c for c, q in self._failures.items() if not q or q[-1] < cutoff]:
                    del self._failures[stale]
                # Sweep again only once the map has doubled: O(1) amortised per failure.
                self._sweep_at = max(self.MAX_TRACKED_CLIENTS, 2 * len(self._failures))
            self._failures.setdefault(client, deque()).append(now)
