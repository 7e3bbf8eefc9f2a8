"""The local stack as one thing: Kafka, the embedded ClickHouse owner (with the sink),
Ray, the stream worker, the router, the verdict loop, the trainer and the console.

``up`` starts what is not running yet (and what the settings do not point
elsewhere), ``down`` stops every process that ``up`` recorded under
``$PREFLOOP_HOME/run`` and nothing else, ``status`` reports each component.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from prefloop import kafka
from prefloop.analytics.schema import prepare
from prefloop.clickhouse.client import connect, owner_process
from prefloop.errors import PrefloopError, StackError
from prefloop.infra.kafka_broker import KafkaCluster, kafka_version
from prefloop.infra.ray_head import STOP_TIMEOUT_S as RAY_STOP_TIMEOUT_S
from prefloop.infra.ray_head import ray_process, ray_version, start_head
from prefloop.infra.stack_file import STACK_FILE
from prefloop.model_registry import ModelRegistry
from prefloop.process import ManagedProcess, port_answers, require_free_port, stop_all
from prefloop.ray_client import head_address
from prefloop.settings import Settings, child_environment

OWNER_START_TIMEOUT_S = 60.0
WORKER_START_TIMEOUT_S = 120.0
CONSOLE_START_TIMEOUT_S = 60.0
STOP_TIMEOUTS_S = {"ray": RAY_STOP_TIMEOUT_S}


@dataclass
class ComponentStatus:
    name: str
    state: str  # up, down, external
    pid: int | None = None
    port: int | None = None
    version: str | None = None
    detail: str = ""
    topics: dict[str, int | None] = field(default_factory=dict)


class LocalStack:
    def __init__(self, settings: Settings, say: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.say = say
        self.kafka = KafkaCluster(settings)
        self.clickhouse = owner_process(settings)
        self.ray = ray_process(settings)
        self.worker = ManagedProcess("worker", settings.home / "run", settings.home / "logs")
        self.sink = ManagedProcess("sink", settings.home / "run", settings.home / "logs")
        self.autopilot = ManagedProcess("autopilot", settings.home / "run", settings.home / "logs")
        self.trainer = ManagedProcess("trainer", settings.home / "run", settings.home / "logs")
        self.console = ManagedProcess("console", settings.home / "run", settings.home / "logs")

    # -- up ------------------------------------------------------------------
    def up(self) -> list[str]:
        """Start what is not running; returns the components started by this call.

        The router is no process of ours (it is a Ray Serve application on the head),
        so it is named here but not stopped with the rest if a later step fails.
        """
        started: list[ManagedProcess] = []
        router = False
        try:
            self._up_kafka(started)
            self._up_clickhouse(started)
            self._up_ray(started)
            self._up_worker(started)
            router = self._up_router()
            self._up_autopilot(started)
            self._up_trainer(started)
            self._up_console(started)
        except BaseException:
            for process in reversed(started):
                process.stop(STOP_TIMEOUTS_S.get(process.name, 30.0))
            raise
        if started:
            (self.settings.home / "run" / STACK_FILE).write_text(
                json.dumps({"kafka_nodes": self.settings.kafka_nodes})
            )
        names = [process.name for process in started]
        if router:
            # started after the worker, before the verdict loop and the trainer
            names.insert(names.index("worker") + 1 if "worker" in names else len(names), "router")
        return names

    def _up_kafka(self, started: list[ManagedProcess]) -> None:
        s = self.settings
        if s.kafka_bootstrap:
            self.say(f"kafka: using the cluster at {s.kafka_bootstrap}")
        elif len(self.kafka.running_nodes()) == len(self.kafka.nodes):
            self.say(f"kafka: already up on {s.bootstrap_servers}")
        else:
            before = {node.process.name for node in self.kafka.running_nodes()}
            self.say(f"kafka: starting {s.kafka_nodes} KRaft node(s) on {s.bootstrap_servers} ...")
            self.kafka.start()
            started += [n.process for n in self.kafka.nodes if n.process.name not in before]
        created = kafka.ensure_topics(s)
        if created:
            self.say(
                f"kafka: created {len(created)} topics ({s.topic_partitions} partitions, "
                f"replication {s.replication_factor})"
            )

    def _up_clickhouse(self, started: list[ManagedProcess]) -> None:
        s = self.settings
        if s.clickhouse_url:
            client = connect(s)
            applied = prepare(client, s)
            self.say(
                f"clickhouse: using the server at {s.clickhouse_url}; "
                f"{len(applied)} migration(s) applied"
            )
            return
        if self.clickhouse.is_running():
            self.say(f"clickhouse: already up on 127.0.0.1:{s.clickhouse_port}")
            return
        require_free_port(
            "the embedded ClickHouse owner", s.clickhouse_port, "PREFLOOP_CLICKHOUSE_PORT"
        )
        self.say(
            f"clickhouse: starting the embedded store's owner on 127.0.0.1:{s.clickhouse_port} ..."
        )
        self.clickhouse.start(
            [sys.executable, "-m", "prefloop.analytics.owner"],
            env=child_environment(s),
            extra={"port": s.clickhouse_port},
        )
        started.append(self.clickhouse)
        self.clickhouse.wait_until(
            lambda: _pings(s.clickhouse_port), timeout=OWNER_START_TIMEOUT_S, what="answering /ping"
        )

    def _up_ray(self, started: list[ManagedProcess]) -> None:
        s = self.settings
        if s.ray_address:
            self.say(f"ray: using the cluster at {s.ray_address}")
        elif self.ray.is_running():
            self.say(f"ray: already up on {head_address(s)}")
        else:
            self.say(f"ray: starting a head on {head_address(s)} ...")
            start_head(s, dashboard=True)  # the trainer submits through the Jobs API there
            started.append(self.ray)

    def _up_router(self) -> bool:
        """The A/B router on the Ray head (``prefloop serve``), once a version is registered.

        Whether this call started it.
        """
        s = self.settings
        url = f"http://127.0.0.1:{s.serve_port}/v1"
        if not ModelRegistry.from_settings(s).list():
            self.say("router: no model version registered yet (`prefloop models register`)")
            return False
        if router_ready(s):
            self.say(f"router: already up on {url}")
            return False
        self.say(f"router: starting the A/B router on {url} ...")
        done = subprocess.run(
            _cli("serve"), env=child_environment(s), capture_output=True, text=True
        )
        if done.returncode != 0:  # the rest of the stack is fine: say so, and go on
            reason = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:]
            self.say(
                f"router: did not start ({' '.join(reason) or 'no output'}); the rest of the "
                "stack is up: fix it and run `prefloop serve`"
            )
            return False
        return True

    def _up_trainer(self, started: list[ManagedProcess]) -> None:
        """The trainer service (``prefloop trainer``): retrain requests into Ray jobs."""
        if self.trainer.is_running():
            self.say("trainer: already up")
            return
        self.say("trainer: starting the trainer service (retrain requests -> DPO jobs on Ray) ...")
        self.trainer.start(_cli("trainer"), env=child_environment(self.settings))
        started.append(self.trainer)

    def _up_console(self, started: list[ManagedProcess]) -> None:
        """The console (``prefloop console``): the monitor, annotation and the demo chat."""
        s = self.settings
        url = console_url(s)
        if self.console.is_running():
            self.say(f"console: already up on {url}")
            return
        from prefloop.loop.console.app import check_exposure

        check_exposure(s)
        require_free_port("the console", s.console_port, "PREFLOOP_CONSOLE_PORT")
        self.say(f"console: starting the console on {url} ...")
        self.console.start(
            _cli("console"), env=child_environment(s), extra={"port": s.console_port}
        )
        started.append(self.console)
        self.console.wait_until(
            lambda: port_answers(s.console_port), timeout=CONSOLE_START_TIMEOUT_S, what="listening"
        )
        self.say(f"console: {url}monitor (A/B), {url}annotate, {url}chat")

    def _up_autopilot(self, started: list[ManagedProcess]) -> None:
        """The automatic verdict loop (``prefloop ab watch``), when ``ab_auto`` is on."""
        s = self.settings
        if not s.ab_auto:
            self.say("autopilot: off (PREFLOOP_AB_AUTO=false): run `prefloop ab analyze` yourself")
            return
        if self.autopilot.is_running():
            self.say("autopilot: already up")
            return
        self.say(
            f"autopilot: starting the verdict loop (a look every {s.ab_verdict_interval_s:g} s) ..."
        )
        self.autopilot.start([*_cli("ab"), "watch"], env=child_environment(s))
        started.append(self.autopilot)

    def _up_worker(self, started: list[ManagedProcess]) -> None:
        s = self.settings
        if s.clickhouse_url and not self.sink.is_running():
            self.say("sink: starting the ClickHouse sink ...")
            self.sink.start(_cli("sink"), env=child_environment(s))
            started.append(self.sink)
        if self.worker.is_running():
            self.say(f"worker: already up (web views on 127.0.0.1:{s.streams_web_port})")
            return
        require_free_port("the stream worker", s.streams_web_port, "PREFLOOP_STREAMS_WEB_PORT")
        self.say(
            f"worker: starting the stream agents (web views on 127.0.0.1:{s.streams_web_port}) ..."
        )
        self.worker.start(
            _cli("worker"), env=child_environment(s), extra={"port": s.streams_web_port}
        )
        started.append(self.worker)
        self.worker.wait_until(
            lambda: worker_ready(s.streams_web_port),
            timeout=WORKER_START_TIMEOUT_S,
            what="assigned its partitions",
        )

    # -- down ----------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop every process ``up`` recorded, whatever its settings now say."""
        run = self.settings.home / "run"
        stopped = []
        names = sorted(p.stem for p in run.glob("*.pid")) if run.exists() else []
        # ray and the store first, Kafka last: its clients are gone by then
        order = sorted(names, key=lambda n: (n.startswith("kafka"), n))
        kafka_nodes = [n for n in order if n.startswith("kafka")]
        for name in [n for n in order if not n.startswith("kafka")]:
            timeout = STOP_TIMEOUTS_S.get(name, 30.0)
            if ManagedProcess(name, run, self.settings.home / "logs").stop(timeout):
                stopped.append(name)
        stopped += stop_all(
            [ManagedProcess(n, run, self.settings.home / "logs") for n in kafka_nodes]
        )
        (run / STACK_FILE).unlink(missing_ok=True)
        return stopped

    # -- status --------------------------------------------------------------
    def status(self) -> list[ComponentStatus]:
        s = self.settings
        rows = self._kafka_status()
        if s.clickhouse_url:
            rows.append(ComponentStatus("clickhouse", "external", detail=s.clickhouse_url))
        else:
            pid = self.clickhouse.pid()
            row = ComponentStatus(
                "clickhouse",
                "up" if pid else "down",
                pid,
                s.clickhouse_port,
                detail="embedded chDB, owner process",
            )
            if pid:
                try:
                    row.version = connect(s).server_version
                except PrefloopError as exc:
                    row.detail = str(exc)
            rows.append(row)
        rows.append(self._process_status(self.worker, s.streams_web_port, "stream agents"))
        if s.clickhouse_url:
            rows.append(self._process_status(self.sink, None, "ClickHouse sink"))
        if s.ab_auto:
            rows.append(self._process_status(self.autopilot, None, "verdict loop (ab watch)"))
        trainer = self._process_status(self.trainer, None, "trainer service")
        trainer.detail = trainer_status(self.settings) or trainer.detail
        rows.append(trainer)
        console = self._process_status(self.console, self.settings.console_port, "console")
        console.detail = console_url(self.settings) if console.pid else console.detail
        rows.append(console)
        rows.append(
            ComponentStatus(
                "router",
                "up" if router_ready(s) else "down",
                port=s.serve_port,
                detail="A/B router on Ray Serve (OpenAI API at /v1)",
            )
        )
        if s.ray_address:
            rows.append(ComponentStatus("ray", "external", detail=s.ray_address))
        else:
            pid = self.ray.pid()
            rows.append(
                ComponentStatus(
                    "ray",
                    "up" if pid else "down",
                    pid,
                    s.ray_port,
                    ray_version(),
                    detail="local head",
                )
            )
        return rows

    def _kafka_status(self) -> list[ComponentStatus]:
        s = self.settings
        if s.kafka_bootstrap:
            rows = [ComponentStatus("kafka", "external", detail=s.kafka_bootstrap)]
        else:
            version = kafka_version(s.kafka_libs)
            rows = []
            for node in self.kafka.nodes:
                pid = node.process.pid()
                rows.append(
                    ComponentStatus(
                        node.process.name,
                        "up" if pid else "down",
                        pid,
                        node.port,
                        version,
                        detail="KRaft broker+controller",
                    )
                )
        reachable = s.kafka_bootstrap or any(r.state == "up" for r in rows)
        if reachable and kafka.broker_count(s) > 0:
            rows[0].topics = kafka.topic_message_counts(s, s.topics.all())
        return rows

    @staticmethod
    def _process_status(process: ManagedProcess, port: int | None, what: str) -> ComponentStatus:
        pid = process.pid()
        return ComponentStatus(process.name, "up" if pid else "down", pid, port, detail=what)

    def is_up(self) -> bool:
        return all(r.state in ("up", "external") for r in self.status())


