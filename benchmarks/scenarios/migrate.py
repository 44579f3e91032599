"""``trioqio migrate`` with 1, 2, 4 and 8 channels against ``iperf3 -P N`` (issue 8).

Every implementation runs as two processes on 127.0.0.1 and moves the same byte count:

* ``trioqio``: ``python -m trioqio migrate --listen tcp:127.0.0.1:0`` and
  ``--connect ADDR --size SIZE --channels N`` (main channel plus N multifd channels,
  generated pages, the default per-packet checksum computed and verified on both ends);
  the rate is the source report's ``throughput_bytes_per_second``. The bench session
  installs ``trioqio[speedups]``, so the CRC-32 is zlib-ng's; the run fails if the report
  names another provider;
* ``trioqio (stdlib zlib CRC)``: the same with ``TRIOQIO_CRC32=zlib`` on both ends, what a
  plain ``pip install trioqio`` gets;
* ``trio``: N plain ``trio.SocketStream`` connections between two processes moving the
  same bytes from one fixed buffer, no checksum (``_migrate_raw.py``): the Trio transport
  ceiling under the migration protocol;
* ``iperf3``: ``iperf3 -s -1`` and ``iperf3 -c -P N -n SIZE -J``; the rate is the
  receiver's ``end.sum_received.bits_per_second``. Debian 12 ships iperf3 3.12, which runs
  all ``-P`` streams in one thread (multi-threaded streams came in 3.16);
* ``QEMU 7.2 (dst -mem-prealloc)`` and ``QEMU 7.2``: a real QEMU multifd migration of the
  same byte count of random guest RAM, N multifd channels, bandwidth cap lifted, with and
  without a preallocated destination (``_qemu_peer.py``; issue 19).

Every process is killed and reaped however the measure ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    from _scenario import Measure, Scenario
except ImportError:  # imported from elsewhere than benchmarks/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _scenario import Measure, Scenario

try:
    from scenarios._qemu_peer import qemu_binary, qemu_missing, qemu_rate
except ImportError:  # imported with benchmarks/scenarios on the path
    from _qemu_peer import qemu_binary, qemu_missing, qemu_rate

MIB = 1 << 20
FULL_SIZE = 1 << 30
QUICK_SIZE = 64 << 20
TIMEOUT = 120.0
IPERF3_INSTALL = "apt-get update && apt-get install -y iperf3"
_RAW = Path(__file__).with_name("_migrate_raw.py")


@contextlib.contextmanager
def _reaped(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """Kill ``process`` (if still running) and reap it when the block ends."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _size(quick: bool) -> int:
    return QUICK_SIZE if quick else FULL_SIZE


