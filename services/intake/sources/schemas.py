"""Answers of the sources that take many people at once: per item, per CSV row."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class LeadBatchIn(BaseModel):
    """Up to 500 leads; each is checked on its own, so one bad item rejects only itself."""

    model_config = ConfigDict(extra="forbid")

    leads: Annotated[
        list[Any],
        Field(
            min_length=1,
            max_length=500,
            json_schema_extra={"items": {"$ref": "#/components/schemas/LeadIn"}},
        ),
    ]


class ItemResult(BaseModel):
    index: int
    status: Literal["accepted", "updated", "duplicate", "rejected"]
    lead_id: str | None = None
    duplicate_of: str | None = None
    errors: list[ErrorItem] = Field(default_factory=list)


class BatchResult(BaseModel):
    accepted: int
    updated: int = 0
    duplicates: int
    rejected: int
    results: list[ItemResult]


class RowError(BaseModel):
    row: int = Field(description="line of the file where the record starts (1 = first line)")
    error: str


class ImportSummary(BaseModel):
    """`accepted`: new leads plus attendance recorded on registrants (`attendance_recorded`)."""

    accepted: int
    attendance_recorded: int
    duplicates: int
    rejected: list[RowError]
    rejected_count: int = Field(description="all rejected rows; `rejected` lists the first 1000")
