#!/usr/bin/env python3
"""Draws the breaker latency chart of BENCHMARKS.md from the latest bench results, with no
dependencies.

Reads `target/tmp/breaker_latency.json` (written by
`cargo bench -p ratelimit-tests --bench breaker_latency`), writes
`docs/benchmarks/breaker_latency.svg` and prints the markdown tables that BENCHMARKS.md shows.

    python3 scripts/plot_breaker.py [--results FILE] [--out FILE]

One row per scenario, latency on a log scale (the breaker-open and breaker-closed requests are
six orders of magnitude apart): a bar to the median, a lighter bar to the p99, a tick at the
slowest request; the primary's timeout as a dashed line; closed / open ratios on the right.
"""

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # svg_chart.py sits next to this script
from svg_chart import ROOT, line, read_results, rect, results_and_out, svg_document, text  # noqa: E402

# Bar colour per breaker (as the bench writes it): baselines blue and grey, the breaker that
# never opens red, the open one green.
COLOURS = {
    "none": ("#7f7f7f", "#c7c7c7"),
    "closed": ("#1f77b4", "#9ecae1"),
    "closed (never opens)": ("#d62728", "#f4a6a6"),
    "open": ("#2ca02c", "#a1d99b"),
}

# Axis decades, in microseconds, with their labels.
DECADES = [
    (0.1, "100 ns"),
    (1, "1 µs"),
    (10, "10 µs"),
    (100, "100 µs"),
    (1e3, "1 ms"),
    (1e4, "10 ms"),
    (1e5, "100 ms"),
    (1e6, "1 s"),
]


def bar(x, y, width, height, fill):
    """A latency bar at least 0.5 px wide, so that one at the axis' left end still shows."""
    return rect(x, y, max(width, 0.5), height, fill)


def duration(micros):
    """A latency in the unit that reads best: `0.35 µs`, `43.1 µs`, `201.5 ms`."""
    if micros >= 1e4:
        return f"{micros / 1e3:.1f} ms"
    if micros >= 100:
        return f"{micros / 1e3:.3f} ms"
    return f"{micros:.2f} µs"


def grouped(ratio):
    return f"{ratio:,.0f}"


