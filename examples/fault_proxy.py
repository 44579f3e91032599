"""trioqio.testing.FaultProxy: a migration-style stream through latency, a cut and a reset.

Runs on loopback only, in well under a second: an echo NetListener, a FaultProxy in front
of it, and three clients that see the proxy's faults.
"""

from __future__ import annotations

import trio

import trioqio
from trioqio.testing import Fault, FaultProxy


async def echo(channel: trioqio.SocketChannel) -> None:
    try:
        while data := await channel.receive_some():
            await channel.send_all(data)
    except trio.BrokenResourceError:
        pass  # the proxy reset us: the listener keeps serving the others


async def exchange(address: str, payload: bytes) -> str:
    channel = await trioqio.connect(address)
    try:
        await channel.send_all(payload)
        got = b""
        while len(got) < len(payload):
            chunk = await channel.receive_some()
            if not chunk:
                return f"EOF after {len(got)} bytes"
            got += chunk
        return f"all {len(got)} bytes echoed"
    except trio.BrokenResourceError as exc:
        return f"reset: {exc}"
    finally:
        await channel.aclose()


async def main() -> None:
    async with trioqio.NetListener(name="echo") as listener:
        await listener.open("tcp:127.0.0.1:0")
        listener.set_client_func(echo)
        target = listener.addresses[0]
        payload = bytes(200_000)
        faults = {
            "20 ms latency": Fault(delay=0.02),
            "cut after 1000 bytes": Fault(cut_after=1000),
            "reset after 1000 bytes": Fault(reset_after=1000),
        }
        for label, fault in faults.items():
            async with FaultProxy(target, to_client=fault) as proxy:
                with trio.fail_after(10):
                    print(f"{label:>24}: {await exchange(proxy.address, payload)}")
        listener.set_client_func(None)


if __name__ == "__main__":
    trio.run(main)
