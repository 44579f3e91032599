"""One side-by-side benchmark run: trioqio against raw Trio, anyio, asyncio and uvloop.

Discovers every module in ``benchmarks/scenarios/`` that exports ``SCENARIOS`` (see
``benchmarks/_scenario.py``) and, for each scenario:

1. warm-up: every implementation runs once (not recorded);
2. ``--rounds`` interleaved rounds, each running every implementation once, the order
   rotated by one place per round (so no implementation always runs first, right after
   the warm-up of the machine's caches, or last, and drift on a shared machine hits all of
   them alike);
3. median, min..max range, ratio of each median to the reference's median, and the
   target verdict (trioqio's ratio >= target: met, else missed).

Writes ``benchmarks/results/compare.md`` and ``compare.json`` and prints the Markdown.
``--only`` runs the scenarios whose key contains the given text and keeps the other
scenarios' previous results in the files. ``benchmarks/plot.py`` draws the JSON.

Usage: ``python benchmarks/compare.py [--quick] [--only KEY_SUBSTRING] [--rounds N]``
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import pkgutil
import platform
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _scenario import IMPLEMENTATION_ORDER, Measure, Scenario  # noqa: E402

RESULTS = HERE / "results"
SUBJECT = "trioqio"  # the implementation a target applies to
DEFAULT_ROUNDS = 5
QUICK_ROUNDS = 1


# -- discovery ------------------------------------------------------------------------------


#: Topic modules in the issue's order; any other module follows, alphabetically.
MODULE_ORDER = ("offload", "accept", "echo", "bulk_tcp", "tls", "websocket", "migrate")


def module_rank(name: str) -> tuple[int, str]:
    return (MODULE_ORDER.index(name) if name in MODULE_ORDER else len(MODULE_ORDER), name)


def discover(package: str = "scenarios") -> list[tuple[str, Scenario]]:
    """Import every public module of ``package``; return ``(module name, scenario)`` pairs.

    Modules whose names start with ``_`` are helpers, and a module without ``SCENARIOS`` is
    skipped. Keys must be unique across modules.
    """
    pkg = importlib.import_module(package)
    found: list[tuple[str, Scenario]] = []
    seen: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: module_rank(m.name)):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        scenarios = getattr(module, "SCENARIOS", None)
        if scenarios is None:
            continue
        for scenario in scenarios:
            if scenario.key in seen:
                raise ValueError(
                    f"scenario key {scenario.key!r} is defined by both "
                    f"{seen[scenario.key]} and {info.name}"
                )
            seen[scenario.key] = info.name
            found.append((info.name, scenario))
    return found


def selects(only: Sequence[str] | None, key: str) -> bool:
    """Whether ``--only`` (None: everything) selects the scenario ``key``."""
    return only is None or any(text in key for text in only)


def ordered(names: Sequence[str]) -> list[str]:
    """Sort implementation names: the known ones in IMPLEMENTATION_ORDER, extras after."""

    def rank(name: str) -> tuple[int, str]:
        base = name.split(" ", 1)[0]
        index = IMPLEMENTATION_ORDER.index(base) if base in IMPLEMENTATION_ORDER else 99
        return (index, name)

    return sorted(names, key=rank)


# -- running --------------------------------------------------------------------------------


def rotation(names: Sequence[str], round_index: int) -> list[str]:
    """The order of round ``round_index``: ``names`` rotated left by ``round_index``."""
    if not names:
        return []
    shift = round_index % len(names)
    return [*names[shift:], *names[:shift]]


@dataclass
class Outcome:
    """The samples of one scenario run, before any statistics."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    orders: list[list[str]] = field(default_factory=list)  # warm-up first
    cpu: dict[str, list[float]] = field(default_factory=dict)  # CPU-seconds per recorded call
    gib_per_call: float | None = None  # the scenario's work per call, when it declares one


def cpu_seconds() -> float:
    """User + system CPU of this process and of every child it has reaped, so far."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def run_measures(
    measures: dict[str, Measure],
    *,
    rounds: int,
    warmup: bool = True,
    log: Callable[[str], None] = lambda _line: None,
) -> Outcome:
    """Warm up, then run ``rounds`` rotated rounds; a measure that raises is dropped."""
    outcome = Outcome(samples={name: [] for name in measures}, cpu={name: [] for name in measures})
    names = list(measures)
    passes = ([None] if warmup else []) + list(range(rounds))
    for round_index in passes:
        order = names if round_index is None else rotation(names, round_index)
        order = [name for name in order if name not in outcome.failed]
        outcome.orders.append(order)
        for name in order:
            gc.collect()  # one implementation's garbage is not collected on another's time
            cpu_before = cpu_seconds()
            try:
                value = float(measures[name]())
            except Exception as exc:  # report, drop the implementation, keep going
                traceback.print_exc()
                outcome.failed[name] = f"{type(exc).__name__}: {exc}"
                del outcome.samples[name], outcome.cpu[name]
                continue
            if round_index is not None:
                outcome.samples[name].append(value)
                outcome.cpu[name].append(cpu_seconds() - cpu_before)
            label = "warm-up" if round_index is None else f"round {round_index + 1}"
            log(f"  {label:>8} {name:<20} {value:,.1f}")
    return outcome


def run_scenario(
    scenario: Scenario,
    *,
    quick: bool,
    rounds: int,
    log: Callable[[str], None] = lambda _line: None,
) -> Outcome:
    """Build the scenario's measures (minus unavailable ones) and run them."""
    unavailable = dict(scenario.unavailable())
    measures = scenario.implementations(quick)
    measures = {name: measures[name] for name in ordered(list(measures)) if name not in unavailable}
    outcome = run_measures(measures, rounds=rounds, log=log)
    outcome.unavailable = unavailable
    if scenario.gib_per_call is not None:
        outcome.gib_per_call = scenario.gib_per_call(quick)
    return outcome


