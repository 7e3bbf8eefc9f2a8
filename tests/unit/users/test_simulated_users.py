"""The simulated users: a hidden preference for one-sentence answers, seen on average."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from prefloop.loop.users.behaviour import Behaviour, Reaction
from prefloop.loop.users.preference import judge, liking, sentences

pytestmark = pytest.mark.unit

SHORT = "Start with the basics of chess, then practise a little every day."
LONG = (
    "Thanks for asking. Chess works best when you keep things simple. "
    "Take your time and do not worry about small mistakes."
)


@pytest.mark.parametrize(
    ("text", "count"),
    [("", 0), ("   ", 0), ("Canberra.", 1), ("Sure! It works.", 2), (SHORT, 1), (LONG, 3),
     ("One. And an unfinished", 2), ("Wait... what?!", 2)],
)  # fmt: skip
def test_sentences_are_counted_as_a_reader_would(text: str, count: int) -> None:
    assert sentences(text) == count


def test_the_judge_is_the_users_liking_and_prefers_the_concise_answer() -> None:
    prompt = [{"role": "user", "content": "How do I get better at chess?"}]
    assert judge(prompt, SHORT) == liking(SHORT) > judge(prompt, LONG) == liking(LONG)
    assert liking("") < liking(LONG)
    # a cut answer is not a concise one: no reward for ending the turn after a comma
    for cut in ("I am not sure,", "Start with the basics of chess, then", SHORT[:-1]):
        assert liking(cut) == liking("") < liking(LONG), cut


def _reactions(response: str, n: int, seed: int, behaviour: Behaviour) -> list[Reaction]:
    rng = random.Random(seed)
    return [behaviour.react(response, rng, turns_left=1) for _ in range(n)]


def _rate(reactions: list[Reaction], signal: str) -> float:
    return sum(bool(getattr(r, signal)) for r in reactions) / len(reactions)


def test_the_preference_shows_in_the_signals_on_average() -> None:
    behaviour = Behaviour()
    short, long = _reactions(SHORT, 4000, 1, behaviour), _reactions(LONG, 4000, 2, behaviour)
    # liked: noise / 2 + (1 - noise) * liking
    assert _rate(short, "liked") == pytest.approx(0.05 + 0.9 * liking(SHORT), abs=0.03)
    assert _rate(long, "liked") == pytest.approx(0.05 + 0.9 * liking(LONG), abs=0.03)
    assert _rate(long, "regenerate") > 3 * _rate(short, "regenerate")
    assert _rate(short, "copy") > 3 * _rate(long, "copy")
    assert 0 < _rate(long, "report") < 0.05  # rarely
    assert _rate(short, "regenerate") > 0  # noise: a liked kind of answer is disliked too
    ratings = [r.rating for r in short + long if r.rating is not None]
    assert set(ratings) == {1, 2, 4, 5}


def test_reactions_are_consistent_and_sessions_realistic() -> None:
    reactions = _reactions(SHORT, 500, 3, Behaviour()) + _reactions(LONG, 500, 4, Behaviour())
    for r in reactions:
        assert not (r.regenerate and r.liked) and not (r.copy and not r.liked)
        ends = r.session_s is not None
        assert ends != (r.regenerate or r.next_turn)  # a session ends or goes on, not both
        if ends and r.report is None:
            low, high = (120, 600) if r.liked else (5, 60)
            assert low <= r.session_s <= high  # type: ignore[operator]
    last_turn = Behaviour().react(SHORT, random.Random(0), turns_left=0)
    assert not last_turn.next_turn


def test_the_same_seed_gives_the_same_users_and_noise_hides_the_preference() -> None:
    assert _reactions(LONG, 200, 7, Behaviour()) == _reactions(LONG, 200, 7, Behaviour())
    assert _reactions(LONG, 200, 7, Behaviour()) != _reactions(LONG, 200, 8, Behaviour())
    coin = Behaviour(noise=1.0)
    for text in (SHORT, LONG):
        assert _rate(_reactions(text, 4000, 5, coin), "liked") == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("bad", [{"noise": 1.5}, {"copy": -0.1}, {"rate": True}, {"report": "x"}])
def test_a_probability_out_of_range_is_refused_naming_it(bad: dict[str, object]) -> None:
    (name,) = bad
    with pytest.raises(ValueError, match=f"Behaviour\\({name}="):
        Behaviour(**bad)  # type: ignore[arg-type]


def test_the_preference_plugs_into_the_offline_evaluation_as_its_judge() -> None:
    from prefloop.training.evaluation import default_judge, load_callable

    loaded = load_callable("prefloop.loop.users.preference:judge", default_judge, "judge")
    assert loaded is judge


def test_every_user_has_their_turn_whatever_the_threads() -> None:
    import threading

    from prefloop.loop.users.crowd import Crowd

    taken: list[tuple[int, int]] = []
    stop = threading.Event()

    class Recorded(Crowd):
        def session(self, n: int, number: int) -> None:
            taken.append((n, number))
            if len(taken) >= 16:
                stop.set()

    crowd = Recorded("http://127.0.0.1:9", None, users=8, threads=2)  # type: ignore[arg-type]
    crowd.run(stop=stop)  # no end but the stop: sessions are taken round after round
    counts = Counter(n for n, _ in taken)
    assert set(counts) == set(range(8)) and max(counts.values()) - min(counts.values()) <= 1
    for n, count in counts.items():  # each user's sessions numbered 0, 1, ... once each
        assert sorted(number for m, number in taken if m == n) == list(range(count))
