"""Following the loop as it runs: what each stage did, read from where the product keeps it.

:class:`LoopWatcher` reads the lifecycle from ``<prefix>.model-events`` (each retrain
request, its training, gates, A/B and verdict), the training's step and loss from its
Ray job's log, and everything counted from ClickHouse (interactions, pairs by source,
each arm's primary metric, the verdict loop's recorded looks). :func:`render` draws
it as the live terminal view.
"""

from __future__ import annotations

import re
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from prefloop.clickhouse.client import connect
from prefloop.errors import first_line
from prefloop.kafka import TopicReader
from prefloop.model_registry import candidate_version
from prefloop.settings import Settings
from prefloop.training.service import submission_id

if TYPE_CHECKING:
    from prefloop.loop.demo.options import LoopOptions
    from prefloop.loop.users.crowd import CrowdStats

__all__ = ["ArmView", "Attempt", "Lifecycle", "LoopWatcher", "render", "status_line"]

STORE_EVERY_S = 3.0
ENDS = ("PROMOTED", "ROLLED_BACK", "GATES_FAILED", "TRAINING_FAILED")
_STAGES = {kind: rank for rank, kind in enumerate((
    "requested", "TRAINING_STARTED", "TRAINED", "REGISTERED", "EVALUATED", "GATES_PASSED",
    "AB_STARTED", "SPLIT_CHANGED"))}  # fmt: skip
_STEP = re.compile(r"training: step (\d+)/(\d+) loss ([0-9.eE+-]+)")


@dataclass
class Attempt:
    """One retrain request of ``parent`` and what became of its candidate."""

    parent: str
    request: dict[str, Any]
    candidate: str
    stage: str = "requested"
    outcome: str | None = None
    detail: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    experiment: str | None = None
    times: dict[str, int] = field(default_factory=dict)  # kind -> ts (ms)
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    steps: tuple[int, int] | None = None  # (step, total) of the running job
    log_read: bool = False  # the finished job's log was read to its end

    @property
    def job_id(self) -> str:
        return submission_id(str(self.request["event_id"]))


@dataclass(frozen=True)
class ArmView:
    """One arm's primary metric: the mean over users of each user's mean, with its 95 % CI."""

    arm: str
    version: str
    users: int
    mean: float
    low: float
    high: float


class Lifecycle:
    """Each retrain request of the version users get, and what became of its candidate,
    from the ModelEvents in the order they were recorded."""

    def __init__(self, base: str) -> None:
        self.base = self.serving = base
        self.attempts: list[Attempt] = []
        self.promotions = 0

    def on_event(self, event: dict[str, Any]) -> None:
        """Advance with one ModelEvent."""
        kind, version = event["kind"], event["model_version"]
        if kind == "RETRAIN_REQUESTED":
            candidate = candidate_version(version, str(event["event_id"]))
            known = any(a.candidate == candidate for a in self.attempts)
            # the version users get, or a candidate of it: one in its A/B gathers pairs too,
            # and its request is the next generation's once it is promoted
            ours = version == self.serving or any(a.candidate == version for a in self.attempts)
            if ours and not known:
                self.attempts.append(Attempt(version, event, candidate))
                self.attempts[-1].times[kind] = event["ts"]
            return
        attempt = next((a for a in self.attempts if a.candidate == version), None)
        if attempt is None or attempt.outcome is not None:
            return
        attempt.times[kind] = event["ts"]
        attempt.stage = kind
        if event.get("metrics") and kind.startswith("GATES"):
            attempt.metrics = dict(event["metrics"])
        if kind == "AB_STARTED":
            attempt.experiment = event.get("experiment_id")
        if kind in ENDS:
            attempt.outcome, attempt.detail = kind, str(event.get("detail") or "")
        if kind == "PROMOTED":
            self.serving = attempt.candidate
            self.promotions += 1
            for other in self.attempts:  # trained from a version users no longer get
                if other.outcome is None and other.parent == attempt.parent:
                    other.outcome, other.detail = "SUPERSEDED", f"{attempt.candidate} was promoted"

    def current(self) -> Attempt | None:
        """The attempt under way that is furthest along, if any (a second request of the
        same version may run beside it: a forced training, a trigger's replay)."""
        open_ = [(_STAGES.get(a.stage, 0), i, a) for i, a in enumerate(self.attempts)
                 if a.outcome is None and a.parent == self.serving]  # fmt: skip
        return max(open_, key=lambda item: item[:2])[2] if open_ else None

    def outcomes(self) -> list[tuple[str, str, str]]:
        return [
            (a.parent, a.candidate, a.outcome or f"unfinished ({a.stage})") for a in self.attempts
        ]

    def summary_lines(self) -> list[str]:
        """One line per attempt, its outcome said plainly."""
        lines = []
        for a in self.attempts:
            said = {
                "PROMOTED": f"[bold green]PROMOTED[/]: users now get {a.candidate}",
                "ROLLED_BACK": f"[bold red]ROLLED BACK[/]: users stay on {a.parent}",
                "GATES_FAILED": "[bold red]failed its gates[/]: never served",
                "TRAINING_FAILED": "[bold red]training failed[/]",
                "SUPERSEDED": "superseded",
            }.get(a.outcome or "", f"[yellow]unfinished, at {a.stage}[/]")
            detail = f" ({a.detail})" if a.detail else ""
            lines.append(f"{a.parent} -> {a.candidate}: {said}{detail}")
        return lines


