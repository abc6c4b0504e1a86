"""`python -m ledger.jobs`: the scheduler process `ledger serve` starts once per host."""

from __future__ import annotations

import signal
import sys

from ledger.config import Settings
from ledger.jobs.checkpoints import run_forever
from ledger.jobs.witnesses import WitnessConfig
from ledger.lifeline import die_with_serve_master
from ledger.logs import configure_logging
from ledger.security.keys import KeyFile
from ledger.store.db import Database
from ledger.store.ledger import Ledger


def main() -> None:
    # Quiet unless something is wrong: a run that stores a checkpoint logs at DEBUG, and APScheduler's
    # "Running job" / "executed successfully" lines (INFO, several a minute) are left out.
    configure_logging()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    die_with_serve_master()  # started by `ledger serve`: dies with it
    settings = Settings.from_env()
    # Only the log: the scheduler process imports no web framework, policy engine or projections.
    signer = KeyFile(settings.signing_key_path, settings.origin)  # follows `ledger keys rotate`
    ledger = Ledger(db=Database(settings.database_url, pool_size=1), signer=signer)
    run_forever(ledger, interval=settings.checkpoint_interval, witnesses=WitnessConfig.of(settings.witnesses))


if __name__ == "__main__":
    main()
