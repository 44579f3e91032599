"""The seed experiment on real QEMU 7.2: the same Task shape as trioqio (issue 19).

``benchmarks/trace_compare.py`` runs a real QEMU multifd migration (4 channels) with
``-trace 'qio_task*' -msg timestamp=on`` and ``trioqio migrate --trace --channels 4`` with
a trace subscriber, and reduces both to the source's connect Tasks; docs/tutorial-threads.md
shows its Markdown. This test checks the shape it reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import need

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "trace_compare.py"


def test_qemu_and_trioqio_run_the_same_task_shape(tmp_path: Path) -> None:
    need("qemu-system-x86_64", "qemu-system-x86")
    out = tmp_path / "shape.json"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--json", str(out), "--markdown", str(tmp_path / "t.md")],
        check=True,
        timeout=240,
    )
    shape = json.loads(out.read_text())
    assert "a real run of QEMU emulator version 7.2" in shape["note"]
    qemu, trioqio = shape["qemu"], shape["trioqio"]
    for side in (qemu, trioqio):
        # The main channel's connect and one per multifd channel.
        assert side["thread_tasks"] == 5, side
        # qio_task_thread_run/_exit (and QEMU's _source_attach) in a worker thread;
        # every qio_task_thread_result and qio_task_complete in the main-loop thread.
        assert side["worker_events_off_main"], side
        assert side["main_events_on_main"], side
        assert side["worker_threads"] >= 1, side
    # trioqio's per-task order is QEMU's with the events it has no counterpart for (the
    # documented table) left out. QEMU's worker hits qio_task_thread_source_attach after
    # attaching the idle source, so the main loop may log the result and the completion
    # first: in QEMU's own trace that one event floats after qio_task_thread_exit.
    expected = [name for name in shape["qemu_order"] if name not in shape["no_counterpart"]]
    assert trioqio["sequences"] == [expected]
    for sequence in qemu["sequences"]:
        assert [name for name in sequence if name not in shape["no_counterpart"]] == expected
        attach = sequence.index("qio_task_thread_source_attach")
        assert attach > sequence.index("qio_task_thread_exit"), sequence