class LoopWatcher:
    """The loop's state since ``since_ms``, starting from ``base`` serving everyone."""

    def __init__(self, settings: Settings, base: str, since_ms: int, options: LoopOptions) -> None:
        self.settings, self.base, self.since_ms, self.options = settings, base, since_ms, options
        self.lifecycle = Lifecycle(base)
        self.interactions: Counter[str] = Counter()  # stored, per model version
        self.pairs: Counter[tuple[str, str]] = Counter()  # stored, per (version, source)
        self.toward = 0  # pairs on the version users get since its last request
        self.toward_version = base
        self.arms: list[ArmView] = []
        self.verdict: dict[str, Any] | None = None
        self.rate = 0.0  # answers per second, over the last 10 s
        self.note = ""  # why the store's figures are not fresh
        self._answers: deque[tuple[float, int]] = deque(maxlen=64)
        self._reader = TopicReader(settings, settings.topics.model_events)
        self._store = connect(settings)
        self._jobs: Any = None
        self._next_store = 0.0

    # -- reading ---------------------------------------------------------------
    def poll(self, stats: CrowdStats | None = None, seconds: float = 0.5) -> None:
        for _, event, _, _ in self._reader.poll(seconds):
            if isinstance(event, dict) and event.get("ts", 0) >= self.since_ms:
                self.lifecycle.on_event(event)
        if stats is not None:
            self._count_answers(stats.answers)
        if time.monotonic() >= self._next_store:
            self._next_store = time.monotonic() + STORE_EVERY_S
            try:
                self.refresh()
                self.note = ""
            except Exception as exc:  # the store or Ray restarting: the last values stand
                self.note = f"not answering, the last values shown: {first_line(exc)}"

    def refresh(self) -> None:
        """Re-read the training's log and the store."""
        lifecycle = self.lifecycle
        for past in lifecycle.attempts:  # the running job's log, and a finished one's last lines
            if not past.log_read and past.stage not in ("requested", "TRAINING_STARTED"):
                past.log_read = self._read_job_log(past)
            elif past.stage == "TRAINING_STARTED":
                self._read_job_log(past)
        attempt = lifecycle.current()
        since = {"since": self.since_ms / 1000}
        query = self._store.query
        self.interactions = Counter({
            str(v): int(n) for v, n in query(
                "SELECT model_version, count() FROM interactions FINAL "
                "WHERE ts >= fromUnixTimestamp64Milli(toInt64({since:Float64} * 1000)) "
                "GROUP BY model_version", parameters=since).result_rows
        })  # fmt: skip
        self.pairs = Counter({
            (str(v), str(s)): int(n) for v, s, n in query(
                "SELECT model_version, source, count() FROM preferences FINAL "
                "WHERE ts >= fromUnixTimestamp64Milli(toInt64({since:Float64} * 1000)) "
                "GROUP BY model_version, source", parameters=since).result_rows
        })  # fmt: skip
        serving = lifecycle.serving
        asked = [a.times["RETRAIN_REQUESTED"] for a in lifecycle.attempts if a.parent == serving]
        after = max([self.since_ms, *asked]) / 1000
        self.toward_version, self.toward = serving, int(query(
            "SELECT count() FROM preferences FINAL WHERE model_version = {v:String} "
            "AND ts > fromUnixTimestamp64Milli(toInt64({after:Float64} * 1000))",
            parameters={"v": serving, "after": after}).result_rows[0][0])  # fmt: skip
        experiment = attempt.experiment if attempt is not None else None
        self.arms = self._arms(experiment) if experiment else []
        self.verdict = self._verdict(experiment) if experiment else None

    def settle(self, quiet_s: float = 6.0, timeout_s: float = 40.0) -> None:
        """Read until the store's counts stop changing: the sink has caught up."""
        deadline = time.monotonic() + timeout_s
        seen: tuple[Any, ...] = ()
        while time.monotonic() < deadline:
            try:
                self.refresh()
            except Exception:  # the store restarting after a chaos kill: look again
                time.sleep(quiet_s)
                continue
            now = (tuple(sorted(self.interactions.items())), tuple(sorted(self.pairs.items())))
            if now == seen:
                return
            seen = now
            time.sleep(quiet_s)

    def close(self) -> None:
        self._reader.close()

    def _count_answers(self, answers: int) -> None:
        now = time.monotonic()
        self._answers.append((now, answers))
        while len(self._answers) > 2 and now - self._answers[0][0] > 10:
            self._answers.popleft()
        (t0, a0), (t1, a1) = self._answers[0], self._answers[-1]
        self.rate = (a1 - a0) / (t1 - t0) if t1 > t0 else 0.0

    def _read_job_log(self, attempt: Attempt) -> bool:
        """The step and loss lines of the attempt's Ray job; False when it cannot be read."""
        from prefloop.ray_client import jobs_client

        try:
            if self._jobs is None:
                self._jobs = jobs_client(self.settings)
            log = str(self._jobs.get_job_logs(attempt.job_id))
        except Exception:  # the job not yet known to the head, or the head busy: next time
            return False
        found = _STEP.findall(log)
        attempt.losses = [(int(step), float(loss)) for step, _, loss in found]
        if found:
            attempt.steps = (int(found[-1][0]), int(found[-1][1]))
        return True

    def _arms(self, experiment: str) -> list[ArmView]:
        from scipy import stats

        rows = self._store.query(
            "SELECT arm, any(model_version), groupArray(mean) FROM (SELECT arm, user_id, "
            "any(model_version) AS model_version, avg(implicit_score) AS mean FROM scores FINAL "
            "WHERE experiment_id = {e:String} GROUP BY arm, user_id) GROUP BY arm ORDER BY arm",
            parameters={"e": experiment},
        ).result_rows
        views = []
        for arm, version, means in rows:
            n = len(means)
            mean = sum(means) / n
            low = high = mean
            if n > 1:
                low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=stats.sem(means))
            views.append(ArmView(str(arm), str(version), n, mean, float(low), float(high)))
        return views

    def _verdict(self, experiment: str) -> dict[str, Any] | None:
        result = self._store.query(
            "SELECT ts, estimate, p_value, p_sequential, users_a, users_b, decision, reason "
            "FROM verdicts WHERE experiment_id = {e:String} AND metric = {m:String} "
            "ORDER BY ts DESC LIMIT 1",
            parameters={"e": experiment, "m": self.settings.ab_primary_metric},
        )
        if not result.result_rows:
            return None
        return dict(zip(result.column_names, result.result_rows[0], strict=True))

    def summary_lines(self, *, deadline_passed: bool) -> list[str]:
        lines = self.lifecycle.summary_lines()
        promotions, options = self.lifecycle.promotions, self.options
        if deadline_passed and promotions < options.generations:
            lines.append(
                f"[yellow]the {options.minutes:g}-minute deadline passed after {promotions} of "
                f"{options.generations} promotion(s)[/]"
            )
        if not self.lifecycle.attempts:
            lines.append(
                f"no retrain was requested: {self.toward} of {options.threshold} pairs on "
                f"{self.toward_version}"
            )
        return lines


