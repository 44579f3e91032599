"""The seed experiment on real QEMU 7.2 beside trioqio: who runs each Task step (issue 19).

Runs a real QEMU 7.2 multifd migration (4 channels) with ``-trace 'qio_task*'`` and
``-msg timestamp=on`` (each line then carries the kernel thread id of the thread that hit
the trace point), and ``trioqio migrate --trace --channels 4`` with a subscriber to
trioqio's trace events; reduces both to the source's connect Tasks and writes:

- ``--markdown FILE``: the two traces side by side and the event-mapping table, for
  docs/tutorial-threads.md (between its ``trace-compare`` markers with ``--update-docs``);
- ``--json FILE``: the shape (tasks, threads, per-task event order), for
  tests/interop/test_seed_trace.py.

Where QEMU is not installed it falls back to the reference capture in
``--reference DIR`` (the annotated 7.2 trace) and says so in the output.

    python benchmarks/trace_compare.py --markdown out.md --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "tutorial-threads.md"
BEGIN, END = "<!-- trace-compare:begin -->", "<!-- trace-compare:end -->"
DEFAULT_REFERENCE = ROOT.parent / "shared" / "reference" / "qemu-trace"

#: QEMU 7.2's per-task order for a task run in a thread (io/task.c).
QEMU_ORDER = [
    "qio_task_new",
    "qio_task_thread_start",
    "qio_task_thread_run",
    "qio_task_thread_exit",
    "qio_task_thread_source_attach",
    "qio_task_thread_result",
    "qio_task_complete",
]
#: QEMU events trioqio has no counterpart for, and why (the docs table).
NO_COUNTERPART = {
    "qio_task_thread_source_attach": (
        "QEMU's worker attaches an idle GSource to the main context so the result is "
        "delivered there; trio.to_thread.run_sync hands the result back to the Trio thread "
        "itself, so there is nothing to attach. (QEMU hits this trace point after the "
        "attach, so its main loop may log the result and the completion first: in real "
        "traces the event sometimes comes last.)"
    ),
    "qio_task_thread_source_cancel": (
        "QEMU removes that idle source when the task is freed first; with no source there is "
        "nothing to cancel (a cancelled Task completes with TaskCancelled instead)."
    ),
}
WORKER_EVENTS = {"qio_task_thread_run", "qio_task_thread_exit", "qio_task_thread_source_attach"}
MAIN_EVENTS = {"qio_task_thread_result", "qio_task_complete"}

# -- QEMU ---------------------------------------------------------------------------------

_QEMU_LINE = re.compile(r"^(\d+)@(\d+\.\d+):(\w+) (.*)$")
_TASK = re.compile(r"task=(0x[0-9a-f]+)")


def capture_qemu(qemu: str, work: Path, channels: int = 4) -> list[dict[str, Any]]:
    """Run a real multifd migration; return the source's qio_task events."""
    import socket

    from scenarios._qemu_peer import migrate_multifd, qmp

    blob = work / "blob.bin"
    blob.write_bytes(os.urandom(60 * 1024 * 1024))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = [qemu, "-M", "pc", "-m", "64M", "-nodefaults", "-display", "none", "-S",
            "-accel", "tcg"]  # fmt: skip
    log = work / "src-trace.log"
    procs = [
        subprocess.Popen(
            [
                *base,
                "-name",
                "dst,debug-threads=on",
                "-incoming",
                "defer",
                "-qmp",
                f"unix:{work / 'dst.qmp'},server=on,wait=off",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [
                *base,
                "-name",
                "src,debug-threads=on",
                "-trace",
                "qio_task*",
                "-msg",
                "timestamp=on",
                "-D",
                str(log),
                "-device",
                f"loader,file={blob},addr=0x100000,force-raw=on",
                "-qmp",
                f"unix:{work / 'src.qmp'},server=on,wait=off",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        dst, src = qmp(work / "dst.qmp"), qmp(work / "src.qmp")
        migrate_multifd(dst, src, port, channels, 60)
        for end in (src, dst):
            end("quit")
    finally:
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    pid = procs[1].pid
    events = []
    for line in log.read_text().splitlines():
        match = _QEMU_LINE.match(line)
        if not match or not match[3].startswith("qio_task"):
            continue
        tid, stamp, name, rest = int(match[1]), float(match[2]), match[3], match[4]
        task = _TASK.search(rest)
        events.append(
            {"t": stamp, "name": name, "main": tid == pid, "tid": tid,
             "task": task[1] if task else "?"}
        )  # fmt: skip
    return _relative(events)


def reference_qemu(directory: Path) -> list[dict[str, Any]]:
    """The qio_task events of the annotated reference capture (qemu-src.annotated.txt)."""
    text = (directory / "qemu-src.annotated.txt").read_text()
    pid = int(re.search(r"pid (\d+)", text)[1])  # type: ignore[index]
    events = []
    row = re.compile(r"^\s*([\d.]+)\s+(\d+)\s+.{22} (qio_task\w+) (.*)$")
    for line in text.splitlines():
        match = row.match(line)
        if match:
            task = _TASK.search(match[4])
            events.append(
                {"t": float(match[1]) / 1000, "name": match[3], "main": int(match[2]) == pid,
                 "tid": int(match[2]), "task": task[1] if task else "?"}
            )  # fmt: skip
    return _relative(events)


# -- trioqio ------------------------------------------------------------------------------

_SUBSCRIBER = r"""
import json, sys, threading, time
import trioqio.trace
from trioqio._cli import main
out = open(sys.argv[1], "w")
lock = threading.Lock()
def seen(event):
    if not event.name.startswith("qio_task"):
        return
    task = event.fields.get("task")
    with lock:
        out.write(json.dumps({
            "t": time.monotonic(), "name": event.name,
            "main": threading.current_thread() is threading.main_thread(),
            "tid": threading.get_native_id(), "task": getattr(task, "name", str(task)),
        }) + "\n")
trioqio.trace.subscribe(seen)
code = main(["migrate", "--trace", "--channels", sys.argv[2], "--size", "64MiB",
             "--no-progress"])
out.close()
sys.exit(code)
"""


def capture_trioqio(work: Path, channels: int = 4) -> list[dict[str, Any]]:
    """Run ``trioqio migrate --trace``; return the source's connect-task events."""
    path = work / "trioqio-events.jsonl"
    run = subprocess.run(
        [sys.executable, "-c", _SUBSCRIBER, str(path), str(channels)],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        raise RuntimeError(f"trioqio migrate --trace failed:\n{run.stdout}{run.stderr}")
    events = [json.loads(line) for line in path.read_text().splitlines()]
    # The source's connects: the main channel and the multifd channels (their Tasks and
    # the worker Tasks those run in threads). The destination's tasks are left out, as
    # QEMU's source trace holds only the source.
    keep = ("migration-socket-outgoing", "multifdsend_")
    for e in events:
        # Trace fields are reprs: "Task 'multifdsend_0'".
        e["task"] = re.sub(r"^Task '(.*)'$", r"\1", str(e["task"]))
    return _relative([e for e in events if e["task"].startswith(keep)])


# -- shape --------------------------------------------------------------------------------


def _relative(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    events.sort(key=lambda e: e["t"])
    start = events[0]["t"] if events else 0.0
    for e in events:
        e["ms"] = round((e["t"] - start) * 1000, 3)
    return events


def shape(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Tasks that ran a thread, their event order, and which thread ran which step."""
    by_task: dict[str, list[str]] = {}
    for e in events:
        by_task.setdefault(e["task"], []).append(e["name"])
    threaded = {t: names for t, names in by_task.items() if "qio_task_thread_start" in names}
    workers = sorted({e["tid"] for e in events if not e["main"]})
    return {
        "thread_tasks": len(threaded),
        "sequences": sorted({tuple(names) for names in threaded.values()}),
        "worker_threads": len(workers),
        "worker_events_off_main": all(not e["main"] for e in events if e["name"] in WORKER_EVENTS),
        "main_events_on_main": all(e["main"] for e in events if e["name"] in MAIN_EVENTS),
        "events": len(events),
    }


def _table(events: list[dict[str, Any]], label: str) -> list[str]:
    names: dict[str, str] = {}
    workers: dict[int, str] = {}
    lines = [f"| t/ms | thread | event | task ({label}) |", "|---:|---|---|---|"]
    for e in events:
        task = names.setdefault(e["task"], f"T{len(names) + 1}")
        thread = "main" if e["main"] else workers.setdefault(e["tid"], f"worker {len(workers) + 1}")
        lines.append(f"| {e['ms']:.3f} | {thread} | `{e['name']}` | {task} |")
    return lines


def render(qemu: list[dict[str, Any]], trioqio: list[dict[str, Any]], note: str) -> str:
    """The docs section: both traces, then the mapping table."""
    q, t = shape(qemu), shape(trioqio)
    out = [
        f"Generated by `benchmarks/trace_compare.py` ({note}). Tasks are numbered in order of "
        "appearance; threads are `main` (QEMU's main loop, trioqio's Trio thread) or the "
        "n-th worker thread seen.",
        "",
        f"**QEMU 7.2 source**: {q['thread_tasks']} tasks run in threads, "
        f"{q['worker_threads']} worker threads.",
        "",
        *_table(qemu, "QEMU"),
        "",
        f"**trioqio source**: {t['thread_tasks']} tasks run in threads, "
        f"{t['worker_threads']} worker threads (Trio's thread cache reuses idle ones).",
        "",
        *_table(trioqio, "trioqio"),
        "",
        "Per-task order of a task run in a thread, QEMU's names in QEMU's order:",
        "",
        "| QEMU 7.2 event | trioqio | thread (both) |",
        "|---|---|---|",
    ]
    for name in QEMU_ORDER:
        where = "worker" if name in WORKER_EVENTS else "main"
        if name in NO_COUNTERPART:
            out.append(f"| `{name}` | none: {NO_COUNTERPART[name]} | {where} |")
        else:
            out.append(f"| `{name}` | `{name}` | {where} |")
    out.append(
        f"| `qio_task_thread_source_cancel` | none: "
        f"{NO_COUNTERPART['qio_task_thread_source_cancel']} | main |"
    )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--update-docs", action="store_true", help=f"rewrite {DOC.name}")
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument("--channels", type=int, default=4)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="trace-compare-") as scratch:
        work = Path(scratch)
        qemu_bin = shutil.which("qemu-system-x86_64")
        if qemu_bin:
            version = subprocess.run(
                [qemu_bin, "--version"], capture_output=True, text=True, check=True
            ).stdout.splitlines()[0]
            qemu = capture_qemu(qemu_bin, work, args.channels)
            note = f"a real run of {version}, and of trioqio, on this machine"
        elif (args.reference / "qemu-src.annotated.txt").exists():
            qemu = reference_qemu(args.reference)
            note = (
                "qemu-system-x86_64 was not installed: QEMU's side is the reference capture "
                f"{args.reference.name}/qemu-src.annotated.txt; trioqio's is a real run"
            )
        else:
            print("trace_compare: no QEMU and no reference capture", file=sys.stderr)
            return 2
        trioqio = capture_trioqio(work, args.channels)
    section = render(qemu, trioqio, note)
    if args.markdown:
        args.markdown.write_text(section)
    if args.json:
        summary = {"note": note, "qemu": shape(qemu), "trioqio": shape(trioqio),
                   "no_counterpart": sorted(NO_COUNTERPART), "qemu_order": QEMU_ORDER}  # fmt: skip
        args.json.write_text(json.dumps(summary, indent=1))
    if args.update_docs:
        text = DOC.read_text()
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        if not rest:
            print(f"trace_compare: {DOC} has no {BEGIN} marker", file=sys.stderr)
            return 2
        DOC.write_text(f"{head}{BEGIN}\n{section}{END}{tail}")
    if not (args.markdown or args.json or args.update_docs):
        print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
