"""Kernel address changes on one interface, for shared mode (robustness issue: "the address removed").

Shared mode uses the interface's kernel addresses, discovered when the stack starts; this keeps
them in step while it runs.  :class:`AddressMonitor` is a ``NETLINK_ROUTE`` socket opened inside
the stack's network namespace (:func:`~aiotcpstack.host.netns.socket_in_netns`), subscribed to
the multicast groups ``RTMGRP_IPV4_IFADDR`` and ``RTMGRP_IPV6_IFADDR``, non-blocking and read from
the stack's own event loop with ``loop.add_reader`` (the default asyncio loop and uvloop alike; no
thread).  pyroute2's synchronous ``IPRoute`` cannot run inside a running loop, so the messages
(``nlmsghdr`` + ``ifaddrmsg`` + attributes, ``include/uapi/linux/if_addr.h``) are parsed here with
``struct`` -- a few dozen lines, cross-checked against pyroute2's ``ifaddrmsg`` encoder in
``tests/unit/test_addr_monitor.py``.

Open the monitor *before* discovering the addresses: every change after the snapshot is then
queued in the socket, and replaying those events (each one sets one address's state) on top of
the snapshot converges to the kernel's state.  If the socket's buffer overflowed (``ENOBUFS``:
the loop was blocked while many changes happened) notifications were lost; the monitor then asks
the kernel for a full dump (``RTM_GETADDR``) on the same socket and hands the snapshot to
``on_resync``, which reconciles -- dumping once more if the buffer overflowed again during the
dump (its answer may be stale), and asking again when the answer never comes (lost to a full buffer
itself) or the request is refused (``EBUSY``: an abandoned dump still runs on the socket).

Only the interface ``ifindex`` is reported.  IPv6 addresses still in duplicate address detection
(``IFA_F_TENTATIVE``) or that failed it (``IFA_F_DADFAILED``) are not usable yet: their
``RTM_NEWADDR`` is not reported as an addition (the one sent when DAD succeeds is).
"""
from __future__ import annotations

import errno
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Any, Callable

from . import netns as _ns

log = logging.getLogger("aiotcpstack.host")

RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 2, 3, 4
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_DADFAILED, IFA_F_TENTATIVE = 0x08, 0x40

_NLMSGHDR = struct.Struct("=IHHII")      # len, type, flags, seq, pid
_IFADDRMSG = struct.Struct("=BBBBI")     # family, prefixlen, flags, scope, index
_RTA = struct.Struct("=HH")              # len, type


@dataclass(frozen=True)
class AddrEvent:
    """One ``RTM_NEWADDR`` / ``RTM_DELADDR``: ``address`` is bytes (4 or 16)."""
    added: bool
    ifindex: int
    address: bytes
    prefixlen: int
    flags: int          # IFA_F_* (the 32-bit IFA_FLAGS attribute when present)

    @property
    def usable(self) -> bool:
        return not self.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)


def parse_messages(data: bytes | memoryview) -> list[tuple[int, int, int, Any]]:
    """Split one netlink datagram: ``[(type, seq, pid, payload)]`` where ``payload`` is an
    :class:`AddrEvent` for RTM_NEWADDR/RTM_DELADDR, the (negative) errno for NLMSG_ERROR, else
    None.  Truncated or malformed messages end the parse (nothing after them is trusted)."""
    out: list[tuple[int, int, int, Any]] = []
    mv = memoryview(data)
    n = len(mv)
    off = 0
    while off + _NLMSGHDR.size <= n:
        ln, typ, _flags, seq, pid = _NLMSGHDR.unpack_from(mv, off)
        if ln < _NLMSGHDR.size or off + ln > n:
            break
        body = off + _NLMSGHDR.size
        end = off + ln
        payload: Any = None
        if typ in (RTM_NEWADDR, RTM_DELADDR):
            payload = _parse_ifaddr(mv, body, end, typ == RTM_NEWADDR)
            if payload is None:
                off += (ln + 3) & ~3
                continue
        elif typ == NLMSG_ERROR and body + 4 <= end:
            payload = struct.unpack_from("=i", mv, body)[0]
        out.append((typ, seq, pid, payload))
        off += (ln + 3) & ~3
    return out


def _parse_ifaddr(mv: memoryview, off: int, end: int, added: bool) -> AddrEvent | None:
    if off + _IFADDRMSG.size > end:
        return None
    family, plen, flags, _scope, index = _IFADDRMSG.unpack_from(mv, off)
    size = 4 if family == socket.AF_INET else 16 if family == socket.AF_INET6 else 0
    if not size:
        return None
    a = off + _IFADDRMSG.size
    address = local = None
    while a + _RTA.size <= end:
        alen, atype = _RTA.unpack_from(mv, a)
        if alen < _RTA.size or a + alen > end:
            break
        val = mv[a + _RTA.size:a + alen]
        atype &= 0x3FFF                      # NLA_F_NESTED / NLA_F_NET_BYTEORDER
        if atype == IFA_ADDRESS and len(val) == size:
            address = bytes(val)
        elif atype == IFA_LOCAL and len(val) == size:
            local = bytes(val)
        elif atype == IFA_FLAGS and len(val) >= 4:
            flags = struct.unpack_from("=I", val)[0]
        a += (alen + 3) & ~3
    # IFA_LOCAL is the local address when present (IFA_ADDRESS is then the peer's, on
    # point-to-point links); IPv6 usually sends IFA_ADDRESS only (as iproute2 reads them)
    addr = local if local is not None else address
    if addr is None:
        return None
    return AddrEvent(added, index, addr, plen, flags)


