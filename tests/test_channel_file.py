"""FileChannel and open_file: QEMU's tests/unit/test-io-channel-file.c plus Trio's checks.

Pipes are one-way streams, so they get Trio's one-way checks (plain and clogged). Regular
files have no peer to pair with, so Trio's stream checks do not apply to them: QEMU's
data test (write all, then read all) and direct tests of seek/pread/pwrite cover them.
"""

from __future__ import annotations

import os
import select
import stat
from pathlib import Path

import pytest
import trio
import trio.testing

import trioqio
from trioqio.testing import check_one_way_channel, data_test_buffers, run_data_test


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


async def make_pipe() -> tuple[trioqio.FileChannel, trioqio.FileChannel]:
    read_fd, write_fd = os.pipe()
    return trioqio.FileChannel(write_fd), trioqio.FileChannel(read_fd)


async def make_clogged_pipe() -> tuple[trioqio.FileChannel, trioqio.FileChannel]:
    writer, reader = await make_pipe()
    # Writes above PIPE_BUF are not all-or-nothing, so this fills the pipe to the brim.
    chunk = b"x" * (getattr(select, "PIPE_BUF", 4096) * 2)
    try:
        while True:
            os.write(writer.fileno(), chunk)
    except BlockingIOError:
        pass
    return writer, reader


# -- QEMU /io/channel/file, /io/channel/file/rdwr ------------------------------------


@pytest.mark.parametrize(
    "write_flags",
    [os.O_WRONLY | os.O_CREAT | os.O_TRUNC, os.O_RDWR | os.O_CREAT | os.O_TRUNC],
    ids=["wronly", "rdwr"],
)
async def test_file_data_and_mode(tmp_path: Path, write_flags: int) -> None:
    path = tmp_path / "test-io-channel-file.txt"
    src = await trioqio.open_file(path, write_flags, 0o600)
    dst = await trioqio.open_file(path, os.O_RDONLY, 0)
    async with src, dst:
        await run_data_test(src, dst, concurrent=False)
    assert (0o600 & ~_umask()) == stat.S_IMODE(path.stat().st_mode) & 0o777


async def test_mode_honoured_for_rdwr_create(tmp_path: Path) -> None:
    # A mode QEMU's oldest new_path dropped for O_RDWR; umask cannot add bits, only remove.
    path = tmp_path / "rw"
    async with await trioqio.open_file(path, os.O_RDWR | os.O_CREAT, 0o640):
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 & ~_umask()


async def test_open_file_sets_cloexec(tmp_path: Path) -> None:
    async with await trioqio.open_file(tmp_path / "x", os.O_WRONLY | os.O_CREAT) as channel:
        assert not os.get_inheritable(channel.fileno())


async def test_open_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        await trioqio.open_file(tmp_path / "missing", os.O_RDONLY)
    assert "missing" in str(info.value)


async def test_open_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        await trioqio.open_file(tmp_path, os.O_RDONLY)


# -- QEMU /io/channel/file/fd ---------------------------------------------------------


