"""A crowd of simulated users: they chat through the A/B router, and signal through the SDK.

Each user asks the questions the built-in chat corpus knows (one topic a session),
through the official ``openai`` client against the router (their id as the OpenAI
``user`` field, so the router keeps them on one arm), and reacts to each answer as
:class:`.behaviour.Behaviour` draws it: the signals go to Kafka through the Python
SDK, as a real chat app's would (rating, copy, report, a next turn, the session's
end and its duration). A regenerate is the new answer requested with
``regenerate_of``: the router logs it, and the REGENERATE feedback, itself, as it logs
every Interaction.

A session's draws come from its own generator, seeded by (seed, user, session), so
the same seed gives the same users whatever the threads' timing.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from openai import APIError, OpenAI

from prefloop.loop.users.behaviour import Behaviour
from prefloop.tiny_model import QUESTIONS, TOPICS
from prefloop_sdk import FeedbackClient, InteractionIds

__all__ = ["MAX_TOKENS", "TEMPERATURE", "Crowd", "CrowdStats"]

MAX_TOKENS = 48  # an answer's budget, as a chat app sets it
TEMPERATURE = 0.7  # a chat app's usual sampling temperature


@dataclass
class CrowdStats:
    """What the crowd did so far (updated under the crowd's lock)."""

    sessions: int = 0
    answers: int = 0
    signals: Counter[str] = field(default_factory=Counter)
    by_version: Counter[str] = field(default_factory=Counter)
    failed: int = 0  # sessions given up on an error of the router (after the client's retries)


class Crowd:
    """``users`` simulated users, ``user-<seed>-<n>``, on the router at ``base_url``."""

    def __init__(
        self,
        base_url: str,
        feedback: FeedbackClient,
        *,
        users: int,
        seed: int = 0,
        behaviour: Behaviour | None = None,
        max_turns: int = 2,
        max_regenerates: int = 2,
        max_tokens: int = MAX_TOKENS,
        temperature: float = TEMPERATURE,
        threads: int = 4,
    ) -> None:
        if users < 1:
            raise ValueError(f"Crowd(users={users}): use at least 1 user")
        self.client = OpenAI(base_url=f"{base_url}/v1", api_key="prefloop", max_retries=3)
        self.feedback, self.users, self.seed = feedback, users, seed
        self.behaviour = behaviour or Behaviour()
        self.max_turns, self.max_regenerates = max_turns, max_regenerates
        self.max_tokens, self.temperature, self.threads = max_tokens, temperature, threads
        self.stats = CrowdStats()
        self._lock = threading.Lock()

    def user_id(self, n: int) -> str:
        return f"user-{self.seed}-{n}"

    def run(
        self,
        *,
        sessions_per_user: int | None = None,
        stop: threading.Event | None = None,
        on_session: Callable[[CrowdStats], None] | None = None,
    ) -> CrowdStats:
        """Sessions for every user, round after round, until ``sessions_per_user`` or ``stop``.

        The threads take the next session in round-robin order (every user's first,
        then every user's second, ...), so each user has their turn whatever the
        number of threads; each session is seeded by its own (user, number).
        """
        stop = stop or threading.Event()
        numbers = range(sessions_per_user) if sessions_per_user is not None else itertools.count()
        order = ((n, number) for number in numbers for n in range(self.users))
        taking = threading.Lock()

        def worker() -> None:
            while not stop.is_set():
                with taking:
                    job = next(order, None)
                if job is None:
                    return
                try:
                    self.session(*job)
                except APIError:  # a user whose chat failed leaves, as a person would
                    with self._lock:
                        self.stats.failed += 1
                if on_session is not None:
                    on_session(self.stats)

        with ThreadPoolExecutor(self.threads, thread_name_prefix="crowd") as pool:
            for future in [pool.submit(worker) for _ in range(self.threads)]:
                future.result()
        return self.stats

    def session(self, n: int, number: int) -> None:
        """One session of user ``n``: a question, its answers, the user's signals."""
        rng = random.Random(f"{self.seed}/{n}/{number}")
        topic = rng.choice(TOPICS)
        asked = rng.sample(QUESTIONS, self.max_turns)
        messages: list[dict[str, str]] = [{"role": "user", "content": asked[0].format(topic)}]
        conversation: str | None = None
        regenerate_of: str | None = None
        regenerates, turn = 0, 0
        while True:
            answer, ids, version = self._ask(n, messages, conversation, regenerate_of)
            conversation = ids.conversation_id
            reaction = self.behaviour.react(answer, rng, turns_left=self.max_turns - 1 - turn)
            signals = []
            if reaction.rating is not None:
                self.feedback.rate(ids, reaction.rating)
                signals.append("rating")
            if reaction.copy:
                self.feedback.copy(ids)
                signals.append("copy")
            if reaction.report is not None:
                self.feedback.report(ids, reaction.report)
                signals.append("report")
            regenerate = reaction.regenerate and regenerates < self.max_regenerates
            if regenerate:  # the router records REGENERATE when asked with regenerate_of
                signals.append("regenerate")
            self._count(version, signals, ended=False)
            if regenerate:
                regenerates, regenerate_of = regenerates + 1, ids.response_id
                continue
            regenerate_of = None
            if reaction.next_turn:
                turn += 1
                messages += [{"role": "assistant", "content": answer},
                             {"role": "user", "content": asked[turn].format(topic)}]  # fmt: skip
                continue
            seconds = reaction.session_s if reaction.session_s is not None else rng.uniform(5, 60)
            self.feedback.session_end(ids, round(seconds, 1))
            self._count(version, ["session_end"], ended=True)
            return

    def _ask(
        self, n: int, messages: list[dict[str, str]], conversation: str | None,
        regenerate_of: str | None,
    ) -> tuple[str, InteractionIds, str]:  # fmt: skip
        extra: dict[str, Any] = {}
        if conversation is not None:
            extra["conversation_id"] = conversation
        if regenerate_of is not None:
            extra["regenerate_of"] = regenerate_of
        raw = self.client.chat.completions.with_raw_response.create(
            model="prefloop", messages=messages, user=self.user_id(n),  # type: ignore[arg-type]
            max_tokens=self.max_tokens, temperature=self.temperature, extra_body=extra,
        )  # fmt: skip
        answer = raw.parse().choices[0].message.content or ""
        headers = raw.headers
        ids = InteractionIds(
            headers["x-prefloop-interaction"], headers["x-prefloop-response"],
            headers["x-prefloop-conversation"], self.user_id(n),
        )  # fmt: skip
        return answer, ids, headers.get("x-prefloop-model-version", "?")

    def _count(self, version: str, signals: list[str], *, ended: bool) -> None:
        with self._lock:
            self.stats.signals.update(signals)
            if ended:
                self.stats.sessions += 1
            else:
                self.stats.answers += 1
                self.stats.by_version[version] += 1