class AddressMonitor:
    """See the module docstring.

    ``on_event(AddrEvent)`` for every change on ``ifindex`` (additions only when ``usable``);
    ``on_resync([(address, prefixlen), ...])`` with the interface's complete usable address list
    after a lost notification (``ENOBUFS``).  ``ifindex`` may be set after construction (open the
    monitor, discover the interface, set it, then :meth:`attach`)."""

    #: messages read per wake-up at most (the rest on the next turn of the loop)
    BATCH = 64

    def __init__(self, netns: str | None, on_event: Callable[[AddrEvent], None],
                 on_resync: Callable[[list[tuple[bytes, int]]], None] | None = None, ifindex: int = 0,
                 rcvbuf: int | None = None) -> None:
        self.netns = netns
        self.ifindex = ifindex
        self.on_event = on_event
        self.on_resync = on_resync
        self.overflows = 0                   # ENOBUFS seen
        self.resyncs = 0                     # dumps completed
        self._loop: Any = None
        self._dump_seq: int | None = None    # the dump we wait for
        self._dump: list[tuple[bytes, int]] = []
        self._dump_again = False            # an overflow during that dump: dump once more
        self._watchdog: Any = None
        self._seq = 0
        sock = _ns.socket_in_netns(netns, socket.AF_NETLINK,
                                   socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                   socket.NETLINK_ROUTE)
        try:
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            self._portid = sock.getsockname()[0]
        except BaseException:
            sock.close()
            raise
        self.sock: socket.socket | None = sock

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def attach(self, loop: Any) -> None:
        """Start reading on ``loop`` (the stack's loop: callbacks run on it)."""
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self._on_readable)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is None:
            return
        self._end_dump()
        if self._loop is not None:
            try:
                self._loop.remove_reader(sock.fileno())
            except Exception:  # noqa: BLE001 - loop already closed
                pass
            self._loop = None
        sock.close()

    # ------------------------------------------------------------------ reading
    def _on_readable(self) -> None:
        for _ in range(self.BATCH):
            sock = self.sock
            if sock is None:
                return
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self._overflowed()
                    continue
                log.error("address monitor: %s; kernel address changes are no longer followed", exc)
                self.close()
                return
            self._handle(data)

    def _overflowed(self) -> None:
        """The kernel dropped messages for us (``ENOBUFS``): ask for the whole list.  During a
        dump, what it reports may already be stale (a later change was lost): dump once more
        after it."""
        self.overflows += 1
        log.warning("address monitor: netlink buffer overflowed (notifications lost); re-reading "
                    "the interface's addresses")
        if self._dump_seq is not None:
            self._dump_again = True
        else:
            self.request_dump()

    def _handle(self, data: bytes) -> None:
        for typ, seq, pid, payload in parse_messages(data):
            # the answers to our dump requests carry our port id and one of our sequence numbers;
            # notifications carry the port id of whoever made the change (0: the kernel itself)
            ours = pid == self._portid and 0 < seq <= self._seq
            current = ours and seq == self._dump_seq
            if typ == RTM_NEWADDR or typ == RTM_DELADDR:
                ev: AddrEvent = payload
                if ev.ifindex != self.ifindex:
                    continue
                if ours:
                    if current and ev.usable:
                        self._dump.append((ev.address, ev.prefixlen))
                    continue            # (an abandoned dump's answers: ignored)
                if ev.added and not ev.usable:
                    continue
                self._call(self.on_event, ev)
            elif current and typ == NLMSG_DONE:
                self._end_dump()
                if self._dump_again:
                    self.request_dump()
                    continue
                snapshot, self._dump = self._dump, []
                self.resyncs += 1
                if self.on_resync is not None:
                    self._call(self.on_resync, snapshot)
            elif current and typ == NLMSG_ERROR:
                # e.g. EBUSY: a dump we abandoned is still running on this socket
                self._end_dump()
                log.info("address monitor: address dump refused (errno %s); retrying", -(payload or 0))
                self._retry_dump()

    def _call(self, fn: Callable[..., None], arg: Any) -> None:
        try:
            fn(arg)
        except Exception:  # noqa: BLE001 - a failing consumer must not stop the monitor
            log.exception("address monitor callback %r failed", fn)

    #: a dump that has not finished after this long is asked for again (its answer, or the
    #: refusal of the request, can itself be lost to a full socket buffer)
    DUMP_TIMEOUT = 1.0

    def request_dump(self) -> None:
        """Ask for every address (``RTM_GETADDR`` dump); the result goes to ``on_resync``."""
        sock = self.sock
        if sock is None:
            return
        self._end_dump()
        self._seq += 1
        seq = self._seq
        body = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        msg = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body
        try:
            sock.send(msg)
        except OSError as exc:
            log.warning("address monitor: cannot request an address dump: %s", exc)
            self._retry_dump()
            return
        self._dump_seq = seq
        self._dump = []
        self._dump_again = False
        if self._loop is not None:
            self._watchdog = self._loop.call_later(self.DUMP_TIMEOUT, self._dump_timeout, seq)

    def _dump_timeout(self, seq: int) -> None:
        self._watchdog = None
        if self._dump_seq == seq:
            self.request_dump()

    def _retry_dump(self) -> None:
        if self._loop is not None and self.sock is not None:
            self._watchdog = self._loop.call_later(0.05, self.request_dump)

    def _end_dump(self) -> None:
        self._dump_seq = None
        w, self._watchdog = self._watchdog, None
        if w is not None:
            w.cancel()
