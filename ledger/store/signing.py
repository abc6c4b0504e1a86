"""Checkpoints and signing: a checkpoint is signed only for a committed tree, only with the log's
current key (a host that missed a rotation signs nothing), and only for a tree proven consistent
with the last checkpoint the log stored (no split view from the log itself: a tree rewritten in the
database is refused, 503, with an error in the log and `ledger_split_view_refusals_total`).

Witness cosignatures (C2SP tlog-cosignature) of stored checkpoints are kept beside them and served
with them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from prometheus_client import Counter
from sqlalchemy import select
from sqlmodel import Session, col

from ledger.errors import StaleSigningKeyError, UnavailableError, VerificationError
from ledger.store.db import Database
from ledger.store.models import Cosignature, SigningKey, StoredCheckpoint
from ledger.store.tree import consistency_proof, root_at, tree_size
from ledger.tlog.cosignature import split_note, with_cosignatures
from ledger.tlog.note import Checkpoint, NoteSigner
from ledger.tlog.proofs import verify_consistency

log = logging.getLogger("ledger.signing")
SPLIT_VIEW_REFUSALS = Counter(
    "ledger_split_view_refusals_total",
    "Checkpoints the log refused to sign: the tree is not consistent with its last stored checkpoint",
)


class SplitViewError(UnavailableError):
    """The tree is not consistent with the last stored checkpoint: the log signs nothing more."""


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
    _consistent: set[tuple[int, str, int, bytes]]  # (stored size, its note, size, root) proven consistent
    _append_base: tuple[int, str] | None  # the stored checkpoint the append leader's tree was proven against

    # --- checkpoints ---------------------------------------------------------------------------

    @property
    def signer(self) -> NoteSigner:
        s = self._signer
        return s if isinstance(s, NoteSigner) else s.current()

    @staticmethod
    def _sign_with(signer: NoteSigner, size: int, root: bytes) -> str:
        return signer.sign_checkpoint(Checkpoint(signer.name, size, root))

    def _sign(self, size: int, root: bytes) -> str:
        """Signs the tree an append group just committed. That group extended the tree `_open` proved
        consistent with a stored checkpoint (`_append_base`), so the new tree is consistent with it
        too: remembered, the next group's check costs one indexed read and no proof."""
        base = self._append_base
        if base is not None:
            self._remember((*base, size, root))
        return self._sign_cached(self.signer, size, root)

    def _remember(self, key: tuple[int, str, int, bytes]) -> None:
        if len(self._consistent) > 1024:
            self._consistent.clear()
        self._consistent.add(key)

    def require_current_key(self, session: Session, key_id: str) -> None:
        """Refuses to sign with a key the log has retired, or with one it does not know while another
        is current (a host that missed a rotation). A log with no registered key yet signs freely."""
        check_current_key(signing_key_rows(session, key_id), key_id)

    def require_consistent(self, session: Session, size: int, root: bytes, *, appending: bool = False) -> None:
        """Proves the tree (size, root) consistent with the last checkpoint this log stored, from the
        stored tree (RFC 9162 consistency proof); raises SplitViewError if it is not. A verified pair
        is remembered, so a repeated check costs one indexed read. `appending`: called by the append
        leader under the lock, for the tree its group extends (see `_sign`)."""
        self.require_consistent_with(session, last_checkpoint(session), size, root, appending=appending)

    def require_consistent_with(
        self, session: Session, last: tuple[int, str] | None, size: int, root: bytes, *, appending: bool = False
    ) -> None:
        """`require_consistent` with the last stored checkpoint (size, note) read already; the session
        is read only when the pair has not been proven before."""
        if appending:
            self._append_base = None
        if last is None:
            return
        m, note = last
        key = (m, note, size, root)
        if key in self._consistent:
            if appending:
                self._append_base = (m, note)
            return
        try:
            _prove_consistent(session, m, Checkpoint.parse(split_note(note)[0]).root_hash, size, root)
        except (VerificationError, LookupError) as e:
            SPLIT_VIEW_REFUSALS.inc()
            detail = e.detail if isinstance(e, VerificationError) else str(e)
            log.error(  # noqa: TRY400 (the cause is in the message; no traceback wanted)
                "refusing to sign: the tree of size %d (root %s) is not consistent with the stored checkpoint "
                "of size %d: %s",
                size,
                root.hex(),
                m,
                detail,
            )
            raise SplitViewError(
                f"the log refuses to sign: its tree of size {size} is not consistent with the checkpoint of size "
                f"{m} it stored ({detail}); the stored history was altered",
                retry_after=60,
            ) from e
        self._remember(key)
        if appending:
            self._append_base = (m, note)

    def checkpoint(self) -> SignedCheckpoint:
        """A signed checkpoint of the current tree (with the cosignatures stored for it)."""
        signer = self.signer
        with self.db.read() as session:
            self.require_current_key(session, signer.verifier.key_id.hex())
            size = tree_size(session)
            root = root_at(session, size)
            self.require_consistent(session, size, root)
            lines = self.cosignature_lines(session, size, root)
        note = self._sign_cached(signer, size, root)
        return SignedCheckpoint(size=size, root=root, note=with_cosignatures(note, lines) if lines else note)

    # --- cosignatures ----------------------------------------------------------------------------

    @staticmethod
    def cosignature_lines(session: Session, size: int, root: bytes) -> list[str]:
        rows = session.execute(
            select(col(Cosignature.line))
            .where(col(Cosignature.size) == size, col(Cosignature.root) == root)
            .order_by(col(Cosignature.witness))
        ).scalars()
        return list(rows)

    def latest_cosigned(self, session: Session, *, covering: int = 0) -> SignedCheckpoint | None:
        """The largest stored checkpoint of this key with a cosignature (of at least `covering`
        entries), its note carrying every cosignature stored for it; None if there is none."""
        key_id = self.signer.verifier.key_id.hex()
        row = session.execute(
            select(col(StoredCheckpoint.size), col(StoredCheckpoint.note))
            .join(Cosignature, col(Cosignature.size) == col(StoredCheckpoint.size))
            .where(col(StoredCheckpoint.key_id) == key_id, col(StoredCheckpoint.size) >= covering)
            .order_by(col(StoredCheckpoint.size).desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        size, note = int(row[0]), str(row[1])
        root = Checkpoint.parse(split_note(note)[0]).root_hash
        lines = self.cosignature_lines(session, size, root)
        if not lines:
            return None
        return SignedCheckpoint(size=size, root=root, note=with_cosignatures(note, lines))

    def record_cosignature(
        self, *, size: int, root: bytes, witness: str, witness_key_id: str, line: str, timestamp: int
    ) -> bool:
        """Stores a verified cosignature; False if that witness's cosignature of `size` is stored."""
        with self.db.write() as session:
            if session.get(Cosignature, (size, witness_key_id)) is not None:
                return False
            session.add(
                Cosignature(
                    size=size,
                    root=root,
                    witness=witness,
                    witness_key_id=witness_key_id,
                    line=line.rstrip("\n"),
                    timestamp=timestamp,
                    created_at=self.clock(),
                )
            )
        return True

    def cosigned_sizes(self) -> dict[str, int]:
        """witness key id -> the largest checkpoint size it cosigned."""
        from sqlalchemy import func

        with self.db.read() as session:
            rows = session.execute(
                select(col(Cosignature.witness_key_id), func.max(Cosignature.size)).group_by(
                    col(Cosignature.witness_key_id)
                )
            ).all()
        return {str(k): int(v) for k, v in rows}

    def latest_stored(self) -> tuple[int, bytes, str] | None:
        """(size, root, note) of the largest checkpoint this key stored."""
        key_id = self.signer.verifier.key_id.hex()
        with self.db.read() as session:
            row = session.execute(
                select(col(StoredCheckpoint.size), col(StoredCheckpoint.note))
                .where(col(StoredCheckpoint.key_id) == key_id)
                .order_by(col(StoredCheckpoint.size).desc())
                .limit(1)
            ).first()
        if row is None:
            return None
        return int(row[0]), Checkpoint.parse(split_note(str(row[1]))[0]).root_hash, str(row[1])

    def store_checkpoint(self) -> SignedCheckpoint | None:
        """Stores a signed checkpoint of the current tree unless one of that size is stored already."""
        signer = self.signer
        key_id = signer.verifier.key_id.hex()
        with self.db.write() as session:
            self.require_current_key(session, key_id)
            size = tree_size(session)
            root = root_at(session, size)
            self.require_consistent(session, size, root)
            if session.get(StoredCheckpoint, (size, key_id)) is not None:
                return None
            note = self.store_signed(session, signer, size, root)
        return SignedCheckpoint(size=size, root=root, note=note)

    def store_signed(self, session: Session, signer: NoteSigner, size: int, root: bytes) -> str:
        """Within the caller's write transaction: stores `signer`'s checkpoint of the tree (size, root)
        unless that key has stored one of this size already; returns the note."""
        key_id = signer.verifier.key_id.hex()
        stored = session.get(StoredCheckpoint, (size, key_id))
        if stored is not None:
            return stored.note
        self.require_consistent(session, size, root)
        note = self._sign_cached(signer, size, root)
        session.add(StoredCheckpoint(size=size, key_id=key_id, note=note, created_at=self.clock()))
        return note

    def stored_checkpoints(self) -> list[StoredCheckpoint]:
        with self.db.read() as session:
            rows = session.execute(select(StoredCheckpoint).order_by(col(StoredCheckpoint.size))).scalars().all()
            return list(rows)


def _prove_consistent(session: Session, m: int, m_root: bytes, size: int, root: bytes) -> None:
    if size < m:
        raise VerificationError(f"the tree has {size} entries, fewer than the stored checkpoint's {m}")
    if size == m and root != m_root:
        raise VerificationError(f"the root at size {m} differs from the stored checkpoint's")
    if size > m:
        verify_consistency(m, size, m_root, root, consistency_proof(session, m, size))


def check_current_key(rows: list[tuple[str, Any]], key_id: str) -> None:
    """Refuses (StaleSigningKeyError) to sign with `key_id`, given the signing-key rows that are
    `key_id` or current (valid_until None): a key the log has retired, or one it does not know while
    another is current (a host that missed a rotation). A log with no registered key signs freely."""
    if not rows or any(k == key_id and until is None for k, until in rows):
        return
    current = next((k for k, until in rows if until is None), None)
    raise StaleSigningKeyError(
        f"this host signs with key {key_id}, but the log's current key is {current}: "
        "install the current key file on this host",
        key_id=key_id,
        current=current,
    )


def signing_key_rows(session: Session, key_id: str) -> list[tuple[str, Any]]:
    """(key_id, valid_until) of the signing keys that are `key_id` or current: what
    `check_current_key` decides on."""
    rows = session.execute(
        select(SigningKey.key_id, SigningKey.valid_until).where(  # type: ignore[call-overload]
            (col(SigningKey.key_id) == key_id) | col(SigningKey.valid_until).is_(None)
        )
    ).all()
    return [(str(k), until) for k, until in rows]


def last_checkpoint(session: Session) -> tuple[int, str] | None:
    """(size, note) of the largest stored checkpoint, or None."""
    q = select(col(StoredCheckpoint.size), col(StoredCheckpoint.note)).order_by(col(StoredCheckpoint.size).desc())
    last = session.execute(q.limit(1)).first()
    return None if last is None else (int(last[0]), str(last[1]))
