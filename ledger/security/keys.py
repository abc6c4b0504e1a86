"""The log's Ed25519 signing key: created 0600 by `ledger init`, never logged or served."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from ledger.errors import ConfigurationError


def create_signing_key(path: Path) -> Ed25519PrivateKey:
    """Writes a new PEM Ed25519 key readable by the owner only; refuses to overwrite one."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: never clobber an existing key; mode 0600 from the first byte written.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ConfigurationError(f"signing key {path} does not exist; run `ledger init`") from e
    key = load_pem_private_key(data, password=None)
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


def rotate_signing_key(path: Path, *, retired_name: str) -> tuple[Ed25519PrivateKey, Ed25519PrivateKey]:
    """Starts a new signing key at `path`; the old one is kept (0600) under retired-keys/ for the record.

    Returns (old, new). The new key is written to a temporary file first and renamed over the old
    path, so a crash leaves either the old key or the new one in place, never none.
    """
    old = load_signing_key(path)
    keep = retired_dir(path)
    keep.mkdir(mode=0o700, parents=True, exist_ok=True)
    old_pem = old.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(keep / retired_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(old_pem)
    tmp = path.with_suffix(".new")
    tmp.unlink(missing_ok=True)
    new = create_signing_key(tmp)
    os.replace(tmp, path)
    return old, new
