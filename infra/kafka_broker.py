"""The local Kafka cluster: Apache Kafka's own broker in KRaft mode.

Each node is a combined broker and controller (``java -cp 'lib/*' kafka.Kafka
server.properties``) bound to 127.0.0.1. The jars come from Maven Central
through ``infra/kafka/pom.xml``, resolved once into ``settings.kafka_libs``.
Pid files, logs and data live under ``settings.home``.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from prefloop import kafka
from prefloop.errors import MissingToolError, StackError
from prefloop.process import ManagedProcess, require_free_port, stop_all
from prefloop.settings import REPO_ROOT, Settings

POM = REPO_ROOT / "infra" / "kafka" / "pom.xml"
START_TIMEOUT_S = 120.0

LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
"""


def java_binary() -> str:
    java = shutil.which("java")
    if java is None:
        raise MissingToolError(
            "Java is not installed: Kafka's broker needs Java 17 or newer "
            "(on Debian: apt-get install openjdk-17-jre-headless)"
        )
    return java


def kafka_version(libs: Path) -> str | None:
    for jar in sorted(libs.glob("kafka_2.13-*.jar")):
        match = re.fullmatch(r"kafka_2\.13-(.+)\.jar", jar.name)
        if match:
            return match.group(1)
    return None


def resolve_jars(settings: Settings) -> Path:
    """Kafka's jars, resolved from Maven Central on first use and cached."""
    libs = settings.kafka_libs
    if kafka_version(libs) is not None:
        return libs
    if libs != POM.parent / "lib":
        raise StackError(
            f"PREFLOOP_KAFKA_LIBS={libs} holds no kafka_2.13-*.jar: point it at a folder of "
            f"Kafka's jars or unset it to resolve them with {POM}"
        )
    if shutil.which("mvn") is None:
        raise MissingToolError(
            "Maven is not installed: it resolves Kafka's jars from Maven Central once "
            "(on Debian: apt-get install maven)"
        )
    print("resolving Kafka's jars from Maven Central (once) ...", flush=True)
    done = subprocess.run(
        ["mvn", "-q", "-f", str(POM), "dependency:copy-dependencies"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or kafka_version(libs) is None:
        raise StackError(f"Maven could not resolve Kafka's jars:\n{done.stdout[-2000:]}")
    return libs


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid``, never one that starts with '-': a command
    line would read it as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class KafkaNode:
    settings: Settings
    node_id: int  # 1-based

    @property
    def port(self) -> int:
        return self.settings.kafka_port + self.node_id - 1

    @property
    def controller_port(self) -> int:
        return self.settings.kafka_controller_port + self.node_id - 1

    @property
    def process(self) -> ManagedProcess:
        home = self.settings.home
        return ManagedProcess(f"kafka-{self.node_id}", home / "run", home / "logs")

    @property
    def config_dir(self) -> Path:
        return self.settings.home / "kafka"

    @property
    def data_dir(self) -> Path:
        return self.settings.home / "data" / f"kafka-{self.node_id}"

    @property
    def properties_file(self) -> Path:
        return self.config_dir / f"server-{self.node_id}.properties"

    def properties(self) -> str:
        s = self.settings
        nodes = s.kafka_nodes
        replication = min(3, nodes)
        min_isr = 2 if replication > 1 else 1
        voters = ",".join(
            f"{i}@127.0.0.1:{s.kafka_controller_port + i - 1}" for i in range(1, nodes + 1)
        )
        lines = {
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": self.data_dir,
            "num.partitions": s.topic_partitions,
            "default.replication.factor": replication,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replication,
            "transaction.state.log.replication.factor": replication,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replication,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": 0,
            "auto.create.topics.enable": "false",
            "log.retention.hours": s.topic_retention_hours,
            "unclean.leader.election.enable": "false",
        }
        return "".join(f"{key}={value}\n" for key, value in lines.items())

    def java_command(self, main: str, *args: str) -> list[str]:
        return [
            java_binary(),
            f"-Xmx{self.settings.kafka_heap}",
            f"-Xms{self.settings.kafka_heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.config_dir / 'log4j2.properties'}",
            "-cp",
            str(self.settings.kafka_libs / "*"),
            main,
            *args,
        ]

    def format_storage(self, cluster_id: str) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        done = subprocess.run(
            self.java_command(
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                f"--cluster-id={cluster_id}",
                f"--config={self.properties_file}",
            ),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise StackError(
                f"formatting KRaft storage for kafka-{self.node_id} failed:\n"
                f"{(done.stdout + done.stderr)[-2000:]}"
            )

    def start(self) -> int:
        require_free_port(f"kafka-{self.node_id}", self.port, "PREFLOOP_KAFKA_PORT")
        require_free_port(
            f"kafka-{self.node_id}'s controller",
            self.controller_port,
            "PREFLOOP_KAFKA_CONTROLLER_PORT",
        )
        return self.process.start(
            self.java_command("kafka.Kafka", str(self.properties_file)),
            extra={"port": self.port, "controller_port": self.controller_port},
        )


class KafkaCluster:
    """The local cluster of ``settings.kafka_nodes`` KRaft nodes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.nodes = [KafkaNode(settings, i) for i in range(1, settings.kafka_nodes + 1)]

    def running_nodes(self) -> list[KafkaNode]:
        return [node for node in self.nodes if node.process.is_running()]

    def start(self) -> None:
        resolve_jars(self.settings)
        java_binary()
        config_dir = self.nodes[0].config_dir
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / "log4j2.properties").write_text(LOG4J2)
        id_file = config_dir / "cluster.id"
        if not id_file.exists():
            id_file.write_text(new_cluster_id())
        cluster_id = id_file.read_text().strip()
        for node in self.nodes:
            node.properties_file.write_text(node.properties())
            node.format_storage(cluster_id)
        started = []
        try:
            for node in self.nodes:
                if not node.process.is_running():
                    node.start()
                    started.append(node)
            self.wait_ready()
        except BaseException:
            for node in started:
                node.process.stop()
            raise

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        want = len(self.nodes)
        self.nodes[0].process.wait_until(
            lambda: kafka.broker_count(self.settings, timeout=1.0) >= want,
            timeout=timeout,
            what=f"answering metadata requests with {want} broker(s)",
            interval=0.5,
        )

    def stop(self) -> list[str]:
        return stop_all([node.process for node in self.nodes])
