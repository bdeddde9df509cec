"""Listening endpoint (the seam the full listen path replaces).

Today: a SYN to a listening ``(ip, port)`` creates a :class:`TcpConnection` right away
(``accept_syn`` sends the SYN-ACK; it sits in the demux table in SYN_RECEIVED) and, once the
handshake completes, the connection is handed to ``on_accept(conn)``, which returns the
connection's real handler (the Transport) or None to refuse it.

The later listen-path issue replaces this class with a SYN queue of request socks (no full
connection until the final ACK), an accept queue bounded by ``backlog``, SYN cookies and the
``ListenOverflows``/``ListenDrops`` accounting of Linux (``seeds/000_*``).  The interface the
core uses stays: ``listener.on_segment(lip, rip, hdr, payload, now)`` for segments that matched
no connection, and ``listener.close()``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..wire.tcp import ACK, RST, SYN, FIN

if TYPE_CHECKING:  # pragma: no cover
    from .core import NetworkCore


class _Embryo:
    """Handler of a connection in SYN_RECEIVED: forwards the completion to the listener."""

    __slots__ = ("listener", "conn", "done")

    def __init__(self, listener: "Listener") -> None:
        self.listener = listener
        self.conn: Any = None
        self.done = False

    def tcp_established(self) -> None:
        if self.done:
            return
        self.done = True
        self.listener._established(self.conn)

    def tcp_data(self, data: bytes) -> None:  # pragma: no cover - cannot happen before established
        pass

    def tcp_eof(self) -> None:  # pragma: no cover
        pass

    def tcp_send_space(self) -> None:
        pass

    def tcp_closed(self, exc: BaseException | None) -> None:
        if not self.done:
            self.done = True
            self.listener._embryo_failed(self.conn)


class Listener:
    def __init__(self, core: "NetworkCore", ip: bytes, port: int, backlog: int,
                 on_accept: Callable[[Any], Any], config: Any = None) -> None:
        self.core = core
        self.ip = ip
        self.port = port
        self.backlog = max(1, backlog)
        self.on_accept = on_accept
        self.config = config
        self.pending: set[Any] = set()   # connections in SYN_RECEIVED
        self.closed = False

    def on_segment(self, lip: bytes, rip: bytes, hdr: Any, payload: Any, now: float) -> None:
        core = self.core
        flags = hdr.flags
        if flags & RST:
            return
        if flags & ACK:
            # no request sock / child matched this ACK (RFC 9293 3.10.7.2: LISTEN + ACK -> RST)
            core.send_reset(lip, rip, hdr, len(payload))
            return
        if not flags & SYN or flags & FIN:
            return
        counters = core.counters
        limit = min(self.backlog, core.config.max_syn_backlog)
        if len(self.pending) >= limit:
            counters["ListenDrops"] += 1
            counters["TCPReqQFullDrop"] += 1
            return
        embryo = _Embryo(self)
        conn = core.new_connection(lip, self.port, rip, hdr.src_port, embryo, now, config=self.config, peer_syn=hdr)
        embryo.conn = conn
        self.pending.add(conn)
        conn.accept_syn(hdr, now)

    def _established(self, conn: Any) -> None:
        self.pending.discard(conn)
        if self.closed:
            conn.abort(self.core.now)
            return
        handler = self.on_accept(conn)
        if handler is None:
            self.core.counters["ListenDrops"] += 1
            conn.abort(self.core.now)
            return
        conn.handler = handler
        handler.tcp_established()

    def _embryo_failed(self, conn: Any) -> None:
        self.pending.discard(conn)

    def close(self, now: float) -> None:
        """Stop listening; half-open connections are reset (like closing a listening socket)."""
        if self.closed:
            return
        self.closed = True
        self.core.remove_listener(self)
        for conn in list(self.pending):
            conn.abort(now)
        self.pending.clear()
