"""Client-side verification: the whole log over HTTP, trusting nothing but the verifier key.

`verify_log` recomputes every leaf hash and payload digest and the whole tree from the export
stream, then checks the result against a checkpoint signed by the key. It reports the first entry
that does not hold.
"""

from __future__ import annotations

import json
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from ledger.errors import VerificationError
from ledger.tlog.cosignature import check_quorum
from ledger.tlog.entry import TIME_RE, payload_digest
from ledger.tlog.hashing import leaf_hash
from ledger.tlog.note import Checkpoint, NoteVerifier
from ledger.tlog.proofs import verify_inclusion
from ledger.tlog.tree import CompactRange


class EntryVerificationError(VerificationError):
    """An entry of the log does not verify; `seq` names it."""

    def __init__(self, seq: int, detail: str) -> None:
        super().__init__(f"entry {seq}: {detail}", seq=seq)
        self.seq = seq


@dataclass
class LogReport:
    size: int
    root: bytes
    origin: str
    erased: int = 0
    withheld: int = 0
    problems: list[str] = field(default_factory=list)
    cosignatures: list[str] = field(default_factory=list)


def _session(token: str | None) -> requests.Session:
    s = requests.Session()
    if token:
        s.headers["Authorization"] = f"Bearer {token}"
    return s


def fetch_checkpoint(base: str, verifier: NoteVerifier, http: requests.Session) -> Checkpoint:
    r = http.get(f"{base}/api/v1/log/checkpoint", timeout=30)
    r.raise_for_status()
    return Checkpoint.parse(verifier.verify(r.text))


def _problem(r: requests.Response) -> str:
    """The detail of a problem+json answer, or the start of any other body."""
    try:
        body = r.json()
    except ValueError:
        return r.text[:200]
    return str(body.get("detail") or body.get("title")) if isinstance(body, dict) else r.text[:200]


EXPORT_RANGE = 20_000  # entries per export request
EXPORT_AHEAD = 2  # export requests in flight while this thread checks lines


def iter_export(
    base: str, size: int, http: requests.Session, chunk: int = EXPORT_RANGE, ahead: int = EXPORT_AHEAD
) -> Iterator[bytes]:
    """Export lines for [0, size), in order, fetched in ranges of `chunk` entries.

    `ahead` ranges are fetched at once on threads of their own, so the server's workers read and
    format the next ranges while this thread checks the lines of the current one (checking and
    serving cost about the same per entry: `bench/verify.py`). Memory stays bounded: each range
    waits in at most `_BLOCKS` blocks of 1 MiB until its turn.
    """
    ranges = iter([(s, min(size, s + chunk)) for s in range(0, size, chunk)])
    stop = threading.Event()
    pending: deque[queue.Queue[bytes | BaseException | None]] = deque()

    def fetch(start: int, end: int, out: queue.Queue[bytes | BaseException | None]) -> None:
        def put(item: bytes | BaseException | None) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            params = {"start": start, "end": end}
            with http.get(f"{base}/api/v1/log/export", params=params, stream=True, timeout=300) as r:
                if r.status_code != 200:
                    put(VerificationError(f"export [{start}, {end}) failed: HTTP {r.status_code}: {_problem(r)}"))
                    return
                for block in r.iter_content(chunk_size=1 << 20):
                    if not put(block):
                        return
            put(None)
        except BaseException as e:  # handed to the reader, which raises it in order
            put(e)

    def launch() -> None:
        rng = next(ranges, None)
        if rng is not None:
            out: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=_BLOCKS)
            threading.Thread(target=fetch, args=(*rng, out), name="ledger-export", daemon=True).start()
            pending.append(out)

    try:
        for _ in range(max(1, ahead)):
            launch()
        while pending:
            out = pending.popleft()
            rest = b""
            while (block := out.get()) is not None:
                if isinstance(block, BaseException):
                    raise block
                lines = (rest + block).split(b"\n")
                rest = lines.pop()
                yield from lines
            if rest:
                yield rest
            launch()
    finally:
        stop.set()  # fetchers still running give up at their next block


_BLOCKS = 16


