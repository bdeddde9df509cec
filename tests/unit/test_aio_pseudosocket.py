"""Server.sockets / get_extra_info('socket') pseudo-sockets, contextvars of protocol callbacks and
the ResourceWarning of unclosed transports -- on the drop-in loop over the in-memory link pair of
test_ip_aio_loopback (no root)."""
from __future__ import annotations

import asyncio
import contextvars
import errno
import gc
import socket
import warnings

import pytest

from aiotcpstack import Stack
from aiotcpstack.aio.loop import new_stack_loop
from aiotcpstack.aio.pseudosocket import PseudoSocket
from aiotcpstack.aio.transport import TcpTransport

from test_ip_aio_loopback import A, B, pair  # noqa: E402

VAR = contextvars.ContextVar("VAR", default="unset")


def run(main):
    la, lb = pair()
    sa = Stack("la", address=f"{A}/24", link=la)
    sb = Stack("lb", address=f"{B}/24", link=lb)
    loop = new_stack_loop(sa)

    async def wrapper():
        await sa.start()
        await sb.start()
        try:
            return await main(sa, sb)
        finally:
            await sb.close()

    try:
        return loop.run_until_complete(wrapper())
    finally:
        loop.close()


def test_server_pseudo_socket_options() -> None:
    async def main(sa, sb):
        srv = await sb.create_server(asyncio.Protocol, B, 7300, reuse_port=True)
        (ps,) = srv.sockets
        assert isinstance(ps, PseudoSocket)
        assert ps.family == socket.AF_INET and ps.type == socket.SOCK_STREAM and ps.proto == socket.IPPROTO_TCP
        assert ps.getsockname() == (B, 7300) and ps.fileno() == -1
        with pytest.raises(OSError) as ei:
            ps.getpeername()
        assert ei.value.errno == errno.ENOTCONN
        assert ps.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        assert ps.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1     # asyncio's POSIX default
        assert ps.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1     # asyncio sets it
        ps.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        ps.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
        ps.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
        ps.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        ps.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        ps.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        assert ps.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert ps.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 4) == (30).to_bytes(4, "little")
        # accepted connections inherit the options (as from a listening kernel socket)
        tr, _ = await sa.create_connection(asyncio.Protocol, B, 7300)
        for _ in range(50):
            if srv._active:
                break
            await asyncio.sleep(0.01)
        (child,) = srv._active
        cfg = child._conn.config
        assert (cfg.keepalive, cfg.keepalive_time, cfg.keepalive_intvl, cfg.keepalive_probes) == (True, 30, 5, 3)
        assert (cfg.rcvbuf, cfg.sndbuf) == (65536, 32768)
        # everything else: a clear error, never a silent no-op
        with pytest.raises(OSError) as ei:
            ps.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)    # (datagram-only in Linux)
        assert ei.value.errno == errno.ENOPROTOOPT and "not supported" in str(ei.value)
        with pytest.raises(OSError):
            ps.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER)
        with pytest.raises(AttributeError, match="no kernel socket"):
            ps.dup()
        tr.abort()
        srv.close()
        assert srv.sockets == () and srv._sockets is None
        assert ps.fileno() == -1
        with pytest.raises(OSError) as ei:
            ps.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        assert ei.value.errno == errno.EBADF
        await srv.wait_closed()

    run(main)


def test_transport_pseudo_socket_maps_onto_connection() -> None:
    async def main(sa, sb):
        srv = await sb.create_server(asyncio.Protocol, B, 7301)
        tr, _ = await sa.create_connection(asyncio.Protocol, B, 7301)
        s = tr.get_extra_info("socket")
        assert s is tr.get_extra_info("socket") and isinstance(s, PseudoSocket)
        assert s.getsockname() == tr.get_extra_info("sockname")
        assert s.getpeername() == (B, 7301) and s.fileno() == -1
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        assert tr._conn.config.nodelay is False and s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        assert tr._sndbuf == tr._sndbuf_max == 16384
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        assert tr._conn.config.keepalive and tr._conn._t_ka is not None
        # the stack's shared config is not touched
        assert sa.core.config.nodelay is True and sa.core.config.keepalive is False
        tr.close()
        srv.close()
        await srv.wait_closed()

    run(main)


def test_callbacks_run_in_the_creation_context() -> None:
    seen: dict[str, list] = {"client": [], "server": []}

    class P(asyncio.Protocol):
        def __init__(self, side):
            self.side = side
            self.lost = asyncio.get_running_loop().create_future()

        def connection_made(self, t):
            seen[self.side].append(("made", VAR.get()))
            self.t = t

        def data_received(self, data):
            seen[self.side].append(("data", VAR.get()))
            if self.side == "server":
                VAR.set("changed-by-server-callback")     # stays in that connection's context
                self.t.write(data)

        def eof_received(self):
            seen[self.side].append(("eof", VAR.get()))

        def connection_lost(self, exc):
            seen[self.side].append(("lost", VAR.get()))
            self.lost.set_result(None)

    async def main(sa, sb):
        servers = []

        async def make_server():
            VAR.set("server-ctx")
            return await sb.create_server(lambda: (servers.append(P("server")), servers[-1])[1], B, 7302)

        srv = await asyncio.create_task(make_server())
        VAR.set("caller-ctx")
        clients = []
        for i in range(2):
            async def connect(i=i):
                VAR.set(f"client-{i}")
                return await sa.create_connection(lambda: P("client"), B, 7302)
            tr, pr = await asyncio.create_task(connect())
            clients.append((tr, pr))
        VAR.set("after")
        for tr, pr in clients:
            tr.write(b"x")
        await asyncio.sleep(0.1)
        for tr, pr in clients:
            tr.write_eof()
        await asyncio.sleep(0.1)
        for tr, pr in clients:
            tr.close()
            await asyncio.wait_for(pr.lost, 5)
        srv.close()
        assert VAR.get() == "after"          # no callback leaked into the caller's context

    run(main)
    client = seen["client"]
    assert ("made", "client-0") in client and ("made", "client-1") in client
    assert {v for _, v in client} == {"client-0", "client-1"}
    server = seen["server"]
    assert ("made", "server-ctx") in server and ("data", "server-ctx") in server
    # the value set in one accepted connection's callback is visible in its later callbacks only
    assert server.count(("data", "server-ctx")) == 2
    assert ("eof", "changed-by-server-callback") in server


def test_unclosed_transport_resource_warning() -> None:
    async def main(sa, sb):
        srv = await sb.create_server(asyncio.Protocol, B, 7303)
        tr, _ = await sa.create_connection(asyncio.Protocol, B, 7303)
        # a transport object collected while its connection is open (the stack itself holds
        # its transports while the connection lives, as a selector holds a reading transport)
        fake = TcpTransport(sa, asyncio.get_running_loop())
        fake._attach(tr._conn)
        with pytest.warns(ResourceWarning, match="unclosed transport"):
            del fake
            gc.collect()
        closed = TcpTransport(sa, asyncio.get_running_loop())
        closed._attach(tr._conn)
        closed._closing = True
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            del closed
            gc.collect()
        srv.close()

    run(main)
