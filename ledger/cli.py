"""The `ledger` command (DESIGN.md 7, normative)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ledger.config import Settings
from ledger.errors import LedgerError


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except LedgerError as e:
        raise click.ClickException(e.detail) from e


def describe_failure(e: BaseException) -> str:
    """One line that says what went wrong, for any failure a command can meet."""
    import requests
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    if isinstance(e, LedgerError):
        return e.detail
    if isinstance(e, OperationalError):
        first = str(e.orig).splitlines()[0] if e.orig is not None else str(e)
        return f"the database is unavailable (LEDGER_DATABASE_URL): {first}"
    if isinstance(e, ArgumentError | NoSuchModuleError):
        return f"LEDGER_DATABASE_URL is not a database URL this service can use: {e}"
    if isinstance(e, requests.HTTPError) and e.response is not None:
        r = e.response
        detail = ""
        try:
            body = r.json()
            detail = str(body.get("detail") or body.get("title") or "") if isinstance(body, dict) else ""
        except ValueError:
            detail = r.text[:200]
        where = f"{r.request.method} {r.url}" if r.request is not None else r.url
        hint = " (check the token: --token or LEDGER_TOKEN)" if r.status_code in (401, 403) else ""
        return f"{where} answered {r.status_code} {r.reason}{': ' + detail if detail else ''}{hint}"
    if isinstance(e, requests.ConnectionError):
        url = e.request.url if e.request is not None else "the service"
        return f"cannot reach {url}: is the service running there? ({_root_cause(e)})"
    if isinstance(e, requests.Timeout):
        return f"no answer in time from {e.request.url if e.request is not None else 'the service'}"
    if isinstance(e, requests.RequestException):
        return f"request failed: {_root_cause(e)}"
    if isinstance(e, OSError):
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror or e}{where}"
    return f"unexpected {type(e).__name__}: {e} (LEDGER_DEBUG=1 shows the traceback)"


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    text = str(e)
    return text.split("] ", 1)[-1] if "] " in text else text  # drop "[Errno 111] "-style prefixes


class _LedgerGroup(click.Group):
    """Every failure of every command is one line on stderr and a non-zero exit, never a traceback.

    LEDGER_DEBUG=1 lets the traceback through, for a bug report.
    """

    def invoke(self, ctx: click.Context) -> Any:
        import os

        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as e:
            if os.environ.get("LEDGER_DEBUG") == "1":
                raise
            click.echo(f"error: {' '.join(describe_failure(e).split())}", err=True)
            sys.exit(1)


@click.group(cls=_LedgerGroup)
def main() -> None:
    """Provenance ledger: an append-only, signed log of ML lineage and governance."""


@main.command()
def init() -> None:
    """Create the data dir, signing key (mode 0600) and database; idempotent."""
    from ledger.runtime import initialise

    s = _settings()
    initialise(s)
    click.echo(f"initialised {s.data_dir} (database {s.database_url.split('@')[-1]}, origin {s.origin})")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256), help="threads per worker")
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Run the service under granian (runs `init` first when needed)."""
    import subprocess

    from ledger.server import child_command, run_server

    s = _settings()
    _require_free_port(host, port)
    # Initialise in a child process: the server's master then never imports the application (its
    # memory stays small, and it holds no database connection for the workers to inherit).
    boot = subprocess.run(child_command("ledger.cli", "bootstrap"), check=False)  # noqa: S603 (our own module)
    if boot.returncode != 0:
        sys.exit(boot.returncode)
    run_server(s, host=host, port=port, workers=workers, threads=threads)


def _require_free_port(host: str, port: int) -> None:
    """Fail in one line when the address is taken, before the server tries to bind it."""
    import errno
    import socket
    import time

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    family, kind, proto, _, addr = infos[0]
    deadline = time.monotonic() + 2  # workers of a master just killed are dying (ledger.lifeline)
    while True:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
            try:
                probe.bind(addr)
                return
            except OSError as e:
                busy = e.errno == errno.EADDRINUSE
                if busy and time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                why = "the address is in use (another `ledger serve`?); choose another --port" if busy else e.strerror
                raise click.ClickException(f"cannot listen on {host}:{port}: {why}") from e


