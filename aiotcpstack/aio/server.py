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
import contextvars
import socket
import sys
from typing import Any

from .pseudosocket import PseudoSocket
from .transport import TcpTransport, sockaddr


#: what ``Server.sockets`` holds (aio/pseudosocket.py); the old name stays importable
ServerSocket = PseudoSocket


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
        self._sockets: list[PseudoSocket] | None = []
        self._serving = False
        self._closed = False
        self._active: set[TcpTransport] = set()
        # accepted connections run their protocol (factory and callbacks) in a copy of the
        # context create_server() was called in, as asyncio's accept handle does
        self._context = contextvars.copy_context()
        self._anon_active = 0      # _attach()/_detach() without a transport (3.12's signature)
        self._overrides: dict[int, dict[str, Any]] = {}   # listener -> options set on its pseudo-socket
        self._sock_flags: dict[str, Any] = {}              # reuse_address / reuse_port as given
        self._waiters: list[asyncio.Future] | None = []
        self._serving_forever_fut: asyncio.Future | None = None

    # ---------------------------------------------------------------- wiring
    def _add_listener(self, listener: Any, family: int, addr: tuple) -> None:
        if listener not in self._listeners:
            self._listeners.append(listener)
            self._wrap_config_for(listener)
        overrides = self._overrides.setdefault(id(listener), {})

        def get_config() -> Any:
            return listener.config.with_options(**overrides) if overrides else listener.config

        def set_config(cfg: Any) -> None:
            base = listener.config
            for name in _SOCKOPT_FIELDS:
                v = getattr(cfg, name)
                if v != getattr(base, name):
                    overrides[name] = v
                else:
                    overrides.pop(name, None)

        self._sockets.append(PseudoSocket(family, addr, get_config=get_config, set_config=set_config,
                                          flags=self._sock_flags))

    def _wrap_config_for(self, listener: Any) -> None:
        """Options set on ``Server.sockets`` apply to the connections accepted from then on."""
        overrides = self._overrides.setdefault(id(listener), {})
        base = listener.config_for

        def config_for(rip: bytes) -> Any:
            cfg = base(rip) if base is not None else listener.config
            return cfg.with_options(**overrides) if overrides else cfg

        listener.config_for = config_for

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
            transport = TcpTransport(stack, self._loop, server=self, context=self._context.copy())
            transport._attach(conn)
            conn.handler = transport
            stack._transports.add(transport)
            self._active.add(transport)
            transport.tcp_established()      # the child went ESTABLISHED with no handler
            transport._in_ctx(self._begin, transport)
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

    # asyncio.Server's hooks: 3.13 passes the transport, 3.12 only counts
    def _attach(self, transport: TcpTransport | None = None) -> None:
        if transport is None:
            self._anon_active += 1
        else:
            self._active.add(transport)

    def _detach(self, transport: TcpTransport | None = None) -> None:
        if transport is None:
            self._anon_active -= 1
        else:
            self._active.discard(transport)
        self._wakeup_if_done()

    def _wakeup_if_done(self) -> None:
        if self._closed and not self._active and self._anon_active <= 0 and self._waiters is not None:
            waiters, self._waiters = self._waiters, None
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    # ---------------------------------------------------------------- AbstractServer
    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def sockets(self) -> tuple[PseudoSocket, ...]:
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
        for sock in self._sockets or ():
            sock._close()
        self._sockets = None       # as asyncio.Server (tests of asyncio itself check it)
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
        # 3.12+: until closed AND every connection is gone; 3.11 returned at once once closed
        if self._waiters is None or (_WAIT_CLOSED_311 and self._closed):
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter

    def __repr__(self) -> str:
        return f"<aiotcpstack.Server sockets={self.sockets!r}>"


_WAIT_CLOSED_311 = sys.version_info < (3, 12)
_SOCKOPT_FIELDS = ("nodelay", "keepalive", "keepalive_time", "keepalive_intvl", "keepalive_probes",
                   "rcvbuf", "sndbuf", "ip_ttl", "ip_tos", "ipv6_unicast_hops", "ipv6_tclass", "ip_options")


def listener_sockaddr(ip: bytes, port: int) -> tuple[int, tuple]:
    if ip == b"":
        return socket.AF_INET, ("0.0.0.0", port)
    return (socket.AF_INET6 if len(ip) == 16 else socket.AF_INET), sockaddr(ip, port)
