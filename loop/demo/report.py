"""The loop's report: Markdown and PNG plots under the state dir, from the store and the registry.

Per version over time: the implicit score, the rating and the regenerate rate (the
ScoredInteractions in ClickHouse); each training's loss (its Ray job's log); the pairs
accumulated against the threshold (the preferences table); the sequential p-value's
path (the verdict loop's recorded looks). Then the held-out check: the simulated
users' own judge on the evaluation's fixed prompts, the parent's sampled answers
against the candidate's, and three of them side by side.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from prefloop.clickhouse.client import connect
from prefloop.loop.users.crowd import MAX_TOKENS, TEMPERATURE
from prefloop.model_registry import ModelRegistry
from prefloop.settings import Settings

if TYPE_CHECKING:
    from prefloop.loop.demo.audit import Ledger
    from prefloop.loop.demo.chaos import Chaos
    from prefloop.loop.demo.progress import Attempt, LoopWatcher
    from prefloop.loop.users.crowd import CrowdStats

__all__ = ["HeldOut", "held_out_check", "write_report"]

BIN_S = 20  # seconds per point of the time series
SAMPLES = 6  # sampled answers per prompt and version in the held-out check
SIDE_BY_SIDE = 3


@dataclass(frozen=True)
class HeldOut:
    """The users' judge on fixed prompts: the parent's answers against the candidate's."""

    parent: str
    candidate: str
    answers: int  # per version
    liking_parent: float
    liking_candidate: float
    wins: int  # pairs (same prompt, same draw) where the candidate is liked more
    losses: int
    p_value: float  # sign test, one-sided: the candidate liked more
    examples: list[tuple[str, str, str]]  # (prompt, parent's answer, candidate's)

    @property
    def agrees(self) -> bool:
        return self.liking_candidate > self.liking_parent and self.p_value < 0.05


def write_report(
    settings: Settings, watcher: LoopWatcher, stats: CrowdStats, console: Console,
    chaos: Chaos | None = None,
) -> Path:  # fmt: skip
    """Write the report of the run ``watcher`` followed; returns its Markdown file."""
    import matplotlib

    from prefloop.loop.demo.audit import audit

    matplotlib.use("Agg")
    stamp = datetime.fromtimestamp(watcher.since_ms / 1000, UTC).strftime("%Y%m%d-%H%M%S")
    out = settings.home / "reports" / f"loop-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    client = connect(settings)
    since = {"since": watcher.since_ms / 1000}
    where = "ts >= fromUnixTimestamp64Milli(toInt64({since:Float64} * 1000))"
    series = list(
        client.query(
            "SELECT model_version, "
            f"toUnixTimestamp(toStartOfInterval(ts, INTERVAL {BIN_S} SECOND)), "
            "avg(implicit_score), avgOrNull(rating), avg(signals_regenerated), count() "
            f"FROM scores FINAL WHERE {where} GROUP BY 1, 2 ORDER BY 2",
            parameters=since,
        ).result_rows
    )
    pairs = list(
        client.query(
            f"SELECT toUnixTimestamp64Milli(ts), model_version, source FROM preferences FINAL "
            f"WHERE {where} ORDER BY ts",
            parameters=since,
        ).result_rows
    )
    paths: dict[str, list[Any]] = {}
    for attempt in watcher.lifecycle.attempts:
        if attempt.experiment:
            paths[attempt.experiment] = list(
                client.query(
                    "SELECT toUnixTimestamp64Milli(ts), p_sequential, decision FROM verdicts "
                    "WHERE experiment_id = {e:String} AND metric = {m:String} ORDER BY ts",
                    parameters={"e": attempt.experiment, "m": settings.ab_primary_metric},
                ).result_rows
            )
    attempts, t0 = watcher.lifecycle.attempts, watcher.since_ms / 1000
    plots = _figures(
        series, pairs, paths, attempts, watcher.options.threshold, settings.ab_alpha, t0
    )
    for name, figure in plots.items():
        figure.savefig(out / name, dpi=110, bbox_inches="tight")
    registry = ModelRegistry.from_settings(settings)
    checks = []
    for attempt in watcher.lifecycle.attempts:
        if attempt.outcome in ("PROMOTED", "ROLLED_BACK"):
            console.print(f"  held-out check: {attempt.parent} against {attempt.candidate} ...")
            checks.append(held_out_check(settings, registry, attempt.parent, attempt.candidate))
    sent = {"interactions": stats.answers, "feedback": sum(stats.signals.values())}
    ledgers = audit(settings, watcher.since_ms, sent)
    text = _markdown(settings, watcher, stats, registry, checks, plots, paths)
    text += _ledger_markdown(ledgers, chaos)
    report = out / "report.md"
    report.write_text(text)
    console.print(f"  the report: {report}")
    for ledger in ledgers:
        console.print(f"  ledger: {_ledger_line(ledger)}")
    for check in checks:
        verdict = "agrees" if check.agrees else "does not agree"
        console.print(
            f"  held-out check {verdict}: users' judge likes {check.candidate} "
            f"{check.liking_candidate:.2f} against {check.parent} {check.liking_parent:.2f} "
            f"(sign test p {check.p_value:.2g})"
        )
    return report


