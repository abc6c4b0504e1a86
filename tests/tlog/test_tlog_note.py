"""C2SP signed notes and tlog-checkpoints (`ledger.tlog.note`, DESIGN.md 3.2), checked against the
golang.org/x/mod sumdb/note vectors and the independent verifier in tests/spec_ref.py."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import VerificationError
from ledger.tlog.errors import InvalidCheckpointError
from ledger.tlog.note import Checkpoint, NoteSigner, NoteVerifier, key_id

GO_VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "go-sumdb-note" / "note-vectors.json"
GO = json.loads(GO_VECTORS.read_text(encoding="utf-8"))
EM_DASH = "\u2014"
ORIGIN = "ledger.local/test-instance"
ROOT = hashlib.sha256(b"some root").digest()
REF_ERRORS = (ValueError, InvalidSignature)  # what the conformance reference raises on a bad note


def private_key(seed: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest())


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


LOG_KEY = private_key(b"log key")
WITNESS_KEY = private_key(b"witness key")
LOG = NoteSigner(name=ORIGIN, private_key=LOG_KEY)
WITNESS = NoteSigner(name="witness.example/w1", private_key=WITNESS_KEY)
CHECKPOINT = Checkpoint(ORIGIN, 41, ROOT)


def signed_checkpoint() -> str:
    return LOG.sign_checkpoint(CHECKPOINT)


def sig_blob(note: str, name: str = ORIGIN) -> bytes:
    for line in note.split("\n"):
        if line.startswith(f"{EM_DASH} {name} "):
            return base64.b64decode(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no signature line by {name}")


def with_blob(text: str, name: str, blob: bytes) -> str:
    return f"{text}\n{EM_DASH} {name} {base64.b64encode(blob).decode()}\n"


def go_signer() -> NoteSigner:
    # PRIVATE+KEY+<name>+<hex id>+base64(0x01 || 32-byte Ed25519 seed)
    _, _, name, _, b64 = GO["peter"]["signer_key"].split("+", 4)
    raw = base64.b64decode(b64)
    assert raw[0] == 0x01
    return NoteSigner(name=name, private_key=Ed25519PrivateKey.from_private_bytes(raw[1:]))


# --- key ids and verifier keys --------------------------------------------------------------------


def test_key_id_is_c2sp(tlog_ref: Any) -> None:
    for signer, key in ((LOG, LOG_KEY), (WITNESS, WITNESS_KEY)):
        pub = raw_public(key)
        want = hashlib.sha256(signer.name.encode() + b"\x0a" + b"\x01" + pub).digest()[:4]
        assert key_id(signer.name, pub) == want
        assert signer.verifier.key_id == want
        assert signer.verifier.public_key == pub
        assert tlog_ref.note_key_id(signer.name, pub) == want


def test_key_id_known_answers_from_go() -> None:
    for who in ("peter", "enoch"):
        v = NoteVerifier.parse(GO[who]["verifier_key"])
        assert v.name == GO[who]["name"]
        assert v.key_id.hex() == GO[who]["key_id_hex"]
        assert key_id(v.name, v.public_key).hex() == GO[who]["key_id_hex"]
        assert v.line() == GO[who]["verifier_key"]


def test_key_id_of_non_ascii_name_uses_utf8() -> None:
    name = "ledger.local/ünïcödé"
    pub = raw_public(LOG_KEY)
    assert key_id(name, pub) == hashlib.sha256(name.encode("utf-8") + b"\n\x01" + pub).digest()[:4]


def test_verifier_key_line(tlog_ref: Any) -> None:
    pub = raw_public(LOG_KEY)
    line = LOG.verifier.line()
    encoded_key = base64.b64encode(b"\x01" + pub).decode()
    assert line == f"{ORIGIN}+{LOG.verifier.key_id.hex()}+{encoded_key}"
    assert NoteVerifier.parse(line) == LOG.verifier
    assert NoteVerifier.parse(line + "\n") == LOG.verifier
    assert tlog_ref.parse_verifier_key(line) == (ORIGIN, LOG.verifier.key_id, pub)


def _go_manglings(vkey: str) -> list[str]:
    # golang.org/x/mod sumdb/note TestNewVerifier: every proper substring and every byte + 1.
    n = len(vkey)
    out = [vkey[i:j] for i in range(n + 1) for j in range(i + 1, n + 1) if (i, j) != (0, n)]
    out += [vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1 :] for i in range(len(vkey))]
    return out + GO["bad_verifier_keys"]


def test_mangled_verifier_keys_are_rejected() -> None:
    bad = _go_manglings(GO["peter"]["verifier_key"])
    assert len(bad) > 2000
    for vkey in bad:
        with pytest.raises(InvalidCheckpointError):
            NoteVerifier.parse(vkey)


def _vkey(name: str, kid: bytes, raw: bytes) -> str:
    return f"{name}+{kid.hex()}+{base64.b64encode(raw).decode()}"


PUB = raw_public(LOG_KEY)
MALFORMED_VERIFIER_KEYS = {
    "empty": "",
    "name only": ORIGIN,
    "two parts": f"{ORIGIN}+{key_id(ORIGIN, PUB).hex()}",
    "empty key": f"{ORIGIN}+{key_id(ORIGIN, PUB).hex()}+",
    "id not hex": _vkey(ORIGIN, bytes(4), b"\x01" + PUB).replace("00000000", "zzzzzzzz"),
    "short id": _vkey(ORIGIN, key_id(ORIGIN, PUB)[:3], b"\x01" + PUB),
    "long id": _vkey(ORIGIN, key_id(ORIGIN, PUB) + b"\x00", b"\x01" + PUB),
    "wrong id": _vkey(ORIGIN, bytes(4), b"\x01" + PUB),
    "id of other name": _vkey(ORIGIN, key_id("other", PUB), b"\x01" + PUB),
    "no algorithm byte": _vkey(ORIGIN, key_id(ORIGIN, PUB), PUB),
    "algorithm 0x02": _vkey(ORIGIN, key_id(ORIGIN, PUB), b"\x02" + PUB),
    "short key": _vkey(ORIGIN, key_id(ORIGIN, PUB[:31]), b"\x01" + PUB[:31]),
    "long key": _vkey(ORIGIN, key_id(ORIGIN, PUB + b"\x00"), b"\x01" + PUB + b"\x00"),
    "not base64": f"{ORIGIN}+{key_id(ORIGIN, PUB).hex()}+not*base64!",
    "unpadded base64": _vkey(ORIGIN, key_id(ORIGIN, PUB), b"\x01" + PUB).rstrip("=") + "A",
    "empty name": _vkey("", key_id("", PUB), b"\x01" + PUB),
    "name with space": _vkey("a b", key_id("a b", PUB), b"\x01" + PUB),
    "name with nbsp": _vkey("a\u00a0b", key_id("a\u00a0b", PUB), b"\x01" + PUB),
}


@pytest.mark.parametrize("vkey", MALFORMED_VERIFIER_KEYS.values(), ids=MALFORMED_VERIFIER_KEYS.keys())
def test_malformed_verifier_key(vkey: str) -> None:
    with pytest.raises(InvalidCheckpointError):
        NoteVerifier.parse(vkey)


# --- golang.org/x/mod sumdb/note known answers ----------------------------------------------------


def test_go_signature_is_reproduced_byte_for_byte(tlog_ref: Any) -> None:
    signer = go_signer()
    assert signer.verifier.line() == GO["peter"]["verifier_key"]
    note = signer.sign(GO["text"])
    assert note == GO["text"] + "\n" + GO["peter"]["signature_line"]
    assert tlog_ref.verify_note(note, GO["peter"]["verifier_key"]) == GO["text"]


def test_go_note_with_two_signatures_opens_with_either_key(tlog_ref: Any) -> None:
    note = GO["text"] + "\n" + GO["peter"]["signature_line"] + GO["enoch"]["signature_line"]
    for who in ("peter", "enoch"):
        assert NoteVerifier.parse(GO[who]["verifier_key"]).verify(note) == GO["text"]
        assert tlog_ref.verify_note(note, GO[who]["verifier_key"]) == GO["text"]


def test_go_invalid_signature_is_rejected() -> None:
    sig = GO["peter"]["signature_line"]
    note = GO["text"] + "\n" + sig[:60] + "ABCD" + sig[60:]
    with pytest.raises(InvalidCheckpointError):
        NoteVerifier.parse(GO["peter"]["verifier_key"]).verify(note)


def test_go_malformed_notes_are_rejected() -> None:
    text, sig = GO["text"], GO["peter"]["signature_line"]
    bad = [
        text,
        text + "\n",
        text + "\n" + sig[:-1],
        "\x01" + text + "\n" + sig,
        "\xff" + text + "\n" + sig,
        text + "\n" + f"{EM_DASH} Bad Name " + sig.split(" ")[-1].rstrip("\n"),
        text + "\n" + sig + "Unexpected line.\n",
    ]
    verifier = NoteVerifier.parse(GO["peter"]["verifier_key"])
    for note in bad:
        with pytest.raises(InvalidCheckpointError):
            verifier.verify(note)


# --- round trips ----------------------------------------------------------------------------------


def test_checkpoint_note_round_trip(tlog_ref: Any) -> None:
    note = signed_checkpoint()
    text = f"{ORIGIN}\n41\n{base64.b64encode(ROOT).decode()}\n"
    assert CHECKPOINT.text() == text
    blob = sig_blob(note)
    assert note == with_blob(text, ORIGIN, blob)
    assert blob[:4] == LOG.verifier.key_id
    Ed25519PublicKey.from_public_bytes(PUB).verify(blob[4:], text.encode())  # independent check
    assert LOG.verifier.verify(note) == text
    assert Checkpoint.parse(LOG.verifier.verify(note)) == CHECKPOINT
    assert tlog_ref.verify_note(note, LOG.verifier.line()) == text
    assert tlog_ref.parse_checkpoint(text) == (ORIGIN, 41, ROOT)


def test_signing_is_deterministic() -> None:
    assert signed_checkpoint() == signed_checkpoint()
    other = NoteSigner(name=ORIGIN, private_key=private_key(b"log key"))
    assert other.sign_checkpoint(CHECKPOINT) == signed_checkpoint()


KEY_NAME_CHARS = st.characters(exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), exclude_characters="+")


@settings(max_examples=60, deadline=None)
@given(
    origin=st.text(KEY_NAME_CHARS, min_size=1, max_size=40).filter(lambda s: not any(c.isspace() for c in s)),
    size=st.integers(0, 2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
)
def test_any_checkpoint_round_trips(tlog_ref: Any, origin: str, size: int, root: bytes) -> None:
    signer = NoteSigner(name=origin, private_key=LOG_KEY)
    checkpoint = Checkpoint(origin, size, root)
    note = signer.sign_checkpoint(checkpoint)
    text = signer.verifier.verify(note)
    assert Checkpoint.parse(text) == checkpoint
    vkey = signer.verifier.line()
    assert NoteVerifier.parse(vkey) == signer.verifier
    assert tlog_ref.verify_note(note, vkey) == text
    assert tlog_ref.parse_checkpoint(text) == (origin, size, root)


# --- altered notes --------------------------------------------------------------------------------


def test_every_bit_of_the_signature_matters(tlog_ref: Any) -> None:
    note = signed_checkpoint()
    text = CHECKPOINT.text()
    blob = sig_blob(note)
    for bit in range(len(blob) * 8):
        b = bytearray(blob)
        b[bit // 8] ^= 1 << (bit % 8)
        bad = with_blob(text, ORIGIN, bytes(b))
        # Bits 0..31 change the key id: the line becomes an unknown key's and is ignored, leaving
        # no signature by the log; the others break the Ed25519 signature itself.
        with pytest.raises(InvalidCheckpointError):
            LOG.verifier.verify(bad)
        with pytest.raises(REF_ERRORS):
            tlog_ref.verify_note(bad, LOG.verifier.line())


def test_every_bit_of_the_text_matters() -> None:
    note = signed_checkpoint()
    text = CHECKPOINT.text()
    line = note[len(text) + 1 :]
    count = 0
    for pos in range(len(text)):
        for bit in range(7):  # keep it ASCII
            altered = text[:pos] + chr(ord(text[pos]) ^ (1 << bit)) + text[pos + 1 :]
            with pytest.raises(InvalidCheckpointError):
                LOG.verifier.verify(f"{altered}\n{line}")
            count += 1
    assert count == 7 * len(text)


def _b64(root: bytes) -> str:
    return base64.b64encode(root).decode()


def _altered_texts() -> dict[str, str]:
    flipped_root = bytearray(ROOT)
    flipped_root[7] ^= 0x10
    return {
        "size + 1": f"{ORIGIN}\n42\n{_b64(ROOT)}\n",
        "size - 1": f"{ORIGIN}\n40\n{_b64(ROOT)}\n",
        "size with leading zero": f"{ORIGIN}\n041\n{_b64(ROOT)}\n",
        "root bit": f"{ORIGIN}\n41\n{_b64(bytes(flipped_root))}\n",
        "other root": f"{ORIGIN}\n41\n{_b64(hashlib.sha256(b'x').digest())}\n",
        "origin": f"ledger.local/test-instancf\n41\n{_b64(ROOT)}\n",
        "other origin": f"{WITNESS.name}\n41\n{_b64(ROOT)}\n",
        "extension line": f"{ORIGIN}\n41\n{_b64(ROOT)}\nextra\n",
        "dropped newline": f"{ORIGIN}\n41\n{_b64(ROOT)}",
    }


@pytest.mark.parametrize("text", _altered_texts().values(), ids=_altered_texts().keys())
def test_signature_does_not_cover_altered_text(text: str, tlog_ref: Any) -> None:
    line = signed_checkpoint()[len(CHECKPOINT.text()) + 1 :]
    with pytest.raises(InvalidCheckpointError):
        LOG.verifier.verify(f"{text}\n{line}")
    with pytest.raises(REF_ERRORS):
        tlog_ref.verify_note(f"{text}\n{line}", LOG.verifier.line())


def test_wrong_keys_are_rejected() -> None:
    note = signed_checkpoint()
    other_key = NoteSigner(name=ORIGIN, private_key=private_key(b"another log key")).verifier
    other_pub = raw_public(private_key(b"another log key"))
    wrong = {
        "another log": WITNESS.verifier,
        "same name, other key": other_key,
        "same key, other name": NoteVerifier("other.log", key_id("other.log", PUB), PUB),
        # Name and key id match, so the signature is checked, with the wrong public key.
        "forged id, other key": NoteVerifier(ORIGIN, LOG.verifier.key_id, other_pub),
    }
    for verifier in wrong.values():
        with pytest.raises(InvalidCheckpointError):
            verifier.verify(note)


def test_signatures_by_unknown_keys_are_ignored(tlog_ref: Any) -> None:
    text = CHECKPOINT.text()
    cosigned = LOG.sign(text) + WITNESS.signature_line(text)
    witness_first = f"{text}\n{WITNESS.signature_line(text)}{LOG.signature_line(text)}"
    # C2SP: ignore unknown keys "even if they share a name or ID (but not both) with a known key".
    same_name = with_blob(text, ORIGIN, bytes(4) + bytes(64)).split("\n\n", 1)[1]
    same_id = with_blob(text, "impostor", LOG.verifier.key_id + bytes(64)).split("\n\n", 1)[1]
    garbage = GO["enoch"]["signature_line"]
    for note in (cosigned, witness_first, LOG.sign(text) + same_name + same_id + garbage):
        assert LOG.verifier.verify(note) == text
        assert tlog_ref.verify_note(note, LOG.verifier.line()) == text
    assert WITNESS.verifier.verify(cosigned) == text
    assert WITNESS.verifier.verify(witness_first) == text


def test_sixteen_signatures_are_accepted() -> None:
    # C2SP signed-note: verifiers "MUST accept at least up to 16 signatures".
    text = CHECKPOINT.text()
    witnesses = [NoteSigner(name=f"w{i}.example", private_key=private_key(bytes([i]))) for i in range(15)]
    note = LOG.sign(text) + "".join(w.signature_line(text) for w in witnesses)
    assert note.count(EM_DASH) == 16
    assert LOG.verifier.verify(note) == text
    assert witnesses[-1].verifier.verify(note) == text


def test_only_unknown_signatures_is_rejected() -> None:
    note = WITNESS.sign_checkpoint(CHECKPOINT)
    with pytest.raises(InvalidCheckpointError, match="no signature"):
        LOG.verifier.verify(note)


def test_duplicate_signature_lines_still_verify() -> None:
    text = CHECKPOINT.text()
    assert LOG.verifier.verify(LOG.sign(text) + LOG.signature_line(text)) == text


def test_a_bad_signature_by_the_known_key_rejects_the_note_even_next_to_a_good_one() -> None:
    text = CHECKPOINT.text()
    blob = bytearray(sig_blob(LOG.sign(text)))
    blob[-1] ^= 1
    bad_line = with_blob(text, ORIGIN, bytes(blob)).split("\n\n", 1)[1]
    with pytest.raises(InvalidCheckpointError, match="invalid"):
        LOG.verifier.verify(LOG.sign(text) + bad_line)


MALFORMED_NOTES = {
    "text only": CHECKPOINT.text(),
    "blank line, no signature": CHECKPOINT.text() + "\n",
    "no final newline": signed_checkpoint()[:-1],
    "hyphen instead of em dash": signed_checkpoint().replace(EM_DASH, "-"),
    "en dash instead of em dash": signed_checkpoint().replace(EM_DASH, "\u2013"),
    "no space after dash": signed_checkpoint().replace(f"{EM_DASH} ", EM_DASH),
    "missing signature": CHECKPOINT.text() + f"\n{EM_DASH} {ORIGIN}\n",
    "signature not base64": CHECKPOINT.text() + f"\n{EM_DASH} {ORIGIN} ***\n",
    "signature too short": with_blob(CHECKPOINT.text(), ORIGIN, LOG.verifier.key_id),
    "trailing field": signed_checkpoint()[:-1] + " extra\n",
    "trailing line": signed_checkpoint() + "not a signature\n",
    "empty": "",
    "only newlines": "\n\n\n",
}


@pytest.mark.parametrize("note", MALFORMED_NOTES.values(), ids=MALFORMED_NOTES.keys())
def test_malformed_note(note: str) -> None:
    with pytest.raises(InvalidCheckpointError):
        LOG.verifier.verify(note)


def test_errors_are_verification_errors() -> None:
    assert issubclass(InvalidCheckpointError, VerificationError)


def test_regression_note_with_control_characters_is_accepted() -> None:
    # C2SP signed-note: notes "MUST NOT contain any ASCII control characters ... other than newline".
    text = f"{ORIGIN}\x07\n41\n{_b64(ROOT)}\n"
    with pytest.raises(InvalidCheckpointError):
        LOG.verifier.verify(LOG.sign(text))


# --- signer ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\nb", "a\tb", "a\u00a0b", "a\u2028b"])
def test_signer_rejects_invalid_key_names(name: str) -> None:
    with pytest.raises(ValueError):
        NoteSigner(name=name, private_key=LOG_KEY)


def test_signer_requires_a_final_newline() -> None:
    with pytest.raises(ValueError):
        LOG.sign("no newline")


def test_signer_repr_shows_no_key_material() -> None:
    seed = hashlib.sha256(b"log key").digest()
    shown = repr(LOG)
    assert ORIGIN in shown
    assert LOG.verifier.key_id.hex() in shown
    for secret in (seed.hex(), base64.b64encode(seed).decode(), repr(seed)):
        assert secret not in shown


# --- Checkpoint.parse -------------------------------------------------------------------------------

GOOD_ROOT = _b64(ROOT)
BAD_CHECKPOINTS = {
    "size with leading zero": f"o\n012\n{GOOD_ROOT}\n",
    "size 00": f"o\n00\n{GOOD_ROOT}\n",
    "negative size": f"o\n-1\n{GOOD_ROOT}\n",
    "size with plus": f"o\n+1\n{GOOD_ROOT}\n",
    "fractional size": f"o\n1.0\n{GOOD_ROOT}\n",
    "size with space": f"o\n 1\n{GOOD_ROOT}\n",
    "size with trailing space": f"o\n1 \n{GOOD_ROOT}\n",
    "hex size": f"o\n0x10\n{GOOD_ROOT}\n",
    "size with underscore": f"o\n1_000\n{GOOD_ROOT}\n",
    "non-ASCII digits": f"o\n\u0661\u0662\n{GOOD_ROOT}\n",
    "empty size": f"o\n\n{GOOD_ROOT}\n",
    "31-byte root": f"o\n1\n{_b64(ROOT[:31])}\n",
    "33-byte root": f"o\n1\n{_b64(ROOT + b'x')}\n",
    "empty root": "o\n1\n\n",
    "hex root": f"o\n1\n{ROOT.hex()}\n",
    "unpadded root": f"o\n1\n{GOOD_ROOT.rstrip('=')}\n",
    "url-safe root": "o\n1\n" + base64.urlsafe_b64encode(b"\xff" * 32).decode() + "\n",
    "missing final newline": f"o\n1\n{GOOD_ROOT}",
    "two lines": "o\n1\n",
    "empty origin": f"\n1\n{GOOD_ROOT}\n",
    "CRLF": f"o\r\n1\r\n{GOOD_ROOT}\r\n",
    "empty": "",
}


@pytest.mark.parametrize("text", BAD_CHECKPOINTS.values(), ids=BAD_CHECKPOINTS.keys())
def test_checkpoint_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidCheckpointError):
        Checkpoint.parse(text)


def test_checkpoint_parse_accepts() -> None:
    assert Checkpoint.parse(f"o\n0\n{GOOD_ROOT}\n") == Checkpoint("o", 0, ROOT)
    assert Checkpoint.parse(f"o\n18446744073709551615\n{GOOD_ROOT}\n").size == 2**64 - 1
    # Extension lines are opaque and ignored.
    assert Checkpoint.parse(f"o\n7\n{GOOD_ROOT}\nextension\n") == Checkpoint("o", 7, ROOT)
    # The C2SP example checkpoint.
    c2sp = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    assert Checkpoint.parse(c2sp).size == 20852163
    assert Checkpoint.parse(c2sp).text() == c2sp


def test_regression_checkpoint_parse_accepts_an_empty_extension_line() -> None:
    # C2SP tlog-checkpoint: "Extension lines, if any, MUST be non-empty."
    with pytest.raises(InvalidCheckpointError):
        Checkpoint.parse(f"o\n7\n{GOOD_ROOT}\n\n")
