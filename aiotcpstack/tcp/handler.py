"""What a TCP connection tells the layer above it (the Transport in ``aio/``, a test's recorder).

CONTRACT: ``TcpConnection`` calls these methods on its handler; it never imports asyncio.
Every call happens from inside ``TcpConnection`` methods (segment input, timers, API calls).
"""
from __future__ import annotations

from typing import Protocol


class ConnectionHandler(Protocol):
    def tcp_established(self) -> None:
        """The handshake completed (SYN_SENT/SYN_RECEIVED -> ESTABLISHED)."""

    def tcp_data(self, data: bytes) -> None:
        """In-order data for the application (once per batch: see ``TcpConnection.end_batch``)."""

    def tcp_eof(self) -> None:
        """The peer's FIN was reached in sequence (no more data will come)."""

    # Optional (looked up with getattr when urgent data arrives; a handler without it is not told):
    # def tcp_urgent(self, pending: int) -> None:
    #     """A new run of urgent data (RFC 9293 MUST-32): ``pending`` octets, counted from the
    #     first one the next ``tcp_data`` hands over, are urgent (the data stays in line;
    #     ``TcpConnection.urgent_pending`` gives the current count at any time)."""

    def tcp_send_space(self) -> None:
        """Bytes left the send buffer (acked): write flow control may resume."""

    def tcp_closed(self, exc: BaseException | None) -> None:
        """The connection is over for the application, exactly once: ``None`` on an orderly
        close, ``ConnectionRefusedError`` (RST to our SYN), ``ConnectionResetError`` (RST),
        ``TimeoutError`` (retransmissions / SYN retries / user timeout / keepalive exhausted)."""