def held_out_check(
    settings: Settings, registry: ModelRegistry, parent: str, candidate: str, seed: int = 0
) -> HeldOut:
    """The simulated users' judge on the evaluation's fixed prompts, ``parent`` against
    ``candidate``: :data:`SAMPLES` sampled answers of each per prompt."""
    from scipy.stats import binomtest

    from prefloop.loop.users.preference import liking
    from prefloop.training.evaluation import EVAL_PROMPTS

    cache = settings.home / "cache" / "models"
    mine = _sample(registry.local_path(parent, cache), EVAL_PROMPTS, seed)
    theirs = _sample(registry.local_path(candidate, cache), EVAL_PROMPTS, seed)
    old = [liking(a) for answers in mine for a in answers]
    new = [liking(a) for answers in theirs for a in answers]
    wins = sum(n > o for n, o in zip(new, old, strict=True))
    losses = sum(n < o for n, o in zip(new, old, strict=True))
    p = binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue if wins + losses else 1.0
    examples = [(EVAL_PROMPTS[i], mine[i][0], theirs[i][0]) for i in range(SIDE_BY_SIDE)]
    return HeldOut(parent, candidate, len(old), sum(old) / len(old), sum(new) / len(new),
                   wins, losses, float(p), examples)  # fmt: skip


def _sample(path: Path, prompts: tuple[str, ...], seed: int) -> list[list[str]]:
    """:data:`SAMPLES` answers per prompt, sampled as the simulated users get them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Loading weights" is noise in a report
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    torch.manual_seed(seed)
    answers = []
    for text in prompts:
        ids: Any = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
        )
        ids = torch.tensor([list(ids["input_ids"] if hasattr(ids, "keys") else ids)])
        with torch.no_grad():
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=TEMPERATURE,
                max_new_tokens=MAX_TOKENS, num_return_sequences=SAMPLES,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )  # fmt: skip
        answers.append(
            [
                str(tokenizer.decode(row[ids.shape[1] :], skip_special_tokens=True)).strip()
                for row in out
            ]
        )
    return answers


def _figures(
    series: list[Any], pairs: list[Any], paths: dict[str, list[Any]], attempts: list[Attempt],
    threshold: int, alpha: float, t0: float,
) -> dict[str, Any]:  # fmt: skip
    """The report's plots, each on its own, and the four on one page (``loop.png``)."""
    import matplotlib.pyplot as plt

    figures = {}
    figures["scores.png"], axes = plt.subplots(3, 1, figsize=(8, 7.8), sharex=True)
    _draw_scores(list(axes), series, attempts, t0)
    for name, draw in (
        ("training.png", lambda axis: _draw_losses(axis, attempts)),
        ("pairs.png", lambda axis: _draw_pairs(axis, pairs, attempts, threshold, t0)),
        ("p_value.png", lambda axis: _draw_p_values(axis, paths, alpha, t0)),
    ):
        figures[name], axis = plt.subplots(figsize=(8, 2.6))
        draw(axis)
    figures["loop.png"], grid = plt.subplots(2, 2, figsize=(13, 7.5))
    _draw_scores([grid[0][0]], series, attempts, t0)
    _draw_pairs(grid[0][1], pairs, attempts, threshold, t0)
    _draw_losses(grid[1][0], attempts)
    _draw_p_values(grid[1][1], paths, alpha, t0)
    figures["loop.png"].tight_layout()
    return figures


def _marks(axis: Any, attempts: list[Attempt], t0: float) -> None:
    """Vertical lines where an A/B started and where it ended."""
    for a in attempts:
        for kind, style in (("AB_STARTED", ":"), ("PROMOTED", "-"), ("ROLLED_BACK", "-")):
            if kind in a.times:
                axis.axvline(a.times[kind] / 1000 - t0, color="grey", linestyle=style, lw=0.8)


