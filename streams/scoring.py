"""Implicit scoring: one conversation's Interactions and Feedback into ScoredInteractions.

The :class:`Scorer` is a state machine over one conversation (the Kafka key of both
input topics). Each call takes the conversation's state (a JSON-serialisable dict,
``None`` for a new conversation), one event and ``now`` (ms), and returns a
:class:`ScoringStep`: the new state, the ScoredInteraction records to emit and the
feedback to dead-letter. The state passed in is never modified.

Lifecycle of a response:

* **open** from its Interaction on; signals (copy, regenerate, report...) accumulate;
* **settled** exactly once, emitting revision 0, when the next turn's Interaction
  arrives (``NEXT_TURN``; the latest response of each earlier turn counts as
  *continued*), its session ends (``SESSION_END``; the feedback's value is the
  session length in seconds and applies to every response of that session), or the
  conversation has been idle ``inactivity_timeout_s`` (``TIMEOUT``, from
  :meth:`Scorer.on_timer`);
* after that, an event that changes the record (score, signals, rating, thumbs)
  emits revision n + 1 with ``LATE_FEEDBACK``; one that changes nothing emits none.

Implicit score: the sum of the weights of the signals seen (product defaults:
continued +2, copied +2, session > 300 s +1, regenerated -2, session < 30 s -1,
reported -5, edited 0). Rating and thumbs are carried in their own fields.

Duplicates (a feedback ``event_id`` or an ``interaction_id``/``response_id`` seen
before) emit nothing and return the very state given (``step.state is state``), as
does a timer call with nothing due. Feedback about a response not
seen yet is held (at most ``max_pending`` per conversation, each for
``unknown_grace_s``); its interaction's arrival applies it, otherwise
:meth:`Scorer.on_timer` returns it as :class:`Rejected` for the dead-letter topic
(as does the oldest held one when more than ``max_pending`` wait).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prefloop.streams.config import ScoringConfig
from prefloop.streams.records import Record, Rejected, SourceOffset, bounded_add

__all__ = ["UNSCORED", "Scorer", "ScoringStep", "implicit_score", "is_scored"]

UNSCORED = ("prefloop_scored", "false")
"""The Interaction ``metadata`` entry of an answer that is logged and stored but never
scored, and so never sampled for annotation or paired: one no user saw, such as the
alternative the console asks the router for to judge a task against (sent as OpenAI's
``metadata`` with the request)."""


def is_scored(interaction: Record) -> bool:
    """Whether the stream agents score ``interaction`` (see :data:`UNSCORED`)."""
    key, value = UNSCORED
    return (interaction.get("metadata") or {}).get(key) != value


_INTERACTION_FIELDS = (
    "interaction_id",
    "response_id",
    "regenerates",
    "conversation_id",
    "turn",
    "ts",
    "user_id",
    "session_id",
    "experiment_id",
    "arm",
    "model_version",
)
_FLAGS = {
    "COPY": "copied",
    "CONTINUE": "continued",
    "REGENERATE": "regenerated",
    "EDIT": "edited",
    "REPORT": "reported",
}
_MAX_ENDED_SESSIONS = 64


@dataclass(frozen=True)
class ScoringStep:
    """What one event did: the new state, the scores to emit, the feedback to dead-letter."""

    state: dict[str, Any]
    scores: list[Record] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def implicit_score(signals: dict[str, Any], config: ScoringConfig) -> float:
    """The implicit score of a ScoredInteraction ``signals`` dict under ``config``."""
    w = config.weights
    score = 0.0
    for name, weight in (
        ("continued", w.continued),
        ("copied", w.copied),
        ("regenerated", w.regenerated),
        ("reported", w.reported),
        ("edited", w.edited),
    ):
        if signals.get(name):
            score += weight
    seconds = signals.get("session_seconds")
    if seconds is not None:
        if seconds > config.long_session_s:
            score += w.long_session
        elif seconds < config.short_session_s:
            score += w.short_session
    return score


class _Edit:
    """Copy-on-write view of a state: containers and entries are copied when first changed."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = dict(state)
        self._copied: set[str] = set()
        self.touched: dict[str, None] = {}  # response ids changed by this call, in order
        self.evict: list[str] = []  # response ids to drop once flushed

    def own(self, name: str) -> Any:
        if name not in self._copied:
            value = self.state[name]
            self.state[name] = dict(value) if isinstance(value, dict) else list(value)
            self._copied.add(name)
        return self.state[name]

    def entry(self, response_id: str) -> dict[str, Any]:
        """The response's entry, copied for writing once per call."""
        if response_id not in self.touched:
            responses = self.own("responses")
            old = responses[response_id]
            responses[response_id] = {**old, "signals": dict(old["signals"])}
            self.touched[response_id] = None
        entry: dict[str, Any] = self.state["responses"][response_id]
        return entry

    def find(self, record: Record) -> str | None:
        """The known response a feedback is about: by response_id, else by interaction_id."""
        rid = record.get("response_id")
        if rid in self.state["responses"]:
            return str(rid)
        rid = self.state["interactions"].get(record.get("interaction_id"))
        return str(rid) if rid is not None else None


