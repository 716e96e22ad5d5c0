#!/usr/bin/env python3
"""Draws the HTTP overhead chart of BENCHMARKS.md from the latest bench results, with no
dependencies.

Reads `target/tmp/http_overhead.json` (written by
`cargo bench -p ratelimit-axum --bench http_overhead`), writes
`docs/benchmarks/http_overhead.svg` and prints the markdown table that BENCHMARKS.md shows.

    python3 scripts/plot_http_overhead.py [--results FILE] [--out FILE]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # svg_chart.py sits next to this script
from svg_chart import (  # noqa: E402
    axis_lines,
    grid,
    headings,
    line,
    nice_ceiling,
    read_results,
    rect,
    results_and_out,
    svg_document,
    table_row,
    text,
    y_scale,
)

# Colour per route; tower_governor grey, as the reference in the other charts, and darker with
# its headers (a like-for-like look; the goal is measured against the default route).
COLOURS = {
    "/plain": "#bdbdbd",
    "/guarded": "#1f77b4",
    "/governor": "#7f7f7f",
    "/governor-headers": "#4d4d4d",
}

PLAIN_GOAL = 0.90


def label_lines(label):
    """A route label in at most two lines ("tower_governor + headers" is too wide for one)."""
    first, plus, rest = label.partition(" + ")
    return [first, plus.strip() + " " + rest] if plus else [label]


def labels(body, x, y, label, size, narrow=False):
    """The label's lines from `y` down; returns the y below them. `narrow` panels say
    "governor" for "tower_governor", which is wider than their slots."""
    if narrow:
        label = label.replace("tower_governor", "governor")
    for line_index, part in enumerate(label_lines(label)):
        body.append(text(x, y + 14 * line_index, part, size))
    return y + 14 * (len(label_lines(label)) - 1)


def axes(body, left, top, plot_width, plot_height, axis_max, label, value_format):
    """Horizontal grid lines with tick labels, the two axis lines and the y-axis title."""
    y_of = y_scale(top, plot_height, axis_max)
    body += grid(left, plot_width, axis_max, y_of, value_format, gap=6, size=11)
    body += axis_lines(left, top, plot_width, plot_height)
    body.append(text(left - 52, top + plot_height / 2, label, 12, rotate=-90))
    return y_of


def throughput_panel(body, routes, left, top, plot_width, plot_height):
    all_runs = [run["requests_per_sec"] for route in routes for run in route["runs"]]
    axis_max = nice_ceiling(max(all_runs) * 1.12)
    y_of = axes(
        body, left, top, plot_width, plot_height, axis_max, "requests/s (higher is better)",
        lambda value: f"{value / 1000:g}k",
    )
    body.append(text(left + plot_width / 2, top - 14, "Throughput: median of the rounds", 14, weight="bold"))
    slot = plot_width / len(routes)
    bar_width = slot * 0.55
    plain = next(route for route in routes if route["route"] == "/plain")
    governor = next(route for route in routes if route["route"] == "/governor")
    goal = plain["median_requests_per_sec"] * PLAIN_GOAL
    for index, route in enumerate(routes):
        x = left + slot * index + (slot - bar_width) / 2
        median = route["median_requests_per_sec"]
        body.append(rect(x, y_of(median), bar_width, top + plot_height - y_of(median), COLOURS[route["route"]]))
        for run_index, run in enumerate(route["runs"]):
            spread = bar_width * 0.6
            offset = spread * (run_index + 0.5) / len(route["runs"]) - spread / 2
            body.append(
                f'<circle cx="{x + bar_width / 2 + offset:.1f}" cy="{y_of(run["requests_per_sec"]):.1f}" '
                f'r="2.6" fill="#111" fill-opacity="0.65"/>'
            )
        # The median under the axis, clear of the dots and the goal line.
        below = labels(body, x + bar_width / 2, top + plot_height + 18, route["label"], 12)
        body.append(text(x + bar_width / 2, below + 16, f"{median:,.0f} req/s", 12, weight="bold"))
        if route["route"] == "/guarded":
            over_plain = median / plain["median_requests_per_sec"]
            over_governor = median / governor["median_requests_per_sec"]
            body.append(text(x + bar_width / 2, below + 32, f"{over_plain:.2f}x unguarded", 11, fill="#555"))
            body.append(text(x + bar_width / 2, below + 46, f"{over_governor:.2f}x tower_governor", 11, fill="#555"))
    body.append(line(left, y_of(goal), left + plot_width, y_of(goal), stroke="#d62728", dash="5,4"))
    body.append(text(left + 6, y_of(goal) - 5, "goal: 0.90x unguarded", 11, anchor="start", fill="#d62728"))


def latency_panel(body, routes, left, top, plot_width, plot_height):
    axis_max = nice_ceiling(max(route["median_p99_us"] for route in routes) * 1.15)
    y_of = axes(
        body, left, top, plot_width, plot_height, axis_max, "latency, microseconds (lower is better)",
        lambda value: f"{value:g}",
    )
    body.append(text(left + plot_width / 2, top - 14, "Latency: median p50 and p99", 14, weight="bold"))
    slot = plot_width / len(routes)
    bar_width = slot * 0.3
    for index, route in enumerate(routes):
        group_left = left + slot * index + slot * 0.2
        for series_index, (field, shade) in enumerate([("median_p50_us", 1.0), ("median_p99_us", 0.55)]):
            value = route[field]
            x = group_left + bar_width * series_index
            body.append(
                f'<g fill-opacity="{shade}">'
                + rect(x, y_of(value), bar_width - 2, top + plot_height - y_of(value), COLOURS[route["route"]])
                + "</g>"
            )
            body.append(text(x + (bar_width - 2) / 2, y_of(value) - 5, f"{value:,.0f}", 11))
            body.append(text(x + (bar_width - 2) / 2, top + plot_height + 14, "p50" if series_index == 0 else "p99", 10, fill="#555"))
        labels(body, left + slot * (index + 0.5), top + plot_height + 30, route["label"], 12, narrow=True)


def cpu_panel(body, routes, left, top, plot_width, plot_height):
    values = [route["median_server_cpu_ns_per_request"] / 1000 for route in routes]
    axis_max = nice_ceiling(max(values) * 1.15)
    y_of = axes(
        body, left, top, plot_width, plot_height, axis_max, "server CPU, µs per request (lower is better)",
        lambda value: f"{value:g}",
    )
    body.append(text(left + plot_width / 2, top - 14, "Server CPU per request", 14, weight="bold"))
    slot = plot_width / len(routes)
    bar_width = slot * 0.55
    plain = values[0]
    for index, (route, value) in enumerate(zip(routes, values)):
        x = left + slot * index + (slot - bar_width) / 2
        body.append(rect(x, y_of(value), bar_width, top + plot_height - y_of(value), COLOURS[route["route"]]))
        body.append(text(x + bar_width / 2, y_of(value) - 8, f"{value:.2f}", 12, weight="bold"))
        if route["route"] != "/plain":
            body.append(text(x + bar_width / 2, y_of(value) - 22, f"{value - plain:+.2f}", 11, fill="#555"))
        labels(body, x + bar_width / 2, top + plot_height + 18, route["label"], 11, narrow=True)


def header_fields_note(config):
    """The guard's header fields when the run narrowed them (`HTTP_BENCH_HEADER_FIELDS`)."""
    fields = config.get("header_fields", "all")
    return "" if fields == "all" else f"; #[rate_limit] sends only the {fields} header fields"


