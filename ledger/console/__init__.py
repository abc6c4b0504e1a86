"""The auditor's console at `/console/`: a small single-page app served by the service itself.

Every page is the same `index.html`, so each has a stable URL an auditor can send; the page reads
everything through the HTTP API with the signed-in principal's Bearer token, so it shows exactly what
the API shows that principal. The assets are built from `console/` (`npm --prefix console ci && npm
--prefix console run build`) into `static/`, which ships inside the wheel; nothing is fetched from the
network at run time.
"""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response, abort, send_from_directory

STATIC = resources.files(__name__) / "static"

# No inline script or style, nothing from elsewhere; the API is same-origin. `form-action 'none'`:
# the sign-in form is handled by the script, so a token can never be submitted into a URL.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

bp = Blueprint("console", __name__, url_prefix="/console")


@bp.after_request
def _headers(resp: Response) -> Response:
    resp.headers.update(HEADERS)
    return resp


@bp.get("/")
@bp.get("/<path:page>")
def index(page: str = "") -> Response:
    """The app's one page, for every console URL (the script routes on the path)."""
    resp = send_from_directory(str(STATIC), "index.html", mimetype="text/html", max_age=0)
    resp.headers["Cache-Control"] = "no-cache"
    return resp


@bp.get("/assets/<path:name>")
def assets(name: str) -> Response:
    """The built script, style sheet and the front-end libraries' licences."""
    if name.startswith(".") or "/." in name:
        abort(404)
    resp = send_from_directory(str(STATIC), name, max_age=0)
    resp.headers["Cache-Control"] = "no-cache"
    return resp
