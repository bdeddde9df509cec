"""``TcpTransport``: an ``asyncio.Transport`` over a :class:`TcpConnection` (it is the connection's
``ConnectionHandler``).

Behaviour follows asyncio's ``_SelectorSocketTransport`` so protocols cannot tell the difference:

* ``connection_made`` is scheduled with ``call_soon`` (data that arrives before it runs is held and
  delivered right after it); ``connection_lost`` is called exactly once, via ``call_soon``.
* write flow control: the "write buffer" is what the kernel would not have accepted yet, i.e. the
  connection's send queue beyond ``sndbuf``; above the high-water mark ``pause_writing()``, at or
  below the low-water mark (on ACKs: ``tcp_send_space``) ``resume_writing()``.
* ``close()``: stop reading, send what is queued, then FIN (the connection lingers in the core
  until it is done, like an orphaned kernel socket); ``connection_lost(None)`` once the queue has
  drained (or the connection ended).  ``abort()``: RST, ``connection_lost(None)``.
* ``BufferedProtocol``: data is copied into ``get_buffer()`` and ``buffer_updated`` is called (as
  asyncio's ``protocols._feed_data_to_buffered_proto``).
"""
from __future__ import annotations

import asyncio
import contextvars
import errno
import logging
import socket
import types
import warnings
from typing import Any

log = logging.getLogger("aiotcpstack.aio")


def ip_to_str(ip: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(ip) == 16 else socket.AF_INET, ip)


def sockaddr(ip: bytes, port: int) -> tuple:
    if len(ip) == 16:
        return (ip_to_str(ip), port, 0, 0)
    return (ip_to_str(ip), port)


#: the transport's ``_extra`` (asyncio.BaseTransport): never used (get_extra_info is ours), so one
#: shared read-only empty mapping instead of a dict per connection
_NO_EXTRA = types.MappingProxyType({})


def errno_exception(exc: BaseException | None, peer: tuple | None = None) -> BaseException | None:
    """Give the connection's exceptions the errno the kernel would (``OSError.errno`` set)."""
    if exc is None or not isinstance(exc, OSError) or exc.errno is not None:
        return exc
    if isinstance(exc, ConnectionRefusedError):
        new: OSError = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused" if peer is None
                                              else f"Connect call failed {peer!r}")
    elif isinstance(exc, ConnectionResetError):
        new = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    elif isinstance(exc, TimeoutError):
        new = TimeoutError(errno.ETIMEDOUT, "Connection timed out" if peer is None
                           else f"Connect call failed {peer!r}")
    elif isinstance(exc, ConnectionAbortedError):
        new = ConnectionAbortedError(errno.ECONNABORTED, "Software caused connection abort")
    else:
        return exc
    new.__cause__ = exc.__cause__
    return new


