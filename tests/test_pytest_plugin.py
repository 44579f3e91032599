"""The pytest plugin (``pytest_trioqio``), run as its users run it: pytest in a child process.

Each test writes a small suite into a temporary directory and runs ``python -m pytest`` on
it with the plugin, then reads the outcome of every test from the child's ``-rA`` summary:
what passes must pass, what the leak check or a misuse must fail must fail, with the
message a user would read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

INI = """\
[pytest]
addopts = -p pytest_trioqio -p no:cacheprovider -rA --strict-markers
{extra}
"""


def run_suite(tmp_path: Path, source: str, *, ini: str = "trio_mode = true") -> dict[str, str]:
    """Run ``source`` as test_suite.py under pytest; return each test's outcome line."""
    (tmp_path / "pytest.ini").write_text(INI.format(extra=ini))
    (tmp_path / "test_suite.py").write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["COLUMNS"] = "1000"  # the -rA summary lines whole, messages included
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "test_suite.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    outcomes: dict[str, str] = {}
    for line in result.stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "ERROR", "SKIPPED") and "::" in rest:
            name = rest.split("::", 1)[1].split(" ", 1)[0]
            outcomes.setdefault(name, "")
            outcomes[name] += f"{word} {rest}\n"
    assert outcomes, f"no outcomes parsed:\n{result.stdout}\n{result.stderr}"
    return outcomes


