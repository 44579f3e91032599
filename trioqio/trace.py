"""Trace events named after QEMU's ``io/trace-events`` (public hook).

:data:`EVENTS` declares every event trioqio can emit, with its fields, in QEMU's order.

Example::

    import trioqio

    with trioqio.trace.subscribed(lambda event: print(event)):
        ...
"""

from ._trace import EVENTS as EVENTS
from ._trace import TraceEvent as TraceEvent
from ._trace import emit as emit
from ._trace import enabled as enabled
from ._trace import subscribe as subscribe
from ._trace import subscribed as subscribed

__all__ = ("EVENTS", "TraceEvent", "emit", "enabled", "subscribe", "subscribed")
