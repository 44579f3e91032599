"""Tests of the benchmark harness logic (benchmarks/compare.py) with fake measures.

No timing here: the fakes return fixed numbers, and only the bookkeeping is checked
(rotation, statistics, ratios, target verdicts, Markdown, discovery of scenario modules).

``nox -s bench_harness`` runs this module with the benchmarks' peers installed (anyio,
uvloop, matplotlib; the other sessions leave it out). In a plain ``pytest`` without them,
the two tests that import them skip and name the missing package.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import compare  # noqa: E402
from _scenario import Scenario  # noqa: E402


def needs(*packages: str) -> None:
    """Skip unless ``packages`` are installed; under ``nox -s bench_harness``, fail instead."""
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if not missing:
        return
    why = f"needs {', '.join(missing)} (the benchmarks' peers; `nox -s bench_harness` has them)"
    if os.environ.get("TRIOQIO_BENCH_HARNESS"):
        pytest.fail(f"{why}, but the session did not install them")
    pytest.skip(why)


def fixed(values: list[float], calls: list[str], name: str) -> Callable[[], float]:
    """A measure that records its calls and returns ``values`` in turn."""
    feed: Iterator[float] = iter(values)

    def measure() -> float:
        calls.append(name)
        return next(feed)

    return measure


def test_rotation_moves_one_place_per_round() -> None:
    names = ["a", "b", "c"]
    assert compare.rotation(names, 0) == ["a", "b", "c"]
    assert compare.rotation(names, 1) == ["b", "c", "a"]
    assert compare.rotation(names, 2) == ["c", "a", "b"]
    assert compare.rotation(names, 3) == ["a", "b", "c"]
    assert compare.rotation([], 5) == []


def test_run_measures_warms_up_then_rotates() -> None:
    calls: list[str] = []
    measures = {
        "a": fixed([0.0, 1.0, 2.0, 3.0], calls, "a"),
        "b": fixed([0.0, 10.0, 20.0, 30.0], calls, "b"),
        "c": fixed([0.0, 5.0, 5.0, 5.0], calls, "c"),
    }
    outcome = compare.run_measures(measures, rounds=3)
    # warm-up in listed order, then rounds rotated left one place each.
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert outcome.orders[0] == ["a", "b", "c"]
    # the warm-up value (0.0) is not a sample
    assert outcome.samples == {"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 30.0], "c": [5.0] * 3}
    assert outcome.failed == {}


def test_failing_measure_is_dropped_and_reported() -> None:
    calls: list[str] = []

    def broken() -> float:
        calls.append("bad")
        raise OSError("no such peer")

    outcome = compare.run_measures(
        {"good": fixed([1.0, 2.0, 3.0], calls, "good"), "bad": broken}, rounds=2
    )
    assert calls.count("bad") == 1  # not retried after the first failure
    assert outcome.failed == {"bad": "OSError: no such peer"}
    assert outcome.samples == {"good": [2.0, 3.0]}


def test_only_selects_by_key_substring() -> None:
    assert compare.selects(None, "echo")
    assert compare.selects(["off", "echo"], "offload-8")
    assert compare.selects(["off", "echo"], "echo")
    assert not compare.selects(["migrate"], "echo")


def test_summarize_median_and_range() -> None:
    assert compare.summarize([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert compare.summarize([4.0, 1.0, 2.0, 3.0])["median"] == 2.5


@pytest.mark.parametrize(
    ("ratio", "target", "expected"),
    [
        (1.3, 1.25, "met"),
        (1.25, 1.25, "met"),
        (1.2, 1.25, "missed"),
        (None, 1.0, "missed"),
        (0.5, None, None),
    ],
)
def test_verdict(ratio: float | None, target: float | None, expected: str | None) -> None:
    assert compare.verdict(ratio, target) == expected


def scenario(target: float | None, values: dict[str, list[float]], **extra: Any) -> Scenario:
    return Scenario(
        key="fake",
        title="Fake scenario",
        unit="ops/s",
        reference="trio",
        implementations=lambda quick: {
            name: fixed([0.0, *vals], [], name) for name, vals in values.items()
        },
        target=target,
        notes="what is measured",
        **extra,
    )


def run(s: Scenario, rounds: int = 3) -> dict[str, Any]:
    outcome = compare.run_scenario(s, quick=True, rounds=rounds)
    return compare.result_record("fakes", s, outcome, rounds)


def test_record_ratios_against_reference_median() -> None:
    record = run(scenario(1.25, {"trio": [10.0, 20.0, 30.0], "trioqio": [30.0, 25.0, 20.0]}))
    trioqio = record["implementations"]["trioqio"]
    assert trioqio["median"] == 25.0
    assert trioqio["ratio"] == pytest.approx(1.25)
    assert trioqio["ratio_min"] == pytest.approx(1.0)
    assert trioqio["ratio_max"] == pytest.approx(1.5)
    assert record["implementations"]["trio"]["ratio"] == pytest.approx(1.0)
    assert record["ratio"] == pytest.approx(1.25)
    assert record["verdict"] == "met"
    # table order follows the known implementation order, trioqio first
    assert list(record["implementations"]) == ["trioqio", "trio"]


def test_paired_ratio_is_median_of_per_round_ratios() -> None:
    # the load doubles in round 3: the ratio of medians moves, the paired ratio does not
    record = run(scenario(1.0, {"trio": [10.0, 10.0, 20.0], "trioqio": [12.0, 12.0, 24.0]}))
    assert record["implementations"]["trioqio"]["paired_ratio"] == pytest.approx(1.2)
    assert compare.paired_ratio([1.0, 2.0], [1.0]) is None
    assert compare.paired_ratio([], []) is None


def test_record_missed_and_unavailable() -> None:
    s = scenario(
        1.0,
        {"trio": [10.0] * 3, "trioqio": [9.0] * 3, "uvloop": [1.0] * 3},
        unavailable=lambda: {"uvloop": "uvloop is not installed"},
    )
    record = run(s)
    assert record["verdict"] == "missed"
    assert "uvloop" not in record["implementations"]
    assert record["unavailable"] == {"uvloop": "uvloop is not installed"}


def test_record_without_reference_has_no_ratios() -> None:
    record = run(scenario(1.0, {"trioqio": [9.0] * 3}))
    assert record["implementations"]["trioqio"]["ratio"] is None
    assert record["verdict"] == "missed"


def test_markdown_tables() -> None:
    s = scenario(
        1.25,
        {"trio": [100.0] * 3, "trioqio": [150.0] * 3, "asyncio": [50.5] * 3},
        unavailable=lambda: {"anyio-trio": "not here"},
    )
    records = [run(s), run(scenario(None, {"trio": [2.0] * 3, "trioqio": [1.0] * 3}))]
    payload = {"environment": compare.environment(), "quick": False, "scenarios": records}
    text = compare.markdown(payload)
    assert "| `fake` | 1.50x `trio` | 1.25x | met |" in text
    assert "| `fake` | 0.50x `trio` | - | reported |" in text
    assert "Target: `trioqio` >= 1.25x `trio`: **met** (1.50x)." in text
    assert "| **trioqio** | 150 | 150 .. 150 | 1.50x | 1.50x |" in text
    assert "| asyncio | 50.5 | 50.5 .. 50.5 | 0.51x | 0.51x |" in text
    assert "| anyio-trio | n/a | unavailable: not here | | |" in text
    assert "Reported only (no target)" in text
    assert "what is measured" in text
    assert "Machine load" not in text  # only when the run recorded it
    loaded = {**records[0], "load_average": [0.5, 1.25], "cpus": 2}
    assert "before / after: 0.50 / 1.25 on 2 CPUs." in compare.scenario_markdown(loaded)


def test_cpu_seconds_per_gib_is_the_median_cpu_of_a_call_over_its_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fake CPU clock: each call of the "busy" measure costs 2 s of CPU, "idle" 0.5 s.
    clock = [0.0]
    monkeypatch.setattr(compare, "cpu_seconds", lambda: clock[0])

    def costs(seconds: float) -> Callable[[], float]:
        def measure() -> float:
            clock[0] += seconds
            return 1.0

        return measure

    s = Scenario(
        key="fake",
        title="Fake scenario",
        unit="MiB/s",
        reference="trio",
        implementations=lambda quick: {"trioqio": costs(2.0), "trio": costs(0.5)},
        gib_per_call=lambda quick: 0.25 if quick else 1.0,
    )
    record = run(s)
    assert record["implementations"]["trioqio"]["cpu_s_per_gib"] == pytest.approx(8.0)
    assert record["implementations"]["trio"]["cpu_s_per_gib"] == pytest.approx(2.0)
    text = compare.scenario_markdown(record)
    assert "| paired | CPU s/GiB |" in text
    assert "| **trioqio** | 1.0 | 1.0 .. 1.0 | 1.00x | 1.00x | 8.00 |" in text
    # Without gib_per_call, no CPU column.
    plain = run(scenario(None, {"trio": [2.0] * 3, "trioqio": [1.0] * 3}))
    assert "cpu_s_per_gib" not in plain["implementations"]["trioqio"]
    assert "CPU s/GiB" not in compare.scenario_markdown(plain)


def test_cpu_seconds_counts_reaped_children() -> None:
    import subprocess

    before = compare.cpu_seconds()
    burn = "import time\nend = time.process_time() + 0.2\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    assert compare.cpu_seconds() - before >= 0.2


def test_merge_keeps_other_scenarios_in_place() -> None:
    previous = {"scenarios": [{"key": "a", "v": 1}, {"key": "b", "v": 1}, {"key": "c", "v": 1}]}
    merged = compare.merge(previous, [{"key": "b", "v": 2}, {"key": "d", "v": 2}])
    assert merged == [
        {"key": "a", "v": 1},
        {"key": "b", "v": 2},
        {"key": "c", "v": 1},
        {"key": "d", "v": 2},
    ]
    assert compare.merge(None, [{"key": "x"}]) == [{"key": "x"}]


def test_every_scenario_module_exposes_valid_scenarios() -> None:
    needs("anyio", "uvloop")  # the scenario modules import them
    found = compare.discover()
    modules = {module for module, _ in found}
    assert {"offload", "accept", "echo", "bulk_tcp"} <= modules
    keys = [s.key for _, s in found]
    assert len(keys) == len(set(keys))
    for module, s in found:
        assert s.key, module
        assert s.title, s.key
        assert s.unit, s.key
        assert s.target is None or s.target > 0, s.key
        measures = s.implementations(True)  # builds callables only; nothing runs
        assert s.reference in measures or s.reference in s.unavailable(), s.key
        assert "trioqio" in measures, s.key
        assert all(callable(m) for m in measures.values()), s.key


@pytest.fixture(scope="module")
def plot_module(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """benchmarks/plot.py, with matplotlib's font already loaded.

    matplotlib keeps its font file open in a cache after the first render; rendering once
    here, before the per-test fd-leak check takes its snapshot, keeps that cache out of it.
    """
    needs("matplotlib")
    import plot

    record = run(scenario(1.0, {"trio": [1.0], "trioqio": [1.0]}), rounds=1)
    plot.render({"scenarios": [record]}, tmp_path_factory.mktemp("warm"))
    return plot


def test_plot_is_deterministic(tmp_path: Path, plot_module: Any) -> None:
    plot = plot_module

    record = run(scenario(1.25, {"trio": [10.0] * 3, "trioqio": [13.0] * 3}))
    payload = {"environment": {}, "quick": False, "scenarios": [record]}
    first = plot.render(payload, tmp_path / "one")
    second = plot.render(json.loads(json.dumps(payload)), tmp_path / "two")
    assert [p.name for p in first] == ["fakes.svg"]
    assert first[0].read_bytes() == second[0].read_bytes()
    assert b"Date" not in first[0].read_bytes()
