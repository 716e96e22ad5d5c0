#!/usr/bin/env python3
"""Draws the Redis throughput chart of BENCHMARKS.md from the latest bench results, with no
dependencies.

Reads `target/tmp/redis_throughput.json` (written by
`cargo bench -p ratelimit-core --features redis --bench redis_throughput`), writes
`docs/benchmarks/redis_throughput.svg` and prints the markdown table that BENCHMARKS.md shows.

    python3 scripts/plot_redis.py [--results FILE] [--out FILE]

Left panel: median checks/s per contestant and key shape, whiskers from the slowest to the
fastest round, the ratio to redis-benchmark above each bar. Right panel: redis-server's
CPU time per check (user + system from `INFO cpu`, over each run).
"""

import argparse
import json
import sys
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Contestant id (as the bench writes it): short label and colour. The peer first and grey, as
# the reference in the other charts.
SERIES = [
    ("redis_benchmark", "redis-benchmark EVAL INCR+PEXPIRE (peer)", "#7f7f7f"),
    ("fixed_window_1w", "ours fixed window, 1 worker thread", "#1f77b4"),
    ("fixed_window_2w", "ours fixed window, 2 worker threads", "#9ecae1"),
    ("token_bucket_1w", "ours token bucket, 1 worker thread", "#d62728"),
    ("token_bucket_2w", "ours token bucket, 2 worker threads", "#f4a6a6"),
]

SHAPES = [("hot", "1 hot key"), ("per_task", "1 key per task")]

FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'


def nice_ceiling(value):
    """The smallest 1/1.2/1.5/2/2.5/3/4/5/6/8 x 10^n at or above `value`, for an axis that ends
    on a round number divisible into five ticks."""
    magnitude = 1
    while magnitude * 10 <= value:
        magnitude *= 10
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def text(x, y, content, size=12, anchor="middle", weight="normal", fill="#222", rotate=None):
    transform = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate is not None else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" {FONT} font-size="{size}" text-anchor="{anchor}" '
        f'font-weight="{weight}" fill="{fill}"{transform}>{escape(content)}</text>'
    )


def rect(x, y, width, height, fill, opacity=None):
    extra = f' fill-opacity="{opacity}"' if opacity is not None else ""
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" '
        f'fill="{fill}"{extra} stroke="#333" stroke-width="0.5"/>'
    )


def line(x1, y1, x2, y2, stroke="#333", width=1):
    return (
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
        f'stroke="{stroke}" stroke-width="{width}"/>'
    )


def svg_document(width, height, body):
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">',
            f'<rect width="{width}" height="{height}" fill="white"/>',
            *body,
            "</svg>",
            "",
        ]
    )


def rows_by_key(results):
    return {(row["keys"], row["contestant"]): row for row in results["rows"]}


def throughput_panel(rows, left, top, plot_width, plot_height):
    highest = max(max(row["per_round"]) for row in rows.values())
    axis_max = nice_ceiling(highest * 1.12)

    def y_of(value):
        return top + plot_height * (1 - value / axis_max)

    body = [text(left + plot_width / 2, top - 14, "checks/s (higher is better)", 14, weight="bold")]
    for tick in range(6):
        value = axis_max * tick / 5
        y = y_of(value)
        body.append(line(left, y, left + plot_width, y, "#ddd"))
        body.append(text(left - 8, y + 4, f"{value / 1000:g}k", 12, anchor="end"))
    group_width = plot_width / len(SHAPES)
    bar_width = group_width * 0.84 / len(SERIES)
    for shape_index, (shape, shape_label) in enumerate(SHAPES):
        group_left = left + group_width * shape_index + group_width * 0.08
        for series_index, (series, _, colour) in enumerate(SERIES):
            row = rows.get((shape, series))
            if row is None:
                continue
            x = group_left + bar_width * series_index
            value = row["checks_per_sec"]
            body.append(rect(x, y_of(value), bar_width - 3, top + plot_height - y_of(value), colour))
            centre = x + (bar_width - 3) / 2
            slowest, fastest = min(row["per_round"]), max(row["per_round"])
            body.append(line(centre, y_of(fastest), centre, y_of(slowest), "#000"))
            for end in (slowest, fastest):
                body.append(line(centre - 4, y_of(end), centre + 4, y_of(end), "#000"))
            label = "1.00x" if series == "redis_benchmark" else f'{row["ratio"]:.2f}x'
            body.append(text(centre, y_of(fastest) - 6, label, 11, weight="bold"))
        body.append(text(left + group_width * (shape_index + 0.5), top + plot_height + 20, shape_label, 13))
    body.append(line(left, top + plot_height, left + plot_width, top + plot_height))
    body.append(line(left, top, left, top + plot_height))
    return body


