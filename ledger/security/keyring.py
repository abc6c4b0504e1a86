"""The log's signing keys: the current one signs; every key ever used is published with its validity.

The database names the current key; each host holds its private half in a file. `initialise` checks
that a host's file is that key before the host serves (`check_host_key`), and a rotation names the new
key in the same transaction that retires the old one and stores the new key's first checkpoint.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from ledger.errors import ConfigurationError
from ledger.store.db import Database
from ledger.store.ledger import Ledger
from ledger.store.models import SigningKey
from ledger.store.tree import root_at, tree_size
from ledger.tlog.note import NoteSigner


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


def key_state(db: Database, key_id: str | None) -> tuple[str | None, str | None]:
    """(the log's current verifier key line, or None for a new log; when `key_id` was retired, or None)."""
    with db.read() as session:
        current = session.execute(
            select(SigningKey.verifier_key).where(col(SigningKey.valid_until).is_(None))  # type: ignore[call-overload]
        ).scalar_one_or_none()
        mine = session.get(SigningKey, key_id) if key_id else None
        return current, _iso(mine.valid_until) if mine is not None else None


def _row(signer: NoteSigner, now: datetime, first_size: int) -> SigningKey:
    return SigningKey(
        key_id=signer.verifier.key_id.hex(),
        name=signer.name,
        verifier_key=signer.verifier.line(),
        valid_from=now,
        first_size=first_size,
    )


class Keyring:
    def __init__(self, db: Database, ledger: Ledger) -> None:
        self.db = db
        self.ledger = ledger

    @property
    def signer(self) -> NoteSigner:
        return self.ledger.signer

    def register_current(self) -> None:
        """Names this host's key current if the log has no key yet (idempotent).

        Never retires another key: only `rotate_to` does (a host with a different key is refused by
        `check_host_key` before it gets here).
        """
        signer = self.signer
        with self.db.write() as session:
            if session.get(SigningKey, signer.verifier.key_id.hex()) is not None:
                return
            other = session.execute(
                select(SigningKey.key_id).where(col(SigningKey.valid_until).is_(None))  # type: ignore[call-overload]
            ).scalar_one_or_none()
            if other is not None:  # another host started this new log with a key of its own just now
                raise ConfigurationError(
                    f"this log's current key is {other}, not this host's {signer.verifier.key_id.hex()}: copy "
                    "the current key file from a host of this deployment (or point LEDGER_SIGNING_KEY at it)"
                )
            session.add(_row(signer, datetime.now(UTC), tree_size(session)))

    def rotate_to(self, new: NoteSigner) -> None:
        """Retires the current key and names `new` current, with a checkpoint signed by each key of the
        same tree, all in one transaction."""
        old = self.signer
        now = datetime.now(UTC)
        with self.db.write() as session:
            # Under the lock: a rotation run at the same time elsewhere has not retired `old` already.
            self.ledger.require_current_key(session, old.verifier.key_id.hex())
            size = tree_size(session)
            root = root_at(session, size)
            for row in session.execute(select(SigningKey).where(col(SigningKey.valid_until).is_(None))).scalars():
                row.valid_until = now
            session.add(_row(new, now, size))
            for signer in (old, new):
                self.ledger.store_signed(session, signer, size, root)

    def describe(self) -> dict[str, Any]:
        with self.db.read() as session:
            rows = session.execute(select(SigningKey).order_by(col(SigningKey.valid_from))).scalars().all()
            keys = [
                {
                    "key_id": r.key_id,
                    "name": r.name,
                    "verifier_key": r.verifier_key,
                    "valid_from": _iso(r.valid_from),
                    "valid_until": _iso(r.valid_until),
                    "current": r.valid_until is None,
                }
                for r in rows
            ]
        if not keys:  # a log that has not registered its key yet (library use, tests)
            signer = self.signer
            keys.append(
                {
                    "key_id": signer.verifier.key_id.hex(),
                    "name": signer.name,
                    "verifier_key": signer.verifier.line(),
                    "valid_from": None,
                    "valid_until": None,
                    "current": True,
                }
            )
        return {"origin": self.signer.name, "keys": keys}