@main.command(hidden=True)
def bootstrap() -> None:
    """`init`, and on a fresh deployment an admin principal whose token is printed once."""
    from ledger.runtime import build_runtime, initialise

    s = _settings()
    if initialise(s):
        rt = build_runtime(s)
        try:
            _, token = rt.principals.create("admin", roles=["admin"])
        finally:
            rt.close()
        click.echo("A fresh ledger: created principal 'admin'. Its token is shown once, now:", err=True)
        click.echo(f"admin token: {token}", err=True)


@main.group()
def principals() -> None:
    """Manage principals and their API tokens."""


@principals.command("add")
@click.argument("name")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice(["pipeline", "auditor", "approver", "security", "admin"]),
)
@click.option("--namespace", "namespaces", multiple=True, help="namespace a pipeline may write (repeatable)")
@click.option("--clearance", "clearances", multiple=True, help="classification tag cleared (repeatable)")
def principals_add(name: str, roles: tuple[str, ...], namespaces: tuple[str, ...], clearances: tuple[str, ...]) -> None:
    """Create a principal; prints its new API token as the last line."""
    from ledger.runtime import build_runtime, initialise

    s = _settings()
    initialise(s)
    rt = build_runtime(s)
    try:
        p, token = rt.principals.create(
            name, roles=list(roles), namespaces=list(namespaces), clearances=list(clearances)
        )
    except LedgerError as e:
        raise click.ClickException(e.detail) from e
    finally:
        rt.close()
    click.echo(f"created principal {p.name} (roles: {', '.join(sorted(p.roles))})", err=True)
    click.echo(token)


@principals.command("revoke")
@click.argument("name")
def principals_revoke(name: str) -> None:
    """Revoke a principal's token: 401 from the next request on, on every worker and host."""
    with _principal_store() as store:
        store.revoke(name)
    click.echo(f"revoked principal {name}", err=True)


@principals.command("rotate")
@click.argument("name")
def principals_rotate(name: str) -> None:
    """Give a principal a new token (printed as the last line); the old one stops working at once."""
    with _principal_store() as store:
        token = store.rotate(name)
    click.echo(f"rotated the token of principal {name}", err=True)
    click.echo(token)


@contextmanager
def _principal_store() -> Iterator[Any]:
    from ledger.runtime import build_runtime, initialise

    s = _settings()
    initialise(s)
    rt = build_runtime(s)
    try:
        yield rt.principals
    except LedgerError as e:
        raise click.ClickException(e.detail) from e
    finally:
        rt.close()


@main.group()
def keys() -> None:
    """The log's signing keys."""


@keys.command("verifier")
def keys_verifier() -> None:
    """Print the log's verifier key line (DESIGN.md 3.2)."""
    from ledger.runtime import initialise
    from ledger.security.keys import load_signing_key
    from ledger.tlog.note import NoteSigner

    s = _settings()
    initialise(s)  # creates the key of a new log; refuses a key that is not this log's current one
    signer = NoteSigner(name=s.origin, private_key=load_signing_key(s.signing_key_path))
    click.echo(signer.verifier.line())


@keys.command("rotate")
def keys_rotate() -> None:
    """Start a new signing key; checkpoints signed by the old one keep verifying with the old verifier key.

    Running workers and the scheduler on this host pick up the new key file by themselves; copy it to
    every other host of the deployment (a host with the old key stops signing until it has the new one).
    """
    from ledger.runtime import build_runtime, initialise
    from ledger.security.keys import install_next_key, prepare_next_key
    from ledger.tlog.note import NoteSigner

    s = _settings()
    initialise(s)
    rt = build_runtime(s)
    try:
        rt.ledger.store_checkpoint()  # the old key's last word on the tree as it stands
        old = rt.keyring.signer
        new = NoteSigner(name=s.origin, private_key=prepare_next_key(s.signing_key_path))
        rt.keyring.rotate_to(new)  # from here on the database names the new key current
        install_next_key(s.signing_key_path, retired_name=f"{old.verifier.key_id.hex()}.pem")
    finally:
        rt.close()
    click.echo(f"retired: {old.verifier.line()}", err=True)
    click.echo(new.verifier.line())


