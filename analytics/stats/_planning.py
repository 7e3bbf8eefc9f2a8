"""Planning: the units an experiment needs to detect a given effect."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import norm

from prefloop.analytics.exceptions import StatsError
from prefloop.analytics.stats._validation import _finite, _probability

__all__ = ["SampleSize", "sample_size", "sample_size_proportion"]


@dataclass(frozen=True)
class SampleSize:
    """The units needed in each arm."""

    n_a: int
    n_b: int

    @property
    def total(self) -> int:
        return self.n_a + self.n_b


def _effect(baseline: float, mde: float, relative: bool) -> float:
    """The difference to detect, signed: mde, or mde × baseline when relative."""
    effect = _finite("mde", mde) * (baseline if relative else 1.0)
    if effect == 0:
        raise StatsError(
            "the minimum detectable effect is 0: give an mde != 0 (and a baseline != 0)"
        )
    return effect


def _quantiles(alpha: float, power: float, split: float) -> tuple[float, float]:
    """(z_{1−α/2}, z_power), the planning parameters checked."""
    alpha = _probability("alpha", alpha)
    power = _probability("power", power)
    _probability("split", split)
    return float(norm.ppf(1 - alpha / 2)), float(norm.ppf(power))


def _per_arm(total: float, split: float) -> SampleSize:
    return SampleSize(n_a=math.ceil((1 - split) * total), n_b=math.ceil(split * total))


def sample_size(
    baseline_mean: float,
    sd: float,
    mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    split: float = 0.5,
    *,
    relative: bool = False,
) -> SampleSize:
    """Units per arm for a two-sided two-sample test of means (normal approximation).

    ``mde`` is the smallest difference to detect, absolute, or relative to
    ``baseline_mean`` with ``relative=True`` (0.02 = a 2% lift; ``baseline_mean`` is
    only used then). ``sd`` is the per-unit standard deviation, assumed equal in both
    arms; ``split`` is the share of units in arm B. The total N solves
    (z_{1−α/2} + z_power)² sd² (1/split + 1/(1−split)) = N mde², i.e.
    2 (z_{1−α/2} + z_power)² sd² / mde² per arm at an even split.
    """
    baseline_mean = _finite("baseline_mean", baseline_mean)
    sd = _finite("sd", sd)
    if sd <= 0:
        raise StatsError(f"sd={sd} is not valid: give the per-unit standard deviation > 0")
    effect = _effect(baseline_mean, mde, relative)
    z_alpha, z_power = _quantiles(alpha, power, split)
    allocation = 1 / split + 1 / (1 - split)
    return _per_arm((z_alpha + z_power) ** 2 * sd**2 * allocation / effect**2, split)


def sample_size_proportion(
    p: float,
    mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    split: float = 0.5,
    *,
    relative: bool = False,
) -> SampleSize:
    """Units per arm for ``two_proportion_z`` to detect a rate p + mde against a rate p.

    ``mde`` is absolute (0.01 = one percentage point) or relative to ``p`` with
    ``relative=True``. Uses the pooled variance under H0 and the unpooled one under
    H1, as the test does: N = (z_{1−α/2} sqrt(p̄(1−p̄) k) + z_power
    sqrt(p(1−p)/(1−s) + p₂(1−p₂)/s))² / mde², with k = 1/s + 1/(1−s), s = split and
    p̄ = (1−s) p + s p₂.
    """
    p = _probability("p", p)
    effect = _effect(p, mde, relative)
    p_b = p + effect
    if not 0.0 < p_b < 1.0:
        raise StatsError(f"p + mde = {p_b:g} is not a rate: give an mde that keeps it in (0, 1)")
    z_alpha, z_power = _quantiles(alpha, power, split)
    pooled = (1 - split) * p + split * p_b
    null_sd = math.sqrt(pooled * (1 - pooled) * (1 / split + 1 / (1 - split)))
    alt_sd = math.sqrt(p * (1 - p) / (1 - split) + p_b * (1 - p_b) / split)
    return _per_arm((z_alpha * null_sd + z_power * alt_sd) ** 2 / effect**2, split)
