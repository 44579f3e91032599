"""nox is trioqio's one entry point: tests, lint, typecheck, examples, bench, docs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = [
    "tests", "tests_trio", "bench_harness", "coverage", "lint", "typecheck", "examples",
    "stress_ci", "docs", "interop",
]  # fmt: skip
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# Oldest Trio we support (pyproject's floor) and whatever PyPI serves newest; the oldest
# run also takes the floor of the speedups extra.
OLDEST_TRIO = "0.25.1"
OLDEST_ZLIB_NG = "0.5.0"

TEST_DEPS = [
    "pytest >= 8.4",  # pytest.RaisesGroup
    "pytest-trio >= 0.8.0",
    "trustme >= 1.1.0",
    "wsproto >= 1.2.0",
    "trio-websocket >= 0.11.1",
    "hypothesis >= 6.100",
    "pytest-timeout >= 2.3",  # a hung test fails instead of holding CI
    "cryptography >= 42",  # test certificates with fields trustme cannot set (C=)
    "websockets >= 13",  # a real client in tests/test_channel_websock_clients.py
]
# The benchmarks' peers, which tests/test_bench_harness.py imports through the scenario
# modules and benchmarks/plot.py; only the bench_harness and bench sessions install them.
BENCH_PEERS = [
    "anyio >= 4.0",
    "uvloop >= 0.19",
    "websockets >= 13",  # websockets.asyncio.server
    "matplotlib >= 3.7",
]
# Its own session (bench_harness): the suite's sessions leave it out.
HARNESS_TESTS = "tests/test_bench_harness.py"
ROOT = Path(__file__).parent


def _install(session: nox.Session, *extra: str) -> None:
    # speedups: the suite runs the zlib-ng CRC-32 by default and the stdlib's on purpose
    # (tests/test_migration_crc.py), so both are covered.
    session.install(".[websocket,speedups]", *TEST_DEPS, *extra)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite on each supported Python (the benchmark harness has its own)."""
    _install(session)
    session.run("pytest", f"--ignore={HARNESS_TESTS}", *session.posargs)


@nox.session(python="3.11")
@nox.parametrize("trio", [OLDEST_TRIO, "newest"])
def tests_trio(session: nox.Session, trio: str) -> None:
    """Run the test suite against the oldest supported Trio and the newest."""
    _install(session)
    if trio == "newest":
        session.install("--upgrade", "trio")
    else:
        session.install(f"trio=={trio}", f"zlib-ng=={OLDEST_ZLIB_NG}")
    show = "import trio, zlib_ng.zlib_ng as z; print('trio', trio.__version__, z.ZLIBNG_VERSION)"
    session.run("python", "-c", show)
    session.run("pytest", "-q", f"--ignore={HARNESS_TESTS}", *session.posargs)


@nox.session(python="3.11")
def bench_harness(session: nox.Session) -> None:
    """Test the benchmark harness (benchmarks/compare.py, plot.py) with its peers installed.

    TRIOQIO_BENCH_HARNESS=1 turns a missing peer into a failure; a plain `pytest` without
    the peers skips the two tests that need them, naming the package.
    """
    _install(session, *BENCH_PEERS)
    session.run("pytest", "-q", HARNESS_TESTS, *session.posargs, env={"TRIOQIO_BENCH_HARNESS": "1"})


