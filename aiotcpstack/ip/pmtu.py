"""Path-MTU cache (RFC 1191 for IPv4, RFC 8201 for IPv6): destination -> learned path MTU.

Linux keeps the learned MTU on a route exception (``fib_nh_exception``, ``rt6_exception``) that
expires ``net.ipv4.route.mtu_expires`` (600 s) after it was learned; after that the interface MTU
applies again and PMTUD starts over.  This is that table, keyed by destination address, sans-IO
(``now`` is passed in).

Lower bounds: an ICMP "fragmentation needed" can name any MTU, so it is clamped as Linux does:
never below ``min_pmtu4`` (Linux ``net.ipv4.route.min_pmtu``, 552; RFC 791's 68 is the absolute
floor) for IPv4 and never below 1280 (RFC 8200 5, RFC 8201 4: the IPv6 minimum link MTU) for IPv6.
A report that does not lower the current path MTU is ignored (RFC 1191 6.3 / RFC 8201 4: PMTU
only ever goes down on an ICMP message; increases come from expiry or probing).

RFC 1191 7 (routers that do not fill in the next-hop MTU, "mtu 0"): the plateau table below
estimates one from the size of the quoted packet.
"""
from __future__ import annotations

#: RFC 1191 7.1 plateau table (common MTUs), highest first
PLATEAUS = (65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68)

IPV4_MIN_MTU = 68          # RFC 791
IPV6_MIN_MTU = 1280        # RFC 8200 5
LINUX_MIN_PMTU = 552       # net.ipv4.route.min_pmtu
MTU_EXPIRES = 600.0        # net.ipv4.route.mtu_expires / net.ipv6.route.mtu_expires


def plateau_below(size: int) -> int:
    """RFC 1191 7.1: the largest plateau strictly below ``size`` (the packet that was too big)."""
    for p in PLATEAUS:
        if p < size:
            return p
    return IPV4_MIN_MTU


class PmtuCache:
    """``dst -> (mtu, expires)``.  ``link_mtu`` is the interface MTU (the PMTU upper bound)."""

    __slots__ = ("link_mtu", "expires", "min_pmtu4", "entries", "updates")

    def __init__(self, link_mtu: int, expires: float = MTU_EXPIRES, min_pmtu4: int = LINUX_MIN_PMTU) -> None:
        self.link_mtu = link_mtu
        self.expires = expires
        self.min_pmtu4 = max(IPV4_MIN_MTU, min_pmtu4)
        self.entries: dict[bytes, tuple[int, float]] = {}
        self.updates = 0

    def floor(self, dst: bytes) -> int:
        return IPV6_MIN_MTU if len(dst) == 16 else self.min_pmtu4

    def get(self, dst: bytes, now: float) -> int:
        """The path MTU towards ``dst`` (the link MTU when nothing is cached or it expired)."""
        e = self.entries.get(dst)
        if e is None:
            return self.link_mtu
        if now >= e[1]:
            del self.entries[dst]
            return self.link_mtu
        return e[0]

    def cached(self, dst: bytes, now: float) -> int | None:
        """The learned (lowered) MTU, or None."""
        mtu = self.get(dst, now)
        return mtu if dst in self.entries else None

    def update(self, dst: bytes, mtu: int, now: float, quoted_len: int = 0) -> int | None:
        """An ICMP frag-needed / packet-too-big reported ``mtu`` for ``dst``.  Returns the new,
        lower path MTU, or None when the report changes nothing (not lower than what we use).

        ``quoted_len``: the total length of the packet the error quotes; with ``mtu`` 0 (RFC 1191
        7 old routers) or an ``mtu`` not smaller than that packet, the plateau below it is used.
        """
        cur = self.get(dst, now)
        if len(dst) == 4 and quoted_len and (mtu == 0 or mtu >= quoted_len):
            mtu = plateau_below(quoted_len)
        if mtu <= 0:
            return None
        floor = self.floor(dst)
        if mtu < floor:
            mtu = floor          # Linux: clamp to min_pmtu (it then lets the kernel fragment;
            #                      we never fragment, so the floor is simply the size we use)
        if mtu >= cur:
            return None
        self.entries[dst] = (mtu, now + self.expires)
        self.updates += 1
        return mtu

    def expire(self, now: float) -> None:
        """Drop expired entries (called now and then; ``get`` also expires lazily)."""
        dead = [d for d, (_, t) in self.entries.items() if now >= t]
        for d in dead:
            del self.entries[d]
