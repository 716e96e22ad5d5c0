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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # svg_chart.py sits next to this script
from svg_chart import (  # noqa: E402
    FINE_STEPS,
    axis_lines,
    grid,
    headings,
    legend_entry,
    nice_ceiling,
    notes,
    read_results,
    rect,
    results_and_out,
    svg_document,
    text,
    whisker,
    y_scale,
)

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


def rows_by_key(results):
    return {(row["keys"], row["contestant"]): row for row in results["rows"]}


def shape_groups(rows, left, top, plot_width, plot_height, bar):
    """The bars of one panel: the two key shapes side by side, one bar per contestant in each,
    then the axes. `bar(x, width, series, row, colour)` draws one contestant's bar."""
    body = []
    group_width = plot_width / len(SHAPES)
    bar_width = group_width * 0.84 / len(SERIES)
    for shape_index, (shape, shape_label) in enumerate(SHAPES):
        group_left = left + group_width * shape_index + group_width * 0.08
        for series_index, (series, _, colour) in enumerate(SERIES):
            row = rows.get((shape, series))
            if row is not None:
                body += bar(group_left + bar_width * series_index, bar_width - 3, series, row, colour)
        body.append(text(left + group_width * (shape_index + 0.5), top + plot_height + 20, shape_label, 13))
    return body + axis_lines(left, top, plot_width, plot_height)


def throughput_panel(rows, left, top, plot_width, plot_height):
    highest = max(max(row["per_round"]) for row in rows.values())
    axis_max = nice_ceiling(highest * 1.12, FINE_STEPS)
    y_of = y_scale(top, plot_height, axis_max)

    def bar(x, width, series, row, colour):
        value = row["checks_per_sec"]
        centre = x + width / 2
        slowest, fastest = min(row["per_round"]), max(row["per_round"])
        label = "1.00x" if series == "redis_benchmark" else f'{row["ratio"]:.2f}x'
        return [
            rect(x, y_of(value), width, top + plot_height - y_of(value), colour),
            *whisker(centre, y_of(fastest), y_of(slowest), 4),
            text(centre, y_of(fastest) - 6, label, 11, weight="bold"),
        ]

    body = [text(left + plot_width / 2, top - 14, "checks/s (higher is better)", 14, weight="bold")]
    body += grid(left, plot_width, axis_max, y_of, lambda value: f"{value / 1000:g}k")
    return body + shape_groups(rows, left, top, plot_width, plot_height, bar)


def server_cost_panel(rows, left, top, plot_width, plot_height):
    """redis-server CPU time per check: the cost that bounds throughput once the server is the
    busy side."""
    axis_max = nice_ceiling(max(row["server_cpu_us"] for row in rows.values()) * 1.15, FINE_STEPS)
    y_of = y_scale(top, plot_height, axis_max)

    def bar(x, width, series, row, colour):
        value = row["server_cpu_us"]
        return [
            rect(x, y_of(value), width, top + plot_height - y_of(value), colour),
            text(x + width / 2, y_of(value) - 6, f"{value:.1f}", 11),
        ]

    body = [
        text(left + plot_width / 2, top - 14, "redis-server CPU µs per check (lower is better)", 14, weight="bold")
    ]
    body += grid(left, plot_width, axis_max, y_of, lambda value: f"{value:g}")
    return body + shape_groups(rows, left, top, plot_width, plot_height, bar)


def chart(results):
    rows = rows_by_key(results)
    width, height = 1120, 600
    top, bottom = 110, 170
    panel_height = height - top - bottom
    body = headings(
        width / 2,
        30,
        "RedisBackend vs redis-benchmark, 50 concurrent clients, loopback",
        [
            f"redis-server {results['redis_version']}, {results['cpus']} CPUs ({results['cpu_model']}); "
            f"median of {results['rounds']} alternating rounds of {results['seconds_per_run']:g} s; "
            f"load average {results['load_before']} before, {results['load_after']} after",
            "peer: 50 connections, one request in flight each (-P 1); ours: 50 tokio tasks, one "
            "multiplexed connection, checks batched into shared EVALSHAs, 1 or 2 worker threads",
        ],
    )
    body += throughput_panel(rows, 80, top, 450, panel_height)
    body += server_cost_panel(rows, 630, top, 450, panel_height)
    legend_top = top + panel_height + 46
    for index, (_, label, colour) in enumerate(SERIES):
        line_index, column = divmod(index, 3)
        body += legend_entry(80 + column * 350, legend_top + line_index * 22, colour, label)
    explanations = [
        "Left: bars are medians over rounds, whiskers the slowest and fastest round, labels the median of the "
        "per-round ratios to the peer.",
        "Right: redis-server user + system CPU time (INFO cpu) over a run, divided by the checks of that run: "
        "the script's work plus reading, parsing and writing.",
    ]
    body += notes(80, legend_top + 62, explanations, 16)
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
    arguments = results_and_out(__doc__.splitlines()[0], "redis_throughput.json", "redis_throughput.svg")
    results = read_results(
        arguments.results, "cargo bench -p ratelimit-core --features redis --bench redis_throughput"
    )
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(chart(results))
    print(f"wrote {arguments.out}")
    print()
    print(markdown(results))


if __name__ == "__main__":
    main()
