"""Public helpers for testing trioqio channels and code built on them.

Example::

    from trioqio.testing import MemoryListener, check_channel, run_data_test
"""

from ._conformance import DATA_CHUNK_SIZE as DATA_CHUNK_SIZE
from ._conformance import DATA_CHUNKS as DATA_CHUNKS
from ._conformance import check_channel as check_channel
from ._conformance import check_one_way_channel as check_one_way_channel
from ._conformance import conformance_tests as conformance_tests
from ._conformance import data_test_buffers as data_test_buffers
from ._conformance import run_data_test as run_data_test
from ._fakes import StallingChannel as StallingChannel
from ._memory_listener import MemoryListener as MemoryListener
from ._memory_listener import MemoryStream as MemoryStream
from ._migration import CorruptingChannel as CorruptingChannel
from ._migration import HoldingChannel as HoldingChannel
from ._proxy import Fault as Fault
from ._proxy import FaultProxy as FaultProxy
from ._standalone import check_standalone_channel as check_standalone_channel

__all__ = (
    "DATA_CHUNKS",
    "DATA_CHUNK_SIZE",
    "CorruptingChannel",
    "Fault",
    "FaultProxy",
    "HoldingChannel",
    "MemoryListener",
    "MemoryStream",
    "StallingChannel",
    "check_channel",
    "check_one_way_channel",
    "conformance_tests",
    "check_standalone_channel",
    "data_test_buffers",
    "run_data_test",
)
