"""A scripted day through every piece, wired the way the Faust agents will wire them:

feedback + interactions -> Scorer -> scores
interactions + scores   -> ConversationPairMiner -> REGENERATE/RATING pairs, scored responses
scored responses        -> ImplicitPairMiner (by prompt_key) -> IMPLICIT pairs
scored responses        -> Sampler -> annotation tasks
"""

from __future__ import annotations

from typing import Any

from streams_events import MINUTE, SECOND, T0, feedback, interaction

from prefloop.streams.config import SamplingConfig, ScoringConfig
from prefloop.streams.conversation_miner import ConversationPairMiner
from prefloop.streams.implicit_miner import ImplicitPairMiner
from prefloop.streams.normalize import prompt_key
from prefloop.streams.sampling import Sampler
from prefloop.streams.scoring import Scorer
from prefloop_sdk import encode

HOUR = 60 * MINUTE
TIMEOUT = int(ScoringConfig().inactivity_timeout_s * 1000)
START = T0 - T0 % HOUR  # the sampling window the day falls in


class Pipeline:
    def __init__(self) -> None:
        self.scorer, self.miner = Scorer(), ConversationPairMiner()
        self.implicit = ImplicitPairMiner()
        self.sampler = Sampler(SamplingConfig(count=4, top_fraction=0.75, seed=0))
        self.scores_by_conv: dict[str, Any] = {}  # tables keyed by conversation
        self.pairs_by_conv: dict[str, Any] = {}
        self.by_prompt: dict[str, Any] = {}  # table keyed by prompt_key (repartitioned)
        self.sampler_state: dict[str, Any] | None = None
        self.scores: list[tuple[str, int, float, str]] = []
        self.pairs: list[tuple[str, str, str, float]] = []
        self.tasks: list[dict[str, Any]] = []

    def _scored(self, items: list[dict[str, Any]], now: int) -> None:
        for item in items:
            key = prompt_key(item["messages"])
            step = self.implicit.on_scored(self.by_prompt.get(key), item, now)
            self.by_prompt[key] = step.state
            self._pairs(step.pairs)
            if item["revision"] == 0:  # the sampler takes a response's first score
                sample = self.sampler.observe(self.sampler_state, item, now)
                self.sampler_state = sample.state
                self.tasks += sample.tasks

    def _pairs(self, pairs: list[dict[str, Any]]) -> None:
        for p in pairs:
            encode("preference_pair", p)
            self.pairs.append(
                (p["source"], p["chosen_response_id"], p["rejected_response_id"], p["weight"])
            )

    def _scores(self, conv: str, scores: list[dict[str, Any]], now: int) -> None:
        for record in scores:
            encode("scored_interaction", record)
            self.scores.append(
                (
                    record["response_id"],
                    record["revision"],
                    record["implicit_score"],
                    record["settled_reason"],
                )
            )
            step = self.miner.on_score(self.pairs_by_conv.get(conv), record, now)
            self.pairs_by_conv[conv] = step.state
            self._pairs(step.pairs)
            self._scored(step.scored, now)

    def interaction(self, record: dict[str, Any]) -> None:
        conv, now = record["conversation_id"], record["ts"]
        step = self.scorer.on_interaction(self.scores_by_conv.get(conv), record, now)
        self.scores_by_conv[conv] = step.state
        mined = self.miner.on_interaction(self.pairs_by_conv.get(conv), record, now)
        self.pairs_by_conv[conv] = mined.state
        self._scores(conv, step.scores, now)

    def feedback(self, record: dict[str, Any]) -> None:
        conv, now = record["conversation_id"], record["ts"]
        step = self.scorer.on_feedback(self.scores_by_conv.get(conv), record, now)
        self.scores_by_conv[conv] = step.state
        self._scores(conv, step.scores, now)

    def tick(self, now: int) -> None:
        for conv, state in list(self.scores_by_conv.items()):
            step = self.scorer.on_timer(state, now)
            self.scores_by_conv[conv] = step.state
            self._scores(conv, step.scores, now)
        if self.sampler_state is not None:
            sample = self.sampler.on_timer(self.sampler_state, now)
            self.sampler_state = sample.state
            self.tasks += sample.tasks