def _draw_scores(axes: list[Any], series: list[Any], attempts: list[Attempt], t0: float) -> None:
    """Per version, the first ``len(axes)`` of: implicit score, rating, regenerate rate."""
    labels = ("mean implicit score", "mean rating", "regenerate rate")
    by_version: dict[str, list[Any]] = defaultdict(list)
    for row in series:
        by_version[str(row[0])].append(row)
    for version, rows in by_version.items():
        x = [r[1] + BIN_S / 2 - t0 for r in rows]  # the middle of each bin
        for axis, column in zip(axes, (2, 3, 4), strict=False):
            y = [math.nan if r[column] is None else float(r[column]) for r in rows]
            axis.plot(x, y, marker="o", ms=3, label=version)
    for axis, label in zip(axes, labels, strict=False):
        axis.set_ylabel(label)
        _marks(axis, attempts, t0)
    axes[0].legend(loc="best", fontsize=8)
    axes[0].set_title(f"each version's answers, per {BIN_S} s (dotted: A/B starts; solid: verdict)")
    axes[-1].set_xlabel("seconds since the demo started")


def _draw_losses(axis: Any, attempts: list[Attempt]) -> None:
    for a in attempts:
        if a.losses:
            axis.plot([s for s, _ in a.losses], [v for _, v in a.losses], label=a.candidate)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("DPO loss")
    axis.set_title("training loss, per job")
    if any(a.losses for a in attempts):
        axis.legend(fontsize=8)


def _draw_pairs(
    axis: Any, pairs: list[Any], attempts: list[Attempt], threshold: int, t0: float
) -> None:
    """Per version, the pairs since its last retrain request: what the trigger counts."""
    requests: dict[str, list[float]] = defaultdict(list)
    for a in attempts:
        requests[a.parent].append(a.times["RETRAIN_REQUESTED"] / 1000 - t0)
    counts: dict[str, int] = defaultdict(int)
    points: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for ts, version, _ in pairs:
        x, version = ts / 1000 - t0, str(version)
        while requests[version] and x > requests[version][0]:  # the trigger starts again
            points[version].append((requests[version].pop(0), 0))
            counts[version] = 0
        counts[version] += 1
        points[version].append((x, counts[version]))
    for version, xy in points.items():
        axis.step([x for x, _ in xy], [y for _, y in xy], where="post", label=f"pairs on {version}")
    axis.axhline(threshold, color="red", linestyle="--", lw=0.8, label=f"threshold {threshold}")
    for a in attempts:
        axis.axvline(a.times["RETRAIN_REQUESTED"] / 1000 - t0, color="grey", linestyle=":", lw=0.8)
    axis.set_xlabel("seconds since the demo started (dotted: retrain requested)")
    axis.set_ylabel("pairs since the last request")
    axis.set_title("preference pairs against the retrain threshold")
    axis.legend(fontsize=8)


def _draw_p_values(axis: Any, paths: dict[str, list[Any]], alpha: float, t0: float) -> None:
    for experiment, rows in paths.items():
        if rows:
            axis.plot([r[0] / 1000 - t0 for r in rows], [max(r[1], 1e-12) for r in rows],
                      marker="o", ms=3, label=experiment)  # fmt: skip
    axis.axhline(alpha, color="red", linestyle="--", lw=0.8, label=f"alpha {alpha:g}")
    axis.set_yscale("log")
    axis.set_xlabel("seconds since the demo started")
    axis.set_ylabel("always-valid p (primary metric)")
    axis.set_title("the sequential test at each look of the verdict loop")
    axis.legend(fontsize=8)


