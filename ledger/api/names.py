"""Names in paths (DESIGN.md 8, normative): a namespace, dataset, job or model name is one path
segment, URL-encoded, `/` as `%2F`, as Marquez does.

WSGI servers percent-decode the request path into PATH_INFO before any routing, so `a%2Fb` and
`a/b` arrive alike, and Werkzeug's map would merge `//` and redirect. The one fix lives here:

- `RawPathMiddleware` rebuilds PATH_INFO from the raw request target (the ASGI scope's `raw_path`
  under `ledger serve`, gunicorn's `RAW_URI`, Werkzeug's `REQUEST_URI`/`RAW_URI`), decoding each
  segment on its own and escaping, inside a
  segment, only `%` (as `%25`) and `/` (as `%2F`). Invariant: in PATH_INFO, `%` appears only in those
  two escapes, so one `unquote` gives a segment back exactly;
- `NameConverter` (`<name:x>` in a route) matches one such segment, unquotes it and normalises it
  to NFC (as intake stores names);
- `install` sets both up on an app, with `merge_slashes` off, before any blueprint is registered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes, urlsplit

from flask import Flask
from flask_smorest import Api
from werkzeug.routing import BaseConverter

from ledger.lineage.names import nfc

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _escape_segment(segment: bytes) -> str:
    """A decoded segment as PATH_INFO holds it (latin-1 over bytes): `%` and `/` escaped."""
    return segment.replace(b"%", b"%25").replace(b"/", b"%2F").decode("latin-1")


def path_info_from_raw(raw_uri: str, script_name: str, path_info: str) -> str:
    """PATH_INFO with each segment's `%` and `/` escaped, taken from the raw request target.

    Falls back to escaping `%` in the server's PATH_INFO (a `%2F` is then already lost) when there
    is no raw target, or when it does not decode to what the server put in SCRIPT_NAME + PATH_INFO
    (a proxy or server that rewrote the path: trust the server's view, never a second one).
    """
    fallback = "/".join(_escape_segment(s.encode("latin-1")) for s in path_info.split("/"))
    if not raw_uri:
        return fallback
    raw_path = urlsplit(raw_uri).path if "://" in raw_uri.split("?", 1)[0] else raw_uri.split("?", 1)[0]
    try:
        if unquote_to_bytes(raw_path).decode("latin-1") != script_name + path_info:
            return fallback
    except UnicodeError:  # latin-1 decodes every byte; kept for an unexpected non-str target
        return fallback
    if script_name:
        if not raw_path.startswith(script_name):
            return fallback
        raw_path = raw_path[len(script_name) :]
    return "/".join(_escape_segment(unquote_to_bytes(s)) for s in raw_path.split("/"))


class RawPathMiddleware:
    """Rewrites PATH_INFO from the raw request target (see the module docstring)."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or _asgi_raw_path(environ)
        environ["PATH_INFO"] = path_info_from_raw(raw, environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", ""))
        return self.app(environ, start_response)


def _asgi_raw_path(environ: dict[str, Any]) -> str:
    """The request target under an ASGI server through a2wsgi (`ledger serve`): the scope's `raw_path`."""
    scope = environ.get("asgi.scope")
    raw = scope.get("raw_path") if isinstance(scope, dict) else None
    return raw.decode("latin-1") if isinstance(raw, bytes) else ""


class NameConverter(BaseConverter):
    """One path segment holding any name: `%2F` is `/`, `%25` is `%` (see RawPathMiddleware)."""

    regex = "[^/]+"
    part_isolating = True

    def to_python(self, value: str) -> str:
        return nfc(unquote(value))  # one spelling per name (ledger.lineage.names)

    def to_url(self, value: str) -> str:
        return quote(value, safe="")


def install(app: Flask, api: Api) -> None:
    """Names in paths for `app`: call before registering blueprints, so every rule sees it."""
    app.url_map.merge_slashes = False
    app.url_map.converters["name"] = NameConverter
    api.register_converter(NameConverter, lambda _converter: {"type": "string"})
    app.wsgi_app = RawPathMiddleware(app.wsgi_app)  # type: ignore[method-assign]
