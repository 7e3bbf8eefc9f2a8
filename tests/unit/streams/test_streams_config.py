"""Config validation: a bad value names the parameter, the value and the fix."""

from __future__ import annotations

import pytest

from prefloop.errors import PrefloopError
from prefloop.streams.config import PairConfig, SamplingConfig, ScoringConfig, ScoringWeights
from prefloop.streams.exceptions import StreamsConfigError


def test_defaults_are_the_product_numbers():
    w = ScoringWeights()
    assert (w.continued, w.long_session, w.copied, w.regenerated, w.short_session, w.reported) == (
        2.0,
        1.0,
        2.0,
        -2.0,
        -1.0,
        -5.0,
    )
    scoring = ScoringConfig()
    assert (scoring.long_session_s, scoring.short_session_s) == (300.0, 30.0)
    assert PairConfig().implicit_margin == 3.0
    s = SamplingConfig()
    assert (s.new_topic_points, s.engaged_points, s.uncertain_points, s.edge_case_points) == (
        3.0,
        2.0,
        2.0,
        3.0,
    )
    assert (s.uncertainty_threshold, s.top_count, s.uniform_count) == (0.5, 700, 300)
    assert SamplingConfig(count=30).top_count == 21  # not 20: 30 * 0.7 is 20.999... in floats


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: ScoringConfig(short_session_s=400),
            r"ScoringConfig\.long_session_s=300\.0 .*>= short_session_s",
        ),
        (
            lambda: ScoringConfig(inactivity_timeout_s=0),
            r"ScoringConfig\.inactivity_timeout_s=0 is not valid: give a number of seconds > 0",
        ),
        (
            lambda: ScoringConfig(max_pending=0),
            r"ScoringConfig\.max_pending=0 is not valid: give a count >= 1",
        ),
        (
            lambda: ScoringWeights(copied=float("nan")),
            r"ScoringWeights\.copied=nan is not valid: give a finite number",
        ),
        (
            lambda: PairConfig(implicit_margin=0),
            r"PairConfig\.implicit_margin=0 is not valid: give a number > 0",
        ),
        (
            lambda: PairConfig(annotation_weight=1.5),
            r"PairConfig\.annotation_weight=1\.5 .*\(0, 1\]",
        ),
        (lambda: SamplingConfig(top_fraction=1.2), r"SamplingConfig\.top_fraction=1\.2 .*\[0, 1\]"),
        (
            lambda: SamplingConfig(bands=5),
            r"SamplingConfig\.bands=5 is not valid: give a divisor of num_perm \(64\)",
        ),
        (lambda: SamplingConfig(refusal_phrases=("",)), r"SamplingConfig\.refusal_phrases=\('',\)"),
    ],
)
def test_bad_values_name_parameter_value_and_fix(build, message):
    with pytest.raises(StreamsConfigError, match=message) as caught:
        build()
    assert isinstance(caught.value, PrefloopError) and isinstance(caught.value, ValueError)