def test_a_scripted_day():
    day = Pipeline()
    sort_q = {"role": "user", "content": "How do I sort a list in Python?"}
    # c1: an answer regenerated, the regeneration copied, a follow-up, a 400 s session
    day.interaction(interaction("r1", conv="c1", messages=[sort_q], ts=T0))
    day.feedback(feedback("REGENERATE", "r1", "f1", conv="c1", ts=T0 + 5 * SECOND))
    day.interaction(
        interaction("r1b", conv="c1", messages=[sort_q], regenerates="r1", ts=T0 + 6 * SECOND)
    )
    day.feedback(feedback("COPY", "r1b", "f2", conv="c1", ts=T0 + 20 * SECOND))
    follow = [sort_q, {"role": "assistant", "content": "answer r1b"}]
    follow.append({"role": "user", "content": "And in reverse order?"})
    day.interaction(interaction("r2", conv="c1", turn=1, messages=follow, ts=T0 + MINUTE))
    end = feedback("SESSION_END", "r2", "f3", conv="c1", ts=T0 + 7 * MINUTE, value=400.0)
    day.feedback(end)
    # c2: the same question differently written, reported, a 20 s session
    same_q = {"role": "user", "content": "how do i sort a list in python"}
    day.interaction(interaction("x1", conv="c2", user="u2", messages=[same_q], ts=T0 + 8 * MINUTE))
    day.feedback(feedback("REPORT", "x1", "g1", conv="c2", ts=T0 + 8 * MINUTE + SECOND))
    end = feedback("SESSION_END", "x1", "g2", conv="c2", ts=T0 + 9 * MINUTE, value=20.0)
    day.feedback(end)
    # c3: two answers to one question, rated 5 and 2, then silence
    capital = {"role": "user", "content": "What's the capital of Australia?"}
    day.interaction(interaction("y1", conv="c3", messages=[capital], ts=T0 + 10 * MINUTE))
    day.interaction(interaction("y2", conv="c3", messages=[capital], ts=T0 + 10 * MINUTE + 1))
    day.feedback(feedback("RATING", "y1", "h1", conv="c3", ts=T0 + 11 * MINUTE, value=5.0))
    day.feedback(feedback("RATING", "y2", "h2", conv="c3", ts=T0 + 11 * MINUTE, value=2.0))
    day.tick(T0 + 11 * MINUTE + TIMEOUT)
    day.tick(START + HOUR)

    assert day.scores == [
        ("r1", 0, -2.0, "NEXT_TURN"),  # regenerated
        ("r1b", 0, 4.0, "NEXT_TURN"),  # copied, continued
        ("r1", 1, -1.0, "LATE_FEEDBACK"),  # + long session
        ("r1b", 1, 5.0, "LATE_FEEDBACK"),
        ("r2", 0, 1.0, "SESSION_END"),
        ("x1", 0, -6.0, "SESSION_END"),  # reported, short session
        ("y1", 0, 0.0, "TIMEOUT"),
        ("y2", 0, 0.0, "TIMEOUT"),
    ]
    assert day.pairs == [
        ("REGENERATE", "r1b", "r1", 1.0),
        # r1 (-1) vs x1 (-6) across conversations: no pair, r1 was itself rejected
        ("IMPLICIT", "r1b", "x1", 1.0),  # 5 vs -6
        ("RATING", "y1", "y2", 0.75),
    ]
    for task in day.tasks:
        encode("annotation_task", task)
    # priorities: r2 new topic + engaged 5; r1 new topic 3; x1 reported 3 (its prompt is
    # c1's, so no new topic); y1 new topic 3; r1b engaged 2; y2 0 (y1's prompt).
    # Top 3 = r2 and two of the three 3s (seed 0's tie-break), then 1 uniform of the rest.
    assert [
        (t["response_id"], t["priority"], t["reasons"], t["sampled_by"]) for t in day.tasks
    ] == [
        ("r2", 5.0, ["new_topic", "engaged"], "TOP_PRIORITY"),
        ("x1", 3.0, ["edge_case:reported"], "TOP_PRIORITY"),
        ("y1", 3.0, ["new_topic"], "TOP_PRIORITY"),
        ("y2", 0.0, [], "UNIFORM"),
    ]
    assert {(t["window_start"], t["window_end"]) for t in day.tasks} == {(START, START + HOUR)}
