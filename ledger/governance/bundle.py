"""Offline verification of an audit bundle (DESIGN.md 4.1): trusts only the verifier key given.

Checks, naming what failed: the checkpoint's signature; each entry's header (format), its leaf hash
(RFC 8785 of the header), its payload against the salted digest, and its inclusion proof against
the checkpoint; that the bundle carries exactly the entries its report cites; and that the report's
facts (model, validations, approvals, decisions, deployments) are what those payloads say.
"""

from __future__ import annotations

from typing import Any

from ledger.errors import VerificationError
from ledger.governance.projection import parse_model_subject
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


def verify_bundle(doc: Any, vkey: str) -> str:
    """Raises BundleError (a VerificationError) on the first failure; returns a summary."""
    if not isinstance(doc, dict) or doc.get("format") != "ledger-bundle/v1":
        raise BundleError("not a ledger-bundle/v1 document (format field)")
    verifier = NoteVerifier.parse(vkey)
    try:
        text = verifier.verify(str(doc.get("checkpoint", "")))
    except VerificationError as e:
        raise BundleError(f"checkpoint: {e.detail}") from e
    cp = Checkpoint.parse(text)
    if cp.origin != verifier.name:
        raise BundleError(f"checkpoint origin {cp.origin!r} is not the key's log {verifier.name!r}")
    report = doc.get("report")
    entries = doc.get("entries")
    if not isinstance(report, dict) or not isinstance(entries, list):
        raise BundleError("bundle lacks its report or entries")
    payloads: dict[int, tuple[EntryHeader, Any]] = {}
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise BundleError(f"entries[{i}] is not an object")
        try:
            header = EntryHeader.from_json(e.get("header"))
        except InvalidEntryError as err:
            raise BundleError(f"entries[{i}] header: {err.detail}") from err
        seq = header.seq
        leaf = header.leaf_hash()
        if leaf != _hex(e.get("leaf_hash"), f"entry {seq} leaf_hash"):
            raise BundleError(f"entry {seq}: header does not hash to its leaf_hash (a header field was altered)")
        if e.get("payload") is not None:
            try:
                check_payload(header, _hex(e.get("salt"), f"entry {seq} salt"), canonical_json(e["payload"]))
            except InvalidEntryError as err:
                raise BundleError(f"entry {seq}: payload does not match payload_digest (payload altered)") from err
        proof = e.get("inclusion_proof")
        if not isinstance(proof, list):
            raise BundleError(f"entry {seq}: inclusion_proof missing")
        try:
            verify_inclusion(seq, cp.size, leaf, [_hex(h, f"entry {seq} proof hash") for h in proof], cp.root_hash)
        except VerificationError as err:
            raise BundleError(
                f"entry {seq}: inclusion proof does not verify against the checkpoint (size {cp.size}): {err.detail}"
            ) from err
        payloads[seq] = (header, e.get("payload"))

    cited = report.get("entries")
    if not isinstance(cited, list) or sorted(payloads) != sorted(set(cited)):
        missing = sorted(set(cited or []) - set(payloads))
        extra = sorted(set(payloads) - set(cited or []))
        raise BundleError(
            f"report cites entries the bundle lacks {missing[:10]} or the bundle holds uncited {extra[:10]}"
        )
    _check_report(report, payloads)
    return (
        f"bundle for {report['model']['name']}@{report['model']['version']}: {len(payloads)} entries proven "
        f"against a checkpoint of size {cp.size} signed by {verifier.name}; verdicts: "
        + ", ".join(f"{k}={'ok' if v.get('ok') else 'NOT ok'}" for k, v in report.get("verdicts", {}).items())
    )


def _check_report(report: dict[str, Any], payloads: dict[int, tuple[EntryHeader, Any]]) -> None:
    """The report's governance facts must be exactly what the proven entries say."""
    model = report.get("model") or {}
    mseq = model.get("seq")
    if mseq not in payloads:
        raise BundleError("report.model cites no entry in the bundle")
    h, p = payloads[mseq]
    if h.kind != "model.version" or p is None:
        raise BundleError(f"report.model cites entry {mseq}, which is not a model.version entry")
    name, version = parse_model_subject(h.subject)
    if (model.get("name"), model.get("version")) != (name, version):
        raise BundleError(
            f"report.model says {model.get('name')}@{model.get('version')}, entry {mseq} says {name}@{version}"
        )
    for key in ("artifact", "training_run_id"):
        if model.get(key) != p.get(key):
            raise BundleError(f"report.model.{key} differs from entry {mseq}")
    fields = {
        "validations": ("validation.result", ("type", "metrics", "thresholds", "passed", "run_id")),
        "approvals": ("approval", ("stage", "approver", "comment")),
        "decisions": ("promotion.decision", ("stage", "allowed", "violations", "policy_digest", "input_digest")),
        "deployments": ("deployment", ("stage", "environment", "endpoint", "decision_seq")),
    }
    for section, (kind, keys) in fields.items():
        for i, item in enumerate(report.get(section) or []):
            seq = item.get("seq")
            if seq not in payloads:
                raise BundleError(f"report.{section}[{i}] cites entry {seq}, absent from the bundle")
            h, p = payloads[seq]
            if h.kind != kind or h.subject != f"model:{name}@{version}":
                raise BundleError(f"report.{section}[{i}] cites entry {seq}, a {h.kind} of {h.subject}")
            if p is None:
                continue  # erased: the header still proves the entry exists
            for k in keys:
                if item.get(k) != p.get(k):
                    raise BundleError(f"report.{section}[{i}].{k} differs from entry {seq}")
