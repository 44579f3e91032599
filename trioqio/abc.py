"""Public abstract base classes.

Example::

    class MyChannel(trioqio.abc.Channel): ...
"""

from ._abc import Channel as Channel

__all__ = ("Channel",)