class TcpTransport(asyncio.Transport):
    #: ``loop.start_tls()`` / ``StreamWriter.start_tls()`` accept us (they swap the protocol with
    #: ``set_protocol`` around ``pause_reading``/``resume_reading``, which we support)
    _start_tls_compatible = True

    # Per-connection state that starts out the same for every transport: class-level defaults,
    # shadowed by an instance attribute on the first assignment (a transport is made per
    # connection: ~20 fewer stores in __init__ and a smaller instance dict while they hold).
    _in_context = False
    _pseudo_sock: Any = None
    _protocol: Any = None
    _buffered = False
    _made = False                 # connection_made has run
    _pending: list[Any] | tuple = ()   # events held until connection_made: bytes | "eof" (list on first use)
    _closing = False
    _lost = False                 # connection_lost called (or scheduled)
    _conn_done = False            # tcp_closed seen
    _reading = True
    _writing_paused = False
    _high = 64 * 1024
    _low = 16 * 1024
    _established_waiter: asyncio.Future | None = None
    _made_waiter: asyncio.Future | None = None    # create_connection's: set after connection_made
    _eof_received = False
    _names: tuple | None = None   # (sockname, peername), made on first use
    _sndbuf = 0
    _sndbuf_max = 0

    def __init__(self, stack: Any, loop: asyncio.AbstractEventLoop, conn: Any = None,
                 server: Any = None, context: contextvars.Context | None = None) -> None:
        # (asyncio.BaseTransport.__init__ only stores ``_extra``: set directly, one call less)
        self._extra = _NO_EXTRA
        # the contextvars context every protocol callback runs in (as a selector transport's
        # reader handle): the caller's for create_connection, the server's creation context
        # (a copy per connection) for accepted ones -- never the packet reader's shared one
        self._context = contextvars.copy_context() if context is None else context
        self._stack = stack
        self._loop = loop
        self._conn = conn
        self._server = server

    # ---------------------------------------------------------------- wiring (aio internal)
    def _attach(self, conn: Any) -> None:
        self._conn = conn
        self._names = None
        cfg = getattr(conn, "config", None)
        if cfg is not None:
            self._sndbuf = n = cfg.sndbuf
            m = cfg.sndbuf_max
            self._sndbuf_max = m if m > n else n
        else:
            self._sndbuf = self._sndbuf_max = 0

    def _start(self, protocol: Any, waiter: asyncio.Future | None = None) -> None:
        """Set the protocol and schedule ``connection_made`` (like the selector transports).

        ``waiter`` (create_connection's) gets its result right after ``connection_made``:
        asyncio's ``_SelectorSocketTransport.__init__`` schedules ``connection_made`` and then,
        as the next ready callback, ``_set_result_unless_cancelled(waiter)``; setting it at the
        end of the same callback is the same order (nothing can run between two adjacent ready
        callbacks) with one ``Handle`` less per connection."""
        self.set_protocol(protocol)
        if waiter is not None:
            self._made_waiter = waiter
        self._loop.call_soon(self._connection_made, context=self._context)

    def _connection_made(self) -> None:
        try:
            try:
                self._protocol.connection_made(self)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal(exc, "connection_made() failed")
                return
            self._made = True
            if self._server is not None:
                self._server._attach(self)
            pending = self._pending
            if not pending:
                return
            self._pending = ()
            for i, item in enumerate(pending):
                if self._lost:
                    break
                if item == "eof":
                    self._deliver_eof()
                elif type(item) is int:
                    # (what follows is still held: get_extra_info('urgent_pending') counts it)
                    self._pending = pending[i + 1:]
                    try:
                        self._deliver_urgent(item)
                    finally:
                        self._pending = ()
                elif isinstance(item, tuple):
                    self._call_lost(item[1])
                else:
                    self._deliver(item)
        finally:
            w = self._made_waiter
            if w is not None:
                self._made_waiter = None
                if not w.done():
                    w.set_result(None)

    def _hold(self, item: Any) -> None:
        if not self._pending:
            self._pending = []
        self._pending.append(item)

    def _addr_names(self) -> tuple:
        names = self._names
        if names is None:
            conn = self._conn
            if conn is None:
                return (None, None)
            lip, lport = conn.local
            rip, rport = conn.remote
            names = self._names = (sockaddr(lip, lport), sockaddr(rip, rport))
        return names

    @property
    def _sock(self) -> tuple | None:
        """``getsockname()`` of the connection (computed on first use, then kept)."""
        return self._addr_names()[0]

    @property
    def _peer(self) -> tuple | None:
        """``getpeername()`` of the connection (computed on first use, then kept)."""
        return self._addr_names()[1]

    # ---------------------------------------------------------------- ConnectionHandler
    def tcp_established(self) -> None:
        w = self._established_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def tcp_data(self, data: bytes) -> None:
        if self._lost or self._closing:
            return
        if not self._made:
            self._hold(bytes(data))
            return
        if self._in_context:
            self._deliver(data)
        elif self._buffered or type(data) is not bytes or not self.direct_data:
            self._in_context = True
            try:
                self._context.run(self._deliver, data)
            finally:
                self._in_context = False
        else:
            # a plain Protocol and bytes (what a connection delivers): data_received straight in
            # the transport's context and _deliver's error handling here, in that context too
            # (one Python call less per segment of a round trip)
            self._in_context = True
            try:
                self._context.run(self._protocol.data_received, data)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._context.run(self._fatal, exc, "data_received() failed")
            finally:
                self._in_context = False

    #: tcp_data calls a plain protocol's data_received without _deliver; off only to compare
    #: both paths in tests
    direct_data = True

    def _in_ctx(self, fn: Any, *args: Any) -> Any:
        """Run a protocol callback in the transport's context (re-entrant: a callback that
        makes the stack call us back synchronously is already inside it)."""
        if self._in_context:
            return fn(*args)
        self._in_context = True
        try:
            return self._context.run(fn, *args)
        finally:
            self._in_context = False

    def _deliver(self, data: Any) -> None:
        try:
            if self._buffered:
                proto = self._protocol
                mv = memoryview(data)
                while mv:
                    buf = proto.get_buffer(len(mv))
                    n = len(buf)
                    if not n:
                        raise RuntimeError("get_buffer() returned an empty buffer")
                    if n > len(mv):
                        n = len(mv)
                    buf[:n] = mv[:n]
                    proto.buffer_updated(n)
                    mv = mv[n:]
            else:
                self._protocol.data_received(bytes(data) if type(data) is not bytes else data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "data_received() failed")

    def tcp_eof(self) -> None:
        if self._lost or self._closing:
            return
        if not self._made:
            self._hold("eof")
            return
        # a selector transport reads the data with one recv() and sees the EOF (recv() == b"") on
        # the next loop iteration; a batch delivers both at once: keep the stock order of
        # iterations (protocols and tests of asyncio race on it, e.g. extra info read after the
        # peer's response but before its close)
        self._loop.call_soon(self._deferred_eof, context=self._context)

    def _deferred_eof(self) -> None:
        # the connection may have ended since (peer's FIN answered, RST): the EOF still comes
        # first -- connection_lost was scheduled after it; not after our own close()/abort()
        if self._user_closed or not self._made or self._protocol is None:
            return
        if not self._reading:
            self._eof_held = True          # delivered by resume_reading(), as the kernel's EOF
            return
        self._deliver_eof()

    _eof_held = False
    _user_closed = False          # close() / abort() / _force_close() called

    def _deliver_eof(self) -> None:
        self._eof_received = True
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "eof_received() failed")
            return
        if not keep_open:
            self.close()

    def tcp_urgent(self, pending: int) -> None:
        """The peer sent urgent data (RFC 9293 MUST-32): ``pending`` octets, counted from the
        first one the next ``data_received`` hands over, are urgent (they stay in line)."""
        if self._lost or self._closing:
            return
        if not self._made:
            self._hold(pending)
            return
        self._in_ctx(self._deliver_urgent, pending)

    def _deliver_urgent(self, pending: int) -> None:
        # looked up here, not once per connection: urgent data is rare, a connection's set-up
        # is not, and start_tls swaps the protocol; a protocol without the method (every stock
        # asyncio one) is not told -- the bytes reach it in line all the same
        cb = getattr(self._protocol, "urgent_data_received", None)
        if cb is None:
            return
        try:
            cb(pending)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "urgent_data_received() failed")

    def tcp_send_space(self) -> None:
        if not (self._writing_paused or self._closing):
            return                 # (nothing for _send_space to do: the usual ACK of a round trip)
        if self._writing_paused and not self._in_context:
            self._in_ctx(self._send_space)
        else:
            self._send_space()

    def _send_space(self) -> None:
        # as _SelectorSocketTransport._write_ready: resume_writing() first (sslproto writes its
        # pending records, e.g. the close_notify, from it), then the deferred close() once drained
        if self._writing_paused and self.get_write_buffer_size() <= self._low:
            self._writing_paused = False
            try:
                self._protocol.resume_writing()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._loop.call_exception_handler({
                    "message": "protocol.resume_writing() failed", "exception": exc,
                    "transport": self, "protocol": self._protocol})
        if self._close_pending and self.get_write_buffer_size() == 0:
            self._close_pending = False        # the deferred close(): the buffer has drained
            if self._conn is not None and not self._conn_done:
                self._conn.close(self._now())
                self._stack_kick()
        if self._closing and not self._lost and not self._close_pending:
            self._call_lost(None)          # the deferred close() has handed everything to TCP

    def tcp_closed(self, exc: BaseException | None) -> None:
        self._conn_done = True
        if exc is not None:
            exc = errno_exception(exc, self._peer)
        stack = self._stack
        if stack is not None:
            stack._transports.discard(self)       # (Stack._transport_done, inline)
        w = self._established_waiter
        if w is not None and not w.done():
            w.set_exception(exc if exc is not None else ConnectionResetError(errno.ECONNRESET, "Connection reset"))
            self._lost = True
            return
        if self._lost:
            return
        if not self._made:
            self._hold(("lost", exc))
            return
        self._call_lost(exc)

    # ---------------------------------------------------------------- helpers
    def _queued(self) -> int:
        conn = self._conn
        return conn.send_buffer_size if conn is not None else 0

    def _now(self) -> float:
        return self._loop.time()

    def _call_lost(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._loop.call_soon(self._connection_lost, exc, context=self._context)

    def _connection_lost(self, exc: BaseException | None) -> None:
        try:
            if self._protocol is not None and self._made:
                self._protocol.connection_lost(exc)
        finally:
            # as _SelectorTransport._call_connection_lost: drop the protocol (the connection may
            # linger in TIME_WAIT holding us; it must not keep the protocol / SSL context alive)
            self._protocol = None
            self._writing_paused = False
            if self._server is not None:
                self._server._detach(self)
                self._server = None
            # (no stack kick here: nothing above touches the timer wheel, and every API call
            # the protocol made from connection_lost -- write, close, abort, ... -- kicked itself)

    def _stack_kick(self) -> None:
        if self._stack is not None:
            self._stack._kick()

    def _fatal(self, exc: BaseException, message: str) -> None:
        if not isinstance(exc, OSError):
            self._loop.call_exception_handler({"message": message, "exception": exc,
                                               "transport": self, "protocol": self._protocol})
        self._abort(exc)

    def _abort(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        # (robustness issue) schedule connection_lost(exc) first: conn.abort() reports the close
        # synchronously (tcp_closed(None)), which used to win and hide the fatal exception from
        # the protocol (asyncio's _fatal_error -> _force_close(exc) passes it on)
        self._call_lost(exc)
        conn = self._conn
        if conn is not None and not self._conn_done:
            conn.abort(self._now())
            self._stack_kick()

    # ---------------------------------------------------------------- BaseTransport
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer if self._peer is not None else default
        if name == "sockname":
            return self._sock if self._sock is not None else default
        if name == "tcp_info":
            conn = self._conn
            return conn.snapshot() if conn is not None else default
        if name == "urgent_pending":
            # RFC 9293 MUST-33: how many octets not yet handed to data_received are urgent
            # (bytes held for a connection_made still to come are not handed over yet either)
            conn = self._conn
            if conn is None:
                return default
            held = sum(len(x) for x in self._pending if type(x) is bytes)
            return conn.urgent_pending_after(held) if held else conn.urgent_pending
        if name == "connection":
            return self._conn
        if name == "stack":
            return self._stack
        if name == "socket":
            # no kernel socket: a pseudo-socket (aio/pseudosocket.py) with the TCP options
            # mapped onto this connection's config
            if self._conn is None or self._sock is None:
                return default
            if self._pseudo_sock is None:
                self._pseudo_sock = self._make_pseudo_socket()
            return self._pseudo_sock
        return default

    def _make_pseudo_socket(self) -> Any:
        from .pseudosocket import PseudoSocket
        conn = self._conn
        peer = self._peer

        def get_config() -> Any:
            return conn.config

        def set_config(cfg: Any) -> None:
            old = conn.config
            conn.config = cfg
            if cfg.sndbuf != old.sndbuf:        # SO_SNDBUF set: fixed size (Linux: SOCK_SNDBUF_LOCK)
                self._sndbuf = self._sndbuf_max = cfg.sndbuf
                self._maybe_pause()
            if (cfg.ip_ttl, cfg.ip_tos, cfg.ipv6_unicast_hops, cfg.ipv6_tclass, cfg.ip_options) != \
                    (old.ip_ttl, old.ip_tos, old.ipv6_unicast_hops, old.ipv6_tclass, old.ip_options):
                # IP_TTL / IP_TOS / IPV6_* / IP_OPTIONS: the route's headers, from the next segment
                route = self._stack.core.routes.get(conn)
                if route is not None:
                    route.apply_config(cfg)
            if cfg.keepalive and not old.keepalive and getattr(conn, "state", None) == "ESTABLISHED":
                conn._arm(conn._t_ka, self._now() + cfg.keepalive_time)
                self._stack_kick()

        def ip_options() -> bytes:
            # what the connection sends (IP_OPTIONS of the application, or a source route
            # received with the peer's SYN), in the application's form (Linux ip_options_undo)
            route = self._stack.core.routes.get(conn)
            opt = getattr(route, "ipopt", None)
            if opt is None:
                return b""
            from ..wire.ipv4_options import undo_options
            return undo_options(opt)

        fam = socket.AF_INET6 if len(self._sock) == 4 else socket.AF_INET
        ps = PseudoSocket(fam, self._sock, get_config=get_config, set_config=set_config,
                          urgent_pending=lambda: conn.urgent_pending, ip_options=ip_options)
        ps.getpeername = lambda: peer          # type: ignore[method-assign]
        return ps

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._user_closed = True
        if self._closing:
            return
        self._closing = True
        self._reading = False
        conn = self._conn
        if conn is not None and not self._conn_done:
            # (the write buffer is what lies beyond the socket's send buffer, at least
            # ``_sndbuf``: a queue within it needs no get_write_buffer_size call)
            if conn.send_buffer_size > self._sndbuf and self.get_write_buffer_size() > 0:
                # like a selector transport with a non-empty buffer: the socket (our FIN) is
                # closed once the buffer has drained, and write() keeps appending until then
                # (sslproto writes its close_notify after close() when writing was paused)
                self._close_pending = True
            else:
                conn.close(self._loop.time())
                self._stack_kick()
        # As _SelectorTransport.close(): connection_lost(None) as soon as our own buffer is
        # empty, i.e. everything was handed to TCP (our "kernel socket").  The FIN handshake and
        # retransmissions go on without the application, like an orphaned kernel socket (the
        # stack lingers for such orphans before it shuts down: Stack.linger_orphans); the
        # protocol is dropped then, so nothing (an SSL context) is kept alive by the transport.
        if self._conn_done or not self._close_pending:
            self._call_lost(None)

    @property
    def is_orphan(self) -> bool:
        """Closed by the application, its TCP connection still sending (data not yet acked)."""
        return self._user_closed and not self._conn_done and self._conn is not None \
            and not self._close_pending and self._queued() > 0

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)

    def get_protocol(self) -> Any:
        return self._protocol

    # ---------------------------------------------------------------- ReadTransport
    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        if self._closing or not self._reading:
            return
        self._reading = False
        if self._conn is not None and not self._conn_done:
            self._conn.set_reading(False, self._now())

    def resume_reading(self) -> None:
        if self._closing or self._reading:
            return
        self._reading = True
        if self._conn is not None and not self._conn_done:
            self._conn.set_reading(True, self._now())
            self._stack_kick()
        if self._eof_held:
            self._eof_held = False
            self._loop.call_soon(self._deferred_eof, context=self._context)

    # ---------------------------------------------------------------- WriteTransport
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high = high
        self._low = low
        self._maybe_pause()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low, self._high)

    def get_write_buffer_size(self) -> int:
        """What a kernel socket would not have taken yet: the send queue beyond the socket's send
        buffer, which grows with the congestion window like Linux's ``tcp_sndbuf_expand``
        (``max(sndbuf, 2 * cwnd)`` capped at ``sndbuf_max``)."""
        conn = self._conn
        if conn is None:
            return 0
        limit = self._sndbuf
        cc = getattr(conn, "cc", None)
        if cc is not None:
            grown = 2 * cc.cwnd
            if grown > limit:
                limit = grown if grown < self._sndbuf_max else self._sndbuf_max
        q = conn.send_buffer_size - limit
        return q if q > 0 else 0

    def _maybe_pause(self) -> None:
        if not self._writing_paused and self.get_write_buffer_size() > self._high:
            self._writing_paused = True
            try:
                self._protocol.pause_writing()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._loop.call_exception_handler({
                    "message": "protocol.pause_writing() failed", "exception": exc,
                    "transport": self, "protocol": self._protocol})

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        if self._eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        if self._conn_done or self._lost or (self._closing and not self._close_pending):
            # asyncio logs "socket.send() raised exception." after the connection is lost
            return
        # conn.send copies a reusable buffer before it returns (SendBuffer.append: into pool
        # blocks when large, else one bytes copy), so asyncio's "the caller may reuse it" holds
        conn = self._conn
        conn.send(data, self._loop.time(), True)
        if conn.tail_held and not self._push_pending:
            # a partial TSO frame after full ones is held while the protocol may still be
            # writing in this turn of the loop; sent at the start of the next (_push)
            self._push_pending = True
            self._loop.call_soon(self._push)
        stack = self._stack
        if stack is not None and not stack._in_batch:
            stack._kick()          # (_stack_kick; inside a receive batch the one after it covers us)
        if len(conn.sndbuf) > self._sndbuf + self._high:
            # (get_write_buffer_size() is the queue beyond a limit of at least _sndbuf: below
            # this it cannot exceed the high-water mark -- the usual write skips the computation)
            self._maybe_pause()

    def write_urgent(self, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` as urgent data (RFC 9293 MUST-30, the kernel's ``send(MSG_OOB)``): it
        goes in line after what was written before; every segment sent until the peer
        acknowledges it carries URG and the urgent pointer to the octet after it.  A Linux peer
        reads its last octet with ``recv(MSG_OOB)`` (or in line with ``SO_OOBINLINE``) and
        ``sockatmark()`` tells it where it is.  Not subject to the write buffer limits' pausing
        any differently from :meth:`write`."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        if self._eof_written:
            raise RuntimeError("Cannot call write_urgent() after write_eof()")
        if not data:
            return
        if self._conn_done or self._lost or (self._closing and not self._close_pending):
            return
        conn = self._conn
        conn.send_urgent(data, self._loop.time())
        self._stack_kick()
        if len(conn.sndbuf) > self._sndbuf + self._high:
            self._maybe_pause()

    _push_pending = False

    def _push(self) -> None:
        self._push_pending = False
        conn = self._conn
        if conn is not None and not self._conn_done:
            conn.push(self._now())
            self._stack_kick()

    _eof_written = False
    _close_pending = False          # close() called with a non-empty write buffer

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        if self._closing or self._eof_written:
            return
        self._eof_written = True
        if self._conn is not None and not self._conn_done:
            self._conn.shutdown(self._now())
            self._stack_kick()

    def can_write_eof(self) -> bool:
        return True

    def abort(self) -> None:
        self._user_closed = True
        self._closing = True
        self._abort(None)

    def _force_close(self, exc: BaseException | None) -> None:
        """What asyncio's ``sslproto`` calls on handshake / shutdown timeouts and fatal errors
        (``_SelectorTransport._force_close``): drop what is not yet written, close the "socket"
        -- FIN like the kernel's close() (RST only with unread received data, ``conn.close``) --
        and ``connection_lost(exc)``."""
        if self._lost:
            return
        self._user_closed = True
        self._closing = True
        self._reading = False
        self._close_pending = False
        self._call_lost(exc)       # (robustness issue) before conn.close(): see _abort
        conn = self._conn
        if conn is not None and not self._conn_done:
            conn.close(self._now())
            self._stack_kick()

    def __repr__(self) -> str:
        state = "closing" if self._closing else "open"
        return f"<TcpTransport {state} {self._sock} -> {self._peer}>"

    def __del__(self, _warn: Any = warnings.warn) -> None:
        # as _SelectorTransport.__del__: a transport collected with its connection still open
        conn = self._conn
        if conn is not None and not self._conn_done and not self._lost and not self._closing:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            try:
                loop = self._loop
                if not loop.is_closed():
                    conn.close(loop.time())
                    self._stack_kick()
            except Exception:  # noqa: BLE001
                pass