def _cli(command: str) -> list[str]:
    return [sys.executable, "-m", "prefloop.loop.cli", command]


def worker_ready(port: int) -> bool:
    """Whether the stream worker on ``port`` answers and holds partitions."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/prefloop/health/", timeout=2) as r:
            return bool(json.loads(r.read()).get("assigned"))
    except (OSError, ValueError):
        return False


def router_ready(settings: Settings) -> bool:
    """Whether the A/B router answers its readiness check (503 while loading)."""
    return _answers_ok(f"http://127.0.0.1:{settings.serve_port}/readyz", timeout=2)


def _pings(port: int) -> bool:
    return port_answers(port) and _answers_ok(f"http://127.0.0.1:{port}/ping", timeout=1)


def _answers_ok(url: str, timeout: float) -> bool:
    """Whether a GET of ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return bool(reply.status == 200)
    except OSError:  # URLError, and HTTPError for any other status, are OSErrors
        return False


def console_url(settings: Settings) -> str:
    """Where the console answers, as a browser on this machine reaches it."""
    host = settings.console_host
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{settings.console_port}/"


TRAINER_STATUS = "trainer.status"


def trainer_status(settings: Settings) -> str:
    """The trainer service's last line (its job's progress), as ``prefloop trainer`` left it."""
    try:
        return (settings.home / "run" / TRAINER_STATUS).read_text().strip()
    except OSError:
        return ""


def status_as_dicts(rows: list[ComponentStatus]) -> list[dict[str, object]]:
    return [asdict(row) for row in rows]


__all__ = ["ComponentStatus", "LocalStack", "StackError", "status_as_dicts"]
