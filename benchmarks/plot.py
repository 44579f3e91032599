"""Draw ``benchmarks/results/compare.json`` as one SVG per topic into ``docs/perf/``.

One figure per scenario module (``offload.svg``, ``echo.svg``, ...): for every scenario of
the module a group of bars, one bar per implementation, each the ratio of its median to the
reference's median, with the min..max range as an error bar; the reference is the dashed
line at 1.0 and the target (if any) a red line over its scenario's group.

``soak.svg`` (when ``benchmarks/results/soak.json`` exists, written by ``bench_soak.py``,
which also calls :func:`render_soak` itself): small multiples of open fds, threads, RSS and
traced memory against connect/close cycles served by a ``NetListener`` (top row) and against
completed Tasks (bottom row).

The output is deterministic (fixed ``svg.hashsalt``, no date in the metadata, text kept as
text), so a rerun with similar figures gives a small diff.

Usage: ``python benchmarks/plot.py [--json PATH] [--soak-json PATH] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _scenario import IMPLEMENTATION_ORDER  # noqa: E402

DEFAULT_JSON = HERE / "results" / "compare.json"
DEFAULT_SOAK_JSON = HERE / "results" / "soak.json"
DEFAULT_OUT = HERE.parent / "docs" / "perf"

# One fixed colour per implementation (Okabe-Ito, colour-blind safe); extras get grey.
COLOURS = {
    "trioqio": "#0072B2",
    "trio": "#999999",
    "anyio-trio": "#E69F00",
    "anyio-asyncio": "#F0E442",
    "asyncio": "#009E73",
    "uvloop": "#CC79A7",
    "iperf3": "#555555",
}
EXTRA = ("#56B4E9", "#D55E00", "#666666", "#BBBBBB")


def _style() -> None:
    matplotlib.rcParams.update(
        {
            "svg.hashsalt": "trioqio-bench",
            "svg.fonttype": "none",  # text stays text: small, diffable
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )


def _implementations(records: Sequence[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for record in records:
        for name in record["implementations"]:
            if name not in names:
                names.append(name)

    def rank(name: str) -> tuple[int, int]:
        base = name.split(" ", 1)[0]
        known = IMPLEMENTATION_ORDER.index(base) if base in IMPLEMENTATION_ORDER else 99
        return (known, names.index(name))

    return sorted(names, key=rank)


def _colours(names: Sequence[str]) -> dict[str, str]:
    colours: dict[str, str] = {}
    extra = iter(EXTRA * 4)
    for name in names:
        colours[name] = COLOURS.get(name) or next(extra)
    return colours


def figure(module: str, records: Sequence[dict[str, Any]]) -> Any:
    """The bar chart of one module's scenarios (a matplotlib Figure)."""
    names = _implementations(records)
    colours = _colours(names)
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.9 * len(records) + 2.5), 4.0))
    labels = []
    for group, record in enumerate(records):
        present = [n for n in names if n in record["implementations"]]
        offset = group - 0.4 + width / 2
        for slot, name in enumerate(present):
            stats = record["implementations"][name]
            if stats["ratio"] is None:
                continue
            x = offset + slot * width
            low = stats["ratio"] - stats["ratio_min"]
            high = stats["ratio_max"] - stats["ratio"]
            ax.bar(
                x,
                stats["ratio"],
                width * 0.92,
                color=colours[name],
                edgecolor="#333333" if name == "trioqio" else "none",
                linewidth=0.8,
                label=name,
                yerr=[[low], [high]],
                error_kw={"elinewidth": 0.7, "capsize": 1.5, "ecolor": "#000000"},
            )
        if record["target"] is not None:
            ax.hlines(record["target"], group - 0.45, group + 0.45, colors="#D00000", linewidth=1.4)
            ax.annotate(
                f"target {record['target']:g}x",
                (group + 0.45, record["target"]),
                xytext=(2, 2),
                textcoords="offset points",
                color="#D00000",
                fontsize=7,
            )
        title = textwrap.fill(record["title"], 26)
        labels.append(f"{record['key']}\n{title}\n({record['unit']}, vs {record['reference']})")
    ax.axhline(1.0, color="#555555", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(records)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("median / reference median")
    ax.set_title(f"{module}: ratio to the reference (higher is better)", fontsize=10)
    handles, legend = ax.get_legend_handles_labels()
    unique = {label: handle for handle, label in zip(handles, legend, strict=True)}
    ax.legend(
        unique.values(),
        unique.keys(),
        fontsize=7,
        frameon=False,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
    )
    fig.tight_layout()
    return fig


def groups(payload: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Scenario records by module, in the order compare.json lists them."""
    by_module: dict[str, list[dict[str, Any]]] = {}
    for record in payload["scenarios"]:
        if record["implementations"]:
            by_module.setdefault(record.get("module") or record["key"], []).append(record)
    return by_module


def render(payload: dict[str, Any], out: Path) -> list[Path]:
    """Write one SVG per module into ``out``; return the paths."""
    _style()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for module, records in groups(payload).items():
        fig = figure(module, records)
        path = out / f"{module}.svg"
        fig.savefig(path, format="svg", metadata={"Date": None, "Creator": None})
        plt.close(fig)
        written.append(path)
    return written


SOAK_PANELS = (
    ("fds", "open fds", 1.0),
    ("threads", "threads", 1.0),
    ("rss_kib", "RSS (MiB)", 1 / 1024),
    ("traced_bytes", "traced memory (KiB)", 1 / 1024),
)
SOAK_ROWS = (
    ("listener", "NetListener: connect/close cycles", "cycles served"),
    ("tasks", "Task: completed Tasks", "Tasks completed"),
)


def _thousands(value: float, _position: object) -> str:
    return f"{value / 1000:g}k" if value else "0"


def soak_figure(payload: dict[str, Any]) -> Any:
    """Small multiples of ``bench_soak.py``'s samples (a matplotlib Figure).

    One row per run present in ``payload`` (``listener``, ``tasks``), one panel per figure;
    each y axis starts at 0 so that a flat curve looks flat.
    """
    rows = [row for row in SOAK_ROWS if payload.get(row[0])]
    fig, axes = plt.subplots(
        len(rows), len(SOAK_PANELS), figsize=(10.0, 2.3 * len(rows) + 0.4), squeeze=False
    )
    for (key, title, xlabel), line in zip(rows, axes, strict=True):
        samples = payload[key]["samples"]
        done = [s["done"] for s in samples]
        for (metric, label, scale), ax in zip(SOAK_PANELS, line, strict=True):
            values = [s[metric] * scale for s in samples]
            ax.plot(done, values, color=COLOURS["trioqio"], linewidth=1.2, marker=".", ms=3)
            top = max(values)
            ax.set_ylim(0, top * 1.25 if top > 0 else 1)
            ax.set_title(label, fontsize=9)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_formatter(_thousands)
        line[0].set_ylabel(title, fontsize=8)
    fig.suptitle("Resources over a long run (flat is good)", fontsize=10)
    fig.tight_layout()
    return fig


def render_soak(payload: dict[str, Any], out: Path) -> Path:
    """Write ``soak.svg`` into ``out``; return its path."""
    _style()
    out.mkdir(parents=True, exist_ok=True)
    fig = soak_figure(payload)
    path = out / "soak.svg"
    fig.savefig(path, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--soak-json", type=Path, default=DEFAULT_SOAK_JSON)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.soak_json.exists():
        print(render_soak(json.loads(args.soak_json.read_text()), args.out))
    if not args.json.exists():
        print(f"{args.json} is missing: run benchmarks/compare.py first", file=sys.stderr)
        return 2
    payload = json.loads(args.json.read_text())
    if payload.get("quick"):
        print("note: plotting a --quick run", file=sys.stderr)
    for path in render(payload, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
