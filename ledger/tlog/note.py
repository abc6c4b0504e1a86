"""C2SP tlog-checkpoint bodies inside C2SP signed notes, with Ed25519 (DESIGN.md 3.2).

Note text: `<origin>\n<size>\n<base64 root>\n`; a signed note is the text, a blank line, and one
line per signature: `— <key name> <base64(key id || signature)>\n`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.tlog.errors import InvalidCheckpointError
from ledger.tlog.hashing import HASH_SIZE

ED25519_ALG = 0x01
SIG_PREFIX = "\u2014 "  # em dash, space
_SIZE_RE = re.compile(r"\A(0|[1-9][0-9]*)\Z")


def _valid_key_name(name: str) -> bool:
    # C2SP signed-note: key names are non-empty, with no Unicode spaces and no plus signs.
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_id(name: str, public_key: bytes) -> bytes:
    """C2SP signed-note: key id = SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519_ALG]) + public_key).digest()[:4]


@dataclass(frozen=True)
class Checkpoint:
    """A C2SP tlog-checkpoint body: origin, tree size and root hash."""

    origin: str
    size: int
    root_hash: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root_hash).decode()}\n"

    @staticmethod
    def parse(text: str) -> Checkpoint:
        """Parses a checkpoint body (extension lines after the root are allowed and ignored)."""
        if not text.endswith("\n"):
            raise InvalidCheckpointError("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise InvalidCheckpointError(f"checkpoint has {len(lines)} lines, needs at least 3")
        origin, size_s, root_s = lines[:3]
        if any(not line for line in lines[3:]):  # C2SP tlog-checkpoint: extension lines are non-empty
            raise InvalidCheckpointError("checkpoint has an empty extension line")
        if not origin:
            raise InvalidCheckpointError("checkpoint origin is empty")
        if not _SIZE_RE.match(size_s) or int(size_s) >= 2**64:
            raise InvalidCheckpointError(f"checkpoint size {size_s!r} is not a decimal number below 2**64")
        try:
            root = base64.b64decode(root_s, validate=True)
        except binascii.Error as e:
            raise InvalidCheckpointError(f"checkpoint root {root_s!r} is not base64") from e
        if len(root) != HASH_SIZE:
            raise InvalidCheckpointError(f"checkpoint root has {len(root)} bytes, expected {HASH_SIZE}")
        return Checkpoint(origin, int(size_s), root)


@dataclass(frozen=True)
class NoteVerifier:
    """An Ed25519 note verifier key: `<name>+<hex key id>+<base64(0x01 || public key)>`."""

    name: str
    key_id: bytes
    public_key: bytes

    @staticmethod
    def parse(vkey: str) -> NoteVerifier:
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise InvalidCheckpointError("verifier key must be <name>+<hex id>+<base64 key>")
        name, hex_id, b64 = parts
        try:
            raw = base64.b64decode(b64, validate=True)
            kid = bytes.fromhex(hex_id)
        except (binascii.Error, ValueError) as e:
            raise InvalidCheckpointError(f"verifier key is not well encoded: {e}") from e
        if len(raw) != 33 or raw[0] != ED25519_ALG:
            raise InvalidCheckpointError("verifier key is not an Ed25519 (0x01) note key")
        if not _valid_key_name(name):
            raise InvalidCheckpointError(f"verifier key name {name!r} is not a valid note key name")
        if len(hex_id) != 8 or kid != key_id(name, raw[1:]):
            raise InvalidCheckpointError("verifier key id does not match its name and public key")
        return NoteVerifier(name, kid, raw[1:])

    def line(self) -> str:
        b64 = base64.b64encode(bytes([ED25519_ALG]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{b64}"

    def verify(self, note: str) -> str:
        """Returns the note text if it carries a valid signature by this key; raises otherwise.

        Signatures by other keys are ignored, as C2SP signed-note requires.
        """
        text, sep, block = note.rpartition("\n\n")
        if not sep or not note.endswith("\n"):
            raise InvalidCheckpointError("signed note has no signature block")
        text += "\n"
        # C2SP signed-note: the text holds no ASCII control characters other than newline.
        if any(ord(c) < 0x20 and c != "\n" for c in text) or "\x7f" in text:
            raise InvalidCheckpointError("note text contains control characters")
        found = False
        for line in block[:-1].split("\n"):
            if not line.startswith(SIG_PREFIX):
                raise InvalidCheckpointError(f"malformed signature line {line!r}")
            name, _, b64 = line[len(SIG_PREFIX) :].partition(" ")
            try:
                blob = base64.b64decode(b64, validate=True)
            except binascii.Error as e:
                raise InvalidCheckpointError(f"signature by {name!r} is not base64") from e
            if len(blob) < 5:
                raise InvalidCheckpointError(f"signature by {name!r} is too short")
            if name != self.name or blob[:4] != self.key_id:
                continue
            try:
                Ed25519PublicKey.from_public_bytes(self.public_key).verify(blob[4:], text.encode())
            except InvalidSignature as e:
                raise InvalidCheckpointError(f"signature by {name} ({self.key_id.hex()}) is invalid") from e
            found = True
        if not found:
            raise InvalidCheckpointError(f"note carries no signature by {self.name}+{self.key_id.hex()}")
        return text


class NoteSigner:
    """Signs note texts with one Ed25519 key under a key name (the log origin)."""

    def __init__(self, *, name: str, private_key: Ed25519PrivateKey) -> None:
        if not _valid_key_name(name):
            raise ValueError(f"{name!r} is not a valid note key name (no spaces, no '+')")
        self.name = name
        self._key = private_key
        public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = NoteVerifier(name, key_id(name, public), public)

    def __repr__(self) -> str:  # never show key material
        return f"NoteSigner(name={self.name!r}, key_id={self.verifier.key_id.hex()})"

    def signature_line(self, text: str) -> str:
        sig = self._key.sign(text.encode())
        return f"{SIG_PREFIX}{self.name} {base64.b64encode(self.verifier.key_id + sig).decode()}\n"

    def sign(self, text: str) -> str:
        """Returns the signed note: text, blank line, this key's signature line."""
        if not text.endswith("\n"):
            raise ValueError("note text must end with a newline")
        return f"{text}\n{self.signature_line(text)}"

    def sign_checkpoint(self, checkpoint: Checkpoint) -> str:
        return self.sign(checkpoint.text())
