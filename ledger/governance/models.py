"""Model registry projection: versions, validations, approvals, promotion decisions, deployments.
Rebuilt from the log like every projection."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Column, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class ModelVersion(SQLModel, table=True):
    __tablename__ = "gov_model_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_gov_model_versions"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(200), nullable=False))
    version: str = Field(sa_column=Column(String(200), nullable=False))
    artifact_uri: str = Field(sa_column=Column(Text, nullable=False))
    artifact_digest: str = Field(sa_column=Column(String(71), nullable=False))
    training_run_id: str = Field(sa_column=Column(String(64), nullable=False))
    model_card: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    registered_by: str = Field(sa_column=Column(Text, nullable=False))
    registered_at: str = Field(sa_column=Column(String(40), nullable=False))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))


class Validation(SQLModel, table=True):
    __tablename__ = "gov_validations"

    id: int | None = Field(default=None, primary_key=True)
    model_version_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    type: str = Field(sa_column=Column(String(64), nullable=False))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    thresholds: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    passed: bool = Field(sa_column=Column(Boolean, nullable=False))
    report_uri: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    report_digest: str | None = Field(default=None, sa_column=Column(String(71), nullable=True))
    datasets: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    run_id: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    recorded_by: str = Field(sa_column=Column(Text, nullable=False))
    recorded_at: str = Field(sa_column=Column(String(40), nullable=False))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))


class Approval(SQLModel, table=True):
    __tablename__ = "gov_approvals"

    id: int | None = Field(default=None, primary_key=True)
    model_version_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    stage: str = Field(sa_column=Column(String(64), nullable=False))
    approver: str = Field(sa_column=Column(Text, nullable=False))
    comment: str = Field(default="", sa_column=Column(Text, nullable=False))
    recorded_at: str = Field(sa_column=Column(String(40), nullable=False))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))


class PromotionDecision(SQLModel, table=True):
    __tablename__ = "gov_decisions"

    id: int | None = Field(default=None, primary_key=True)
    model_version_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    stage: str = Field(sa_column=Column(String(64), nullable=False))
    requested_by: str = Field(sa_column=Column(Text, nullable=False))
    allowed: bool = Field(sa_column=Column(Boolean, nullable=False))
    violations: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    warnings: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    policy_digest: str = Field(sa_column=Column(String(71), nullable=False))
    input_digest: str = Field(sa_column=Column(String(71), nullable=False))
    recorded_at: str = Field(sa_column=Column(String(40), nullable=False))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))


class Deployment(SQLModel, table=True):
    __tablename__ = "gov_deployments"

    id: int | None = Field(default=None, primary_key=True)
    model_version_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    stage: str = Field(sa_column=Column(String(64), nullable=False))
    environment: str = Field(sa_column=Column(Text, nullable=False))
    endpoint: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    decision_seq: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    refused: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, default=False))
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    deployed_by: str = Field(sa_column=Column(Text, nullable=False))
    recorded_at: str = Field(sa_column=Column(String(40), nullable=False))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