def chart(results):
    rows = results["rows"]
    ratios = {ratio["outage"]: ratio for ratio in results["ratios"]}
    machine = results["machine"]

    width, left, right_margin = 1000, 330, 150
    top, row_height = 92, 46
    plot_width = width - left - right_margin
    plot_height = row_height * len(rows)
    height = top + plot_height + 110
    low, high = math.log10(DECADES[0][0]), math.log10(DECADES[-1][0])

    def x_of(micros):
        clamped = min(max(micros, DECADES[0][0]), DECADES[-1][0])
        return left + plot_width * (math.log10(clamped) - low) / (high - low)

    body = [
        text(
            width / 2,
            26,
            "One request with the primary Redis down: breaker closed vs open",
            16,
            weight="bold",
        ),
        text(
            width / 2,
            46,
            f"MultiBackend (Redis primary, timeout {results['timeout_ms']} ms; memory fallback), "
            f"sequential checks; log scale, lower is better",
            12,
        ),
        text(
            width / 2,
            64,
            f"{machine['cpus']} CPUs, {machine['cpu_model']}, load average "
            f"{machine['load_before']} (other builds running)",
            11,
            fill="#555",
        ),
    ]
    for micros, label in DECADES:
        x = x_of(micros)
        body.append(line(x, top, x, top + plot_height, "#ddd"))
        body.append(text(x, top + plot_height + 18, label, 11))
    body.append(
        text(left + plot_width / 2, top + plot_height + 38, "latency per request", 12, weight="bold")
    )
    timeout_x = x_of(results["timeout_ms"] * 1e3)
    body.append(line(timeout_x, top - 8, timeout_x, top + plot_height, "#d62728", 1.2, "5,4"))
    body.append(text(timeout_x, top - 12, "timeout", 11, fill="#d62728"))
    body.append(text(left + plot_width + 75, top - 12, "closed / open", 11, weight="bold"))

    for index, row in enumerate(rows):
        row_top = top + row_height * index
        if index > 0 and row["id"].endswith("_closed"):
            body.append(line(12, row_top, width - 12, row_top, "#999", 0.8))
        dark, light = COLOURS[row["breaker"]]
        breaker = row["breaker"] if row["breaker"] != "none" else "no breaker"
        body.append(text(left - 10, row_top + 19, row["scenario"], 11.5, anchor="end"))
        body.append(
            text(
                left - 10,
                row_top + 35,
                f"breaker {breaker}, {row['requests']} requests" if breaker != "no breaker"
                else f"{row['requests']} requests",
                10.5,
                anchor="end",
                fill="#555",
            )
        )
        bar_top, bar_height = row_top + 9, row_height - 18
        body.append(bar(left, bar_top, x_of(row["p99_us"]) - left, bar_height, light))
        body.append(bar(left, bar_top, x_of(row["p50_us"]) - left, bar_height, dark))
        # A whisker from the p99 to the slowest request.
        middle, max_x = bar_top + bar_height / 2, x_of(row["max_us"])
        body.append(line(x_of(row["p99_us"]), middle, max_x, middle, "#000", 1))
        body.append(line(max_x, bar_top + 4, max_x, bar_top + bar_height - 4, "#000", 1.5))
        body.append(
            text(
                # Beyond the whisker, or inside a bar long enough to hold it.
                max_x + 6 if row["p99_us"] < 2e4 else left + 6,
                bar_top + bar_height / 2 + 4,
                f"p50 {duration(row['p50_us'])}, p99 {duration(row['p99_us'])}",
                10.5,
                anchor="start",
                fill="#000" if row["p99_us"] < 2e4 else "#fff",
                weight="bold" if row["p99_us"] >= 2e4 else "normal",
                halo="white" if row["p99_us"] < 2e4 else None,
            )
        )
        outage = row["id"].rsplit("_", 1)[0]
        if row["id"].endswith("_open") and outage in ratios:
            ratio = ratios[outage]
            body.append(
                text(
                    left + plot_width + 75,
                    row_top + 4,
                    f"{grouped(ratio['p50'])}× (p50)",
                    11.5,
                    weight="bold",
                )
            )
    body.append(line(left, top, left, top + plot_height, "#333"))

    legend_y = top + plot_height + 66
    legend = [
        ("#1f77b4", "baseline: Redis answers"),
        ("#7f7f7f", "memory alone"),
        ("#d62728", "primary down, breaker closed"),
        ("#2ca02c", "primary down, breaker open"),
    ]
    x = 130
    for colour, label in legend:
        body.append(rect(x, legend_y - 10, 14, 12, colour))
        body.append(text(x + 20, legend_y, label, 11, anchor="start"))
        x += 38 + 6.2 * len(label)
    body.append(
        text(
            width / 2,
            legend_y + 20,
            "dark bar: p50; light bar: p99; whisker to the black tick: the slowest request",
            11,
            fill="#555",
        )
    )
    return svg_document(width, height, body)


def markdown(results):
    lines = [
        "| primary | breaker | requests | p50 | p99 | max | mean |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['scenario']} | {row['breaker']} | {row['requests']} | "
            f"{duration(row['p50_us'])} | {duration(row['p99_us'])} | "
            f"{duration(row['max_us'])} | {duration(row['mean_us'])} |"
        )
    lines += [
        "",
        "| primary down | closed / open, mean | p50 | p99 |",
        "|---|---:|---:|---:|",
    ]
    for ratio in results["ratios"]:
        lines.append(
            f"| {ratio['outage']} | {grouped(ratio['mean'])}× | {grouped(ratio['p50'])}× | "
            f"{grouped(ratio['p99'])}× |"
        )
    return "\n".join(lines)


def main():
    args = results_and_out(__doc__.split("\n\n")[0], "breaker_latency.json", "breaker_latency.svg")
    results = read_results(args.results, "cargo bench -p ratelimit-tests --bench breaker_latency")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(chart(results))
    print(markdown(results))
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
