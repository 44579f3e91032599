"""trioqio's pytest plugin: fixtures and a leak check for testing Trio servers and channels.

Registered through the ``pytest11`` entry point when trioqio is installed, and inert until
a test asks for one of its fixtures or markers: this module imports only the standard
library and pytest; trio, trioqio and trustme are imported by the fixture that needs them.
The fixtures are built on pytest-trio (``pip install 'trioqio[testing]'``): the async ones
run in the test's Trio run, so they need a Trio test (``trio_mode = true`` or
``@pytest.mark.trio``).

Fixtures:

- ``net_listener``: an entered :class:`trioqio.NetListener` listening on
  ``tcp:127.0.0.1:0`` (or the addresses of a ``@pytest.mark.net_listener(*addresses,
  **options)`` marker), closed at teardown.
- ``memory_listener``: a :class:`trioqio.testing.MemoryListener` (its ``connect()`` is the
  client side), for servers tested without kernel sockets; closed at teardown.
- ``fault_proxy``: ``await fault_proxy(target, **faults)`` starts a
  :class:`trioqio.testing.FaultProxy` in front of ``target``; every one is closed at
  teardown.
- ``tls_pair``: a trustme CA with server and client certificates and ready
  :class:`ssl.SSLContext`\\ s (:class:`TLSPair`).

The leak check (``@pytest.mark.trioqio_leak_check``, or ``trioqio_leak_check = true`` in
the ini file for a whole suite; ``@pytest.mark.trioqio_leak_check(False)`` exempts one
test) fails a test that leaves a file descriptor open that it did not find, or a worker
thread running (Trio's idle cached threads are not counted), naming what leaked.

Example::

    @pytest.mark.trioqio_leak_check
    async def test_echo(net_listener: trioqio.NetListener) -> None:
        net_listener.set_client_func(echo)
        stream = await trioqio.connect(net_listener.addresses[0])
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import ssl

    import trustme

    import trioqio
    import trioqio.testing

__all__ = ["TLSPair"]

_LEAK_CHECK = "_trioqio_leak_check"
_TRIO_FIXTURES = ("fault_proxy", "memory_listener", "net_listener")
_DEFAULT_THREAD_WAIT = 10.0


# -- configuration ---------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "trioqio_leak_check",
        "fail every test that leaks a file descriptor or leaves a worker thread running",
        type="bool",
        default=False,
    )
    parser.addini(
        "trioqio_leak_check_thread_wait",
        "seconds the leak check waits for worker threads to end (default 10)",
        default=str(_DEFAULT_THREAD_WAIT),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "trioqio_leak_check(enabled=True): fail the test if it leaks a file descriptor or "
        "leaves a worker thread running (False exempts it from a suite-wide check)",
    )
    config.addinivalue_line(
        "markers",
        "net_listener(*addresses, **options): what the net_listener fixture listens on "
        "(default tcp:127.0.0.1:0) and the NetListener options",
    )


def _leak_check_wanted(item: pytest.Item) -> bool:
    marker = item.get_closest_marker("trioqio_leak_check")
    if marker is None:
        return bool(item.config.getini("trioqio_leak_check"))
    enabled = marker.kwargs.get("enabled", marker.args[0] if marker.args else True)
    return bool(enabled)


def _first_function_scoped(item: pytest.Item, names: list[str]) -> int:
    # Fixtures of a wider scope (module, session) are set up first and outlive the test;
    # what they hold is not the test's leak, so the check starts after them.
    definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    for index, name in enumerate(names):
        chain = definitions.get(name)
        if not chain or chain[-1].scope == "function":
            return index
    return len(names)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names: list[str] | None = getattr(item, "fixturenames", None)
        if names is not None and _LEAK_CHECK not in names and _leak_check_wanted(item):
            # First in, last out among the test's own fixtures: the check brackets their
            # setup and teardown, so a resource a fixture closes at teardown is no leak.
            names.insert(_first_function_scoped(item, names), _LEAK_CHECK)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    used = [name for name in _TRIO_FIXTURES if name in getattr(item, "fixturenames", ())]
    if used and item.get_closest_marker("trio") is None:
        have_trio = item.config.pluginmanager.has_plugin("trio")
        hint = (
            "mark it @pytest.mark.trio or set trio_mode = true in the pytest configuration"
            if have_trio
            else "install pytest-trio (pip install 'trioqio[testing]') and set trio_mode = true"
        )
        pytest.fail(
            f"{item.nodeid}: the trioqio fixture {used[0]!r} runs in the test's Trio run, "
            f"so it needs an async Trio test: {hint}",
            pytrace=False,
        )


def _trio_fixture(func: Callable[..., Any]) -> Callable[..., Any]:
    # pytest-trio treats a fixture with this attribute as a Trio fixture even without
    # trio_mode (what its own @trio_fixture decorator sets), so that it also works in
    # suites that mark Trio tests one by one.
    func._force_trio_fixture = True  # type: ignore[attr-defined]  # pytest-trio's flag
    return func


# -- the leak check --------------------------------------------------------------------------


def _open_fds() -> dict[int, str]:
    found: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile (the listdir's own fd)
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return found


def _busy_threads(ignore: set[int]) -> list[threading.Thread]:
    # Trio's thread cache keeps idle workers named "Trio thread N"; a worker running a
    # job carries the job's name instead. Anything else new is a thread the test started.
    main = threading.main_thread()
    return [
        thread
        for thread in threading.enumerate()
        if thread is not main
        and not thread.name.startswith("Trio thread ")
        and thread.ident not in ignore
    ]


@pytest.fixture
def _trioqio_leak_check(request: pytest.FixtureRequest) -> Iterator[None]:
    gc.collect()
    fds_before = _open_fds()
    threads_before = {t.ident for t in _busy_threads(set()) if t.ident is not None}
    yield
    wait = float(request.config.getini("trioqio_leak_check_thread_wait"))
    deadline = time.monotonic() + wait
    while (busy := _busy_threads(threads_before)) and time.monotonic() < deadline:
        time.sleep(0.005)
    gc.collect()
    leaked = {fd: target for fd, target in _open_fds().items() if fd not in fds_before}
    problems: list[str] = []
    if leaked:
        listed = ", ".join(f"fd {fd} -> {target}" for fd, target in sorted(leaked.items()))
        problems.append(f"left {len(leaked)} file descriptor(s) open: {listed}")
    if busy:
        names = ", ".join(repr(thread.name) for thread in busy)
        problems.append(f"left {len(busy)} thread(s) running after {wait:g} s: {names}")
    if problems:
        pytest.fail(f"trioqio leak check: the test {'; '.join(problems)}", pytrace=False)


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
@_trio_fixture
async def net_listener(request: pytest.FixtureRequest) -> AsyncIterator[trioqio.NetListener]:
    """An entered NetListener on ``tcp:127.0.0.1:0`` (or the ``net_listener`` marker's)."""
    import trioqio

    marker = request.node.get_closest_marker("net_listener")
    addresses: tuple[Any, ...] = ("tcp:127.0.0.1:0",)
    options: dict[str, Any] = {}
    if marker is not None:
        addresses = marker.args or addresses
        options = dict(marker.kwargs)
    async with trioqio.NetListener(**options) as listener:
        for address in addresses:
            await listener.open(address)
        yield listener


@pytest.fixture
@_trio_fixture
async def memory_listener() -> AsyncIterator[trioqio.testing.MemoryListener]:
    """An in-memory listener: ``await memory_listener.connect()`` is a client."""
    from trioqio.testing import MemoryListener

    listener = MemoryListener()
    try:
        yield listener
    finally:
        await listener.aclose()


@pytest.fixture
@_trio_fixture
async def fault_proxy() -> AsyncIterator[Callable[..., Awaitable[trioqio.testing.FaultProxy]]]:
    """``await fault_proxy(target, **faults)``: a FaultProxy in front of ``target``."""
    import trio

    from trioqio.testing import FaultProxy

    async def run(
        target: Any, faults: dict[str, Any], *, task_status: trio.TaskStatus[FaultProxy]
    ) -> None:
        async with FaultProxy(target, **faults) as proxy:
            task_status.started(proxy)
            await trio.sleep_forever()

    # Each proxy's nursery lives in this fixture's task, not the test's, so the test may
    # start one anywhere and teardown closes them all in order.
    async with trio.open_nursery() as nursery:

        async def start(target: Any, **faults: Any) -> FaultProxy:
            proxy: FaultProxy = await nursery.start(run, target, faults)
            return proxy

        yield start
        nursery.cancel_scope.cancel()


@dataclasses.dataclass(frozen=True)
class TLSPair:
    """A throwaway CA with a server and two client identities (the ``tls_pair`` fixture).

    Attributes:
        ca: the trustme CA that signed everything.
        hostname: the name the server certificate carries (also ``127.0.0.1``, ``::1``).
        server_context: a server context with the server certificate, trusting ``ca``
            for client certificates (asked for, not required).
        client_context: a client context trusting ``ca``, presenting ``client_dn``.
        client_dn: the client certificate's DN in QEMU's layout, for a ``TLSAcl``.
        refused_client_context: the same with another certificate, ``refused_dn``.
        refused_dn: a DN an ACL of ``[client_dn]`` refuses.
    """

    ca: trustme.CA
    hostname: str
    server_context: ssl.SSLContext
    client_context: ssl.SSLContext
    client_dn: str
    refused_client_context: ssl.SSLContext
    refused_dn: str


def _dn_of(cert: trustme.LeafCert) -> str:
    from cryptography import x509

    subject = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes()).subject
    return ",".join(
        "+".join(f"{attr.rfc4514_attribute_name}={attr.value!s}" for attr in rdn)
        for rdn in subject.rdns
    )


