"""Real peers: OpenSSL, GnuTLS, Chromium and QEMU 7.2 against trioqio (issue 19).

These tests start real programs, so they run only through ``nox -s interop`` (which sets
``TRIOQIO_INTEROP=1`` and installs the programs where it can); a plain ``pytest`` run
leaves this directory out. Each test skips, naming the program, where that program is
missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ._certs import Credentials, make_credentials

collect_ignore_glob = [] if os.environ.get("TRIOQIO_INTEROP") else ["test_*.py"]


def need(program: str, package: str) -> str:
    """Return the path of ``program``, or skip the test saying which package gives it."""
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} not found (Debian: apt-get install {package})")
    return path


# Skips belong in synchronous fixtures: raised inside a Trio test, pytest-trio loses the
# reason on the way out.
_TOOLS = {
    "openssl": [("openssl", "openssl")],
    "gnutls": [("gnutls-cli", "gnutls-bin"), ("gnutls-serv", "gnutls-bin")],
}


@pytest.fixture
def peer_tool(request: pytest.FixtureRequest) -> None:
    """Skip the case when the program its ``tool`` parameter names is missing."""
    for program, package in _TOOLS[request.node.callspec.params["tool"]]:
        need(program, package)


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> str:
    """Chromium's path (and for a ``wss`` case, certutil's presence), or skip."""
    path = need("chromium", "chromium")
    if request.node.callspec.params.get("serve") == "wss":
        need("certutil", "libnss3-tools")
    return path


@pytest.fixture(scope="session")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    """A CA, a server certificate and two client certificates (admitted, refused)."""
    return make_credentials(Path(tmp_path_factory.mktemp("creds")))
