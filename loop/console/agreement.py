"""How well the annotators agree: Cohen's kappa per pair of them, Krippendorff's alpha overall.

The opinions are the choices A, B, TIE and BOTH_BAD; a SKIP is no opinion. Every
task shows its responses in one order to all its annotators, so "A" means the same
response to each of them. Kappa (scikit-learn) is over the tasks both of a pair
judged; alpha (``krippendorff``, nominal) over every task with two or more opinions,
missing ones allowed. Either is None where it is undefined: too few shared tasks, or
one category alone (no variation to agree on).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import krippendorff
import numpy as np
from sklearn.metrics import cohen_kappa_score

from .annotation_queue import Judgement

__all__ = ["OPINIONS", "agreement"]

OPINIONS = ("A", "B", "TIE", "BOTH_BAD")


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


def agreement(judgements: Iterable[Judgement]) -> dict[str, Any]:
    """``{"pairs": [{annotators, tasks, kappa, agreed}], "alpha", "tasks", "annotators"}``."""
    opinions: dict[str, dict[str, str]] = defaultdict(dict)  # task -> annotator -> choice
    for j in judgements:
        if j.choice in OPINIONS:
            opinions[j.task_id][j.annotator] = j.choice
    shared = {task: by for task, by in opinions.items() if len(by) >= 2}
    annotators = sorted({a for by in shared.values() for a in by})
    pairs = []
    for first, second in itertools.combinations(annotators, 2):
        both = [(by[first], by[second]) for by in shared.values() if first in by and second in by]
        if not both:
            continue
        left, right = zip(*both, strict=True)
        kappa = None
        if len(set(left) | set(right)) > 1:
            with warnings.catch_warnings():  # a constant rater: sklearn warns and gives nan
                warnings.simplefilter("ignore", RuntimeWarning)
                kappa = _finite(cohen_kappa_score(left, right, labels=list(OPINIONS)))
        pairs.append(
            {
                "annotators": [first, second],
                "tasks": len(both),
                "agreed": sum(a == b for a, b in both),
                "kappa": kappa,
            }
        )
    alpha = None
    values = {c for by in shared.values() for c in by.values()}
    if len(values) > 1:
        matrix = np.full((len(annotators), len(shared)), np.nan)
        column = {a: i for i, a in enumerate(annotators)}
        for task_column, by in enumerate(shared.values()):
            for annotator, choice in by.items():
                matrix[column[annotator], task_column] = OPINIONS.index(choice)
        alpha = _finite(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"))
    return {"pairs": pairs, "alpha": alpha, "tasks": len(shared), "annotators": annotators}
