"""Normalization and MinHash novelty."""

from __future__ import annotations

import json
import subprocess
import sys

from prefloop.streams.minhash import MinHasher, RecentPrompts, jaccard_estimate, shingles
from prefloop.streams.normalize import (
    exact_prompt_key,
    last_user_message,
    normalize_text,
    prompt_key,
)


def test_normalize_folds_case_whitespace_and_punctuation():
    assert (
        normalize_text("  How DO I   sort\ta list,  in Python?! ")
        == "how do i sort a list in python"
    )
    assert normalize_text("I can't — won’t") == "i cant wont"
    assert normalize_text("ＦＵＬＬ width") == "full width"
    assert normalize_text("...") == ""


def test_prompt_keys():
    a = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi, there!"}]
    b = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
    c = [{"role": "user", "content": "be brief"}, {"role": "user", "content": "hi there"}]
    assert prompt_key(a) == prompt_key(b) != prompt_key(c)
    assert exact_prompt_key(a) != exact_prompt_key(b)
    assert len(prompt_key(a)) == 32
    assert last_user_message(a) == "Hi, there!" and last_user_message([]) == ""


def test_shingles():
    assert shingles("One two three four", 3) == {"one two three", "two three four"}
    assert shingles("Hello, world", 3) == {"hello world"}
    assert shingles("!!!", 3) == set()


def test_jaccard_estimate_tracks_the_true_similarity():
    hasher = MinHasher(num_perm=64, seed=1)
    base = " ".join(f"word{i}" for i in range(60))
    variant = " ".join(f"word{i}" for i in range(20, 80))
    true = len(shingles(base) & shingles(variant)) / len(shingles(base) | shingles(variant))
    assert true == 38 / 78  # 38 shared 3-grams of 58 each
    estimate = jaccard_estimate(hasher.signature(base), hasher.signature(variant))
    assert abs(estimate - true) < 0.15
    assert jaccard_estimate(hasher.signature(base), hasher.signature(base)) == 1.0
    assert jaccard_estimate(hasher.signature(base), hasher.signature("unrelated text here")) < 0.1


def test_signatures_are_the_same_in_every_process():
    code = (
        "from prefloop.streams.minhash import MinHasher;"
        "print(MinHasher(64, 1).signature('how do I sort a list in python')[:4])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert outputs == {str(MinHasher(64, 1).signature("how do I sort a list in python")[:4]) + "\n"}


def test_recent_prompts_find_near_duplicates_and_forget_the_oldest():
    hasher = MinHasher()
    memory = RecentPrompts(num_perm=64, bands=32, capacity=2)
    state = RecentPrompts.new_state()
    first = hasher.signature("how do I reverse a list in python")
    assert memory.most_similar(state, first) == 0.0
    state = memory.remember(state, "a", first)
    near = hasher.signature("How do I reverse a list in Python, please?")
    assert memory.most_similar(state, near) >= 0.5
    assert memory.most_similar(state, hasher.signature("capital of australia")) < 0.5
    untouched = RecentPrompts.new_state()
    memory.remember(untouched, "x", first)
    assert untouched == RecentPrompts.new_state()
    state = memory.remember(state, "b", hasher.signature("b b b"))
    state = memory.remember(state, "c", hasher.signature("c c c"))
    assert state["order"] == ["b", "c"] and set(state["signatures"]) == {"b", "c"}
    assert memory.most_similar(state, first) == 0.0


def test_the_lsh_index_is_a_cache_results_never_depend_on():
    hasher = MinHasher()
    memory = RecentPrompts(capacity=10)
    prompt = hasher.signature("how do I reverse a list in python")
    old = memory.remember(RecentPrompts.new_state(), "a", prompt)
    new = memory.remember(old, "b", hasher.signature("what is the capital of australia"))
    near = hasher.signature("how do I reverse a list in python please")
    expected = memory.most_similar(new, near)
    assert expected >= 0.5
    # an older state (the cache now holds the newer one), a restarted process
    assert memory.most_similar(old, near) == expected
    assert memory.most_similar(RecentPrompts.new_state(), near) == 0.0
    restored = json.loads(json.dumps(new))
    assert RecentPrompts(capacity=10).most_similar(restored, near) == expected
    # in place on a restored state, then a lookup of something it just learned
    memory.remember_in_place(restored, "c", hasher.signature("write a haiku about autumn"))
    assert memory.most_similar(restored, hasher.signature("write a haiku about autumn")) == 1.0
    assert memory.most_similar(new, hasher.signature("write a haiku about autumn")) < 0.5
