"""Children die with their parent: a `ledger serve` master killed with SIGKILL leaves no worker
holding the port and no scheduler running on (issue 11: back in seconds after a crash).

A daemon thread in the child watches its parent's pid and ends the process within
`POLL_SECONDS` once the parent is gone. Not Linux's parent-death signal (prctl PR_SET_PDEATHSIG):
the kernel sends that when the *thread* that forked the child exits, and the server may start or
respawn workers from a thread that ends before the process does. The policy evaluation processes
watch their parent the same way (ledger/policy/worker.py), and also end with their stdin.
"""

from __future__ import annotations

import os
import threading
import time

POLL_SECONDS = 0.2
PARENT_ENV = "LEDGER_PARENT_PID"  # the pid of the `ledger serve` master, for its children


def die_with_parent(parent: int) -> None:
    """Ends this process (exit status 0) within POLL_SECONDS of `parent`'s death; at once if it is gone.

    Ends it with os._exit: whatever the process was writing is one database transaction, which the
    database rolls back when the connection drops.
    """
    if os.getppid() != parent:
        os._exit(0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="ledger-lifeline", daemon=True).start()


def die_with_serve_master() -> None:
    """In a child of `ledger serve` (a worker, the scheduler): dies with that master, if there is one."""
    parent = os.environ.get(PARENT_ENV)
    if parent and parent.isdigit():
        die_with_parent(int(parent))
