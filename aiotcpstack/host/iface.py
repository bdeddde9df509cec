"""Interface, route and neighbour discovery (pyroute2), for shared mode.

Every function takes ``netns`` (a name under /run/netns, or None for the current namespace) and runs its
pyroute2 work in a helper thread switched into that namespace - so it is safe to call from a coroutine
(pyroute2 >= 0.9's synchronous IPRoute cannot run inside a running asyncio loop) and never moves the
caller's thread.  Addresses are ``bytes`` (4 or 16) as everywhere inside the stack.

Neighbour resolution in shared mode: ``neighbour()`` reads the kernel's neighbour table; when the entry is
missing, ``solicit()`` makes the *kernel* resolve it by sending one UDP datagram (1 byte) to the discard
port 9 of that address from a kernel socket inside the namespace, bound to the interface
(SO_BINDTODEVICE).  The send triggers ARP/NDP exactly like any kernel traffic would, obeys the kernel's
own rate limits and retransmission policy (no spam: one datagram per call; callers wait and re-check,
e.g. every few ms; ``solicit`` itself sends at most one datagram per second per target), and never leaves the link (the address is on-link or
the gateway's).  The datagram itself reaches the peer's discard port (or draws an ICMP port
unreachable); harmless.  Adding a NUD_INCOMPLETE entry by netlink was rejected: the kernel does not start
probing for administratively added INCOMPLETE entries.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute

from . import netns as _ns
from .errors import NoSuchInterfaceError

NUD_INCOMPLETE, NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE, NUD_FAILED, NUD_NOARP, NUD_PERMANENT = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80)
NUD_VALID = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_NOARP | NUD_PERMANENT
RT_TABLE_MAIN = 254


@dataclass
class Route:
    dst: bytes | None          # None: default route
    prefixlen: int
    gateway: bytes | None
    ifindex: int
    family: int                # socket.AF_INET / AF_INET6
    metric: int = 0


@dataclass
class InterfaceInfo:
    name: str
    index: int
    mac: bytes
    mtu: int
    addrs_v4: list[tuple[bytes, int]] = field(default_factory=list)
    addrs_v6: list[tuple[bytes, int]] = field(default_factory=list)   # global and link-local
    routes: list[Route] = field(default_factory=list)                 # main-table routes via this interface
    up: bool = False
    netns: str | None = None
    neighbours: dict[bytes, bytes] = field(default_factory=dict)      # ip -> mac, valid kernel entries

    @property
    def link_local_v6(self) -> bytes | None:
        for a, _ in self.addrs_v6:
            if a[:2] == b"\xfe\x80":
                return a
        return None

    def has_address(self, addr: bytes) -> bool:
        return any(a == addr for a, _ in self.addrs_v4 + self.addrs_v6)


def _pton(ip: bytes | str) -> bytes:
    if isinstance(ip, (bytes, bytearray)):
        return bytes(ip)
    return ipaddress.ip_address(ip).packed


def _ntop(ip: bytes) -> str:
    return str(ipaddress.ip_address(bytes(ip)))


def _family(ip: bytes) -> int:
    return socket.AF_INET if len(ip) == 4 else socket.AF_INET6


def _in_ns(netns: str | None, fn, *args: Any) -> Any:
    # always a fresh thread: pyroute2 sync API must not run on a thread with a running asyncio loop
    return _ns.run_in_netns(netns if netns is not None else "/proc/thread-self/ns/net", fn, *args)


def _routes(ipr: IPRoute, index: int | None) -> list[Route]:
    out = []
    for fam in (socket.AF_INET, socket.AF_INET6):
        kw: dict[str, Any] = {"family": fam, "table": RT_TABLE_MAIN}
        if index is not None:
            kw["oif"] = index
        for r in ipr.get_routes(**kw):
            if r["type"] != 1:          # RTN_UNICAST only
                continue
            dst = r.get("RTA_DST")
            gw = r.get("RTA_GATEWAY")
            oif = r.get("RTA_OIF")
            if oif is None or (index is not None and oif != index):
                continue
            out.append(Route(_pton(dst) if dst else None, r["dst_len"], _pton(gw) if gw else None, oif, fam,
                             r.get("RTA_PRIORITY") or 0))
    return out


def discover(interface: str, netns: str | None = None) -> InterfaceInfo:
    """Everything shared mode needs about ``interface`` (raises NoSuchInterfaceError).

    ``addrs_v4`` / ``addrs_v6``: [(addr bytes, prefixlen)]; ``routes``: main-table unicast routes out of
    this interface (on-link prefixes have ``gateway=None``); ``neighbours``: the kernel's valid entries.
    """
    def body() -> InterfaceInfo:
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=interface)
            if not idx:
                raise NoSuchInterfaceError(interface, netns)
            index = idx[0]
            link = ipr.get_links(index)[0]
            mac = link.get("IFLA_ADDRESS") or "00:00:00:00:00:00"
            info = InterfaceInfo(name=interface, index=index, mac=bytes.fromhex(mac.replace(":", "")),
                                 mtu=link.get("IFLA_MTU"), up=bool(link["flags"] & 1), netns=netns)
            for a in ipr.get_addr(index=index):
                addr = a.get("IFA_ADDRESS")
                if addr is None:
                    continue
                item = (_pton(addr), a["prefixlen"])
                (info.addrs_v4 if a["family"] == socket.AF_INET else info.addrs_v6).append(item)
            info.routes = _routes(ipr, index)
            for fam in (socket.AF_INET, socket.AF_INET6):
                for n in ipr.get_neighbours(family=fam, ifindex=index):
                    dst, ll = n.get("NDA_DST"), n.get("NDA_LLADDR")
                    if dst and ll and n["state"] & NUD_VALID:
                        info.neighbours[_pton(dst)] = bytes.fromhex(ll.replace(":", ""))
            return info
    return _in_ns(netns, body)


class NeighbourTable:
    """Fast kernel neighbour lookups for one namespace: a NETLINK_ROUTE socket opened once inside it,
    one RTM_GETNEIGH get-request per lookup (~30-60 us, vs ~3 ms for a pyroute2 IPRoute per call).
    Thread-safe; never moves the caller's thread for longer than one socket() call."""

    RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30
    NDA_DST, NDA_LLADDR = 1, 2

    def __init__(self, netns: str | None = None) -> None:
        import threading
        self.netns = netns
        self._factory = _ns.NetnsSocketFactory(netns)
        self._sock = self._factory.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                          socket.NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._lock = threading.Lock()
        self._seq = 0
        self._last_solicit: dict[tuple[int, bytes], float] = {}
        self._ifnames: dict[int, str] = {}

    def lookup(self, ifindex: int, ip: bytes | str) -> bytes | None:
        import struct
        ipb = _pton(ip)
        fam = _family(ipb)
        with self._lock:
            self._seq += 1
            seq = self._seq
            body = struct.pack("=BBHiHBB", fam, 0, 0, ifindex, 0, 0, 0)
            attr = struct.pack("=HH", 4 + len(ipb), self.NDA_DST) + ipb
            msg = body + attr
            self._sock.send(struct.pack("=IHHII", 16 + len(msg), self.RTM_GETNEIGH, 0x1 | 0x4, seq, 0) + msg)
            result: bytes | None = None
            while True:
                data = self._sock.recv(65536)
                off = 0
                done = False
                while off + 16 <= len(data):
                    ln, t, _f, rseq, _p = struct.unpack_from("=IHHII", data, off)
                    if ln < 16:
                        break
                    if rseq == seq:
                        if t == self.RTM_NEWNEIGH:
                            state = struct.unpack_from("=H", data, off + 16 + 8)[0]
                            a = off + 16 + 12
                            ll = None
                            while a + 4 <= off + ln:
                                alen, atype = struct.unpack_from("=HH", data, a)
                                if alen < 4:
                                    break
                                if atype & 0x3FFF == self.NDA_LLADDR:
                                    ll = bytes(data[a + 4:a + alen])
                                a += (alen + 3) & ~3
                            if state & NUD_VALID and ll:
                                result = ll
                        elif t == 2:            # NLMSG_ERROR: ack (0) or ENOENT -> done
                            done = True
                    off += (ln + 3) & ~3
                if done:
                    return result

    def solicit(self, ifindex: int, ip: bytes | str, min_interval: float = 1.0) -> bool:
        """Make the kernel resolve ``ip``: one 1-byte UDP datagram to port 9 (discard), at most once per
        ``min_interval`` per (ifindex, ip).  Returns True when a datagram was sent."""
        import time
        ipb = _pton(ip)
        now = time.monotonic()
        key = (ifindex, ipb)
        with self._lock:
            if now - self._last_solicit.get(key, -1e9) < min_interval:
                return False
            self._last_solicit[key] = now
            name = self._ifnames.get(ifindex)
        if name is None:
            name = socket.if_indextoname(ifindex) if self.netns is None else \
                _ns.run_in_netns(self.netns, socket.if_indextoname, ifindex)
            self._ifnames[ifindex] = name
        s = self._factory.socket(_family(ipb), socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, name.encode())
            s.setblocking(False)
            dst = (_ntop(ipb), 9) if len(ipb) == 4 else (_ntop(ipb), 9, 0, ifindex)
            try:
                s.sendto(b"\0", dst)
            except OSError:
                pass
        finally:
            s.close()
        return True

    def close(self) -> None:
        self._sock.close()
        self._factory.close()


