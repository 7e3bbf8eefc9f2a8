"""TransformersBackend on a tiny random-weight Llama: batching, stopping, streaming, errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefloop.errors import PrefloopError
from prefloop.serving.backends import (
    Backend,
    GenerationRequest,
    InvalidRequestError,
    ModelLoadError,
    TransformersBackend,
)
from prefloop.testing import tiny_model


def chat(text: str, system: str | None = None) -> list[dict[str, str]]:
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": text}]


# prompts of different lengths, so a batch of them is left-padded
PROMPTS = [
    chat("Hi"),
    chat("Can you explain chess in simple words?"),
    chat("What is the best way to learn French, and why?", system="Answer briefly."),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> Iterator[Backend]:
    with TransformersBackend(model_dir, model_version="tiny-v1") as loaded:
        yield loaded


def test_a_batch_honours_each_requests_max_tokens(backend: Backend, model_dir: Path):
    from transformers import AutoTokenizer

    requests = [
        GenerationRequest(p, max_tokens=n) for p, n in zip(PROMPTS, (3, 11, 6), strict=True)
    ]
    first = backend.generate(requests)
    assert [g.completion_tokens for g in first] == [3, 11, 6]
    assert [g.finish_reason for g in first] == ["length"] * 3
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert [g.prompt_tokens for g in first] == [
        len(
            tokenizer(tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True))[
                "input_ids"
            ]
        )
        for p in PROMPTS
    ]
    assert len({g.prompt_tokens for g in first}) == 3  # the batch really was padded
    assert all(g.text for g in first)
    assert backend.generate(requests) == first  # greedy is deterministic


def test_a_request_gives_the_same_greedy_text_alone_and_in_a_batch(backend: Backend):
    requests = [GenerationRequest(p, max_tokens=12) for p in PROMPTS]
    batched = backend.generate(requests)
    alone = [backend.generate([r])[0] for r in requests]
    assert alone == batched
    assert len({g.text for g in batched}) == 3  # different prompts, different answers


def test_streaming_yields_the_text_generate_returns(backend: Backend):
    request = GenerationRequest(PROMPTS[2], max_tokens=16)
    pieces = list(backend.stream(request))
    assert len(pieces) > 1
    assert "".join(pieces) == backend.generate([request])[0].text


def test_a_stop_string_ends_the_completion_before_it(backend: Backend):
    full = backend.generate([GenerationRequest(PROMPTS[1], max_tokens=24)])[0]
    found = re.search(r"[A-Za-z]{3}", full.text[4:])
    assert found, full.text
    stop = found.group()
    request = GenerationRequest(PROMPTS[1], max_tokens=24, stop=[stop, "never-seen"])
    stopped = backend.generate([request])[0]
    assert stopped.text == full.text[: full.text.find(stop)]
    assert stopped.finish_reason == "stop"
    assert 0 < stopped.completion_tokens < 24
    assert "".join(backend.stream(request)) == stopped.text


def test_a_seeded_sample_is_reproducible_alone_and_in_a_batch(backend: Backend):
    def sample(seed: int) -> GenerationRequest:
        return GenerationRequest(PROMPTS[0], max_tokens=16, temperature=1.0, seed=seed)

    greedy_request = GenerationRequest(PROMPTS[0], max_tokens=16)
    batch = backend.generate([sample(1), sample(2), sample(1), greedy_request])
    assert batch[0] == batch[2]
    assert batch[0].text != batch[1].text
    assert backend.generate([sample(2)])[0] == batch[1]
    assert batch[0].text != batch[3].text
    assert batch[3] == backend.generate([greedy_request])[0]


def test_a_missing_model_directory_is_named_in_the_error(tmp_path: Path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="no such directory") as caught:
        TransformersBackend(missing, model_version="v0")
    assert str(missing) in str(caught.value)
    assert isinstance(caught.value, PrefloopError)


def test_a_directory_without_a_model_is_refused(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelLoadError, match=r"not a model directory \(no config.json\)"):
        TransformersBackend(tmp_path, model_version="v0")


def test_a_closed_backend_refuses_work(model_dir: Path):
    backend = TransformersBackend(model_dir, model_version="v0")
    backend.close()
    backend.close()
    with pytest.raises(PrefloopError, match="closed"):
        backend.generate([GenerationRequest(PROMPTS[0])])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", 0),
        ("temperature", -0.5),
        ("top_p", 0.0),
        ("seed", -1),
        ("stop", "one string"),
        ("messages", [{"role": "robot", "content": "hi"}]),
        ("messages", []),
    ],
)
def test_an_invalid_request_names_its_field(field: str, value: object):
    arguments: dict[str, object] = {"messages": PROMPTS[0], field: value}
    with pytest.raises(InvalidRequestError, match=f"GenerationRequest.{field}="):
        GenerationRequest(**arguments)  # type: ignore[arg-type]
