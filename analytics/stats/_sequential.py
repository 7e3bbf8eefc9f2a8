"""Sequential testing: the always-valid mixture SPRT, which may be looked at after every batch."""

from __future__ import annotations

import math
from dataclasses import dataclass

from prefloop.analytics.exceptions import StatsError
from prefloop.analytics.stats._moments import Moments
from prefloop.analytics.stats._two_sample import _mean_var
from prefloop.analytics.stats._validation import _finite, _probability

__all__ = ["SequentialResult", "always_valid_p", "msprt", "msprt_from_estimate"]


@dataclass(frozen=True)
class SequentialResult:
    """One look of the mixture SPRT: the estimate, its variance and the always-valid p.

    ``ci_low``/``ci_high`` bound the always-valid confidence sequence at ``level``.
    """

    estimate: float
    variance: float
    tau2: float
    log_likelihood_ratio: float
    p_value: float
    ci_low: float
    ci_high: float
    level: float


def msprt_from_estimate(
    estimate: float, variance: float, tau2: float, level: float = 0.95
) -> SequentialResult:
    """The normal-mixture SPRT of H0: effect = 0 for an asymptotically normal estimate.

    With θ̂ the estimate and V its variance, the mixture likelihood ratio is
    Λ = sqrt(V/(V+τ²)) · exp(τ² θ̂² / (2 V (V+τ²))) and the always-valid p-value is
    min(1, 1/Λ). The interval is the confidence sequence {θ: Λ(θ̂ − θ) < 1/α},
    α = 1 − level, which excludes 0 exactly when p < α. Works for any estimate
    (e.g. ``two_proportion_z(...).estimate`` with ``se**2``, or ``ratio_delta``).
    """
    estimate = _finite("estimate", estimate)
    variance = _finite("variance", variance)
    tau2 = _finite("tau2", tau2)
    level = _probability("level", level)
    if variance <= 0:
        raise StatsError(f"variance={variance} is not valid: the estimate's variance must be > 0")
    if tau2 <= 0:
        raise StatsError(
            f"tau2={tau2} is not valid: give the mixture variance > 0, e.g. the squared "
            "effect size you expect"
        )
    spread = variance + tau2
    log_lr = 0.5 * math.log(variance / spread) + tau2 * estimate**2 / (2 * variance * spread)
    half = math.sqrt(
        variance * spread / tau2 * (math.log(spread / variance) - 2 * math.log(1 - level))
    )
    return SequentialResult(
        estimate=estimate,
        variance=variance,
        tau2=tau2,
        log_likelihood_ratio=log_lr,
        p_value=math.exp(min(0.0, -log_lr)),
        ci_low=estimate - half,
        ci_high=estimate + half,
        level=level,
    )


def msprt(a: Moments, b: Moments, tau2: float, level: float = 0.95) -> SequentialResult:
    """The always-valid mixture SPRT of mean_B − mean_A (Johari et al., Optimizely's engine).

    Unlike ``welch_t`` it may be recomputed after every batch and stopped as soon as
    p < α without inflating false positives, provided the caller keeps the running
    minimum of the p-values over the looks (``always_valid_p``).

    ``tau2`` is the variance of the normal prior over the true difference that the
    likelihood ratio averages over. Fix it before the experiment, never from its data:
    the usual choice is the square of the effect size you expect or care about
    (``tau2 = mde**2``). A smaller τ² detects small effects sooner and large ones
    later; a larger τ² the reverse.
    """
    mean_a, var_a = _mean_var(a, "A")
    mean_b, var_b = _mean_var(b, "B")
    variance = var_a / a.n + var_b / b.n
    if variance == 0:
        raise StatsError(
            "both arms have zero variance (every value equal within each arm): "
            "the likelihood ratio is undefined; compare the two means directly"
        )
    return msprt_from_estimate(mean_b - mean_a, variance, tau2, level)


def always_valid_p(previous_p: float | None, new: SequentialResult) -> float:
    """The always-valid p-value after a new look: the minimum over all looks so far.

    ``previous_p`` is what this function returned at the previous look (None at the
    first). Keep the returned value; stop when it falls below α.
    """
    if previous_p is None:
        return new.p_value
    previous = _finite("previous_p", previous_p)
    if not 0.0 <= previous <= 1.0:
        raise StatsError(f"previous_p={previous} is not a p-value: give a number in [0, 1]")
    return min(previous, new.p_value)