def check_line(expected_seq: int, line: bytes) -> tuple[bytes, dict[str, Any], dict[str, Any] | None]:
    """Verifies one export line; returns (recomputed leaf hash, header, absence) where `absence` is
    None when the payload is there, else what the fifth field says: erased (with the seq of its
    erasure entry) or withheld (with the reason). A payload absent otherwise fails."""
    try:
        stored_leaf, header_bytes, salt_hex, rest = line.split(b"\t", 3)
    except ValueError as e:
        raise EntryVerificationError(expected_seq, "export line is malformed") from e
    try:
        header = json.loads(header_bytes)
    except ValueError as e:
        raise EntryVerificationError(expected_seq, "header is not JSON") from e
    if not isinstance(header, dict) or header.get("seq") != expected_seq:
        seq = header.get("seq") if isinstance(header, dict) else None
        raise EntryVerificationError(expected_seq, f"header says seq {seq!r}: a gap or reordering")
    if not TIME_RE.match(str(header.get("integrated_time"))):
        raise EntryVerificationError(expected_seq, "integrated_time is malformed")
    leaf = leaf_hash(header_bytes)
    if leaf.hex().encode() != stored_leaf:
        raise EntryVerificationError(
            expected_seq, f"header does not hash to the stored leaf ({leaf.hex()} != {stored_leaf.decode()})"
        )
    if salt_hex != b"-":
        if payload_digest(bytes.fromhex(salt_hex.decode()), rest) != header.get("payload_digest"):
            raise EntryVerificationError(expected_seq, "payload does not match the header's payload_digest")
        return leaf, header, None
    _, _, why = rest.partition(b"\t")
    try:
        absence = json.loads(why) if why else None
    except ValueError:
        absence = None
    if isinstance(absence, dict) and absence.get("erased") is True and type(absence.get("erasure_seq")) is int:
        return leaf, header, {"erased": True, "erasure_seq": absence["erasure_seq"]}
    if isinstance(absence, dict) and isinstance(absence.get("withheld"), str):
        return leaf, header, {"withheld": absence["withheld"]}
    raise EntryVerificationError(
        expected_seq,
        "the payload is absent, and no payload.erasure entry names it"
        + (f" (the service says: {absence['missing']})" if isinstance(absence, dict) and "missing" in absence else "")
        + ": deleted outside the service, or withheld without saying so",
    )


class _Erasures:
    """Checks that each erased payload's erasure entry exists and names it (entries come in seq order)."""

    def __init__(self) -> None:
        self.seen: dict[int, str] = {}  # seq of a payload.erasure entry -> its subject
        self.claimed: dict[int, int] = {}  # erasure seq -> erased seq, not seen yet

    def entry(self, seq: int, header: dict[str, Any]) -> None:
        if header.get("kind") == "payload.erasure":
            self.seen[seq] = str(header.get("subject"))
            target = self.claimed.pop(seq, None)
            if target is not None:
                self._check(target, seq)

    def erased(self, seq: int, erasure_seq: int) -> None:
        if erasure_seq <= seq:
            raise EntryVerificationError(seq, f"said erased by entry {erasure_seq}, which precedes it")
        if erasure_seq in self.seen:
            self._check(seq, erasure_seq)
        elif self.claimed.setdefault(erasure_seq, seq) != seq:
            raise EntryVerificationError(seq, f"entry {erasure_seq} is said to erase two entries")

    def _check(self, seq: int, erasure_seq: int) -> None:
        if self.seen.get(erasure_seq) != f"entry:{seq}":
            raise EntryVerificationError(
                seq, f"said erased by entry {erasure_seq}, which is not a payload.erasure entry naming it"
            )

    def finish(self) -> None:
        for erasure_seq, seq in sorted(self.claimed.items()):
            raise EntryVerificationError(
                seq, f"said erased by entry {erasure_seq}, which is not a payload.erasure entry naming it"
            )


