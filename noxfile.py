"""nox is trioqio's one entry point: tests, lint, typecheck, examples, bench, docs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = [
    "tests", "tests_trio", "lint", "typecheck", "examples", "stress_ci", "docs", "interop",
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
    "anyio >= 4.0",  # benchmark scenarios import their peers (tests/test_bench_harness.py)
    "uvloop >= 0.19",
    "matplotlib >= 3.7",  # benchmarks/plot.py determinism test
]
ROOT = Path(__file__).parent


def _install(session: nox.Session, *extra: str) -> None:
    # speedups: the suite runs the zlib-ng CRC-32 by default and the stdlib's on purpose
    # (tests/test_migration_crc.py), so both are covered.
    session.install(".[websocket,speedups]", *TEST_DEPS, *extra)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite on each supported Python."""
    _install(session)
    session.run("pytest", *session.posargs)


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
    session.run("pytest", "-q", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff >= 0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """pyright strict and mypy --strict over the package and tests/typecheck.

    tests/typecheck holds the README's and the Task docstrings' examples and what the Task
    API's types must refuse (pyproject.toml's [tool.mypy] files and [tool.pyright] include).
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
    )
    session.run("mypy")
    session.run("pyright")


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


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Run the benchmarks (ratios against peers measured in the same run)."""
    # compare.py (every scenario, every peer in one run; posargs go to it, e.g. `-- --quick`),
    # plot.py (docs/perf/*.svg), then the standalone scripts for what compare.py does not
    # measure. TRIOQIO_BENCH=text limits both to scenario keys / script names containing it;
    # TRIOQIO_BENCH_QUICK=1 makes compare.py and the scripts run small (a smoke run).
    _install(
        session,
        "anyio >= 4.0",
        "uvloop >= 0.19",
        "trio-websocket >= 0.11.1",
        "websockets >= 13",  # websockets.asyncio.server
        "matplotlib >= 3.7",
    )
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
