"""The fit: an L1 logistic regression of sales' yes/no on readable criteria (scikit-learn).

Runs in the fitting process (`fit_process.py`), never in the qualifier: numpy and
scikit-learn alone take about 110 MB, more than the qualifier's memory goal leaves.

Candidates are the definition's own score rules, each frequent value of a categorical
field or `fields.*` answer, each flag, and budgets of at least a few amounts the leads
name. The L1 path proposes supports; the extended BIC (Chen and Chen, 2008), which also
pays for how many candidates there were, picks one, so a criterion that only looks good
by chance among many does not get in; the chosen criteria are then fitted again without a
penalty, so their weights are not shrunk.
"""

from __future__ import annotations

import math
import resource
import time
import warnings
from collections.abc import Iterable

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from services.qualifier.suggest.features import MAX_FIELD_VALUES, Row
from services.qualifier.suggest.fitted import SCALE, Column, Fit, Params, to_points

_BUDGET_QUANTILES = (0.2, 0.4, 0.6, 0.8)
# C times the number of leads: from a penalty that keeps nothing to one that keeps most.
_C_GRID = np.logspace(0.5, 3.5, 9)
_EBIC_GAMMA = 1.0


def fit(rows: Iterable[Row], rule_points: list[int], params: Params) -> Fit:
    """Fit sales' answers on the training rows; `rule_points`: the definition's score rules'
    points, in order."""
    started = time.perf_counter()
    data = list(rows)
    n, accepted = len(data), sum(r.accepted for r in data)
    if n < params.min_outcomes or min(accepted, n - accepted) < params.min_support:
        return Fit(
            outcomes=n,
            accepted=accepted,
            enough=False,
            why_not=f"{n} leads with sales' answer ({accepted} accepted) before the split; "
            f"a suggestion needs at least {params.min_outcomes}, with at least "
            f"{params.min_support} accepted and {params.min_support} rejected",
        )
    y = np.fromiter((r.accepted for r in data), dtype=np.float64, count=n)
    columns, matrix = _candidates(data, len(rule_points), params.min_support)
    x = np.column_stack(matrix).astype(np.float64) if matrix else np.zeros((n, 0))
    for j, col in enumerate(columns):
        hit = x[:, j] > 0
        col.n_with, col.accepted_with = int(hit.sum()), int(y[hit].sum())
        col.n_without, col.accepted_without = n - col.n_with, accepted - col.accepted_with
    intercept, weights = _select(x, y)
    for col, w in zip(columns, weights, strict=True):
        col.weight, col.points = float(w), to_points(float(w))
    result = Fit(outcomes=n, accepted=accepted, enough=True, intercept=intercept, columns=columns)
    _threshold(result, x, y, _kept_points(data, columns, rule_points), params)
    result.seconds = round(time.perf_counter() - started, 3)
    result.peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def _candidates(
    data: list[Row], n_rules: int, min_support: int
) -> tuple[list[Column], list[np.ndarray]]:
    n = len(data)
    columns: list[Column] = []
    matrix: list[np.ndarray] = []
    seen: set[bytes] = set()

    def offer(col: Column, hit: np.ndarray) -> None:
        support = int(hit.sum())
        key = hit.tobytes()
        if min_support <= support <= n - min_support and key not in seen:
            seen.add(key)
            columns.append(col)
            matrix.append(hit)

    # The definition's own rules come first: a new criterion that is the same set of
    # leads as a rule is that rule.
    rules = np.zeros((n, n_rules), dtype=bool)
    for i, r in enumerate(data):
        rules[i, r.rules] = True
    for j in range(n_rules):
        offer(Column("rule", rule=j), rules[:, j])
    # Each field's values as small integer codes, one pass over the rows.
    codes: dict[str, dict[str, int]] = {}
    coded: dict[str, np.ndarray] = {}
    for i, r in enumerate(data):
        for name, value in r.values.items():
            vocabulary = codes.setdefault(name, {})
            if name not in coded:
                coded[name] = np.full(n, -1, dtype=np.int32)
            coded[name][i] = vocabulary.setdefault(value, len(vocabulary))
    for name in sorted(codes):
        if name.startswith("fields.") and len(codes[name]) > MAX_FIELD_VALUES:
            continue  # free text, not a category
        flag = name in ("webinar_attended", "email_free_provider")
        for value, code in sorted(codes[name].items()):
            if flag and value != "true":
                continue
            col = Column("flag" if flag else "value", field=name, value=value)
            offer(col, coded[name] == code)
    budgets = np.array([np.nan if r.budget is None else r.budget for r in data], np.float64)
    known = budgets[~np.isnan(budgets)]
    if known.size:
        amounts = sorted({_round2(float(np.quantile(known, q))) for q in _BUDGET_QUANTILES})
        for amount in amounts:
            offer(Column("budget", field="budget", at_least=amount), budgets >= amount)
    return columns, matrix