def _markdown(
    settings: Settings, watcher: LoopWatcher, stats: CrowdStats, registry: ModelRegistry,
    checks: list[HeldOut], plots: dict[str, Any], paths: dict[str, list[Any]],
) -> str:  # fmt: skip
    options = watcher.options
    seconds = time.time() - watcher.since_ms / 1000
    lines = [
        "# prefloop demo: the loop, unattended",
        "",
        f"{options.users} simulated users (seed {options.seed}) chatting with "
        f"{watcher.lifecycle.base} ({options.model}), who prefer answers of one sentence; "
        f"{seconds / 60:.1f} minutes; threshold {options.threshold} pairs.",
        "",
        f"Users: {stats.sessions} sessions, {stats.answers} answers "
        f"({', '.join(f'{v} {n}' for v, n in sorted(stats.by_version.items()))}); signals "
        f"{', '.join(f'{k} {n}' for k, n in sorted(stats.signals.items()))}.",
        "",
        "## Generations",
        "",
    ]
    for a in watcher.lifecycle.attempts:
        lines += [
            f"### {a.parent} -> {a.candidate}: {a.outcome or 'unfinished, at ' + a.stage}",
            "",
        ]
        if a.detail:
            lines += [a.detail, ""]
        try:
            entry = registry.get(a.candidate)
        except Exception:
            continue
        sources = ", ".join(f"{s} {n}" for s, n in sorted(entry.lineage.get("sources", {}).items()))
        lines += [
            f"Trained from {entry.parent} on the {entry.lineage.get('pair_count')} pairs of its "
            f"request ({sources}): {entry.lineage.get('train_pairs')} to train on, "
            f"{entry.lineage.get('heldout_pairs')} held out; "
            f"{entry.training.get('seconds', 0):.0f} s of training and evaluation.",
            "",
            "| gate | value | needs | passed |",
            "|---|---|---|---|",
        ]
        for gate in entry.gates.get("gates", []):
            value = gate.get("value")
            shown = "-" if value is None else f"{value:.3g}"
            lines.append(f"| {gate['name']} | {shown} | {gate['threshold']} | {gate['passed']} |")
        looks = paths.get(a.experiment or "", [])
        if looks:
            lines += ["", f"A/B {a.experiment}: {len(looks)} looks, last always-valid p "
                      f"{looks[-1][1]:.3g}, decision {looks[-1][2]}."]  # fmt: skip
        lines.append("")
    pairs: dict[str, int] = defaultdict(int)
    for (_, source), n in watcher.pairs.items():
        pairs[source] += n
    lines += [
        "## Pairs mined, by source",
        "",
        ", ".join(f"{s}: {n}" for s, n in sorted(pairs.items())) or "none",
        "",
        "## Plots",
        "",
        "![the loop](loop.png)",
        "",
    ]
    lines += [f"![{name}]({name})" for name in plots if name != "loop.png"]
    for check in checks:
        lines += [
            "",
            f"## Held-out check: {check.parent} against {check.candidate}",
            "",
            f"The users' judge on the evaluation's fixed prompts, {check.answers} sampled answers "
            f"each: {check.candidate} liked {check.liking_candidate:.2f}, {check.parent} "
            f"{check.liking_parent:.2f}; {check.candidate} liked more in {check.wins} draws, less "
            f"in {check.losses} (sign test p {check.p_value:.2g}): the check "
            f"{'agrees with' if check.agrees else 'does not agree with'} the A/B.",
            "",
            f"| prompt | {check.parent} | {check.candidate} |",
            "|---|---|---|",
        ]
        lines += [f"| {p} | {_cell(a)} | {_cell(b)} |" for p, a, b in check.examples]
    return "\n".join(lines) + "\n"


def _ledger_line(ledger: Ledger) -> str:
    verdict = "nothing lost, nothing counted twice" if ledger.ok else (
        f"{ledger.missing} lost" if ledger.lost else f"{ledger.rows - ledger.row_ids} counted twice"
    )  # fmt: skip
    sent = f"{ledger.sent} by the users, " if ledger.sent is not None else ""
    return (
        f"{ledger.what}: {sent}{ledger.records} records with {ledger.ids} ids on Kafka, "
        f"{ledger.rows} rows with {ledger.row_ids} of them in ClickHouse: {verdict}"
    )


def _ledger_markdown(ledgers: list[Ledger], chaos: Chaos | None) -> str:
    lines = ["", "## Ledger: every event on Kafka and in ClickHouse", ""]
    if chaos is not None:
        lines += ["Chaos: each of these was SIGKILLed once, at a random moment of the loop.", "",
                  "| target | planned (s) | killed at (s) | pid | back after (s) | |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for k in chaos.kills:
            lines.append(f"| {k.target} | {k.at_s:g} | {_or(k.done_s)} | {_or(k.pid)} | "
                         f"{_or(k.back_s)} | {k.note} |")  # fmt: skip
        lines.append("")
    lines += [
        "| stream | by the users | records on Kafka | distinct ids | rows in ClickHouse (FINAL) "
        "| of those ids | lost | counted twice |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in ledgers:
        lines.append(f"| {g.what} | {_or(g.sent)} | {g.records} | {g.ids} | {g.rows} | "
                     f"{g.row_ids} | {g.missing} | {g.rows - g.row_ids} |")  # fmt: skip
    ok = all(g.ok for g in ledgers)
    lines += ["", "Every id on the topics is in ClickHouse once." if ok else
              "**Some ids are missing or counted twice: see the table.**"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _or(value: object) -> str:
    return "-" if value is None else str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "(empty)"
