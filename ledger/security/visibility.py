"""Which log payloads a principal may read in full (DESIGN.md 6).

Every authenticated principal reads every header, leaf hash and proof, so anyone can check the tree.
The payload of a lineage entry is withheld (served as null, with the reason) from a principal that
may not see what it carries:
- a pipeline scoped to namespaces does not read events written to other namespaces;
- a principal without the clearance for a sensitive tag (`pii`, `phi`, `confidential`) does not read
  events that name a dataset carrying that tag, since their facets (schema, column lineage, data
  quality) describe its content; nor the run events of a run that touched such a dataset, nor the
  job events of a job whose runs did (a job `sql` or a run `errorMessage` facet can hold that data).
A withheld payload is not altered, only left out, so whatever is served still verifies against its
digest; an auditor with the clearance verifies the rest.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, tuple_

from ledger.lineage.events import LINEAGE_KINDS, mentioned_datasets, written_namespaces
from ledger.lineage.models import Dataset, Job, JobDataset, RunDataset
from ledger.security.classification import SENSITIVE
from ledger.security.models import DatasetTags
from ledger.security.principals import AuthenticatedPrincipal
from ledger.store.db import Database, chunks


class PayloadGate:
    """Decides, for one principal, which lineage payloads are withheld."""

    def __init__(self, principal: AuthenticatedPrincipal) -> None:
        self.principal = principal
        self.missing = SENSITIVE - principal.clearances
        self.scoped = principal.reads_scoped
        self._tagged: bool | None = None

    @property
    def open(self) -> bool:
        """True when this principal reads every payload (nothing to look up)."""
        return not self.scoped and not self.missing

    def withheld(self, conn: Any, entries: Iterable[tuple[int, str, Any]]) -> dict[int, str]:
        """seq -> why, for the entries (seq, kind, payload as dict or JSON text) withheld from this principal.

        `conn` is a Session or Connection; one query per few hundred datasets the entries name.
        """
        if self.open:
            return {}
        if not self.scoped and not self._any_tags(conn):
            return {}  # nothing is classified: nothing to withhold, and no payload to parse
        out: dict[int, str] = {}
        refs: dict[int, set[tuple[str, str]]] = {}
        runs: dict[int, str] = {}
        jobs: dict[int, tuple[str, str]] = {}
        for seq, kind, payload in entries:
            if payload is None or kind not in LINEAGE_KINDS:
                continue
            event = json.loads(payload) if isinstance(payload, str | bytes) else payload
            if not isinstance(event, dict):
                continue
            if not all(self.principal.may_read_namespace(ns) for ns in written_namespaces(kind, event)):
                out[seq] = "written to a namespace outside this principal's scope"
                continue
            if self.missing:
                refs[seq] = mentioned_datasets(kind, event)
                run, job = event.get("run"), event.get("job")
                if kind == "openlineage.run_event" and isinstance(run, dict) and isinstance(run.get("runId"), str):
                    runs[seq] = run["runId"].lower()
                elif kind == "openlineage.job_event" and isinstance(job, dict):
                    jobs[seq] = (str(job.get("namespace")), str(job.get("name")))
        if runs or jobs:
            touched = self._touched(conn, set(runs.values()), set(jobs.values()))
            for seq, run_id in runs.items():
                refs[seq] |= touched.get(run_id, set())
            for seq, key in jobs.items():
                refs[seq] |= touched.get(key, set())
        if refs:
            sensitive = self._sensitive(conn, set().union(*refs.values()))
            for seq, names in refs.items():
                need = set().union(*(sensitive.get(n, set()) for n in names))
                if need:
                    out[seq] = f"names data classified {', '.join(sorted(need))}; needs clearance for it"
        return out

    def _any_tags(self, conn: Any) -> bool:
        """Whether any dataset carries a tag at all (asked once per gate, that is once per request)."""
        if self._tagged is None:
            self._tagged = conn.execute(select(DatasetTags.__table__.c.dataset_id).limit(1)).first() is not None  # type: ignore[attr-defined]
        return self._tagged

    @staticmethod
    def _touched(conn: Any, run_ids: set[str], job_keys: set[tuple[str, str]]) -> dict[Any, set[tuple[str, str]]]:
        """The datasets each run (by id) and each job (by namespace, name) read or wrote, as the
        lineage projection has them."""
        out: dict[Any, set[tuple[str, str]]] = {}
        d = Dataset.__table__.c  # type: ignore[attr-defined]
        rd = RunDataset.__table__.c  # type: ignore[attr-defined]
        jd = JobDataset.__table__.c  # type: ignore[attr-defined]
        j = Job.__table__.c  # type: ignore[attr-defined]
        for part in chunks(sorted(run_ids)):
            q = (
                select(rd.run_id, d.namespace, d.name)
                .join(Dataset.__table__, d.id == rd.dataset_id)
                .where(  # type: ignore[attr-defined]
                    rd.run_id.in_(part)
                )
            )
            for run_id, ns, name in conn.execute(q):
                out.setdefault(run_id, set()).add((ns, name))
        for part in chunks(sorted(job_keys)):
            q = (
                select(j.namespace, j.name, d.namespace, d.name)
                .select_from(Job.__table__.join(JobDataset.__table__, jd.job_id == j.id))  # type: ignore[attr-defined]
                .join(Dataset.__table__, d.id == jd.dataset_id)  # type: ignore[attr-defined]
                .where(tuple_(j.namespace, j.name).in_(part))
            )
            for jns, jname, ns, name in conn.execute(q):
                out.setdefault((jns, jname), set()).add((ns, name))
        return out

    def _sensitive(self, conn: Any, names: set[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
        """The uncleared sensitive tags of each named dataset that has any."""
        out: dict[tuple[str, str], set[str]] = {}
        d = Dataset.__table__.c  # type: ignore[attr-defined]
        t = DatasetTags.__table__.c  # type: ignore[attr-defined]
        for part in chunks(sorted(names)):
            q = (
                select(d.namespace, d.name, t.effective)
                .select_from(Dataset.__table__.join(DatasetTags.__table__, t.dataset_id == d.id))  # type: ignore[attr-defined]
                .where(tuple_(d.namespace, d.name).in_(part))
            )
            for ns, name, effective in conn.execute(q):
                tags = set(json.loads(effective) if isinstance(effective, str) else effective or []) & self.missing
                if tags:
                    out[(ns, name)] = tags
        return out

    def withhold(self, conn: Any, entries: list[dict[str, Any]]) -> None:
        """Nulls payload and salt, and says why, in the entry JSON objects withheld from this principal."""
        hidden = self.withheld(conn, [(e["header"]["seq"], e["header"]["kind"], e["payload"]) for e in entries])
        for e in entries:
            reason = hidden.get(e["header"]["seq"])
            if reason is not None:
                e.update(payload=None, salt=None, withheld=reason)


def withhold_for(
    principal: AuthenticatedPrincipal, db: Database, entries: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Entry JSON objects with the payloads `principal` may not read withheld (in place); returned."""
    gate = PayloadGate(principal)
    if not gate.open:
        with db.statement() as conn:
            gate.withhold(conn, entries)
    return entries
