"""Live: close, half-close and reset against the kernel's TCP, checked from both ends.

- our write_eof while the kernel keeps sending (it sees EOF, we still receive everything), and the
  kernel's shutdown(SHUT_WR) while we keep sending;
- orderly close both ways: the kernel side reads EOF, our protocol gets connection_lost(None);
  TIME_WAIT stays on the active closer (our snapshot shows it when we close first);
- our abort() -> the kernel's recv raises ECONNRESET; the kernel's SO_LINGER-0 close (RST) ->
  our connection_lost(ConnectionResetError); RST to our SYN -> ConnectionRefusedError;
- our close() with unread data -> RST (Linux tcp_close), the kernel sees ECONNRESET.
"""
from __future__ import annotations

import asyncio
import errno
import socket
import struct
import threading
import time

import pytest

from aiotcpstack import Stack
from aiotcpstack.host.netns import socket_in_netns

pytestmark = pytest.mark.timeout(60)


class Proto(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = asyncio.Event()
        self.lost = asyncio.get_running_loop().create_future()
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self):
        self.eof.set()
        return True                           # keep the transport open (half-close)

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


def _kernel_listener(lab):
    s = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
    s.bind((lab.addr_b, 0))
    s.listen(4)
    s.settimeout(20)
    return s


def _thread(fn):
    box: dict = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc
    t = threading.Thread(target=run, daemon=True)
    t.start()

    def join(timeout: float = 20):
        t.join(timeout)
        assert not t.is_alive(), "kernel side hung"
        if "error" in box:
            raise box["error"]
        return box.get("result")
    return join


def _recv_all(c: socket.socket) -> bytes:
    buf = bytearray()
    while True:
        d = c.recv(65536)
        if not d:
            return bytes(buf)
        buf += d


