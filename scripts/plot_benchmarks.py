#!/usr/bin/env python3
"""Draws the charts of BENCHMARKS.md from the latest bench results, with no dependencies.

Reads the interleaved run's `target/tmp/interleaved.json` (written by
`MEMORY_VS_GOVERNOR_INTERLEAVED=1 cargo bench -p ratelimit-core --bench memory_vs_governor`: medians
over rounds, whiskers from the fastest to the slowest round), else criterion's
`target/criterion/keys_*/*/new/estimates.json` (the same bench without the variable), and, when
present, `target/tmp/bytes_per_key.json` (written by
`cargo bench -p ratelimit-core --bench bytes_per_key`).
Writes `docs/benchmarks/ns_per_check.svg` and `docs/benchmarks/bytes_per_key.svg`, and prints the
markdown tables that BENCHMARKS.md shows.

    python3 scripts/plot_benchmarks.py [--target-dir DIR] [--out-dir DIR]
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # svg_chart.py sits next to this script
from svg_chart import headings, line, nice_ceiling, notes, rect, svg_document, table_row, text  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# Rows (criterion groups) and the label each gets.
ROWS = [
    ("keys_1", "1 hot key"),
    ("keys_10000", "10,000 keys"),
    ("keys_1000000", "1,000,000 keys"),
]

# Series (criterion benchmark ids): label and colour. Governor first: it is the reference.
SERIES = [
    ("governor", "governor check_key", "#7f7f7f"),
    ("fixed_window_sync", "ours fixed window, check_now", "#1f77b4"),
    ("fixed_window_dyn", "ours fixed window, dyn Backend::check_n_now", "#6baed6"),
    ("fixed_window_async", "ours fixed window, dyn Backend::check (boxed future)", "#c6dbef"),
    ("token_bucket_sync", "ours token bucket, check_now", "#d62728"),
    ("token_bucket_dyn", "ours token bucket, dyn Backend::check_n_now", "#fb6a4a"),
    ("token_bucket_async", "ours token bucket, dyn Backend::check (boxed future)", "#fcbba1"),
]

BYTES_GOAL = 64

DEFAULT_SUBTITLE = "criterion, same String keys for every limiter, single thread"


def load_estimate(path):
    """Criterion's headline time (the slope of the linear fit, else the mean), in ns, and its
    95% confidence interval."""
    estimates = json.loads(path.read_text())
    estimate = estimates.get("slope") or estimates["mean"]
    interval = estimate["confidence_interval"]
    return estimate["point_estimate"], interval["lower_bound"], interval["upper_bound"]


def load_times(criterion_dir):
    times = {}
    for row, _ in ROWS:
        for series, _, _ in SERIES:
            path = criterion_dir / row / series / "new" / "estimates.json"
            if path.exists():
                times[(row, series)] = load_estimate(path)
    return times


def load_interleaved(path):
    """(median, fastest round, slowest round) in ns per (row, series) of an interleaved run,
    and the median of the per-round ratios to governor."""
    times, ratios = {}, {}
    for entry in json.loads(path.read_text()):
        row = f"keys_{entry['keys']}"
        times[(row, entry["limiter"])] = (
            entry["median_ns"],
            entry["min_ns"],
            entry.get("max_ns", entry["median_ns"]),
        )
        ratios[(row, entry["limiter"])] = entry["ratio_to_governor"]
    return times, ratios


CRITERION_CHART = {
    "title": "Time per check: memory backend vs governor",
    "y_label": "ns per check (lower is better)",
    "format": "{:.0f}",
    "goal": None,
    "note": [
        "Bars: criterion's estimate; whiskers: its",
        "95% confidence interval. Every check is",
        "allowed; every key is already stored.",
    ],
}

RATIO_CHART = {
    "title": "Time per check relative to governor (1.0 = as fast)",
    "y_label": "ours / governor, same round (lower is better)",
    "format": "{:.2f}",
    "goal": 1.0,
    "note": [
        "Bars: median over 15 rounds of each round's",
        "ratio to governor; whiskers: the same ratio",
        "from the fastest and the slowest rounds.",
        "Every check is allowed; every key is stored.",
    ],
}


def ratio_bars(times, median_ratios):
    """Each contestant against governor in the same row: the median of the per-round ratios,
    and the ratios of the fastest and of the slowest rounds as whiskers."""
    bars = {}
    for (row, series), (_, fastest, slowest) in times.items():
        reference = times.get((row, "governor"))
        if reference is not None:
            bars[(row, series)] = (
                median_ratios[(row, series)],
                fastest / reference[1],
                slowest / reference[2],
            )
    return bars


# The grid, axis, goal and legend elements of the two charts below are written inline: they print
# integer coordinates as they are (`x1="80"`), where svg_chart's helpers print one decimal
# (`x1="80.0"`), and the committed charts must regenerate byte for byte.
def ns_chart(times, subtitle, style=CRITERION_CHART):
    width, height = 1080, 540
    left, right, top, bottom = 80, 400, 70, 70
    plot_width, plot_height = width - left - right, height - top - bottom
    highest = max(max(value, lower, upper) for (value, lower, upper) in times.values())
    axis_max = nice_ceiling(highest * 1.1)
    ticks = 5

    def y_of(value):
        return top + plot_height * (1 - value / axis_max)

    body = headings(left + plot_width / 2, 28, style["title"], [subtitle])
    for tick in range(ticks + 1):
        value = axis_max * tick / ticks
        y = y_of(value)
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_width}" y2="{y:.1f}" stroke="#ddd"/>')
        body.append(text(left - 8, y + 4, f"{value:g}", 12, anchor="end"))
    body.append(
        text(22, top + plot_height / 2, style["y_label"], 13, rotate=-90)
    )
    body.append(text(left + plot_width / 2, height - 22, "keys cycled through, round-robin", 13))

    group_width = plot_width / len(ROWS)
    bar_width = group_width * 0.8 / len(SERIES)
    for row_index, (row, row_label) in enumerate(ROWS):
        group_left = left + group_width * row_index + group_width * 0.1
        for series_index, (series, _, colour) in enumerate(SERIES):
            if (row, series) not in times:
                continue
            value, lower, upper = times[(row, series)]
            x = group_left + bar_width * series_index
            y = y_of(value)
            body.append(rect(x, y, bar_width - 2, top + plot_height - y, colour))
            centre = x + (bar_width - 2) / 2
            top_of_whisker = max(value, lower, upper)
            body.append(line(centre, y_of(top_of_whisker), centre, y_of(min(value, lower, upper)), "#000"))
            body.append(text(centre, y_of(top_of_whisker) - 5, style["format"].format(value), 10))
        body.append(text(left + group_width * (row_index + 0.5), top + plot_height + 20, row_label, 13))
    body.append(
        f'<line x1="{left}" y1="{top + plot_height}" x2="{left + plot_width}" '
        f'y2="{top + plot_height}" stroke="#333"/>'
    )
    body.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_height}" stroke="#333"/>')
    if style["goal"] is not None:
        goal_y = y_of(style["goal"])
        body.append(
            f'<line x1="{left}" y1="{goal_y:.1f}" x2="{left + plot_width}" y2="{goal_y:.1f}" '
            f'stroke="#2ca02c" stroke-width="2" stroke-dasharray="6 4"/>'
        )
        body.append(
            text(left + plot_width + 6, goal_y + 4, f"goal <= {style['goal']:g}", 11, anchor="start", fill="#2ca02c")
        )

    legend_x, legend_y = left + plot_width + 20, top + 10
    for index, (_, label, colour) in enumerate(SERIES):
        y = legend_y + index * 24
        body.append(
            f'<rect x="{legend_x}" y="{y}" width="14" height="14" fill="{colour}" stroke="#333" stroke-width="0.5"/>'
        )
        body.append(text(legend_x + 20, y + 12, label, 12, anchor="start"))
    body += notes(legend_x, legend_y + len(SERIES) * 24 + 16, style["note"], 16)
    return svg_document(width, height, body)


def bytes_chart(measurements):
    rows = [m for m in measurements if m["variant"] in ("governor", "fixed_window", "token_bucket")]
    labels = {
        "governor": "governor (String keys)",
        "fixed_window": "ours, fixed window",
        "token_bucket": "ours, token bucket",
    }
    width, row_height = 760, 46
    left, right, top, bottom = 200, 60, 84, 60
    height = top + bottom + row_height * len(rows)
    plot_width = width - left - right
    axis_max = nice_ceiling(max(m["bytes_per_key"] for m in rows) * 1.1)

    def x_of(value):
        return left + plot_width * value / axis_max

    keys = rows[0]["keys"] if rows else 0
    body = headings(
        width / 2,
        28,
        f"Resident bytes per key at {keys:,} keys",
        ["lower is better; the caller's own key Strings are not counted"],
    )
    for tick in range(6):
        value = axis_max * tick / 5
        x = x_of(value)
        body.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" stroke="#ddd"/>')
        body.append(text(x, height - bottom + 18, f"{value:g}", 12))
    body.append(text(left + plot_width / 2, height - 16, "bytes per key", 13))
    for index, measurement in enumerate(rows):
        y = top + index * row_height + 8
        bar_height = row_height - 16
        total = measurement["bytes_per_key"]
        key_copy = measurement["key_copy_bytes_per_key"]
        colour = "#7f7f7f" if measurement["variant"] == "governor" else "#1f77b4"
        body.append(
            f'<rect x="{left}" y="{y}" width="{x_of(total) - left:.1f}" height="{bar_height}" '
            f'fill="{colour}" stroke="#333" stroke-width="0.5"/>'
        )
        if key_copy > 0:
            body.append(
                f'<rect x="{x_of(total - key_copy):.1f}" y="{y}" width="{x_of(key_copy) - left:.1f}" '
                f'height="{bar_height}" fill="#c7c7c7" stroke="#333" stroke-width="0.5"/>'
            )
            body.append(
                text((x_of(total - key_copy) + x_of(total)) / 2, y + bar_height / 2 + 4, "key copies", 10)
            )
        body.append(text(left - 8, y + bar_height / 2 + 4, labels[measurement["variant"]], 12, anchor="end"))
        body.append(text(x_of(total) + 6, y + bar_height / 2 + 4, f"{total:.0f} B", 12, anchor="start"))
    goal_x = x_of(BYTES_GOAL)
    body.append(
        f'<line x1="{goal_x:.1f}" y1="{top - 6}" x2="{goal_x:.1f}" y2="{height - bottom}" '
        f'stroke="#2ca02c" stroke-width="2" stroke-dasharray="6 4"/>'
    )
    body.append(text(goal_x, top - 10, f"goal <= {BYTES_GOAL} B", 11, fill="#2ca02c"))
    body.append(
        f'<line x1="{left}" y1="{height - bottom}" x2="{left + plot_width}" y2="{height - bottom}" stroke="#333"/>'
    )
    return svg_document(width, height, body)


def ns_table(times):
    lines = [
        table_row(["row", "governor", *(f"{series} | ratio" for series, _, _ in SERIES[1:])]),
        "|---|---:|" + "---:|---:|" * (len(SERIES) - 1),
    ]
    for row, row_label in ROWS:
        if (row, "governor") not in times:
            continue
        reference = times[(row, "governor")][0]
        cells = [row_label, f"{reference:.0f} ns"]
        for series, _, _ in SERIES[1:]:
            if (row, series) in times:
                value = times[(row, series)][0]
                cells += [f"{value:.0f} ns", f"{value / reference:.2f}x"]
            else:
                cells += ["-", "-"]
        lines.append(table_row(cells))
    return "\n".join(lines)


def interleaved_table(rows):
    """The paired ratios of `MEMORY_VS_GOVERNOR_INTERLEAVED=1 cargo bench ... memory_vs_governor`."""
    labels = dict(ROWS)
    lines = [
        table_row(["row", *(series for series, _, _ in SERIES)]),
        "|---|" + "---:|" * len(SERIES),
    ]
    for row, row_label in ROWS:
        keys = int(row.removeprefix("keys_"))
        cells = []
        for series, _, _ in SERIES:
            match = [r for r in rows if r["keys"] == keys and r["limiter"] == series]
            if not match:
                cells.append("-")
            elif series == "governor":
                cells.append(f"{match[0]['median_ns']:.0f} ns")
            else:
                cells.append(f"{match[0]['median_ns']:.0f} ns ({match[0]['ratio_to_governor']:.2f}x)")
        lines.append(table_row([labels[row], *cells]))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--target-dir",
        type=Path,
        default=Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")),
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "benchmarks")
    parser.add_argument("--subtitle", default=DEFAULT_SUBTITLE)
    arguments = parser.parse_args()

    interleaved_report = arguments.target_dir / "tmp" / "interleaved.json"
    if interleaved_report.exists():
        times, median_ratios = load_interleaved(interleaved_report)
        if arguments.subtitle == DEFAULT_SUBTITLE:
            arguments.subtitle = "interleaved rounds, same String keys for every limiter, one thread; bars: median, whiskers: fastest to slowest round"
    else:
        times = load_times(arguments.target_dir / "criterion")
    if not times:
        sys.exit(
            f"no results under {arguments.target_dir / 'criterion'}; run "
            "`cargo bench -p ratelimit-core --bench memory_vs_governor` first"
        )
    arguments.out_dir.mkdir(parents=True, exist_ok=True)
    ns_path = arguments.out_dir / "ns_per_check.svg"
    if interleaved_report.exists():
        ns_path.write_text(
            ns_chart(ratio_bars(times, median_ratios), arguments.subtitle, RATIO_CHART)
        )
    else:
        ns_path.write_text(ns_chart(times, arguments.subtitle))
    print(ns_table(times))
    print(f"\nwrote {ns_path}")

    bytes_report = arguments.target_dir / "tmp" / "bytes_per_key.json"
    if bytes_report.exists():
        measurements = json.loads(bytes_report.read_text())
        bytes_path = arguments.out_dir / "bytes_per_key.svg"
        bytes_path.write_text(bytes_chart(measurements))
        print("\n| limiter | stored keys | bytes/key | of which: limiter's copy of the key text |")
        print("|---|---:|---:|---:|")
        for measurement in measurements:
            print(
                f"| {measurement['variant']} | {measurement['stored_keys']:,} | "
                f"{measurement['bytes_per_key']:.1f} | {measurement['key_copy_bytes_per_key']:.1f} |"
            )
        print(f"\nwrote {bytes_path}")
    else:
        print(f"\n(no {bytes_report}: run `cargo bench -p ratelimit-core --bench bytes_per_key` for the memory chart)")

    if interleaved_report.exists():
        print("\n" + interleaved_table(json.loads(interleaved_report.read_text())))


if __name__ == "__main__":
    main()
