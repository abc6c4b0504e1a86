"""Bearer-token authentication and role checks for views."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import current_app, g, request

from ledger.errors import PermissionDeniedError
from ledger.security.principals import AuthenticatedPrincipal, PrincipalStore

F = TypeVar("F", bound=Callable[..., Any])


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def current_principal() -> AuthenticatedPrincipal:
    return cast(AuthenticatedPrincipal, g.principal)


def authenticate() -> AuthenticatedPrincipal:
    store: PrincipalStore = current_app.extensions["ledger.principals"]
    principal = store.authenticate(bearer_token(), client=request.remote_addr or "")
    g.principal = principal
    return principal


def requires(*roles: str) -> Callable[[F], F]:
    """The caller must hold a token, and one of `roles` when any are named (401 vs 403)."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = authenticate()
            if roles and not principal.has_any(*roles):
                raise PermissionDeniedError(
                    f"principal {principal.name!r} lacks the role for this action: needs one of {', '.join(roles)}",
                    required_roles=list(roles),
                )
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
