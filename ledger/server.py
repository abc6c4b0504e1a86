"""`ledger serve`: gunicorn with the app built in each worker and the scheduler in the master."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from gunicorn.app.base import BaseApplication

from ledger.config import Settings


def child_command(module: str, *args: str) -> list[str]:
    """The command line of a child process that runs `module` of the *installed* package.

    `python -m` puts the current directory first on the import path, so run from a source checkout
    it would import the checkout's `ledger/` instead of the installed one (which alone carries the
    packaged migrations and policies). `-P` (Python 3.11) leaves the current directory out.
    """
    return [sys.executable, "-P", "-m", module, *args]


class LedgerServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from ledger.app import create_app

        return create_app(self.settings)


def run_server(settings: Settings, *, host: str, port: int, workers: int, threads: int) -> None:
    scheduler: list[subprocess.Popen[bytes]] = []

    def when_ready(_server: Any) -> None:
        # One scheduler per host, as a process of its own: the master itself must hold no database
        # connection, since every worker it forks would inherit it (fatal for SQLite's locks). The
        # job's lease row then makes it one run per deployment.
        if settings.run_scheduler:
            scheduler.append(subprocess.Popen(child_command("ledger.jobs")))  # noqa: S603 (our own module)

    def on_exit(_server: Any) -> None:
        for proc in scheduler:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    LedgerServer(
        settings,
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread" if threads > 1 else "sync",
            "when_ready": when_ready,
            "on_exit": on_exit,
            "accesslog": None,
            "timeout": 120,
            "keepalive": 5,
        },
    ).run()
