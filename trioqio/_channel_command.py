"""A channel to a child process's stdin and stdout (QEMU ``io/channel-command.c``).

QEMU spawns the child with ``g_spawn_async_with_pipes``, reads its stdout and writes its
stdin, and on close closes both pipes, then blocks in ``waitpid``; a channel dropped
without a close aborts the child (``WNOHANG`` check, SIGTERM, a short wait, SIGKILL).

trioqio spawns with :func:`trio.lowlevel.open_process` and keeps the same plumbing per
mode. Differences from QEMU, deliberate:

- :meth:`CommandChannel.aclose` waits for the child only ``close_timeout`` seconds (QEMU
  waits forever); a child still running then, or an ``aclose`` that is cancelled, gets
  QEMU's abort sequence: SIGTERM, ``terminate_timeout`` seconds, SIGKILL. The child is
  always reaped: no zombie is left behind.
- ``send_eof`` closes the child's stdin (Trio's half-close), so filters like ``cat`` can
  finish while their output is still being read.
- The child's stderr is inherited from this process (QEMU does the same).
- In "r" mode the child's stdin is ``/dev/null`` (as in QEMU, where GLib attaches it there).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal, final

import trio

from ._abc import Channel
from ._conflict import Busy
from ._errors import UnsupportedFeature
from ._trace import emit, enabled

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["CommandChannel", "open_command"]

CommandMode = Literal["r", "w", "rw"]


@final
class CommandChannel(Channel):
    """A channel whose sending side is a child's stdin and receiving side its stdout.

    Create it with :func:`trioqio.open_command`. Mode "r" has only the child's stdout
    (sending raises :class:`trioqio.UnsupportedFeature`), mode "w" only its stdin (the
    child's stdout goes to ``/dev/null``; receiving raises ``UnsupportedFeature``), mode
    "rw" both. The child's stderr is inherited.

    A child that exits early gives end of file on receive and
    :class:`trio.BrokenResourceError` on send, never a hang.

    QEMU: ``QIOChannelCommand`` (``qio_channel_command_new_spawn``).

    Args:
        process: the started child (``stdin``/``stdout`` pipes as ``mode`` asks).
        argv: the command line, for errors and traces.
        mode: "r", "w" or "rw", as given to :func:`trioqio.open_command`.
        close_timeout: seconds :meth:`aclose` waits for the child to exit on its own.
        terminate_timeout: seconds between SIGTERM and SIGKILL in :meth:`aclose`.
        name: the channel's name; defaults to one built from ``argv``.

    Attributes:
        pid: the child's process id.
        returncode: None while the child runs (or was not reaped yet); then its exit
            status, negative for a signal (``-15`` after SIGTERM), as in :mod:`subprocess`.
        argv: the command line.

    Example::

        async with await trioqio.open_command(["tr", "a-z", "A-Z"]) as channel:
            await channel.send_all(b"hello")
            await channel.send_eof()
            assert await channel.receive_some() == b"HELLO"
    """

    def __init__(
        self,
        process: trio.Process,
        argv: Sequence[str],
        mode: CommandMode,
        *,
        close_timeout: float,
        terminate_timeout: float,
        name: str | None = None,
    ) -> None:
        self._process = process
        self.argv: tuple[str, ...] = tuple(argv)
        self.mode: CommandMode = mode
        self.name: str = name if name is not None else f"command:{self.argv[0]}[{process.pid}]"
        self.close_timeout = close_timeout
        self.terminate_timeout = terminate_timeout
        self._stdin = process.stdin
        self._stdout = process.stdout
        self._closed = False
        self._eof_sent = False
        # One task per direction, worded as every trioqio channel words it.
        self._send_guard = Busy("sending on command channel", self.name)
        self._receive_guard = Busy("receiving on command channel", self.name)
        self._reaped = trio.Event()

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The child's exit status once reaped, else None."""
        return self._process.returncode

    # -- Trio stream API ----------------------------------------------------------------

    def _check_send(self) -> trio.abc.SendStream:
        if self._closed:
            raise trio.ClosedResourceError(f"{self.name}: channel is closed")
        if self._stdin is None:
            raise UnsupportedFeature("WRITE", self.name, "opened with mode 'r'")
        if self._eof_sent:
            raise trio.ClosedResourceError(f"{self.name}: cannot send after send_eof()")
        return self._stdin

    async def send_all(self, data: Buffer) -> None:
        """Write all of ``data`` to the child's stdin.

        Args:
            data: bytes-like.

        Raises:
            trio.BrokenResourceError: the child closed its stdin or exited.
            trio.ClosedResourceError: the channel was closed or ``send_eof`` was called.
            trio.BusyResourceError: another task is sending.
            trioqio.UnsupportedFeature: mode "r".
        """
        with self._send_guard:
            stdin = self._check_send()
            with memoryview(data) as view, view.cast("B") as octets:
                await stdin.send_all(octets)

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the child's stdin pipe has room.

        Raises:
            trio.ClosedResourceError: the channel was closed.
            trio.BusyResourceError: another task is sending.

        Example::

            await channel.wait_send_all_might_not_block()
        """
        with self._send_guard:
            stdin = self._check_send()
            await stdin.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Close the child's stdin, so it sees end of file; again is a no-op.

        In mode "r" there is nothing to close (the child's stdin is ``/dev/null``).

        Raises:
            trio.ClosedResourceError: the channel was closed.
            trio.BusyResourceError: another task is sending.
        """
        await trio.lowlevel.checkpoint_if_cancelled()  # cancelled: stdin stays open
        with self._send_guard:
            if self._closed:
                raise trio.ClosedResourceError(f"{self.name}: channel is closed")
            if self._stdin is not None and not self._eof_sent:
                self._eof_sent = True
                await self._stdin.aclose()
            else:
                await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Read up to ``max_bytes`` from the child's stdout; ``b""`` once it is closed.

        Args:
            max_bytes: the most bytes to return; must be >= 1.

        Returns:
            The bytes.

        Raises:
            trio.ClosedResourceError: the channel was closed.
            trio.BusyResourceError: another task is receiving.
            trioqio.UnsupportedFeature: mode "w".
        """
        with self._receive_guard:
            if self._closed:
                raise trio.ClosedResourceError(f"{self.name}: channel is closed")
            if self._stdout is None:
                raise UnsupportedFeature("READ", self.name, "opened with mode 'w'")
            return bytes(await self._stdout.receive_some(max_bytes))

    # -- closing ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the pipes, then wait for the child to exit (QEMU ``qio_channel_close``).

        The child gets ``close_timeout`` seconds to exit after seeing end of file on its
        stdin. If it is still running then, or if this call is cancelled, it gets SIGTERM,
        ``terminate_timeout`` seconds, then SIGKILL; either way it is reaped before
        ``aclose`` returns. Calling it again is a no-op (it waits for a reap in progress).

        Raises nothing: a child that will not exit is killed; read :attr:`returncode`
        afterwards for its status.

        Example::

            await channel.aclose()
            print("child exited with", channel.returncode)
        """
        if self._closed:
            if not self._reaped.is_set():
                with trio.CancelScope(shield=True):
                    await self._reaped.wait()
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        # Closing first gives the child its best chance of a clean exit (as QEMU does).
        # Both close before any checkpoint: a task blocked in receive_some must see
        # ClosedResourceError, not the EOF that the child exiting would produce.
        for stream in (self._stdout, self._stdin):
            if isinstance(stream, trio.lowlevel.FdStream):
                stream.close()
            elif stream is not None:  # pragma: no cover - POSIX pipes are FdStreams
                with trio.CancelScope(shield=True):
                    await stream.aclose()
        try:
            with trio.move_on_after(self.close_timeout):
                await self._process.wait()
        finally:
            # Runs on timeout and on cancellation alike: never leave the child unreaped.
            with trio.CancelScope(shield=True):
                await self._abort()
                if enabled():
                    emit(
                        "qio_channel_command_wait",
                        ioc=self.name,
                        pid=self.pid,
                        ret=0,
                        status=self.returncode,
                    )
                self._reaped.set()

    async def _abort(self) -> None:
        # QEMU qio_channel_command_abort: WNOHANG check, SIGTERM, wait, SIGKILL, wait.
        if self._process.poll() is not None:
            return
        if enabled():
            emit("qio_channel_command_abort", ioc=self.name, pid=self.pid)
        self._process.terminate()
        with trio.move_on_after(self.terminate_timeout):
            await self._process.wait()
            return
        self._process.kill()
        # SIGKILL cannot be caught or ignored; the wait ends as soon as the kernel is done.
        await self._process.wait()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<trioqio.CommandChannel {self.name!r} mode={self.mode} {state}>"


async def open_command(
    argv: Sequence[str | os.PathLike[str]],
    mode: CommandMode = "rw",
    *,
    close_timeout: float = 10.0,
    terminate_timeout: float = 1.0,
    name: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    stderr: int | None = None,
) -> CommandChannel:
    """Spawn ``argv`` and return a channel to its stdin/stdout (QEMU ``new_spawn``).

    Args:
        argv: the program and its arguments (looked up in ``PATH``).
        mode: "rw" (pipes to stdin and from stdout), "r" (stdout pipe only, stdin from
            ``/dev/null``) or "w" (stdin pipe only, stdout to ``/dev/null``). QEMU spells
            these ``O_RDWR``, ``O_RDONLY``, ``O_WRONLY``.
        close_timeout: how long :meth:`CommandChannel.aclose` waits for the child to exit
            on its own before SIGTERM.
        terminate_timeout: how long after SIGTERM before SIGKILL.
        name: a name for errors and traces.
        cwd: the child's working directory (default: ours).
        env: the child's environment (default: ours).
        stderr: where the child's stderr goes: None (default) inherits ours, or
            ``subprocess.DEVNULL``, ``subprocess.STDOUT`` or an fd.

    Returns:
        The channel; close it with ``aclose`` (or ``async with``).

    Raises:
        FileNotFoundError: the program does not exist (the message names it); no child
            is left behind.
        ValueError: ``argv`` is empty or ``mode`` is not one of the three.

    Example::

        async with await trioqio.open_command(["cat"]) as channel:
            await channel.send_all(b"ping")
            assert await channel.receive_exactly(4) == b"ping"
    """
    if isinstance(argv, (str, bytes)):
        raise TypeError("argv must be a sequence of arguments, not a string")
    args = [os.fspath(arg) for arg in argv]
    if not args:
        raise ValueError("argv is empty: no program to run")
    if mode not in ("r", "w", "rw"):
        raise ValueError(f"mode must be 'r', 'w' or 'rw', got {mode!r}")
    if enabled():
        emit("qio_channel_command_new_spawn", binary=args[0], flags=mode)
    stdin = subprocess.PIPE if "w" in mode else subprocess.DEVNULL
    stdout = subprocess.PIPE if "r" in mode else subprocess.DEVNULL
    try:
        process = await trio.lowlevel.open_process(
            args,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=env,
        )
    except FileNotFoundError as exc:
        if exc.filename is None:
            raise
        raise FileNotFoundError(
            exc.errno, f"cannot run command {args[0]!r}: {exc.strerror}", args[0]
        ) from exc
    channel = CommandChannel(
        process,
        args,
        mode,
        close_timeout=close_timeout,
        terminate_timeout=terminate_timeout,
        name=name,
    )
    if enabled():
        emit(
            "qio_channel_command_new_pid",
            ioc=channel.name,
            writefd=_fileno(process.stdin),
            readfd=_fileno(process.stdout),
            pid=process.pid,
        )
    return channel


def _fileno(stream: object) -> int:
    # Trio types Process.stdin/stdout as plain streams; on POSIX they are FdStreams.
    return stream.fileno() if isinstance(stream, trio.lowlevel.FdStream) else -1
