"""Live: async tests parametrized over the drop-in loops by the ``pytest_asyncio_loop_factories``
hook (tests/conftest.py): [stack-asyncio] and [stack-uvloop] run on a loop whose TCP goes through
its own Stack on ``lo`` of a private namespace; the kernel peer is a socket in that namespace."""
from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from aiotcpstack.aio.loop import StackLoopMixin
from aiotcpstack.host.netns import socket_in_netns


@pytest.mark.asyncio(loop_factories=["stack-asyncio", "stack-uvloop"])
async def test_kernel_peer_through_stack(stack_loop_netns: str) -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, StackLoopMixin)
    ls = socket_in_netns(stack_loop_netns, socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    ls.settimeout(20)

    def serve() -> None:
        c, _ = ls.accept()
        with c:
            c.sendall(c.recv(100).upper())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", ls.getsockname()[1])
        w.write(b"hello")
        assert await asyncio.wait_for(r.read(100), 10) == b"HELLO"
        w.close()
        await w.wait_closed()
    finally:
        ls.close()
    assert loop.stack.counters["ActiveOpens"] == 1


@pytest.mark.asyncio(loop_factories=["stack-asyncio", "stack-uvloop"])
async def test_server_on_stack_kernel_client(stack_loop_netns: str) -> None:
    async def handle(reader, writer):
        writer.write(await reader.readexactly(4))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    def client() -> bytes:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        with s:
            s.sendall(b"ping")
            return s.recv(10)

    async with server:
        got = await asyncio.get_running_loop().run_in_executor(
            None, lambda: __import__("aiotcpstack.host.netns", fromlist=["x"]).run_in_netns(stack_loop_netns, client))
    assert got == b"ping"
    assert asyncio.get_running_loop().stack.counters["PassiveOpens"] == 1