def migrate_rate(channels: int, size: int, crc32: str = "zlib-ng") -> float:
    """Two-process ``trioqio migrate``; the source's rate in MiB/s.

    ``crc32`` is ``TRIOQIO_CRC32`` for both ends; the source's report must name it.
    """
    command = [sys.executable, "-m", "trioqio", "migrate", "--no-progress", "--json"]
    listen = [*command, "--listen", "tcp:127.0.0.1:0", "--channels", str(channels)]
    env = {**os.environ, "TRIOQIO_CRC32": crc32}
    with _reaped(
        subprocess.Popen(listen, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ) as listener:
        assert listener.stderr is not None
        line = listener.stderr.readline()  # "listening on tcp:127.0.0.1:PORT"
        if not line.startswith("listening on "):
            raise RuntimeError(f"trioqio migrate --listen said {line!r}")
        address = line.split()[2]
        done = subprocess.run(
            [*command, "--connect", address, "--size", str(size), "--channels", str(channels)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
            env=env,
        )
        if done.returncode != 0:
            raise RuntimeError(f"trioqio migrate --connect failed: {done.stderr.strip()}")
        listener.wait(timeout=TIMEOUT)
        if listener.returncode != 0:
            raise RuntimeError(f"trioqio migrate --listen exited {listener.returncode}")
    report = json.loads(done.stdout)
    if not report["ok"] or report["size"] != size:
        raise RuntimeError(f"migration did not verify: {report}")
    if not str(report["crc32_provider"]).startswith(f"{crc32} "):
        raise RuntimeError(f"asked for {crc32}, the report says {report['crc32_provider']}")
    return float(report["throughput_bytes_per_second"]) / MIB


def raw_trio_rate(channels: int, size: int) -> float:
    """N plain trio.SocketStream connections, two processes; MiB/s."""
    receiver_cmd = [sys.executable, str(_RAW), "listen", str(channels)]
    with _reaped(subprocess.Popen(receiver_cmd, stdout=subprocess.PIPE, text=True)) as receiver:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        done = subprocess.run(
            [sys.executable, str(_RAW), "connect", str(port), str(channels), str(size)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=True,
        )
        receiver.wait(timeout=TIMEOUT)
    return float(done.stdout) / MIB


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def iperf3_rate(channels: int, size: int) -> float:
    """``iperf3 -c -P N -n SIZE`` against a one-off ``iperf3 -s``; the receiver's MiB/s."""
    binary = shutil.which("iperf3")
    if binary is None:
        raise RuntimeError(f"iperf3 is not installed ({IPERF3_INSTALL})")
    port = _free_port()
    server_cmd = [binary, "-s", "-1", "-B", "127.0.0.1", "-p", str(port), "--forceflush"]
    with _reaped(
        subprocess.Popen(server_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ) as server:
        assert server.stdout is not None
        # "Server listening on PORT (test #1)" once the socket listens.
        for line in server.stdout:
            if "listening" in line:
                break
        else:
            raise RuntimeError("iperf3 -s exited before listening")
        client = subprocess.run(
            [binary, "-c", "127.0.0.1", "-p", str(port), "-P", str(channels), "-n", str(size),
             "-J"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )  # fmt: skip
        server.wait(timeout=TIMEOUT)
    result = json.loads(client.stdout)
    if client.returncode != 0 or "error" in result:
        raise RuntimeError(f"iperf3 -c failed: {result.get('error', client.stderr)}")
    sent, received = result["end"]["sum_sent"], result["end"]["sum_received"]
    if sent["bytes"] < size:
        raise RuntimeError(f"iperf3 sent {sent['bytes']} bytes, expected {size}")
    # The receiver stops counting when the client announces the end, so its byte count
    # misses what was still in flight; its rate is over its own (shorter) interval.
    return float(received["bits_per_second"]) / 8 / MIB


def _iperf3_missing() -> dict[str, str]:
    missing = qemu_missing()
    if shutil.which("iperf3") is None:
        missing["iperf3"] = f"iperf3 not installed; install it with `{IPERF3_INSTALL}`"
    return missing


def _implementations(channels: int) -> Callable[[bool], dict[str, Measure]]:
    def build(quick: bool) -> dict[str, Measure]:
        size = _size(quick)
        measures: dict[str, Measure] = {
            "trioqio": lambda: migrate_rate(channels, size),
            "trioqio (stdlib zlib CRC)": lambda: migrate_rate(channels, size, "zlib"),
            "trio": lambda: raw_trio_rate(channels, size),
        }
        if shutil.which("iperf3") is not None:
            measures["iperf3"] = lambda: iperf3_rate(channels, size)
        if qemu_binary() is not None:
            measures["QEMU 7.2 (dst -mem-prealloc)"] = lambda: qemu_rate(
                channels, size, prealloc=True
            )
            measures["QEMU 7.2"] = lambda: qemu_rate(channels, size, prealloc=False)
        return measures

    return build


def _scenario(channels: int) -> Scenario:
    plural = "channel" if channels == 1 else "channels"
    return Scenario(
        key=f"migrate-{channels}ch",
        title=f"trioqio migrate, {channels} {plural}, two processes, 1 GiB over loopback TCP",
        unit="MiB/s",
        reference="iperf3",
        implementations=_implementations(channels),
        target=0.5 if channels == 4 else None,
        unavailable=_iperf3_missing,
        gib_per_call=lambda quick: _size(quick) / (1 << 30),
        notes=(
            f"trioqio: `python -m trioqio migrate --listen`/`--connect`, main + {channels} "
            "multifd, default checksum (CRC-32 per packet) on both ends, computed by zlib-ng "
            "(`trioqio[speedups]`); trioqio (stdlib zlib CRC): the same with "
            f"`TRIOQIO_CRC32=zlib`; trio: {channels} plain SocketStream(s), "
            f"no checksum; iperf3 3.x `-P {channels} -n SIZE`, receiver's rate "
            "(iperf3 3.12 runs all streams in one thread); QEMU 7.2: a real multifd "
            f"migration of the same bytes of random guest RAM, {channels} multifd channels, "
            "max-bandwidth lifted, destination with and without -mem-prealloc; rate = "
            "ram.transferred over total-time less setup-time"
        ),
    )


SCENARIOS: list[Scenario] = [_scenario(n) for n in (1, 2, 4, 8)]
