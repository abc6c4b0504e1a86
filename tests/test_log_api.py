"""The log API (DESIGN.md 4): checkpoint, keys, entries, paging, proofs and export.

Roots are recomputed with the spec reference (`spec_ref.mth`) from leaf hashes recomputed from the JCS
bytes of the headers the API serves, so no answer of the ledger is trusted to check another.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import rfc8785
from conftest import auth
from events import dataset_event, job_event, run_event
from spec_ref import leaf_hash, mth, parse_checkpoint, verify_consistency, verify_inclusion, verify_note

LOG = "/api/v1/log"
N = 21  # entries in the populated log: not a power of two, several levels deep


def populate(client: Any, token: str, n: int = N) -> list[dict[str, Any]]:
    """Appends n entries of all three kinds: singly and in batches, so the tree grows in steps."""
    events: list[dict[str, Any]] = []
    for i in range(n):
        e = [run_event, dataset_event, job_event][i % 3]()
        if "dataset" in e:
            e["dataset"]["name"] = f"table_{i}"
        if "run" not in e and "job" in e:
            e["job"]["name"] = f"job_{i}"
        events.append(e)
    pos = 0
    for step in (1, 1, 3, 1, 5, 2, 8):
        chunk = events[pos : pos + step]
        if not chunk:
            break
        if len(chunk) == 1:
            r = client.post("/api/v1/lineage", json=chunk[0], headers=auth(token))
            assert r.status_code == 201, r.get_json()
        else:
            r = client.post("/api/v1/lineage/batch", json=chunk, headers=auth(token))
            assert r.get_json()["summary"]["failed"] == 0
        pos += step
    assert pos == n
    return events


def all_entries(client: Any, token: str, **query: Any) -> list[dict[str, Any]]:
    """Walks every page of /entries; checks that pages neither overlap nor skip."""
    out: list[dict[str, Any]] = []
    after = None
    for _ in range(1000):
        params = {**query, **({"after": after} if after is not None else {})}
        r = client.get(f"{LOG}/entries", query_string=params, headers=auth(token))
        assert r.status_code == 200, r.get_json()
        page = r.get_json()
        seqs = [e["header"]["seq"] for e in page["entries"]]
        assert seqs == sorted(seqs)
        if after is not None:
            assert all(s > after for s in seqs)
        out.extend(page["entries"])
        if page["next_after"] is None:
            return out
        assert page["next_after"] == seqs[-1]
        after = page["next_after"]
    raise AssertionError("paging did not end")


def current_checkpoint(client: Any, vkey: str) -> tuple[str, int, bytes]:
    """The log's checkpoint, signature-checked and parsed by the reference."""
    return parse_checkpoint(verify_note(client.get(f"{LOG}/checkpoint").get_data(as_text=True), vkey))


def proof(client: Any, token: str, which: str, **query: int) -> Any:
    r = client.get(f"{LOG}/proof/{which}", query_string=query, headers=auth(token))
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def leaves(entries: list[dict[str, Any]]) -> list[bytes]:
    return [leaf_hash(rfc8785.dumps(e["header"])) for e in entries]




@pytest.fixture
def populated(client: Any, tokens: Any, base: int) -> list[dict[str, Any]]:
    """The events of entries base .. base + N - 1."""
    return populate(client, tokens.pipeline)


# --- checkpoint and keys (public) ---------------------------------------------------------------


def test_checkpoint_is_public_and_signed(client, tokens, vkey, base):
    r = client.get(f"{LOG}/checkpoint")  # no token
    assert r.status_code == 200
    assert r.mimetype == "text/plain"
    assert r.headers["Cache-Control"] == "no-store"
    origin, size, root = parse_checkpoint(verify_note(r.get_data(as_text=True), vkey))
    assert origin == "ledger.test/log"
    assert size == base
    assert root == (mth(leaves(all_entries(client, tokens.auditor))) if base else hashlib.sha256(b"").digest())


def test_checkpoint_commits_to_every_entry(client, tokens, vkey, base, populated):
    note = client.get(f"{LOG}/checkpoint").get_data(as_text=True)
    text = verify_note(note, vkey)
    assert note.startswith(text)
    _, size, root = parse_checkpoint(text)
    assert size == base + N
    assert root == mth(leaves(all_entries(client, tokens.auditor)))


