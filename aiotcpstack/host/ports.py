"""Kernel port reservation for shared mode.

For every local TCP port the user-space stack uses on a kernel-owned address, a kernel TCP socket
(created inside the stack's namespace) is *bound* - never listening - to (addr, port).  Then no kernel
program can bind/listen on it, the kernel's ephemeral allocation (connect(), bind(port 0)) skips it, and
our own EADDRINUSE is honest: ``reserve`` raises exactly what ``loop.create_server`` would.

SO_REUSEADDR: Linux lets two sockets share a port when *both* set SO_REUSEADDR and the existing one is
not listening - a reservation socket left with SO_REUSEADDR would therefore not keep a REUSEADDR-setting
program (asyncio's create_server sets it by default) from binding and even listening.  So
``reserve(..., reuse_address=True)`` (what create_server does by default on Unix: succeed even with
TIME_WAIT sockets on the port) sets SO_REUSEADDR only for the bind and clears it right after; later
kernel listeners then conflict with our socket at listen() time.

A bound, non-listening kernel socket makes the kernel answer a SYN to that port with RST (it is not a
listener); the RstGuard (firewall.py) keeps those segments from the kernel.
"""
from __future__ import annotations

import errno
import ipaddress
import socket
import threading

from . import netns as _ns


class PortReservation:
    """Reserve local TCP ports in the kernel of namespace ``netns`` (None: the current one)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._factory = _ns.NetnsSocketFactory(netns)
        self._socks: dict[tuple[str, int], socket.socket] = {}
        self._by_port: dict[int, set[tuple[str, int]]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _new_socket(self, family: int) -> socket.socket:
        return self._factory.socket(family, socket.SOCK_STREAM)

    def reserve(self, addr: str, port: int, reuse_address: bool = False, v6only: bool = True) -> int:
        """Bind a kernel socket to (addr, port); ``port=0``: the kernel picks an ephemeral port.

        Returns the port.  Raises OSError(EADDRINUSE) like the stock loop when the port is taken,
        OSError(EADDRNOTAVAIL) when ``addr`` is not local.  ``addr`` may be "" / "0.0.0.0" / "::".
        """
        if self._closed:
            raise RuntimeError("PortReservation is closed")
        if addr in ("", None):
            addr = "0.0.0.0"
        ip = ipaddress.ip_address(addr.split("%")[0])
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        s = self._new_socket(family)
        try:
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
            if reuse_address:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((addr, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(errno.EADDRINUSE,
                                  f"error while attempting to bind on address {(addr, port)!r}: "
                                  f"address already in use") from None
                raise OSError(exc.errno, f"error while attempting to bind on address {(addr, port)!r}: "
                                         f"{exc.strerror.lower() if exc.strerror else exc}") from None
            if reuse_address:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
            got = s.getsockname()[1]
        except BaseException:
            s.close()
            raise
        with self._lock:
            key = (str(ip), got)
            self._socks[key] = s
            self._by_port.setdefault(got, set()).add(key)
        return got

    def release(self, port: int, addr: str | None = None) -> None:
        """Drop the reservation(s) of ``port`` (all addresses, or only ``addr``). Unknown ports: no-op."""
        want = None if addr is None else str(ipaddress.ip_address((addr or "0.0.0.0").split("%")[0]))
        with self._lock:
            keys = [k for k in self._by_port.get(port, ()) if want is None or k[0] == want]
            socks = [self._socks.pop(k) for k in keys]
            left = self._by_port.get(port, set()).difference(keys)
            if left:
                self._by_port[port] = left
            else:
                self._by_port.pop(port, None)
        for s in socks:
            s.close()

    def reserved(self) -> list[tuple[str, int]]:
        with self._lock:
            return sorted(self._socks)

    def __contains__(self, port: int) -> bool:
        with self._lock:
            return port in self._by_port

    def close(self) -> None:
        with self._lock:
            socks = list(self._socks.values())
            self._socks.clear()
            self._by_port.clear()
            self._closed = True
        for s in socks:
            s.close()
        self._factory.close()

    def __enter__(self) -> "PortReservation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