async def test_from_fd_regular_file(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    channel = trioqio.FileChannel.from_fd(fd)
    assert type(channel) is trioqio.FileChannel
    assert trioqio.ChannelFeature.SEEKABLE in channel.features
    assert channel.fileno() == fd
    await channel.aclose()
    with pytest.raises(OSError):
        os.fstat(fd)  # the channel owned and closed it


async def test_from_fd_dup_leaves_original_open(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        channel = trioqio.FileChannel.from_fd(fd, dup=True)
        assert channel.fileno() != fd
        await channel.send_all(b"abc")
        await channel.aclose()
        assert os.pread(fd, 3, 0) == b"abc"  # same open file, still ours
    finally:
        os.close(fd)


async def test_from_fd_dup_bad_fd_names_it() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    os.close(write_fd)
    with pytest.raises(OSError, match=f"could not dup fd {read_fd}"):
        trioqio.FileChannel.from_fd(read_fd, dup=True)


# -- QEMU /io/channel/pipe/sync and /async: the data test over a pipe -----------------


@pytest.mark.parametrize("writev", [True, False], ids=["writev", "send_all"])
async def test_pipe_data(writev: bool) -> None:
    writer, reader = await make_pipe()
    async with writer, reader:
        assert trioqio.ChannelFeature.SEEKABLE not in writer.features
        await run_data_test(writer, reader, writev=writev)


async def test_pipe_one_way_conformance() -> None:
    await check_one_way_channel(make_pipe, make_clogged_pipe)


async def test_pipe_send_eof_gives_reader_eof() -> None:
    writer, reader = await make_pipe()
    async with writer, reader:
        await writer.send_all(b"last")
        await writer.send_eof()
        await writer.send_eof()  # again: no-op
        assert await reader.receive_exactly(4) == b"last"
        assert await reader.receive_some() == b""
        with pytest.raises(trio.ClosedResourceError, match="send_eof"):
            await writer.send_all(b"more")


async def test_pipe_wrong_direction_is_unsupported() -> None:
    writer, reader = await make_pipe()
    async with writer, reader:
        with pytest.raises(trioqio.UnsupportedFeature, match="READ") as info:
            await writer.receive_some(1)
        assert info.value.channel == writer.name
        with pytest.raises(trioqio.UnsupportedFeature, match="WRITE"):
            await reader.send_all(b"x")
        with pytest.raises(trioqio.UnsupportedFeature, match="SEEKABLE"):
            await reader.seek(0)
        with pytest.raises(trioqio.UnsupportedFeature, match="SEEKABLE"):
            await writer.pwrite(b"x", 0)


async def test_pipe_peer_closes_midway_reports_bytes() -> None:
    writer, reader = await make_pipe()
    async with reader:
        async with writer:
            await writer.send_all(b"x" * 10)
        with pytest.raises(trioqio.UnexpectedEOF, match="after 10 of 100 bytes") as info:
            await reader.receive_exactly(100)
        assert (info.value.expected, info.value.received) == (100, 10)


async def test_pipe_reader_gone_is_broken() -> None:
    writer, reader = await make_pipe()
    await reader.aclose()
    async with writer:
        with pytest.raises(trio.BrokenResourceError):
            await writer.send_all(b"x")


async def test_fifo_read_write(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    async with trio.open_nursery() as nursery:
        # Opening either end of a FIFO blocks until the other end opens: both at once.
        ends: dict[str, trioqio.FileChannel] = {}

        async def opener(key: str, flags: int) -> None:
            ends[key] = await trioqio.open_file(fifo, flags)

        nursery.start_soon(opener, "r", os.O_RDONLY)
        nursery.start_soon(opener, "w", os.O_WRONLY)
    async with ends["r"], ends["w"]:
        await run_data_test(ends["w"], ends["r"])


async def test_cancelled_fifo_open_leaks_nothing(tmp_path: Path, no_threads_left: None) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with trio.move_on_after(0.05) as scope:
        await trioqio.open_file(fifo, os.O_RDONLY)  # blocks: no writer yet
    assert scope.cancelled_caught
    # Let the abandoned open finish; its thread must close the fd it gets.
    write_fd = os.open(fifo, os.O_WRONLY)
    os.close(write_fd)


# -- regular files: seek, pread, pwrite, send_eof, threads ------------------------------


async def test_regular_file_seek_pread_pwrite(tmp_path: Path) -> None:
    async with await trioqio.open_file(tmp_path / "f", os.O_RDWR | os.O_CREAT) as channel:
        await channel.send_all(b"0123456789")
        assert await channel.seek(0, os.SEEK_CUR) == 10
        assert await channel.seek(-4, os.SEEK_END) == 6
        assert await channel.receive_some(100) == b"6789"
        assert await channel.receive_some(100) == b""  # end of file
        assert await channel.pwrite(b"ab", 2) == 2
        assert await channel.pread(4, 1) == b"1ab4"
        assert await channel.seek(0, os.SEEK_CUR) == 10  # pread/pwrite left it alone
        await channel.seek(0)
        assert await channel.receive_exactly(10) == b"01ab456789"


async def test_regular_file_send_eof_stops_writes_only(tmp_path: Path) -> None:
    async with await trioqio.open_file(tmp_path / "f", os.O_RDWR | os.O_CREAT) as channel:
        await channel.send_all(b"abc")
        await channel.send_eof()
        with pytest.raises(trio.ClosedResourceError, match="send_eof"):
            await channel.send_all(b"d")
        with pytest.raises(trio.ClosedResourceError, match="send_eof"):
            await channel.pwrite(b"d", 0)
        assert await channel.pread(3, 0) == b"abc"


async def test_regular_file_big_write_spans_chunks(tmp_path: Path) -> None:
    payload = b"".join(data_test_buffers()) * 3  # > 1 MiB: several thread calls
    async with await trioqio.open_file(tmp_path / "f", os.O_RDWR | os.O_CREAT) as channel:
        await channel.send_all(memoryview(payload))
        await channel.seek(0)
        assert await channel.receive_exactly(len(payload)) == payload


async def test_regular_file_busy(tmp_path: Path) -> None:
    async with await trioqio.open_file(tmp_path / "f", os.O_RDWR | os.O_CREAT) as channel:
        with pytest.RaisesGroup(pytest.RaisesExc(trio.BusyResourceError)):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(channel.send_all, b"x" * 1_000_000)
                nursery.start_soon(channel.send_all, b"y")


async def test_busy_messages_match_the_socket_channels(tmp_path: Path) -> None:
    # One guard style for every channel: the same words as SocketChannel's, with the name.
    writer, reader = await make_clogged_pipe()
    async with writer, reader:
        sending = f"^another task is already sending on file channel '{writer.name}'$"
        for second in (writer.send_all(b"y"), writer.send_eof()):
            with pytest.RaisesGroup(pytest.RaisesExc(trio.BusyResourceError, match=sending)):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(writer.send_all, b"x")  # blocks: the pipe is full
                    await trio.testing.wait_all_tasks_blocked()
                    await second
    empty_writer, empty_reader = await make_pipe()
    async with empty_writer, empty_reader:
        receiving = f"^another task is already receiving on file channel '{empty_reader.name}'$"
        with pytest.RaisesGroup(pytest.RaisesExc(trio.BusyResourceError, match=receiving)):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(empty_reader.receive_some, 10)  # blocks: nothing to read
                await trio.testing.wait_all_tasks_blocked()
                await empty_reader.receive_some(10)
    async with await trioqio.open_file(tmp_path / "f", os.O_RDWR | os.O_CREAT, name="f") as file:
        with pytest.RaisesGroup(
            pytest.RaisesExc(
                trio.BusyResourceError,
                match="^another task is already sending on file channel 'f'$",
            )
        ):
            async with trio.open_nursery() as nursery:
                # Whichever starts first holds the guard while its worker thread writes.
                nursery.start_soon(file.send_all, b"x" * 1_000_000)
                nursery.start_soon(file.send_all, b"y" * 1_000_000)


async def test_regular_file_close_during_read(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"z" * 100)
    channel = await trioqio.open_file(path, os.O_RDONLY)
    results: list[BaseException] = []

    async def read() -> None:
        try:
            await channel.receive_some(10)
        except trio.ClosedResourceError as exc:
            results.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        # White-box, to be deterministic: once a worker thread holds the fd, the reader
        # cannot resume before we do, so aclose() below overlaps the thread for sure.
        while channel._in_flight == 0:  # pyright: ignore[reportPrivateUsage]
            await trio.sleep(0)
        await channel.aclose()  # waits for the thread, then closes the fd
        assert channel.fileno() == -1
    assert len(results) == 1


async def test_close_twice_and_use_after_close(tmp_path: Path) -> None:
    channel = await trioqio.open_file(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    await channel.aclose()
    await channel.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await channel.send_all(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await channel.receive_some(1)
    with pytest.raises(trio.ClosedResourceError):
        await channel.seek(0)
    with pytest.raises(trio.ClosedResourceError):
        await channel.send_eof()


async def test_char_device_is_a_stream() -> None:
    async with await trioqio.open_file("/dev/null", os.O_RDWR) as channel:
        assert trioqio.ChannelFeature.SEEKABLE not in channel.features
        await channel.send_all(b"gone")
        assert await channel.receive_some(10) == b""


async def test_receive_some_rejects_bad_sizes(tmp_path: Path) -> None:
    async with await trioqio.open_file(tmp_path / "f", os.O_RDWR | os.O_CREAT) as channel:
        with pytest.raises(ValueError):
            await channel.receive_some(0)
        with pytest.raises(TypeError):
            await channel.receive_some(1.5)  # type: ignore[arg-type]  # the bad input under test


async def test_write_only_file_cannot_read(tmp_path: Path) -> None:
    async with await trioqio.open_file(tmp_path / "w", os.O_WRONLY | os.O_CREAT) as channel:
        assert channel.writable
        assert not channel.readable
        with pytest.raises(trioqio.UnsupportedFeature, match="READ"):
            await channel.receive_some(1)
        with pytest.raises(trioqio.UnsupportedFeature, match="READ"):
            await channel.pread(1, 0)
    async with await trioqio.open_file(tmp_path / "w", os.O_RDONLY) as channel:
        with pytest.raises(trioqio.UnsupportedFeature, match="WRITE"):
            await channel.send_all(b"x")
        await channel.send_eof()  # nothing to end on a read-only fd


async def test_trace_events(tmp_path: Path) -> None:
    events: list[trioqio.trace.TraceEvent] = []
    with trioqio.trace.subscribed(events.append):
        async with await trioqio.open_file(tmp_path / "t", os.O_WRONLY | os.O_CREAT):
            pass
    names = [event.name for event in events]
    assert names == ["qio_channel_file_new_fd", "qio_channel_file_new_path"]
    assert events[1].fields["path"] == str(tmp_path / "t")
