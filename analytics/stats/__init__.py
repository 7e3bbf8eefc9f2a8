"""A/B significance statistics computed from sufficient statistics.

Every function here reads only what one SQL aggregation per arm returns: a count,
sums and sums of squares (and the cross-product for two-variable metrics), never
the raw rows. ClickHouse computes ``count()``, ``sum(v)``, ``sum(v * v)`` ...;
this module turns them into tests with scipy's distributions.

The family, arm A the control and arm B the candidate, every difference B − A:

=========================  ==============================================================
``welch_t``                difference of means, unequal variances: numeric metrics
``two_proportion_z``       difference of rates, one independent 0/1 outcome per unit
``ratio_delta``            difference of ratios Σx / Σy with the user as the unit
                           (e.g. regenerates per interaction): delta method
``relative_lift``          mean_B / mean_A − 1 with a delta-method interval
``ratio_lift``             the same for a ratio metric clustered by user
``guardrail_one_sided``    one-sided Welch test that the candidate is worse
``cuped``                  variance reduction with a pre-period covariate, for welch_t
``msprt``                  always-valid mixture SPRT: may be looked at after every batch
``srm_check``              sample ratio mismatch of the exposure counts
``holm``                   Holm–Bonferroni over several metrics
``sample_size``            units needed for a difference of means (and of proportions)
=========================  ==============================================================

Intervals are two-sided at ``level`` unless a docstring says otherwise. Invalid
inputs and undefined statistics raise :class:`StatsError` (a ``ValueError``, defined
in :mod:`prefloop.analytics.exceptions`) whose message says what was wrong and how
to fix it.

Variances come from sums as (Σv² − (Σv)²/n) / (n − 1). In float64 this loses
digits when the mean is large compared with the spread (|mean| / sd beyond about
1e4): aggregate a centred metric (v − a rough mean) in SQL in that case.
"""

from __future__ import annotations

from prefloop.analytics.exceptions import StatsError
from prefloop.analytics.stats._cuped import CupedResult, cuped
from prefloop.analytics.stats._moments import JointMoments, Moments, Proportion
from prefloop.analytics.stats._multiple import HolmDecision, holm
from prefloop.analytics.stats._planning import SampleSize, sample_size, sample_size_proportion
from prefloop.analytics.stats._sequential import (
    SequentialResult,
    always_valid_p,
    msprt,
    msprt_from_estimate,
)
from prefloop.analytics.stats._srm import SrmResult, srm_check
from prefloop.analytics.stats._two_sample import (
    TestResult,
    guardrail_one_sided,
    ratio_delta,
    ratio_estimate,
    ratio_lift,
    relative_lift,
    two_proportion_z,
    welch_t,
)

__all__ = [
    "CupedResult",
    "HolmDecision",
    "JointMoments",
    "Moments",
    "Proportion",
    "SampleSize",
    "SequentialResult",
    "SrmResult",
    "StatsError",
    "TestResult",
    "always_valid_p",
    "cuped",
    "guardrail_one_sided",
    "holm",
    "msprt",
    "msprt_from_estimate",
    "ratio_delta",
    "ratio_estimate",
    "ratio_lift",
    "relative_lift",
    "sample_size",
    "sample_size_proportion",
    "srm_check",
    "two_proportion_z",
    "welch_t",
]
