"""Configuration from the environment (DESIGN.md 7). Read once, at app or command start."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

from ledger.errors import ConfigurationError, LedgerError
from ledger.lineage.events import DEFAULT_EVENT_TIME_WINDOW, EventTimeWindow

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_MAX_BODY = 5 * 1024 * 1024
DEFAULT_POLICY_MAX_ITEMS = 10_000  # the same as ledger.policy.engine's defaults
DEFAULT_POLICY_BUDGET_SECONDS = 2.0
DEFAULT_PURPOSES: dict[str, list[str]] = {
    "pii": ["fraud-investigation", "regulatory-reporting", "customer-support"],
    "phi": ["treatment", "regulatory-reporting"],
    "confidential": ["regulatory-reporting", "audit"],
}


def _purposes(raw: str | None) -> dict[str, list[str]]:
    if not raw:
        return dict(DEFAULT_PURPOSES)
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise ConfigurationError(f"LEDGER_ACCESS_PURPOSES is not JSON: {e}") from e
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(p, str) for p in v) for k, v in value.items()
    ):
        raise ConfigurationError('LEDGER_ACCESS_PURPOSES must map tags to lists of purposes: {"pii": ["..."]}')
    return value


def _witnesses(raw: str | None) -> tuple[tuple[str, str], ...]:
    """LEDGER_WITNESSES: comma-separated `<http(s) url> <witness verifier key>` pairs."""
    from ledger.tlog.cosignature import WitnessVerifier

    out = []
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        parts = item.split()
        if len(parts) != 2 or not parts[0].startswith(("http://", "https://")):
            raise ConfigurationError(f"LEDGER_WITNESSES: {item.strip()!r} is not `<http(s) url> <witness key>`")
        try:
            WitnessVerifier.parse(parts[1])
        except LedgerError as e:
            raise ConfigurationError(f"LEDGER_WITNESSES: {e.detail}") from e
        out.append((parts[0].rstrip("/"), parts[1]))
    return tuple(out)


def default_policy_dir() -> Path:
    """The policies shipped with the package (the repository's `policies/`)."""
    return Path(str(resources.files("ledger._policies")))


def _float_env(env: dict[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as e:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from e
    if not value >= minimum or value == float("inf"):
        raise ConfigurationError(f"{name}={value} must be a finite number of at least {minimum}")
    return value


def _time_env(env: dict[str, str], name: str, default: datetime) -> datetime:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as e:
        raise ConfigurationError(f"{name}={raw!r} is not an RFC 3339 time (e.g. 1970-01-01T00:00:00Z)") from e
    if value.tzinfo is None:
        raise ConfigurationError(f"{name}={raw!r} needs an offset (Z or +hh:mm)")
    return value


def _int_env(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as e:
        raise ConfigurationError(f"{name}={raw!r} is not an integer") from e
    if value < minimum:
        raise ConfigurationError(f"{name}={value} must be at least {minimum}")
    return value


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the service reads from its environment."""

    data_dir: Path
    database_url: str
    origin: str
    # A PostgreSQL streaming replica of `database_url` that serves reads (ledger.store.replica).
    read_database_url: str | None = None
    signing_key_path: Path
    # The secret keying intake's dedup keys (HMAC); the same file on every host of a deployment.
    dedup_key_path: Path | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY
    checkpoint_interval: int = 60
    policy_dir: Path = field(default_factory=default_policy_dir)
    max_validation_age_days: int = 90
    # Bounds of one policy evaluation (ledger.policy.engine.PolicyLimits): the most items of any list
    # in the input, the wall-clock budget, and the worker processes that evaluate.
    policy_max_items: int = DEFAULT_POLICY_MAX_ITEMS
    policy_budget_seconds: float = DEFAULT_POLICY_BUDGET_SECONDS
    policy_processes: int = 2
    max_projection_lag: int = 10_000
    # How often `ledger serve`'s applier process looks for entries to apply (ledger/applier.py): a
    # longer wait makes larger batches (less CPU per entry) and a longer lag for what no read asks for.
    applier_poll_seconds: float = 0.2
    # Intake refuses an `eventTime` before `event_time_min` or more than this many seconds past the
    # server's clock (ledger.lineage.events.EventTimeWindow; always within what Rego can parse).
    event_time_min: datetime = DEFAULT_EVENT_TIME_WINDOW.earliest
    event_time_max_ahead_seconds: int = int(DEFAULT_EVENT_TIME_WINDOW.max_ahead.total_seconds())
    run_scheduler: bool = True
    # Slow clients (ledger.server): the time to read a request's headers, and its body.
    header_timeout_seconds: float = 10.0
    # After an erasure, rewrite the tables it touched on PostgreSQL (VACUUM FULL: exclusive locks).
    erasure_rewrite: bool = False
    body_timeout_seconds: float = 30.0
    # Requests one client address may have in one worker at once (0: no limit; ledger.server).
    max_requests_per_client: int = 32
    # Purposes for which data carrying each sensitive tag may be read (policies/access.rego).
    allowed_purposes: dict[str, list[str]] = field(default_factory=lambda: dict(DEFAULT_PURPOSES))
    # Witnesses the checkpoint job sends checkpoints to (LEDGER_WITNESSES): (url, witness vkey) pairs.
    witnesses: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def from_env(env: dict[str, str] | None = None) -> Settings:
        e = dict(os.environ if env is None else env)
        data_dir = Path(e.get("LEDGER_DATA_DIR") or "./ledger-data").resolve()
        db = e.get("LEDGER_DATABASE_URL") or f"sqlite:///{data_dir / 'ledger.db'}"
        origin = e.get("LEDGER_ORIGIN") or _database_origin(db, data_dir) or f"ledger.local/{instance_id(data_dir)}"
        key = Path(e.get("LEDGER_SIGNING_KEY") or data_dir / "signing-key.pem")
        return Settings(
            data_dir=data_dir,
            database_url=db,
            read_database_url=e.get("LEDGER_READ_DATABASE_URL") or None,
            origin=origin,
            signing_key_path=key,
            dedup_key_path=Path(e["LEDGER_DEDUP_KEY"]) if e.get("LEDGER_DEDUP_KEY") else None,
            max_body_bytes=_int_env(e, "LEDGER_MAX_BODY_BYTES", DEFAULT_MAX_BODY, 1024),
            checkpoint_interval=_int_env(e, "LEDGER_CHECKPOINT_INTERVAL", 60, 1),
            policy_dir=Path(e["LEDGER_POLICY_DIR"]) if e.get("LEDGER_POLICY_DIR") else default_policy_dir(),
            max_validation_age_days=_int_env(e, "LEDGER_MAX_VALIDATION_AGE_DAYS", 90, 1),
            policy_max_items=_int_env(e, "LEDGER_POLICY_MAX_ITEMS", DEFAULT_POLICY_MAX_ITEMS, 1),
            policy_budget_seconds=_float_env(e, "LEDGER_POLICY_BUDGET_SECONDS", DEFAULT_POLICY_BUDGET_SECONDS, 0.1),
            policy_processes=_int_env(e, "LEDGER_POLICY_PROCESSES", 2, 1),
            max_projection_lag=_int_env(e, "LEDGER_MAX_PROJECTION_LAG", 10_000, 0),
            applier_poll_seconds=_float_env(e, "LEDGER_APPLIER_POLL_SECONDS", 0.2, 0.01),
            event_time_min=_time_env(e, "LEDGER_EVENT_TIME_MIN", DEFAULT_EVENT_TIME_WINDOW.earliest),
            event_time_max_ahead_seconds=_int_env(
                e,
                "LEDGER_EVENT_TIME_MAX_AHEAD_SECONDS",
                int(DEFAULT_EVENT_TIME_WINDOW.max_ahead.total_seconds()),
                0,
            ),
            run_scheduler=e.get("LEDGER_SCHEDULER", "1") not in ("0", "false", "no"),
            erasure_rewrite=e.get("LEDGER_ERASURE_REWRITE", "0") in ("1", "true", "yes"),
            header_timeout_seconds=_float_env(e, "LEDGER_HEADER_TIMEOUT_SECONDS", 10.0, 0.001),
            body_timeout_seconds=_float_env(e, "LEDGER_BODY_TIMEOUT_SECONDS", 30.0, 0.1),
            max_requests_per_client=_int_env(e, "LEDGER_MAX_REQUESTS_PER_CLIENT", 32, 0),
            allowed_purposes=_purposes(e.get("LEDGER_ACCESS_PURPOSES")),
            witnesses=_witnesses(e.get("LEDGER_WITNESSES")),
        )

    def __post_init__(self) -> None:
        if self.read_database_url is not None and not (
            self.read_database_url.startswith("postgresql") and self.database_url.startswith("postgresql")
        ):
            raise ConfigurationError(
                "LEDGER_READ_DATABASE_URL: a read replica needs PostgreSQL for both LEDGER_DATABASE_URL and it"
            )
        try:
            self.event_time_window  # noqa: B018  (refuse a window the validator would refuse, at start)
        except ValueError as e:
            raise ConfigurationError(f"LEDGER_EVENT_TIME_MIN / LEDGER_EVENT_TIME_MAX_AHEAD_SECONDS: {e}") from e

    @property
    def event_time_window(self) -> EventTimeWindow:
        """The `eventTime`s intake accepts (pass to `validate_event(..., window=...)`)."""
        return EventTimeWindow(
            earliest=self.event_time_min, max_ahead=timedelta(seconds=self.event_time_max_ahead_seconds)
        )


def _database_origin(url: str, data_dir: Path) -> str | None:
    """The origin the database keeps (its current key's name): a new host needs no file of its own.

    When the database cannot be reached, this host's instance id file, if it has one, names it as
    before (so a worker can start while the database is down, and answer 503); else start fails.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from ledger.store.identity import stored_origin

    try:
        return stored_origin(url)
    except SQLAlchemyError as e:
        if (data_dir / "instance-id").exists():
            return None
        first = str(getattr(e, "orig", e)).strip().splitlines()[0]
        raise ConfigurationError(
            f"the database is unavailable (LEDGER_DATABASE_URL): {first} (the log's origin is read from it; "
            "or set LEDGER_ORIGIN)"
        ) from e


def instance_id(data_dir: Path) -> str:
    """A stable id for this data directory (the default origin's suffix); created on first use."""
    path = data_dir / "instance-id"
    if not path.exists():
        private_dir(data_dir)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(uuid.uuid4().hex[:16] + "\n")
        except FileExistsError:
            pass  # another process made it first; read theirs
    return path.read_text().strip()


def private_dir(path: Path) -> None:
    """Creates the data directory 0700, or narrows an existing one of ours to 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # not ours (a shared mount): the operator's choice stands
        path.chmod(0o700)
