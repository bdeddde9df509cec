"""Demultiplexing by 4-tuple (the kernel's established hash ``__inet_lookup_established``) and
listeners by ``(ip, port)`` with a wildcard (``__inet_lookup_listener``).  Always dict lookups,
never a scan.

The tables are plain dicts that :class:`~aiotcpstack.ip.core.NetworkCore` fills and empties (it
also owns the port accounting, because taking a local port may need the kernel's reservation in
shared mode); the receive path reads ``conns`` directly.
"""
from __future__ import annotations

from typing import Any

#: The wildcard local address of a listener bound to "all addresses" (v4 and v6).
ANY = b""
#: (IPv6 issue) per-family wildcards, like a socket bound to 0.0.0.0 or to :: with IPV6_V6ONLY
#: (what asyncio's create_server makes: one socket per family, V6ONLY on the v6 one)
ANY4 = b"\0" * 4
ANY6 = b"\0" * 16

Key = tuple[bytes, int, bytes, int]


class DemuxTable:
    __slots__ = ("conns", "listeners", "port_users")

    def __init__(self) -> None:
        #: (local_ip, local_port, remote_ip, remote_port) -> connection
        self.conns: dict[Key, Any] = {}
        #: (local_ip or ANY, local_port) -> listener
        self.listeners: dict[tuple[bytes, int], Any] = {}
        #: local port -> number of connections + listeners using it (allocation / release)
        self.port_users: dict[int, int] = {}

    def lookup(self, lip: bytes, lport: int, rip: bytes, rport: int) -> Any:
        return self.conns.get((lip, lport, rip, rport))

    def listener_for(self, lip: bytes, lport: int) -> Any:
        """The listener for a segment to ``(lip, lport)``: exact address first, then wildcard."""
        listeners = self.listeners
        return (listeners.get((lip, lport)) or listeners.get((ANY6 if len(lip) == 16 else ANY4, lport))
                or listeners.get((ANY, lport)))

    def listen_conflict(self, lip: bytes, lport: int) -> bool:
        """Would a listener on ``(lip, lport)`` clash with an existing one (EADDRINUSE)?"""
        listeners = self.listeners
        if (lip, lport) in listeners or (ANY, lport) in listeners:
            return True
        if lip == ANY:
            return any(p == lport for _, p in listeners)   # listen() time only
        # (IPv6 issue) a family wildcard clashes with that family's addresses (no SO_REUSEADDR
        # sharing between a wildcard and a specific address, as Linux's bind); 0.0.0.0 and a
        # V6ONLY :: do not clash with each other
        n = len(lip)
        wild = ANY6 if n == 16 else ANY4
        if (wild, lport) in listeners:
            return True
        return lip == wild and any(p == lport and len(a) == n for a, p in listeners)

    def port_in_use(self, port: int) -> bool:
        return port in self.port_users
