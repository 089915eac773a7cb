"""A fit as the definition's own rules: points re-weighted, rules dropped, new criteria,
the threshold moved; and one sentence a marketer reads for each change. Pure.

The draft is the version's document with only `score` and `routes` changed: existing
rules keep their place (and their labels), new ones come after them, and values of one
field that earn the same points share one rule (`industry_in: [finance, saas]`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from services.qualifier.routing.evaluator import describe
from services.qualifier.suggest.fitted import Column, Fit

ChangeKind = Literal["reweighted", "removed", "added", "threshold"]


@dataclass(frozen=True)
class Evidence:
    leads_with: int
    accepted_with: int
    leads_without: int
    accepted_without: int

    @staticmethod
    def of(columns: list[Column]) -> Evidence:
        first = columns[0]
        total = first.n_with + first.n_without
        accepted = first.accepted_with + first.accepted_without
        n_with = sum(c.n_with for c in columns)
        acc_with = sum(c.accepted_with for c in columns)
        return Evidence(n_with, acc_with, total - n_with, accepted - acc_with)

    def says(self) -> str:
        return (
            f"{_pct(self.accepted_with, self.leads_with)} of these leads were accepted against "
            f"{_pct(self.accepted_without, self.leads_without)} of the others, "
            f"{self.leads_with:,} leads"
        )


@dataclass(frozen=True)
class Suggested:
    kind: ChangeKind
    criterion: str
    old_points: int | None
    new_points: int | None
    sentence: str
    evidence: Evidence


@dataclass(frozen=True)
class Suggestion:
    document: dict[str, Any]
    changes: list[Suggested]


def _pct(part: int, whole: int) -> str:
    return f"{round(100 * part / whole)}%" if whole else "no lead"


def _signed(points: int) -> str:
    return f"{points:+d}".replace("-", "−")


def suggest(document: dict[str, Any], fit: Fit) -> Suggestion:
    """The draft document and its changes; no change when the fit found nothing to change."""
    new = copy.deepcopy(document)
    changes: list[Suggested] = []
    by_rule = {c.rule: c for c in fit.columns if c.kind == "rule"}
    kept: list[dict[str, Any]] = []
    for i, rule in enumerate(document.get("score", [])):
        col = by_rule.get(i)
        label = rule.get("label") or describe(rule["when"])
        if col is None or col.points == rule["points"]:
            kept.append(rule)
            continue
        evidence = Evidence.of([col])
        if col.points == 0:
            changes.append(
                Suggested(
                    "removed",
                    label,
                    rule["points"],
                    None,
                    f"Drop {_signed(rule['points'])} for {label}: {evidence.says()}; with the "
                    "other criteria counted it does not tell accepted leads from rejected ones.",
                    evidence,
                )
            )
            continue
        kept.append({**rule, "points": col.points})
        changes.append(
            Suggested(
                "reweighted",
                label,
                rule["points"],
                col.points,
                f"{_signed(col.points)} instead of {_signed(rule['points'])} for {label}: "
                f"{evidence.says()}.",
                evidence,
            )
        )
    for when, group in _new_rules(fit.columns):
        label = describe(when)
        evidence = Evidence.of(group)
        points = group[0].points
        kept.append({"points": points, "when": when})
        changes.append(
            Suggested(
                "added",
                label,
                None,
                points,
                f"{_signed(points)} for {label} (new): {evidence.says()}.",
                evidence,
            )
        )
    new["score"] = kept
    threshold = _threshold(new, document, fit)
    if threshold is not None:
        changes.append(threshold)
    return Suggestion(new if changes else copy.deepcopy(document), changes)


def _new_rules(columns: list[Column]) -> list[tuple[dict[str, Any], list[Column]]]:
    groups: dict[tuple[str, str, int], list[Column]] = {}
    for col in columns:
        if col.kind == "rule" or col.points == 0:
            continue
        key = (col.kind, col.field or "", col.points)
        if col.kind == "budget":
            key = (col.kind, str(col.at_least), col.points)
        groups.setdefault(key, []).append(col)
    rules: list[tuple[dict[str, Any], list[Column]]] = []
    for (kind, name, _), group in groups.items():
        if kind == "flag":
            when: dict[str, Any] = {name: True}
        elif kind == "budget":
            when = {"budget_at_least": int(group[0].at_least or 0)}
        else:
            when = {f"{name}_in": sorted(str(c.value) for c in group)}
        rules.append((when, group))
    return rules


def _threshold(new: dict[str, Any], old: dict[str, Any], fit: Fit) -> Suggested | None:
    routes = old["routes"]
    was = int(routes["sales_min_score"])
    now = fit.sales_min_score
    if now is None or now == was:
        return None
    gap = was - int(routes["nurture_below_score"])
    new["routes"] = {**routes, "sales_min_score": now, "nurture_below_score": now - gap}
    (n_above, acc_above), (n_below, acc_below) = fit.above, fit.below
    evidence = Evidence(n_above, acc_above, n_below, acc_below)
    return Suggested(
        "threshold",
        "sales_min_score",
        was,
        now,
        f"Send to sales from {now} points (was {was}): with the points above, "
        f"{_pct(acc_above, n_above)} of the leads at {now} or more were accepted "
        f"({n_above:,} leads) against {_pct(acc_below, n_below)} of those below "
        f"({n_below:,} leads).",
        evidence,
    )


def draft_text(suggestion: Suggestion, *, version: int, outcomes: int) -> str:
    """The draft as YAML, in the format people upload, with where it came from on top."""
    head = (
        f"# Suggested by Leadflow from version {version} and what sales said of {outcomes:,} "
        "leads.\n# A draft: compare it with the active version, edit it if you like, publish it.\n"
    )
    body = yaml.safe_dump(
        suggestion.document, sort_keys=False, allow_unicode=True, default_flow_style=None
    )
    return head + body
