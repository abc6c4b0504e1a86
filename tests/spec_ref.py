"""An auditor's view of the log, written from the specs alone, to check what the API serves.

Nothing here imports `ledger`: leaf and tree hashes follow RFC 9162 2.1.1, the proof checks follow the
verification algorithms of RFC 9162 2.1.3.2 and 2.1.4.2 step by step, and notes and checkpoints follow
C2SP signed-note and tlog-checkpoint. Unlike `tests/tlog/reference.py` (which builds proofs from leaf
data), this module takes leaf *hashes*, as a client of the API holds them.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 2.1.1: MTH({d0}) = SHA-256(0x00 || d0)."""
    return _h(b"\x00" + data)


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 2.1.1: SHA-256(0x01 || MTH(left) || MTH(right))."""
    return _h(b"\x01" + left + right)


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 2.1.1, recursively, over leaf hashes; the empty tree hashes to SHA-256("")."""
    n = len(leaves)
    if n == 0:
        return _h(b"")
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def _shift_until_set_or_zero(fn: int, sn: int) -> tuple[int, int]:
    while fn & 1 == 0 and fn != 0:
        fn >>= 1
        sn >>= 1
    return fn, sn


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2, step by step."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                fn, sn = _shift_until_set_or_zero(fn, sn)
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 2.1.4.2, step by step (with the trivial cases first == 0 and first == second)."""
    if first > second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # step 1: first is an exact power of two
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1  # step 2
    if fn & 1:  # step 3
        while fn & 1:
            fn >>= 1
            sn >>= 1
    fr = sr = path[0]  # step 4
    for c in path[1:]:  # step 5
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                fn, sn = _shift_until_set_or_zero(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0  # step 6


def note_key_id(name: str, public_key: bytes) -> bytes:
    """C2SP signed-note: key id = SHA-256(name || 0x0A || 0x01 || public key)[:4] (Ed25519)."""
    return _h(name.encode() + b"\n" + b"\x01" + public_key)[:4]


def parse_verifier_key(vkey: str) -> tuple[str, bytes, bytes]:
    """`<name>+<hex key id>+<base64(0x01 || public key)>` -> (name, key id, public key); raises on
    anything else, including a key id that does not match the name and key."""
    name, hex_id, b64 = vkey.strip().split("+", 2)
    raw = base64.b64decode(b64, validate=True)
    if len(raw) != 33 or raw[0] != 0x01:
        raise ValueError("not an Ed25519 note verifier key")
    key_id = bytes.fromhex(hex_id)
    if len(key_id) != 4 or note_key_id(name, raw[1:]) != key_id:
        raise ValueError("verifier key id does not match its name and key")
    return name, key_id, raw[1:]


def verify_note(note: str, vkey: str) -> str:
    """C2SP signed-note: returns the note's text once a signature by `vkey` verifies; raises otherwise.

    vkey = <name>+<hex key id>+<base64(0x01 || Ed25519 public key)>, key id = SHA-256(name || 0x0A ||
    0x01 || public key)[:4].
    """
    name, key_id, public_key = parse_verifier_key(vkey)
    text, sep, sigs = note.rpartition("\n\n")
    if not sep:
        raise ValueError("a note needs a blank line before its signatures")
    text += "\n"
    public = Ed25519PublicKey.from_public_bytes(public_key)
    for line in sigs.splitlines():
        if not line.startswith("\u2014 "):
            raise ValueError(f"malformed signature line {line!r}")
        who, _, sig_b64 = line[2:].rpartition(" ")
        sig = base64.b64decode(sig_b64, validate=True)
        if who != name or sig[:4] != key_id:
            continue
        try:
            public.verify(sig[4:], text.encode())
        except InvalidSignature as e:
            raise ValueError("the signature by this key does not verify") from e
        return text
    raise ValueError("no signature by this key")


def verify_cosignature(note: str, witness_vkey: str) -> int:
    """C2SP tlog-cosignature, Ed25519 cosignature/v1: the timestamp of the valid cosignature by this
    witness on `note`; raises otherwise. vkey = <name>+<hex id>+<base64(0x04 || public key)>, key id =
    SHA-256(name || 0x0A || 0x04 || public key)[:4]; signature = u64 timestamp || Ed25519 over
    "cosignature/v1\ntime <timestamp>\n" || note body."""
    name, hex_id, b64 = witness_vkey.strip().split("+", 2)
    raw = base64.b64decode(b64, validate=True)
    if len(raw) != 33 or raw[0] != 0x04:
        raise ValueError("not a cosignature/v1 key")
    key_id = bytes.fromhex(hex_id)
    if _h(name.encode() + b"\n" + b"\x04" + raw[1:])[:4] != key_id:
        raise ValueError("witness key id does not match its name and key")
    text, sep, sigs = note.rpartition("\n\n")
    if not sep:
        raise ValueError("a note needs a blank line before its signatures")
    text += "\n"
    for line in sigs.splitlines():
        who, _, sig_b64 = line[2:].rpartition(" ")
        blob = base64.b64decode(sig_b64, validate=True)
        if who != name or blob[:4] != key_id:
            continue
        if len(blob) != 4 + 8 + 64:
            raise ValueError("a cosignature/v1 is 76 bytes")
        timestamp = int.from_bytes(blob[4:12], "big")
        message = f"cosignature/v1\ntime {timestamp}\n{text}".encode()
        try:
            Ed25519PublicKey.from_public_bytes(raw[1:]).verify(blob[12:], message)
        except InvalidSignature as e:
            raise ValueError("the cosignature does not verify") from e
        return timestamp
    raise ValueError("no cosignature by this witness")


def parse_checkpoint(text: str) -> tuple[str, int, bytes]:
    """C2SP tlog-checkpoint: origin, decimal size, base64 root hash (extension lines ignored)."""
    origin, size, root = text.split("\n")[:3]
    return origin, int(size), base64.b64decode(root, validate=True)


def _as_doubles(value: object) -> object:
    """A JSON value with every number as the IEEE double it denotes (RFC 8785 3.2.2.3, I-JSON)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return [_as_doubles(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_doubles(v) for k, v in value.items()}
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def same_json(a: object, b: object) -> bool:
    """True when two JSON values are the same value: equal RFC 8785 bytes, numbers compared as doubles."""
    import rfc8785

    return bool(rfc8785.dumps(_as_doubles(a)) == rfc8785.dumps(_as_doubles(b)))
