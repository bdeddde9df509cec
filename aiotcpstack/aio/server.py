"""``Server``: an ``asyncio.AbstractServer`` over the core's listeners (semantics of asyncio 3.12+:
``close()`` stops listening, existing connections live on; ``wait_closed()`` returns once the
server is closed and its connections are gone).

Each listener (``tcp.listener.Listener``) keeps established children in its accept queue; while
the server is serving, ``_on_acceptable`` drains that queue into ``protocol_factory()`` (the
``accept()`` loop of asyncio's ``_accept_connection``).  Before ``start_serving()`` -- or when it
was created with ``start_serving=False`` -- connections wait there, bounded by ``backlog``, and
the listener handles overflow as Linux does (``ListenOverflows``/``ListenDrops``).  ``close()``
closes the listeners: children not yet handed out are reset."""
from __future__ import annotations

import asyncio
import socket
from typing import Any

from .transport import TcpTransport, sockaddr


class ServerSocket:
    """What ``Server.sockets`` holds: enough of ``asyncio.trsock.TransportSocket`` for callers
    that read the bound address (``getsockname()``, ``family``, ``type``)."""

    def __init__(self, family: int, addr: tuple) -> None:
        self.family = family
        self.type = socket.SOCK_STREAM
        self.proto = socket.IPPROTO_TCP
        self._addr = addr

    def getsockname(self) -> tuple:
        return self._addr

    def getpeername(self) -> tuple:
        raise OSError(107, "Transport endpoint is not connected")

    def fileno(self) -> int:
        return -1

    def __repr__(self) -> str:
        return f"<aiotcpstack.ServerSocket family={self.family!r} laddr={self._addr!r}>"


class Server(asyncio.AbstractServer):
    def __init__(self, stack: Any, loop: asyncio.AbstractEventLoop, protocol_factory: Any, ssl: Any = None,
                 backlog: int = 100, ssl_handshake_timeout: float | None = None,
                 ssl_shutdown_timeout: float | None = None) -> None:
        self._stack = stack
        self._loop = loop
        self._protocol_factory = protocol_factory
        self._ssl = ssl
        self._backlog = backlog
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._listeners: list[Any] = []
        self._sockets: list[ServerSocket] = []
        self._serving = False
        self._closed = False
        self._active: set[TcpTransport] = set()
        self._waiters: list[asyncio.Future] | None = []
        self._serving_forever_fut: asyncio.Future | None = None

    # ---------------------------------------------------------------- wiring
    def _add_listener(self, listener: Any, family: int, addr: tuple) -> None:
        self._listeners.append(listener)
        self._sockets.append(ServerSocket(family, addr))

    def _on_acceptable(self, listener: Any) -> None:
        """Listener callback (``core.listen(on_acceptable=...)``): a child was appended to the
        accept queue.  Before ``start_serving`` (or after ``close``) children stay there, as in
        the kernel; the queue's bound (``backlog``) then makes the listener drop final ACKs."""
        if self._serving and not self._closed:
            self._drain(listener)

    def _drain(self, listener: Any) -> None:
        """``accept()`` every established child and hand it to ``protocol_factory()``."""
        stack = self._stack
        core = stack.core
        now = self._loop.time()
        while self._serving and not self._closed:
            conn = listener.accept()
            if conn is None:
                break
            transport = TcpTransport(stack, self._loop, server=self)
            transport._attach(conn)
            conn.handler = transport
            stack._transports.add(transport)
            self._active.add(transport)
            transport.tcp_established()      # the child went ESTABLISHED with no handler
            self._begin(transport)
            if not transport._lost:
                # data / EOF that arrived while it waited: with this batch, or now
                core.wake(conn, now)
        stack._kick()

    def _begin(self, transport: TcpTransport) -> None:
        try:
            protocol = self._protocol_factory()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({"message": "Error in protocol_factory", "exception": exc})
            transport._server = None
            self._active.discard(transport)
            transport.abort()
            self._wakeup_if_done()
            return
        if self._ssl is not None:
            from asyncio import sslproto
            waiter = self._loop.create_future()
            waiter.add_done_callback(lambda f: f.cancelled() or f.exception())
            ssl_proto = sslproto.SSLProtocol(
                self._loop, protocol, self._ssl, waiter, server_side=True,
                ssl_handshake_timeout=self._ssl_handshake_timeout,
                ssl_shutdown_timeout=self._ssl_shutdown_timeout)
            transport._start(ssl_proto)
        else:
            transport._start(protocol)

    def _attach(self, transport: TcpTransport) -> None:
        self._active.add(transport)

    def _detach(self, transport: TcpTransport) -> None:
        self._active.discard(transport)
        self._wakeup_if_done()

    def _wakeup_if_done(self) -> None:
        if self._closed and not self._active and self._waiters is not None:
            waiters, self._waiters = self._waiters, None
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    # ---------------------------------------------------------------- AbstractServer
    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def sockets(self) -> tuple[ServerSocket, ...]:
        if self._closed:
            return ()
        return tuple(self._sockets)

    def is_serving(self) -> bool:
        return self._serving and not self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._serving = False
        now = self._loop.time()
        for listener in self._listeners:
            listener.close(now)        # resets the children still in its accept queue
        self._listeners = []
        fut = self._serving_forever_fut
        if fut is not None and not fut.done():
            fut.cancel()
            self._serving_forever_fut = None
        self._stack._server_closed(self)
        self._stack._kick()
        self._wakeup_if_done()

    def close_clients(self) -> None:
        for t in list(self._active):
            t.close()

    def abort_clients(self) -> None:
        for t in list(self._active):
            t.abort()

    async def start_serving(self) -> None:
        self._start_serving()
        await asyncio.sleep(0)

    def _start_serving(self) -> None:
        if self._serving or self._closed:
            return
        self._serving = True
        for listener in list(self._listeners):
            self._drain(listener)

    async def serve_forever(self) -> None:
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._closed:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    async def wait_closed(self) -> None:
        if self._waiters is None:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter

    def __repr__(self) -> str:
        return f"<aiotcpstack.Server sockets={self.sockets!r}>"


def listener_sockaddr(ip: bytes, port: int) -> tuple[int, tuple]:
    if ip == b"":
        return socket.AF_INET, ("0.0.0.0", port)
    return (socket.AF_INET6 if len(ip) == 16 else socket.AF_INET), sockaddr(ip, port)
