"""prefloop.testing.tiny_model: an offline model directory, built once, the same every time."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefloop.testing import tiny_model


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_the_directory_loads_as_a_chat_model(built: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(built)
    model = AutoModelForCausalLM.from_pretrained(built)
    assert (built / "model.safetensors").is_file()
    assert model.config.vocab_size == len(tokenizer)
    assert 0.5e6 < model.num_parameters() < 3e6
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token) == (
        "<pad>",
        "<s>",
        "</s>",
    )
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello there"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<s><|user|>\nHello there</s>\n<|assistant|>\n"
    ids = tokenizer("héllo 🙂 wörld")["input_ids"]  # byte level: any text encodes
    assert tokenizer.decode(ids) == "héllo 🙂 wörld"


def test_it_is_reused_and_the_same_seed_gives_the_same_weights(built: Path, tmp_path: Path):
    stamp = (built / "model.safetensors").stat().st_mtime_ns
    assert tiny_model(built) == built
    assert (built / "model.safetensors").stat().st_mtime_ns == stamp
    again = tiny_model(tmp_path / "again")
    other = tiny_model(tmp_path / "other", seed=1)
    weights = (built / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == weights
    assert (other / "model.safetensors").read_bytes() != weights
    assert (again / "tokenizer.json").read_text() == (built / "tokenizer.json").read_text()


def test_it_never_overwrites_another_directory(built: Path, tmp_path: Path):
    with pytest.raises(FileExistsError, match="built with"):
        tiny_model(built, layers=2)
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="something other than a tiny model"):
        tiny_model(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def _sentences(text: str) -> int:
    return sum(text.count(end) for end in ".!?")


def test_a_pretrained_model_answers_in_words_and_varies_in_length(tmp_path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefloop.tiny_model import PRETRAIN_STEPS, chat_conversations

    path = tiny_model(tmp_path / "pre", pretrain_steps=PRETRAIN_STEPS)
    assert tiny_model(path, pretrain_steps=PRETRAIN_STEPS) == path  # cached by its spec
    with pytest.raises(FileExistsError, match="built with"):
        tiny_model(path)  # a random model is another model
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    question = "Why do people care about baking bread?"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt",
        return_dict=True,
    )  # fmt: skip
    torch.manual_seed(0)
    out = model.generate(**prompt, do_sample=True, max_new_tokens=60, num_return_sequences=16,
                         pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    new = out[:, prompt["input_ids"].shape[1] :]
    ended = [tokenizer.eos_token_id in row.tolist() for row in new]
    answers = tokenizer.batch_decode(new, skip_special_tokens=True)
    assert sum(ended) >= 14, answers  # it ends its turn
    # about the question: a guess among the corpus's 24 topics would name it about once
    assert sum("bread" in a.lower() for a in answers) >= 6, answers
    words = {w for a in answers for w in a.split()}
    corpus = {w for _, a in chat_conversations() for w in a.split()}
    assert len(words & corpus) / len(words) > 0.9, answers  # in the corpus's words
    assert len({_sentences(a) for a in answers}) >= 2, answers  # one sentence or more


def test_pretrain_steps_must_be_a_count(tmp_path: Path):
    with pytest.raises(ValueError, match="pretrain_steps"):
        tiny_model(tmp_path / "m", pretrain_steps=True)  # type: ignore[arg-type]