@nox.session(python="3.11")
def coverage(session: nox.Session) -> None:
    """The test suite under coverage: line and branch, failing under [tool.coverage.report]."""
    # coverage 7.10: `patch = ["subprocess"]` measures the CLI tests' child processes too.
    _install(session, "coverage[toml] >= 7.10")
    session.run("coverage", "erase")
    session.run(
        "coverage", "run", "-m", "pytest", "-q", f"--ignore={HARNESS_TESTS}", *session.posargs
    )
    session.run("coverage", "combine", "-q")
    session.run("coverage", "report")


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff >= 0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, tests/ and examples/; pyright strict; verifytypes.

    mypy checks what pyproject.toml's [tool.mypy] lists (the package, the pytest plugin,
    tests/ with tests/typecheck, examples/), then tests/stress, a second import root, in a
    run of its own. pyright strict checks [tool.pyright]'s include (the package, the plugin,
    tests/typecheck, examples/). tests/typecheck holds every docstring example of the public
    surface and the README's (tests/test_docstring_examples.py keeps them current) and what
    the Task API's types must refuse. Last, ``pyright --verifytypes`` must find at least
    95% of the public surface's types known.
    """
    # typing_extensions: TypeVarTuple/Unpack/Self/assert_type for the checkers (imported
    # only under TYPE_CHECKING in trioqio, so not a run-time dependency).
    _install(
        session,
        "pyright >= 1.1.380",
        "mypy >= 1.10",
        "types-pyOpenSSL",
        "typing_extensions >= 4.6",
        # The exception-group backport trio needs on 3.10, which the checkers assume.
        "exceptiongroup >= 1.2",
        # What the benchmark modules tests/test_bench_harness.py imports, and what
        # examples/downstream/noxfile.py does.
        *BENCH_PEERS,
        "nox >= 2024.4.15",
    )
    session.run("mypy")
    stress = sorted(str(path) for path in (ROOT / "tests" / "stress").glob("*.py"))
    session.run("mypy", *stress, env={"MYPYPATH": str(ROOT / "tests" / "stress")})
    session.run("pyright")
    # verifytypes reads the installed copy (a non-editable install: it needs py.typed in
    # site-packages) and exits 1 whenever any symbol is incomplete; the bar is the score.
    output = session.run(
        "pyright", "--verifytypes", "trioqio", "--ignoreexternal", "--outputjson",
        silent=True, success_codes=[0, 1],
    )  # fmt: skip
    if not isinstance(output, str):
        return  # nox --install-only: nothing ran
    import json

    report = json.loads(output[output.index("{") : output.rindex("}") + 1])
    completeness = report["typeCompleteness"]
    score = completeness["completenessScore"]
    counts = completeness["exportedSymbolCounts"]
    session.log(f"verifytypes: {score:.1%} of the public surface known ({counts})")
    if score < 0.95:
        unknown = [
            symbol["name"]
            for symbol in completeness["symbols"]
            if symbol["isExported"] and not symbol["isTypeKnown"]
        ]
        session.error(f"verifytypes: {score:.1%} known, under 95%; unknown: {unknown}")


@nox.session(python="3.11")
def examples(session: nox.Session) -> None:
    """Run every script in examples/ (each must exit 0 by itself)."""
    _install(session)
    scripts = sorted((ROOT / "examples").glob("*.py"))
    if not scripts:
        session.error("examples/ holds no script")
    for script in scripts:
        session.run("python", str(script), env={"TRIOQIO_EXAMPLE_QUICK": "1"})
    # The example downstream project runs its tests through its own noxfile (its matrix
    # on this session's Python, both Trio bounds), as its users would.
    session.install("nox >= 2024.4.15")
    downstream = ROOT / "examples" / "downstream"
    session.run(
        "nox", "-f", str(downstream / "noxfile.py"), "-p", session.python or "3.11",
        env={"TRIOQIO_SOURCE": str(ROOT)},
    )  # fmt: skip


def _stress(session: nox.Session, scale: str) -> None:
    _install(session)
    session.run(
        "pytest", "tests/stress", "-p", "no:cacheprovider", "--timeout", "900", "-ra",
        *session.posargs, env={"TRIOQIO_STRESS": scale},
    )  # fmt: skip


@nox.session(python="3.11")
def stress(session: nox.Session) -> None:
    """The stress suite at full size (tests/stress; docs/reliability.md has the figures)."""
    _stress(session, "full")


@nox.session(python="3.11")
def stress_ci(session: nox.Session) -> None:
    """The stress suite with bounded sizes, as CI runs it."""
    _stress(session, "ci")


# The real peers of tests/interop (Debian package names); certutil sets up Chromium's trust.
INTEROP_PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "openssl": "openssl",
    "gnutls-cli": "gnutls-bin",
    "chromium": "chromium",
    "certutil": "libnss3-tools",
}


@nox.session(python="3.11")
def interop(session: nox.Session) -> None:
    """Real peers: OpenSSL, GnuTLS, headless Chromium and QEMU 7.2 (tests/interop).

    As root on Debian it installs the missing peers with apt-get; elsewhere each test whose
    peer is missing skips, naming the package.
    """
    _install(session)
    missing = sorted({pkg for tool, pkg in INTEROP_PACKAGES.items() if not shutil.which(tool)})
    if missing and shutil.which("apt-get") and os.geteuid() == 0:
        # apt-get exits 100 on errors (no network, say): then the tests skip, not the session.
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        ok = [0, 100]
        session.run("apt-get", "update", "-qq", external=True, env=env, success_codes=ok)
        session.run(
            "apt-get", "install", "-y", "-qq", *missing, external=True, env=env, success_codes=ok
        )  # fmt: skip
    elif missing:
        session.log(f"not installing {', '.join(missing)} (needs root and apt-get): tests skip")
    session.run(
        "pytest", "tests/interop", "-p", "no:cacheprovider", "-ra", "--durations=10",
        *session.posargs, env={"TRIOQIO_INTEROP": "1"},
    )  # fmt: skip


# nox -s mutation: each core module (or group of modules) is mutated by itself, against
# only the tests that concern it. name: (files to mutate, test files run against them).
MUTATION_MODULES: dict[str, tuple[list[str], list[str]]] = {
    "task": (["trioqio/_task.py"], ["tests/test_task.py", "tests/test_task_policy.py"]),
    "listener": (
        ["trioqio/_listener.py", "trioqio/_listener_accept.py", "trioqio/_listener_clients.py"],
        [
            "tests/test_listener_memory.py",
            "tests/test_listener.py",
            "tests/test_listener_bad_input.py",
        ],
    ),
    "session": (["trioqio/migration/_session.py"], ["tests/test_migration_session.py"]),
    # The websocket framing (the sans-IO frame decoder and encoder) and the TLS channel.
    "websock": (
        ["trioqio/_websock_frames.py"],
        ["tests/test_websock_frames.py", "tests/test_channel_websock.py"],
    ),
    # test_trace_events.py checks the TLS channel's trace points and their fields.
    "tls": (
        ["trioqio/_channel_tls.py"],
        ["tests/test_channel_tls.py", "tests/test_trace_events.py"],
    ),
}
# What a plain `nox -s mutation` runs; name others (or these) as posargs: -- websock tls
MUTATION_DEFAULT = ["task", "listener", "session"]
# A mutant is a timeout when its tests run this much longer than the clean run (mutmut's
# timeout_multiplier x clean duration + timeout_constant seconds); an infinite loop ends.
MUTATION_TIMEOUT = {"timeout_multiplier": 5.0, "timeout_constant": 10.0}


@nox.session(python="3.11")
def mutation(session: nox.Session) -> None:
    """Mutation testing of the core modules with mutmut 3 (docs/reliability.md, Mutation).

    `nox -s mutation` runs the modules in MUTATION_DEFAULT; `nox -s mutation -- websock tls`
    runs the named ones. Each module runs in its own copy of the tree under mutants/<name>/,
    with mutmut configured for that module's files and tests; 2 mutants run at once, each
    against only the tests that reached the mutated function. The summary (killed /
    survived / timeout / total, run time) is printed and written to mutants/summary.json;
    `cd mutants/<name> && mutmut show <mutant>` shows a survivor.
    """
    import json
    import time

    names = session.posargs or MUTATION_DEFAULT
    unknown = sorted(set(names) - MUTATION_MODULES.keys())
    if unknown:
        session.error(f"unknown module set(s) {unknown}; known: {sorted(MUTATION_MODULES)}")
    # mutmut puts its mutated copy of trioqio first on sys.path, ahead of the installed one.
    _install(session, "mutmut == 3.8.1")
    summary: dict[str, dict[str, float]] = {}
    for name in names:
        files, tests = MUTATION_MODULES[name]
        missing = [p for p in files + tests if not (ROOT / p).exists()]
        if missing:
            session.error(f"{name}: {', '.join(missing)} not found; update MUTATION_MODULES")
        work = ROOT / "mutants" / name
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        for item in ("trioqio", "tests", "pytest_trioqio.py"):
            src = ROOT / item
            if src.is_dir():
                shutil.copytree(src, work / item, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, work / item)
        # pyproject.toml's [tool.mutmut] holds what every module shares; this module's
        # settings go at the top of that table in the copy.
        config = {
            **MUTATION_TIMEOUT,
            "source_paths": ["trioqio"],
            "only_mutate": files,
            "also_copy": ["pytest_trioqio.py"],
            "pytest_add_cli_args_test_selection": tests,
        }
        header = "[tool.mutmut]\n"
        lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in config.items())
        pyproject = (ROOT / "pyproject.toml").read_text()
        (work / "pyproject.toml").write_text(pyproject.replace(header, header + lines))
        start = time.monotonic()
        with session.chdir(work):
            session.run("mutmut", "run", "--max-children", "2")
            session.run("mutmut", "export-cicd-stats", silent=True, success_codes=[0, 1, 2])
            session.run("mutmut", "results")  # the survivors and timeouts, by name
        elapsed = time.monotonic() - start
        stats = json.loads((work / "mutants" / "mutmut-cicd-stats.json").read_text())
        summary[name] = {**stats, "seconds": round(elapsed, 1)}
    out = ROOT / "mutants" / "summary.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    for name, stats in summary.items():
        total = stats.get("total", 0)
        killed = stats.get("killed", 0)
        session.log(
            f"{name}: killed {killed} / survived {stats.get('survived', 0)} / timeout "
            f"{stats.get('timeout', 0)} / total {total} in {stats['seconds']} s"
        )


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Run the benchmarks (ratios against peers measured in the same run)."""
    # compare.py (every scenario, every peer in one run; posargs go to it, e.g. `-- --quick`),
    # plot.py (docs/perf/*.svg), then the standalone scripts for what compare.py does not
    # measure. TRIOQIO_BENCH=text limits both to scenario keys / script names containing it;
    # TRIOQIO_BENCH_QUICK=1 makes compare.py and the scripts run small (a smoke run).
    _install(session, *BENCH_PEERS)
    # The migrate scenarios' physical reference is iperf3 (a Debian package); without it
    # they say how to install it and skip that row.
    if shutil.which("iperf3") is None and shutil.which("apt-get") and os.geteuid() == 0:
        session.run("apt-get", "update", "-qq", external=True)
        session.run("apt-get", "install", "-y", "-qq", "iperf3", external=True)
    bench_dir = ROOT / "benchmarks"
    only = os.environ.get("TRIOQIO_BENCH")
    select = ["--only", only] if only else []
    # compare.py exits 2 when no scenario key matches TRIOQIO_BENCH; that is fine here.
    session.run(
        "python", str(bench_dir / "compare.py"), *select, *session.posargs, success_codes=[0, 2]
    )
    session.run("python", str(bench_dir / "plot.py"), success_codes=[0, 2])  # 2: no JSON yet
    for script in sorted(bench_dir.glob("bench_*.py")):
        if only and only not in script.name:
            continue
        session.run("python", str(script))


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Build the guide and API reference (Sphinx); any warning fails the build.

    Python samples on guide pages are included from examples/ (run by the examples
    session); docs/conf.py fails the build on an inline Python sample or a public name
    missing from the API reference.
    """
    # testing: the API reference documents the pytest plugin, which imports pytest.
    session.install(".[websocket,speedups,testing]", "sphinx >= 7.3", "myst-parser >= 3.0")
    out = ROOT / "docs" / "_build" / "html"
    session.run("sphinx-build", "-W", "--keep-going", "-E", "-b", "html", "docs", str(out))
