"""Next-hop selection: on-link vs gateway (the tiny FIB of one interface).

The stack owns exactly one interface, so the routing table is the interface's own prefixes
(on-link, like the kernel's ``proto kernel scope link`` routes) plus the routes that point out of
it (usually a default route via a gateway).  Lookups happen a few times per connection (the
result is cached on the connection's :class:`~aiotcpstack.ip.core.Route`), never per segment: a
longest-prefix match over a short list, with the masks precomputed per entry and the answers per
destination kept in small caches that every change of the table clears.
"""
from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass, field


_V6_UNSPECIFIED = bytes(16)
_CACHE_MAX = 1024          # destinations remembered per cache (cleared when full)
_UNREACHABLE = object()    # cached "no route" (lookup raises ENETUNREACH)


def _to_int(addr: bytes) -> int:
    return int.from_bytes(addr, "big")


def _mask(prefixlen: int, bits: int) -> int:
    return ((1 << bits) - 1) ^ ((1 << (bits - prefixlen)) - 1) if prefixlen else 0


@dataclass(frozen=True, slots=True)
class RouteEntry:
    dst: bytes              # network address (4 or 16 bytes)
    prefixlen: int
    gateway: bytes | None   # None: on-link
    src: bytes | None = None  # preferred source address (the interface address of that prefix)
    # precomputed: address length, mask and masked network as integers
    _len: int = field(init=False, repr=False, compare=False)
    _m: int = field(init=False, repr=False, compare=False)
    _net: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.dst)
        m = _mask(self.prefixlen, 8 * n)
        object.__setattr__(self, "_len", n)
        object.__setattr__(self, "_m", m)
        object.__setattr__(self, "_net", _to_int(self.dst) & m)

    def matches(self, addr: bytes) -> bool:
        return len(addr) == self._len and (int.from_bytes(addr, "big") & self._m) == self._net


class RoutingTable:
    """``addresses``: the interface's own ``(address, prefixlen)`` pairs (v4 and v6);
    ``routes``: extra ``(dst, prefixlen, gateway)`` entries (``gateway`` None = on-link)."""

    def __init__(self, addresses: Iterable[tuple[bytes, int]] = (),
                 routes: Iterable[tuple[bytes, int, bytes | None]] = ()) -> None:
        self.addresses: list[tuple[bytes, int]] = []
        self.entries: list[RouteEntry] = []
        # per-destination answers of lookup / source_for / is_broadcast_or_multicast (_changed
        # clears them: every method that changes the table calls it)
        self._lookup_cache: dict[bytes, object] = {}
        self._src_cache: dict[bytes, bytes] = {}
        self._bcast_cache: dict[bytes, bool] = {}
        for addr, plen in addresses:
            self.add_address(addr, plen)
        for dst, plen, gw in routes:
            self.add_route(dst, plen, gw)

    # -- configuration -------------------------------------------------------------------------
    def add_address(self, addr: bytes, prefixlen: int) -> None:
        addr = bytes(addr)
        self.addresses.append((addr, prefixlen))
        bits = 8 * len(addr)
        net = (_to_int(addr) & _mask(prefixlen, bits)).to_bytes(len(addr), "big")
        self.entries.append(RouteEntry(net, prefixlen, None, addr))
        self._sort()

    def remove_address(self, addr: bytes) -> bool:
        """(robustness issue) ``addr`` left the interface: it and its on-link prefix entry go
        (as the kernel deletes the ``proto kernel`` prefix route with the address).  False when
        it was not ours."""
        addr = bytes(addr)
        before = len(self.addresses)
        self.addresses = [(a, p) for a, p in self.addresses if a != addr]
        if len(self.addresses) == before:
            return False
        self.entries = [e for e in self.entries if not (e.gateway is None and e.src == addr)]
        self._changed()
        return True

    def add_route(self, dst: bytes, prefixlen: int, gateway: bytes | None, src: bytes | None = None) -> None:
        self.entries.append(RouteEntry(bytes(dst), prefixlen, bytes(gateway) if gateway else None, src))
        self._sort()

    def _sort(self) -> None:
        # longest prefix first; on-link before gateway routes of the same length
        self.entries.sort(key=lambda e: (-e.prefixlen, e.gateway is not None))
        self._changed()

    def _changed(self) -> None:
        self._lookup_cache.clear()
        self._src_cache.clear()
        self._bcast_cache.clear()

    # -- queries -------------------------------------------------------------------------------
    def is_local(self, addr: bytes) -> bool:
        return any(a == addr for a, _ in self.addresses)

    def lookup(self, dst: bytes) -> RouteEntry:
        """The best route to ``dst``; ``OSError(ENETUNREACH)`` when there is none."""
        if type(dst) is not bytes:
            dst = bytes(dst)
        cache = self._lookup_cache
        e = cache.get(dst)
        if e is None:
            e = _UNREACHABLE
            for r in self.entries:
                if r.matches(dst):
                    e = r
                    break
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[dst] = e
        if e is _UNREACHABLE:
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        return e  # type: ignore[return-value]

    def is_broadcast_or_multicast(self, addr: bytes) -> bool:
        """True for addresses a TCP connection may never have as its remote end (RFC 1122
        4.2.3.10, RFC 9293 MUST-46 / MUST-63): limited broadcast, the unspecified address,
        multicast (224/4, ff00::/8) and the directed broadcast of one of our own prefixes.
        Linux checks the same through the route's RTCF_BROADCAST / RTCF_MULTICAST flags."""
        if len(addr) == 16:
            return addr[0] == 0xFF or addr == _V6_UNSPECIFIED
        if addr == b"\xff\xff\xff\xff" or addr == b"\x00\x00\x00\x00" or 224 <= addr[0] <= 239:
            return True
        if type(addr) is not bytes:
            addr = bytes(addr)
        cache = self._bcast_cache
        r = cache.get(addr)
        if r is not None:
            return r
        r = False
        x = _to_int(addr)
        for a, plen in self.addresses:
            if len(a) == 4 and plen < 31:
                m = _mask(plen, 32)
                if (x & m) == (_to_int(a) & m) and (x | m) == 0xFFFFFFFF:
                    r = True
                    break
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[addr] = r
        return r

    def next_hop(self, dst: bytes) -> bytes:
        """The address whose link-layer address frames to ``dst`` go to (``dst`` itself when
        on-link, else the gateway)."""
        e = self.lookup(dst)
        return e.gateway if e.gateway is not None else bytes(dst)

    def is_onlink(self, addr: bytes) -> bool:
        try:
            return self.lookup(addr).gateway is None
        except OSError:
            return False

    def source_for(self, dst: bytes) -> bytes:
        """The local address to use towards ``dst`` (the address of the matching prefix, else the
        first address of the same family)."""
        if type(dst) is not bytes:
            dst = bytes(dst)
        cache = self._src_cache
        src = cache.get(dst)
        if src is not None:
            return src
        src = self._source_for(dst)
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[dst] = src
        return src

    def _source_for(self, dst: bytes) -> bytes:
        for e in self.entries:
            if e.src is not None and e.matches(dst):
                return e.src
        for a, _ in self.addresses:
            if len(a) == len(dst) and not (len(a) == 16 and a[:2] == b"\xfe\x80"):
                return a
        for a, _ in self.addresses:
            if len(a) == len(dst):
                return a
        raise OSError(errno.EADDRNOTAVAIL, f"Cannot assign requested address: no IPv{4 if len(dst) == 4 else 6} "
                                           f"address on the interface")