@keys.command("list")
def keys_list() -> None:
    """Every key that has signed this log, with its validity."""
    from ledger.runtime import build_runtime

    rt = build_runtime(_settings())
    try:
        for k in rt.keyring.describe()["keys"]:
            until = k["valid_until"] or "now"
            click.echo(f"{k['verifier_key']}  {k['valid_from']} .. {until}{'  (current)' if k['current'] else ''}")
    finally:
        rt.close()


@main.command()
@click.argument("bundle", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--url", help="verify the whole log of the service at URL")
@click.option("--key", "vkey", required=True, help="verifier key line (name+id+key)")
@click.option("--token", envvar="LEDGER_TOKEN", help="API token (or LEDGER_TOKEN)")
@click.option(
    "--since",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="with --url: a checkpoint or receipt kept from earlier; the log must be consistent with it",
)
@click.option("--witness", "witnesses", multiple=True, help="a witness's cosignature/v1 verifier key (repeatable)")
@click.option("--quorum", type=click.IntRange(min=1), help="cosignatures required (default: every --witness)")
@click.option("--allow-withheld", is_flag=True, help="accept a bundle whose withheld payloads leave facts unproven")
def verify(  # noqa: PLR0917 (click passes every option as an argument)
    bundle: Path | None,
    url: str | None,
    vkey: str,
    token: str | None,
    since: Path | None,
    witnesses: tuple[str, ...],
    quorum: int | None,
    allow_withheld: bool,
) -> None:
    """Verify the whole log at --url, or an audit BUNDLE or a RECEIPT offline."""
    if (bundle is None) == (url is None):
        raise click.UsageError("give either --url URL or a BUNDLE (or receipt) file")
    if since is not None and url is None:
        raise click.UsageError("--since goes with --url")
    if quorum is not None and not witnesses:
        raise click.UsageError("--quorum needs --witness keys")
    from ledger.tlog.cosignature import WitnessVerifier
    from ledger.tlog.note import NoteVerifier

    try:
        NoteVerifier.parse(vkey)  # a malformed key is named as such, before any file or URL is read
    except LedgerError as e:
        click.echo(f"FAILED: --key: {e.detail}", err=True)
        sys.exit(2)
    for w in witnesses:
        try:
            WitnessVerifier.parse(w)
        except LedgerError as e:
            click.echo(f"FAILED: --witness: {e.detail}", err=True)
            sys.exit(2)
    if url is not None:
        _verify_url(url, vkey, token, since=since, witnesses=witnesses, quorum=quorum)
    else:
        assert bundle is not None
        _verify_file(bundle, vkey, witnesses=witnesses, quorum=quorum, allow_withheld=allow_withheld)


def _verify_url(
    url: str, vkey: str, token: str | None, *, since: Path | None, witnesses: tuple[str, ...], quorum: int | None
) -> None:
    import time

    import requests

    from ledger.verify import fetch_checkpoint, load_kept, verify_log

    t0 = time.perf_counter()
    try:
        from ledger.tlog.note import NoteVerifier

        kept = load_kept(since.read_text(), vkey) if since is not None else None
        size = fetch_checkpoint(url.rstrip("/"), NoteVerifier.parse(vkey), requests.Session()).size
        shown = sys.stderr.isatty()  # a log file gets the result line, not a bar
        with click.progressbar(length=size, label="verifying entries", file=sys.stderr, hidden=not shown) as bar:
            report = verify_log(
                url, vkey, token=token, progress=bar.update, since=kept, witnesses=witnesses, quorum=quorum
            )
    except LedgerError as e:
        click.echo(f"FAILED: {e.detail}", err=True)
        sys.exit(1)
    except requests.RequestException as e:  # before OSError, which it derives from
        click.echo(f"FAILED: cannot read the log: {describe_failure(e)}", err=True)
        sys.exit(2)
    except OSError as e:
        click.echo(f"FAILED: cannot read {since}: {e}", err=True)
        sys.exit(2)
    dt = time.perf_counter() - t0
    rate = report.size / dt if dt > 0 else 0.0
    click.echo(
        f"OK: {report.size} entries verified against a checkpoint signed by {report.origin} "
        f"(root {report.root.hex()}; {report.erased} erased, {report.withheld} withheld from this token) "
        f"in {dt:.2f} s, {rate:,.0f} entries/s"
        + (f"; consistent with the kept checkpoint of size {kept.size}" if kept is not None else "")
        + (f"; {', '.join(report.cosignatures)}" if report.cosignatures else "")
    )


def _verify_file(
    path: Path, vkey: str, *, witnesses: tuple[str, ...], quorum: int | None, allow_withheld: bool
) -> None:
    from ledger.governance.bundle import check_bundle
    from ledger.verify import verify_receipt

    try:
        doc: Any = json.loads(path.read_text())
        if isinstance(doc, dict) and "format" not in doc and "inclusion_proof" in doc:
            click.echo(f"OK: {verify_receipt(doc, vkey, witnesses=witnesses, quorum=quorum)}")
            return
        result = check_bundle(doc, vkey, witnesses=witnesses, quorum=quorum)
    except (OSError, ValueError) as e:
        click.echo(f"FAILED: cannot read {path}: {e}", err=True)
        sys.exit(2)
    except LedgerError as e:
        click.echo(f"FAILED: {e.detail}", err=True)
        sys.exit(1)
    if result.unproven:
        click.echo(
            f"{'WARNING' if allow_withheld else 'FAILED'}: payloads of entries {sorted(result.withheld)} are withheld "
            f"from this bundle, so these report facts are unproven: {', '.join(result.unproven)}",
            err=True,
        )
        if not allow_withheld:
            click.echo("(--allow-withheld accepts the bundle with them unproven)", err=True)
            sys.exit(1)
    click.echo(f"OK: {result.summary}")


@main.group()
def witness() -> None:
    """Run an independent witness (C2SP tlog-witness) for ledger logs."""


@witness.command("serve")
@click.option(
    "--dir", "directory", required=True, type=click.Path(file_okay=False, path_type=Path), help="its key and state"
)
@click.option("--name", required=True, help="the witness's key name, e.g. witness.example/w1")
@click.option("--log", "logs", multiple=True, required=True, help="a log verifier key to witness (repeatable)")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=int)
def witness_serve(directory: Path, name: str, logs: tuple[str, ...], host: str, port: int) -> None:
    """Serve POST /add-checkpoint; prints the witness's verifier key first."""
    import logging

    from werkzeug.serving import make_server

    from ledger.witness import Witness, WitnessState, create_witness_app, load_or_create_key

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [witness] %(levelname)s %(message)s")
    try:
        w = Witness(load_or_create_key(directory, name), logs, WitnessState(directory))
    except (LedgerError, ValueError) as e:
        raise click.ClickException(e.detail if isinstance(e, LedgerError) else str(e)) from e
    server = make_server(host, port, create_witness_app(w), threaded=True)
    click.echo(f"witness key: {w.signer.verifier.line()}", err=True)
    click.echo(f"witness {name} on http://{host}:{server.server_port}", err=True)
    sys.stderr.flush()
    server.serve_forever()


@witness.command("key")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", required=True, help="the witness's key name")
def witness_key(directory: Path, name: str) -> None:
    """Print the witness's cosignature/v1 verifier key (creating its key on first use)."""
    from ledger.witness import load_or_create_key

    click.echo(load_or_create_key(directory, name).verifier.line())


@main.command()
def rebuild() -> None:
    """Rebuild every projection by replaying the log."""
    from ledger.projections import rebuild_all
    from ledger.runtime import build_runtime

    rt = build_runtime(_settings())
    try:
        counts = rebuild_all(rt.projector)
    finally:
        rt.close()
    click.echo("rebuilt: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@main.command()
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="a running ledger")
@click.option("--token", envvar="LEDGER_TOKEN", required=True, help="an admin token (or LEDGER_TOKEN)")
@click.option(
    "--out",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="where to write the audit bundle",
)
def demo(url: str, token: str, out: Path) -> None:
    """Run a complete example against a running service."""
    from ledger.demo import run_demo

    out.mkdir(parents=True, exist_ok=True)
    sys.exit(run_demo(url, token, out, click.echo))


if __name__ == "__main__":
    main()