def test_the_plugin_imports_neither_trio_nor_trioqio() -> None:
    code = (
        "import sys, pytest_trioqio\n"
        "print(sorted(m for m in sys.modules if m.startswith(('trio', 'trustme'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_leak_check_names_a_leaked_socket_and_a_running_thread(tmp_path: Path) -> None:
    outcomes = run_suite(
        tmp_path,
        """
        import socket, threading, pytest

        kept = []
        gate = threading.Event()

        @pytest.mark.trioqio_leak_check
        def test_leaks_a_socket():
            kept.append(socket.socket())

        @pytest.mark.trioqio_leak_check
        def test_leaves_a_thread():
            threading.Thread(target=gate.wait, name="stuck-worker", daemon=True).start()

        @pytest.mark.trioqio_leak_check
        def test_clean():
            with socket.socket():
                pass

        def test_unchecked_without_the_marker():
            kept.append(socket.socket())

        def test_zz_cleanup():
            gate.set()
            for sock in kept:
                sock.close()
        """,
        ini="trio_mode = true\ntrioqio_leak_check_thread_wait = 0.2",
    )
    assert "ERROR" in outcomes["test_leaks_a_socket"]
    assert "file descriptor(s) open: fd " in outcomes["test_leaks_a_socket"]
    assert "socket:[" in outcomes["test_leaks_a_socket"]
    assert "ERROR" in outcomes["test_leaves_a_thread"]
    assert "'stuck-worker'" in outcomes["test_leaves_a_thread"]
    assert outcomes["test_clean"].startswith("PASSED")
    assert outcomes["test_unchecked_without_the_marker"].startswith("PASSED")


def test_leak_check_for_a_whole_suite_with_an_exemption(tmp_path: Path) -> None:
    outcomes = run_suite(
        tmp_path,
        """
        import socket, pytest

        kept = []

        def test_leaks():
            kept.append(socket.socket())

        @pytest.mark.trioqio_leak_check(False)
        def test_exempt():
            kept.append(socket.socket())

        @pytest.mark.trioqio_leak_check(enabled=False)
        def test_zz_cleanup():
            for sock in kept:
                sock.close()

        @pytest.fixture(scope="module")
        def module_resource():
            held = socket.socket()  # held for the module: not any one test's leak
            yield held
            held.close()

        def test_uses_a_module_scoped_resource(module_resource):
            assert module_resource.fileno() >= 0

        async def test_trio_test_that_closes_what_it_opens():
            import trio
            a, b = trio.socket.socketpair()
            a.close()
            b.close()
        """,
        ini="trio_mode = true\ntrioqio_leak_check = true",
    )
    assert "ERROR" in outcomes["test_leaks"]
    assert outcomes["test_exempt"].startswith("PASSED")
    assert outcomes["test_uses_a_module_scoped_resource"].startswith("PASSED")
    assert outcomes["test_trio_test_that_closes_what_it_opens"].startswith("PASSED")


def test_fixtures_serve_connect_proxy_and_tls(tmp_path: Path) -> None:
    outcomes = run_suite(
        tmp_path,
        """
        import pytest, trio, trioqio
        from trioqio.testing import Fault

        async def echo(stream):
            async for data in stream:
                await stream.send_all(data)

        @pytest.mark.trioqio_leak_check
        async def test_net_listener(net_listener):
            assert net_listener.is_connected
            net_listener.set_client_func(echo)
            async with await trioqio.connect(net_listener.addresses[0]) as channel:
                await channel.send_all(b"ping")
                assert await channel.receive_exactly(4) == b"ping"

        @pytest.mark.net_listener("unix:{tmp}/sock", max_clients=1, name="marked")
        async def test_net_listener_marker(net_listener):
            assert net_listener.name == "marked"
            assert str(net_listener.addresses[0]) == "unix:{tmp}/sock"

        @pytest.mark.trioqio_leak_check
        async def test_memory_listener(memory_listener, autojump_clock):
            async with trioqio.NetListener() as listener:
                listener.add_listener(memory_listener)
                listener.set_client_func(echo)
                client = await memory_listener.connect()
                await client.send_all(b"mem")
                assert await client.receive_some() == b"mem"
                await client.aclose()

        @pytest.mark.trioqio_leak_check
        async def test_fault_proxy(net_listener, fault_proxy):
            net_listener.set_client_func(echo)
            proxy = await fault_proxy(net_listener.addresses[0], to_client=Fault(cut_after=3))
            async with await trioqio.connect(proxy.address) as channel:
                await channel.send_all(b"abcdef")
                received = b""
                while chunk := await channel.receive_some():
                    received += chunk
            assert received == b"abc"
            assert proxy.fired == [(0, "to_client", "cut")]

        @pytest.mark.trioqio_leak_check
        async def test_tls_pair(tls_pair, net_listener):
            acl = trioqio.TLSAcl([tls_pair.client_dn])
            refused = []

            async def serve(channel):
                tls = trioqio.TLSChannel.server(channel, tls_pair.server_context, acl=acl)
                try:
                    await tls.handshake()
                except trioqio.HandshakeError:
                    refused.append(True)
                    return
                await tls.send_all(b"welcome")
                await tls.aclose()

            net_listener.set_client_func(serve)
            for context, welcome in ((tls_pair.client_context, True),
                                     (tls_pair.refused_client_context, False)):
                channel = await trioqio.connect(net_listener.addresses[0])
                tls = trioqio.TLSChannel.client(channel, context, hostname=tls_pair.hostname)
                async with tls:
                    try:
                        data = await tls.receive_some()
                    except (trio.BrokenResourceError, trioqio.HandshakeError):
                        data = b""
                assert (data == b"welcome") is welcome
            assert tls_pair.refused_dn != tls_pair.client_dn
            # The server closes the refused connection before its handler hears why.
            with trio.fail_after(5):
                while not refused:
                    await trio.sleep(0.01)
            assert refused == [True]
        """.replace("{tmp}", str(tmp_path)),
    )
    for name in (
        "test_net_listener",
        "test_net_listener_marker",
        "test_memory_listener",
        "test_fault_proxy",
        "test_tls_pair",
    ):
        assert outcomes[name].startswith("PASSED"), outcomes
    assert not (tmp_path / "sock").exists()  # the listener closed and unlinked it


def test_fixtures_outside_a_trio_test_say_what_is_missing(tmp_path: Path) -> None:
    outcomes = run_suite(
        tmp_path,
        """
        import pytest

        def test_sync_test_asks_for_a_listener(net_listener):
            pass

        async def test_async_but_unmarked(memory_listener):
            pass

        def test_sync_test_asks_for_a_proxy(fault_proxy):
            pass
        """,
        ini="",
    )
    names = (
        "test_sync_test_asks_for_a_listener",
        "test_async_but_unmarked",
        "test_sync_test_asks_for_a_proxy",
    )
    for name in names:
        assert "FAILED" in outcomes[name] or "ERROR" in outcomes[name], outcomes
        assert "needs an async Trio test" in outcomes[name]
        assert "@pytest.mark.trio or set trio_mode = true" in outcomes[name]


def test_conformance_tests_check_a_stream_kind_in_one_line(tmp_path: Path) -> None:
    outcomes = run_suite(
        tmp_path,
        """
        import trio, trio.testing, trioqio
        from trioqio.testing import conformance_tests

        async def socket_channels():
            a, b = trio.socket.socketpair()
            return trioqio.SocketChannel(a), trioqio.SocketChannel(b)

        async def trio_streams():
            a, b = trio.socket.socketpair()
            return trio.SocketStream(a), trio.SocketStream(b)

        class Corrupting(trio.abc.HalfCloseableStream):
            # Flips a bit in the first byte of every send: both checks must catch it.
            def __init__(self, inner):
                self.inner = inner
            async def send_all(self, data):
                data = bytes(data)
                await self.inner.send_all(bytes([data[0] ^ 1]) + data[1:] if data else data)
            async def wait_send_all_might_not_block(self):
                await self.inner.wait_send_all_might_not_block()
            async def receive_some(self, max_bytes=None):
                return await self.inner.receive_some(max_bytes)
            async def send_eof(self):
                await self.inner.send_eof()
            async def aclose(self):
                await self.inner.aclose()

        async def broken_streams():
            a, b = await trio_streams()
            return Corrupting(a), b

        TestSocketChannel = conformance_tests(socket_channels)
        TestTrioSocketStream = conformance_tests(trio_streams)
        TestBroken = conformance_tests(broken_streams)
        """,
    )
    passed = [name for name, line in outcomes.items() if line.startswith("PASSED")]
    failed = [name for name, line in outcomes.items() if line.startswith("FAILED")]
    assert sorted(passed) == [
        "TestSocketChannel::test_qemu_data_test",
        "TestSocketChannel::test_trio_stream_contract",
        "TestTrioSocketStream::test_qemu_data_test",
        "TestTrioSocketStream::test_trio_stream_contract",
    ], outcomes
    assert sorted(failed) == [
        "TestBroken::test_qemu_data_test",
        "TestBroken::test_trio_stream_contract",
    ]
