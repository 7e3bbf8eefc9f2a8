"""The scorer's configuration from settings: weights over the product defaults."""

from __future__ import annotations

import pytest

from prefloop.errors import SettingsError
from prefloop.settings import load_settings
from prefloop.streams.config import ScoringConfig, ScoringWeights
from prefloop.streams.topology import scoring_config

VARIABLE = "PREFLOOP_STREAMS_SCORING_WEIGHTS"


def config_of(weights: str) -> ScoringConfig:
    return scoring_config(load_settings(environ={}, streams_scoring_weights=weights))


def test_default_weights_are_the_products():
    assert scoring_config(load_settings(environ={})).weights == ScoringWeights()
    assert config_of("{}").weights == ScoringWeights()


def test_weights_override_the_defaults():
    assert config_of('{"copied": 3}').weights == ScoringWeights(copied=3.0)
    weights = config_of('{"reported": -10.5, "edited": 0.5, "continued": 0}').weights
    assert weights == ScoringWeights(reported=-10.5, edited=0.5, continued=0.0)
    assert isinstance(weights.continued, float)


def test_the_other_settings_carry_over():
    settings = load_settings(
        environ={},
        streams_scoring_weights='{"copied": 3}',
        streams_inactivity_s=90.0,
        streams_unknown_grace_s=12.0,
    )
    config = scoring_config(settings)
    assert config.inactivity_timeout_s == 90.0 and config.unknown_grace_s == 12.0
    assert config.weights.copied == 3.0


def test_unknown_weight_names_raise():
    with pytest.raises(SettingsError, match=VARIABLE) as info:
        config_of('{"copied": 3, "coppied": 1, "liked": 2}')
    message = str(info.value)
    assert "['coppied', 'liked']" in message
    assert "copied" in message and "long_session" in message  # the known names


@pytest.mark.parametrize("text", ["copied=3", "{copied: 3}", '{"copied": 3', ""])
def test_non_json_raises(text: str):
    with pytest.raises(SettingsError, match=VARIABLE) as info:
        config_of(text)
    assert "not JSON" in str(info.value)


@pytest.mark.parametrize("text", ["[1, 2]", "3", "null", '"copied"'])
def test_json_that_is_not_an_object_raises(text: str):
    with pytest.raises(SettingsError, match=VARIABLE):
        config_of(text)


@pytest.mark.parametrize(
    "text",
    [
        '{"copied": "a lot"}',
        '{"copied": null}',
        '{"copied": [3]}',
        '{"copied": {"points": 3}}',
        '{"copied": NaN}',
        '{"reported": -Infinity}',
    ],
)
def test_non_number_values_raise(text: str):
    with pytest.raises(SettingsError, match=VARIABLE) as info:
        config_of(text)
    assert "must be a number" in str(info.value)


@pytest.mark.parametrize("text", ['{"copied": "3"}', '{"copied": true}'])
def test_strings_and_booleans_are_not_numbers(text: str):
    with pytest.raises(SettingsError, match=VARIABLE):
        config_of(text)
