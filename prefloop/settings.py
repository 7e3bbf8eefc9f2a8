"""prefloop's settings: one frozen object, read from ``PREFLOOP_*`` variables.

This class is the one place where every variable is documented; ``prefloop
config`` prints the effective values with secrets masked. The environment is
read at the edge (the CLI, an app's start) through :func:`load_settings`;
library code takes a :class:`Settings` argument and never reads os.environ.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from prefloop.errors import SettingsError
from prefloop_sdk.events import TOPIC_SUFFIXES

ENV_PREFIX = "PREFLOOP_"
REPO_ROOT = Path(__file__).resolve().parent.parent

Port = int


@dataclass(frozen=True)
class Topics:
    """The Kafka topics, ``<prefix>.<suffix>`` with the SDK's suffix for each record type."""

    interactions: str
    feedback: str
    exposures: str
    scores: str
    annotation_tasks: str
    annotation_results: str
    preferences: str
    model_events: str
    dlq: str

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        names = {
            suffix.replace("-", "_"): f"{prefix}.{suffix}" for suffix in TOPIC_SUFFIXES.values()
        }
        return cls(**names)

    def for_record(self, record_type: str) -> str:
        """The topic of a record type (``feedback``, ``preference_pair``, ...)."""
        return str(getattr(self, TOPIC_SUFFIXES[record_type].replace("-", "_")))

    def all(self) -> list[str]:
        return list(vars(self).values())


