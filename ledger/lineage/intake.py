"""OpenLineage intake: validated events become log entries, then lineage projections.

Nothing is lost and nothing is half-written: a batch's valid events are appended in one
transaction together with their projections; invalid ones are reported by index and not stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from ledger.errors import InvalidEventError, LedgerError, PermissionDeniedError
from ledger.lineage.events import ValidatedEvent, validate_event
from ledger.security.principals import AuthenticatedPrincipal
from ledger.store.ledger import Ledger, Receipt
from ledger.store.sequencer import AppendResult, PendingEntry

Projector = Callable[[Session, AppendResult], None]
Screen = Callable[[Session, list[ValidatedEvent], AuthenticatedPrincipal], list[PendingEntry]]


@dataclass(frozen=True)
class BatchOutcome:
    receipts: dict[int, Receipt]
    failures: dict[int, LedgerError]
    received: int


class LineageIntake:
    def __init__(self, ledger: Ledger, *, project: Projector | None = None, screen: Screen | None = None) -> None:
        self.ledger = ledger
        self.project = project
        # Extra entries an event set calls for (denied access decisions for reads beyond clearance).
        self.screen = screen

    def _admit(self, event: Any, principal: AuthenticatedPrincipal) -> ValidatedEvent:
        v = validate_event(event)
        denied = sorted(ns for ns in v.namespaces if not principal.may_write_namespace(ns))
        if denied:
            raise PermissionDeniedError(
                f"principal {principal.name!r} may not write to namespace {denied[0]!r}",
                field="/job/namespace" if v.kind != "openlineage.dataset_event" else "/dataset/namespace",
            )
        return v

    def _pending(self, v: ValidatedEvent, principal: AuthenticatedPrincipal) -> PendingEntry:
        return PendingEntry(
            kind=v.kind,
            subject=v.subject,
            principal=principal.name,
            payload=v.event,
            dedup_key=v.dedup_key,
            canonical=v.canonical,
        )

    def record(self, event: Any, principal: AuthenticatedPrincipal) -> Receipt:
        """Records one event; a repeat of an event already stored returns its original receipt."""
        v = self._admit(event, principal)
        _, receipts = self.ledger.append(
            [self._pending(v, principal)], project=self.project, extend=self._screen([v], principal)
        )
        return receipts[0]

    def _screen(
        self, admitted: list[ValidatedEvent], principal: AuthenticatedPrincipal
    ) -> Callable[[Session], list[PendingEntry]] | None:
        """The screen, run inside the append's transaction: it decides on exactly the tags the
        append sees, and costs no transaction of its own."""
        screen = self.screen
        if screen is None:
            return None
        return lambda session: screen(session, admitted, principal)

    def record_batch(self, events: list[Any], principal: AuthenticatedPrincipal) -> BatchOutcome:
        failures: dict[int, LedgerError] = {}
        admitted: list[tuple[int, ValidatedEvent]] = []
        for i, event in enumerate(events):
            try:
                admitted.append((i, self._admit(event, principal)))
            except (InvalidEventError, PermissionDeniedError) as e:
                failures[i] = e
        receipts: dict[int, Receipt] = {}
        if admitted:
            pending = [self._pending(v, principal) for _, v in admitted]
            _, rs = self.ledger.append(
                pending, project=self.project, extend=self._screen([v for _, v in admitted], principal)
            )
            receipts = {i: r for (i, _), r in zip(admitted, rs[: len(pending)], strict=True)}
        return BatchOutcome(receipts, failures, len(events))