def _client_context(ca: trustme.CA, cert: trustme.LeafCert) -> ssl.SSLContext:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    cert.configure_cert(context)
    return context


@pytest.fixture
def tls_pair() -> TLSPair:
    """A trustme CA, a server certificate and two client certificates, as SSL contexts."""
    import ssl

    try:
        import trustme
    except ImportError:  # pragma: no cover - the testing extra brings it
        pytest.fail("the tls_pair fixture needs trustme: pip install 'trioqio[testing]'")
    ca = trustme.CA(organization_name="trioqio-test")
    server = ca.issue_cert("localhost", "127.0.0.1", "::1", common_name="localhost")
    # Each client certificate names itself in its subjectAltName too: Python 3.13's
    # default contexts (VERIFY_X509_STRICT) refuse one whose SAN extension is empty.
    allowed = ca.issue_cert(
        "client-allowed.trioqio.test",
        organization_name="trioqio-test",
        common_name="client-allowed",
    )
    refused = ca.issue_cert(
        "client-refused.trioqio.test",
        organization_name="trioqio-test",
        common_name="client-refused",
    )
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(server_context)
    ca.configure_trust(server_context)
    server_context.verify_mode = ssl.CERT_OPTIONAL
    return TLSPair(
        ca=ca,
        hostname="localhost",
        server_context=server_context,
        client_context=_client_context(ca, allowed),
        client_dn=_dn_of(allowed),
        refused_client_context=_client_context(ca, refused),
        refused_dn=_dn_of(refused),
    )
