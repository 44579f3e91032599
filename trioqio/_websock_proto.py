"""Sans-IO websocket server handshake (QEMU ``io/channel-websock.c``).

This module holds QEMU's rules and nothing that does I/O, so every rule is tested on bytes:

- :class:`RequestReader` collects the HTTP upgrade request (at most 4,096 bytes, as QEMU's
  ``handshake_io``) and hands the header block to :func:`process_request`;
- :func:`process_request` validates it in QEMU's order (greeting, method, version
  delimiter, path, version, header lines, required headers, then protocol, version, key,
  Connection and Upgrade values) and builds QEMU's reply: 101 with the
  ``Sec-WebSocket-Accept`` value, or 400/403/404 with ``Connection: close``.

The frames that follow the handshake are :mod:`trioqio._websock_frames`'s business.

Differences from QEMU: the ``Server:`` header says ``trioqio`` (QEMU: ``QEMU VNC``); every
error reply ends with the blank line (QEMU's 400 template omits it); the greeting is
searched like QEMU's ``strchr`` on the whole header block, so the outcome for odd input is
the same.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import typing

import attrs

__all__ = [
    "MAX_HANDSHAKE_BYTES",
    "MAX_HEADERS",
    "HandshakeOutcome",
    "RequestReader",
    "accept_key",
    "process_request",
]

#: The request must end (``\r\n\r\n``) within this many bytes (QEMU: 4096).
MAX_HANDSHAKE_BYTES = 4096
#: At most this many header lines (QEMU: 32).
MAX_HEADERS = 32
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_END = b"\r\n\r\n"
_STATUS_TEXT = {
    101: "Switching Protocols",
    400: "Bad Request",
    403: "Request Entity Too Large",  # QEMU's wording, kept
    404: "Not Found",
    500: "Internal Server Error",
}


@typing.final
@attrs.frozen(kw_only=True)
class HandshakeOutcome:
    """The result of reading an upgrade request: the reply to send and what it means.

    Attributes:
        status: the HTTP status of ``reply`` (101 on success).
        error: why the request was refused, or None on success.
        reply: the complete HTTP response to send.
        leftover: bytes after the request's blank line (the first websocket frames).
        protocol: True when the client sent ``Sec-WebSocket-Protocol`` (and it is echoed).
    """

    status: int
    error: str | None
    reply: bytes
    leftover: bytes = b""
    protocol: bool = False

    @property
    def ok(self) -> bool:
        """True for a 101 reply."""
        return self.status == 101


def accept_key(key: str) -> str:
    """Return the ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key``.

    Args:
        key: the client's key, as sent.

    Returns:
        base64(SHA-1(key + the RFC 6455 GUID)).

    Example::

        accept_key("dGhlIHNhbXBsZSBub25jZQ==")  # 's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
    """
    digest = hashlib.sha1((key + _GUID).encode("latin-1"), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


def _head(status: int, date: str) -> list[str]:
    return [f"HTTP/1.1 {status} {_STATUS_TEXT[status]}", "Server: trioqio", f"Date: {date}"]


def _error(status: int, message: str, date: str, leftover: bytes = b"") -> HandshakeOutcome:
    lines = [*_head(status, date), "Connection: close"]
    if status == 400:
        lines.append("Sec-WebSocket-Version: 13")
    reply = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return HandshakeOutcome(status=status, error=message, reply=reply, leftover=leftover)


def _http_date(now: float | None) -> str:
    return email.utils.formatdate(now, usegmt=True)


def _extract_headers(text: str) -> dict[str, str] | str:
    """Parse ``Name: value`` lines; the first occurrence of a name wins (QEMU)."""
    headers: dict[str, str] = {}
    for count, line in enumerate(text.split("\r\n")):
        if count == MAX_HEADERS:
            return "Too many HTTP headers"
        name, sep, value = line.partition(":")
        if not sep:
            return "Malformed HTTP header"
        headers.setdefault(name.lower(), value.lstrip(" "))
    return headers


def _connection_upgrade(value: str) -> bool:
    return any(token.strip().lower() == "upgrade" for token in value.split(","))


def process_request(head: bytes, *, now: float | None = None) -> HandshakeOutcome:
    """Validate an upgrade request (without its final blank line) and build the reply.

    The first failing rule decides, in QEMU's order. QEMU:
    ``qio_channel_websock_handshake_process`` and ``..._send_res_ok``/``_send_res_err``.

    Args:
        head: the request bytes before ``\\r\\n\\r\\n``.
        now: the time for the ``Date`` header (default: now).

    Returns:
        The outcome; never raises for any input bytes.

    Example::

        outcome = process_request(b"GET / HTTP/1.0\\r\\nx: y")
        assert outcome.status == 400
    """
    date = _http_date(now)
    text = head.decode("latin-1")
    method, sep, rest = text.partition(" ")
    if not sep:
        return _error(400, "Missing HTTP path delimiter", date)
    if method != "GET":
        return _error(400, f"Unsupported HTTP method {method[:40]!r}", date)
    path, sep, rest = rest.partition(" ")
    if not sep:
        return _error(400, "Missing HTTP version delimiter", date)
    version, sep, header_text = rest.partition("\r\n")
    if not sep:
        return _error(400, "Missing HTTP header delimiter", date)
    if path != "/":
        return _error(404, f"Unexpected HTTP path {path[:80]!r}", date)
    if version != "HTTP/1.1":
        return _error(400, f"Unsupported HTTP version {version[:40]!r}", date)
    headers = _extract_headers(header_text)
    if isinstance(headers, str):
        return _error(400, headers, date)
    protocols = headers.get("sec-websocket-protocol")
    for name, what in (
        ("sec-websocket-version", "version"),
        ("sec-websocket-key", "key"),
        ("host", "host"),
        ("connection", "connection"),
        ("upgrade", "upgrade"),
    ):
        if name not in headers:
            return _error(400, f"Missing websocket {what} header", date)
    if protocols is not None and "binary" not in protocols:
        return _error(400, f"No 'binary' protocol is supported by client {protocols[:80]!r}", date)
    if headers["sec-websocket-version"] != "13":
        version_value = headers["sec-websocket-version"][:40]
        return _error(400, f"Version {version_value!r} is not supported", date)
    key = headers["sec-websocket-key"]
    if len(key) != 24:
        return _error(400, f"Key length {len(key)} was not as expected 24", date)
    if not _connection_upgrade(headers["connection"]):
        value = headers["connection"][:80]
        return _error(400, f"No connection upgrade requested {value!r}", date)
    if headers["upgrade"].lower() != "websocket":
        return _error(400, f"Incorrect upgrade method {headers['upgrade'][:80]!r}", date)
    lines = [
        *_head(101, date),
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
    ]
    if protocols is not None:
        lines.append("Sec-WebSocket-Protocol: binary")
    reply = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return HandshakeOutcome(status=101, error=None, reply=reply, protocol=protocols is not None)


@typing.final
class RequestReader:
    """Collect request bytes until the blank line, or refuse after 4,096 bytes.

    QEMU: ``qio_channel_websock_handshake_io`` (reading part).

    Example::

        reader = RequestReader()
        while (outcome := reader.feed(await channel.receive_some(reader.room))) is None:
            pass
    """

    def __init__(self, *, now: float | None = None) -> None:
        self._buffer = bytearray()
        self._now = now

    @property
    def room(self) -> int:
        """How many more bytes the request may have (read at most this many)."""
        return max(MAX_HANDSHAKE_BYTES - len(self._buffer), 1)

    @property
    def buffered(self) -> int:
        """How many request bytes have arrived."""
        return len(self._buffer)

    def feed(self, data: bytes) -> HandshakeOutcome | None:
        """Add received bytes; return the outcome once the request is complete or too big.

        Args:
            data: the next bytes (not empty; see :meth:`eof_error` for end of file).

        Returns:
            None while more bytes are needed, else the outcome.

        Example::

            outcome = RequestReader().feed(b"GET / HTTP/1.1\\r\\n\\r\\n")
        """
        # Only the new bytes (and three before them) can complete the terminator.
        start = max(len(self._buffer) - 3, 0)
        self._buffer += data
        end = self._buffer.find(_END, start, MAX_HANDSHAKE_BYTES)
        if end < 0:
            if len(self._buffer) >= MAX_HANDSHAKE_BYTES:
                return _error(
                    403,
                    f"End of headers not found in first {MAX_HANDSHAKE_BYTES} bytes",
                    _http_date(self._now),
                )
            return None
        outcome = process_request(bytes(self._buffer[:end]), now=self._now)
        return attrs.evolve(outcome, leftover=bytes(self._buffer[end + len(_END) :]))

    @staticmethod
    def eof_error() -> str:
        """Return the error for a peer that closed before the request ended (no reply)."""
        return "End of headers not found before connection closed"
