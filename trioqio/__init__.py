"""trioqio: QEMU's io/ subsystem (QIOTask, QIONetListener, QIOChannel) on Trio.

Every public name is re-exported here; see ``shared/design/api.md`` for the contract.
"""

from . import abc as abc
from . import trace as trace
from ._abc import ChannelFeature as ChannelFeature
from ._abc import Shutdown as Shutdown
from ._address import FdAddress as FdAddress
from ._address import InetAddress as InetAddress
from ._address import SocketAddress as SocketAddress
from ._address import UnixAddress as UnixAddress
from ._address import VsockAddress as VsockAddress
from ._address import address_from_sockaddr as address_from_sockaddr
from ._address import as_address as as_address
from ._address import parse_address as parse_address
from ._channel_buffer import BufferChannel as BufferChannel
from ._channel_command import CommandChannel as CommandChannel
from ._channel_command import open_command as open_command
from ._channel_file import FileChannel as FileChannel
from ._channel_file import open_file as open_file
from ._channel_null import NullChannel as NullChannel
from ._channel_socket import SocketChannel as SocketChannel
from ._channel_socket import SocketChannelListener as SocketChannelListener
from ._channel_tls import TLSChannel as TLSChannel
from ._channel_util import channel_from_fd as channel_from_fd
from ._channel_websock import WebsockChannel as WebsockChannel
from ._connect import connect as connect
from ._connect import connect_task as connect_task
from ._dns import resolve as resolve
from ._dns import resolve_task as resolve_task
from ._errors import AddressError as AddressError
from ._errors import HandshakeError as HandshakeError
from ._errors import MigrationError as MigrationError
from ._errors import QIOError as QIOError
from ._errors import TaskCancelled as TaskCancelled
from ._errors import TaskError as TaskError
from ._errors import UnexpectedEOF as UnexpectedEOF
from ._errors import UnsupportedFeature as UnsupportedFeature
from ._errors import WebsockProtocolError as WebsockProtocolError
from ._listener import AnyClientHandler as AnyClientHandler
from ._listener import ClientHandler as ClientHandler
from ._listener import HandlerErrorPolicy as HandlerErrorPolicy
from ._listener import ListenerStatistics as ListenerStatistics
from ._listener import NetListener as NetListener
from ._listener import ShutdownReport as ShutdownReport
from ._listener import serve as serve
from ._socket_util import systemd_listen_fds as systemd_listen_fds
from ._task import CompletionCallback as CompletionCallback
from ._task import ProgressCallback as ProgressCallback
from ._task import Task as Task
from ._task import run_in_thread as run_in_thread
from ._tls_acl import TLSAcl as TLSAcl
from ._version import __version__ as __version__

__all__ = (
    "AddressError",
    "AnyClientHandler",
    "BufferChannel",
    "ChannelFeature",
    "ClientHandler",
    "CommandChannel",
    "CompletionCallback",
    "FdAddress",
    "FileChannel",
    "HandlerErrorPolicy",
    "HandshakeError",
    "InetAddress",
    "ListenerStatistics",
    "MigrationError",
    "NetListener",
    "NullChannel",
    "ProgressCallback",
    "QIOError",
    "Shutdown",
    "ShutdownReport",
    "SocketAddress",
    "SocketChannel",
    "SocketChannelListener",
    "TLSAcl",
    "TLSChannel",
    "Task",
    "TaskCancelled",
    "TaskError",
    "UnexpectedEOF",
    "UnixAddress",
    "UnsupportedFeature",
    "VsockAddress",
    "WebsockChannel",
    "WebsockProtocolError",
    "__version__",
    "abc",
    "address_from_sockaddr",
    "as_address",
    "channel_from_fd",
    "connect",
    "connect_task",
    "open_command",
    "open_file",
    "parse_address",
    "resolve",
    "resolve_task",
    "run_in_thread",
    "serve",
    "systemd_listen_fds",
    "trace",
)


def _fixup_module_metadata() -> None:
    # Public classes and functions name the module users import them from, in tracebacks
    # ("trioqio.UnexpectedEOF: ..."), reprs, pickles and help(), as trio's
    # fixup_module_metadata does. Enums keep their defining module: neither their repr nor
    # their pickles show it, and autodoc reads their members' ``#:`` comments through it.
    import enum
    import types

    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, types.GenericAlias) or not isinstance(obj, type | types.FunctionType):
            continue  # aliases, constants and modules
        if isinstance(obj, type) and issubclass(obj, enum.Enum):
            continue
        if obj.__module__.startswith("trioqio._"):
            obj.__module__ = "trioqio"


_fixup_module_metadata()
del _fixup_module_metadata
