"""Blocking file helpers for :class:`~trioqio.FileChannel` (QEMU ``io/channel-file.c``).

QEMU's ``qio_channel_file_readv``/``writev`` and ``qio_channel_file_new_path`` call
``readv``/``writev``/``open`` on the descriptor directly. Here those calls run in worker
threads (regular files and block devices cannot be polled), so this module holds what a
worker thread runs: whole-buffer reads and writes with errors translated to Trio's
``BrokenResourceError``, and an ``open(2)`` that may be abandoned on cancellation.

Differences from QEMU: an abandoned open closes the descriptor it eventually gets, instead
of blocking the caller until the FIFO's peer shows up.
"""

from __future__ import annotations

import os
import threading

import trio

__all__ = ["access_mode", "open_abandonable", "pwrite_all", "read_fd", "write_all_fd"]


def broken(exc: OSError, what: str) -> trio.BrokenResourceError:
    """A BrokenResourceError saying ``what`` failed, caused by ``exc``."""
    error = trio.BrokenResourceError(f"{what}: {exc.strerror or exc}")
    error.__cause__ = exc
    return error


def access_mode(fd: int) -> int:
    """The ``O_ACCMODE`` bits ``fd`` was opened with."""
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE


def read_fd(fd: int, n: int, what: str) -> bytes:
    """Read up to ``n`` bytes from ``fd`` (run in a worker thread)."""
    while True:
        try:
            return os.read(fd, n)
        except InterruptedError:  # pragma: no cover - Python retries EINTR itself
            continue
        except OSError as exc:
            raise broken(exc, what) from exc


def write_all_fd(fd: int, data: memoryview, what: str) -> None:
    """Write all of ``data`` to ``fd`` (run in a worker thread)."""
    done = 0
    while done < len(data):
        try:
            done += os.write(fd, data[done:])
        except OSError as exc:
            raise broken(exc, what) from exc


def pwrite_all(fd: int, data: memoryview, offset: int) -> int:
    """Write all of ``data`` at ``offset``; return the count (run in a worker thread)."""
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)
    return done


class _OpenState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.abandoned = False
        self.fd = -1


async def open_abandonable(path: str, flags: int, mode: int) -> int:
    """``os.open`` in a worker thread that cancellation may abandon without a leak."""
    # Whoever comes second (the thread finishing after the Trio side gave up, or the Trio
    # side giving up after the thread handed the fd over) closes the fd.
    state = _OpenState()

    def worker() -> int:
        fd = os.open(path, flags, mode)
        with state.lock:
            if state.abandoned:
                os.close(fd)
                return -1
            state.fd = fd
        return fd

    try:
        return await trio.to_thread.run_sync(worker, abandon_on_cancel=True)
    except BaseException:
        with state.lock:
            state.abandoned = True
            fd, state.fd = state.fd, -1
        if fd >= 0:
            os.close(fd)
        raise
