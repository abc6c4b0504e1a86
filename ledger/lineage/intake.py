"""OpenLineage intake: validated events become log entries (the projections follow the log).

Nothing is lost and nothing is half-written: a batch's valid events are appended in one
transaction; invalid ones are reported by index and not stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ledger.errors import InvalidEventError, LedgerError, PermissionDeniedError
from ledger.lineage.events import DEFAULT_EVENT_TIME_WINDOW, EventTimeWindow, ValidatedEvent, validate_event
from ledger.store.ledger import Ledger, Receipt
from ledger.store.sequencer import PendingEntry


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
    def __init__(self, ledger: Ledger, *, window: EventTimeWindow = DEFAULT_EVENT_TIME_WINDOW) -> None:
        self.ledger = ledger
        self.window = window  # the eventTime an event may carry, around the ledger's clock

    def _admit(self, event: Any, principal: Poster, now: datetime) -> ValidatedEvent:
        v = validate_event(event, now=now, window=self.window)
        denied = sorted(ns for ns in v.namespaces if not principal.may_write_namespace(ns))
        if denied:
            raise PermissionDeniedError(
                f"principal {principal.name!r} may not write to namespace {denied[0]!r}",
                field="/job/namespace" if v.kind != "openlineage.dataset_event" else "/dataset/namespace",
            )
        return v

    def _pending(self, v: ValidatedEvent, principal: Poster) -> PendingEntry:
        return PendingEntry(
            kind=v.kind,
            subject=v.subject,
            principal=principal.name,
            payload=v.event,
            dedup_key=v.dedup_key,
            canonical=v.canonical,
        )

    def record(self, event: Any, principal: Poster) -> Receipt:
        """Records one event; a repeat of an event already stored returns its original receipt."""
        v = self._admit(event, principal, self.ledger.clock())
        _, receipts = self.ledger.append([self._pending(v, principal)])
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
        if admitted:
            pending = [self._pending(v, principal) for _, v in admitted]
            _, rs = self.ledger.append(pending)
            receipts = {i: r for (i, _), r in zip(admitted, rs, strict=True)}
        return BatchOutcome(receipts, failures, len(events))
