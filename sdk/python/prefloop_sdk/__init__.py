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

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from .registry import RegistryCodec
    from .stats import ClientStats

__version__ = "0.1.0"

# each public name -> the module that holds it, imported on first use: a host that
# needs the codec does not pay for the client (and its asyncio, spool, Kafka) too
_LAZY = {
    "AsyncFeedbackClient": "aio",
    "ClientClosedError": "errors",
    "ClientConfigError": "errors",
    "ClientError": "errors",
    "ClientStats": "stats",
    "Codec": "codec",
    "CompatibilityReport": "compatibility",
    "CorruptEventError": "errors",
    "DecodeError": "errors",
    "Durability": "client",
    "EncodeError": "errors",
    "EventCodec": "codec",
    "FeedbackClient": "client",
    "FeedbackKind": "events",
    "InteractionIds": "events",
    "InvalidEventError": "errors",
    "InvalidRecordError": "errors",
    "MAGIC": "catalog",
    "MissingFieldError": "errors",
    "NotSingleObjectError": "errors",
    "OutOfRangeError": "errors",
    "PrefloopError": "errors",
    "RecordType": "catalog",
    "RegistryError": "errors",
    "SchemaCatalog": "catalog",
    "SchemaCompatibilityError": "errors",
    "SchemaError": "errors",
    "SchemaVersion": "catalog",
    "SpoolError": "errors",
    "TOPIC_SUFFIXES": "events",
    "UnknownFeedbackKindError": "errors",
    "UnknownFingerprintError": "errors",
    "UnknownRecordTypeError": "errors",
    "WrongTypeError": "errors",
    "bundled_catalog": "catalog",
    "check_compatibility": "compatibility",
    "decode": "codec",
    "default_codec": "codec",
    "default_spool_dir": "client",
    "encode": "codec",
    "new_id": "ids",
    "RegistryCodec": "registry",  # needs the registry extra
}

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
    from .codec import Codec

    return Codec(**options)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next look-up is a plain one
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
