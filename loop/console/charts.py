"""The monitor's charts: each metric over time per arm and version, with its interval.

Drawn by matplotlib as one SVG from a snapshot's series (:mod:`.monitor`), so the page
shows the same numbers its JSON holds.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

__all__ = ["PANELS", "series_svg"]

# (title, key in a point, whether it is an estimate with an interval)
PANELS = (
    ("implicit score", "implicit_score", True),
    ("mean rating", "rating", True),
    ("regenerate rate", "regenerate_rate", True),
    ("report rate", "report_rate", True),
    ("latency p50 / p95 / p99 (ms)", "latency", False),
    ("active users per bucket", "users", False),
)
COLORS = {"A": "#1f77b4", "B": "#d62728"}


def series_svg(series: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(13, 6.2), sharex=True)
    for ax, (title, key, interval) in zip(axes.flat, PANELS, strict=True):
        for arm, versions in sorted(series.get("arms", {}).items()):
            for version, points in versions.items():
                at = [datetime.fromisoformat(p["at"]) for p in points]
                color = COLORS.get(arm, "gray")
                label = f"{arm} · {version}"
                if key == "latency":
                    for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
                        ax.plot(at, [p[f"latency_{q}"] for p in points], style, color=color,
                                label=f"{label} {q}")  # fmt: skip
                elif interval:
                    values = [p[key]["value"] for p in points]
                    low = [_nan(p[key]["low"]) for p in points]
                    high = [_nan(p[key]["high"]) for p in points]
                    ax.plot(at, [_nan(v) for v in values], color=color, label=label)
                    ax.fill_between(at, low, high, color=color, alpha=0.18, linewidth=0)
                else:
                    ax.plot(at, [p[key] for p in points], color=color, label=label)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="upper center", ncol=4, fontsize=9, frameon=False)
    figure.text(0.5, 0.005, f"bucket: {series.get('bucket_minutes', 1)} min, UTC; "
                "shaded: 95 % interval of the bucket", ha="center", fontsize=8)  # fmt: skip
    figure.autofmt_xdate()
    figure.tight_layout(rect=(0, 0.02, 1, 0.94))
    out = io.BytesIO()
    figure.savefig(out, format="svg")
    plt.close(figure)
    return out.getvalue()


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value
