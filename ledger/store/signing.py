"""Checkpoints and signing: a checkpoint is signed only for a committed tree, and only with the
log's current key (a host that missed a rotation signs nothing)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import select
from sqlmodel import Session, col

from ledger.errors import StaleSigningKeyError
from ledger.store.db import Database
from ledger.store.models import SigningKey, StoredCheckpoint
from ledger.store.tree import root_at, tree_size
from ledger.tlog.note import Checkpoint, NoteSigner


class SignerSource(Protocol):
    """Hands out the signer to use now (a key file that may be rotated under a running process)."""

    def current(self) -> NoteSigner: ...


@dataclass(frozen=True, kw_only=True)
class SignedCheckpoint:
    size: int
    root: bytes
    note: str


class Checkpoints:
    """Signs checkpoints of the committed tree, and stores them."""

    db: Database
    clock: Callable[[], datetime]
    _signer: NoteSigner | SignerSource
    _sign_cached: Callable[[NoteSigner, int, bytes], str]

    # --- checkpoints ---------------------------------------------------------------------------

    @property
    def signer(self) -> NoteSigner:
        s = self._signer
        return s if isinstance(s, NoteSigner) else s.current()

    @staticmethod
    def _sign_with(signer: NoteSigner, size: int, root: bytes) -> str:
        return signer.sign_checkpoint(Checkpoint(signer.name, size, root))

    def _sign(self, size: int, root: bytes) -> str:
        return self._sign_cached(self.signer, size, root)

    def require_current_key(self, session: Session, key_id: str) -> None:
        """Refuses to sign with a key the log has retired, or with one it does not know while another
        is current (a host that missed a rotation). A log with no registered key yet signs freely."""
        rows = session.execute(
            select(SigningKey.key_id, SigningKey.valid_until).where(  # type: ignore[call-overload]
                (col(SigningKey.key_id) == key_id) | col(SigningKey.valid_until).is_(None)
            )
        ).all()
        if not rows or any(k == key_id and until is None for k, until in rows):
            return
        current = next((k for k, until in rows if until is None), None)
        raise StaleSigningKeyError(
            f"this host signs with key {key_id}, but the log's current key is {current}: "
            "install the current key file on this host",
            key_id=key_id,
            current=current,
        )

    def checkpoint(self) -> SignedCheckpoint:
        """A signed checkpoint of the current tree."""
        signer = self.signer
        with self.db.read() as session:
            self.require_current_key(session, signer.verifier.key_id.hex())
            size = tree_size(session)
            root = root_at(session, size)
        return SignedCheckpoint(size=size, root=root, note=self._sign_cached(signer, size, root))

    def store_checkpoint(self) -> SignedCheckpoint | None:
        """Stores a signed checkpoint of the current tree unless one of that size is stored already."""
        signer = self.signer
        key_id = signer.verifier.key_id.hex()
        with self.db.write() as session:
            self.require_current_key(session, key_id)
            size = tree_size(session)
            if session.get(StoredCheckpoint, (size, key_id)) is not None:
                return None
            root = root_at(session, size)
            note = self.store_signed(session, signer, size, root)
        return SignedCheckpoint(size=size, root=root, note=note)

    def store_signed(self, session: Session, signer: NoteSigner, size: int, root: bytes) -> str:
        """Within the caller's write transaction: stores `signer`'s checkpoint of the tree (size, root)
        unless that key has stored one of this size already; returns the note."""
        key_id = signer.verifier.key_id.hex()
        stored = session.get(StoredCheckpoint, (size, key_id))
        if stored is not None:
            return stored.note
        note = self._sign_cached(signer, size, root)
        session.add(StoredCheckpoint(size=size, key_id=key_id, note=note, created_at=self.clock()))
        return note

    def stored_checkpoints(self) -> list[StoredCheckpoint]:
        with self.db.read() as session:
            rows = session.execute(select(StoredCheckpoint).order_by(col(StoredCheckpoint.size))).scalars().all()
            return list(rows)