class Scorer:
    """Scores the responses of one conversation; see the module docstring for the rules."""

    def __init__(self, config: ScoringConfig | None = None) -> None:
        self.config = config or ScoringConfig()
        self._timeout_ms = int(self.config.inactivity_timeout_s * 1000)
        self._grace_ms = int(self.config.unknown_grace_s * 1000)
        self._forget_ms = int(self.config.forget_after_s * 1000)

    @staticmethod
    def new_state() -> dict[str, Any]:
        """The state of a conversation nothing is known about."""
        return {
            "responses": {},  # response_id -> entry
            "interactions": {},  # interaction_id -> response_id
            "events": {},  # feedback event ids seen (ordered, bounded)
            "pending": [],  # held feedback: {"feedback", "source", "since"}
            "sessions": {},  # ended session_id -> seconds
            "seq": 0,  # arrival counter of interactions
            "last_activity": None,  # `now` of the latest event (ms)
        }

    # -- events ------------------------------------------------------------

    def on_interaction(
        self,
        state: dict[str, Any] | None,
        interaction: Record,
        now: int,
    ) -> ScoringStep:
        """Take one Interaction; settles earlier turns (NEXT_TURN) and applies held feedback."""
        state = state if state is not None else self.new_state()
        rid, iid = interaction["response_id"], interaction["interaction_id"]
        if rid in state["responses"] or iid in state["interactions"]:
            return ScoringStep(state)
        edit = _Edit(state)
        edit.state["last_activity"] = now
        edit.state["seq"] = state["seq"] + 1
        entry: dict[str, Any] = {name: interaction.get(name) for name in _INTERACTION_FIELDS}
        entry.update(
            seq=edit.state["seq"],
            signals={
                "continued": False,
                "copied": False,
                "regenerated": False,
                "edited": False,
                "reported": False,
                "session_seconds": None,
            },
            rating=None,
            rating_ts=None,
            thumbs=None,
            thumbs_ts=None,
            settled=None,
            revision=None,
            emitted=None,
        )
        edit.own("responses")[rid] = entry
        edit.own("interactions")[iid] = rid
        edit.touched[rid] = None

        regenerates = entry["regenerates"]
        if regenerates in edit.state["responses"]:
            edit.entry(regenerates)["signals"]["regenerated"] = True
        if any(e["regenerates"] == rid for e in state["responses"].values()):
            entry["signals"]["regenerated"] = True  # its regeneration arrived first

        rejected = self._release_pending(edit, rid, iid)
        self._settle_earlier_turns(edit)
        session = entry["session_id"]
        if session in edit.state["sessions"]:
            self._end_session(edit, session, edit.state["sessions"][session])
        self._evict(edit)
        return ScoringStep(edit.state, self._flush(edit, now), rejected)

    def on_feedback(
        self,
        state: dict[str, Any] | None,
        feedback: Record,
        now: int,
        source: SourceOffset | None = None,
    ) -> ScoringStep:
        """Take one Feedback; emits a revision when it changes a settled response."""
        state = state if state is not None else self.new_state()
        event_id = feedback["event_id"]
        if event_id in state["events"]:
            return ScoringStep(state)
        edit = _Edit(state)
        edit.state["events"] = bounded_add(state["events"], event_id, self.config.max_seen_events)
        edit.state["last_activity"] = now
        rejected: list[Rejected] = []
        problem = self._apply(edit, feedback)
        if problem == "hold":
            rejected.extend(self._hold(edit, feedback, source, now))
        elif problem is not None:
            rejected.append(Rejected("feedback", feedback, problem, source, "InvalidFeedback"))
        return ScoringStep(edit.state, self._flush(edit, now), rejected)

    def on_timer(self, state: dict[str, Any], now: int) -> ScoringStep:
        """Settle an idle conversation (TIMEOUT) and give up on feedback held too long.

        When nothing is due, ``step.state`` is the very state given: the agent can
        skip the table write (``if step.state is not state``).
        """
        deadline = self.next_deadline(state)
        if deadline is None or now < deadline:
            return ScoringStep(state)
        edit = _Edit(state)
        rejected: list[Rejected] = []
        due = [p for p in state["pending"] if p["since"] + self._grace_ms <= now]
        if due:
            edit.state["pending"] = [p for p in state["pending"] if p not in due]
            for p in due:
                fb = p["feedback"]
                reason = (
                    f"no Interaction with response_id {fb.get('response_id')!r} (interaction_id "
                    f"{fb.get('interaction_id')!r}) arrived in conversation "
                    f"{fb.get('conversation_id')!r} within {self.config.unknown_grace_s:g} s of "
                    f"this {fb.get('kind')} feedback"
                )
                rejected.append(Rejected("feedback", fb, reason, p["source"]))
        last = state["last_activity"]
        if last is not None and last + self._timeout_ms <= now:
            for rid, entry in state["responses"].items():
                if entry["settled"] is None:
                    edit.entry(rid)["settled"] = "TIMEOUT"
        return ScoringStep(edit.state, self._flush(edit, now), rejected)

    # -- for the agent's timer and table housekeeping ------------------------

    def next_deadline(self, state: dict[str, Any]) -> int | None:
        """The earliest ``now`` at which :meth:`on_timer` would do something (None: never)."""
        deadlines = [p["since"] + self._grace_ms for p in state["pending"]]
        last = state["last_activity"]
        if last is not None and any(e["settled"] is None for e in state["responses"].values()):
            deadlines.append(last + self._timeout_ms)
        return min(deadlines) if deadlines else None

    def can_forget(self, state: dict[str, Any], now: int) -> bool:
        """Whether the conversation is settled and idle ``forget_after_s``: drop its state.

        Feedback arriving after that is unknown and ends up dead-lettered.
        """
        last = state["last_activity"]
        return (
            not state["pending"]
            and all(e["settled"] is not None for e in state["responses"].values())
            and (last is None or last + self._forget_ms <= now)
        )

    # -- internals ------------------------------------------------------------

    def _apply(self, edit: _Edit, fb: Record) -> str | None:
        """Apply one feedback; ``"hold"`` when its response is unknown, or a problem."""
        kind, value = fb.get("kind"), fb.get("value")
        rid = edit.find(fb)
        if kind == "SESSION_END":
            if value is None or not math.isfinite(value) or value < 0:
                return (
                    f"SESSION_END value must be the session length in seconds >= 0, not {value!r}"
                )
            session = fb.get("session_id")
            if session is None and rid is not None:
                session = edit.state["responses"][rid]["session_id"]
            if session is None:
                return "hold"
            sessions = bounded_add(edit.state["sessions"], session, _MAX_ENDED_SESSIONS)
            sessions[session] = float(value)
            edit.state["sessions"] = sessions
            self._end_session(edit, session, float(value))
            return None
        if rid is None:
            return "hold"
        if kind == "RATING":
            if value is None or not 1 <= value <= 5:
                return f"RATING value must be 1 to 5, not {value!r}"
            entry = edit.entry(rid)
            if entry["rating_ts"] is None or fb["ts"] >= entry["rating_ts"]:
                entry.update(rating=float(value), rating_ts=fb["ts"])
        elif kind == "THUMBS":
            if value not in (1, -1):
                return f"THUMBS value must be +1 or -1, not {value!r}"
            entry = edit.entry(rid)
            if entry["thumbs_ts"] is None or fb["ts"] >= entry["thumbs_ts"]:
                entry.update(thumbs=int(value), thumbs_ts=fb["ts"])
        elif kind in _FLAGS and not edit.state["responses"][rid]["signals"][_FLAGS[kind]]:
            edit.entry(rid)["signals"][_FLAGS[kind]] = True
        # COMMENT and kinds newer than this code (UNKNOWN) do not change the score
        return None

    def _hold(
        self, edit: _Edit, fb: Record, source: SourceOffset | None, now: int
    ) -> list[Rejected]:
        pending = edit.own("pending")
        pending.append({"feedback": fb, "source": source, "since": now})
        rejected = []
        while len(pending) > self.config.max_pending:
            old = pending.pop(0)
            reason = (
                f"{old['feedback'].get('kind')} feedback for unknown response_id "
                f"{old['feedback'].get('response_id')!r} dropped: more than max_pending="
                f"{self.config.max_pending} feedback events waited for their interaction"
            )
            rejected.append(Rejected("feedback", old["feedback"], reason, old["source"]))
        return rejected

    def _release_pending(self, edit: _Edit, rid: str, iid: str) -> list[Rejected]:
        mine = [
            p
            for p in edit.state["pending"]
            if p["feedback"].get("response_id") == rid
            or p["feedback"].get("interaction_id") == iid
            or p["feedback"].get("kind") == "SESSION_END"
        ]
        if not mine:
            return []
        edit.state["pending"] = [p for p in edit.state["pending"] if p not in mine]
        rejected = []
        for p in mine:
            problem = self._apply(edit, p["feedback"])
            if problem == "hold":  # a SESSION_END about another, still unknown response
                edit.own("pending").append(p)
            elif problem is not None:
                rejected.append(Rejected("feedback", p["feedback"], problem, p["source"]))
        return rejected

    def _settle_earlier_turns(self, edit: _Edit) -> None:
        """Every turn before the latest was continued (its latest response) and is settled."""
        responses = edit.state["responses"]
        last_turn = max(e["turn"] for e in responses.values())
        latest: dict[int, dict[str, Any]] = {}
        for e in responses.values():
            if e["turn"] < last_turn:
                best = latest.get(e["turn"])
                if best is None or (e["ts"], e["seq"]) > (best["ts"], best["seq"]):
                    latest[e["turn"]] = e
        for e in latest.values():
            if not e["signals"]["continued"]:
                edit.entry(e["response_id"])["signals"]["continued"] = True
        for rid, e in list(responses.items()):
            if e["turn"] < last_turn and e["settled"] is None:
                edit.entry(rid)["settled"] = "NEXT_TURN"

    def _end_session(self, edit: _Edit, session: str, seconds: float) -> None:
        for rid, e in list(edit.state["responses"].items()):
            if e["session_id"] != session:
                continue
            if e["signals"]["session_seconds"] != seconds:
                edit.entry(rid)["signals"]["session_seconds"] = seconds
            if e["settled"] is None:
                edit.entry(rid)["settled"] = "SESSION_END"

    def _evict(self, edit: _Edit) -> None:
        """Keep at most ``max_responses``: the oldest settled go first."""
        responses = edit.state["responses"]
        excess = len(responses) - self.config.max_responses
        if excess <= 0:
            return
        order = sorted(responses.values(), key=lambda e: (e["settled"] is None, e["seq"]))
        for victim in order[:excess]:
            if victim["settled"] is None:  # open too long among too many: score it now
                edit.entry(victim["response_id"])["settled"] = "TIMEOUT"
            edit.evict.append(victim["response_id"])

    def _content(self, entry: dict[str, Any]) -> list[Any]:
        return [
            implicit_score(entry["signals"], self.config),
            entry["signals"],
            entry["rating"],
            entry["thumbs"],
        ]

    def _flush(self, edit: _Edit, now: int) -> list[Record]:
        """Emit revision 0 for newly settled responses and a revision for changed settled ones."""
        scores = []
        responses = edit.state["responses"]
        for rid in sorted(edit.touched, key=lambda r: (responses[r]["ts"], responses[r]["seq"])):
            entry = responses[rid]
            if entry["settled"] is None:
                continue
            content = self._content(entry)
            if entry["revision"] is None:
                entry["revision"], reason = 0, entry["settled"]
            elif content != entry["emitted"]:
                entry["revision"], reason = entry["revision"] + 1, "LATE_FEEDBACK"
            else:
                continue
            entry["emitted"] = [content[0], dict(content[1]), content[2], content[3]]
            scores.append(self._record(entry, content, reason, now))
        for rid in edit.evict:
            victim = edit.own("responses").pop(rid)
            edit.own("interactions").pop(victim["interaction_id"], None)
        return scores

    @staticmethod
    def _record(entry: dict[str, Any], content: list[Any], reason: str, now: int) -> Record:
        score, signals, rating, thumbs = content
        return {
            "interaction_id": entry["interaction_id"],
            "response_id": entry["response_id"],
            "conversation_id": entry["conversation_id"],
            "user_id": entry["user_id"],
            "model_version": entry["model_version"],
            "experiment_id": entry["experiment_id"],
            "arm": entry["arm"],
            "revision": entry["revision"],
            "implicit_score": float(score),
            "signals": dict(signals),
            "rating": rating,
            "thumbs": thumbs,
            "settled_reason": reason,
            "ts": int(now),
        }