def chart(results):
    routes = results["routes"]
    config = results["config"]
    machine = results["machine"]
    width, height = 1480, 540
    top, bottom = 110, 90
    plot_height = height - top - bottom
    body = headings(
        width / 2,
        28,
        "HTTP overhead: #[rate_limit] vs unguarded vs tower_governor (default, and with its headers)",
        [
            f"one axum server, {config['server_workers']} worker thread; wrk -t1 -c{config['connections']}, "
            f"{config['rounds']} alternating rounds x {config['seconds']} s per route; loopback"
            + header_fields_note(config),
            f"{machine['cpus']} x {machine['cpu_model']}; load average before {machine['load_average_before']}, "
            f"after {machine['load_average_after']}; dots: one round each",
        ],
    )
    throughput_panel(body, routes, 90, top, 520, plot_height)
    latency_panel(body, routes, 710, top, 340, plot_height)
    cpu_panel(body, routes, 1130, top, 320, plot_height)
    return svg_document(width, height, body)


def markdown(results):
    routes = results["routes"]
    plain = next(route for route in routes if route["route"] == "/plain")
    governor = next(route for route in routes if route["route"] == "/governor")
    rounds = len(routes[0]["runs"])
    header = ["route", *[f"round {n}" for n in range(1, rounds + 1)], "median req/s", "p50", "p99",
              "server CPU / request", "vs unguarded", "vs tower_governor"]
    rows = [
        table_row(header),
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for route in routes:
        median = route["median_requests_per_sec"]
        rows.append(
            table_row(
                [
                    f"`{route['route']}` ({route['label']})",
                    *[f"{run['requests_per_sec']:,.0f}" for run in route["runs"]],
                    f"**{median:,.0f}**",
                    f"{route['median_p50_us']:,.0f} µs",
                    f"{route['median_p99_us']:,.0f} µs",
                    f"{route['median_server_cpu_ns_per_request'] / 1000:.2f} µs",
                    f"{median / plain['median_requests_per_sec']:.3f}x",
                    f"{median / governor['median_requests_per_sec']:.3f}x",
                ]
            )
        )
    ratios = results["ratios"]
    if "paired_guarded_over_plain" in ratios:
        rows.append("")
        rows.append(
            f"`#[rate_limit]` vs unguarded / vs tower_governor: medians {ratios['guarded_over_plain']:.3f}x / "
            f"{ratios['guarded_over_governor']:.3f}x; median of per-round ratios "
            f"{ratios['paired_guarded_over_plain']:.3f}x / {ratios['paired_guarded_over_governor']:.3f}x; "
            f"from server CPU per request {ratios['cpu_guarded_over_plain']:.3f}x / "
            f"{ratios['cpu_guarded_over_governor']:.3f}x."
        )
    if "guarded_over_governor_headers" in ratios:
        rows.append("")
        rows.append(
            f"For comparison only (the goal is against default tower_governor): `#[rate_limit]` vs "
            f"tower_governor with its headers: medians {ratios['guarded_over_governor_headers']:.3f}x; "
            f"median of per-round ratios {ratios['paired_guarded_over_governor_headers']:.3f}x; from "
            f"server CPU per request {ratios['cpu_guarded_over_governor_headers']:.3f}x."
        )
    return "\n".join(rows)


def main():
    arguments = results_and_out(__doc__.splitlines()[0], "http_overhead.json", "http_overhead.svg")
    results = read_results(arguments.results, "cargo bench -p ratelimit-axum --bench http_overhead")
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(chart(results))
    print(f"wrote {arguments.out}")
    print()
    print(markdown(results))


if __name__ == "__main__":
    main()
