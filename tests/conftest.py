"""Shared test configuration.

The leak checks (a leaked file descriptor or a worker thread left running fails the
test) come from trioqio's own pytest plugin, ``pytest_trioqio`` (``trioqio_leak_check =
true`` in pyproject.toml), so every run of this suite exercises it.
"""

from __future__ import annotations

import os

import pytest

# The stress suite (tests/stress/) runs only through `nox -s stress` / `stress_ci`, which
# set TRIOQIO_STRESS; a plain `pytest` run stays quick.
collect_ignore = [] if os.environ.get("TRIOQIO_STRESS") else ["stress"]


@pytest.fixture
def no_threads_left(_trioqio_leak_check: None) -> None:
    """The plugin's leak check, for the tests that name it (it runs for every test here)."""
