"""Records the policy bundle in force as a `policy.bundle` entry whenever its digest changes."""

from __future__ import annotations

from ledger.policy.engine import PolicyBundle
from ledger.store.ledger import Ledger
from ledger.store.sequencer import PendingEntry
from ledger.tlog.entry import sha256_digest


def record_policy_bundle(ledger: Ledger, bundle: PolicyBundle, *, principal: str = "ledger") -> int | None:
    """Appends a `policy.bundle` entry unless the latest one already names this digest.

    Returns the seq of the entry in force. Racing processes build the same dedup key (digest and
    the seq of the entry it supersedes), so the change is recorded once.
    """
    latest = ledger.entries(kind="policy.bundle", after=None, limit=1, newest_first=True)
    if latest and latest[0].header.subject == f"policy:{bundle.digest}":
        return latest[0].header.seq
    after = latest[0].header.seq if latest else -1
    _, receipts = ledger.append(
        [
            PendingEntry(
                kind="policy.bundle",
                subject=f"policy:{bundle.digest}",
                principal=principal,
                payload={"digest": bundle.digest, "files": dict(sorted(bundle.files.items()))},
                dedup_key=sha256_digest(f"policy.bundle:{bundle.digest}:after:{after}".encode()),
            )
        ]
    )
    return receipts[0].seq
