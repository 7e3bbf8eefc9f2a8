"""The shared test vectors: this codec must reproduce them byte for byte."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from types import ModuleType

import pytest
from sdk_helpers import REPO, load_vectors

import prefloop_sdk
from prefloop_sdk import Codec, RecordType, bundled_catalog

GENERATOR = REPO / "schemas" / "vectors" / "generate.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vectors_generate", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_vectors_for_every_record_type() -> None:
    covered = {v["record_type"] for v in load_vectors()["vectors"]}
    assert covered == {t.value for t in RecordType}


def test_encode_reproduces_every_vector_byte_for_byte() -> None:
    gen = _generator()
    catalog = bundled_catalog()
    for vector in load_vectors()["vectors"]:
        record_type, version = vector["record_type"], vector["schema_version"]
        writer = catalog.get(record_type, version)
        assert writer.fingerprint_hex == vector["fingerprint"], vector["name"]
        codec = Codec(write_versions={record_type: version})
        event = gen.convert_bytes(writer.read_schema, vector["event"], True, {})
        assert codec.encode(record_type, event).hex() == vector["hex"], vector["name"]


def test_decode_reproduces_every_vector() -> None:
    gen = _generator()
    catalog = bundled_catalog()
    for vector in load_vectors()["vectors"]:
        record_type, record = prefloop_sdk.decode(bytes.fromhex(vector["hex"]))
        assert record_type == vector["record_type"]
        reader = catalog.latest(record_type).read_schema
        assert gen.convert_bytes(reader, record, False, {}) == vector["decoded"], vector["name"]


def test_dead_letter_vector_carries_raw_bytes() -> None:
    (vector,) = [v for v in load_vectors()["vectors"] if v["record_type"] == "dead_letter"]
    _, record = prefloop_sdk.decode(bytes.fromhex(vector["hex"]))
    assert record["key"] == b"c-1"
    assert record["value"] == b'{"kind": "THUMBS"}\x00\xff'


@pytest.mark.parametrize("case", load_vectors()["invalid"], ids=lambda c: c["name"])
def test_invalid_vectors_raise_the_named_error(case: dict[str, str]) -> None:
    with pytest.raises(getattr(prefloop_sdk, case["error"])):
        prefloop_sdk.decode(bytes.fromhex(case["hex"]))


def test_vectors_json_is_what_the_generator_writes() -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
