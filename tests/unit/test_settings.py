from pathlib import Path

import pytest

from prefloop.errors import SettingsError
from prefloop.settings import Settings, describe_settings, load_settings, settings_env


def test_defaults_describe_a_local_single_node_stack() -> None:
    settings = load_settings({})
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.replication_factor == 1
    assert settings.topics.interactions == "prefloop.interactions"
    assert len(settings.topics.all()) == 9
    assert settings.topics.for_record("preference_pair") == "prefloop.preferences"
    assert settings.home.is_absolute()


def test_values_come_from_prefixed_variables() -> None:
    settings = load_settings(
        {"PREFLOOP_KAFKA_NODES": "3", "PREFLOOP_KAFKA_PORT": "30000", "PREFLOOP_TOPIC_PREFIX": "x"}
    )
    assert settings.bootstrap_servers == "127.0.0.1:30000,127.0.0.1:30001,127.0.0.1:30002"
    assert settings.replication_factor == 3
    assert settings.topics.dlq == "x.dlq"


def test_external_kafka_wins_over_the_local_one() -> None:
    settings = load_settings({"PREFLOOP_KAFKA_BOOTSTRAP": "kafka-0:9092,kafka-1:9092"})
    assert settings.bootstrap_servers == "kafka-0:9092,kafka-1:9092"


def test_ray_address_is_read_from_the_standard_variable_too() -> None:
    assert load_settings({"RAY_ADDRESS": "ray-head:6379"}).ray_address == "ray-head:6379"
    both = {"RAY_ADDRESS": "a:1", "PREFLOOP_RAY_ADDRESS": "b:2"}
    assert load_settings(both).ray_address == "b:2"


def test_an_unknown_variable_is_named_with_a_suggestion() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"PREFLOOP_KAFKA_PROT": "9092"})
    assert "PREFLOOP_KAFKA_PROT is not a prefloop setting" in str(info.value)
    assert "did you mean PREFLOOP_KAFKA_PORT" in str(info.value)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PREFLOOP_KAFKA_PORT", "ninety", "client port"),
        ("PREFLOOP_KAFKA_PORT", "70000", "client port"),
        ("PREFLOOP_KAFKA_NODES", "0", "nodes of the local KRaft cluster"),
        ("PREFLOOP_KAFKA_HEAP", "lots", "512m or 1g"),
        ("PREFLOOP_CLICKHOUSE_URL", "ftp://x", "http(s)://host:port"),
        ("PREFLOOP_KAFKA_SECURITY_PROTOCOL", "TLS", "security.protocol"),
        ("PREFLOOP_RAY_DASHBOARD", "maybe", "true/false"),
    ],
)
def test_a_malformed_value_names_the_variable_and_its_form(
    variable: str, value: str, expected: str
) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({variable: value})
    message = str(info.value)
    assert message.startswith(f"{variable}={value!r} is not valid")
    assert expected in message


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(ValueError):
        settings.kafka_port = 1  # type: ignore[misc]


def test_secrets_are_masked_in_the_description_and_passed_to_clients() -> None:
    settings = load_settings(
        {
            "PREFLOOP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "PREFLOOP_KAFKA_SASL_MECHANISM": "PLAIN",
            "PREFLOOP_KAFKA_SASL_USERNAME": "svc",
            "PREFLOOP_KAFKA_SASL_PASSWORD": "hunter2",
        }
    )
    shown = {name: value for name, value, _ in describe_settings(settings)}
    assert shown["PREFLOOP_KAFKA_SASL_PASSWORD"] == "**********"
    assert "hunter2" not in repr(settings)
    config = settings.kafka_client_config()
    assert config["sasl.password"] == "hunter2"
    assert config["security.protocol"] == "SASL_SSL"


def test_every_setting_is_documented() -> None:
    undocumented = [name for name, field in Settings.model_fields.items() if not field.description]
    assert undocumented == []


def test_settings_survive_the_trip_to_a_child_process(tmp_path: Path) -> None:
    settings = load_settings(
        {"PREFLOOP_CLICKHOUSE_PASSWORD": "s3cret", "PREFLOOP_RAY_DASHBOARD": "true"},
        home=tmp_path,
    )
    assert load_settings(settings_env(settings)) == settings


def test_overrides_are_validated() -> None:
    with pytest.raises(ValueError):
        load_settings({}).with_overrides(kafka_nodes=0)
