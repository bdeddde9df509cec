"""TcpTransport.tcp_data calls a plain Protocol's ``data_received`` straight in the transport's
context (without ``_deliver``): a request/response exchange over two in-memory Stacks, a
protocol that replies from ``data_received``, sets a context variable there, and finally raises
-- the same data, the same context seen by later callbacks, the same exception-handler call
and the same ``connection_lost`` with the direct call and without it."""
from __future__ import annotations

import asyncio
import contextvars

import pytest

from aiotcpstack.aio.transport import TcpTransport

from test_ip_aio_loopback import B, stacks  # noqa: F401  (the fixture)

VAR: contextvars.ContextVar[int] = contextvars.ContextVar("VAR", default=0)


class Replier(asyncio.Protocol):
    """Answers each request, counts them in a context variable, raises on ``b"boom"``."""

    def __init__(self, log: list) -> None:
        self.log = log

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        VAR.set(VAR.get() + 1)
        self.log.append(("data", type(data), bytes(data), VAR.get()))
        if data == b"boom":
            raise ValueError("boom")
        self.transport.write(b"re:" + data)

    def eof_received(self):
        self.log.append(("eof", VAR.get()))

    def connection_lost(self, exc) -> None:
        self.log.append(("lost", type(exc).__name__, VAR.get()))


class Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.got = asyncio.Queue()
        self.lost = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.got.put_nowait(bytes(data))

    def connection_lost(self, exc) -> None:
        self.lost.set_result(type(exc).__name__)


async def exchange(sa, sb, port: int) -> tuple:
    log: list = []
    handled: list = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: handled.append((ctx["message"], repr(ctx.get("exception")))))
    try:
        srv = await sb.create_server(lambda: Replier(log), B, port)
        tr, cl = await sa.create_connection(Client, B, port)
        replies = []
        for i in range(20):
            tr.write(b"q%d" % i * (1 + i))
            replies.append(await asyncio.wait_for(cl.got.get(), 5))
        tr.write(b"boom")
        lost = await asyncio.wait_for(cl.lost, 5)
        await asyncio.sleep(0.01)
        srv.close()
    finally:
        loop.set_exception_handler(None)
    return replies, log, handled, lost


@pytest.mark.parametrize("direct", [True, False])
async def test_direct_data_received_matches_deliver(stacks, direct: bool, monkeypatch) -> None:  # noqa: F811
    sa, sb = stacks
    calls = [0]
    real = TcpTransport._deliver

    def counted(self, data) -> None:
        calls[0] += 1
        real(self, data)

    monkeypatch.setattr(TcpTransport, "_deliver", counted)
    monkeypatch.setattr(TcpTransport, "direct_data", direct)
    replies, log, handled, lost = await exchange(sa, sb, 7300)
    assert replies == [b"re:" + b"q%d" % i * (1 + i) for i in range(20)]
    # the context variable grows in the transport's context, also across callbacks
    assert log[:21] == [("data", bytes, b"q%d" % i * (1 + i), i + 1) for i in range(20)] + [
        ("data", bytes, b"boom", 21)]
    assert log[21:] == [("lost", "ValueError", 21)]
    assert handled == [("data_received() failed", "ValueError('boom')")]
    assert lost == "ConnectionResetError"
    if direct:
        assert calls[0] == 0          # the direct call was taken (fails without it)
    else:
        assert calls[0] >= 21
