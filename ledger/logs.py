"""Logs an operator can use: one line per record, JSON when asked (`LEDGER_LOG_FORMAT=json`), each
carrying the id of the request it belongs to (`X-Request-Id`, returned on every response).

What is logged is chosen here, never a request's headers or body: no token, no payload. The access
line names the method, the path (not the query string), the status, the time taken, the principal's
name when it authenticated, and the request id.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import uuid
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID_HEADER = "X-Request-Id"
request_id: ContextVar[str] = ContextVar("ledger_request_id", default="-")
# A client's own id is kept when it is short and plain (it ends up in log lines and a header).
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] request_id=%(request_id)s %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(request_id)s %(message)s"


def new_request_id(given: str | None) -> str:
    """The client's `X-Request-Id` when it is a plain token, else a fresh random one."""
    if given and _CLIENT_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class _OneLine(logging.Formatter):
    """Text records on one line: a traceback's newlines are escaped, so one event is one line."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", "\\n")


def configure_logging(fmt: str | None = None, *, stream: object = None) -> None:
    """Sets up the root logger of this process: `fmt` "json" or "text" (default LEDGER_LOG_FORMAT)."""
    fmt = (fmt or os.environ.get("LEDGER_LOG_FORMAT") or "text").lower()
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.addFilter(_RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(JSON_FIELDS, rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})
        )
    else:
        handler.setFormatter(_OneLine(TEXT_FORMAT))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