_tables: dict[str | None, tuple[tuple[int, int] | None, NeighbourTable]] = {}


def _ns_id(netns: str | None) -> tuple[int, int] | None:
    if netns is None:
        return None
    try:
        st = os.stat(_ns.netns_path(netns))
    except FileNotFoundError:
        from .errors import NoSuchNamespaceError
        raise NoSuchNamespaceError(netns) from None
    return (st.st_dev, st.st_ino)


def _table(netns: str | None) -> NeighbourTable:
    """Cached per namespace; re-created when a namespace of that name was re-created meanwhile."""
    ident = _ns_id(netns)
    cached = _tables.get(netns)
    if cached is not None and cached[0] == ident and cached[1]._sock.fileno() >= 0:
        return cached[1]
    if cached is not None:
        cached[1].close()
    t = NeighbourTable(netns)
    _tables[netns] = (ident, t)
    return t


def neighbour(netns: str | None, ifindex: int, ip: bytes | str) -> bytes | None:
    """The MAC the kernel has for ``ip`` on ``ifindex`` (valid states only), else None."""
    try:
        return _table(netns).lookup(ifindex, ip)
    except OSError as exc:
        from .errors import NoSuchNamespaceError
        if isinstance(exc, NoSuchNamespaceError):
            raise
        _tables.pop(netns, None)       # socket broken: retry once with a fresh one
        return _table(netns).lookup(ifindex, ip)


