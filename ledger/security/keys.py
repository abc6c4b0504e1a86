"""The log's Ed25519 signing key: created 0600 by `ledger init`, never logged or served."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from ledger.errors import ConfigurationError
from ledger.tlog.note import NoteSigner

log = logging.getLogger("ledger.keys")


def create_signing_key(path: Path) -> Ed25519PrivateKey:
    """Writes a new PEM Ed25519 key readable by the owner only; refuses to overwrite one."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: never clobber an existing key; mode 0600 from the first byte written.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())  # on disk before anything (the database, a rename) names this key
    _fsync_dir(path.parent)
    return key


def _fsync_dir(directory: Path) -> None:
    """Makes a file's creation or rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ConfigurationError(f"signing key {path} does not exist; run `ledger init`") from e
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:  # not PEM, encrypted, or an unsupported key type
        raise ConfigurationError(f"signing key {path} is not an unencrypted PEM private key ({e})") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"signing key {path} is not an Ed25519 private key")
    return key


def ensure_signing_key(path: Path) -> Ed25519PrivateKey:
    if path.exists():
        return load_signing_key(path)
    try:
        return create_signing_key(path)
    except FileExistsError:  # another process created it between the check and the open
        return load_signing_key(path)


def retired_dir(signing_key_path: Path) -> Path:
    return signing_key_path.parent / "retired-keys"


def pending_key_path(path: Path) -> Path:
    """Where `ledger keys rotate` writes the next key before the database names it current."""
    return path.with_suffix(".new")


def prepare_next_key(path: Path) -> Ed25519PrivateKey:
    """Writes a fresh key beside `path` (0600); a leftover from an interrupted rotation is replaced."""
    tmp = pending_key_path(path)
    tmp.unlink(missing_ok=True)
    return create_signing_key(tmp)


def install_next_key(path: Path, *, retired_name: str) -> None:
    """Keeps the old key (0600) under retired-keys/ and renames the prepared key over `path`.

    A crash leaves either the old key or the new one at `path`, never none; the database already
    names the new key current, and `check_host_key` finishes the job on the next start.
    """
    keep = retired_dir(path)
    keep.mkdir(mode=0o700, parents=True, exist_ok=True)
    old_pem = load_signing_key(path).private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    target = keep / retired_name
    if not target.exists():
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(old_pem)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(keep)
    os.replace(pending_key_path(path), path)
    _fsync_dir(path.parent)


def key_id_of(key: Ed25519PrivateKey, origin: str) -> str:
    return NoteSigner(name=origin, private_key=key).verifier.key_id.hex()


def check_host_key(path: Path, origin: str, current: str | None, retired_at: str | None = None) -> None:
    """Makes sure this host signs with the log's current key (`current`: its verifier key line, None
    for a new log).

    Every host of a deployment must hold the same key under the same origin: a host that made up its
    own would sign checkpoints that no verifier of this log accepts. A rotation interrupted after the
    database named the new key is finished here.
    """
    if current is None:
        ensure_signing_key(path)
        return
    log_origin, current_id, _ = current.split("+", 2)
    if not path.exists():
        raise ConfigurationError(
            f"no signing key at {path}, and this log is already signed by key {current_id}: copy the key "
            "file from a host of this deployment (or point LEDGER_SIGNING_KEY at it)"
        )
    key = load_signing_key(path)
    if origin != log_origin and NoteSigner(name=log_origin, private_key=key).verifier.line() == current:
        raise ConfigurationError(
            f"this host's origin is {origin!r}, but the log's is {log_origin!r}: set LEDGER_ORIGIN={log_origin} "
            "on every host of this deployment"
        )
    here = key_id_of(key, origin)
    if here == current_id and origin == log_origin:
        return
    pending = pending_key_path(path)
    if pending.exists() and key_id_of(load_signing_key(pending), origin) == current_id:
        install_next_key(path, retired_name=f"{here}.pem")
        log.warning("finished an interrupted key rotation: %s now holds key %s", path, current_id)
        return
    why = f" (key {here} was retired at {retired_at})" if retired_at else ""
    raise ConfigurationError(
        f"the signing key at {path} is key {here}, but this log's current key is {current_id}{why}: copy "
        "the current key file from a host of this deployment (or point LEDGER_SIGNING_KEY at it)"
    )


class KeyFile:
    """The signing key at `path`, loaded again when the file is replaced (`ledger keys rotate`).

    Costs one stat() per use, so running workers and the scheduler pick up a rotation without a
    restart.
    """

    def __init__(self, path: Path, origin: str) -> None:
        self.path = path
        self.origin = origin
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._signer: NoteSigner | None = None
        self.current()

    def current(self) -> NoteSigner:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            if self._signer is None:
                raise ConfigurationError(f"signing key {self.path} does not exist; run `ledger init`") from None
            return self._signer  # mid-rename: keep signing with the key in hand
        if stamp != self._stamp or self._signer is None:
            with self._lock:
                if stamp != self._stamp or self._signer is None:
                    try:
                        key = load_signing_key(self.path)
                    except (ValueError, ConfigurationError):
                        if self._signer is None:
                            raise
                        # Half-written (a plain copy in progress): keep the key in hand, look again later.
                        log.warning("signing key %s could not be read; still signing with the previous one", self.path)
                        return self._signer
                    self._signer = NoteSigner(name=self.origin, private_key=key)
                    self._stamp = stamp
        return self._signer

    def __repr__(self) -> str:  # never show key material
        return f"KeyFile({str(self.path)!r})"


DEDUP_SECRET_BYTES = 32


def ensure_dedup_secret(path: Path) -> bytes:
    """The server secret that keys intake's dedup keys (HMAC-SHA256), created 0600 on first use.

    Without it, a dedup key is the plain digest of an event, and anyone can confirm a guess of an
    event's content by computing it. Every host of a deployment needs the same file (as it needs the
    same database). Written to a temporary name and linked into place, so a racing process reads
    either nothing or the whole secret.
    """
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(DEDUP_SECRET_BYTES) + "\n")
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs is the one
            os.link(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    text = path.read_text().strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError as e:
        raise ConfigurationError(f"dedup secret {path} is not hex") from e
    if len(secret) < 16:
        raise ConfigurationError(f"dedup secret {path} is shorter than 16 bytes")
    return secret


def dedup_secret(key_file: Path | None, data_dir: Path, signing_key_path: Path) -> bytes:
    """The secret that keys intake's dedup keys: the file `key_file` (LEDGER_DEDUP_KEY) when set, or
    a `dedup-key` file already in the data dir; otherwise derived from the signing key (HKDF-SHA256,
    an info string of its own), so that a host with the key file and the database URL needs nothing
    else. After a key rotation the derived secret changes: a repeat of an event recorded before it
    is then recorded anew (set LEDGER_DEDUP_KEY to keep one secret across rotations)."""
    if key_file is not None:
        return ensure_dedup_secret(key_file)
    legacy = data_dir / "dedup-key"
    if legacy.exists():
        return _read_secret(legacy)
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    raw = load_signing_key(signing_key_path).private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    hkdf = HKDF(algorithm=hashes.SHA256(), length=DEDUP_SECRET_BYTES, salt=None, info=b"ledger dedup key v1")
    return hkdf.derive(raw)
