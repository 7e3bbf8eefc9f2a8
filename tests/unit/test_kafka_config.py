from pathlib import Path

import pytest

from prefloop.errors import MissingToolError, StackError
from prefloop.infra import kafka_broker
from prefloop.infra.kafka_broker import KafkaCluster, new_cluster_id, resolve_jars
from prefloop.settings import load_settings


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_a_single_node_is_a_combined_broker_and_controller(tmp_path: Path) -> None:
    settings = load_settings({}, home=tmp_path, kafka_port=31000, kafka_controller_port=32000)
    (node,) = KafkaCluster(settings).nodes
    props = properties(node.properties())
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:31000,CONTROLLER://127.0.0.1:32000"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:32000"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["log.dirs"].startswith(str(tmp_path))


def test_three_nodes_replicate_three_times_with_two_in_sync(tmp_path: Path) -> None:
    settings = load_settings(
        {}, home=tmp_path, kafka_nodes=3, kafka_port=31000, kafka_controller_port=32000
    )
    nodes = KafkaCluster(settings).nodes
    assert [n.port for n in nodes] == [31000, 31001, 31002]
    props = properties(nodes[2].properties())
    assert props["node.id"] == "3"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:32000,2@127.0.0.1:32001,3@127.0.0.1:32002"
    )
    assert props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    assert props["unclean.leader.election.enable"] == "false"
    assert settings.replication_factor == 3


def test_cluster_ids_are_kafka_uuids_that_no_command_line_takes_for_an_option() -> None:
    ids = {new_cluster_id() for _ in range(2000)}  # about 1 in 64 raw ids starts with '-'
    assert len(ids) == 2000
    assert all(len(i) == 22 and "=" not in i and not i.startswith("-") for i in ids)


def test_a_folder_without_jars_is_named(tmp_path: Path) -> None:
    settings = load_settings({}, kafka_libs=tmp_path / "lib")
    with pytest.raises(StackError, match="holds no kafka_2.13"):
        resolve_jars(settings)


def test_missing_maven_is_one_clear_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka_broker, "POM", tmp_path / "pom.xml")
    monkeypatch.setenv("PATH", str(tmp_path))  # neither mvn nor java here
    settings = load_settings({}, kafka_libs=tmp_path / "lib")
    with pytest.raises(MissingToolError, match="Maven is not installed"):
        resolve_jars(settings)
    with pytest.raises(MissingToolError, match="Java is not installed"):
        kafka_broker.java_binary()
