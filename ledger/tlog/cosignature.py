"""C2SP tlog-cosignature, Ed25519 `cosignature/v1` (DESIGN.md 8, "Witnesses").

A witness cosigns a checkpoint with a note signature line whose key id is
SHA-256(name || 0x0A || 0x04 || public key)[:4] and whose signature is the 8-byte big-endian
timestamp followed by Ed25519 over `cosignature/v1\\ntime <timestamp>\\n<checkpoint body>`.
Its verifier key is `<name>+<hex key id>+<base64(0x04 || public key)>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.errors import VerificationError
from ledger.tlog.errors import InvalidCheckpointError
from ledger.tlog.note import SIG_PREFIX, _valid_key_name

COSIGNATURE_ALG = 0x04


def cosignature_key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([COSIGNATURE_ALG]) + public_key).digest()[:4]


def cosigned_message(text: str, timestamp: int) -> bytes:
    """What a witness signs for the checkpoint body `text` (final newline included)."""
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def split_note(note: str) -> tuple[str, list[str]]:
    """(text with its final newline, signature lines) of a signed note."""
    text, sep, block = note.rpartition("\n\n")
    if not sep or not note.endswith("\n"):
        raise InvalidCheckpointError("signed note has no signature block")
    lines = block[:-1].split("\n")
    if any(not line.startswith(SIG_PREFIX) for line in lines):
        raise InvalidCheckpointError("signed note has a malformed signature line")
    return text + "\n", lines


def with_cosignatures(note: str, lines: Sequence[str]) -> str:
    """`note` with the signature lines in `lines` appended (those it holds already are kept once)."""
    _, have = split_note(note)
    extra = [line.rstrip("\n") for line in lines if line.rstrip("\n") not in have]
    return note + "".join(f"{line}\n" for line in extra)


@dataclass(frozen=True)
class WitnessVerifier:
    """A witness's cosignature/v1 verifier key."""

    name: str
    key_id: bytes
    public_key: bytes

    @staticmethod
    def parse(vkey: str) -> WitnessVerifier:
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise InvalidCheckpointError("witness key must be <name>+<hex id>+<base64 key>")
        name, hex_id, b64 = parts
        try:
            raw = base64.b64decode(b64, validate=True)
            kid = bytes.fromhex(hex_id)
        except (binascii.Error, ValueError) as e:
            raise InvalidCheckpointError(f"witness key is not well encoded: {e}") from e
        if len(raw) != 33 or raw[0] != COSIGNATURE_ALG:
            raise InvalidCheckpointError("witness key is not an Ed25519 cosignature/v1 (0x04) key")
        if not _valid_key_name(name):
            raise InvalidCheckpointError(f"witness key name {name!r} is not a valid note key name")
        if len(hex_id) != 8 or kid != cosignature_key_id(name, raw[1:]):
            raise InvalidCheckpointError("witness key id does not match its name and public key")
        return WitnessVerifier(name, kid, raw[1:])

    def line(self) -> str:
        b64 = base64.b64encode(bytes([COSIGNATURE_ALG]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{b64}"

    def verify(self, note: str) -> int:
        """The timestamp of this witness's valid cosignature on `note`; raises when there is none."""
        text, lines = split_note(note)
        for line in lines:
            name, _, b64 = line[len(SIG_PREFIX) :].partition(" ")
            try:
                blob = base64.b64decode(b64, validate=True)
            except binascii.Error:
                continue
            if name != self.name or blob[:4] != self.key_id:
                continue
            if len(blob) != 4 + 8 + 64:
                raise VerificationError(f"cosignature by {self.name} has {len(blob)} bytes, expected 76")
            timestamp = int.from_bytes(blob[4:12], "big")
            try:
                Ed25519PublicKey.from_public_bytes(self.public_key).verify(blob[12:], cosigned_message(text, timestamp))
            except InvalidSignature as e:
                raise VerificationError(f"cosignature by {self.name} ({self.key_id.hex()}) is invalid") from e
            return timestamp
        raise VerificationError(f"no cosignature by witness {self.name}+{self.key_id.hex()}")


class WitnessSigner:
    """A witness's Ed25519 cosigning key."""

    def __init__(self, *, name: str, private_key: Ed25519PrivateKey) -> None:
        if not _valid_key_name(name):
            raise ValueError(f"{name!r} is not a valid note key name (no spaces, no '+')")
        self.name = name
        self._key = private_key
        public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = WitnessVerifier(name, cosignature_key_id(name, public), public)

    def __repr__(self) -> str:  # never show key material
        return f"WitnessSigner(name={self.name!r}, key_id={self.verifier.key_id.hex()})"

    def cosign(self, text: str, timestamp: int) -> str:
        """The cosignature line (with its newline) on the checkpoint body `text`."""
        if timestamp <= 0 or timestamp >= 2**63:
            raise ValueError("a cosignature timestamp is a positive POSIX time below 2**63")
        sig = self._key.sign(cosigned_message(text, timestamp))
        blob = self.verifier.key_id + timestamp.to_bytes(8, "big") + sig
        return f"{SIG_PREFIX}{self.name} {base64.b64encode(blob).decode()}\n"


def check_quorum(note: str, witnesses: Sequence[str], quorum: int | None) -> list[str]:
    """Requires `quorum` (default: all) valid cosignatures on `note` by the witness keys given;
    returns one line per witness saying what held. Raises VerificationError naming what failed."""
    verifiers = [WitnessVerifier.parse(w) for w in witnesses]
    need = len(verifiers) if quorum is None else quorum
    if need > len(verifiers):
        raise VerificationError(f"--quorum {need} is more than the {len(verifiers)} witness keys given")
    held, failed = [], []
    for v in verifiers:
        try:
            held.append(f"cosigned by {v.name} at {v.verify(note)}")
        except (VerificationError, InvalidCheckpointError) as e:
            failed.append(f"{v.name}: {e.detail}")
    if len(held) < need:
        raise VerificationError(
            f"{len(held)} of {need} required witness cosignatures hold on the checkpoint ({'; '.join(failed)})"
        )
    return held
