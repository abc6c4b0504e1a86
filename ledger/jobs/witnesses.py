"""The log's side of the witness protocol (C2SP tlog-witness): after the checkpoint job stores a
checkpoint, it is sent to every witness of `LEDGER_WITNESSES` with a consistency proof from the size
that witness last cosigned, and each verified cosignature is stored (table `cosignatures`) and served
with the checkpoint. Runs in the scheduler process, never under the append lock: each witness gets
bounded timeouts and a thread of its own, so a slow or unreachable witness delays nothing but its
own cosignature (its lag shows in /metrics as `ledger_witness_behind_entries`)."""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests
from prometheus_client import Counter

from ledger.errors import VerificationError
from ledger.store.ledger import Ledger
from ledger.tlog.cosignature import WitnessVerifier, with_cosignatures

log = logging.getLogger("ledger.witnesses")
WITNESS_FAILURES = Counter(
    "ledger_witness_failures_total", "Checkpoints a witness did not cosign, by status", ["witness", "status"]
)


@dataclass(frozen=True)
class WitnessConfig:
    """A witness the log sends its checkpoints to: where, and the key its cosignatures must verify with."""

    url: str
    verifier: WitnessVerifier

    @staticmethod
    def of(pairs: Sequence[tuple[str, str]]) -> list[WitnessConfig]:
        """From Settings.witnesses: (url, witness verifier key) pairs."""
        return [WitnessConfig(url, WitnessVerifier.parse(vkey)) for url, vkey in pairs]


@dataclass(frozen=True)
class Submission:
    """What a witness answered: its cosignature line (200), or the status and body otherwise."""

    status: int
    line: str | None = None
    timestamp: int | None = None
    detail: str = ""
    witness_size: int | None = None  # on 409


def submit(
    witness: WitnessConfig,
    note: str,
    old_size: int,
    proof: Sequence[bytes],
    *,
    http: requests.Session,
    timeout: tuple[float, float] = (2.0, 5.0),
) -> Submission:
    """POSTs a checkpoint to a witness's add-checkpoint, bounded by `timeout` (connect, read); returns
    the verified cosignature, or why there is none."""
    body = f"old {old_size}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof) + "\n" + note
    r = http.post(f"{witness.url}/add-checkpoint", data=body.encode(), timeout=timeout)
    text = r.text[:1000]
    if r.status_code == 409:
        size = text.strip()
        return Submission(409, detail=text, witness_size=int(size) if size.isdigit() else None)
    if r.status_code != 200:
        return Submission(r.status_code, detail=text.strip())
    for line in text.splitlines():
        if not line.startswith("\u2014 "):
            continue
        try:
            ts = witness.verifier.verify(with_cosignatures(note, [line]))
        except VerificationError:
            continue
        return Submission(200, line=line, timestamp=ts)
    return Submission(200, detail="no valid cosignature by the configured witness key in the answer")


def send_to_witnesses(
    ledger: Ledger, witnesses: Sequence[WitnessConfig], sessions: dict[str, requests.Session] | None = None
) -> dict[str, str]:
    """Sends the largest stored checkpoint to every witness (in parallel); stores each cosignature.
    Returns, per witness name, what happened (for logs and tests)."""
    latest = ledger.latest_stored()
    if latest is None or not witnesses:
        return {}
    sessions = sessions if sessions is not None else {}
    held = ledger.cosigned_sizes()

    def one(w: WitnessConfig) -> str:
        http = sessions.setdefault(w.url, requests.Session())
        try:
            return _cosign(ledger, w, latest, held.get(w.verifier.key_id.hex(), 0), http)
        except (requests.RequestException, VerificationError, LookupError) as e:
            WITNESS_FAILURES.labels(w.verifier.name, type(e).__name__).inc()
            log.warning("witness %s (%s) did not cosign size %d: %s", w.verifier.name, w.url, latest[0], e)
            return f"unreachable: {type(e).__name__}"

    with ThreadPoolExecutor(max_workers=len(witnesses), thread_name_prefix="witness") as pool:
        return dict(zip((w.verifier.name for w in witnesses), pool.map(one, witnesses), strict=True))


def _cosign(ledger: Ledger, w: WitnessConfig, latest: tuple[int, bytes, str], old: int, http: requests.Session) -> str:
    size, root, note = latest
    if old == size:
        return "up to date"
    if old > size:
        old = 0  # the witness is ahead of what this log stored (a restored database): let it say so
    for attempt in range(2):
        proof = ledger.consistency_proof(old, size) if 0 < old < size else []
        sub = submit(w, note, old, proof, http=http)
        if sub.status == 409 and sub.witness_size is not None and sub.witness_size <= size and attempt == 0:
            old = sub.witness_size  # it holds another size of this log: prove from there
            continue
        break
    if sub.status == 200 and sub.line is not None and sub.timestamp is not None:
        ledger.record_cosignature(
            size=size,
            root=root,
            witness=w.verifier.name,
            witness_key_id=w.verifier.key_id.hex(),
            line=sub.line,
            timestamp=sub.timestamp,
        )
        return f"cosigned {size}"
    WITNESS_FAILURES.labels(w.verifier.name, str(sub.status)).inc()
    log.error(
        "witness %s (%s) refused the checkpoint of size %d (old size %d): HTTP %d %s",
        w.verifier.name,
        w.url,
        size,
        old,
        sub.status,
        sub.detail,
    )
    return f"refused: HTTP {sub.status} {sub.detail}"
