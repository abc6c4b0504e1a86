"""The log's identity as the database keeps it: the origin (the checkpoint's first line, and the
signing key's name) is its current key's `name`. A host that joins a deployment reads it from there,
so it needs only the key file and the database URL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, NoSuchTableError
from sqlalchemy.pool import NullPool


def stored_origin(url: str) -> str | None:
    """The origin of the log at `url`, or None for a new log (no database file, no schema, no key yet).

    Raises `sqlalchemy.exc.OperationalError` when the database cannot be reached. Opens one
    connection and closes it (a gunicorn master must keep none for its workers to inherit).
    """
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        name = u.database or ""
        if not name or name == ":memory:" or not Path(name.removeprefix("file:")).exists():
            return None  # never create a database file just to look into it
    args = {"connect_timeout": 5} if u.get_backend_name() == "postgresql" else {}
    engine = create_engine(url, poolclass=NullPool, connect_args=args)
    try:
        with engine.connect() as c:
            try:
                row = c.execute(text("SELECT name FROM signing_keys WHERE valid_until IS NULL")).first()
            except (DBAPIError, NoSuchTableError) as e:
                if _no_schema(e):
                    return None
                raise
            return str(row[0]) if row is not None else None
    finally:
        engine.dispose()


def _no_schema(e: Exception) -> bool:
    text_ = str(getattr(e, "orig", e)).lower()
    return "no such table" in text_ or "does not exist" in text_
