"""One error tree for the whole ledger.

Every error the service raises on purpose derives from `LedgerError`; the HTTP layer maps each family
to one status code in a single error handler, and each error carries what a user needs to fix the
cause (the field, the entry, the rule).
"""

from __future__ import annotations

from typing import Any


class LedgerError(Exception):
    """Root of every ledger error."""

    status = 500
    title = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class VerificationError(LedgerError):
    """A proof, signature, digest or checkpoint did not verify."""

    status = 422
    title = "Verification failed"


class InvalidRequestError(LedgerError):
    """The request is malformed; `field` names the offending member when there is one."""

    status = 400
    title = "Bad request"

    def __init__(self, detail: str, *, field: str | None = None, **extra: Any) -> None:
        if field is not None:
            extra["field"] = field
        super().__init__(detail, **extra)
        self.field = field


class InvalidEventError(InvalidRequestError):
    """An OpenLineage event failed validation."""

    title = "Invalid OpenLineage event"


class UnsupportedMediaTypeError(InvalidRequestError):
    status = 415
    title = "Unsupported media type"


class PayloadTooLargeError(InvalidRequestError):
    status = 413
    title = "Payload too large"


class UnprocessableError(InvalidRequestError):
    """Well-formed but contradicts itself or the log (e.g. `passed` against thresholds)."""

    status = 422
    title = "Unprocessable content"


class AuthenticationError(LedgerError):
    status = 401
    title = "Unauthorized"


class RateLimitedError(LedgerError):
    status = 429
    title = "Too many requests"


class PermissionDeniedError(LedgerError):
    status = 403
    title = "Forbidden"


class PolicyDeniedError(PermissionDeniedError):
    """A policy denied the action; the decision (every violation) rides along in `extra`."""

    title = "Denied by policy"


class NotFoundError(LedgerError):
    status = 404
    title = "Not found"


class ConflictError(LedgerError):
    status = 409
    title = "Conflict"


class UnavailableError(LedgerError):
    """The service cannot answer this now; `retry_after` says when to try again."""

    status = 503
    title = "Service unavailable"


class PolicyError(LedgerError):
    """The policy bundle cannot be loaded or evaluated: fail closed."""

    status = 500
    title = "Policy error"


class ConfigurationError(LedgerError):
    title = "Configuration error"


class StaleSigningKeyError(ConfigurationError):
    """This host holds a signing key that is not the log's current one (a rotation it has not seen)."""

    status = 503
    title = "Signing key not current"
