"""Classification projection: per dataset, the tags security principals gave it, the tags pipelines
declared in OpenLineage `tags` facets, declassifications, and the effective tags after propagation
downstream along lineage. Rebuilt from the log like every projection."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, Text
from sqlmodel import Field, SQLModel


class DatasetTags(SQLModel, table=True):
    __tablename__ = "sec_dataset_tags"

    dataset_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    own: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    declared: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    declassified: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    effective: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # Effective tags that trace back only to pipeline declarations no security principal reviewed.
    unapproved: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    classified: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, default=False))


class Classification(SQLModel, table=True):
    __tablename__ = "sec_classifications"

    id: int | None = Field(default=None, primary_key=True)
    dataset_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    declassify: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    justification: str = Field(sa_column=Column(Text, nullable=False))
    principal: str = Field(sa_column=Column(Text, nullable=False))
    recorded_at: str = Field(sa_column=Column(Text, nullable=False))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
