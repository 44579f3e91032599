"""A two-process migration between two network namespaces joined by a rate-limited veth pair.

The destination runs in namespace A (``10.213.7.1/30``), the source in namespace B
(``10.213.7.2/30``); each end of the veth pair has a ``tbf`` qdisc (200 mbit, 256 kb burst,
50 ms latency), the kernel's rate limiter (this kernel has no netem). The addresses exist
only inside the namespaces this test creates; both are removed in ``finally``.

Skipped, with the reason, when not root or when the sandbox refuses namespaces, veth or tbf.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from _scale import size

SIZE_MIB = size(full=512, ci=32)
RATE = "200mbit"
DEST_IP, SOURCE_IP = "10.213.7.1", "10.213.7.2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def _tc(*args: str) -> str:
    done = subprocess.run(["tc", *args], check=True, capture_output=True, text=True, timeout=30)
    return done.stdout


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    """Two fresh namespaces joined by a veth pair with tbf on both ends; removed after."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    if shutil.which("ip") is None or shutil.which("tc") is None:
        pytest.skip("iproute2 (ip, tc) is not installed")
    tag = f"{os.getpid() % 100000}{time.monotonic_ns() % 1000:03d}"
    dest, source = f"tqio-d{tag}", f"tqio-s{tag}"
    veth_d, veth_s = f"tq{tag}d", f"tq{tag}s"  # at most 15 characters
    made: list[str] = []
    try:
        try:
            for name in (dest, source):
                _ip("netns", "add", name)
                made.append(name)
            _ip("link", "add", veth_d, "netns", dest, "type", "veth",
                "peer", "name", veth_s, "netns", source)  # fmt: skip
            for name, veth, address in ((dest, veth_d, DEST_IP), (source, veth_s, SOURCE_IP)):
                _ip("-n", name, "addr", "add", f"{address}/30", "dev", veth)
                _ip("-n", name, "link", "set", veth, "up")
                _ip("-n", name, "link", "set", "lo", "up")
                _tc("-n", name, "qdisc", "add", "dev", veth, "root",
                    "tbf", "rate", RATE, "burst", "256kb", "latency", "50ms")  # fmt: skip
                assert "tbf" in _tc("-n", name, "qdisc", "show", "dev", veth)
        except (subprocess.CalledProcessError, OSError) as exc:
            stderr = getattr(exc, "stderr", "") or ""
            pytest.skip(f"cannot make namespaces, veth or tbf here: {exc} {stderr.strip()}")
        yield dest, source
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def _start(namespace: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-m", "trioqio", "migrate",
         "--no-progress", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_migration_between_namespaces_over_tbf_veth(namespaces: tuple[str, str]) -> None:
    dest_ns, source_ns = namespaces
    destination = _start(dest_ns, "--listen", f"tcp:{DEST_IP}:0", "--channels", "4")
    source: subprocess.Popen[str] | None = None
    try:
        assert destination.stderr is not None
        line = destination.stderr.readline()
        assert line.startswith("listening on "), line
        bound = line.split()[2]
        assert bound.startswith(f"tcp:{DEST_IP}:"), bound
        start = time.monotonic()
        source = _start(
            source_ns, "--connect", bound, "--channels", "4", "--size", f"{SIZE_MIB}MiB"
        )
        out, err = source.communicate(timeout=300)
        seconds = time.monotonic() - start
        dest_out, dest_err = destination.communicate(timeout=60)
    finally:
        for process in (destination, source):
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate()
    assert source is not None
    assert source.returncode == 0, err
    assert destination.returncode == 0, dest_err
    assert "checksums match" in out, out
    assert "checksums match" in dest_out, dest_out
    rate = SIZE_MIB * (1 << 20) * 8 / seconds / 1e6
    print(f"{SIZE_MIB} MiB from {source_ns} to {dest_ns} over tbf {RATE}: "
          f"match in {seconds:.2f} s ({rate:.0f} Mbit/s)")  # fmt: skip
