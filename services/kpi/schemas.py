"""KPI request and response models (responses are documented here; see docs/kpi.md)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_serializer

from services.kpi.store.tables import DIMENSION_LENGTH

Amount = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=2)]
DimensionValue = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=DIMENSION_LENGTH)
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanIn(_In):
    revenue: Amount = Field(description='The month\'s revenue plan, e.g. "1500000.00"')


class SpendIn(_In):
    channel: DimensionValue = Field(description="utm source, as leads carry it (`direct`: none)")
    campaign: DimensionValue = Field(
        default="none", description="utm campaign, as leads carry it (`none`: none)"
    )
    amount: Amount = Field(description="Spend of the month on this channel and campaign")


class _Money(BaseModel):
    @field_serializer("*")
    def _numbers(self, v: Any) -> Any:
        # Money is a JSON number in answers, exact to the cent.
        return float(v) if isinstance(v, Decimal) else v


class PlanOut(_Money):
    month: str
    revenue: Decimal
    updated_at: datetime
    updated_by: str


class SpendOut(_Money):
    month: str
    channel: str
    campaign: str
    amount: Decimal
    updated_at: datetime
    updated_by: str


class Bounds(BaseModel):
    from_: str = Field(alias="from")
    to: str


Number = int | float | None


class DurationValue(BaseModel):
    median: float | None = Field(description="seconds")
    p90: float | None = Field(description="seconds")
    count: int


class MetricComparison(BaseModel):
    unit: Literal["count", "money", "ratio", "seconds"]
    value: Number | DurationValue
    previous: Number | DurationValue
    year_ago: Number | DurationValue
    delta_previous: Number | DurationValue
    delta_previous_pct: Number | dict[str, float | None]
    delta_year_ago: Number | DurationValue
    delta_year_ago_pct: Number | dict[str, float | None]


class SummaryOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    tz: str
    currency: str = Field(description="The deployment's currency: every money value is in it")
    filters: dict[str, str]
    periods: dict[Literal["value", "previous", "year_ago"], Bounds]
    metrics: dict[str, MetricComparison]


class Point(BaseModel):
    metric: str
    start: str
    end: str
    label: str
    group: str | None
    value: Number | DurationValue


class GroupsLeftOut(BaseModel):
    limit: int = Field(description="LEADFLOW_KPI_TIMESERIES_MAX_GROUPS")
    shown: int = Field(description="Groups answered on their own")
    omitted: int = Field(description="Groups folded into the `other` group")
    other: str = Field(description='The folded group\'s name: "(other)" (or "(other 2)", ...)')
    ranked_by: str = Field(description="What the groups were ranked by, largest first")


class PointsLimit(BaseModel):
    limit: int = Field(description="LEADFLOW_KPI_TIMESERIES_MAX_POINTS")


class Truncated(BaseModel):
    groups: GroupsLeftOut
    points: PointsLimit | None = Field(
        default=None, description="Present when the point limit, not the group limit, cut groups"
    )


class TimeseriesOut(BaseModel):
    from_: str = Field(alias="from")
    to: str
    tz: str
    grain: Literal["day", "week", "month"]
    currency: str
    metrics: list[str]
    units: dict[str, str]
    group_by: str | None
    filters: dict[str, str]
    sparse: bool = Field(
        description="Cells where nothing happened are left out (a grouped series that would "
        "not fit otherwise): read a missing cell as the metric with nothing counted"
    )
    truncated: Truncated | None = Field(
        description="Groups folded into one `other` group; null when every group is shown"
    )
    points: list[Point]


class Stage(BaseModel):
    stage: str
    count: int
    step_conversion: float | None
    conversion_from_first: float | None


class FunnelOut(BaseModel):
    from_: str = Field(alias="from")
    to: str
    tz: str
    filters: dict[str, str]
    stages: list[Stage]


class RebuildOut(BaseModel):
    rebuild_id: int = Field(description="The number of the generation the rebuild builds")
    generation: int
    status: Literal["running", "done", "cancelled"]
    generation_status: Literal["building", "active", "retired", "cancelled"]
    requested_by: str | None
    started_at: datetime
    finished_at: datetime | None
    caught_up: bool
    offsets_total: int | None
    offsets_done: int | None
    targets: dict[str, dict[str, int]] | None
    progress: dict[str, dict[str, int]]
    status_url: str
