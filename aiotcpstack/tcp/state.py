"""TCP connection state names (RFC 9293 section 3.3.2), as the strings ``TcpConnection.state`` holds.

The names are the contract's spelling (``docs/contracts.md``); compare with ``==`` (they are
interned literals, so ``is`` also works on the hot path).
"""
from __future__ import annotations

CLOSED = "CLOSED"
LISTEN = "LISTEN"
SYN_SENT = "SYN_SENT"
SYN_RECEIVED = "SYN_RECEIVED"
ESTABLISHED = "ESTABLISHED"
FIN_WAIT_1 = "FIN_WAIT_1"
FIN_WAIT_2 = "FIN_WAIT_2"
CLOSE_WAIT = "CLOSE_WAIT"
CLOSING = "CLOSING"
LAST_ACK = "LAST_ACK"
TIME_WAIT = "TIME_WAIT"

ALL_STATES = (CLOSED, LISTEN, SYN_SENT, SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2,
              CLOSE_WAIT, CLOSING, LAST_ACK, TIME_WAIT)

# RFC 9293 3.3.2: the states after the handshake ("synchronized states").
SYNCHRONIZED = frozenset((ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING, LAST_ACK, TIME_WAIT))

# States in which we may still send data (our FIN not yet queued).
CAN_SEND = frozenset((ESTABLISHED, CLOSE_WAIT))

# States in which the peer may still send us data (its FIN not yet received).
CAN_RECEIVE = frozenset((ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2))

# Linux tcp_need_reset(): states in which abort()/close-with-unread-data sends a RST.
NEED_RESET = frozenset((ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, FIN_WAIT_2, SYN_RECEIVED))
