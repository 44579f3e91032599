"""Pass an open file to another task over a UNIX socket channel (SCM_RIGHTS).

QEMU hands file descriptors to a helper this way (``qio_channel_writev_full`` with fds):
the receiver gets its own descriptor for the *same* open file, so what it writes shows up
when the sender reads the file back.

Run: ``python examples/fd_passing.py``
"""

from __future__ import annotations

import os
import tempfile

import trio

import trioqio


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "shared.txt")
        listen_path = os.path.join(tmp, "fd.sock")

        raw = trio.socket.socket(trio.socket.AF_UNIX)
        await raw.bind(listen_path)
        raw.listen(1)
        async with trioqio.SocketChannel(raw, name="fd-server") as server:
            sender = await trioqio.connect(f"unix:{listen_path}", name="fd-sender")
            receiver = await server.accept()
            async with sender, receiver:
                print("receiver's peer pid:", receiver.peer_pid, "(this process)")
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    await sender.send_with_fds(b"here is a file", [fd])
                    data, fds = await receiver.receive_with_fds(100)
                    print(f"received {data!r} and {len(fds)} descriptor(s): {fds}")
                    try:
                        os.write(fds[0], b"written through the passed descriptor\n")
                    finally:
                        for each in fds:
                            os.close(each)
                    os.lseek(fd, 0, os.SEEK_SET)
                    print("the sender reads back:", os.read(fd, 100).decode().strip())
                finally:
                    os.close(fd)
        print("listening path removed on close:", not os.path.exists(listen_path))


if __name__ == "__main__":
    trio.run(main)