class Settings(BaseSettings):
    """Every prefloop setting. Each is read from ``PREFLOOP_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    # -- state ---------------------------------------------------------------
    home: Path = Field(
        Path(".prefloop"),
        description="state directory: pid files, logs and data of the local stack (a path)",
    )

    # -- Kafka ---------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        None,
        description="bootstrap servers of an existing Kafka cluster, host:port[,host:port]; "
        "unset: `prefloop up` runs a local broker",
    )
    kafka_port: Port = Field(
        9092,
        ge=1,
        le=65535,
        description="client port of the local broker (node n uses port + n - 1)",
    )
    kafka_controller_port: Port = Field(
        9192,
        ge=1,
        le=65535,
        description="KRaft controller port of the local broker (node n: + n - 1)",
    )
    kafka_nodes: int = Field(1, ge=1, le=9, description="nodes of the local KRaft cluster, 1 to 9")
    kafka_libs: Path = Field(
        REPO_ROOT / "infra" / "kafka" / "lib",
        description="folder of Kafka's jars, resolved by infra/kafka/pom.xml (a path)",
    )
    kafka_heap: str = Field(
        "512m",
        pattern=r"^\d+[kmgKMG]$",
        description="JVM heap of each local broker, e.g. 512m or 1g",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="security.protocol passed to every Kafka client"
    )
    kafka_sasl_mechanism: str | None = Field(
        None, description="sasl.mechanism, e.g. PLAIN, SCRAM-SHA-512, OAUTHBEARER"
    )
    kafka_sasl_username: str | None = Field(None, description="sasl.username")
    kafka_sasl_password: SecretStr | None = Field(None, description="sasl.password (secret)")
    kafka_ssl_ca_location: Path | None = Field(None, description="ssl.ca.location (a path)")
    kafka_ssl_certificate_location: Path | None = Field(
        None, description="ssl.certificate.location (a path)"
    )
    kafka_ssl_key_location: Path | None = Field(None, description="ssl.key.location (a path)")
    kafka_ssl_key_password: SecretStr | None = Field(None, description="ssl.key.password (secret)")

    # -- topics --------------------------------------------------------------
    topic_prefix: str = Field(
        "prefloop",
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="prefix of every topic name (letters, digits, '.', '_', '-')",
    )
    topic_partitions: int = Field(6, ge=1, le=1000, description="partitions of each topic")
    topic_replication: int | None = Field(
        None, ge=1, le=9, description="replication factor of each topic; unset: min(3, kafka nodes)"
    )
    topic_retention_hours: int = Field(
        168, ge=1, description="retention of each topic in hours (bounded: user data ages out)"
    )

    # -- ClickHouse ----------------------------------------------------------
    clickhouse_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+(:\d+)?/?$",
        description="a ClickHouse server, http(s)://host:port; unset: embedded chDB under home",
    )
    clickhouse_user: str = Field("default", description="ClickHouse user (server mode)")
    clickhouse_password: SecretStr = Field(
        SecretStr(""), description="ClickHouse password (server mode, secret)"
    )
    clickhouse_database: str = Field(
        "prefloop", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", description="ClickHouse database name"
    )
    clickhouse_port: Port = Field(
        8124, ge=1, le=65535, description="port of the embedded store's owner (HTTP, 127.0.0.1)"
    )
    clickhouse_retention_days: int = Field(
        0, ge=0, description="days the event tables keep a row (TTL); 0: keep every row"
    )

    # -- A/B verdict ---------------------------------------------------------
    ab_primary_metric: str = Field(
        "implicit_score",
        pattern=r"^(implicit_score|rating|continue_rate|copy_rate)$",
        description="the metric that decides promotion: implicit_score, rating, continue_rate "
        "or copy_rate",
    )
    ab_alpha: float = Field(
        0.05, gt=0, lt=0.5, description="false-positive rate of the verdict's tests"
    )
    ab_min_users: int = Field(
        100, ge=2, description="users each arm needs before the verdict may promote or roll back"
    )
    ab_effect_size: float = Field(
        0.1,
        gt=0,
        description="the effect the sequential test is tuned for, in standard deviations of "
        "the metric per user (its mixture prior)",
    )
    ab_auto: bool = Field(
        True, description="whether `prefloop up` acts on the verdict (promotes or rolls back)"
    )
    ab_verdict_interval_s: float = Field(
        60.0, gt=0, description="seconds between two verdicts of the automatic loop"
    )
    ab_max_sink_lag_s: float = Field(
        120.0,
        gt=0,
        description="seconds the ClickHouse sink may be behind: while the oldest event it "
        "has not stored is older, the automatic loop does not act on a verdict",
    )

    # -- HTTP collector ------------------------------------------------------
    collector_token: SecretStr | None = Field(
        None, description="bearer token clients must send to the collector (secret); unset: none"
    )
    collector_port: Port = Field(8088, ge=1, le=65535, description="port of `prefloop collector`")
    collector_max_body_kb: int = Field(
        1024, ge=1, description="largest request body the collector reads, in KiB"
    )
    collector_max_events: int = Field(1000, ge=1, description="most events in one collector batch")
    collector_rate_per_s: float = Field(
        1000.0, gt=0, description="events per second each key (token or client address) may send"
    )
    collector_burst: int = Field(
        5000, ge=1, description="events a key may send at once above its rate"
    )
    collector_cors_origins: str = Field(
        "*", description="origins browsers may send events from, comma-separated, or *"
    )

    # -- console ---------------------------------------------------------------
    console_host: str = Field(
        "127.0.0.1",
        description="address the console listens on; anything but 127.0.0.1 or localhost "
        "serves it to the network (set PREFLOOP_CONSOLE_USERS first)",
    )
    console_port: Port = Field(8090, ge=1, le=65535, description="port of `prefloop console`")
    console_users: SecretStr | None = Field(
        None,
        description="who may use the console, comma-separated NAME:ROLE:PASSWORD with ROLE "
        "annotator or operator, sent as HTTP basic auth (secret); unset: every page is "
        "read-only and every write refused",
    )
    console_refresh_s: float = Field(
        2.0, gt=0, le=60, description="seconds between two refreshes of the monitor's numbers"
    )
    annotation_overlap: int = Field(
        1, ge=1, le=10, description="annotators who each judge every annotation task"
    )
    annotation_lock_s: float = Field(
        300.0, gt=0, description="seconds an annotator holds a task before others may take it"
    )
    annotation_min_agreement: float = Field(
        0.66,
        ge=0,
        le=1,
        description="share of a task's annotators who must pick the same response for it "
        "to become a pair (with an overlap above 1)",
    )

    # -- stream agents -------------------------------------------------------
    streams_guarantee: Literal["exactly_once", "at_least_once"] = Field(
        "exactly_once",
        description="processing guarantee of the stream worker: exactly_once or at_least_once",
    )
    streams_store: Literal["memory", "rocksdb"] = Field(
        "memory",
        description="where the worker keeps its tables (both are restored from changelogs)",
    )
    streams_web_port: Port = Field(
        6066, ge=1, le=65535, description="port of the worker's web views (127.0.0.1)"
    )
    streams_tick_s: float = Field(
        5.0, gt=0, le=3600, description="seconds between timer ticks (inactivity, windows)"
    )
    streams_scoring_weights: str = Field(
        "{}",
        description='implicit-score weights over the defaults, JSON, e.g. {"copied": 3}',
    )
    streams_inactivity_s: float = Field(
        1800.0, gt=0, description="seconds of silence that settle a conversation's responses"
    )
    streams_unknown_grace_s: float = Field(
        300.0,
        gt=0,
        description="seconds feedback waits for its interaction before it is a dead letter",
    )
    streams_sampling_count: int = Field(
        1000, ge=1, description="annotation tasks drawn per sampling window"
    )
    streams_sampling_window_s: float = Field(
        3600.0, gt=0, description="length of an annotation sampling window in seconds"
    )
    retrain_threshold: int = Field(
        500, ge=1, description="preference pairs on a model version that request a retrain"
    )
    retrain_busy_timeout_s: float = Field(
        6 * 3600.0,
        gt=0,
        description="a requested training with no outcome after this many seconds is given up",
    )
    # -- training ------------------------------------------------------------
    train_config: str = Field(
        "{}",
        description="the DPO job's hyperparameters over their defaults, JSON, e.g. "
        '{"learning_rate": 1e-6, "lora": true} (the parameters: prefloop.training.config)',
    )
    train_num_gpus: float = Field(
        0.0, ge=0, description="GPUs a training job asks of the Ray cluster (0: CPU)"
    )
    train_num_cpus: float = Field(1.0, ge=0, description="CPUs a training job asks of Ray")
    train_poll_s: float = Field(
        2.0, gt=0, description="seconds between the trainer service's looks at a running job"
    )
    eval_judge: str = Field(
        "",
        description="the offline evaluation's judge, module:function(prompt_messages, response) "
        "-> float; empty: the built-in one",
    )
    eval_safety: str = Field(
        "",
        description="the safety policy, module:function(prompt_messages, response) -> bool; "
        "empty: the built-in patterns",
    )
    ray_jobs_url: str | None = Field(
        None,
        description="the Ray Jobs API (a cluster's dashboard, http://head:8265); unset: the "
        "local head's dashboard",
    )
    ab_start_split: float = Field(
        10.0,
        gt=0,
        lt=100,
        description="percent of users a candidate that passed its gates gets in its first A/B",
    )
    sink_batch_rows: int = Field(
        10_000, ge=1, description="rows the ClickHouse sink inserts at most per batch"
    )
    sink_batch_s: float = Field(
        1.0, gt=0, description="seconds the ClickHouse sink waits at most before inserting"
    )

    # -- serving -------------------------------------------------------------
    model_registry: str | None = Field(
        None,
        description="where model versions live: a directory or an fsspec URL (s3://, gs://, "
        "...); unset: <home>/models",
    )
    serve_port: Port = Field(8000, ge=1, le=65535, description="HTTP port of the A/B router")
    serve_api_keys: SecretStr | None = Field(
        None,
        description="API keys the router's OpenAI endpoint accepts, comma-separated, sent as "
        "`Authorization: Bearer KEY` (secret); unset: none required",
    )
    serve_replicas: int = Field(
        1, ge=1, description="replicas of the A/B router (each holds both arms)"
    )
    serve_num_gpus: float = Field(
        0.0, ge=0, description="GPUs per replica; fractions share a GPU (0.5: two replicas on one)"
    )
    serve_autoscaling: str = Field(
        "",
        description='Ray Serve autoscaling_config as JSON, e.g. {"min_replicas": 1, '
        '"max_replicas": 4}; empty: a fixed number of replicas',
    )
    serve_device: str = Field(
        "cpu",
        pattern=r"^(cpu|cuda(:\d+)?)$",
        description="device of the models: cpu, cuda or cuda:N",
    )
    serve_max_batch_size: int = Field(8, ge=1, description="requests one model batch holds at most")
    serve_batch_wait_ms: float = Field(
        0.0, ge=0, description="milliseconds a batch waits to fill (0: take what is queued)"
    )
    serve_max_ongoing: int = Field(
        64, ge=1, description="requests one replica takes at once before the proxy queues"
    )
    serve_request_timeout_s: float = Field(
        60.0, gt=0, description="seconds a chat request may take before it fails with 504"
    )
    serve_max_prompt_chars: int = Field(
        32_000, ge=1, description="characters of all messages one request may carry"
    )
    serve_max_body_kb: int = Field(512, ge=1, description="largest chat request body, in KiB")
    serve_max_tokens: int = Field(
        1024, ge=1, description="largest max_tokens a request may ask for"
    )

    # -- Ray -----------------------------------------------------------------
    ray_address: str | None = Field(
        None,
        validation_alias=AliasChoices("PREFLOOP_RAY_ADDRESS", "RAY_ADDRESS"),
        description="a Ray cluster to use (also read from RAY_ADDRESS); unset: `up` starts one",
    )
    ray_port: Port = Field(6390, ge=1, le=65535, description="GCS port of the local Ray head")
    ray_object_store_mb: int = Field(
        512, ge=78, description="object store of the local Ray head in MiB (at least 78)"
    )
    ray_dashboard: bool = Field(False, description="start the Ray dashboard (true/false)")
    ray_dashboard_port: Port = Field(8265, ge=1, le=65535, description="Ray dashboard port")

    @field_validator("home", "kafka_libs")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @property
    def topics(self) -> Topics:
        return Topics.with_prefix(self.topic_prefix)

    @property
    def replication_factor(self) -> int:
        if self.topic_replication is not None:
            return self.topic_replication
        return 1 if self.kafka_bootstrap else min(3, self.kafka_nodes)

    @property
    def bootstrap_servers(self) -> str:
        """The Kafka cluster every client talks to: the configured one or the local one."""
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        return ",".join(f"127.0.0.1:{self.kafka_port + i}" for i in range(self.kafka_nodes))

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka settings shared by producers, consumers and admin clients."""
        config: dict[str, str] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
        }
        optional: dict[str, Any] = {
            "sasl.mechanism": self.kafka_sasl_mechanism,
            "sasl.username": self.kafka_sasl_username,
            "sasl.password": self.kafka_sasl_password,
            "ssl.ca.location": self.kafka_ssl_ca_location,
            "ssl.certificate.location": self.kafka_ssl_certificate_location,
            "ssl.key.location": self.kafka_ssl_key_location,
            "ssl.key.password": self.kafka_ssl_key_password,
        }
        for key, value in optional.items():
            if value is None:
                continue
            config[key] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        return config

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some values changed and validated (the object itself is frozen)."""
        return type(self).model_validate({**self.model_dump(), **changes})


def _env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _known_variables() -> set[str]:
    return {_env_name(name) for name in Settings.model_fields}


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read the settings from the environment, with errors a person can act on.

    An unknown ``PREFLOOP_*`` variable is an error (a typo would otherwise be
    silently ignored); a malformed value names the variable and its form.
    """
    env = os.environ if environ is None else environ
    known = _known_variables()
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise SettingsError(
                f"{name} is not a prefloop setting: {hint}`prefloop config` lists every setting"
            )
    values: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        aliases = [_env_name(name)]
        if isinstance(field.validation_alias, AliasChoices):
            aliases = [str(a) for a in field.validation_alias.choices]
        for alias in aliases:
            if env.get(alias, "") != "":  # an empty variable counts as unset
                values[name] = env[alias]
                break
    values.update(overrides)
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, values)) from None


def _describe(exc: ValidationError, values: Mapping[str, Any]) -> str:
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "?"
        field = Settings.model_fields.get(name)
        form = field.description if field is not None else ""
        given = values.get(name, "")
        problems.append(
            f"{_env_name(name)}={given!r} is not valid ({error['msg']}); expected: {form}"
        )
    return "; ".join(problems)


def describe_settings(settings: Settings) -> list[tuple[str, str, str]]:
    """(variable, effective value, description) for every setting, secrets masked."""
    rows = []
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            shown = "**********" if value.get_secret_value() else ""
        elif value is None:
            shown = ""
        else:
            shown = str(value)
        rows.append((_env_name(name), shown, field.description or ""))
    return rows


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``PREFLOOP_*`` variables, for a child process to load the same ones."""
    env = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[_env_name(name)] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def child_environment(settings: Settings) -> dict[str, str]:
    """This process's environment with its PREFLOOP_* variables replaced by ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.pop("RAY_ADDRESS", None)
    env.update(settings_env(settings))
    return env