def test_keys_are_public_and_name_the_signing_key(client, runtime, vkey):
    r = client.get(f"{LOG}/keys")  # no token
    assert r.status_code == 200
    body = r.get_json()
    assert body["origin"] == "ledger.test/log"
    current = [k for k in body["keys"] if k["current"]]
    assert len(current) == 1
    assert current[0]["verifier_key"] == vkey
    assert current[0]["key_id"] == vkey.split("+")[1]
    assert current[0]["name"] == "ledger.test/log"
    # the published key verifies the published checkpoint
    verify_note(client.get(f"{LOG}/checkpoint").get_data(as_text=True), current[0]["verifier_key"])


# --- entries ------------------------------------------------------------------------------------


def test_entry_has_header_payload_salt_leaf_hash(client, tokens, base, populated):
    for seq in (base, base + 1, base + 2, base + N - 1):
        r = client.get(f"{LOG}/entries/{seq}", headers=auth(tokens.auditor))
        assert r.status_code == 200
        e = r.get_json()
        assert set(e) == {"header", "payload", "salt", "leaf_hash", "erased"}
        assert set(e["header"]) == {
            "format", "seq", "kind", "subject", "integrated_time", "principal", "payload_digest"
        }
        assert e["header"]["seq"] == seq
        assert e["payload"] == populated[seq - base]
        assert e["erased"] is False
        assert bytes.fromhex(e["leaf_hash"]) == leaf_hash(rfc8785.dumps(e["header"]))
        digest = hashlib.sha256(bytes.fromhex(e["salt"]) + rfc8785.dumps(e["payload"])).hexdigest()
        assert e["header"]["payload_digest"] == "sha256:" + digest


def test_missing_entry_is_404_problem(client, tokens, base, populated):
    r = client.get(f"{LOG}/entries/{base + N}", headers=auth(tokens.auditor))
    assert r.status_code == 404
    assert r.mimetype == "application/problem+json"
    assert str(base + N) in r.get_json()["detail"]


def test_paging_walks_every_entry_once(client, tokens, base, populated):
    total = base + N
    for limit in (1, 2, 5, 7, total - 1, total, total + 1, 1000):
        entries = all_entries(client, tokens.auditor, limit=limit)
        assert [e["header"]["seq"] for e in entries] == list(range(total)), limit
        assert [e["payload"] for e in entries[base:]] == populated


def test_paging_by_kind_and_subject(client, tokens, populated):
    everything = all_entries(client, tokens.auditor)
    for kind in ("openlineage.run_event", "openlineage.dataset_event", "openlineage.job_event"):
        got = all_entries(client, tokens.auditor, kind=kind, limit=2)
        assert got == [e for e in everything if e["header"]["kind"] == kind]
        assert got
    subject = everything[4]["header"]["subject"]
    got = all_entries(client, tokens.auditor, subject=subject, limit=1)
    assert got == [e for e in everything if e["header"]["subject"] == subject]
    assert all_entries(client, tokens.auditor, kind="approval") == []
    assert all_entries(client, tokens.auditor, subject="job:nope:nothing") == []


def test_paging_starts_after_the_given_seq(client, tokens, base, populated):
    total = base + N
    got = all_entries(client, tokens.auditor, after=total - 4, limit=2)
    assert [e["header"]["seq"] for e in got] == [total - 3, total - 2, total - 1]
    assert all_entries(client, tokens.auditor, after=total + 100) == []
    assert len(all_entries(client, tokens.auditor, after=-1)) == total


# --- proofs -------------------------------------------------------------------------------------


def test_inclusion_proofs_verify_for_every_seq_and_size(client, tokens, populated):
    leaf_hashes = leaves(all_entries(client, tokens.auditor))
    assert len(leaf_hashes) >= N
    for size in range(1, len(leaf_hashes) + 1):
        root = mth(leaf_hashes[:size])
        for seq in range(size):
            body = proof(client, tokens.auditor, "inclusion", seq=seq, tree_size=size)
            assert (body["seq"], body["tree_size"]) == (seq, size)
            assert bytes.fromhex(body["leaf_hash"]) == leaf_hashes[seq]
            path = [bytes.fromhex(h) for h in body["hashes"]]
            assert verify_inclusion(seq, size, leaf_hashes[seq], path, root), (seq, size)
            if path:  # a proof for another leaf, or a tampered one, must fail
                assert not verify_inclusion(seq, size, leaf_hashes[(seq + 1) % size], path, root)
                assert not verify_inclusion(seq, size, leaf_hashes[seq], [*path[:-1], bytes(32)], root)


