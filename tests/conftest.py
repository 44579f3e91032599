"""Shared test fixtures: leak checks that make a leaked fd or thread fail the test."""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Iterator

import pytest
import trio
import trio.testing


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


@pytest.fixture(autouse=True)
def no_fd_leak() -> Iterator[None]:
    """Fail a test that leaves a file descriptor open that it did not find."""
    gc.collect()
    before = _open_fds()
    yield
    gc.collect()
    leaked = set()
    for fd in _open_fds() - before:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (e.g. the listdir's own fd)
        leaked.add((fd, target))
    assert not leaked, f"test leaked file descriptors: {sorted(leaked)}"


@pytest.fixture
async def no_threads_left() -> AsyncIterator[None]:
    """Fail a test that leaves a worker thread running (abandoned ones included)."""
    yield
    with trio.fail_after(10):
        await trio.testing.wait_all_threads_completed()
    assert trio.testing.active_thread_count() == 0
