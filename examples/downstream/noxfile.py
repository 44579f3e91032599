"""The echo service's test matrix: Python 3.10-3.13 x the oldest and the newest Trio.

trioqio is installed from ``TRIOQIO_SOURCE`` (a path or a requirement; default: the
trioqio checkout two directories up, as in trioqio's own ``nox -s examples``).
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.reuse_existing_virtualenvs = True

HERE = Path(__file__).parent
TRIOQIO = os.environ.get("TRIOQIO_SOURCE", str(HERE.parent.parent))
OLDEST_TRIO = "0.25.1"


@nox.session(python=["3.10", "3.11", "3.12", "3.13"])
@nox.parametrize("trio", [OLDEST_TRIO, "newest"])
def tests(session: nox.Session, trio: str) -> None:
    """Run the echo service's tests with trioqio's pytest plugin."""
    source = f"{TRIOQIO}[testing]" if Path(TRIOQIO).exists() else TRIOQIO
    session.install(source, f"{HERE}[test]")
    if trio == "newest":
        session.install("--upgrade", "trio")
    else:
        session.install(f"trio=={trio}")
    session.run("pytest", *session.posargs)
