#!/usr/bin/env python3
"""Draws the HTTP overhead chart of BENCHMARKS.md from the latest bench results, with no
dependencies.

Reads `target/tmp/http_overhead.json` (written by
`cargo bench -p ratelimit-axum --bench http_overhead`), writes
`docs/benchmarks/http_overhead.svg` and prints the markdown table that BENCHMARKS.md shows.

    python3 scripts/plot_http_overhead.py [--results FILE] [--out FILE]
"""

import argparse
import json
import sys
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Colour per route; tower_governor grey, as the reference in the other charts, and darker with
# its headers (a like-for-like look; the goal is measured against the default route).
COLOURS = {
    "/plain": "#bdbdbd",
    "/guarded": "#1f77b4",
    "/governor": "#7f7f7f",
    "/governor-headers": "#4d4d4d",
}

PLAIN_GOAL = 0.90

FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'


def nice_ceiling(value):
    """The smallest 1/2/2.5/5 x 10^n at or above `value`, for an axis that ends on a round number."""
    magnitude = 1
    while magnitude * 10 <= value:
        magnitude *= 10
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def text(x, y, content, size=12, anchor="middle", weight="normal", fill="#222", rotate=None):
    transform = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate is not None else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" {FONT} font-size="{size}" text-anchor="{anchor}" '
        f'font-weight="{weight}" fill="{fill}"{transform}>{escape(content)}</text>'
    )


def line(x1, y1, x2, y2, stroke="#333", width=1, dash=None):
    dashes = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}" '
        f'stroke-width="{width}"{dashes}/>'
    )


def rect(x, y, width, height, fill):
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" fill="{fill}" '
        f'stroke="#333" stroke-width="0.5"/>'
    )


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

    def y_of(value):
        return top + plot_height * (1 - value / axis_max)

    for tick in range(6):
        value = axis_max * tick / 5
        body.append(line(left, y_of(value), left + plot_width, y_of(value), stroke="#ddd"))
        body.append(text(left - 6, y_of(value) + 4, value_format(value), 11, anchor="end"))
    body.append(line(left, top + plot_height, left + plot_width, top + plot_height))
    body.append(line(left, top, left, top + plot_height))
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
    body = [
        text(
            width / 2, 28,
            "HTTP overhead: #[rate_limit] vs unguarded vs tower_governor (default, and with its headers)",
            18, weight="bold",
        ),
        text(
            width / 2, 50,
            f"one axum server, {config['server_workers']} worker thread; wrk -t1 -c{config['connections']}, "
            f"{config['rounds']} alternating rounds x {config['seconds']} s per route; loopback"
            + header_fields_note(config),
            12, fill="#555",
        ),
        text(
            width / 2, 68,
            f"{machine['cpus']} x {machine['cpu_model']}; load average before {machine['load_average_before']}, "
            f"after {machine['load_average_after']}; dots: one round each",
            12, fill="#555",
        ),
    ]
    throughput_panel(body, routes, 90, top, 520, plot_height)
    latency_panel(body, routes, 710, top, 340, plot_height)
    cpu_panel(body, routes, 1130, top, 320, plot_height)
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


def markdown(results):
    routes = results["routes"]
    plain = next(route for route in routes if route["route"] == "/plain")
    governor = next(route for route in routes if route["route"] == "/governor")
    rounds = len(routes[0]["runs"])
    header = ["route", *[f"round {n}" for n in range(1, rounds + 1)], "median req/s", "p50", "p99",
              "server CPU / request", "vs unguarded", "vs tower_governor"]
    rows = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for route in routes:
        median = route["median_requests_per_sec"]
        rows.append(
            "| "
            + " | ".join(
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
            + " |"
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "target" / "tmp" / "http_overhead.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "http_overhead.svg")
    arguments = parser.parse_args()
    if not arguments.results.exists():
        sys.exit(f"{arguments.results} not found: run `cargo bench -p ratelimit-axum --bench http_overhead` first")
    results = json.loads(arguments.results.read_text())
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(chart(results))
    print(f"wrote {arguments.out}")
    print()
    print(markdown(results))


if __name__ == "__main__":
    main()