# -- statistics -----------------------------------------------------------------------------


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """Median and min..max of one implementation's samples."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
    }


def paired_ratio(samples: Sequence[float], reference: Sequence[float]) -> float | None:
    """The median of the per-round ratios (round i against the reference's round i).

    Less sensitive than the ratio of medians to load that changes between rounds; None
    when the two have different numbers of samples (a measure failed).
    """
    if not samples or len(samples) != len(reference) or not all(reference):
        return None
    return statistics.median(value / ref for value, ref in zip(samples, reference, strict=True))


def verdict(ratio: float | None, target: float | None) -> str | None:
    """``"met"``/``"missed"`` for a ratio against a target; None when there is no target."""
    if target is None:
        return None
    if ratio is None:
        return "missed"
    return "met" if ratio >= target else "missed"


def result_record(module: str, scenario: Scenario, outcome: Outcome, rounds: int) -> dict[str, Any]:
    """The JSON record of one scenario: stats, ratios vs the reference, target verdict."""
    stats = {name: summarize(values) for name, values in outcome.samples.items() if values}
    reference = stats.get(scenario.reference)
    base = reference["median"] if reference else None
    implementations: dict[str, Any] = {}
    reference_samples = outcome.samples.get(scenario.reference, [])
    for name, summary in stats.items():
        ratio = summary["median"] / base if base else None
        implementations[name] = {
            **summary,
            "ratio": ratio,
            "paired_ratio": paired_ratio(outcome.samples[name], reference_samples),
            "ratio_min": summary["min"] / base if base else None,
            "ratio_max": summary["max"] / base if base else None,
            "samples": outcome.samples[name],
        }
        cpu = outcome.cpu.get(name)
        if outcome.gib_per_call and cpu:
            implementations[name]["cpu_s_per_gib"] = statistics.median(cpu) / outcome.gib_per_call
    subject = implementations.get(SUBJECT)
    subject_ratio = subject["ratio"] if subject else None
    return {
        "key": scenario.key,
        "module": module,
        "title": scenario.title,
        "unit": scenario.unit,
        "reference": scenario.reference,
        "target": scenario.target,
        "notes": scenario.notes,
        "rounds": rounds,
        "implementations": implementations,
        "unavailable": outcome.unavailable,
        "failed": outcome.failed,
        "ratio": subject_ratio,
        "verdict": verdict(subject_ratio, scenario.target),
    }


# -- Markdown -------------------------------------------------------------------------------


def number(value: float) -> str:
    """A rate for a table: no decimals from 100 up, one below."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"


def times(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}x"


def target_line(record: dict[str, Any]) -> str:
    target = record["target"]
    if target is None:
        return f"Reported only (no target); ratios against `{record['reference']}`."
    ratio = record["ratio"]
    shown = "n/a" if ratio is None else f"{ratio:.2f}x"
    return (
        f"Target: `{SUBJECT}` >= {target:.2f}x `{record['reference']}`: "
        f"**{record['verdict']}** ({shown})."
    )


def scenario_markdown(record: dict[str, Any]) -> str:
    """One scenario's section: heading, target line, table, notes."""
    reference = record["reference"]
    with_cpu = any("cpu_s_per_gib" in stats for stats in record["implementations"].values())
    cpu_head, cpu_rule, cpu_blank = (" CPU s/GiB |", " ---: |", " |") if with_cpu else ("", "", "")
    lines = [
        f"### {record['title']} (`{record['key']}`)",
        "",
        target_line(record),
        "",
        f"| implementation | median {record['unit']} | range | vs {reference} | paired |{cpu_head}",
        f"| --- | ---: | ---: | ---: | ---: |{cpu_rule}",
    ]
    for name, stats in record["implementations"].items():
        shown = f"**{name}**" if name == SUBJECT else name
        cpu = f" {stats['cpu_s_per_gib']:.2f} |" if "cpu_s_per_gib" in stats else cpu_blank
        lines.append(
            f"| {shown} | {number(stats['median'])} | "
            f"{number(stats['min'])} .. {number(stats['max'])} | {times(stats['ratio'])} | "
            f"{times(stats.get('paired_ratio'))} |{cpu}"
        )
    for name, reason in record["unavailable"].items():
        lines.append(f"| {name} | n/a | unavailable: {reason} | |{cpu_blank} |")
    for name, error in record["failed"].items():
        lines.append(f"| {name} | failed | {error.replace('|', '/')} | |{cpu_blank} |")
    if with_cpu:
        lines += [
            "",
            "CPU s/GiB: the median over the rounds of the user + system CPU time of the "
            "harness and of every process the run started (both ends, their start-up "
            "included), per GiB of payload.",
        ]
    if record["notes"]:
        lines += ["", record["notes"]]
    if "load_average" in record:
        before, after = record["load_average"]
        lines += [
            "",
            f"Machine load (1-minute average) before / after: {before:.2f} / {after:.2f} "
            f"on {record.get('cpus', '?')} CPUs.",
        ]
    return "\n".join(lines)


def summary_markdown(records: Sequence[dict[str, Any]]) -> str:
    """The overview table: trioqio's ratio, target and verdict per scenario."""
    lines = [
        f"| scenario | {SUBJECT} vs reference | target | verdict |",
        "| --- | ---: | ---: | --- |",
    ]
    for record in records:
        ratio = "n/a" if record["ratio"] is None else f"{record['ratio']:.2f}x"
        target = "-" if record["target"] is None else f"{record['target']:.2f}x"
        lines.append(
            f"| `{record['key']}` | {ratio} `{record['reference']}` | {target} | "
            f"{record['verdict'] or 'reported'} |"
        )
    return "\n".join(lines)


def markdown(payload: dict[str, Any]) -> str:
    """The whole report: environment line, overview, one section per scenario."""
    env = payload["environment"]
    mode = "quick" if payload["quick"] else "default size"
    header = [
        "## trioqio against its peers (one run, interleaved rounds)",
        "",
        f"Python {env['python']}, trio {env['trio']}, anyio {env['anyio']}, "
        f"uvloop {env['uvloop']}, {env['cpus']} CPUs, {env['platform']}; {mode}. "
        "Each row: median of the rounds after one warm-up run, min..max range, the ratio of "
        "its median to the reference's median (the figure targets are checked against), and "
        "`paired`: the median of the per-round ratios (each round against the reference's "
        "same round; steadier when the machine's load changes between rounds). "
        "Produced by `python benchmarks/compare.py`.",
        "",
        summary_markdown(payload["scenarios"]),
    ]
    sections = [scenario_markdown(record) for record in payload["scenarios"]]
    return "\n\n".join(["\n".join(header), *sections]) + "\n"


# -- files ----------------------------------------------------------------------------------


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "missing"


def environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "trio": _version("trio"),
        "anyio": _version("anyio"),
        "uvloop": _version("uvloop"),
    }