def server_cost_panel(rows, left, top, plot_width, plot_height):
    """redis-server CPU time per check: the cost that bounds throughput once the server is the
    busy side."""
    axis_max = nice_ceiling(max(row["server_cpu_us"] for row in rows.values()) * 1.15)

    def y_of(value):
        return top + plot_height * (1 - value / axis_max)

    body = [
        text(left + plot_width / 2, top - 14, "redis-server CPU µs per check (lower is better)", 14, weight="bold")
    ]
    for tick in range(6):
        value = axis_max * tick / 5
        y = y_of(value)
        body.append(line(left, y, left + plot_width, y, "#ddd"))
        body.append(text(left - 8, y + 4, f"{value:g}", 12, anchor="end"))
    group_width = plot_width / len(SHAPES)
    bar_width = group_width * 0.84 / len(SERIES)
    for shape_index, (shape, shape_label) in enumerate(SHAPES):
        group_left = left + group_width * shape_index + group_width * 0.08
        for series_index, (series, _, colour) in enumerate(SERIES):
            row = rows.get((shape, series))
            if row is None:
                continue
            x = group_left + bar_width * series_index
            value = row["server_cpu_us"]
            body.append(rect(x, y_of(value), bar_width - 3, top + plot_height - y_of(value), colour))
            body.append(text(x + (bar_width - 3) / 2, y_of(value) - 6, f"{value:.1f}", 11))
        body.append(text(left + group_width * (shape_index + 0.5), top + plot_height + 20, shape_label, 13))
    body.append(line(left, top + plot_height, left + plot_width, top + plot_height))
    body.append(line(left, top, left, top + plot_height))
    return body


def chart(results):
    rows = rows_by_key(results)
    width, height = 1120, 600
    top, bottom = 110, 170
    panel_height = height - top - bottom
    body = [
        text(width / 2, 30, "RedisBackend vs redis-benchmark, 50 concurrent clients, loopback", 18, weight="bold"),
        text(
            width / 2,
            52,
            f"redis-server {results['redis_version']}, {results['cpus']} CPUs ({results['cpu_model']}); "
            f"median of {results['rounds']} alternating rounds of {results['seconds_per_run']:g} s; "
            f"load average {results['load_before']} before, {results['load_after']} after",
            12,
            fill="#555",
        ),
        text(
            width / 2,
            70,
            "peer: 50 connections, one request in flight each (-P 1); ours: 50 tokio tasks, one "
            "multiplexed connection, checks batched into shared EVALSHAs, 1 or 2 worker threads",
            12,
            fill="#555",
        ),
    ]
    body += throughput_panel(rows, 80, top, 450, panel_height)
    body += server_cost_panel(rows, 630, top, 450, panel_height)
    legend_top = top + panel_height + 46
    for index, (_, label, colour) in enumerate(SERIES):
        line_index, column = divmod(index, 3)
        x, y = 80 + column * 350, legend_top + line_index * 22
        body.append(rect(x, y, 14, 14, colour))
        body.append(text(x + 20, y + 12, label, 12, anchor="start"))
    notes = [
        "Left: bars are medians over rounds, whiskers the slowest and fastest round, labels the median of the "
        "per-round ratios to the peer.",
        "Right: redis-server user + system CPU time (INFO cpu) over a run, divided by the checks of that run: "
        "the script's work plus reading, parsing and writing.",
    ]
    for index, note in enumerate(notes):
        body.append(text(80, legend_top + 62 + index * 16, note, 11, anchor="start", fill="#555"))
    return svg_document(width, height, body)


def markdown(results):
    rows = rows_by_key(results)
    lines = [
        "| keys | contestant | checks/s | vs peer | p50 ms | p99 ms | p99.9 ms | server µs/check | "
        "of which script µs | checks per script call | client CPU µs/check |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for shape, shape_label in SHAPES:
        for series, label, _ in SERIES:
            row = rows.get((shape, series))
            if row is None:
                continue
            p999 = "–" if row["p999_ms"] is None else f"{row['p999_ms']:.2f}"
            ratio = "1.00x" if series == "redis_benchmark" else f"**{row['ratio']:.2f}x**"
            # Absent from results written before the bench batched checks: one per call.
            per_call = row.get("checks_per_call", 1.0)
            lines.append(
                f"| {shape_label} | {label} | {row['checks_per_sec']:,.0f} | {ratio} | "
                f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {p999} | {row['server_cpu_us']:.1f} | "
                f"{row['script_us']:.1f} | {per_call:.1f} | {row['client_cpu_us']:.1f} |"
            )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "target" / "tmp" / "redis_throughput.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "redis_throughput.svg")
    arguments = parser.parse_args()
    if not arguments.results.exists():
        sys.exit(
            f"{arguments.results} not found: run "
            "`cargo bench -p ratelimit-core --features redis --bench redis_throughput` first"
        )
    results = json.loads(arguments.results.read_text())
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(chart(results))
    print(f"wrote {arguments.out}")
    print()
    print(markdown(results))


if __name__ == "__main__":
    main()
