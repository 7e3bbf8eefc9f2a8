"""prefloop's client SDK: the Avro event codec and the feedback client.

>>> from prefloop_sdk import RecordType, decode, encode
>>> data = encode(RecordType.EXPOSURE, {"exposure_id": "x-1", "ts": 0, "experiment_id": "e",
...                                     "user_id": "u", "arm": "control",
...                                     "model_version": "m", "bucket": 7})
>>> data[:2].hex()
'c301'
>>> decode(data)[1]["bucket"]
7

``FeedbackClient`` emits interactions and feedback to Kafka through a durable local
spool (``AsyncFeedbackClient`` for asyncio back ends); see ``prefloop_sdk.client``.

``RegistryCodec`` (the Confluent wire format) is imported on first use: it needs the
``registry`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .aio import AsyncFeedbackClient
from .catalog import MAGIC, RecordType, SchemaCatalog, SchemaVersion, bundled_catalog
from .client import Durability, FeedbackClient, default_spool_dir
from .codec import Codec, EventCodec, decode, default_codec, encode
from .compatibility import CompatibilityReport, check_compatibility
from .errors import (
    ClientClosedError,
    ClientConfigError,
    ClientError,
    CorruptEventError,
    DecodeError,
    EncodeError,
    InvalidEventError,
    InvalidRecordError,
    MissingFieldError,
    NotSingleObjectError,
    OutOfRangeError,
    PrefloopError,
    RegistryError,
    SchemaCompatibilityError,
    SchemaError,
    SpoolError,
    UnknownFeedbackKindError,
    UnknownFingerprintError,
    UnknownRecordTypeError,
    WrongTypeError,
)
from .events import TOPIC_SUFFIXES, FeedbackKind, InteractionIds
from .ids import new_id
from .stats import ClientStats

if TYPE_CHECKING:
    from .registry import RegistryCodec

__version__ = "0.1.0"

__all__ = [
    "MAGIC",
    "TOPIC_SUFFIXES",
    "AsyncFeedbackClient",
    "ClientClosedError",
    "ClientConfigError",
    "ClientError",
    "ClientStats",
    "Codec",
    "CompatibilityReport",
    "CorruptEventError",
    "DecodeError",
    "Durability",
    "EncodeError",
    "EventCodec",
    "FeedbackClient",
    "FeedbackKind",
    "InteractionIds",
    "InvalidEventError",
    "InvalidRecordError",
    "MissingFieldError",
    "NotSingleObjectError",
    "OutOfRangeError",
    "PrefloopError",
    "RecordType",
    "RegistryCodec",
    "RegistryError",
    "SchemaCatalog",
    "SchemaCompatibilityError",
    "SchemaError",
    "SchemaVersion",
    "SpoolError",
    "UnknownFeedbackKindError",
    "UnknownFingerprintError",
    "UnknownRecordTypeError",
    "WrongTypeError",
    "bundled_catalog",
    "check_compatibility",
    "decode",
    "default_codec",
    "default_spool_dir",
    "encode",
    "new_id",
    "open_codec",
]


def open_codec(
    registry_url: str | None = None,
    registry_config: dict[str, Any] | None = None,
    **options: Any,
) -> EventCodec:
    """A ``RegistryCodec`` when a registry URL is configured, else a ``Codec``.

    ``options`` go to the codec (``catalog``, ``write_versions``, ``read_versions``,
    ``validate``).
    """
    if registry_url:
        from .registry import RegistryCodec

        return RegistryCodec.from_url(registry_url, registry_config, **options)
    return Codec(**options)


def __getattr__(name: str) -> Any:
    if name == "RegistryCodec":  # lazily: confluent's registry client is a heavy import
        from .registry import RegistryCodec

        return RegistryCodec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
