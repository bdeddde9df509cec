"""The drop-in loop without root: a dedicated-mode Stack over the in-memory link pair of
test_ip_aio_loopback (no AF_PACKET, no firewall), owned by a drop-in loop on asyncio and uvloop."""
from __future__ import annotations

import asyncio
import socket
import sys

import pytest

import aiotcpstack
from aiotcpstack import Stack
from aiotcpstack.aio.loop import StackLoopMixin, new_stack_loop

from test_ip_aio_loopback import A, B, pair  # noqa: E402  (rootdir-relative, tests/unit on sys.path)

KINDS = [False, True]


def make(uv: bool):
    la, lb = pair()
    sa = Stack("la", address=f"{A}/24", link=la)
    sb = Stack("lb", address=f"{B}/24", link=lb)
    return new_stack_loop(sa, uvloop=uv), sa, sb


@pytest.mark.parametrize("uv", KINDS)
def test_lazy_start_streams_and_close(uv: bool) -> None:
    loop, sa, sb = make(uv)

    async def main():
        assert not sa._started                        # lazily started by the first TCP call
        await sb.start()

        async def echo(r, w):
            w.write(await r.read(100))
            await w.drain()
            w.close()

        srv = await sb.start_server(echo, B, 7000)
        r, w = await asyncio.open_connection(B, 7000)
        assert sa._started and sa._loop is asyncio.get_running_loop()
        w.write(b"hi")
        assert await asyncio.wait_for(r.read(100), 5) == b"hi"
        # still open at loop.close(): reset and torn down there
        r2, w2 = await asyncio.open_connection(B, 7000)
        srv.close()
        return w2

    try:
        loop.run_until_complete(main())
        assert sa.counters["ActiveOpens"] == 2
    finally:
        loop.run_until_complete(sb.close())
        loop.close()                                   # no shutdown_asyncgens, no Runner
    assert sa._closed and not sa._transports


@pytest.mark.parametrize("uv", KINDS)
def test_arguments_follow_running_python(uv: bool) -> None:
    loop, sa, sb = make(uv)

    async def main():
        with pytest.raises(TypeError, match="unexpected keyword argument 'nonsense'"):
            await asyncio.get_running_loop().create_connection(asyncio.Protocol, B, 1, nonsense=1)
        if sys.version_info < (3, 12):
            with pytest.raises(TypeError):
                await asyncio.get_running_loop().create_connection(asyncio.Protocol, B, 1, all_errors=True)
        if sys.version_info < (3, 13):
            with pytest.raises(TypeError):
                await asyncio.get_running_loop().create_server(asyncio.Protocol, B, 1, keep_alive=True)
        with pytest.raises(ValueError, match="server_hostname is only meaningful with ssl"):
            await asyncio.open_connection(B, 1, server_hostname="x")
        with pytest.raises(ValueError, match="host/port and sock can not be specified at the same time"):
            await asyncio.open_connection(B, 1, sock=socket.socket())
        with pytest.raises(ValueError, match="sock= cannot be used with an aiotcpstack Stack"):
            await sb.start()
            await sb.create_connection(asyncio.Protocol, sock=socket.socket())
        # sock= on the drop-in loop: the base loop, unchanged
        a, b = socket.socketpair()
        r, w = await asyncio.open_connection(sock=a)
        b.sendall(b"k")
        assert await r.readexactly(1) == b"k"
        w.close()
        b.close()
        with pytest.raises(ConnectionRefusedError) as ei:
            await asyncio.open_connection(B, 9)
        assert str(ei.value) == f"[Errno 111] Connect call failed ('{B}', 9)"
        await sb.close()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


@pytest.mark.parametrize("uv", KINDS)
def test_patch_loop_swaps_class(uv: bool) -> None:
    if uv:
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    la, lb = pair()
    sa = Stack("la", address=f"{A}/24", link=la)
    base = type(loop)
    assert aiotcpstack.patch_loop(loop, sa) is loop
    assert isinstance(loop, StackLoopMixin) and isinstance(loop, base) and loop.stack is sa
    with pytest.raises(RuntimeError):
        aiotcpstack.patch_loop(loop, sa)
    loop.close()
    assert sa._closed


def test_loop_factory_validates_options_eagerly() -> None:
    with pytest.raises(TypeError, match="unexpected option 'bogus'"):
        aiotcpstack.loop_factory("lo", bogus=1)
    f = aiotcpstack.loop_factory("lo")
    loop = f()
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop) and isinstance(loop, StackLoopMixin)
        assert not loop.stack._started
    finally:
        loop.close()


def test_run_requires_coroutine() -> None:
    with pytest.raises(ValueError):
        aiotcpstack.run(None, interface="lo")  # type: ignore[arg-type]