def verify_log(
    base: str,
    vkey: str,
    *,
    token: str | None = None,
    progress: Callable[[int], None] | None = None,
    since: Checkpoint | None = None,
    witnesses: Sequence[str] = (),
    quorum: int | None = None,
) -> LogReport:
    """Verifies the log at `base` end to end; raises `VerificationError` on the first failure.

    With `since` (a checkpoint kept from earlier), the log must extend it: the root recomputed at its
    size must be its root. With `witnesses`, the checkpoint verified against is the largest one the
    witnesses cosigned, and `quorum` (default: all) of their cosignatures must hold on it."""
    base = base.rstrip("/")
    verifier = NoteVerifier.parse(vkey)
    http = _session(token)
    report = LogReport(size=0, root=b"", origin=verifier.name)
    if witnesses:
        r = http.get(f"{base}/api/v1/log/checkpoint/cosigned", timeout=30)
        if r.status_code == 404:
            raise VerificationError("the log serves no witness-cosigned checkpoint yet")
        r.raise_for_status()
        cp = Checkpoint.parse(verifier.verify(r.text))
        report.cosignatures = check_quorum(r.text, witnesses, quorum)
    else:
        cp = fetch_checkpoint(base, verifier, http)
    report.size, report.root, report.origin = cp.size, cp.root_hash, cp.origin
    if since is not None and since.origin != cp.origin:
        raise VerificationError(f"the kept checkpoint is of log {since.origin!r}, not {cp.origin!r}")
    if since is not None and since.size > cp.size:
        raise VerificationError(
            f"the kept checkpoint has {since.size} entries, the log's {'cosigned ' if witnesses else ''}checkpoint "
            f"only {cp.size}: the log shrank (or, with witnesses, they have not cosigned that far yet)"
        )
    compact = CompactRange()
    erasures = _Erasures()
    step = 0
    for line in iter_export(base, cp.size, http):
        if not line:
            continue
        seq = compact.size
        if seq >= cp.size:
            raise EntryVerificationError(seq, "export has more entries than the checkpoint")
        if since is not None and seq == since.size:
            _check_since(compact, since)
        leaf, header, absence = check_line(seq, line)
        erasures.entry(seq, header)
        if absence is not None and "erasure_seq" in absence:
            erasures.erased(seq, absence["erasure_seq"])
            report.erased += 1
        elif absence is not None:
            report.withheld += 1
        compact.append(leaf)
        step += 1
        if progress is not None and step == 10_000:
            progress(step)
            step = 0
    if progress is not None and step:
        progress(step)
    if compact.size != cp.size:
        raise EntryVerificationError(compact.size, f"export ended after {compact.size} of {cp.size} entries")
    erasures.finish()
    if since is not None and since.size == compact.size:
        _check_since(compact, since)
    if compact.root() != cp.root_hash:
        raise VerificationError(
            f"recomputed root {compact.root().hex()} differs from the signed checkpoint's {cp.root_hash.hex()} "
            f"(tree size {cp.size}): the stored tree was altered"
        )
    return report


def _check_since(compact: CompactRange, since: Checkpoint) -> None:
    if compact.root() != since.root_hash:
        raise VerificationError(
            f"the log is not consistent with the checkpoint kept from earlier: its root at size {since.size} is "
            f"{compact.root().hex()}, the kept checkpoint's {since.root_hash.hex()} (history was rewritten)"
        )


def load_kept(text: str, vkey: str) -> Checkpoint:
    """A checkpoint kept from earlier: a signed checkpoint note, or a receipt (JSON) holding one; the
    log's signature must hold (and a receipt's inclusion proof)."""
    verifier = NoteVerifier.parse(vkey)
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise VerificationError(f"not a checkpoint note nor a receipt: {e}") from e
        verify_receipt(doc, vkey)
        text = str(doc["checkpoint"])
    return Checkpoint.parse(verifier.verify(text))


def verify_receipt(doc: Any, vkey: str, *, witnesses: Sequence[str] = (), quorum: int | None = None) -> str:
    """Verifies a receipt (DESIGN.md 3.3) offline: the checkpoint's signature by the log's key, the
    inclusion proof of the leaf hash at seq in it, and, with `witnesses`, a quorum of cosignatures."""
    if not isinstance(doc, dict) or not {"seq", "leaf_hash", "checkpoint", "inclusion_proof"} <= set(doc):
        raise VerificationError("not a receipt: it needs seq, leaf_hash, checkpoint and inclusion_proof")
    verifier = NoteVerifier.parse(vkey)
    note = str(doc["checkpoint"])
    cp = Checkpoint.parse(verifier.verify(note))
    seq = doc["seq"]
    if type(seq) is not int or seq < 0:
        raise VerificationError("receipt seq is not a non-negative integer")
    try:
        leaf = bytes.fromhex(str(doc["leaf_hash"]))
        proof = [bytes.fromhex(str(h)) for h in doc["inclusion_proof"]]
    except (ValueError, TypeError) as e:
        raise VerificationError(f"receipt leaf_hash or inclusion_proof is not hex: {e}") from e
    verify_inclusion(seq, cp.size, leaf, proof, cp.root_hash)
    held = check_quorum(note, witnesses, quorum) if witnesses else []
    return f"entry {seq} (leaf {leaf.hex()[:16]}...) is in the log {cp.origin} of size {cp.size} signed by its key" + (
        f"; {', '.join(held)}" if held else ""
    )
