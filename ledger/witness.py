"""A transparency-log witness (C2SP tlog-witness, tlog-cosignature; DESIGN.md 8, "Witnesses").

`ledger witness serve` runs one: its own Ed25519 key (`witness-key.pem` in its directory, made on
first start, mode 0600) and its own small state, `state.json`: per log origin, the last checkpoint
it cosigned. It keeps nothing else. `POST /add-checkpoint` checks the log's signature (keys given
with `--log`) and the consistency proof from the size it holds, writes the new state durably
(temporary file, fsync, rename, fsync of the directory) and only then answers with a timestamped
`cosignature/v1` line. Check and update run under one lock (a thread lock and an exclusive lock on
`state.lock`), so two submissions cannot roll the state back.

Status codes are the spec's: 404 unknown origin, 403 no valid signature by a trusted key, 400
malformed or old size above the checkpoint's, 409 (body: the size it holds, `text/x.tlog.size`)
when the old size is not the size it holds, 422 when the proof does not verify or the roots of one
size differ. `GET /<sha256(origin) hex>/checkpoint` serves the last cosigned checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask, Response, request

from ledger.errors import ConfigurationError, VerificationError
from ledger.tlog.cosignature import WitnessSigner, split_note, with_cosignatures
from ledger.tlog.hashing import EMPTY_ROOT, HASH_SIZE
from ledger.tlog.note import Checkpoint, NoteVerifier
from ledger.tlog.proofs import verify_consistency

log = logging.getLogger("ledger.witness")
MAX_BODY = 64 * 1024  # old line, at most 63 proof lines, and a checkpoint with a few signatures
MAX_PROOF_LINES = 63
SIZE_TYPE = "text/x.tlog.size"


# --- the witness's key and state ---------------------------------------------------------------------


def load_or_create_key(directory: Path, name: str) -> WitnessSigner:
    """The witness key in `directory` (created, mode 0600, on first use)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "witness-key.pem"
    if not path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"{path} is not an Ed25519 private key")
    return WitnessSigner(name=name, private_key=key)


class WitnessState:
    """Per origin, the last cosigned checkpoint: {origin: {"size", "root", "note"}} in `state.json`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "state.json"
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)

    def read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return data if isinstance(data, dict) else {}

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, dict[str, Any]]]:
        """The state, held exclusively (threads and processes) until the block ends."""
        with self._lock, (self.directory / "state.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self.read()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def write(self, state: dict[str, dict[str, Any]]) -> None:
        """Durably: a temporary file written and fsynced, renamed over the state, the directory fsynced."""
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump(state, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- add-checkpoint ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"


def _parse(body: bytes) -> tuple[int, list[bytes], str] | Answer:
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return Answer(400, "the body is not UTF-8\n")
    head, sep, note = text.partition("\n\n")
    if not sep:
        return Answer(400, "the body needs an old size line, proof lines, an empty line and a checkpoint\n")
    lines = head.split("\n")
    first = lines[0]
    if not first.startswith("old ") or not first[4:].isdigit() or (first[4:] != "0" and first[4] == "0"):
        return Answer(400, "the first line must be `old <size>` (decimal, no leading zeroes)\n")
    if len(lines) - 1 > MAX_PROOF_LINES:
        return Answer(400, f"at most {MAX_PROOF_LINES} consistency proof lines\n")
    proof = []
    for line in lines[1:]:
        try:
            h = base64.b64decode(line, validate=True)
        except binascii.Error:
            return Answer(400, "a consistency proof line is not base64\n")
        if len(h) != HASH_SIZE:
            return Answer(400, "a consistency proof line is not a SHA-256 hash\n")
        proof.append(h)
    return int(first[4:]), proof, note


class Witness:
    """The witness's logic, apart from HTTP."""

    def __init__(self, signer: WitnessSigner, logs: Sequence[str], state: WitnessState) -> None:
        self.signer = signer
        self.state = state
        self.logs: dict[str, list[NoteVerifier]] = {}
        for vkey in logs:
            v = NoteVerifier.parse(vkey)
            self.logs.setdefault(v.name, []).append(v)

    def add_checkpoint(self, body: bytes) -> Answer:
        parsed = _parse(body)
        if isinstance(parsed, Answer):
            return parsed
        old, proof, note = parsed
        try:
            text, _ = split_note(note)
            cp = Checkpoint.parse(text)
        except VerificationError as e:
            return Answer(400, f"malformed checkpoint: {e.detail}\n")
        verifiers = self.logs.get(cp.origin)
        if verifiers is None:
            return Answer(404, f"unknown log origin {cp.origin}\n")
        if not self._signed(note, verifiers):
            return Answer(403, f"no valid signature by a key this witness trusts for {cp.origin}\n")
        if old > cp.size:
            return Answer(400, f"old size {old} is larger than the checkpoint's {cp.size}\n")
        with self.state.locked() as state:
            held = state.get(cp.origin)
            held_size = int(held["size"]) if held else 0
            if old != held_size:
                return Answer(409, f"{held_size}\n", SIZE_TYPE)
            failure = self._inconsistent(old, proof, cp, held)
            if failure is not None:
                log.error("refusing checkpoint of %s at size %d: %s", cp.origin, cp.size, failure)
                return Answer(422, failure + "\n")
            timestamp = max(int(time.time()), 1)
            line = self.signer.cosign(text, timestamp)
            state[cp.origin] = {
                "size": cp.size,
                "root": base64.b64encode(cp.root_hash).decode(),
                "note": with_cosignatures(note, [line]),
            }
            self.state.write(state)  # durable before the answer
        return Answer(200, line)

    @staticmethod
    def _signed(note: str, verifiers: list[NoteVerifier]) -> bool:
        for v in verifiers:
            try:
                v.verify(note)
                return True
            except VerificationError:
                continue
        return False

    @staticmethod
    def _inconsistent(old: int, proof: list[bytes], cp: Checkpoint, held: dict[str, Any] | None) -> str | None:
        if cp.size == 0 and cp.root_hash != EMPTY_ROOT:
            return "a checkpoint of size 0 must have the empty tree's root"
        if old == 0:
            return "the consistency proof from size 0 must be empty" if proof else None
        assert held is not None
        held_root = base64.b64decode(held["root"])
        if old == cp.size:
            if proof or cp.root_hash != held_root:
                return f"this checkpoint's root at size {old} differs from the one cosigned before: a fork"
            return None
        try:
            verify_consistency(old, cp.size, held_root, cp.root_hash, proof)
        except VerificationError as e:
            return f"not consistent with the checkpoint of size {old} cosigned before: {e.detail}"
        return None

    def checkpoint_of(self, origin_hash: str) -> str | None:
        for origin, held in self.state.read().items():
            if hashlib.sha256(origin.encode()).hexdigest() == origin_hash:
                return str(held["note"])
        return None


def create_witness_app(witness: Witness) -> Flask:
    app = Flask("ledger.witness")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY

    @app.post("/add-checkpoint")
    def add_checkpoint() -> Response:
        a = witness.add_checkpoint(request.get_data(cache=False))
        return Response(a.body, status=a.status, content_type=a.content_type)

    @app.get("/<origin_hash>/checkpoint")
    def checkpoint(origin_hash: str) -> Response:
        note = witness.checkpoint_of(origin_hash.lower())
        if note is None:
            return Response("no checkpoint of that log cosigned\n", status=404, content_type="text/plain")
        return Response(note, content_type="text/plain; charset=utf-8")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", content_type="text/plain")

    return app
