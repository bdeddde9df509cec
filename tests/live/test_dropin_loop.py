"""Live: the drop-in loop (``aiotcpstack.loop_factory`` / ``run`` / ``patch_loop``) on asyncio and
uvloop.  Application code below is unchanged asyncio code (``asyncio.open_connection``,
``asyncio.start_server``, aiohttp, websockets); the stack runs in ns_a (shared mode), kernel peers
in ns_b.  Every test checks the stack's counters: the traffic went through the user-space stack.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import sys
import threading

import pytest

import aiotcpstack
from aiotcpstack import Stack
from aiotcpstack.host.netns import socket_in_netns

pytestmark = pytest.mark.timeout(180)

LOOPS = ["asyncio", "uvloop"]


def _run(lab, main, kind: str, **options):
    return aiotcpstack.run(main, interface=lab.if_a, netns=lab.ns_a, uvloop=(kind == "uvloop"), **options)


def kernel_echo_server(lab, port: int = 0) -> tuple[socket.socket, threading.Thread]:
    ls = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((lab.addr_b, port))
    ls.listen(16)
    ls.settimeout(30)

    def serve() -> None:
        try:
            while True:
                c, _ = ls.accept()
                threading.Thread(target=_echo, args=(c,), daemon=True).start()
        except OSError:
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return ls, t


def _echo(c: socket.socket) -> None:
    with c:
        c.settimeout(30)
        while data := c.recv(65536):
            c.sendall(data)


@pytest.mark.parametrize("kind", LOOPS)
def test_open_connection_to_kernel_server(lab, kind: str) -> None:
    ls, _ = kernel_echo_server(lab)
    port = ls.getsockname()[1]

    async def main():
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection(lab.addr_b, port)
        blob = os.urandom(3 * 1024 * 1024)

        async def send():
            writer.write(blob)
            await writer.drain()
            writer.write_eof()

        task = asyncio.ensure_future(send())
        got = await asyncio.wait_for(reader.read(-1), 60)
        await task
        writer.close()
        await writer.wait_closed()
        return type(loop).__name__, dict(loop.stack.counters), hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()

    try:
        name, counters, same = _run(lab, main(), kind)
    finally:
        ls.close()
    assert same
    assert counters["ActiveOpens"] == 1
    assert name == ("StackUVLoop" if kind == "uvloop" else "StackSelectorEventLoop")


@pytest.mark.parametrize("kind", LOOPS)
def test_start_server_kernel_clients(lab, kind: str) -> None:
    def client(port: int, n: int) -> bytes:
        s = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
        with s:
            s.settimeout(30)
            s.connect((lab.addr_a, port))
            s.sendall(b"x" * n)
            s.shutdown(socket.SHUT_WR)
            out = bytearray()
            while data := s.recv(65536):
                out += data
            return bytes(out)

    async def main():
        loop = asyncio.get_running_loop()

        async def handle(reader, writer):
            data = await reader.read(-1)
            writer.write(data.upper())
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(handle, lab.addr_a, 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            results = await asyncio.gather(*(loop.run_in_executor(None, client, port, 10000 + i) for i in range(8)))
        return results, dict(loop.stack.counters)

    results, counters = _run(lab, main(), kind)
    assert [len(r) for r in results] == [10000 + i for i in range(8)]
    assert all(r == b"X" * len(r) for r in results)
    assert counters["PassiveOpens"] == 8


@pytest.mark.parametrize("kind", LOOPS)
def test_aiohttp_server_fetched_by_curl(lab, kind: str) -> None:
    web = pytest.importorskip("aiohttp.web")
    import shutil
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    body = os.urandom(200_000).hex()

    async def main():
        loop = asyncio.get_running_loop()

        async def hello(request):
            return web.Response(text=body)

        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, lab.addr_a, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            r = await loop.run_in_executor(None, lambda: lab.run(
                lab.ns_b, ["curl", "-sS", "--max-time", "30", f"http://{lab.addr_a}:{port}/"]))
        finally:
            await runner.cleanup()
        return r.stdout, dict(loop.stack.counters)

    out, counters = _run(lab, main(), kind)
    assert out == body
    assert counters["PassiveOpens"] >= 1


@pytest.mark.parametrize("kind", LOOPS)
def test_websockets_server_on_stack_client_on_kernel(lab, kind: str) -> None:
    websockets = pytest.importorskip("websockets")
    from websockets.sync.client import connect as sync_connect

    def kernel_client(port: int) -> list[str]:
        got = []
        with sync_connect(f"ws://{lab.addr_a}:{port}/", open_timeout=20) as ws:
            for i in range(20):
                ws.send(f"msg {i}")
                got.append(ws.recv(timeout=20))
        return got

    async def main():
        loop = asyncio.get_running_loop()

        async def echo(ws, *args):
            async for msg in ws:
                await ws.send(msg[::-1])

        async with websockets.serve(echo, lab.addr_a, 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            got = await loop.run_in_executor(None, lab.run_in, lab.ns_b, kernel_client, port)
            # and a client on our loop too (stack to stack, over the stack's own address)
            async with websockets.connect(f"ws://{lab.addr_a}:{port}/") as ws:
                await ws.send("hello")
                mine = await asyncio.wait_for(ws.recv(), 20)
        return got, mine, dict(loop.stack.counters)

    got, mine, counters = _run(lab, main(), kind)
    assert got == [f"msg {i}"[::-1] for i in range(20)]
    assert mine == "olleh"
    assert counters["PassiveOpens"] >= 2 and counters["ActiveOpens"] >= 1


@pytest.mark.parametrize("kind", LOOPS)
def test_runner_and_asyncio_run_loop_factory(lab, kind: str) -> None:
    ls, _ = kernel_echo_server(lab)
    port = ls.getsockname()[1]
    factory = aiotcpstack.loop_factory(lab.if_a, netns=lab.ns_a, uvloop=(kind == "uvloop"))

    async def main():
        r, w = await asyncio.open_connection(lab.addr_b, port)
        w.write(b"ping")
        data = await asyncio.wait_for(r.readexactly(4), 20)
        w.close()
        await w.wait_closed()
        return data, asyncio.get_running_loop()

    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            data, loop = runner.run(main())
            stack = loop.stack
            assert stack._started and stack.counters["ActiveOpens"] == 1
        assert data == b"ping" and loop.is_closed() and stack._closed and stack._guard is None
        if sys.version_info >= (3, 12):
            data, loop = asyncio.run(main(), loop_factory=factory)
            assert data == b"ping" and loop.is_closed() and loop.stack._closed
    finally:
        ls.close()


@pytest.mark.parametrize("kind", LOOPS)
def test_patch_loop_and_base_loop_paths(lab, kind: str) -> None:
    ls, _ = kernel_echo_server(lab)
    port = ls.getsockname()[1]
    if kind == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    stack = Stack(lab.if_a, netns=lab.ns_a)
    aiotcpstack.patch_loop(loop, stack)

    async def main():
        r, w = await asyncio.open_connection(lab.addr_b, port)
        w.write(b"abc")
        assert await asyncio.wait_for(r.readexactly(3), 20) == b"abc"
        w.close()
        await w.wait_closed()
        # sock= goes to the base loop (a kernel socketpair here)
        a, b = socket.socketpair()
        r2, w2 = await asyncio.open_connection(sock=a)
        b.sendall(b"via-kernel")
        assert await asyncio.wait_for(r2.readexactly(10), 5) == b"via-kernel"
        w2.close()
        b.close()
        # UDP stays on the base loop
        tr, _ = await asyncio.get_running_loop().create_datagram_endpoint(asyncio.DatagramProtocol,
                                                                          local_addr=("127.0.0.1", 0))
        tr.close()
        return dict(stack.counters)

    try:
        counters = loop.run_until_complete(main())
    finally:
        loop.close()
        ls.close()
    assert counters["ActiveOpens"] == 1
    assert stack._closed


@pytest.mark.parametrize("kind", LOOPS)
def test_flow_control_slow_reader(lab, kind: str) -> None:
    """A kernel peer that reads slowly: our transport's buffer crosses the high-water mark,
    pause_writing fires, drain() waits; nothing is lost and the write buffer stays bounded."""
    ls = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    ls.bind((lab.addr_b, 0))
    ls.listen(1)
    ls.settimeout(30)
    port = ls.getsockname()[1]
    total = 8 * 1024 * 1024
    result: dict = {}

    def slow_reader() -> None:
        import time
        c, _ = ls.accept()
        h = hashlib.sha256()
        n = 0
        with c:
            c.settimeout(60)
            while True:
                data = c.recv(16384)
                if not data:
                    break
                h.update(data)
                n += len(data)
                if n < total // 2:
                    time.sleep(0.002)     # slow for the first half
        result["n"] = n
        result["sha"] = h.digest()

    t = threading.Thread(target=slow_reader, daemon=True)
    t.start()

    class Sender(asyncio.Protocol):
        def __init__(self) -> None:
            self.paused = 0
            self.resumed = 0
            self.max_buffer = 0
            self.can_write = asyncio.Event()
            self.can_write.set()
            self.lost = asyncio.get_running_loop().create_future()

        def connection_made(self, transport) -> None:
            self.transport = transport
            transport.set_write_buffer_limits(high=256 * 1024)

        def pause_writing(self) -> None:
            self.paused += 1
            self.can_write.clear()

        def resume_writing(self) -> None:
            self.resumed += 1
            self.can_write.set()

        def connection_lost(self, exc) -> None:
            if not self.lost.done():
                self.lost.set_result(exc)

    async def main():
        loop = asyncio.get_running_loop()
        tr, proto = await loop.create_connection(Sender, lab.addr_b, port)
        rnd = os.urandom(64 * 1024)
        h = hashlib.sha256()
        sent = 0
        while sent < total:
            await proto.can_write.wait()
            tr.write(rnd)
            h.update(rnd)
            sent += len(rnd)
            proto.max_buffer = max(proto.max_buffer, tr.get_write_buffer_size())
        await proto.can_write.wait()
        tr.close()
        exc = await asyncio.wait_for(proto.lost, 60)
        return proto, h.digest(), exc

    try:
        proto, digest, exc = _run(lab, main(), kind)
        t.join(60)
    finally:
        ls.close()
    assert exc is None
    assert result["n"] == total and result["sha"] == digest
    assert proto.paused >= 1 and proto.resumed >= 1
    low, high = 64 * 1024, 256 * 1024
    assert proto.max_buffer <= high + 64 * 1024          # bounded: high water + one write
