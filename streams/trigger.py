"""The retrain trigger: pairs per base model version into one RETRAIN_REQUESTED.

:class:`RetrainTrigger` keeps one state per model version (the key of the retrain
queue, where every PreferencePair is re-published keyed by the version that served
it). Each new pair (deduplicated by ``pair_id``) is counted with its queue offset.
When the count reaches ``threshold`` and no training of that lineage is running, it
emits one ModelEvent RETRAIN_REQUESTED naming the pairs: ``pair_count`` and
``pair_ranges``, the queue offsets from the first to the last counted pair (the
range may also hold pairs of other versions sharing the partition; the trainer takes
those whose ``model_version`` is the one requested). The count starts again at zero.

A lineage is busy from its request until a ModelEvent about a version trained from
it decides the attempt (TRAINING_FAILED, GATES_FAILED, ROLLED_BACK, PROMOTED,
ARCHIVED; TRAINING_STARTED refreshes it), or ``busy_timeout_s`` passes with no news
(a trainer that died silently). A candidate that passed its gates keeps its lineage
busy through its A/B: a second candidate of the same parent could not enter an A/B
before the first one's verdict, and training it would take the CPUs or GPUs that
serve the experiment. Pairs keep counting while it is busy; when it ends with the
threshold already reached (a rollback), the next request goes out at once.

State (JSON-serialisable; never modified in place)::

    {"count": int, "first": {partition: offset}, "last": {partition: offset},
     "busy_since": int | None, "busy_candidate": str | None, "requests": int,
     "seen": {pair_id: True}}

A version whose candidate is promoted is retired: users no longer get it, so the
pairs still mined from its conversations count towards nothing (``"retired": True``).

``busy_candidate`` is the version the pending request trains (named as the trainer
names it, :func:`prefloop.model_registry.candidate_version`): only events about it
refresh or end the attempt. An earlier attempt's late events (ARCHIVED after its
GATES_FAILED, a replay) or a forced training's do not free the lineage of a request
still under way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefloop.model_registry import candidate_version
from prefloop.streams.ids import derived_id
from prefloop.streams.records import Record, SourceOffset, bounded_add

__all__ = ["ENDS_TRAINING", "RetrainTrigger", "TriggerStep"]

ENDS_TRAINING = frozenset(
    {"TRAINING_FAILED", "GATES_FAILED", "ROLLED_BACK", "PROMOTED", "ARCHIVED"}
)
"""ModelEvent kinds that decide a training attempt of their ``parent_version``."""

_MAX_SEEN = 4096


@dataclass(frozen=True)
class TriggerStep:
    state: dict[str, Any]
    events: list[Record] = field(default_factory=list)


class RetrainTrigger:
    """Counts pairs per model version and requests a retrain at the threshold."""

    def __init__(self, threshold: int = 500, busy_timeout_s: float = 6 * 3600.0) -> None:
        if threshold < 1:
            raise ValueError(f"threshold={threshold} must be >= 1")
        self.threshold = threshold
        self.busy_timeout_ms = int(busy_timeout_s * 1000)

    @staticmethod
    def new_state() -> dict[str, Any]:
        return {"count": 0, "first": {}, "last": {}, "busy_since": None, "busy_candidate": None,
                "requests": 0, "seen": {}}  # fmt: skip

    def on_pair(
        self, state: dict[str, Any] | None, pair: Record, source: SourceOffset, now: int
    ) -> TriggerStep:
        """Count one PreferencePair read from the queue at ``source``."""
        state = state if state is not None else self.new_state()
        pair_id = pair["pair_id"]
        if pair_id in state["seen"]:
            return TriggerStep(state)
        partition = str(source["partition"])
        new = {
            **state,
            "count": state["count"] + 1,
            "first": {partition: source["offset"], **state["first"]},
            "last": {**state["last"], partition: source["offset"]},
            "seen": bounded_add(state["seen"], pair_id, _MAX_SEEN),
        }
        return self._maybe_request(new, pair["model_version"], source["topic"], now)

    def on_model_event(self, state: dict[str, Any] | None, event: Record, now: int) -> TriggerStep:
        """Take a ModelEvent about a version trained from this one (its ``parent_version``)."""
        state = state if state is not None else self.new_state()
        kind, candidate = event["kind"], state.get("busy_candidate")
        if state["busy_since"] is None or candidate not in (None, event["model_version"]):
            return TriggerStep(state)  # idle, or about another attempt than the one under way
        if kind == "TRAINING_STARTED":
            return TriggerStep({**state, "busy_since": max(state["busy_since"], now)})
        if kind not in ENDS_TRAINING:
            return TriggerStep(state)
        if kind == "PROMOTED":  # users get its candidate now: no retrain of this one again
            return TriggerStep({**state, "busy_since": None, "busy_candidate": None,
                                "retired": True, "count": 0, "first": {}, "last": {}})  # fmt: skip
        return TriggerStep({**state, "busy_since": None, "busy_candidate": None})

    def ready(self, state: dict[str, Any], now: int) -> bool:
        """Whether a request would go out now (threshold reached, lineage idle)."""
        busy = state["busy_since"] is not None and now - state["busy_since"] < self.busy_timeout_ms
        return state["count"] >= self.threshold and not busy and not state.get("retired")

    def request_if_ready(
        self, state: dict[str, Any], model_version: str, topic: str, now: int
    ) -> TriggerStep:
        """After an outcome freed the lineage: the request that was waiting, if any."""
        return self._maybe_request(state, model_version, topic, now)

    def _maybe_request(
        self, state: dict[str, Any], model_version: str, topic: str, now: int
    ) -> TriggerStep:
        if not self.ready(state, now):
            return TriggerStep(state)
        ranges = [
            {
                "topic": topic,
                "partition": int(p),
                "first_offset": int(state["first"][p]),
                "last_offset": int(state["last"][p]),
            }
            for p in sorted(state["first"], key=int)
        ]
        number = state["requests"] + 1
        # the ranges in the id too: a worker whose count of requests started again (its
        # table lost) names new pairs, and the trainer must not take them for a replay
        span = ",".join(f"{r['partition']}:{r['first_offset']}-{r['last_offset']}" for r in ranges)
        event = {
            "event_id": derived_id("retrain-requested", model_version, str(number), topic, span),
            "ts": int(now),
            "kind": "RETRAIN_REQUESTED",
            "model_version": model_version,
            "parent_version": None,
            "experiment_id": None,
            "artifact_uri": None,
            "pair_count": int(state["count"]),
            "pair_ranges": ranges,
            "metrics": {"threshold": float(self.threshold)},
            "detail": f"{state['count']} preference pairs on {model_version} since its last "
            f"training (threshold {self.threshold}); request {number}",
        }
        new = {
            **state,
            "count": 0,
            "first": {},
            "last": {},
            "busy_since": int(now),
            "busy_candidate": candidate_version(model_version, event["event_id"]),
            "requests": number,
        }
        return TriggerStep(new, [event])