def solicit(netns: str | None, ifindex: int, ip: bytes | str) -> None:
    """Make the kernel resolve ``ip`` on ``ifindex``: one 1-byte UDP datagram to port 9 (discard),
    rate-limited to one per second per (namespace, ifindex, ip).

    For IPv6 link-local targets the scope id is ``ifindex``.  Send errors (EHOSTUNREACH from an earlier
    failed resolution, ENETUNREACH) are swallowed: the caller just re-checks ``neighbour()`` later.
    """
    _table(netns).solicit(ifindex, ip)


def route_lookup(netns: str | None, dst: bytes | str) -> tuple[bytes | None, int]:
    """Kernel route to ``dst`` (RTM_GETROUTE): (gateway or None when on-link, outgoing ifindex).

    Raises OSError(ENETUNREACH) when there is no route.
    """
    dstb = _pton(dst)

    def body() -> tuple[bytes | None, int]:
        with IPRoute() as ipr:
            try:
                r = ipr.route("get", dst=_ntop(dstb))[0]
            except Exception as exc:  # pyroute2 NetlinkError
                import errno
                code = getattr(exc, "code", errno.ENETUNREACH)
                raise OSError(code, f"no route to {_ntop(dstb)}"
                                    f"{' in network namespace ' + repr(netns) if netns else ''}") from None
            gw = r.get("RTA_GATEWAY")
            return (_pton(gw) if gw else None, r.get("RTA_OIF"))
    return _in_ns(netns, body)


def routes(netns: str | None = None, interface: str | None = None) -> list[Route]:
    """Main-table unicast routes (optionally only those via ``interface``)."""
    def body() -> list[Route]:
        with IPRoute() as ipr:
            idx = None
            if interface is not None:
                found = ipr.link_lookup(ifname=interface)
                if not found:
                    raise NoSuchInterfaceError(interface, netns)
                idx = found[0]
            return _routes(ipr, idx)
    return _in_ns(netns, body)


# contract alias (docs/contracts.md: ``resolve_neighbour``)
def resolve_neighbour(netns: str | None, ifindex: int, ip: bytes | str) -> bytes | None:
    """neighbour() and, when missing, solicit() (rate-limited: at most one datagram per second per
    target, so polling this every few ms is fine); returns the MAC if already known, else None."""
    mac = neighbour(netns, ifindex, ip)
    if mac is None:
        solicit(netns, ifindex, ip)
    return mac
