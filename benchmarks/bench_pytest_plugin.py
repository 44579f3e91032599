"""Benchmark: what trioqio's pytest plugin costs a suite that does not use it.

Generates a suite of ``MODULES`` test modules (``TESTS`` plain tests each, no trioqio, no
Trio) in a temporary directory and measures the CPU time (user + system) of
``python -m pytest --collect-only -q`` on it in a child process, with the plugin loaded
(``-p pytest_trioqio``, as the entry point loads it wherever trioqio is installed) and
with it disabled (``-p no:pytest_trioqio``), the two interleaved round by round. Target
(issue 21): the plugin costs at most 5%, i.e. the "plugin" row is at most 1.05x the
"no plugin" row.

Prints a Markdown table (median CPU ms, range, ratio) and writes
``benchmarks/results/pytest_plugin.json`` / ``pytest_plugin.md``.

Usage: ``python benchmarks/bench_pytest_plugin.py [--rounds N]``
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _harness

MODULES = 200
TESTS = 5
TARGET = 1.05


def _write_suite(root: Path) -> None:
    (root / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    body = "\n\n".join(f"def test_{i}():\n    assert {i} == {i}" for i in range(TESTS))
    for index in range(MODULES):
        (root / f"test_module_{index}.py").write_text(body + "\n")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _collect(root: Path, plugin: bool) -> float:
    # CPU seconds of the child (user + system), steadier than wall time on a shared
    # machine: the plugin's cost is CPU work (imports, hook calls), not waiting.
    flag = "pytest_trioqio" if plugin else "no:pytest_trioqio"
    start = _cpu()
    subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", flag],
        cwd=root,
        check=True,
        capture_output=True,
    )
    return _cpu() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=_harness.rounds_default(15, 3))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trioqio-plugin-bench-") as tmp:
        root = Path(tmp)
        _write_suite(root)
        samples = _harness.run_interleaved(
            {
                "no plugin": lambda: _collect(root, plugin=False),
                "plugin": lambda: _collect(root, plugin=True),
            },
            rounds=args.rounds,
        )
    summary = _harness.summarize(samples)
    ratio = summary["plugin"]["median"] / summary["no plugin"]["median"]
    verdict = "met" if ratio <= TARGET else "MISSED"
    markdown = "\n\n".join(
        [
            _harness.table(
                f"pytest --collect-only, {MODULES} modules x {TESTS} tests (ms, lower is better)",
                summary,
                unit="ms",
                baseline="no plugin",
                scale=1000.0,
            ),
            f"Plugin loaded / disabled: **{ratio:.3f}x** (target at most {TARGET:.2f}x: "
            f"{verdict}; {args.rounds} interleaved rounds).",
        ]
    )
    _harness.save(
        "pytest_plugin",
        {"collect_seconds": {"samples": samples, "summary": summary}, "ratio": ratio},
        markdown,
    )


if __name__ == "__main__":
    main()
