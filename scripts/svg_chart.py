"""The small SVG helpers that the `plot_*.py` scripts share, with no dependencies.

The charts of BENCHMARKS.md are plain SVG text so that they diff well and need nothing but the
standard library. Each drawing helper returns one element (or a short list of them) as a string;
a chart is a list of such strings wrapped by `svg_document`. The scripts import this module
from their own folder, so `python3 scripts/plot_x.py` works from the repository root.

It also holds what the single-chart scripts share around the drawing: the `--results FILE
--out FILE` options and reading the bench's report.

The exact text of every element is part of the contract: the committed charts are regenerated
byte for byte from the same results, so a change here changes every chart's diff.
"""

import argparse
import json
import sys
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'

# Round axis ends: the coarse steps suit axes read by eye, the fine ones waste less height and
# still divide into five ticks.
COARSE_STEPS = (1, 2, 2.5, 5, 10)
FINE_STEPS = (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)


def nice_ceiling(value, steps=COARSE_STEPS):
    """The smallest step x 10^n at or above `value`, for an axis that ends on a round number."""
    magnitude = 1
    while magnitude * 10 <= value:
        magnitude *= 10
    for step in steps:
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def text(x, y, content, size=12, anchor="middle", weight="normal", fill="#222", rotate=None, halo=None):
    """A label; `content` is escaped. `rotate` turns it about its anchor (y-axis titles); a
    `halo` (an outline painted under the glyphs) keeps it readable over lines and bars."""
    transform = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate is not None else ""
    outline = (
        f' stroke="{halo}" stroke-width="3" paint-order="stroke" stroke-linejoin="round"'
        if halo
        else ""
    )
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" {FONT} font-size="{size}" text-anchor="{anchor}" '
        f'font-weight="{weight}" fill="{fill}"{transform}{outline}>{escape(content)}</text>'
    )


def rect(x, y, width, height, fill, opacity=None):
    """A bar or a legend swatch, with the thin dark outline every chart uses."""
    extra = f' fill-opacity="{opacity}"' if opacity is not None else ""
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" '
        f'fill="{fill}"{extra} stroke="#333" stroke-width="0.5"/>'
    )


def line(x1, y1, x2, y2, stroke="#333", width=1, dash=None):
    """A grid line, axis, whisker or goal line; `dash` is an SVG stroke-dasharray."""
    dashes = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
        f'stroke="{stroke}" stroke-width="{width}"{dashes}/>'
    )


def headings(centre, top, title, subtitles):
    """A chart's bold title and, one under the other, its grey subtitles (what ran, where)."""
    body = [text(centre, top, title, 18, weight="bold")]
    for index, subtitle in enumerate(subtitles):
        body.append(text(centre, top + 22 + 18 * index, subtitle, 12, fill="#555"))
    return body


def svg_document(width, height, body):
    """The whole file: the elements of `body` on a white background, ending with a newline."""
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


def y_scale(top, plot_height, axis_max):
    """The y of a value on a vertical axis from 0 at the bottom to `axis_max` at `top`."""

    def y_of(value):
        return top + plot_height * (1 - value / axis_max)

    return y_of


def grid(left, plot_width, axis_max, y_of, label_of, gap=8, size=12):
    """Six horizontal grid lines (0 to `axis_max`) with their tick labels `gap` left of the axis."""
    body = []
    for tick in range(6):
        value = axis_max * tick / 5
        y = y_of(value)
        body.append(line(left, y, left + plot_width, y, "#ddd"))
        body.append(text(left - gap, y + 4, label_of(value), size, anchor="end"))
    return body


def axis_lines(left, top, plot_width, plot_height):
    """The x axis along the bottom and the y axis along the left of a plot area."""
    return [
        line(left, top + plot_height, left + plot_width, top + plot_height),
        line(left, top, left, top + plot_height),
    ]


def whisker(centre, fastest_y, slowest_y, cap):
    """A black whisker from the slowest to the fastest round, with caps `cap` wide each side."""
    body = [line(centre, fastest_y, centre, slowest_y, "#000")]
    for y in (slowest_y, fastest_y):
        body.append(line(centre - cap, y, centre + cap, y, "#000"))
    return body


def legend_entry(x, y, colour, label):
    """A 14 px swatch and its label to the right."""
    return [rect(x, y, 14, 14, colour), text(x + 20, y + 12, label, 12, anchor="start")]


def notes(x, y, lines, spacing):
    """Grey explanatory lines under a chart, one below the other."""
    return [
        text(x, y + index * spacing, note, 11, anchor="start", fill="#555") for index, note in enumerate(lines)
    ]


def table_row(cells):
    """One row of a markdown table."""
    return "| " + " | ".join(cells) + " |"


def results_and_out(description, results_name, chart_name):
    """The `--results FILE --out FILE` options of a single-chart script, parsed; by default the
    bench's report in `target/tmp/` and the chart in `docs/benchmarks/`, where BENCHMARKS.md
    expects them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--results", type=Path, default=ROOT / "target" / "tmp" / results_name)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / chart_name)
    return parser.parse_args()


def read_results(path, bench_command):
    """The bench's JSON report, or an exit that names the command writing it: a missing report
    is the usual first run, and a traceback would not say what to do."""
    if not path.exists():
        sys.exit(f"{path} not found: run `{bench_command}` first")
    return json.loads(path.read_text())
