"""How prefloop's own processes emit events: the SDK's FeedbackClient, built from the settings."""

from __future__ import annotations

from prefloop.settings import Settings
from prefloop_sdk import FeedbackClient

__all__ = ["feedback_client"]


def feedback_client(
    settings: Settings, name: str = "serving", *, linger_ms: int | None = None
) -> FeedbackClient:
    """A client on the configured cluster, journaling under ``$PREFLOOP_HOME/spool/<name>``.

    Each process that emits needs its own spool directory: ``name`` tells them apart.
    ``linger_ms`` overrides the SDK's batching delay (10 ms).
    """
    overrides = {"linger.ms": linger_ms} if linger_ms is not None else {}
    return FeedbackClient(
        settings.bootstrap_servers,
        topic_prefix=settings.topic_prefix,
        spool_dir=settings.home / "spool" / name,
        producer_config={
            **{k: v for k, v in settings.kafka_client_config().items() if k != "bootstrap.servers"},
            **overrides,
        },
    )