def render(watcher: LoopWatcher, stats: CrowdStats) -> Group:
    """The live view: one row per stage of the loop."""
    options, lifecycle = watcher.options, watcher.lifecycle
    attempt = lifecycle.current()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    elapsed = time.time() - watcher.since_ms / 1000
    grid.add_row(
        "loop",
        f"{elapsed // 60:.0f}:{elapsed % 60:02.0f} of {options.minutes:g}:00 · generation "
        f"{lifecycle.promotions + 1} of {options.generations} · users get {lifecycle.serving}",
    )
    versions = ", ".join(f"{v} {n}" for v, n in sorted(stats.by_version.items()))
    grid.add_row(
        "users",
        f"{options.users} users, {stats.sessions} sessions, {stats.answers} answers "
        f"({watcher.rate:.1f}/s; {versions or 'none yet'})",
    )
    stored = ", ".join(f"{v} {n}" for v, n in sorted(watcher.interactions.items()))
    grid.add_row("events", f"interactions in ClickHouse: {stored or 'none yet'} {watcher.note}")
    sources = Counter[str]()
    for (_, source), n in watcher.pairs.items():
        sources[source] += n
    by_source = ", ".join(f"{s} {n}" for s, n in sorted(sources.items()))
    grid.add_row("pairs", f"{sum(sources.values())} mined ({by_source or 'none yet'})")
    bar = ProgressBar(total=options.threshold, completed=min(watcher.toward, options.threshold),
                      width=30)  # fmt: skip
    toward = Table.grid(padding=(0, 1))
    toward.add_row(bar, Text(f"{watcher.toward}/{options.threshold} on {watcher.toward_version}"))
    grid.add_row(
        "threshold", toward if attempt is None else Text(f"reached: {attempt.candidate} requested")
    )
    grid.add_row("training", _training(attempt))
    grid.add_row("gates", _gates(attempt))
    grid.add_row("A/B", _ab(watcher, attempt))
    grid.add_row("verdict", _verdict(watcher.verdict))
    done = [f"{a.parent} -> {a.candidate}: {a.outcome}" for a in lifecycle.attempts if a.outcome]
    if done:
        grid.add_row("so far", "; ".join(done))
    return Group(grid)


