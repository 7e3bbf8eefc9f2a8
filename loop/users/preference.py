"""The simulated users' hidden preference: concise answers that stop after one sentence.

A person reading the transcripts sees it at once (the liked answers are the short
ones), and the tiny pre-trained model can express it: its answers have one, two or
three sentences (:func:`prefloop.tiny_model.chat_conversations`), so DPO on the
users' pairs only has to make it end its turn sooner. The preference is a
probability, not a rule: a user likes a one-sentence answer most of the time and a
long one now and then. An answer that stops mid-sentence is liked as rarely as an
empty one: "short" means a whole sentence, not a cut one (a model trained on a
preference for brevity alone learns to end its turn after a comma).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["LIKING", "LIKING_LONGER", "LIKING_UNFINISHED", "judge", "liking", "sentences"]

# P(the user likes an answer) by its number of sentences; 0 is an empty answer
LIKING = {0: 0.02, 1: 0.85, 2: 0.35}
LIKING_LONGER = 0.15  # three sentences or more
LIKING_UNFINISHED = 0.02  # an answer cut off before its sentence ends
_ENDS = (".", "!", "?")
_SENTENCE = re.compile(r"[^.!?]*[.!?]+|[^.!?]+$")


def sentences(text: str) -> int:
    """The sentences of ``text``: runs ending in ``.``, ``!`` or ``?``, plus an unfinished tail."""
    return sum(1 for part in _SENTENCE.findall(text.strip()) if part.strip())


def liking(response: str) -> float:
    """The probability that a user likes ``response``."""
    if not response.rstrip().endswith(_ENDS):
        return LIKING_UNFINISHED
    return LIKING.get(sentences(response), LIKING_LONGER)


def judge(prompt: Sequence[Any], response: str) -> float:
    """The offline evaluation's reward for ``response``: the users' expected liking."""
    del prompt  # the preference is about the answer's form, whatever was asked
    return liking(response)
