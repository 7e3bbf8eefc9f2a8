"""prefloop's client SDK: the Avro event codec and the feedback client.

>>> from prefloop_sdk import RecordType, decode, encode
>>> data = encode(RecordType.EXPOSURE, {"exposure_id": "x-1", "ts": 0, "experiment_id": "e",
...                                     "user_id": "u", "arm": "control",
...                                     "model_version": "m", "bucket": 7})
>>> data[:2].hex()
'c301'
>>> decode(data)[1]["bucket"]
7

``RegistryCodec`` (the Confluent wire format) is imported on first use: it needs the
``registry`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .catalog import MAGIC, RecordType, SchemaCatalog, SchemaVersion, bundled_catalog
from .codec import Codec, EventCodec, decode, default_codec, encode
from .compatibility import CompatibilityReport, check_compatibility
from .errors import (
    CorruptEventError,
    DecodeError,
    EncodeError,
    InvalidRecordError,
    NotSingleObjectError,
    PrefloopError,
    RegistryError,
    SchemaCompatibilityError,
    SchemaError,
    UnknownFingerprintError,
    UnknownRecordTypeError,
)

if TYPE_CHECKING:
    from .registry import RegistryCodec

__version__ = "0.1.0"

__all__ = [
    "MAGIC",
    "Codec",
    "CompatibilityReport",
    "CorruptEventError",
    "DecodeError",
    "EncodeError",
    "EventCodec",
    "InvalidRecordError",
    "NotSingleObjectError",
    "PrefloopError",
    "RecordType",
    "RegistryCodec",
    "RegistryError",
    "SchemaCatalog",
    "SchemaCompatibilityError",
    "SchemaError",
    "SchemaVersion",
    "UnknownFingerprintError",
    "UnknownRecordTypeError",
    "bundled_catalog",
    "check_compatibility",
    "decode",
    "default_codec",
    "encode",
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
