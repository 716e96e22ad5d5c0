#!/usr/bin/env python3
"""Draws the sliding-log chart of BENCHMARKS.md: the sliding log's cost per check relative to
the fixed window's, on the memory store and on Redis, against the 1.5x goal. No dependencies.

Reads criterion's estimates of `cargo bench -p ratelimit-core --bench sliding_log`
(`target/criterion/{full_20000,steady_1000}/{fixed_window,sliding_window}/new/estimates.json`)
and `target/tmp/redis_sliding_log.json` (written by
`cargo bench -p ratelimit-core --features redis --bench redis_sliding_log`), writes
`docs/benchmarks/sliding_log.svg` and prints the ratios.

    python3 scripts/plot_sliding_log.py [--results FILE] [--out FILE]

`--results` is the Redis report; the memory estimates are always read from `target/criterion`.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # svg_chart.py sits next to this script
from svg_chart import (  # noqa: E402
    ROOT,
    axis_lines,
    grid,
    headings,
    line,
    notes,
    read_results,
    rect,
    results_and_out,
    svg_document,
    text,
    y_scale,
)

GOAL = 1.5
MEMORY_ROWS = [
    ("full_20000", "memory, full key"),
    ("steady_1000", "memory, steady"),
]
COLOURS = {"memory": "#1f77b4", "redis": "#d62728"}


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def criterion_median_ns(group, algorithm):
    path = ROOT / "target" / "criterion" / group / algorithm / "new" / "estimates.json"
    if not path.exists():
        sys.exit(f"{path} not found: run `cargo bench -p ratelimit-core --bench sliding_log` first")
    return json.loads(path.read_text())["median"]["point_estimate"]


def bars(redis):
    """(label, colour, ratio, detail) per bar."""
    result = []
    for group, label in MEMORY_ROWS:
        fixed = criterion_median_ns(group, "fixed_window")
        sliding = criterion_median_ns(group, "sliding_window")
        result.append((label, COLOURS["memory"], sliding / fixed, f"{sliding:.1f} vs {fixed:.1f} ns"))
    fixed, sliding = redis["fixed_window"], redis["sliding_window"]
    per_round = lambda field: median(
        [s[field] / f[field] for f, s in zip(fixed, sliding)]
    )
    time_ratio = median([f["checks_per_sec"] / s["checks_per_sec"] for f, s in zip(fixed, sliding)])
    checks = lambda samples: median([sample["checks_per_sec"] for sample in samples])
    result.append(
        (
            "Redis, full key",
            COLOURS["redis"],
            time_ratio,
            f"{checks(sliding) / 1000:.0f}k vs {checks(fixed) / 1000:.0f}k checks/s",
        )
    )
    cpu = lambda samples: median([sample["server_cpu_us"] for sample in samples])
    result.append(
        (
            "Redis server CPU",
            COLOURS["redis"],
            per_round("server_cpu_us"),
            f"{cpu(sliding):.2f} vs {cpu(fixed):.2f} µs",
        )
    )
    return result


def chart(rows):
    width, height = 760, 480
    left, top, plot_width, plot_height = 80, 100, 640, 260
    axis_max = 2.0
    y_of = y_scale(top, plot_height, axis_max)
    body = headings(
        width / 2,
        30,
        "Sliding log vs fixed window, cost per check on one key",
        ["ratio of the sliding log's time (or CPU) per check to the fixed window's; lower is better"],
    )
    body += grid(left, plot_width, axis_max, y_of, lambda v: f"{v:.1f}x")
    body += axis_lines(left, top, plot_width, plot_height)
    bar_width = plot_width / len(rows)
    for index, (label, colour, ratio, detail) in enumerate(rows):
        x = left + bar_width * index + bar_width * 0.2
        inner = bar_width * 0.6
        body.append(rect(x, y_of(ratio), inner, top + plot_height - y_of(ratio), colour))
        centre = x + inner / 2
        body.append(text(centre, y_of(ratio) - 6, f"{ratio:.2f}x", 12, weight="bold", halo="white"))
        body.append(text(centre, top + plot_height + 20, label, 12))
        body.append(text(centre, top + plot_height + 36, detail, 10, fill="#555"))
    goal_y = y_of(GOAL)
    body.append(line(left, goal_y, left + plot_width, goal_y, "#2ca02c", 2, "6 4"))
    body.append(text(left + plot_width - 4, goal_y - 6, f"goal {GOAL}x", 12, anchor="end", fill="#2ca02c"))
    explanations = [
        "Memory: MemoryBackend::check_now, criterion medians; full key = 20000/h used up (every check",
        "rejected, log of 20,000), steady = 2000/s with the clock +1 ms per check (every check admitted).",
        "Redis: 50 tasks on one full 20000/h key, median of per-round ratios of checks/s and server CPU.",
    ]
    body += notes(left, top + plot_height + 66, explanations, 16)
    return svg_document(width, height, body)


def main():
    args = results_and_out(__doc__.splitlines()[0], "redis_sliding_log.json", "sliding_log.svg")
    redis = read_results(
        args.results, "cargo bench -p ratelimit-core --features redis --bench redis_sliding_log"
    )
    rows = bars(redis)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(chart(rows))
    for label, _, ratio, detail in rows:
        print(f"{label}: {ratio:.2f}x ({detail})")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