async def _wait_for(cond, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


@pytest.fixture(params=["shared", "dedicated"])
def mode(request):
    return request.param


def _stack(lab, mode):
    return Stack(lab.if_a, netns=lab.ns_a, address=None if mode == "shared" else f"{lab.spare_addr}/24")


def _our_addr(lab, mode):
    return lab.addr_a if mode == "shared" else lab.spare_addr


async def test_our_write_eof_while_kernel_keeps_sending(lab, mode) -> None:
    ls = _kernel_listener(lab)
    down = bytes(range(256)) * 4096                        # 1 MiB after our FIN

    def kernel():
        c, _ = ls.accept()
        with c:
            got = _recv_all(c)                             # our data, then our FIN (EOF)
            c.sendall(down)                                # the half-open direction still works
            c.shutdown(socket.SHUT_WR)
            return got
    join = _thread(kernel)
    async with _stack(lab, mode) as stack:
        tr, p = await stack.create_connection(Proto, lab.addr_b, ls.getsockname()[1])
        tr.write(b"hello" * 1000)
        tr.write_eof()
        assert await asyncio.to_thread(join) == b"hello" * 1000
        await asyncio.wait_for(p.eof.wait(), 10)
        assert bytes(p.data) == down
        tr.close()
        assert await asyncio.wait_for(p.lost, 10) is None
    ls.close()


async def test_kernel_shutdown_wr_while_we_keep_sending(lab, mode) -> None:
    ls = _kernel_listener(lab)

    def kernel():
        c, _ = ls.accept()
        with c:
            c.sendall(b"bye")
            c.shutdown(socket.SHUT_WR)                     # kernel FIN first
            return _recv_all(c)                            # and still reads everything we send
    join = _thread(kernel)
    async with _stack(lab, mode) as stack:
        tr, p = await stack.create_connection(Proto, lab.addr_b, ls.getsockname()[1])
        await asyncio.wait_for(p.eof.wait(), 10)
        assert bytes(p.data) == b"bye"
        up = b"x" * (2 << 20)
        tr.write(up)                                       # CLOSE_WAIT: we keep sending
        tr.close()                                         # our FIN after the data (LAST_ACK)
        assert await asyncio.wait_for(p.lost, 10) is None
        assert await asyncio.to_thread(join) == up
        await _wait_for(lambda: not [c for c in stack.connections() if c["state"] != "LISTEN"])
    ls.close()


async def test_orderly_close_we_close_first_time_wait_is_ours(lab, mode) -> None:
    ls = _kernel_listener(lab)

    def kernel():
        c, _ = ls.accept()
        with c:
            got = _recv_all(c)                             # kernel sees EOF
            return got
    join = _thread(kernel)
    async with _stack(lab, mode) as stack:
        tr, p = await stack.create_connection(Proto, lab.addr_b, ls.getsockname()[1])
        tr.write(b"data")
        tr.close()
        assert await asyncio.to_thread(join) == b"data"                          # kernel closes after EOF
        assert await asyncio.wait_for(p.lost, 10) is None
        await _wait_for(lambda: any(c["state"] == "TIME_WAIT" for c in stack.connections()))
    # the kernel, the passive closer, holds no TIME_WAIT
    out = lab.run(lab.ns_b, ["ss", "-tanH", "state", "time-wait"]).stdout
    assert out.strip() == ""
    ls.close()


async def test_orderly_close_kernel_closes_first(lab, mode) -> None:
    async with _stack(lab, mode) as stack:
        protos: list[Proto] = []
        server = await stack.create_server(lambda: protos.append(Proto()) or protos[-1], None, 0)
        port = server.sockets[0].getsockname()[1]

        def kernel():
            c = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
            c.settimeout(10)
            c.connect((_our_addr(lab, mode), port))
            c.sendall(b"ping")
            c.shutdown(socket.SHUT_WR)
            got = _recv_all(c)                             # our FIN -> EOF
            c.close()
            return got
        join = _thread(kernel)
        await _wait_for(lambda: protos and protos[0].eof.is_set())
        p = protos[0]
        assert bytes(p.data) == b"ping"
        p.transport.write(b"pong")
        p.transport.close()
        assert await asyncio.to_thread(join) == b"pong"
        assert await asyncio.wait_for(p.lost, 10) is None
        # the kernel closed first: it holds TIME_WAIT, we do not
        out = lab.run(lab.ns_b, ["ss", "-tanH", "state", "time-wait"]).stdout
        assert str(port) in out
        await _wait_for(lambda: not [c for c in stack.connections() if c["state"] not in ("LISTEN",)])
        server.close()
        await server.wait_closed()


async def test_our_abort_gives_kernel_econnreset(lab, mode) -> None:
    ls = _kernel_listener(lab)
    ready = threading.Event()

    def kernel():
        c, _ = ls.accept()
        with c:
            c.sendall(b"x")
            ready.set()
            try:
                while c.recv(65536):
                    pass
            except ConnectionResetError as exc:
                return exc.errno
            return "eof"
    join = _thread(kernel)
    async with _stack(lab, mode) as stack:
        tr, p = await stack.create_connection(Proto, lab.addr_b, ls.getsockname()[1])
        await _wait_for(lambda: p.data)
        tr.abort()
        assert await asyncio.wait_for(p.lost, 5) is None
        assert await asyncio.to_thread(join) == errno.ECONNRESET
        assert stack.counters["OutRsts"] >= 1
    ls.close()


async def test_kernel_linger0_rst_gives_us_connection_reset(lab, mode) -> None:
    ls = _kernel_listener(lab)

    def kernel():
        c, _ = ls.accept()
        c.sendall(b"before-reset")
        time.sleep(0.2)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()                                          # RST
    join = _thread(kernel)
    async with _stack(lab, mode) as stack:
        tr, p = await stack.create_connection(Proto, lab.addr_b, ls.getsockname()[1])
        exc = await asyncio.wait_for(p.lost, 10)
        await asyncio.to_thread(join)
        assert isinstance(exc, ConnectionResetError), exc
        assert bytes(p.data) == b"before-reset"
        assert stack.counters["EstabResets"] >= 1
    ls.close()


async def test_rst_to_our_syn_is_connection_refused(lab, mode) -> None:
    s = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
    s.bind((lab.addr_b, 0))                                # a port nobody listens on
    port = s.getsockname()[1]
    s.close()
    async with _stack(lab, mode) as stack:
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(stack.create_connection(Proto, lab.addr_b, port), 10)
        assert stack.counters["AttemptFails"] >= 1


async def test_close_with_unread_data_sends_rst(lab, mode) -> None:
    ls = _kernel_listener(lab)
    go = threading.Event()

    def kernel():
        c, _ = ls.accept()
        with c:
            go.wait(10)
            c.sendall(b"unread" * 100)
            try:
                while c.recv(65536):
                    pass
            except ConnectionResetError as exc:
                return exc.errno
            return "eof"
    join = _thread(kernel)
    async with _stack(lab, mode) as stack:
        tr, p = await stack.create_connection(Proto, lab.addr_b, ls.getsockname()[1])
        tr.pause_reading()                                 # what arrives now stays in our buffer
        go.set()
        await _wait_for(lambda: any(c.get("unread") for c in stack.connections()))
        assert not p.data
        tr.close()
        assert await asyncio.to_thread(join) == errno.ECONNRESET   # Linux: unread data -> RST
        assert stack.counters["TCPAbortOnClose"] == 1
        assert await asyncio.wait_for(p.lost, 5) is None
    ls.close()
