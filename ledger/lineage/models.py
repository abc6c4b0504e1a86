"""Lineage projection tables: namespaces, datasets and their versions, jobs, runs, and the edges
between them. Every row is derived from the log and rebuilt by replaying it (`ledger rebuild`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Column, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class Namespace(SQLModel, table=True):
    __tablename__ = "lineage_namespaces"

    name: str = Field(sa_column=Column(String(1024), primary_key=True))
    created_at: str = Field(sa_column=Column(String(40), nullable=False))
    updated_at: str = Field(sa_column=Column(String(40), nullable=False))
    owner: str = Field(sa_column=Column(Text, nullable=False))


class Dataset(SQLModel, table=True):
    __tablename__ = "lineage_datasets"
    __table_args__ = (
        UniqueConstraint("namespace", "name", name="uq_lineage_datasets_ns_name"),
        Index("ix_lineage_datasets_source", "source_name"),
    )

    id: int | None = Field(default=None, primary_key=True)
    namespace: str = Field(sa_column=Column(String(1024), nullable=False))
    name: str = Field(sa_column=Column(String(1024), nullable=False))
    facets: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    current_version: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # A declared source: a DatasetEvent carrying a `dataSource` facet (DESIGN.md 4.2).
    source: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, default=False))
    source_seq: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # Marquez's source: the latest `dataSource` facet's name and uri (Marquez: "default" without one).
    source_name: str | None = Field(default=None, sa_column=Column(String(1024), nullable=True))
    source_uri: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: str = Field(sa_column=Column(String(40), nullable=False))
    updated_at: str = Field(sa_column=Column(String(40), nullable=False))
    last_seq: int = Field(sa_column=Column(BigInteger, nullable=False))


class DatasetVersion(SQLModel, table=True):
    __tablename__ = "lineage_dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version", name="uq_lineage_dataset_versions"),)

    id: int | None = Field(default=None, primary_key=True)
    dataset_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    version: str = Field(sa_column=Column(Text, nullable=False))
    digest: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    schema_fields: list[Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    produced_by_run: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    created_at: str = Field(sa_column=Column(String(40), nullable=False))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))


class Job(SQLModel, table=True):
    __tablename__ = "lineage_jobs"
    __table_args__ = (UniqueConstraint("namespace", "name", name="uq_lineage_jobs_ns_name"),)

    id: int | None = Field(default=None, primary_key=True)
    namespace: str = Field(sa_column=Column(String(1024), nullable=False))
    name: str = Field(sa_column=Column(String(1024), nullable=False))
    facets: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    code_version: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    latest_run_id: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    # Marquez's parentJobName: the job named by the `parent` run facet of the job's latest run event.
    parent_job_name: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: str = Field(sa_column=Column(String(40), nullable=False))
    updated_at: str = Field(sa_column=Column(String(40), nullable=False))
    last_seq: int = Field(sa_column=Column(BigInteger, nullable=False))


# The projection keeps a run's state as OpenLineage's last eventType (NEW before any START), which
# policies read; reads report Marquez's RunState (DESIGN.md 8, normative).
MARQUEZ_RUN_STATES = {
    "NEW": "NEW",
    "START": "RUNNING",
    "RUNNING": "RUNNING",
    "COMPLETE": "COMPLETED",
    "ABORT": "ABORTED",
    "FAIL": "FAILED",
}


def marquez_run_state(state: str) -> str:
    """Marquez's RunState of a projected run state."""
    return MARQUEZ_RUN_STATES.get(state, state)


class Run(SQLModel, table=True):
    __tablename__ = "lineage_runs"
    __table_args__ = (Index("ix_lineage_runs_job", "job_id", "first_seq"),)

    run_id: str = Field(sa_column=Column(String(64), primary_key=True))
    job_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    state: str = Field(sa_column=Column(String(16), nullable=False))
    # Facets are additive across a run's events; a facet of the same name replaces the earlier one.
    facets: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    code_version: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    started_at: str | None = Field(default=None, sa_column=Column(String(40), nullable=True))
    ended_at: str | None = Field(default=None, sa_column=Column(String(40), nullable=True))
    completed_at: str | None = Field(default=None, sa_column=Column(String(40), nullable=True))
    updated_at: str = Field(sa_column=Column(String(40), nullable=False))
    principals: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    seqs: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    first_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_seq: int = Field(sa_column=Column(BigInteger, nullable=False))


class RunDataset(SQLModel, table=True):
    """A dataset a run read (`in`) or wrote (`out`), with the version it saw."""

    __tablename__ = "lineage_run_datasets"
    __table_args__ = (Index("ix_lineage_run_datasets_ds", "dataset_id", "direction"),)

    run_id: str = Field(sa_column=Column(String(64), primary_key=True))
    dataset_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    direction: str = Field(sa_column=Column(String(3), primary_key=True))
    version: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class JobDataset(SQLModel, table=True):
    """Job-level lineage edge (union over the job's runs and job events): the graph's adjacency."""

    __tablename__ = "lineage_job_datasets"
    __table_args__ = (Index("ix_lineage_job_datasets_ds", "dataset_id", "direction"),)

    job_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    dataset_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    direction: str = Field(sa_column=Column(String(3), primary_key=True))


class RunEvent(SQLModel, table=True):
    """One OpenLineage RunEvent by its `eventTime` (Marquez's `GET /events/lineage`); the event itself
    is the entry's payload. `namespace` is its job's, the one scope decides on."""

    __tablename__ = "lineage_run_events"
    __table_args__ = (
        Index("ix_lineage_run_events_time", "event_time", "seq"),
        Index("ix_lineage_run_events_ns_time", "namespace", "event_time", "seq"),
    )

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    # UTC, RFC 3339 with 6 fractional digits and `Z`: text order is time order.
    event_time: str = Field(sa_column=Column(String(40), nullable=False))
    namespace: str = Field(sa_column=Column(String(1024), nullable=False))
    run_id: str = Field(sa_column=Column(String(64), nullable=False))