def _round2(amount: float) -> float:
    """An amount to two significant digits: 183,400 as 180,000."""
    if amount <= 0:
        return 0.0
    digits = math.floor(math.log10(amount)) - 1
    return float(round(amount, -digits))


def _select(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """The support with the lowest extended BIC along the L1 path, refitted unpenalized.

    The path runs from a strong penalty to a weak one, scaled by the number of leads (the
    loss is a sum over them), and stops once the criterion has risen twice in a row: the
    weak-penalty end is where the solver is slowest and the criterion only pays more."""
    n, p = x.shape
    best: tuple[float, float, np.ndarray] | None = None
    tried: set[tuple[int, ...]] = set()
    worse = 0
    for c in _C_GRID / n:
        lasso = LogisticRegression(
            C=c, l1_ratio=1.0, solver="liblinear", intercept_scaling=10, tol=1e-3
        )
        lasso.fit(x, y)
        support = tuple(int(j) for j in np.flatnonzero(np.abs(lasso.coef_[0]) > 1e-6))
        if support in tried:
            continue
        tried.add(support)
        intercept, coef, loglik = _refit(x[:, list(support)], y)
        k = len(support)
        ebic = -2 * loglik + k * math.log(n) + 2 * _EBIC_GAMMA * _log_choose(p, k)
        if best is None or ebic < best[0]:
            weights = np.zeros(p)
            weights[list(support)] = coef
            best, worse = (ebic, intercept, weights), 0
        else:
            worse += 1
            if worse == 2:
                break
    assert best is not None
    return best[1], best[2]


def _refit(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, float]:
    if x.shape[1] == 0:
        rate = float(np.clip(y.mean(), 1e-9, 1 - 1e-9))
        loglik = float(np.sum(y * math.log(rate) + (1 - y) * math.log(1 - rate)))
        return math.log(rate / (1 - rate)), np.zeros(0), loglik
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(C=np.inf, max_iter=500).fit(x, y)
    proba = np.clip(model.predict_proba(x)[:, 1], 1e-12, 1 - 1e-12)
    loglik = float(np.sum(y * np.log(proba) + (1 - y) * np.log(1 - proba)))
    return float(model.intercept_[0]), model.coef_[0], loglik


def _log_choose(p: int, k: int) -> float:
    return math.lgamma(p + 1) - math.lgamma(k + 1) - math.lgamma(p - k + 1)


def _kept_points(data: list[Row], columns: list[Column], rule_points: list[int]) -> np.ndarray:
    """Each lead's points from the rules the fit could not judge (too few leads on one
    side): those keep their points."""
    fitted = {c.rule for c in columns if c.kind == "rule"}
    kept = {i: p for i, p in enumerate(rule_points) if i not in fitted}
    return np.fromiter((sum(kept.get(i, 0) for i in r.rules) for r in data), np.float64, len(data))


def _threshold(result: Fit, x: np.ndarray, y: np.ndarray, kept: np.ndarray, params: Params) -> None:
    """The lowest score, in steps of 5, at which the fitted model expects sales to accept at
    least `sales_min_acceptance` of leads; and how the training leads fall around it.

    Rules kept as they were add their points to every lead they match; one that matches
    nearly every lead (its effect is in the intercept) moves the threshold by its points."""
    target = params.sales_min_acceptance
    raw = SCALE * (math.log(target / (1 - target)) - result.intercept) + float(np.median(kept))
    threshold = to_points(raw / SCALE)
    if threshold < raw:
        threshold += 5
    points = np.array([c.points for c in result.columns], dtype=np.float64)
    scores = (x @ points if points.size else np.zeros(len(y))) + kept
    above = scores >= threshold
    result.sales_min_score = threshold
    result.above = (int(above.sum()), int(y[above].sum()))
    result.below = (int((~above).sum()), int(y[~above].sum()))
