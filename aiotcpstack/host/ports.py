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
import os
import socket
import threading

from . import netns as _ns


class PortReservation:
    """Reserve local TCP ports in the kernel of namespace ``netns`` (None: the current one).

    Bookkeeping is kept small (a shared-mode stack holds one reservation per connection, 10,000s of
    them): per reserved address a dict ``port -> descriptor`` (the socket objects are detached; the
    descriptors are closed by :meth:`release` / :meth:`close`)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._factory = _ns.NetnsSocketFactory(netns)
        #: normalised address ("0.0.0.0", "::", "198.18.0.1", ...) -> {port: fd}
        self._fds: dict[str, dict[int, int]] = {}
        self._norm_cache: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _new_socket(self, family: int) -> socket.socket:
        return self._factory.socket(family, socket.SOCK_STREAM)

    def _norm(self, addr: str | None) -> tuple[str, int]:
        """``(normalised address, family)``; ValueError for a bad address."""
        if addr in ("", None):
            addr = "0.0.0.0"
        got = self._norm_cache.get(addr)          # type: ignore[arg-type]
        if got is None:
            ip = ipaddress.ip_address(addr.split("%")[0])     # type: ignore[union-attr]
            got = (str(ip), socket.AF_INET6 if ip.version == 6 else socket.AF_INET)
            if len(self._norm_cache) < 64:
                self._norm_cache[addr] = got      # type: ignore[index]
        return got

    @staticmethod
    def _bind(s: socket.socket, family: int, addr: str, port: int, reuse_address: bool, v6only: bool) -> None:
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

    def reserve(self, addr: str, port: int, reuse_address: bool = False, v6only: bool = True) -> int:
        """Bind a kernel socket to (addr, port); ``port=0``: the kernel picks an ephemeral port.

        Returns the port.  Raises OSError(EADDRINUSE) like the stock loop when the port is taken,
        OSError(EADDRNOTAVAIL) when ``addr`` is not local.  ``addr`` may be "" / "0.0.0.0" / "::".
        """
        if self._closed:
            raise RuntimeError("PortReservation is closed")
        key, family = self._norm(addr)
        s = self._new_socket(family)
        try:
            self._bind(s, family, addr or "0.0.0.0", port, reuse_address, v6only)
            got = s.getsockname()[1] if port == 0 else port
        except BaseException:
            s.close()
            raise
        with self._lock:
            self._fds.setdefault(key, {})[got] = s.detach()
        return got

    def reserve_many(self, addr: str, ports: list[int], v6only: bool = True) -> list[int]:
        """Reserve each of ``ports`` (non-zero) on ``addr``, one socket each, in one namespace switch.
        Ports that are taken (EADDRINUSE) or not allowed (EACCES) are skipped; returns the ports
        reserved, in order.  Any other error releases what this call reserved and is raised."""
        if self._closed:
            raise RuntimeError("PortReservation is closed")
        key, family = self._norm(addr)
        socks = self._factory.sockets(len(ports), family, socket.SOCK_STREAM)
        got: list[int] = []
        fds: list[int] = []
        bind = self._bind
        try:
            for i, port in enumerate(ports):
                s = socks[i]
                try:
                    bind(s, family, addr or "0.0.0.0", port, False, v6only)
                except OSError as exc:
                    s.close()
                    if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                        continue
                    raise
                fds.append(s.detach())
                got.append(port)
        except BaseException:
            for s in socks:
                s.close()                   # closing a detached socket object is a no-op
            for fd in fds:
                os.close(fd)
            raise
        with self._lock:
            d = self._fds.setdefault(key, {})
            for port, fd in zip(got, fds):
                d[port] = fd
        return got

    def holds(self, port: int, addr: str) -> bool:
        """Is ``port`` reserved on exactly ``addr``?"""
        return port in self._fds.get(self._norm(addr)[0], ())

    def release(self, port: int, addr: str | None = None) -> None:
        """Drop the reservation(s) of ``port`` (all addresses, or only ``addr``). Unknown ports: no-op."""
        want = None if addr is None else self._norm(addr)[0]
        fds = []
        with self._lock:
            for key, d in self._fds.items():
                if want is None or key == want:
                    fd = d.pop(port, None)
                    if fd is not None:
                        fds.append(fd)
        for fd in fds:
            os.close(fd)

    def release_many(self, ports: list[int], addr: str | None = None) -> None:
        """``release`` for many ports (on every address, or only ``addr``); unknown ones: no-op."""
        want = None if addr is None else self._norm(addr)[0]
        fds = []
        with self._lock:
            for key, d in self._fds.items():
                if want is None or key == want:
                    for port in ports:
                        fd = d.pop(port, None)
                        if fd is not None:
                            fds.append(fd)
        for fd in fds:
            os.close(fd)

    def reserved(self) -> list[tuple[str, int]]:
        with self._lock:
            return sorted((key, port) for key, d in self._fds.items() for port in d)

    def __contains__(self, port: int) -> bool:
        with self._lock:
            return any(port in d for d in self._fds.values())

    def __len__(self) -> int:
        return sum(len(d) for d in self._fds.values())

    def close(self) -> None:
        with self._lock:
            fds = [fd for d in self._fds.values() for fd in d.values()]
            self._fds.clear()
            self._closed = True
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._factory.close()

    def __enter__(self) -> "PortReservation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
