"""`python -m ledger.applier`: the projections' applier, a process of its own that `ledger serve`
starts once per host (and starts again if it dies).

Why not a thread in each worker (as `create_app` alone runs it): there, every worker woke after
each of its commits, read the watermarks, and raced the others for the projector lock, and the
winner applied a few entries at a time under the worker's GIL, slowing the requests beside it.
Measured under single-event intake, the workers' appliers took about a third of the server's CPU
(`bench/profile_server.py`). One applier per host polls the log every
`LEDGER_APPLIER_POLL_SECONDS` (0.2 s), so a batch carries whatever arrived meanwhile (the fixed cost
of a batch is a few dozen statements), and its CPU is no worker's.

Reads and writes that must see the projections (`?min_seq=`, governance writes) do not wait for
it: `Projector.sync` applies a pending batch itself when the projector lock is free. The lock keeps
it one applier at a time per deployment, whatever the number of hosts.
"""

from __future__ import annotations

import signal
import threading

from ledger.config import Settings
from ledger.lifeline import die_with_serve_master
from ledger.logs import configure_logging
from ledger.runtime import build_runtime


def main() -> None:
    configure_logging()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    die_with_serve_master()  # started by `ledger serve`: dies with it
    settings = Settings.from_env()
    rt = build_runtime(settings)
    rt.projector.start(poll=settings.applier_poll_seconds)
    try:
        stop.wait()
    finally:
        rt.close()


if __name__ == "__main__":
    main()
