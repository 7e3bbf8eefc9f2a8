"""Multiple comparisons: Holm–Bonferroni over the metrics of a verdict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prefloop.analytics.exceptions import StatsError
from prefloop.analytics.stats._validation import _finite, _probability

__all__ = ["HolmDecision", "holm"]


@dataclass(frozen=True)
class HolmDecision:
    """One hypothesis under Holm–Bonferroni: its p-value, adjusted p-value and decision."""

    p_value: float
    adjusted_p: float
    reject: bool


def holm(pvalues: Mapping[str, float], alpha: float = 0.05) -> dict[str, HolmDecision]:
    """Holm–Bonferroni step-down over several hypotheses (e.g. the metrics of a verdict).

    Controls the family-wise error rate at ``alpha`` under any dependence and is
    uniformly more powerful than Bonferroni. With the m p-values sorted ascending, the
    i-th (from 0) adjusted p-value is max over j <= i of min(1, (m − j) p_(j)), so the
    adjusted p-values are monotone in the raw ones; a hypothesis is rejected when its
    adjusted p-value is <= alpha. Returns the decisions in the input's order.
    """
    alpha = _probability("alpha", alpha)
    for name, p in pvalues.items():
        if not 0.0 <= _finite(f"the p-value of {name!r}", p) <= 1.0:
            raise StatsError(f"the p-value of {name!r} is {p}: give a number in [0, 1]")
    ranked = sorted(pvalues, key=lambda name: pvalues[name])
    decisions: dict[str, HolmDecision] = {}
    adjusted = 0.0
    for rank, name in enumerate(ranked):
        adjusted = max(adjusted, min(1.0, (len(ranked) - rank) * pvalues[name]))
        decisions[name] = HolmDecision(pvalues[name], adjusted, adjusted <= alpha)
    return {name: decisions[name] for name in pvalues}
