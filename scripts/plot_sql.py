#!/usr/bin/env python3
"""Draws the SQL throughput chart of BENCHMARKS.md from the latest bench results, with no
dependencies.

Reads `target/tmp/sql_throughput.json` (written by
`cargo bench -p ratelimit-core --features postgres --bench sql_throughput`), writes
`docs/benchmarks/sql_throughput.svg` and prints the markdown table that BENCHMARKS.md shows.

    python3 scripts/plot_sql.py [--results FILE] [--out FILE]

Left panel: median checks/s per contestant, whiskers from the slowest to the fastest round, the
median of the per-round ratios to pgbench above each bar. Right panel: CPU time per check,
PostgreSQL's and the client's, stacked (both share the machine's two cores).
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

# Contestant id (as the bench writes it), label and colour; the peer first and grey.
SERIES = [
    ("pgbench", "pgbench single-row upsert (peer)", "#7f7f7f"),
    ("fixed_window", "ours, fixed window", "#1f77b4"),
    ("token_bucket", "ours, token bucket", "#d62728"),
    ("sliding_log_full", "ours, sliding log, full key (rejects)", "#2ca02c"),
]


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    if not ordered:
        return float("nan")
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def summarise(results):
    """Per contestant: median checks/s, per-round values, median ratio to the peer, median CPU."""
    by_round = {}
    for sample in results["samples"]:
        by_round.setdefault(sample["round"], {})[sample["contestant"]] = sample
    rows = {}
    for series, label, _ in SERIES:
        samples = [rounds[series] for rounds in by_round.values() if series in rounds]
        ratios = [
            rounds[series]["checks_per_second"] / rounds["pgbench"]["checks_per_second"]
            for rounds in by_round.values()
            if series in rounds and "pgbench" in rounds
        ]
        optional = lambda field: [s[field] for s in samples if s[field] is not None]
        rows[series] = {
            "label": label,
            "per_round": [s["checks_per_second"] for s in samples],
            "checks_per_second": median([s["checks_per_second"] for s in samples]),
            "ratio": median(ratios),
            "mean_ms": median([s["mean_ms"] for s in samples]),
            "p50_ms": median(optional("p50_ms")) if optional("p50_ms") else None,
            "p99_ms": median(optional("p99_ms")) if optional("p99_ms") else None,
            "server_us": median([s["server_cpu_us_per_check"] for s in samples]),
            "client_us": median([s["client_cpu_us_per_check"] for s in samples]),
        }
    return rows


def throughput_panel(rows, left, top, width, height):
    axis_max = nice_ceiling(max(max(row["per_round"]) for row in rows.values()) * 1.12, FINE_STEPS)
    y_of = y_scale(top, height, axis_max)
    body = [text(left + width / 2, top - 14, "checks/s (higher is better)", 14, weight="bold")]
    body += grid(left, width, axis_max, y_of, lambda v: f"{v / 1000:g}k")
    body += axis_lines(left, top, width, height)
    bar_width = width / len(SERIES)
    for index, (series, _, colour) in enumerate(SERIES):
        row = rows[series]
        x = left + bar_width * index + bar_width * 0.15
        inner = bar_width * 0.7
        value = row["checks_per_second"]
        body.append(rect(x, y_of(value), inner, top + height - y_of(value), colour))
        centre = x + inner / 2
        slowest, fastest = min(row["per_round"]), max(row["per_round"])
        body += whisker(centre, y_of(fastest), y_of(slowest), 5)
        body.append(text(centre, y_of(fastest) - 6, f'{row["ratio"]:.2f}x', 12, weight="bold"))
        body.append(text(centre, top + height + 20, series.replace("_", " "), 12))
    return body


def cpu_panel(rows, left, top, width, height):
    totals = [row["server_us"] + row["client_us"] for row in rows.values()]
    axis_max = nice_ceiling(max(totals) * 1.15, FINE_STEPS)
    y_of = y_scale(top, height, axis_max)
    body = [text(left + width / 2, top - 14, "CPU µs per check (lower is better)", 14, weight="bold")]
    body += grid(left, width, axis_max, y_of, lambda v: f"{v:g}")
    body += axis_lines(left, top, width, height)
    bar_width = width / len(SERIES)
    for index, (series, _, colour) in enumerate(SERIES):
        row = rows[series]
        x = left + bar_width * index + bar_width * 0.15
        inner = bar_width * 0.7
        server, client = row["server_us"], row["client_us"]
        body.append(rect(x, y_of(server), inner, top + height - y_of(server), colour))
        body.append(rect(x, y_of(server + client), inner, y_of(server) - y_of(server + client), colour, 0.35))
        body.append(text(x + inner / 2, y_of(server) + 16, f"{server:.0f}", 11, fill="#fff", weight="bold"))
        body.append(text(x + inner / 2, y_of(server + client) - 6, f"+{client:.0f}", 11))
        body.append(text(x + inner / 2, top + height + 20, series.replace("_", " "), 12))
    return body


def chart(results, rows):
    width, height = 1040, 576
    top, bottom = 116, 140
    panel_height = height - top - bottom
    body = headings(
        width / 2,
        30,
        "SqlBackend (PostgreSQL) vs pgbench, 16 concurrent clients, loopback",
        [
            f"PostgreSQL {results.get('server_version', '')}; median of {results['rounds']} alternating rounds "
            f"of {results['seconds']} s, {results['tasks']} tasks / connections each",
            "peer: pgbench -M prepared, one INSERT .. ON CONFLICT DO UPDATE per transaction, own row; "
            "ours: SqlBackend::check, own key, concurrent checks batched",
        ],
    )
    body += throughput_panel(rows, 80, top, 400, panel_height)
    body += cpu_panel(rows, 600, top, 400, panel_height)
    legend_top = top + panel_height + 44
    for index, (_, label, colour) in enumerate(SERIES):
        body += legend_entry(80 + index * 240, legend_top, colour, label)
    explanations = [
        "Left: bars are medians over rounds, whiskers the slowest and fastest round, labels the median of the "
        "per-round ratios to pgbench.",
        "Right: solid, PostgreSQL's CPU time per check (all postgres processes, /proc); light, the client's "
        "(the bench process, or the pgbench child).",
    ]
    body += notes(80, legend_top + 40, explanations, 18)
    return svg_document(width, height, body)


def table(rows):
    lines = [
        "| contestant | checks/s | vs peer | mean ms | p50 ms | p99 ms | server CPU µs/check | client CPU µs/check |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    dash = lambda value: "–" if value is None else f"{value:.2f}"
    for series, _, _ in SERIES:
        row = rows[series]
        ratio = "1.00x" if series == "pgbench" else f'**{row["ratio"]:.2f}x**'
        lines.append(
            f'| {row["label"]} | {row["checks_per_second"]:,.0f} | {ratio} | {row["mean_ms"]:.2f} | '
            f'{dash(row["p50_ms"])} | {dash(row["p99_ms"])} | {row["server_us"]:.0f} | {row["client_us"]:.0f} |'
        )
    return "\n".join(lines)


def main():
    args = results_and_out(__doc__.splitlines()[0], "sql_throughput.json", "sql_throughput.svg")
    results = read_results(
        args.results, "cargo bench -p ratelimit-core --features postgres --bench sql_throughput"
    )
    results["rounds"] = len({sample["round"] for sample in results["samples"]})
    rows = summarise(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(chart(results, rows))
    print(table(rows))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
