"""Synthetic leads and what sales made of them, drawn from a KNOWN acceptance model.

The truth (`TRUE_LOGIT`) says which criteria make sales accept a lead: some the example
definition scores rightly, some it scores wrongly (a company of 51-100 people, an e-mail
at a free provider, budgets from 150,000), some it does not score at all (webinar
attendance, `fields.crm_in_use`), and some lead fields are noise (source, channel,
country, `fields.favourite_colour`). Leads arrive over `days` in time order, so a time
split means something; the same seed gives the same leads.

Every lead reaches scoring under the example definition (a company, a service we sell,
every required field), as in a history where sales saw every lead and said yes or no.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from shared.events import LeadSnapshot

START = datetime(2026, 3, 1, tzinfo=UTC)
BASE = -2.4
# Criterion (as the definition format writes it) -> its true effect on the log-odds of
# sales accepting the lead. Anything not listed has no effect.
TRUE_LOGIT: dict[str, float] = {
    "role_in_purchase=decision_maker": 1.6,
    "role_in_purchase=influencer": 0.6,
    "company_size=101-500": 1.0,
    "company_size=500-1000": 1.0,
    "company_size=1000+": 1.0,
    "budget>=300000": 0.9,
    "timeframe=now": 0.8,
    "timeframe=1-3 months": 0.8,
    "industry=saas": 0.8,
    "industry=finance": 0.8,
    "webinar_attended": 1.2,
    "fields.crm_in_use=yes": 0.7,
}
# Fields whose values do not change the odds at all.
NOISE_FIELDS = ("source", "utm_source", "country", "fields.favourite_colour")

ROLES = (("decision_maker", 0.3), ("influencer", 0.3), ("evaluator", 0.25), ("not_involved", 0.15))
SIZES = (
    ("2-10", 0.15), ("11-20", 0.1), ("21-50", 0.15), ("51-100", 0.2),
    ("101-500", 0.2), ("500-1000", 0.1), ("1000+", 0.1),
)  # fmt: skip
BUDGETS = (50_000, 100_000, 150_000, 200_000, 300_000, 500_000, 1_000_000)
TIMEFRAMES = (("now", 0.25), ("1-3 months", 0.25), ("3-6 months", 0.25), ("later", 0.25))
INDUSTRIES = ("saas", "finance", "ecommerce", "manufacturing", "retail", "education")
SOURCES = ("web_form", "webinar_registration", "api")
CHANNELS = ("google", "yandex", "vk", None)
COUNTRIES = ("RU", "KZ", "BY")
COLOURS = ("red", "green", "blue")
SERVICES = ("seo", "ppc", "analytics")


@dataclass(frozen=True)
class SyntheticLead:
    snapshot: LeadSnapshot
    p_accept: float  # the true model's probability that sales accepts the lead
    feedback: Literal["accepted", "rejected"] | None  # None: sales said nothing
    won: bool
    revenue: Decimal


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


def true_logit(snapshot: LeadSnapshot) -> float:
    """The true model's log-odds of acceptance for a lead."""
    hits = [
        f"role_in_purchase={snapshot.role_in_purchase}",
        f"company_size={snapshot.company_size}",
        f"timeframe={snapshot.timeframe}",
        f"industry={snapshot.industry}",
        f"fields.crm_in_use={snapshot.fields.get('crm_in_use')}",
    ]
    if snapshot.budget is not None and snapshot.budget >= 300_000:
        hits.append("budget>=300000")
    if snapshot.webinar_attended:
        hits.append("webinar_attended")
    return BASE + sum(TRUE_LOGIT.get(h, 0.0) for h in hits)


def true_probability(snapshot: LeadSnapshot) -> float:
    return 1 / (1 + math.exp(-true_logit(snapshot)))


def generate(
    n: int, *, seed: int, days: int = 180, feedback_share: float = 0.95
) -> Iterator[SyntheticLead]:
    """`n` leads in the order they arrived, over `days` from `START`, with their outcomes."""
    rng = random.Random(seed)
    span = timedelta(days=days).total_seconds()
    for i in range(n):
        at = START + timedelta(seconds=span * (i + rng.random()) / n)
        free = rng.random() < 0.3
        number = rng.getrandbits(48)
        snapshot = LeadSnapshot(
            lead_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            source=rng.choice(SOURCES),
            name="Synthetic Lead",
            email=f"lead{number}@{'gmail.com' if free else f'company{number}.example'}",
            company=f"Company {number}",
            company_size=_pick(rng, SIZES),
            industry=rng.choice(INDUSTRIES),
            country=rng.choice(COUNTRIES),
            services=[rng.choice(SERVICES)],
            budget=Decimal(rng.choice(BUDGETS)),
            timeframe=_pick(rng, TIMEFRAMES),
            role_in_purchase=_pick(rng, ROLES),
            consent=True,
            utm={"source": rng.choice(CHANNELS)},
            occurred_at=at,
            received_at=at,
            webinar_attended=rng.random() < 0.25,
            fields={
                "crm_in_use": "yes" if rng.random() < 0.35 else "no",
                "favourite_colour": rng.choice(COLOURS),
            },
        )
        p = true_probability(snapshot)
        accepted = rng.random() < p
        said = rng.random() < feedback_share
        won = said and accepted and rng.random() < 0.35
        revenue = (
            Decimal(int((snapshot.budget or 0) * Decimal(rng.uniform(0.5, 1.5))))
            if won
            else Decimal(0)
        )
        yield SyntheticLead(
            snapshot=snapshot,
            p_accept=p,
            feedback=("accepted" if accepted else "rejected") if said else None,
            won=won,
            revenue=revenue,
        )