def status_line(watcher: LoopWatcher, stats: CrowdStats) -> str:
    """The live view in one line, for a log."""
    lifecycle, options = watcher.lifecycle, watcher.options
    attempt = lifecycle.current()
    elapsed = time.time() - watcher.since_ms / 1000
    parts = [
        f"{elapsed:4.0f} s",
        f"{stats.answers} answers ({watcher.rate:.1f}/s)",
        f"{sum(watcher.pairs.values())} pairs",
    ]
    if attempt is None:
        parts.append(f"{watcher.toward}/{options.threshold} on {watcher.toward_version}")
    elif attempt.experiment is None:
        parts.append(_training(attempt) if attempt.stage != "GATES_PASSED" else _gates(attempt))
    else:
        parts += [_ab(watcher, attempt), _verdict(watcher.verdict)]
    parts += [f"{a.candidate} {a.outcome}" for a in lifecycle.attempts if a.outcome]
    return " | ".join(parts)


def _training(attempt: Attempt | None) -> str:
    if attempt is None:
        return "-"
    if attempt.stage == "requested":
        return f"{attempt.candidate}: waiting for the trainer"
    if attempt.stage == "TRAINING_STARTED":
        if attempt.steps is None:
            return f"{attempt.candidate}: Ray job {attempt.job_id} starting"
        step, total = attempt.steps
        loss = attempt.losses[-1][1] if attempt.losses else float("nan")
        return (
            f"{attempt.candidate}: step {step}/{total}, loss {loss:.3f} (Ray job {attempt.job_id})"
        )
    return f"{attempt.candidate}: trained"


def _gates(attempt: Attempt | None) -> str:
    if attempt is None or not attempt.stage.startswith(("GATES", "AB", "SPLIT")):
        return "-"
    shown = ", ".join(f"{k} {v:.3g}" for k, v in sorted(attempt.metrics.items())[:4])
    return f"{'passed' if attempt.stage != 'GATES_FAILED' else 'FAILED'}: {shown}"


def _ab(watcher: LoopWatcher, attempt: Attempt | None) -> str:
    if attempt is None or attempt.experiment is None:
        return "-"
    arms = " · ".join(
        f"{a.arm} {a.version}: {a.mean:+.2f} [{a.low:+.2f}, {a.high:+.2f}] ({a.users} users)"
        for a in watcher.arms
    )
    split = watcher.settings.ab_start_split
    return f"{attempt.experiment} at {split:g} %: {arms or 'no scores yet'}"


def _verdict(verdict: dict[str, Any] | None) -> str:
    if verdict is None:
        return "- (the verdict loop looks once both arms have enough users)"
    return (
        f"{verdict['decision']}: lift {verdict['estimate']:+.3f}, always-valid p "
        f"{verdict['p_sequential']:.3g} ({verdict['users_a']}/{verdict['users_b']} users): "
        f"{verdict['reason']}"
    )
