"""The metric catalogue: every metric name of the contract, its unit, and its formula. Pure.

Stored metrics are folded from events into facts and aggregates; derived metrics are
computed from stored ones (and from plans and spend) when a period is answered, so a
ratio is always the ratio of the period's sums, never an average of daily ratios.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class Unit(StrEnum):
    COUNT = "count"
    MONEY = "money"
    RATIO = "ratio"
    SECONDS = "seconds"


ROUTE_METRICS: dict[str, str] = {
    "sales": "routed_sales",
    "partner": "routed_partner",
    "nurture": "routed_nurture",
    "processing": "routed_processing",
    "rejected": "rejected",
}

# The sales stages of `lead.stage_changed` and the metric each one counts.
STAGE_METRICS: dict[str, str] = {
    "sql": "sql",
    "demo_held": "demos_held",
    "proposal_sent": "proposals_sent",
    "contract_sent": "contracts_sent",
    "won": "deals_won",
    "lost": "deals_lost",
}

FEEDBACK_METRICS: dict[str, str] = {"accepted": "sal", "rejected": "sales_rejected"}

# Not in the contract's list: the parts of `ltv`, stored at the client's first payment.
LTV_CLIENTS = "ltv_clients"
LTV_REVENUE = "ltv_revenue"
DURATION_METRICS: tuple[str, ...] = (
    "first_response_time",
    "proposal_time",
    "contract_time",
    "lead_lifetime",
)


@dataclass(frozen=True)
class Metric:
    name: str
    unit: Unit
    formula: str


def _m(name: str, unit: Unit, formula: str) -> Metric:
    return Metric(name, unit, formula)


# In the contract's order; the summary answers them in this order.
CATALOGUE: tuple[Metric, ...] = (
    _m("leads_received", Unit.COUNT, "lead.received events (one per lead)"),
    _m("leads_contacted", Unit.COUNT, "leads' first contact (earliest lead.contacted)"),
    _m("briefs_filled", Unit.COUNT, "leads' first lead.brief_filled"),
    _m("brief_rate", Unit.RATIO, "briefs_filled / leads_contacted"),
    _m("routed_sales", Unit.COUNT, "leads routed to sales (once per lead)"),
    _m("routed_partner", Unit.COUNT, "leads routed to a partner (once per lead)"),
    _m("routed_nurture", Unit.COUNT, "leads routed to nurturing (once per lead)"),
    _m("routed_processing", Unit.COUNT, "leads routed to primary processing (once per lead)"),
    _m("rejected", Unit.COUNT, "leads the definition rejected (once per lead)"),
    _m("sal", Unit.COUNT, "leads sales accepted (once per lead)"),
    _m("sales_rejected", Unit.COUNT, "leads sales rejected (once per lead)"),
    _m("lead_quality_rate", Unit.RATIO, "sal / (sal + sales_rejected)"),
    _m("sql", Unit.COUNT, "leads that reached the sql stage"),
    _m("demos_held", Unit.COUNT, "leads that reached demo_held"),
    _m("proposals_sent", Unit.COUNT, "leads that reached proposal_sent"),
    _m("contracts_sent", Unit.COUNT, "leads that reached contract_sent"),
    _m("deals_won", Unit.COUNT, "leads that reached won"),
    _m("deals_lost", Unit.COUNT, "leads that reached lost"),
    _m("win_rate", Unit.RATIO, "deals_won / (deals_won + deals_lost)"),
    _m("payments_count", Unit.COUNT, "payments (distinct payment_id)"),
    _m("revenue", Unit.MONEY, "sum of payment amounts"),
    _m("average_check", Unit.MONEY, "revenue / payments_count"),
    _m("plan", Unit.MONEY, "revenue plan, months spread evenly over their days"),
    _m("plan_fulfilment", Unit.RATIO, "revenue / plan"),
    _m("first_response_time", Unit.SECONDS, "first contact - received, at the first contact"),
    _m("proposal_time", Unit.SECONDS, "proposal_sent - demo_held, at proposal_sent"),
    _m("contract_time", Unit.SECONDS, "contract_sent - proposal_sent, at contract_sent"),
    _m("lead_lifetime", Unit.SECONDS, "first payment - received, at the first payment"),
    _m("ltv", Unit.MONEY, "all-time revenue / clients, for first payments in the period"),
    _m("spend", Unit.MONEY, "marketing spend, months spread evenly over their days"),
    _m("cost_per_lead", Unit.MONEY, "spend / leads_received"),
    _m("cost_per_sal", Unit.MONEY, "spend / sal"),
    _m("roi", Unit.RATIO, "(revenue - spend) / spend"),
)  # fmt: skip
METRICS: dict[str, Metric] = {m.name: m for m in CATALOGUE}

# The funnel, in order: every lead passes these steps (briefs only concern processing leads).
FUNNEL_STAGES: tuple[str, ...] = (
    "leads_received",
    "leads_contacted",
    "sal",
    "sql",
    "demos_held",
    "proposals_sent",
    "contracts_sent",
    "deals_won",
)

# Which stored metrics (and whether plan or spend) each metric needs.
NEEDS: dict[str, tuple[str, ...]] = {
    "brief_rate": ("briefs_filled", "leads_contacted"),
    "lead_quality_rate": ("sal", "sales_rejected"),
    "win_rate": ("deals_won", "deals_lost"),
    "average_check": ("revenue", "payments_count"),
    "plan": (),
    "plan_fulfilment": ("revenue",),
    "ltv": (LTV_REVENUE, LTV_CLIENTS),
    "spend": (),
    "cost_per_lead": ("leads_received",),
    "cost_per_sal": ("sal",),
    "roi": ("revenue",),
}
USES_PLAN = frozenset({"plan", "plan_fulfilment"})
USES_SPEND = frozenset({"spend", "cost_per_lead", "cost_per_sal", "roi"})


def stored_needed(names: tuple[str, ...] | list[str]) -> set[str]:
    """The stored metrics a set of metrics is computed from."""
    needed: set[str] = set()
    for name in names:
        if name in NEEDS:
            needed.update(NEEDS[name])
        else:
            needed.add(name)
    return needed


@dataclass(frozen=True)
class DurationStats:
    """Median and p90 in seconds (None when no lead closed in the period), and how many."""

    median: Decimal | None
    p90: Decimal | None
    count: int


Value = Decimal | DurationStats | None


def _ratio(numerator: Decimal | None, denominator: Decimal | None) -> Decimal | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def compute(
    name: str,
    sums: Mapping[str, Decimal],
    durations: Mapping[str, DurationStats],
    plan: Decimal | None,
    spend: Decimal | None,
) -> Value:
    """One metric's exact value from the period's stored sums, plan and spend.

    `plan` and `spend` are None when the period is filtered by a dimension they do not
    carry; every metric computed from them is then None too.
    """

    def s(metric: str) -> Decimal:
        return sums.get(metric, Decimal(0))

    if name in DURATION_METRICS:
        return durations.get(name, DurationStats(None, None, 0))
    if name not in NEEDS:
        return s(name)
    if name == "brief_rate":
        return _ratio(s("briefs_filled"), s("leads_contacted"))
    if name == "lead_quality_rate":
        return _ratio(s("sal"), s("sal") + s("sales_rejected"))
    if name == "win_rate":
        return _ratio(s("deals_won"), s("deals_won") + s("deals_lost"))
    if name == "average_check":
        return _ratio(s("revenue"), s("payments_count"))
    if name == "plan":
        return plan
    if name == "plan_fulfilment":
        return _ratio(s("revenue"), plan)
    if name == "ltv":
        return _ratio(s(LTV_REVENUE), s(LTV_CLIENTS))
    if name == "spend":
        return spend
    if name == "cost_per_lead":
        return _ratio(spend, s("leads_received"))
    if name == "cost_per_sal":
        return _ratio(spend, s("sal"))
    if name == "roi":
        return None if spend is None else _ratio(s("revenue") - spend, spend)
    raise KeyError(name)
