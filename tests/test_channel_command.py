"""CommandChannel: QEMU's tests/unit/test-io-channel-command.c plus Trio's checks.

QEMU's tests use socat; ``cat`` with shell redirection does the same plumbing here.

Which Trio checks apply: a "w" command writing into a FIFO and an "r" command reading it
form a genuine one-way stream (two processes, data flowing from one channel to the other),
so that pair gets ``check_one_way_channel``. A single "rw" channel is not a two-way
*pair*: both of its directions end in the same child (``cat`` echoes into the same
channel), so Trio's two-way checks, which need two endpoints that talk to each other,
have nothing to run on; ``check_standalone_channel`` runs the rest of Trio's contract on
it as a loopback whose reads and writes block, and the echo data test exercises both
directions at once.

Every test here also checks that no child process is left behind (zombie or running).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

import trioqio
from trioqio.testing import check_one_way_channel, check_standalone_channel, run_data_test


def _children() -> set[int]:
    pids: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as file:
                pids.update(int(pid) for pid in file.read().split())
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return pids


@pytest.fixture(autouse=True)
def no_child_left() -> Iterator[None]:
    """Fail a test that leaves a child process (running or zombie) behind."""
    before = _children()
    yield
    left = _children() - before
    assert not left, f"test left child processes behind: {sorted(left)}"


def _assert_reaped(pid: int) -> None:
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


async def make_fifo_pair(fifo: Path) -> tuple[trioqio.CommandChannel, trioqio.CommandChannel]:
    """QEMU's fifo test plumbing: ``cat > fifo`` ("w") feeding ``cat < fifo`` ("r")."""
    writer = await trioqio.open_command(["sh", "-c", 'exec cat > "$0"', str(fifo)], "w")
    reader = await trioqio.open_command(["sh", "-c", 'exec cat < "$0"', str(fifo)], "r")
    # One byte through the pipeline proves both ends opened the FIFO (QEMU sleeps 1 ms
    # instead); a reader killed before opening it would leave the writer stuck in open().
    await writer.send_all(b"!")
    assert await reader.receive_exactly(1) == b"!"
    return writer, reader


# -- QEMU /io/channel/command/fifo/{sync,async} --------------------------------------


async def test_fifo_data(tmp_path: Path) -> None:
    fifo = tmp_path / "test-io-channel-command.fifo"
    os.mkfifo(fifo)
    writer, reader = await make_fifo_pair(fifo)
    async with writer, reader:
        await run_data_test(writer, reader)
        await writer.send_eof()
        assert await reader.receive_some() == b""
    assert writer.returncode == 0
    assert reader.returncode == 0