def merge(previous: dict[str, Any] | None, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Previous records, each replaced by the new one with the same key; new keys appended."""
    fresh = {record["key"]: record for record in records}
    old = (previous or {}).get("scenarios", [])
    merged = [fresh.pop(r["key"], r) for r in old]
    return merged + [r for r in records if r["key"] in fresh]


def save(payload: dict[str, Any], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(payload)
    (out / "compare.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "compare.md").write_text(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round (smoke)")
    parser.add_argument(
        "--only",
        action="append",
        default=None,
        help="run scenarios whose key contains this (repeat for several)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds after the warm-up")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the results")
    parser.add_argument("--list", action="store_true", help="list scenario keys and exit")
    args = parser.parse_args(argv)
    quick = args.quick or bool(os.environ.get("TRIOQIO_BENCH_QUICK"))
    rounds = args.rounds or (QUICK_ROUNDS if quick else DEFAULT_ROUNDS)

    selected = [(m, s) for m, s in discover() if selects(args.only, s.key)]
    if args.list:
        for module, scenario in selected:
            print(f"{scenario.key:<20} {module:<12} {scenario.title}")
        return 0
    if not selected:
        print(f"no scenario key contains any of {args.only!r}", file=sys.stderr)
        return 2

    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    for module, scenario in selected:
        print(f"[{scenario.key}] {scenario.title}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        load_before = os.getloadavg()[0]
        outcome = run_scenario(
            scenario, quick=quick, rounds=rounds, log=lambda line: print(line, file=sys.stderr)
        )
        record = result_record(module, scenario, outcome, rounds)
        record["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        record["cpus"] = os.cpu_count()
        records.append(record)
        print(f"[{scenario.key}] {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    previous: dict[str, Any] | None = None
    if args.only is not None and (args.out / "compare.json").exists():
        previous = json.loads((args.out / "compare.json").read_text())
        if previous.get("quick") != quick:
            previous = None  # never mix quick and full-size figures in one file
    payload = {
        "environment": environment(),
        "quick": quick,
        "scenarios": merge(previous, records),
    }
    print(save(payload, args.out))
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return 1 if any(record["failed"] for record in records) else 0


if __name__ == "__main__":
    raise SystemExit(main())
