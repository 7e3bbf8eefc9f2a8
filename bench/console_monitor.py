"""Console monitor: an experiment of 100,000 users, read from rollups against raw events.

Not a test: a measurement. A simulated day-long experiment of USERS users (about five
responses each, 50/50) is loaded into the embedded store (its owner in a process of its
own, as under ``prefloop up``). Then, REPEATS times each:

* rollup (SQL): the monitor's refresh queries over ``arm_minutely`` (migration 0008:
  per-minute aggregates the materialized views keep);
* raw (SQL): the same buckets and aggregates computed from the ``interactions`` and
  ``scores`` rows (the baseline: what a monitor without rollups would run);
* series: ``experiment_series``, the rollup's queries plus each point's intervals;
* snapshot: one whole refresh of the monitor (the verdict's ``analyze`` plus the series);
* page: ``GET /api/experiments/{id}`` from the running console while its background
  refresh goes on, what the page's every-3-s poll waits for.

Prints and writes the medians and the raw/rollup ratio to bench/RESULTS.md.

Run: ``make bench`` or ``.venv/bin/python bench/run.py console_monitor``; directly,
``.venv/bin/python bench/console_monitor.py --users 20000``.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvicorn
from common import median, write_section
from pydantic import SecretStr

from prefloop.analytics.series import _SERIES, _SPAN, bucket_minutes, experiment_series
from prefloop.analytics.simulate import load_simulated, record_model_event, simulate_experiment
from prefloop.analytics.verdict import analyze
from prefloop.clickhouse.client import connect
from prefloop.infra.testing import start_store
from prefloop.loop.console.app import build_app
from prefloop.process import free_port
from prefloop.testing import isolated_settings

USERS = 100_000
REPEATS = 5
PAGE_REQUESTS = 20
EXPERIMENT = "bench-monitor"
NAME = "Console monitor: 100,000 users, rollups against raw events"

# the rollup's aggregates, straight from the rows (one query per table, as the
# materialized views split them)
_RAW_INTERACTIONS = """
SELECT arm, model_version, toStartOfInterval(ts, toIntervalMinute({bucket:UInt32})) AS at,
       count() AS requests, uniq(user_id) AS users,
       quantilesTDigest(0.5, 0.95, 0.99)(latency_ms) AS latency
FROM interactions
WHERE experiment_id = {experiment:String} AND arm IN ('A', 'B')
GROUP BY arm, model_version, at ORDER BY at, arm, model_version
"""
_RAW_SCORES = """
SELECT arm, model_version, toStartOfInterval(ts, toIntervalMinute({bucket:UInt32})) AS at,
       count() AS scored, sum(implicit_score), sum(implicit_score * implicit_score),
       count(rating), sum(ifNull(rating, 0)), sum(ifNull(rating * rating, 0)),
       countIf(signals_regenerated), countIf(signals_reported)
FROM scores
WHERE experiment_id = {experiment:String} AND arm IN ('A', 'B') AND revision = 0
GROUP BY arm, model_version, at ORDER BY at, arm, model_version
"""


def timed(fn: object, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - started)
    return out


def main(users: int) -> None:
    with tempfile.TemporaryDirectory() as home:
        settings = isolated_settings(
            Path(home),
            ab_min_users=100,
            console_port=free_port(),
            console_users=SecretStr("ops:operator:pw"),
            console_refresh_s=2.0,
        )
        store = start_store(settings)
        server = None
        try:
            client = connect(settings)
            start = datetime.now(UTC) - timedelta(hours=24)
            loading = time.perf_counter()
            sim = simulate_experiment(EXPERIMENT, users=users, effect=0.2, days=1, start=start)
            load_simulated(client, sim)
            record_model_event(client, EXPERIMENT, "AB_STARTED", start - timedelta(minutes=1))
            load_s = time.perf_counter() - loading
            rows = client.query(
                "SELECT count() FROM interactions WHERE experiment_id = {e:String}",
                parameters={"e": EXPERIMENT},
            ).result_rows[0][0]
            rollup_rows = client.query(
                "SELECT count() FROM arm_minutely WHERE experiment_id = {e:String}",
                parameters={"e": EXPERIMENT},
            ).result_rows[0][0]
            first, last = client.query(
                "SELECT min(minute), max(minute) FROM arm_minutely "
                "WHERE experiment_id = {e:String}",
                parameters={"e": EXPERIMENT},
            ).result_rows[0]
            params = {"experiment": EXPERIMENT, "bucket": bucket_minutes(first, last)}

            def raw() -> None:
                client.query(_RAW_INTERACTIONS, parameters=params)
                client.query(_RAW_SCORES, parameters=params)

            def rollup() -> None:
                client.query(_SPAN, parameters=params)
                client.query(_SERIES, parameters=params)

            def series() -> None:
                experiment_series(client, EXPERIMENT)

            def snapshot() -> None:
                analyze(client, settings, EXPERIMENT)
                experiment_series(client, EXPERIMENT)

            raw()  # warm both
            rollup()
            results = {
                "rollup (SQL)": timed(rollup, REPEATS),
                "raw (SQL)": timed(raw, REPEATS),
                "series (rollup SQL + intervals)": timed(series, REPEATS),
                "snapshot": timed(snapshot, REPEATS),
            }

            server = uvicorn.Server(
                uvicorn.Config(
                    build_app(settings), host="127.0.0.1", port=settings.console_port,
                    log_level="warning",
                )
            )  # fmt: skip
            threading.Thread(target=server.run, daemon=True).start()
            while not server.started:
                time.sleep(0.05)
            url = f"http://127.0.0.1:{settings.console_port}/api/experiments/{EXPERIMENT}"
            auth = "Basic " + base64.b64encode(b"ops:pw").decode()

            def page() -> None:
                request = urllib.request.Request(url, headers={"Authorization": auth})
                with urllib.request.urlopen(request, timeout=120) as reply:
                    json.load(reply)

            first_page = timed(page, 1)[0]  # builds the first snapshot
            pages = []
            for _ in range(PAGE_REQUESTS):
                pages += timed(page, 1)
                time.sleep(0.5)  # spread over several background refreshes
            results["page"] = pages
        finally:
            if server is not None:
                server.should_exit = True
            store.stop()

    ratio = median(results["raw (SQL)"]) / median(results["rollup (SQL)"])
    page_p95 = statistics.quantiles(results["page"], n=20)[-1]
    body = "\n".join(
        [
            f"{users:,} users, {rows:,} interactions over a simulated day; `arm_minutely` holds "
            f"{rollup_rows:,} rows for them (loading took {load_s:.0f} s). Seconds, medians of "
            f"{REPEATS} (the page: of {PAGE_REQUESTS} requests, 0.5 s apart, while the console "
            "refreshed in the background every 2 s).",
            "",
            "| read | median s | min s | max s |",
            "|---|---|---|---|",
            *(
                f"| {name} | {median(v):.3f} | {min(v):.3f} | {max(v):.3f} |"
                for name, v in results.items()
            ),
            "",
            f"Reading the rollup is {ratio:.1f}x as fast as computing the same buckets from the "
            f"raw rows ({rows:,} of them; the rollup's size grows with the experiment's "
            "minutes, the rows' with its traffic). A page's poll answers in "
            f"{median(results['page']) * 1000:.0f} ms "
            f"(p95 {page_p95 * 1000:.0f} ms) from the last snapshot, whatever a refresh costs; "
            f"the very first request of an experiment builds its snapshot ({first_page:.2f} s).",
        ]
    )
    print(body)
    write_section(NAME, body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=USERS)
    main(parser.parse_args().users)
