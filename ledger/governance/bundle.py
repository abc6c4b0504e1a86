"""Offline verification of an audit bundle (DESIGN.md 4.1): trusts only the verifier key given.

Checks, naming what failed: the checkpoint's signature (and, when witness keys are given, a quorum of
their cosignatures); each entry's header (format), its leaf hash (RFC 8785 of the header), its
payload against the salted digest, and its inclusion proof against the checkpoint; that a payload is
absent only when erased (the bundle carries the `payload.erasure` entry naming it) or withheld; that
the bundle carries exactly the entries its report cites; and that every fact of the report is what
`ledger.governance.audit.derive_report` recomputes from those entries (the function the service
built the report with), naming the first difference.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.errors import VerificationError
from ledger.governance.audit import derive_report, differences
from ledger.tlog.cosignature import check_quorum
from ledger.tlog.entry import EntryHeader, canonical_json, check_payload
from ledger.tlog.errors import InvalidEntryError
from ledger.tlog.note import Checkpoint, NoteVerifier
from ledger.tlog.proofs import verify_inclusion


class BundleError(VerificationError):
    """The bundle does not verify; the message names the part."""


def _hex(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise BundleError(f"{what} is not a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError as e:
        raise BundleError(f"{what} is not valid hex") from e


# Report sections that rest on lineage entries, which are the only payloads ever withheld from a
# reader (ledger.security.visibility): with a payload withheld, what these say is unproven.
LINEAGE_SECTIONS = ("upstream", "classifications", "verdicts", "erasures", "entries", "model.tags")


@dataclass
class BundleCheck:
    """What a bundle proved: its summary, and what it could not prove."""

    summary: str
    erased: list[int] = field(default_factory=list)
    withheld: dict[int, str] = field(default_factory=dict)
    unproven: list[str] = field(default_factory=list)  # report facts resting on withheld payloads
    cosignatures: list[str] = field(default_factory=list)


def verify_bundle(
    doc: Any,
    vkey: str,
    *,
    allow_withheld: bool = False,
    witnesses: Sequence[str] = (),
    quorum: int | None = None,
) -> str:
    """Raises BundleError (a VerificationError) on the first failure; returns a summary.

    A bundle with withheld payloads fails (naming the facts they leave unproven) unless
    `allow_withheld`."""
    result = check_bundle(doc, vkey, witnesses=witnesses, quorum=quorum)
    if result.unproven and not allow_withheld:
        raise WithheldError(
            f"payloads of entries {sorted(result.withheld)[:10]} are withheld from this bundle "
            f"({'; '.join(sorted(set(result.withheld.values())))}), so these report facts are unproven: "
            + ", ".join(result.unproven[:20])
            + (" ..." if len(result.unproven) > 20 else "")
            + " (--allow-withheld accepts them as unproven)",
            unproven=result.unproven,
        )
    return result.summary


class WithheldError(BundleError):
    """Report facts rest on payloads withheld from this bundle."""


Proven = dict[int, tuple[EntryHeader, bytes, bytes | None, Any]]


def check_bundle(doc: Any, vkey: str, *, witnesses: Sequence[str] = (), quorum: int | None = None) -> BundleCheck:
    """Every check of a bundle; raises BundleError on a failure, returns what held and what is unproven."""
    if not isinstance(doc, dict) or doc.get("format") != "ledger-bundle/v1":
        raise BundleError("not a ledger-bundle/v1 document (format field)")
    verifier = NoteVerifier.parse(vkey)
    note = str(doc.get("checkpoint", ""))
    try:
        text = verifier.verify(note)
    except VerificationError as e:
        raise BundleError(f"checkpoint: {e.detail}") from e
    cp = Checkpoint.parse(text)
    if cp.origin != verifier.name:
        raise BundleError(f"checkpoint origin {cp.origin!r} is not the key's log {verifier.name!r}")
    cosigned: list[str] = []
    if witnesses:
        try:
            cosigned = check_quorum(note, witnesses, quorum)
        except VerificationError as e:
            raise BundleError(f"checkpoint: {e.detail}") from e
    report = doc.get("report")
    entries = doc.get("entries")
    if not isinstance(report, dict) or not isinstance(entries, list):
        raise BundleError("bundle lacks its report or entries")
    proven, withheld = _prove_entries(entries, cp)
    erased = _erased(proven, withheld)
    cited = report.get("entries")
    if not isinstance(cited, list) or any(type(s) is not int for s in cited):
        raise BundleError("report.entries is not a list of seqs")
    if sorted(proven) != sorted(set(cited)):
        missing = sorted(set(cited) - set(proven))
        extra = sorted(set(proven) - set(cited))
        raise BundleError(
            f"report cites entries the bundle lacks {missing[:10]} or the bundle holds uncited {extra[:10]}"
        )
    unproven = _compare_report(report, proven, withheld, cp.size)
    name, version = report["model"]["name"], report["model"]["version"]
    verdicts = report.get("verdicts") or {}
    summary = (
        f"bundle for {name}@{version}: {len(proven)} entries proven against a checkpoint of size {cp.size} "
        f"signed by {verifier.name}"
        + (f" and {len(cosigned)} witness(es)" if cosigned else "")
        + f"; every report fact recomputed from them{' except those unproven' if unproven else ''}; "
        f"{len(erased)} erased, {len(withheld)} withheld; verdicts: "
        + ", ".join(f"{k}={'ok' if v.get('ok') else 'NOT ok'}" for k, v in verdicts.items() if isinstance(v, dict))
    )
    return BundleCheck(summary, erased, withheld, unproven, cosigned)


def _prove_entries(entries: list[Any], cp: Checkpoint) -> tuple[Proven, dict[int, str]]:
    """Each entry's header, payload and inclusion proof; the payloads said to be withheld."""
    proven: Proven = {}
    withheld: dict[int, str] = {}
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise BundleError(f"entries[{i}] is not an object")
        try:
            header = EntryHeader.from_json(e.get("header"))
        except InvalidEntryError as err:
            raise BundleError(f"entries[{i}] header: {err.detail}") from err
        seq = header.seq
        if seq in proven:
            raise BundleError(f"entry {seq} appears twice in the bundle")
        leaf = header.leaf_hash()
        if leaf != _hex(e.get("leaf_hash"), f"entry {seq} leaf_hash"):
            raise BundleError(f"entry {seq}: header does not hash to its leaf_hash (a header field was altered)")
        salt: bytes | None = None
        if e.get("payload") is not None:
            salt = _hex(e.get("salt"), f"entry {seq} salt")
            try:
                check_payload(header, salt, canonical_json(e["payload"]))
            except InvalidEntryError as err:
                raise BundleError(f"entry {seq}: payload does not match payload_digest (payload altered)") from err
        elif isinstance(e.get("withheld"), str) and e["withheld"]:
            withheld[seq] = e["withheld"]
        proof = e.get("inclusion_proof")
        if not isinstance(proof, list):
            raise BundleError(f"entry {seq}: inclusion_proof missing")
        try:
            verify_inclusion(seq, cp.size, leaf, [_hex(h, f"entry {seq} proof hash") for h in proof], cp.root_hash)
        except VerificationError as err:
            raise BundleError(
                f"entry {seq}: inclusion proof does not verify against the checkpoint (size {cp.size}): {err.detail}"
            ) from err
        proven[seq] = (header, leaf, salt, e.get("payload"))
    return proven, withheld


