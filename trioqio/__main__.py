"""``python -m trioqio``: the ``trioqio`` command (see :mod:`trioqio._cli`)."""

from ._cli import main

raise SystemExit(main())