async def test_fifo_pair_one_way_conformance(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    await check_one_way_channel(lambda: make_fifo_pair(fifo))


# -- QEMU /io/channel/command/echo/{sync,async} --------------------------------------


@pytest.mark.parametrize("writev", [True, False], ids=["writev", "send_all"])
async def test_echo_data(writev: bool) -> None:
    async with await trioqio.open_command(["cat"]) as channel:
        # Writer and reader run concurrently on the same channel: cat's pipes are far
        # smaller than the payload.
        await run_data_test(channel, channel, writev=writev)
    assert channel.returncode == 0


async def make_cat() -> trioqio.CommandChannel:
    return await trioqio.open_command(["cat"])


async def test_cat_standalone_conformance() -> None:
    await check_standalone_channel(make_cat, loopback=True, receive_blocks=True, send_blocks=True)


# -- lifecycle ------------------------------------------------------------------------


async def test_send_eof_lets_child_finish() -> None:
    async with await trioqio.open_command(["tr", "a-z", "A-Z"]) as channel:
        await channel.send_all(b"hello")
        await channel.send_eof()
        await channel.send_eof()  # again: no-op
        assert await channel.receive_exactly(5) == b"HELLO"
        assert await channel.receive_some() == b""
        with pytest.raises(trio.ClosedResourceError, match="send_eof"):
            await channel.send_all(b"x")
    assert channel.returncode == 0
    _assert_reaped(channel.pid)


async def test_cancelled_send_eof_leaves_stdin_open() -> None:
    # Found by check_standalone_channel: it used to close stdin and then raise Cancelled.
    async with await trioqio.open_command(["cat"]) as channel:
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await channel.send_eof()
        await channel.send_all(b"ping")
        assert await channel.receive_exactly(4) == b"ping"


async def test_close_twice_is_a_no_op() -> None:
    channel = await trioqio.open_command(["cat"])
    await channel.aclose()
    await channel.aclose()
    assert channel.returncode == 0
    with pytest.raises(trio.ClosedResourceError):
        await channel.send_all(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await channel.receive_some(1)
    with pytest.raises(trio.ClosedResourceError):
        await channel.send_eof()


async def test_cancelled_close_terminates_child() -> None:
    channel = await trioqio.open_command(["sleep", "1000"], "r")
    with trio.CancelScope() as scope:
        scope.cancel()
        await channel.aclose()
    assert channel.returncode == -signal.SIGTERM
    _assert_reaped(channel.pid)


async def test_child_ignoring_eof_gets_sigterm_after_timeout() -> None:
    # sleep ignores its stdin, so closing the pipes does not end it.
    channel = await trioqio.open_command(["sleep", "1000"], "w", close_timeout=0.01)
    await channel.aclose()
    assert channel.returncode == -signal.SIGTERM
    _assert_reaped(channel.pid)


async def test_child_ignoring_sigterm_gets_sigkill(autojump_clock: trio.abc.Clock) -> None:
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "sys.stdout.write('ready'); sys.stdout.flush()\n"
        "time.sleep(1000)\n"
    )
    channel = await trioqio.open_command([sys.executable, "-c", script], "r")
    assert await channel.receive_exactly(5) == b"ready"
    # The virtual clock runs both timeouts out at once: SIGTERM (ignored), then SIGKILL.
    await channel.aclose()
    assert channel.returncode == -signal.SIGKILL
    _assert_reaped(channel.pid)


async def test_child_exiting_early_gives_eof_then_broken() -> None:
    async with await trioqio.open_command(["true"]) as channel:
        assert await channel.receive_some() == b""  # stdout closed: the child is gone
        with pytest.raises(trio.BrokenResourceError):
            await channel.send_all(b"x" * 100_000)
    assert channel.returncode == 0


async def test_child_stopping_midway_breaks_writer() -> None:
    async with await trioqio.open_command(["head", "-c", "5"]) as channel:

        async def send_forever() -> None:
            while True:
                await channel.send_all(b"x" * 65536)

        async def flood() -> None:
            with pytest.raises(trio.BrokenResourceError):
                await send_forever()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            assert await channel.receive_exactly(5) == b"xxxxx"
            assert await channel.receive_some() == b""


async def test_peer_closes_midway_reports_bytes() -> None:
    async with await trioqio.open_command(["printf", "abc"], "r") as channel:
        with pytest.raises(trioqio.UnexpectedEOF, match="after 3 of 10 bytes"):
            await channel.receive_exactly(10)


async def test_blocked_receive_woken_by_close() -> None:
    channel = await trioqio.open_command(["cat"])
    async with trio.open_nursery() as nursery:

        async def receive() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await channel.receive_some(10)

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        await channel.aclose()


async def test_busy_messages_match_the_socket_channels() -> None:
    # One guard style for every channel: the same words as SocketChannel's, with the name.
    async with await trioqio.open_command(["cat"], name="cat") as channel:
        receiving = "^another task is already receiving on command channel 'cat'$"
        with pytest.RaisesGroup(pytest.RaisesExc(trio.BusyResourceError, match=receiving)):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(channel.receive_some, 10)  # blocks: cat has said nothing
                await trio.testing.wait_all_tasks_blocked()
                await channel.receive_some(10)
        sending = "^another task is already sending on command channel 'cat'$"
        for second in (channel.send_all(b"y"), channel.send_eof()):
            with pytest.RaisesGroup(pytest.RaisesExc(trio.BusyResourceError, match=sending)):
                async with trio.open_nursery() as nursery:
                    # Blocks once cat's stdout and stdin pipes are full (nobody reads).
                    nursery.start_soon(channel.send_all, b"x" * 10_000_000)
                    await trio.testing.wait_all_tasks_blocked()
                    await second


# -- modes and bad input --------------------------------------------------------------


async def test_mode_r_and_w_plumbing() -> None:
    async with await trioqio.open_command(["echo", "out"], "r") as reader:
        assert await reader.receive_exactly(4) == b"out\n"
        with pytest.raises(trioqio.UnsupportedFeature, match="WRITE"):
            await reader.send_all(b"x")
        await reader.send_eof()  # nothing to close: the child's stdin is /dev/null
    async with await trioqio.open_command(["cat"], "w") as writer:
        await writer.send_all(b"to /dev/null")  # cat's stdout goes to /dev/null
        with pytest.raises(trioqio.UnsupportedFeature, match="READ") as info:
            await writer.receive_some(1)
        assert info.value.channel == writer.name
    assert writer.returncode == 0


async def test_mode_r_child_stdin_is_dev_null() -> None:
    async with await trioqio.open_command(["cat"], "r") as channel:
        assert await channel.receive_some() == b""  # cat read EOF from /dev/null


async def test_missing_command_is_clear_and_leaves_nothing() -> None:
    with pytest.raises(FileNotFoundError, match="no-such-command-xyz") as info:
        await trioqio.open_command(["no-such-command-xyz", "arg"])
    assert info.value.filename == "no-such-command-xyz"


async def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="empty"):
        await trioqio.open_command([])
    with pytest.raises(ValueError, match="mode"):
        await trioqio.open_command(["cat"], "x")  # type: ignore[arg-type]  # bad input under test
    with pytest.raises(TypeError, match="sequence"):
        await trioqio.open_command("cat")


async def test_attributes() -> None:
    async with await trioqio.open_command(["cat"]) as channel:
        assert channel.pid > 0
        assert channel.returncode is None
        assert channel.argv == ("cat",)
        assert channel.mode == "rw"
        assert "cat" in channel.name
        assert "open" in repr(channel)
    assert "closed" in repr(channel)


async def test_trace_events() -> None:
    events: list[trioqio.trace.TraceEvent] = []
    with trioqio.trace.subscribed(events.append):
        channel = await trioqio.open_command(["sleep", "1000"], "r", close_timeout=0)
        await channel.aclose()
    names = [event.name for event in events]
    assert names == [
        "qio_channel_command_new_spawn",
        "qio_channel_command_new_pid",
        "qio_channel_command_abort",
        "qio_channel_command_wait",
    ]
    assert events[1].fields["pid"] == channel.pid