def _erased(proven: Proven, withheld: dict[int, str]) -> list[int]:
    """The entries without a payload that are not withheld: each must be named by a payload.erasure
    entry of the bundle."""
    erasures = {
        h.subject.removeprefix("entry:")
        for h, _, _, p in proven.values()
        if h.kind == "payload.erasure" and p is not None
    }
    erased = []
    for seq, (h, _, _, p) in sorted(proven.items()):
        if p is not None or seq in withheld:
            continue
        if str(seq) not in erasures:
            raise BundleError(
                f"entry {seq} ({h.kind} of {h.subject}) has no payload, and the bundle carries no payload.erasure "
                "entry naming it: its facts are unproven (a payload is absent only when erased, or withheld)"
            )
        erased.append(seq)
    return erased


def _compare_report(report: dict[str, Any], proven: Proven, withheld: dict[int, str], size: int) -> list[str]:
    """Recomputes the report from the entries; raises on the first difference, except that, with
    payloads withheld, differences in what rests on lineage are returned as unproven."""
    model = report.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise BundleError("report.model names no model version")
    name, version = model["name"], model.get("version")
    if not isinstance(version, str):
        raise BundleError("report.model names no model version")
    derived = derive_report(
        [(h, leaf, salt, None if s in withheld else p) for s, (h, leaf, salt, p) in proven.items()],
        name,
        version,
        log_size=size,
    )
    if derived is None:
        raise BundleError(f"report.model: the bundle's entries register no model {name}@{version}")
    unproven: list[str] = []
    for path, claimed, shown in differences(report, derived):
        if withheld and path.startswith(LINEAGE_SECTIONS):
            unproven.append(path)
            continue
        raise BundleError(
            f"report.{path} differs from what the bundle's entries prove "
            f"(report: {_short(claimed)}; entries: {_short(shown)})"
        )
    return unproven


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 120 else text[:117] + "..."
