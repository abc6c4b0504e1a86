"""OpenLineage intake: validated events become log entries (the projections follow the log).

Nothing is lost and nothing is half-written: a batch's valid events are appended in one
transaction; invalid ones are reported by index and not stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ledger.errors import ConflictError, InvalidEventError, LedgerError, PermissionDeniedError
from ledger.lineage.events import DEFAULT_EVENT_TIME_WINDOW, EventTimeWindow, ValidatedEvent, validate_event
from ledger.store.appending import OwnerConflictError
from ledger.store.ledger import Ledger, Receipt
from ledger.store.sequencer import PendingEntry


def job_owner(namespace: str, name: str) -> str:
    """The owner a run event names for its run: its job, as a JSON array (names may hold `:`)."""
    return json.dumps([namespace, name], ensure_ascii=False, separators=(",", ":"))


def _hijack(subject: str) -> ConflictError:
    return ConflictError(
        f"run {subject.removeprefix('run:')} belongs to another job: a run is the job's that first recorded it",
        field="/run/runId",
    )


# The dataset facets an input in a namespace its poster may not write may carry: the version it read.
READ_FACETS = frozenset({"version"})

# Appends a batch may retry after refusals found under the lock (each retry drops every event the
# previous attempt found in conflict, so one retry suffices unless another append races this one).
MAX_BATCH_ATTEMPTS = 4


class Poster(Protocol):
    """Who posts the events (ledger.security.principals.Poster, as a value)."""

    name: str

    def may_write_namespace(self, namespace: str) -> bool: ...


@dataclass(frozen=True)
class BatchOutcome:
    receipts: dict[int, Receipt]
    failures: dict[int, LedgerError]
    received: int


class LineageIntake:
    def __init__(
        self, ledger: Ledger, *, window: EventTimeWindow = DEFAULT_EVENT_TIME_WINDOW, dedup_secret: bytes
    ) -> None:
        self.ledger = ledger
        self.window = window  # the eventTime an event may carry, around the ledger's clock
        # Dedup keys are HMAC-SHA256 of the canonical event under this server secret: a plain digest
        # would let anyone confirm a guess of an (erased) event's content by computing its key.
        self._dedup_secret = dedup_secret

    def _admit(self, event: Any, principal: Poster, now: datetime) -> ValidatedEvent:
        v = validate_event(event, now=now, window=self.window)
        denied = sorted(ns for ns in v.namespaces if not principal.may_write_namespace(ns))
        if denied:
            raise PermissionDeniedError(
                f"principal {principal.name!r} may not write to namespace {denied[0]!r}",
                field="/job/namespace" if v.kind != "openlineage.dataset_event" else "/dataset/namespace",
            )
        # Outputs write the dataset (facets, versions, its producer): only in the poster's own
        # namespaces. Inputs are read from anywhere.
        for i, out in enumerate(v.event.get("outputs") or [] if v.kind != "openlineage.dataset_event" else []):
            ns = out.get("namespace") if isinstance(out, dict) else None
            if isinstance(ns, str) and not principal.may_write_namespace(ns):
                raise PermissionDeniedError(
                    f"principal {principal.name!r} may not write to namespace {ns!r} (output {i})",
                    field=f"/outputs/{i}/namespace",
                )
        # Facets of an input describe the dataset (schema, source, tags, digest...): a scoped poster
        # may name the version it read in another namespace, and nothing else of that dataset.
        for i, inp in enumerate(v.event.get("inputs") or [] if v.kind == "openlineage.run_event" else []):
            ns = inp.get("namespace") if isinstance(inp, dict) else None
            facets = inp.get("facets") if isinstance(inp, dict) else None
            if isinstance(ns, str) and isinstance(facets, dict) and not principal.may_write_namespace(ns):
                written = sorted(k for k in facets if k not in READ_FACETS)
                if written:
                    raise PermissionDeniedError(
                        f"principal {principal.name!r} may not write dataset facets in namespace {ns!r}"
                        f" (input {i}: {written[0]})",
                        field=f"/inputs/{i}/facets/{written[0]}",
                    )
        return v

    def _pending(self, v: ValidatedEvent, principal: Poster) -> PendingEntry:
        job = v.event.get("job") if v.kind == "openlineage.run_event" else None
        return PendingEntry(
            kind=v.kind,
            subject=v.subject,
            principal=principal.name,
            payload=v.event,
            dedup_key="hmac:" + hmac.new(self._dedup_secret, v.canonical, hashlib.sha256).hexdigest(),
            canonical=v.canonical,
            # A run belongs to the job that first recorded it: checked under the append lock.
            owner=job_owner(job["namespace"], job["name"]) if job is not None else None,
        )

    def record(self, event: Any, principal: Poster) -> Receipt:
        """Records one event; a repeat of an event already stored returns its original receipt.
        An event naming a recorded run under another job is refused (409, nothing written)."""
        v = self._admit(event, principal, self.ledger.clock())
        try:
            _, receipts = self.ledger.append([self._pending(v, principal)])
        except OwnerConflictError as e:
            raise _hijack(v.subject) from e
        return receipts[0]

    def record_batch(self, events: list[Any], principal: Poster) -> BatchOutcome:
        failures: dict[int, LedgerError] = {}
        admitted: list[tuple[int, ValidatedEvent]] = []
        now = self.ledger.clock()
        for i, event in enumerate(events):
            try:
                admitted.append((i, self._admit(event, principal, now)))
            except (InvalidEventError, PermissionDeniedError) as e:
                failures[i] = e
        receipts: dict[int, Receipt] = {}
        for attempt in range(MAX_BATCH_ATTEMPTS):
            if not admitted:
                break
            pending = [self._pending(v, principal) for _, v in admitted]
            try:
                _, rs = self.ledger.append(pending)
            except OwnerConflictError as e:
                if attempt == MAX_BATCH_ATTEMPTS - 1:
                    raise _hijack(pending[e.indices[0]].subject) from e
                refused = set(e.indices)
                for k in refused:
                    failures[admitted[k][0]] = _hijack(pending[k].subject)
                admitted = [a for k, a in enumerate(admitted) if k not in refused]
                continue
            receipts = {i: r for (i, _), r in zip(admitted, rs, strict=True)}
            break
        return BatchOutcome(receipts, failures, len(events))
