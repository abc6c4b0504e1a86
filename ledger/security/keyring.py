"""The log's signing keys: the current one signs; every key ever used is published with its validity."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from ledger.store.db import Database
from ledger.store.models import SigningKey
from ledger.store.tree import tree_size
from ledger.tlog.note import NoteSigner


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Keyring:
    def __init__(self, db: Database, signer: NoteSigner) -> None:
        self.db = db
        self.signer = signer

    def register_current(self) -> None:
        """Records the current key's public half and start of validity (idempotent)."""
        kid = self.signer.verifier.key_id.hex()
        with self.db.write() as session:
            if session.get(SigningKey, kid) is not None:
                return
            now = datetime.now(UTC)
            for old in session.execute(select(SigningKey).where(SigningKey.valid_until.is_(None))).scalars():  # type: ignore[union-attr]
                old.valid_until = now
            session.add(
                SigningKey(
                    key_id=kid,
                    name=self.signer.name,
                    verifier_key=self.signer.verifier.line(),
                    valid_from=now,
                    first_size=tree_size(session),
                )
            )

    def describe(self) -> dict[str, Any]:
        current = self.signer.verifier.key_id.hex()
        with self.db.read() as session:
            rows = session.execute(select(SigningKey).order_by(SigningKey.valid_from)).scalars().all()  # type: ignore[arg-type]
            keys = [
                {
                    "key_id": r.key_id,
                    "name": r.name,
                    "verifier_key": r.verifier_key,
                    "valid_from": _iso(r.valid_from),
                    "valid_until": _iso(r.valid_until),
                    "current": r.key_id == current,
                }
                for r in rows
            ]
        if not any(k["current"] for k in keys):
            keys.append(
                {
                    "key_id": current,
                    "name": self.signer.name,
                    "verifier_key": self.signer.verifier.line(),
                    "valid_from": None,
                    "valid_until": None,
                    "current": True,
                }
            )
        return {"origin": self.signer.name, "keys": keys}
