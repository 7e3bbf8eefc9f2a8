"""Rule (d) ANNOTATION: annotators' choices between two responses make a pair.

:class:`AnnotationPairMiner` keeps one state per key of the annotation-results topic
(the conversation id; the task's for a result without one). The record and the
weights: :mod:`prefloop.streams.preference_pair`.

A result whose ``overlap`` is 1 (every AnnotationResult v1 reads so) decides alone:
A or B makes a pair, anything else none.

A task given to k > 1 annotators (``overlap`` k) waits in the state until results of k
distinct annotators have arrived. A later result of an annotator replaces their
earlier one (a correction made before the task is decided); a result read again (the
same ``result_id``) changes nothing. Then the task is decided, once:

* the opinions are the choices A, B, TIE and BOTH_BAD (SKIP and UNKNOWN are none);
* the majority is the most frequent opinion, and there is none when two share the
  top count;
* agreement = the majority's count / the number of opinions.

A majority of A or B with agreement >= ``PairConfig.min_agreement`` makes one pair, as
a single result would, with the source offsets of all k results. Anything else makes
no pair and one :class:`~prefloop.streams.records.Rejected` naming the task, every
annotator's choice and the agreement against the threshold, e.g. ``annotators
disagree on task t-1: A by ann-1, B by ann-2 (agreement 0.50 < 0.66): no pair``; the
agent sends it to the dead-letter topic with the last result's bytes and offset.

A decided task is forgotten but for its id, kept among the key's last
``max_seen_pairs`` decided tasks (the emit-once bound), so reading its results again
or a late extra annotator's result makes no second pair or dead letter; its pair also
goes through the key's emit-once set of pair ids like any other. A task's overlap is
the largest any of its results names, and a result of a task already waiting joins it
whatever overlap it names. A task whose k results never all arrive stays pending in
its key's state, without a timeout (an annotator may answer days later): the console
is what must see that every task it gives out gets its k answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from prefloop.streams.config import PairConfig
from prefloop.streams.preference_pair import PairStep, Side, build_pair, emit_once
from prefloop.streams.records import Record, Rejected, SourceOffset, bounded_add

__all__ = ["AnnotationPairMiner", "annotation_pair"]

_OPINIONS = ("A", "B", "TIE", "BOTH_BAD")
# what a waiting task keeps of its first result to build the pair
_TASK_FIELDS = (
    "task_id",
    "prompt",
    "response_a",
    "response_b",
    "response_a_id",
    "response_b_id",
    "interaction_id",
    "conversation_id",
    "model_version",
)


def annotation_pair(
    result: Record, now: int, config: PairConfig | None = None, source: SourceOffset | None = None
) -> Record | None:
    """The ANNOTATION pair of an AnnotationResult; None for TIE, BOTH_BAD, SKIP, UNKNOWN.

    ``conversation_id`` falls back to the task id (the result topic's key when the
    conversation is unknown) and ``model_version`` to ``"unknown"``. The result's
    interaction id goes to the logged side when exactly one side is logged (the other
    being a generated alternative); with two logged sides it cannot be placed.
    """
    return _pair(result, result.get("choice"), now, config or PairConfig(), [source])


def _pair(
    result: Record,
    choice: str | None,
    now: int,
    config: PairConfig,
    sources: Iterable[SourceOffset | None],
) -> Record | None:
    if choice not in ("A", "B"):
        return None
    a = Side(result["response_a"], result.get("response_a_id"))
    b = Side(result["response_b"], result.get("response_b_id"))
    iid = result.get("interaction_id")
    if iid is not None and (a.response_id is None) != (b.response_id is None):
        if a.response_id is not None:
            a = Side(a.text, a.response_id, iid)
        else:
            b = Side(b.text, b.response_id, iid)
    chosen, rejected = (a, b) if choice == "A" else (b, a)
    return build_pair(
        prompt=result["prompt"],
        chosen=chosen,
        rejected=rejected,
        source="ANNOTATION",
        weight=config.annotation_weight,
        conversation_id=result.get("conversation_id") or result["task_id"],
        user_id=None,  # the annotator is not the user behind the conversation
        model_version=result.get("model_version") or "unknown",
        source_offsets=sources,
        now=now,
    )


class AnnotationPairMiner:
    """Rule (d) with overlap and emit-once, one state per result-topic key.

    State: ``{"seen": {pair_id: True}}``, and once a task has overlap > 1,
    ``"pending": {task_id: {"overlap": k, "result": {...}, "votes": {annotator_id:
    {"result_id", "choice", "source"}}}}`` and ``"decided": {task_id: True}``.
    """

    def __init__(self, config: PairConfig | None = None) -> None:
        self.config = config or PairConfig()

    @staticmethod
    def new_state() -> dict[str, Any]:
        return {"seen": {}}

    def on_result(
        self,
        state: dict[str, Any] | None,
        result: Record,
        now: int,
        source: SourceOffset | None = None,
    ) -> PairStep:
        """Take one AnnotationResult; at most one pair or one rejected task comes out."""
        state = state if state is not None else self.new_state()
        task = result["task_id"]
        if task in state.get("decided", {}):
            return PairStep(state)
        if int(result.get("overlap") or 1) <= 1 and task not in state.get("pending", {}):
            return self._alone(state, result, now, source)
        return self._join(state, result, now, source)

    def _alone(
        self, state: dict[str, Any], result: Record, now: int, source: SourceOffset | None
    ) -> PairStep:
        pair = annotation_pair(result, now, self.config, source)
        if pair is None:
            return PairStep(state)
        return self._emit(state, pair)

    def _emit(self, state: dict[str, Any], pair: Record) -> PairStep:
        seen, pairs = emit_once(state["seen"], [pair], self.config.max_seen_pairs)
        if not pairs:
            return PairStep(state)
        return PairStep({**state, "seen": seen}, pairs)

    def _join(
        self, state: dict[str, Any], result: Record, now: int, source: SourceOffset | None
    ) -> PairStep:
        task, annotator = result["task_id"], result["annotator_id"]
        pending = dict(state.get("pending", {}))
        held = pending.get(task) or {
            "overlap": 1,
            "result": {name: result.get(name) for name in _TASK_FIELDS},
            "votes": {},
        }
        earlier = held["votes"].get(annotator)
        if earlier is not None and earlier["result_id"] == result["result_id"]:
            return PairStep(state)  # the same result read again
        vote = {"result_id": result["result_id"], "choice": result["choice"], "source": source}
        votes = {**held["votes"], annotator: vote}
        overlap = max(held["overlap"], int(result.get("overlap") or 1))
        if len(votes) < overlap:
            pending[task] = {**held, "overlap": overlap, "votes": votes}
            return PairStep({**state, "pending": pending})
        pending.pop(task, None)
        decided = bounded_add(state.get("decided", {}), task, self.config.max_seen_pairs)
        state = {**state, "pending": pending, "decided": decided}
        return self._decide(state, held["result"], votes, result, now, source)

    def _decide(
        self,
        state: dict[str, Any],
        task: Record,
        votes: dict[str, Any],
        last: Record,
        now: int,
        source: SourceOffset | None,
    ) -> PairStep:
        """The pair of a task all its annotators answered, or the reason it has none."""
        opinions = Counter(v["choice"] for v in votes.values() if v["choice"] in _OPINIONS)
        ranked = opinions.most_common()
        top = ranked[0][1] if ranked else 0
        tied = [choice for choice, count in ranked if count == top]
        majority = tied[0] if len(tied) == 1 else None
        agreement = top / sum(opinions.values()) if opinions else 0.0
        threshold = self.config.min_agreement
        if agreement >= threshold:
            pair = _pair(task, majority, now, self.config, [v["source"] for v in votes.values()])
            if pair is not None:  # the majority is A or B
                return self._emit(state, pair)
        name = task["task_id"]
        choices = ", ".join(f"{v['choice']} by {annotator}" for annotator, v in votes.items())
        share, bar = _shares(agreement, threshold)
        error, what = "AnnotatorsDisagree", "annotators disagree on"
        if not opinions:
            error, what, why = "NoAnnotationPair", "no annotator gave an opinion on", ""
        elif agreement < threshold:
            why = f" (agreement {share} < {bar})"
        elif majority is None:
            why = f" ({' and '.join(tied)} tie at agreement {share}: no majority)"
        else:  # agreeing on TIE or BOTH_BAD
            error, what = "NoAnnotationPair", "annotators find neither response better on"
            why = f" ({majority} at agreement {share} >= {bar})"
        reason = f"{what} task {name}: {choices}{why}: no pair"
        rejected = Rejected("annotation_result", last, reason, source, error)
        return PairStep(state, rejected=[rejected])


def _shares(agreement: float, threshold: float) -> tuple[str, str]:
    """The agreement and the threshold as printed: two decimals, more when those hide
    which is larger (2/3 against 0.67)."""
    for digits in (2, 4):
        share, bar = f"{agreement:.{digits}f}", f"{threshold:.{digits}f}"
        if share != bar or agreement == threshold:
            break
    return share, bar