def test_inclusion_proof_matches_the_current_checkpoint(client, tokens, vkey, populated):
    _, size, root = current_checkpoint(client, vkey)
    for seq in range(size):
        body = proof(client, tokens.pipeline, "inclusion", seq=seq, tree_size=size)
        path = [bytes.fromhex(h) for h in body["hashes"]]
        assert verify_inclusion(seq, size, bytes.fromhex(body["leaf_hash"]), path, root)


def test_consistency_proofs_verify_for_every_pair_of_sizes(client, tokens, populated):
    leaf_hashes = leaves(all_entries(client, tokens.auditor))
    roots = [mth(leaf_hashes[:n]) for n in range(len(leaf_hashes) + 1)]
    for second in range(len(leaf_hashes) + 1):
        for first in range(second + 1):
            body = proof(client, tokens.auditor, "consistency", first=first, second=second)
            assert (body["first"], body["second"]) == (first, second)
            hashes = [bytes.fromhex(h) for h in body["hashes"]]
            assert verify_consistency(first, second, roots[first], roots[second], hashes), (first, second)
            if hashes:  # a tampered proof element, or a wrong old root, must fail
                tampered = [*hashes[:-1], bytes(32)]
                assert not verify_consistency(first, second, roots[first], roots[second], tampered)
                assert not verify_consistency(first, second, roots[first - 1], roots[second], hashes)


def test_consistency_between_checkpoints_seen_before_and_after_growth(client, tokens, vkey, populated):
    _, old_size, old_root = current_checkpoint(client, vkey)
    populate(client, tokens.pipeline, 5)
    _, new_size, new_root = current_checkpoint(client, vkey)
    assert new_size == old_size + 5
    body = proof(client, tokens.auditor, "consistency", first=old_size, second=new_size)
    hashes = [bytes.fromhex(h) for h in body["hashes"]]
    assert verify_consistency(old_size, new_size, old_root, new_root, hashes)


# --- export -------------------------------------------------------------------------------------


def parse_export(text: str) -> list[tuple[bytes, dict[str, Any], bytes | None, Any]]:
    """`<leaf hash hex> TAB <JCS(header)> TAB <salt hex | -> TAB <JCS(payload) | ->` per line."""
    out = []
    assert text == "" or text.endswith("\n")
    for line in text.splitlines():
        leaf_hex, header_text, salt_hex, payload_text = line.split("\t")
        header = json.loads(header_text)
        assert rfc8785.dumps(header) == header_text.encode()  # canonical as exported
        leaf = bytes.fromhex(leaf_hex)
        assert leaf == leaf_hash(header_text.encode())
        salt = None if salt_hex == "-" else bytes.fromhex(salt_hex)
        payload = None if payload_text == "-" else json.loads(payload_text)
        if salt is not None:
            assert rfc8785.dumps(payload) == payload_text.encode()
            digest = hashlib.sha256(salt + payload_text.encode()).hexdigest()
            assert header["payload_digest"] == "sha256:" + digest
        out.append((leaf, header, salt, payload))
    return out


def test_export_lines_parse_and_match_the_entries(client, tokens, vkey, base, populated):
    r = client.get(f"{LOG}/export", headers=auth(tokens.auditor))
    assert r.status_code == 200
    assert r.mimetype == "text/tab-separated-values"
    rows = parse_export(r.get_data(as_text=True))
    entries = all_entries(client, tokens.auditor)
    assert [h for _, h, _, _ in rows] == [e["header"] for e in entries]
    assert [p for _, _, _, p in rows[base:]] == populated
    assert [s.hex() for _, _, s, _ in rows if s is not None] == [e["salt"] for e in entries]
    _, size, root = current_checkpoint(client, vkey)
    assert size == len(rows)
    assert mth([leaf for leaf, _, _, _ in rows]) == root


def test_export_of_a_range(client, tokens, populated):
    r = client.get(f"{LOG}/export", query_string={"start": 3, "end": 9}, headers=auth(tokens.auditor))
    assert r.status_code == 200
    assert [h["seq"] for _, h, _, _ in parse_export(r.get_data(as_text=True))] == list(range(3, 9))
    r = client.get(f"{LOG}/export", query_string={"start": 5, "end": 5}, headers=auth(tokens.auditor))
    assert r.status_code == 200
    assert r.get_data() == b""


def test_export_before_any_event_holds_the_entries_of_init(client, tokens, base):
    r = client.get(f"{LOG}/export", headers=auth(tokens.auditor))
    assert r.status_code == 200
    rows = parse_export(r.get_data(as_text=True))
    assert [h["seq"] for _, h, _, _ in rows] == list(range(base))
