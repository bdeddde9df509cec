"""The sans-IO network core: frames in, frames out (``tcp_v4_rcv`` / ``ip_queue_xmit`` of the stack).

``NetworkCore.receive(batch, now)`` is the softirq: for each ``(frame, csum_trusted)`` it parses
Ethernet, answers ARP (and ICMP echo in dedicated mode), parses IPv4/IPv6, verifies (or trusts)
the TCP checksum, and demultiplexes by 4-tuple (a dict lookup) to ``TcpConnection.on_segment``, or
by ``(ip, port)`` to a listener (``tcp.listener.Listener``: SYN queue of request socks, accept
queue, SYN cookies).  After the batch, ``end_batch(now)`` runs once per connection that got
segments (the prequeue's purpose: one delivery and one ACK decision per batch).

Socket ownership and the backlog (``tcp_v4_rcv``'s ``sock_owned_by_user`` / ``sk_add_backlog`` /
``release_sock``): while a connection is *owned* -- its data is being delivered to the protocol
(``end_batch`` runs under ownership), or the aio layer holds it with :meth:`NetworkCore.lock_conn`
-- segments for it are not processed but appended to its backlog, bounded by ``rcvbuf + sndbuf``
bytes (payload plus a per-segment overhead standing in for the skb truesize); overflow is dropped
and counted ``TCPBacklogDrop``.  When ownership ends (:meth:`NetworkCore.release_conn`, or the
delivery returns) the backlog is processed in order and delivered once more (``__release_sock``).
See ``docs/listen-path.md``.

Output: each connection gets a :class:`Route` whose bound ``output(hdr, payload)`` builds TCP
(checksum in software, or partial with the link's checksum offload), the IP header, the
Ethernet header (neighbour cache) and hands the frame to ``transmit``.  Payloads larger than one
segment go out as one GSO super-frame on a vnet link, or are split in software.

No clock, no sockets, no asyncio: ``now`` is passed in; host integration (kernel neighbour
lookups, kernel port reservation) comes in as callbacks from ``aio/``.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import struct
from collections.abc import Callable, Iterable
from typing import Any

from ..mib import Counters
from ..tcp.config import TcpConfig
from ..wire import arp as _arp
from ..wire import tcp as _tcp
from ..wire.checksum import FOLD2_BITS, FOLD2_MASK, FOLD3_BITS, FOLD3_MASK, FOLD_BITS, FOLD_MASK, FOLD_MAX, FOLD_MIN
from ..wire.errors import ParseError
from ..wire.ethernet import BROADCAST, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6
from ..wire.ipv4 import build_ipv4_header, parse_ipv4
from ..wire import ipv4_options as _ipopt
from ..wire.ipv6 import IPV6_HLEN, build_ipv6_header
from ..wire.tcp import ACK, CWR, FIN, PSH, RST, SYN, TcpHeader
from .demux import ANY, ANY4, ANY6, DemuxTable
from .gro import MAX_RUNS, RAW, RAW_LEN, GroHold, continues, in_order, raw_key
from ..tcp.listener import Listener
from ..tcp.state import ESTABLISHED as _ESTABLISHED
from ..tcp.connection import CA_OPEN as _CA_OPEN
from .reassembly import Reassembler
from ..tcp.ecn import ce_received as _ce_received
from .neighbour import REACHABLE, NeighbourEntry, NeighbourTable
from .routing import RoutingTable

log = logging.getLogger("aiotcpstack.ip")

GSO_TCPV4 = 1
GSO_TCPV6 = 4
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_ICMPV6 = 58
ETH_HLEN = 14
#: (PMTUD/ICMP issue) ICMPv4 types that quote an offending packet (dest-unreach, source quench,
#: redirect, time exceeded, parameter problem): handled by ip/icmp_errors.py in both modes
_ICMP_ERROR_TYPES = frozenset((3, 4, 5, 11, 12))
_ETH = struct.Struct("!6s6sH")
_IP4 = struct.Struct("!BBHHHBBH4s4s")
_HP_UNPACK = struct.Struct("!HHIIHH").unpack_from      # ports, seq, ack, offset+flags, window
_HP_TS = struct.Struct("!III").unpack_from               # NOP,NOP,TS(10) word, TSval, TSecr
_HP_TS_WORD = 0x0101080A
_TCP_TS_PACK = struct.Struct("!HHIIHHHHIII").pack     # TCP header + NOP,NOP,TS (output_ts)
#: TCP header + MSS, SACKOK+TS, NOP+WS (output_syn: Linux's SYN option layout, encode_options')
_SYN_PACK = struct.Struct("!HHIIHHHHHHIIII").pack
#: Ethernet + IPv4 / IPv6 + TCP with NOP,NOP,TS in one pack (output_ts_burst)
_ETH_IP4_TCP_TS_PACK = struct.Struct("!14sBBHHHBBH4s4sHHIIHHHHIII").pack
_ETH_IP6_TCP_TS_PACK = struct.Struct("!14sIHBB16s16sHHIIHHHHIII").pack
_IP4_PACK = _IP4.pack
_FRAG6 = struct.Struct("!BBHI").unpack_from            # IPv6 Fragment header (RFC 8200 4.5)
_IP6_PACK = struct.Struct("!IHBB16s16s").pack          # version/TC/flow, length, next, hops, addresses
_W2 = struct.Struct("!HH").unpack                       # an IPv4 address as two 16-bit words
#: (lip, rip) -> Route's header-sum constants (pure functions of the pair): the pseudo-header sum
#: and, for IPv4, the sum of the header words that never change with TTL and TOS left out; bounded
_ROUTE_SUMS: dict[tuple[bytes, bytes], tuple[int, int]] = {}
_from_bytes = int.from_bytes
_RAW_UNPACK = RAW.unpack_from
_StructError = struct.error
_PORTS = struct.Struct("!HH").unpack_from
#: an Ethernet frame's ethertype + IPv4 version/IHL byte and, for an option-less IPv4 header
#: carrying TCP, its total length, addresses + ports and data offset + flags: what _rx_frames
#: compares with the next frame (GRO's lookahead)
_FLOW4 = struct.Struct("!12x3s1xH8x12s8xH").unpack_from
_ETH_IP4_IHL5 = b"\x08\x00\x45"
_HP_FLAGS = ~PSH & 0xFF                                  # only ACK (and PSH) may be set
_LO_MAC = b"\x00" * 6          # source MAC of looped-back frames (as on ``lo``)
_MASK32 = 0xFFFFFFFF
#: largest TCP payload of one output() call so that IP total length stays <= 65535
MAX_GSO_PAYLOAD = 65535 - 20 - 60
#: bytes a backlogged segment costs beyond its payload (stands in for the kernel's skb truesize
#: overhead, so a flood of empty segments is bounded by the backlog limit too)
BACKLOG_SEG_OVERHEAD = 256

Transmit = Callable[..., None]
#: shared mode: ``neighbour_lookup(ip, done)``; ``done(mac | None)`` may be called later.
NeighbourLookup = Callable[[bytes, Callable[[bytes | None], None]], None]


def _len_psum(psb: int, tcp_len: int) -> int:
    """The TCP checksum field for NEEDS_CSUM: a route's constant pseudo-header sum ``psb``
    (addresses, protocol; ``Route._psb``) plus the TCP length, folded to 1..0xFFFF (RFC 1071;
    the kernel adds the segment's own sum from ``csum_start``).  One place for ``output_ts`` and
    both families of ``output_ts_burst`` (there once per run of equal lengths)."""
    return (psb + (tcp_len >> 16) + (tcp_len & 0xFFFF) - 1) % 0xFFFF + 1


def _tcp_api():
    """The wire functions (imported late: the wire layer is written in parallel)."""
    return _tcp.parse_tcp, _tcp.build_tcp, _tcp.verify_tcp_checksum, _tcp.encode_options


class Route:
    """Where one connection's segments go: addresses, next hop (neighbour entry), segment size.

    ``output`` is the connection's ``output(hdr, payload)`` callback (a bound method: no closure
    per segment).
    """

    __slots__ = ("core", "lip", "rip", "v6", "neigh", "mss", "peer_mss", "conn", "local", "_psb", "_ipb",
                 "_ipb0", "ttl", "tos", "_vtf", "ecn", "ipopt", "ext_len", "app_opts")

    def __init__(self, core: "NetworkCore", lip: bytes, rip: bytes, neigh: NeighbourEntry) -> None:
        self.core = core
        self.lip = lip
        self.rip = rip
        self.v6 = len(lip) == 16
        local = rip in core.local_v4 or rip in core.local_v6   # to ourselves: loopback
        # (asyncio issue) shared mode on the kernel's ``lo``: an address of ours is the kernel's
        # too, so the peer may be a kernel socket; decided at the first segment (_decide_local)
        self.local = None if local and core.loopback_link and not core.dedicated else local
        self.neigh = neigh
        self.mss = core.mss6 if self.v6 else core.mss4   # our side (link MTU)
        if core.pmtu.entries:                            # (PMTUD issue) learned path MTU
            pm = core.pmtu.cached(rip, core.now)
            if pm is not None and pm - (60 if self.v6 else 40) < self.mss:
                self.mss = pm - (60 if self.v6 else 40)
        self.peer_mss: int | None = None
        self.conn: Any = None
        # header-template constants for output_ts: the pseudo-header sum of the addresses and
        # protocol (RFC 9293 3.1 / RFC 8200 8.1, mod-0xffff form) and, for IPv4, the sum of the
        # header words that never change (version/IHL, DF, protocol, addresses) -- the same for
        # every connection of an address pair: computed once per pair; TTL and TOS are added
        # per route by set_ip (they are per connection: IP_TTL / IP_TOS)
        key = (lip, rip) if type(lip) is bytes and type(rip) is bytes else None   # (hashable)
        sums = _ROUTE_SUMS.get(key) if key is not None else None
        if sums is None:
            sums = ((((_from_bytes(lip, "little") + _from_bytes(rip, "little")) % 0xFFFF) << 8) + IPPROTO_TCP,
                    0 if self.v6 else (0x4500 + 0x4000 + IPPROTO_TCP + sum(_W2(lip)) + sum(_W2(rip))))
            if key is not None:
                if len(_ROUTE_SUMS) >= 1024:
                    _ROUTE_SUMS.clear()
                _ROUTE_SUMS[key] = sums
        self._psb, self._ipb0 = sums
        self.ecn = 0
        self.ipopt: _ipopt.IpOptions | None = None     # IPv4 options of every segment (_OptionsRoute)
        self.ext_len = 0                                 # their length (Linux icsk_ext_hdr_len)
        self.app_opts = b""                              # the application's IP_OPTIONS as given
        self.set_ip(core.default_hop_limit if self.v6 else core.default_ttl, 0)

    def set_ip(self, ttl: int, tos: int) -> None:
        """The TTL / hop limit and TOS / traffic class of every segment from now on (RFC 9293
        3.9.1.1 MUST-49, 3.9.1.9 MUST-48 / SHLD-21: changeable during the connection, effective
        from the next segment, retransmissions included, as Linux's ``sk_dst_reset`` after
        IP_TOS).  The header templates take them from here: the IPv4 constant sum ``_ipb``
        (TOS in the low byte of the first word, TTL in the high byte of the TTL/protocol word)
        and the IPv6 first word ``_vtf`` (traffic class in bits 20..27, RFC 8200 3 / 7), so the
        per-segment cost does not change."""
        if not 0 <= ttl <= 255 or not 0 <= tos <= 255:
            raise ValueError(f"TTL / hop limit {ttl} or TOS / traffic class {tos} out of 0..255")
        self.ttl = ttl
        self.tos = tos
        self._ipb = self._ipb0 + tos + (ttl << 8)
        self._vtf = 0x60000000 | (tos << 20)

    def set_ecn(self, bits: int) -> None:
        """The two ECN bits of the TOS / traffic class from now on (RFC 3168 5: 0 Not-ECT, 2
        ECT(0)), under TCP's control (tcp/ecn.py: ECT(0) on new data of an ECN connection, as
        Linux ``INET_ECN_xmit`` / ``INET_ECN_dontxmit``); the DSCP bits set by ``set_ip`` stay.
        Called only when they change: the templates are rebuilt as by ``set_ip``."""
        self.ecn = bits
        self.set_ip(self.ttl, (self.tos & 0xFC) | bits)

    def apply_config(self, config: TcpConfig) -> None:
        """``set_ip`` from a connection's (or listener's) config: its IP_TTL / IP_TOS or
        IPV6_UNICAST_HOPS / IPV6_TCLASS, -1 resolved to the stack's default."""
        core = self.core
        ttl, tos = config.ip_fields(self.v6, core.default_ttl, core.default_hop_limit)
        tos |= self.ecn                      # (the ECN bits are TCP's: set_ecn)
        if ttl != self.ttl or tos != self.tos:
            self.set_ip(ttl, tos)
        raw = config.ip_options
        if raw != self.app_opts and not self.v6:
            # IP_OPTIONS (RFC 9293 MUST-51/52): the application's options replace whatever the
            # route had -- a source route echoed from the peer's SYN included -- and an empty
            # value removes them all, as Linux's ip_options_get + sk_dst_reset
            self.app_opts = raw
            self.set_ip_options(_ipopt.compile_options(raw, received=False) if raw else None)

    def set_ip_options(self, opt: "_ipopt.IpOptions | None") -> None:
        """The IPv4 options of every segment from now on (None or empty: none).  A source route
        sends to its first hop (``faddr``: the next hop is looked up for it) with the final
        destination in its last slot; the TCP checksum still covers the final destination (RFC
        1122 4.2.3.8 / RFC 9293 3.9.2.1).  The segment size shrinks by the options' length
        (RFC 9293 3.7.1 Eff.snd.MSS, Linux ``icsk_ext_hdr_len`` + ``tcp_sync_mss``: only
        downwards here).  The one-pack fast paths know only a 20-byte IPv4 header: a route with
        options becomes an :class:`_OptionsRoute`, whose fast paths decline (nothing is added to
        theirs)."""
        if opt is not None and not opt.optlen:
            opt = None
        core = self.core
        self.ipopt = opt
        self.ext_len = opt.optlen if opt is not None else 0
        first = opt.faddr if opt is not None and opt.srr >= 0 and opt.faddr else self.rip
        if first != self.neigh.ip:
            self.neigh = core.neigh.entry(core._next_hop(first))
        self.__class__ = _OptionsRoute if opt is not None else Route
        conn = self.conn
        if conn is not None and hasattr(conn, "ext_hdr_len"):
            conn.ext_hdr_len = self.ext_len
            if self.ext_len:
                conn.update_mss(self.mss, core.now, retransmit=False)

    def limit(self) -> int:
        """Largest TCP header-options + payload size a segment may have (min of our link MSS and
        the peer's advertised MSS, RFC 9293 3.7.1 Eff.snd.MSS before options)."""
        mss = self.mss
        pm = self.peer_mss
        if pm is not None and pm < mss:
            mss = pm
        return mss - self.ext_len             # IPv4 options take room from the segment

    def seg_size(self, optlen: int) -> int:
        """Payload bytes per segment: the connection's ``mss`` (Linux mss_cache), but never more
        than fits the MTU / peer MSS with this segment's actual options (e.g. SACK blocks)."""
        size = self.limit() - optlen
        conn = self.conn
        if conn is not None:
            cm = getattr(conn, "mss", 0)
            if cm and cm < size:
                size = cm
        return size if size > 8 else 8

    def output(self, hdr: TcpHeader, payload: bytes | memoryview = b"") -> None:
        self.core._tcp_output(self, hdr, payload)

    def negative_advice(self, now: float) -> bool:
        """TCP's negative advice about this route (RFC 9293 3.8.3 MUST-20: the connection has
        retransmitted R1 times without an answer; Linux ``tcp_write_timeout`` ->
        ``__dst_negative_advice``).  As RFC 1122 3.3.1.4's dead-gateway detection: the next hop
        is looked up again (the routing table may have changed since the connection began) and
        the neighbour is asked to re-confirm itself (``NeighbourTable.reconfirm``: an ARP / NDP
        probe; silence makes the table forget it).  Nothing to do for a route to ourselves or on
        a loopback link (no neighbours there).  Returns True when a probe went out."""
        core = self.core
        if self.local is not False or core.loopback_link:
            return False
        opt = self.ipopt
        nh = core._next_hop(opt.faddr if opt is not None and opt.faddr else self.rip)
        if nh != self.neigh.ip:
            self.neigh = core.neigh.entry(nh)
        return core.neigh.reconfirm(self.neigh, now)

    def output_ts(self, sport: int, dport: int, seq: int, ack: int, flags: int, window: int, tsval: int,
                  tsecr: int, payload: Any) -> bool:
        """The common segment -- options exactly NOP,NOP,TS -- packed in one go from per-route
        constants: Ethernet (cached), IPv4 with an incremental header checksum (RFC 1071 / 1624)
        or IPv6, and the TCP header holding the pseudo-header sum for NEEDS_CSUM; the same bytes
        ``_tcp_output`` -> ``_emit`` would build (tests/unit/test_ip_output_ts.py compares them)
        with no TcpHeader, TcpOptions or option encoding.  False, having sent nothing, where the
        general path is needed: no scatter-gather link, a route to ourselves or still undecided,
        a neighbour that is not fresh, or a payload that needs splitting in software."""
        core = self.core
        n = len(payload)
        gso = 0
        if n:
            conn = self.conn
            cm = conn.mss if conn is not None else 0
            if n > cm:
                size = self.seg_size(12)
                if n > size:
                    if not core.vnet:
                        return False
                    gso = size
        tcp_len = 32 + n
        l2l3 = self._l2l3(tcp_len)          # (the route checks; the IPv4 ident is taken here)
        if l2l3 is None:
            return False
        psum = _len_psum(self._psb, tcp_len)
        th = _TCP_TS_PACK(sport, dport, seq, ack, 0x8000 | flags, window, psum, 0, 0x0101080A, tsval, tsecr)
        core.counters["IpOutRequests"] += 1
        core.transmit_tcp(l2l3, th, payload, (GSO_TCPV6 if self.v6 else GSO_TCPV4) if gso else 0, gso)
        return True

    def output_ts_burst(self, sport: int, dport: int, ack: int, window: int, tsval: int, tsecr: int,
                        segs: list) -> bool:
        """:meth:`output_ts` for several segments of one connection at once (the frames one
        ``_output`` call sends): ``segs`` is ``[(seq, flags, payload_parts, payload_len), ...]``,
        each payload given as a list of buffers (a segment may span send-buffer chunks: the
        kernel gathers them, nothing is joined here).  The per-route checks, the Ethernet header
        and the segment size are done once; each frame's headers are one ``pack``; all frames go
        to the link in one call (``transmit_tcp_burst``).  Same bytes as ``output_ts`` frame by
        frame (tests/unit/test_ip_output_ts.py).  False, having sent nothing, where ``output_ts``
        would decline (and on links without GSO, where a segment might need a software split)."""
        core = self.core
        tx = core.transmit_tcp_burst
        if tx is None or self.local is not False or not core.vnet:
            return False
        e = self.neigh
        if e.state is not REACHABLE or core.now - e.confirmed > core.neigh.reachable_time:
            return False
        conn = self.conn
        cm = conn.mss if conn is not None else 0
        size = self.seg_size(12)
        psb = self._psb
        lip = self.lip
        rip = self.rip
        frames = []
        add = frames.append
        if self.v6:
            eth = e.eth_header(ETH_P_IPV6, core.mac)
            vtf = self._vtf
            hops = self.ttl
            last = -1
            for seq, flags, parts, n in segs:
                if n != last:                 # (a run of full frames shares its length fields)
                    last = n
                    tcp_len = 32 + n
                    psum = _len_psum(psb, tcp_len)
                    gso = size if n > cm and n > size else 0
                add((_ETH_IP6_TCP_TS_PACK(eth, vtf, tcp_len, IPPROTO_TCP, hops, lip, rip, sport, dport, seq,
                                          ack, 0x8000 | flags, window, psum, 0, 0x0101080A, tsval, tsecr),
                     parts, gso))
            gso_type = GSO_TCPV6
            csum_start = 54
        else:
            eth = e.eth_header(ETH_P_IP, core.mac)
            ipb = self._ipb
            tos = self.tos
            ttl = self.ttl
            ident = core._ident
            last = -1
            for seq, flags, parts, n in segs:
                if n != last:                 # (a run of full frames shares its length fields)
                    last = n
                    tcp_len = 32 + n
                    psum = _len_psum(psb, tcp_len)
                    total = 20 + tcp_len
                    cb = ipb + total
                    gso = size if n > cm and n > size else 0
                ident = (ident + 1) & 0xFFFF
                c = cb + ident
                c = (c & 0xFFFF) + (c >> 16)
                c = (c & 0xFFFF) + (c >> 16)
                add((_ETH_IP4_TCP_TS_PACK(eth, 0x45, tos, total, ident, 0x4000, ttl, IPPROTO_TCP, c ^ 0xFFFF, lip, rip,
                                          sport, dport, seq, ack, 0x8000 | flags, window, psum, 0, 0x0101080A,
                                          tsval, tsecr),
                     parts, gso))
            core._ident = ident
            gso_type = GSO_TCPV4
            csum_start = 34
        core.counters["IpOutRequests"] += len(frames)
        tx(csum_start, csum_start + 32, gso_type, frames)
        return True


    def output_syn(self, sport: int, dport: int, iss: int, window: int, mss: int, wscale: int,
                   tsval: int, flags: int = SYN) -> bool:
        """Our SYN with Linux's usual option block -- MSS, SACK-permitted + timestamps (TSecr 0),
        NOP + window scale: 40 header bytes -- packed in one go like ``output_ts`` (the bytes
        ``_tcp_output`` -> ``_emit`` build for that header; tests/unit/test_ip_output_ts.py
        compares them).  ``flags``: SYN, with ECE|CWR for an ECN-setup SYN (RFC 3168 6.1.1).
        False, having sent nothing, where the general path is needed."""
        l2l3 = self._l2l3(40)
        if l2l3 is None:
            return False
        self.core.counters["IpOutRequests"] += 1
        psum = _len_psum(self._psb, 40)
        th = _SYN_PACK(sport, dport, iss, 0, 0xA000 | flags, window, psum, 0,
                       0x0204, mss, 0x0402080A, tsval, 0, 0x01030300 | wscale)
        self.core.transmit_tcp(l2l3, th, b"", 0, 0)
        return True

    def _l2l3(self, tcp_len: int) -> bytes | None:
        """Ethernet + IP header of a segment of ``tcp_len`` bytes on this route, from the
        per-route constants, for ``output_ts`` and ``output_syn``: the Ethernet header cached, IPv4
        with an incremental header checksum (RFC 1071 / 1624), or IPv6.  None where the general
        path is needed: no scatter-gather link, a route to ourselves or still undecided, a
        neighbour that is not fresh."""
        core = self.core
        e = self.neigh
        if (core.transmit_tcp is None or self.local is not False or e.state is not REACHABLE
                or core.now - e.confirmed > core.neigh.reachable_time):
            return None
        if self.v6:
            return e.eth_header(ETH_P_IPV6, core.mac) + _IP6_PACK(self._vtf, tcp_len, IPPROTO_TCP, self.ttl,
                                                                   self.lip, self.rip)
        core._ident = ident = (core._ident + 1) & 0xFFFF
        total = 20 + tcp_len
        c = self._ipb + total + ident
        c = (c & 0xFFFF) + (c >> 16)
        c = (c & 0xFFFF) + (c >> 16)
        return e.eth_header(ETH_P_IP, core.mac) + _IP4_PACK(0x45, self.tos, total, ident, 0x4000, self.ttl,
                                                             IPPROTO_TCP, c ^ 0xFFFF, self.lip, self.rip)


class _OptionsRoute(Route):
    """A :class:`Route` whose segments carry IPv4 options (``Route.set_ip_options`` switches a
    route's class; same slots): the one-pack paths, which build a 20-byte IPv4 header, decline,
    so every segment takes ``_tcp_output`` -> ``_emit``, where the option area is laid out."""

    __slots__ = ()

    def output_ts(self, *args: Any) -> bool:
        return False

    def output_ts_burst(self, *args: Any) -> bool:
        return False

    def output_syn(self, *args: Any, **kw: Any) -> bool:
        return False


class _Owner:
    """Ownership of one connection (``sk_lock.owned``) and its backlog (``sk_backlog``):
    ``depth`` nested holders, ``queue`` of ``(hdr, payload)`` waiting, ``size`` their cost."""

    __slots__ = ("depth", "queue", "size", "wake")

    def __init__(self) -> None:
        self.depth = 0
        self.wake = False                # a delivery was asked for while owned
        self.queue: list[tuple[TcpHeader, bytes]] = []
        self.size = 0


class NetworkCore:
    """See the module docstring.  ``addresses``: ``[(addr_bytes, prefixlen), ...]``.

    ``transmit(frame, gso_type=0, gso_size=0, csum_start=0, csum_offset=0)`` sends a frame
    (``Link.send``).  ``vnet``: the link does GSO/checksum offload.  ``dedicated``: we own the
    addresses (answer ARP/ICMP echo, RST anything unknown); shared mode (``dedicated=False``):
    the kernel owns them, we only touch TCP ports we use (``reserve_port(port) -> bool`` /
    ``release_port(port)`` are called when a local port starts / stops being used) and ask
    ``neighbour_lookup`` for link-layer addresses.
    """

    def __init__(self, link_mac: bytes, mtu: int, addresses: Iterable[tuple[bytes, int]],
                 counters: Counters | None, config: TcpConfig | None, wheel: Any, transmit: Transmit,
                 now_fn: Callable[[], float] | None = None, *, vnet: bool = False, dedicated: bool = True,
                 routes: Iterable[tuple[bytes, int, bytes | None]] = (),
                 neighbour_lookup: NeighbourLookup | None = None,
                 reserve_port: Callable[[int], bool] | None = None,
                 release_port: Callable[[int], None] | None = None,
                 secret: bytes | None = None, strict: bool = False,
                 connection_factory: Callable[..., Any] | None = None) -> None:
        self.mac = bytes(link_mac)
        self.mtu = mtu
        self.counters = counters if counters is not None else Counters()
        self.config = config if config is not None else TcpConfig()
        self.wheel = wheel
        self.transmit = transmit
        self.now_fn = now_fn
        self.vnet = vnet
        self.dedicated = dedicated
        self.neighbour_lookup = neighbour_lookup
        self.reserve_port = reserve_port
        self.release_port = release_port
        #: shared mode (aio Stack): ``pick_port() -> int | None`` offers an ephemeral port that is
        #: already reserved in the kernel and guarded (a pre-reserved pool: ``reserve_port`` of it
        #: costs nothing); ``port_held(port)``: such a port, not in use, is still ours (segments to
        #: it are answered with RST, as the kernel would for its bound socket)
        self.pick_port: Callable[[], int | None] | None = None
        self.port_held: Callable[[int], bool] | None = None
        # RFC 9293 3.4.1 (MUST-9) / RFC 6528: the key of the ISN, timestamp-offset, ephemeral-port
        # and SYN-cookie hashes must not be computable from outside, so without one from the
        # caller every core draws its own (os.urandom, like Linux's net_secret); a caller that
        # needs reproducible ISNs (simulations, tests) passes a fixed secret
        self.secret = bytes(secret) if secret is not None else os.urandom(32)
        self.strict = strict             # re-raise internal errors (tests) instead of logging them
        self.connection_factory = connection_factory   # default: tcp.connection.TcpConnection
        self.now = 0.0
        self.routing = RoutingTable(addresses, routes)
        self.local_v4: set[bytes] = {a for a, _ in self.routing.addresses if len(a) == 4}
        self.local_v6: set[bytes] = {a for a, _ in self.routing.addresses if len(a) == 16}
        self.demux = DemuxTable()
        self.neigh = NeighbourTable(self.counters, self._solicit)
        self.neigh.on_deadline = self._arm_neigh_timer
        self._neigh_timer: Any = None
        self._neigh_armed: float | None = None
        self.routes: dict[Any, Route] = {}        # connection -> route
        #: frames to our own addresses (the kernel's ``lo``): queued, and ``loopback_hook()`` is
        #: called when the queue becomes non-empty so the driver (aio / sim) schedules
        #: ``flush_loopback(now)`` soon -- never processed re-entrantly inside an output() call
        self.loopback_hook: Callable[[], None] | None = None
        self._loop_q: list[tuple[bytes, bool]] = []
        self._touched: dict[Any, None] = {}
        #: connections owned by the application (a protocol callback in progress): their
        #: segments go to the backlog (see the module docstring)
        self._owned: dict[Any, _Owner] = {}
        self._rx_depth = 0               # > 0 while receive() is in its frame loop
        #: the DiffServ field (IPv4 TOS / IPv6 traffic class) of the TCP segment being received:
        #: the replies sent for it without a connection of their own (a RST, a request sock's
        #: ACK) echo its DSCP, as Linux's control socket does (``send_reset``)
        self.rx_dsfield = 0
        self._gro: GroHold | None = None  # software GRO: segments held within one batch (ip/gro.py)
        self.gro = True                  # merge consecutive in-order segments of a flow per batch
        self._gro_batch = False
        #: the other data runs of the held flow in this batch (frames reordered before us,
        #: gro.py); never non-empty without ``_gro``
        self._gro_apart: list[GroHold] = []
        self._ident = 0
        self._port_counter = 0
        self._isn = None
        self._csum_warned = False
        self._release_cb = self._release     # one bound method shared by every connection
        self._tw_output_cb = self._tw_output     # ... and by every TIME_WAIT record
        self._release_tw_cb = self._release_tw
        default_mss = TcpConfig().mss
        cfg_mss = self.config.mss
        self.mss4 = mtu - 40 if cfg_mss == default_mss else min(cfg_mss, mtu - 40)
        self.mss6 = mtu - 60 if cfg_mss == default_mss else min(cfg_mss, mtu - 60)
        self.config4 = self.config.with_options(mss=self.mss4)
        self.config6 = self.config.with_options(mss=self.mss6)
        #: net.ipv4.ip_default_ttl / net.ipv6.conf.*.hop_limit: what a socket's -1 stands for
        #: (validated by TcpConfig)
        self.default_ttl = self.config.ip_default_ttl
        self.default_hop_limit = self.config.ipv6_hop_limit
        #: net.ipv4.conf.*.accept_source_route (default off, as a Linux host: source-routed
        #: datagrams dropped, ``IpInSrcRouteDrops``)
        self.accept_source_route = self.config.accept_source_route
        #: while a received TCP segment with IPv4 options is processed: the options of our answer
        #: to it (``echo_options``: a request sock keeps them, RSTs and TIME_WAIT ACKs carry them);
        #: False where Linux would send no answer at all; None otherwise
        self._rx_echo: Any = None
        self._pp_sent: dict[bytes, float] = {}     # parameter problems: last per source (rate)
        # (PMTUD/ICMP issue) per-destination path MTU learned from ICMP (ip/pmtu.py)
        from .pmtu import PmtuCache
        self.pmtu = PmtuCache(mtu)
        #: fragment queues, both families (RFC 1122 3.3.2: a host MUST reassemble)
        self.reasm = Reassembler(self.counters)
        self.parse_tcp, self.build_tcp, self.verify_tcp_checksum, self.encode_options = _tcp_api()

    # ------------------------------------------------------------------------------------------
    # receive path
    # ------------------------------------------------------------------------------------------
    #: a lone frame skips the frame loop (:meth:`receive`); off only to compare both paths in tests
    lone_rx = True
    #: _rx_frames starts no GRO hold the next frame cannot join; off only to compare in tests
    gro_lookahead = True
    _spare_owner: _Owner | None = None     # _deliver_conn's released _Owner, for the next one

    def receive(self, batch: list, now: float) -> None:
        """Process one drained batch of ``(frame, csum_trusted)`` (:meth:`_rx_frames`); then
        ``end_batch`` once per touched connection."""
        self.now = now
        counters = self.counters
        mac = self.mac
        local_v4 = self.local_v4
        eth_unpack = _ETH.unpack_from
        ip_unpack = _IP4.unpack_from
        rx_tcp = self._rx_tcp
        self._rx_depth += 1
        lone = len(batch) == 1
        self._gro_batch = self.gro and not lone      # a lone segment has nothing to merge with
        try:
            if lone and self._gro is None and self.lone_rx:
                # a lone frame (request/response traffic) with no hold to extend: what the frame
                # loop does for it -- count it, then the general path (no GRO hold can start:
                # _gro_batch is off) -- without the loop's call and run-check setup
                counters["LinkInFrames"] += 1
                frame, trusted = batch[0]
                self._rx_frame(frame, trusted, now, counters, mac, local_v4, eth_unpack, ip_unpack, rx_tcp)
            else:
                self._rx_frames(batch, now, counters, mac, local_v4, eth_unpack, ip_unpack, rx_tcp)
        finally:
            try:
                if self._gro is not None:     # the batch's last merged segments (also after an error)
                    self._gro_flush(now)
            except Exception:
                counters["StackErrors"] += 1
                if self.strict:
                    raise
                log.exception("error in the GRO flush")
            finally:
                self._rx_depth -= 1
        # the prequeue's purpose: each touched connection delivers once per batch (a delivery
        # can touch more connections: a re-entrant receive, a Server draining its accept queue)
        done: list = []
        try:
            while self._touched:
                touched = self._touched
                self._touched = {}
                for conn in touched:
                    done.append(conn)
                    try:
                        self._deliver_conn(conn, now)
                    except Exception:
                        counters["StackErrors"] += 1
                        if self.strict:
                            raise
                        log.exception("error in end_batch")
        finally:
            # the batch's frames may be views into the link's buffers (AfPacketLink with
            # rx_copy=False), valid until the next batch: what a connection still queues is
            # copied now (the backlog and the out-of-order queue copy on entry)
            for conn in done:
                if getattr(conn, "rx", None):      # (a TIME_WAIT record has no receive queue)
                    conn.pin_rx()
            for conn in self._touched:
                if getattr(conn, "rx", None):
                    conn.pin_rx()

    def _rx_frames(self, batch: list, now: float, counters: Counters, mac: bytes, local_v4: set,
                   eth_unpack: Any, ip_unpack: Any, rx_tcp: Any) -> None:
        """The frame loop: the run check of software GRO inline (the common frame of a bulk
        receive costs no call), every other frame through :meth:`_rx_frame`."""
        counters["LinkInFrames"] += len(batch)
        extended = 0          # frames the run check appended (counted in IpInReceives at the end)
        g = self._gro         # the hold the run key belongs to
        k16 = None            # the held data run's key (gro.raw_key); None: no run to extend
        nxt = 0               # the run's next sequence number (g.next_seq, written back below)
        raw = _RAW_UNPACK
        rx_frame = self._rx_frame
        # GRO's lookahead: a hold is joined by the frame right after it or never (a TCP
        # segment that does not join flushes it, _rx_tcp), and only by one of the same flow
        # and kind (data joins data, a pure ACK a pure ACK).  A frame whose next frame visibly
        # cannot join -- both option-less IPv4, another address or port, or data after a pure
        # ACK or the reverse -- or that is the batch's last, starts no hold: it takes the direct
        # header prediction, as a lone frame does (what the hold's flush would have done at the
        # next frame, without the hold, the flush and the hand-over: request/response traffic
        # of many connections in one batch, e.g. conn_rate's ACK + response + FIN per connection)
        lookahead = self._gro_batch and self.gro_lookahead
        n = len(batch)
        i = 0
        try:
            for frame, trusted in batch:
                i += 1
                if k16 is not None:
                    # Software GRO's run check (gro.py): a frame whose headers are those of the
                    # run's first frame but for the fields a run may change (gro.RAW), at the next
                    # sequence number, with both checksums right, extends the run.  Anything else
                    # -- a mismatch, a bad checksum, no payload, a short frame -- takes the general
                    # path, which decides exactly as it would have without this check.
                    try:
                        e16, tot, ident, w4, ipcs, a12, seq, d8, tcs, o14 = raw(frame)
                    except _StructError:
                        e16 = None
                    if (e16 == k16 and seq == nxt and a12 == k12 and w4 == kw4 and RAW_LEN - 14 < tot
                            and (d8 == k8 or d8 == k8p)):
                        if o14 == k14:
                            newts = -1               # (the same TSval)
                        elif (o14[:6] == k14[:6] and o14[10:] == k14[10:]
                              and 0 < ((newts := _from_bytes(o14[6:10], "big")) - kts) & 0xFFFFFFFF < 0x80000000):
                            pass                     # only the TSval changed, to a newer one (gro.py)
                        else:
                            newts = None
                        p = frame[RAW_LEN:14 + tot]
                        plen = tot - RAW_LEN + 14
                        if newts is not None and len(p) == plen:
                            if trusted:
                                ok = True
                            elif (kip + tot + ident + ipcs) % 0xFFFF:      # the IPv4 header checksum
                                ok = False
                            else:
                                # the TCP checksum: the payload as one little-endian int, folded
                                # (three times: wire/checksum.py, FOLD3_BITS) and byte-swapped
                                # (<< 8) as in wire/checksum.py, plus the run's constant sum
                                # (gro.raw_key) and the words that vary (2**16 == 1 mod 0xffff: a
                                # 32-bit field adds as itself)
                                x = _from_bytes(p, "little")
                                if FOLD_MIN < plen <= FOLD_MAX:
                                    x = (x >> FOLD_BITS) + (x & FOLD_MASK)
                                    x = (x >> FOLD2_BITS) + (x & FOLD2_MASK)
                                    x = (x >> FOLD3_BITS) + (x & FOLD3_MASK)
                                ok = (((x % 0xFFFF) << 8) + (kt if d8 == k8 else ktp) + tot + seq + tcs
                                      + (newts - kts if newts >= 0 else 0)) % 0xFFFF == 0
                            if ok:
                                if newts >= 0:
                                    g.extend_ts(newts)       # (before the part: it starts there)
                                    k14 = o14
                                    kt += newts - kts
                                    ktp += newts - kts
                                    kts = newts
                                append(p)
                                nxt = (seq + plen) & 0xFFFFFFFF
                                if d8 != k8:
                                    g.flags |= PSH
                                extended += 1
                                continue
                    g.next_seq = nxt         # the hold as the general path expects it
                    g.nbytes = (nxt - g.seq) & 0xFFFFFFFF
                nparts = len(g.parts) if g is not None else 0
                if lookahead:
                    if i < n:
                        try:
                            e1, tot1, key1, of1 = _FLOW4(frame)
                            e2, tot2, key2, of2 = _FLOW4(batch[i][0])
                        except _StructError:
                            self._gro_batch = True         # (a short frame: no conclusion)
                        else:
                            # (payload: IPv4 total length - 20 - the TCP header length)
                            self._gro_batch = (e1 != _ETH_IP4_IHL5 or e2 != _ETH_IP4_IHL5 or (
                                key1 == key2 and (tot1 > 20 + (of1 >> 12 << 2)) == (tot2 > 20 + (of2 >> 12 << 2))))
                    else:
                        self._gro_batch = False
                rx_frame(frame, trusted, now, counters, mac, local_v4, eth_unpack, ip_unpack, rx_tcp)
                g2 = self._gro
                if g2 is not None and len(g2.parts) == (nparts + 1 if g2 is g else 1):
                    # the frame started a data run or is the newest part of the held one (e.g.
                    # with a newer TSval): the run goes on inline from this frame's headers, if
                    # they are of the one layout the run check reads
                    g = g2
                    key = raw_key(frame)
                    if key is None:
                        k16 = None
                    else:
                        k16, kw4, k12, k8, k8p, k14, kts, kip, kt, ktp = key
                        nxt = g.next_seq
                        append = g.parts.append
                elif g2 is not g:
                    g = g2                   # the hold ended (or a pure-ACK hold began)
                    k16 = None
            if k16 is not None:
                g.next_seq = nxt
                g.nbytes = (nxt - g.seq) & 0xFFFFFFFF
        finally:
            # (an exception can only come from _rx_frame, after the hold was written back)
            if extended:
                counters["IpInReceives"] += extended

    def _rx_frame(self, frame: Any, trusted: bool, now: float, counters: Counters, mac: bytes, local_v4: set,
                  eth_unpack: Any, ip_unpack: Any, rx_tcp: Any) -> None:
        """One frame through the general receive path.

        The common case -- an option-less IPv4 header addressed to our MAC -- is parsed inline
        (one ``unpack_from``, the same checks as ``wire.ipv4.parse_ipv4``); everything else goes
        through the wire parsers."""
        n = len(frame)
        if n < ETH_HLEN:
            counters["LinkInDrops"] += 1
            return
        dst, src, ethertype = eth_unpack(frame)
        if src == mac and not self.loopback_link:   # our own (or the kernel's) outgoing frame seen by a tap
            return
        try:
            if ethertype == ETH_P_IP:
                if dst != mac:
                    return     # IPv4 broadcast/multicast: nothing for TCP
                mv = frame if type(frame) is memoryview else memoryview(frame)
                if n >= 34 and mv[14] == 0x45:
                    # (header checksum below: RFC 1071's sum is 0xffff iff the 20 bytes are 0
                    # mod 0xffff -- never all zero with version 4 -- in one C call)
                    _v, _tos, tot, _id, frag, _ttl, proto, _c, ipsrc, ipdst = ip_unpack(mv, 14)
                    if tot < 20 or tot + 14 > n or (not trusted and _from_bytes(mv[14:34], "little") % 0xFFFF):
                        counters["IpInHdrErrors"] += 1
                        return
                    if ipdst not in local_v4:
                        if self.dedicated:
                            counters["IpInAddrErrors"] += 1
                        return
                    counters["IpInReceives"] += 1
                    if frag & 0x3FFF:               # MF or a fragment offset: reassembly
                        if self._gro is not None:
                            self._gro_flush(now)
                        self._rx_ipv4(mv[14:], trusted, src, now, True)
                        return
                    if proto == IPPROTO_TCP:
                        self.rx_dsfield = _tos      # (for a socket-less reply: send_reset)
                        if _tos & 3 == 3:           # CE (RFC 3168 5): never merged, TCP told
                            self._rx_tcp_ce(ipsrc, ipdst, mv[34:14 + tot], trusted, now)
                        else:
                            rx_tcp(ipsrc, ipdst, mv[34:14 + tot], trusted, now)
                    else:
                        if self._gro is not None:
                            self._gro_flush(now)
                        self._rx_ipv4(mv[14:], trusted, src, now, True)
                else:
                    if self._gro is not None:
                        self._gro_flush(now)
                    self._rx_ipv4(mv[14:], trusted, src, now)
            elif ethertype == ETH_P_ARP:
                if self._gro is not None:
                    self._gro_flush(now)
                self._rx_arp(memoryview(frame)[14:], now)
            elif ethertype == ETH_P_IPV6:
                if dst == mac or dst[0] & 1:
                    if self._gro is not None:
                        self._gro_flush(now)
                    self._rx_ipv6(memoryview(frame)[14:], trusted, src, now)
        except Exception:
            counters["StackErrors"] += 1
            if self.strict:
                raise
            log.exception("error processing a received frame")

    # -- socket ownership and the backlog (tcp_v4_rcv / release_sock) ---------------------------
    def lock_conn(self, conn: Any) -> None:
        """The application owns ``conn`` (``lock_sock``): until :meth:`release_conn`, segments
        for it are appended to its backlog instead of being processed.  Nests."""
        o = self._owned.get(conn)
        if o is None:
            o = self._owned[conn] = _Owner()
        o.depth += 1

    def release_conn(self, conn: Any, now: float | None = None) -> None:
        """End one :meth:`lock_conn` (``release_sock``): when the last holder lets go, the backlog
        is processed and the data delivered (under ownership again, so a receive re-entered from
        the delivery keeps queueing in order)."""
        o = self._owned.get(conn)
        if o is None:
            return
        if o.depth > 1:
            o.depth -= 1
            return
        del self._owned[conn]
        if o.queue or o.wake:
            self._deliver_conn(conn, self._now() if now is None else now, o.queue)

    def wake(self, conn: Any, now: float) -> None:
        """Deliver what ``conn`` holds (data, EOF, ACK decisions) -- with the current batch when
        called from inside ``receive``, else right away (e.g. a Server that starts serving and
        hands out connections that got data while they waited in the accept queue)."""
        if self._rx_depth:
            self._touched[conn] = None
        else:
            self._deliver_conn(conn, now)

    def _deliver_conn(self, conn: Any, now: float, pending: list | None = None) -> None:
        """``end_batch`` under ownership, then the backlog that built up meanwhile (repeat)."""
        owner = self._owned.get(conn)
        if owner is not None:            # owned (its own delivery, or lock_conn): the owner
            owner.wake = True            # delivers when it lets go
            return
        o = self._spare_owner            # (one _Owner reused: no allocation per delivery)
        if o is None:
            o = _Owner()
        else:
            self._spare_owner = None
        o.depth = 1
        self._owned[conn] = o
        try:
            if pending:
                self._process_backlog(conn, pending, now)
            conn.end_batch(now)
            while o.queue or o.wake:
                o.wake = False
                q = o.queue
                o.queue = []
                o.size = 0
                self._process_backlog(conn, q, now)
                conn.end_batch(now)
        finally:
            if self._owned.get(conn) is o:
                del self._owned[conn]
                if not o.queue:          # (unreachable now; an error may have left a backlog)
                    o.wake = False
                    o.size = 0
                    self._spare_owner = o
        if conn.state == "TIME_WAIT":
            self._time_wait_sock(conn)

    def _time_wait_sock(self, conn: Any) -> None:
        """Linux ``tcp_time_wait`` / ``inet_twsk_hashdance``: a connection in TIME_WAIT that has
        nothing left to do gives its demux entry (and its port reference) to a small
        ``TimeWaitSock`` (tcp/timewait.py) and is dropped with its route; its transport is no
        longer held by the stack.  Kept whole while it still has work (``time_wait_sock`` says)."""
        make = getattr(conn, "time_wait_sock", None)
        if make is None or conn in self._owned:
            return
        lip, lport = conn.local
        rip, rport = conn.remote
        key = (lip, lport, rip, rport)
        conns = self.demux.conns
        if conns.get(key) is not conn:
            return
        tw = make(self._tw_output_cb, self._release_tw_cb)
        if tw is None:
            return
        conns[key] = tw
        route = self.routes.pop(conn, None)
        if route is not None:
            route.conn = None
        self._touched.pop(conn, None)

    def _tw_output(self, tw: Any, hdr: TcpHeader) -> None:
        """A ``TimeWaitSock``'s ACK (rare: a retransmitted FIN, PAWS, a challenge ACK): through a
        route made for it, as for a RST.  It keeps the connection's TOS / traffic class and uses the
        default TTL / hop limit, as Linux's TIME_WAIT ACK (``tw_tos`` / ``tw_tclass``, sent through
        the per-netns control socket)."""
        rip = tw.remote[0]
        route = Route(self, tw.local[0], rip, self.neigh.entry(self._next_hop(rip)))
        config = getattr(tw, "config", None)
        if config is not None:
            route.set_ip(route.ttl, config.ip_fields(route.v6, 0, 0)[1])
        echo = self._rx_echo
        if echo is False:
            return
        if echo is not None:
            route.set_ip_options(echo)     # answering a segment with options (tcp_v4_send_ack)
        self._tcp_output(route, hdr, b"")

    def _release_tw(self, tw: Any) -> None:
        """A ``TimeWaitSock``'s TIME_WAIT ended (2MSL, or a SYN reopened the 4-tuple): its demux
        entry and the port reference it took over from the connection go (once)."""
        lip, lport = tw.local
        rip, rport = tw.remote
        key = (lip, lport, rip, rport)
        if self.demux.conns.get(key) is not tw:
            return
        del self.demux.conns[key]
        self._touched.pop(tw, None)
        self._owned.pop(tw, None)
        self._unuse_port(lport)

    def _process_backlog(self, conn: Any, queue: list, now: float) -> None:
        """``sk_backlog_rcv`` for each queued segment, in arrival order."""
        for hdr, payload in queue:
            if conn.state == "CLOSED":
                self.counters["TCPBacklogDrop"] += 1      # nowhere to go any more
                continue
            conn.on_segment(hdr, payload, now)

    def _backlog_add(self, o: _Owner, conn: Any, hdr: TcpHeader, payload: Any) -> None:
        """``sk_add_backlog`` with limit ``rcvbuf + sndbuf``; overflow: ``TCPBacklogDrop``."""
        cost = len(payload) + BACKLOG_SEG_OVERHEAD
        cfg = getattr(conn, "config", None)
        limit = getattr(conn, "rcvbuf", 0) + (getattr(cfg, "sndbuf", 0) if cfg is not None else 0)
        if o.size + cost > limit:
            self.counters["TCPBacklogDrop"] += 1
            return
        o.size += cost
        o.queue.append((hdr, bytes(payload)))     # the frame buffer is not ours to keep

    def _rx_arp(self, payload: memoryview, now: float) -> None:
        counters = self.counters
        try:
            pkt = _arp.parse_arp(payload)
        except ParseError:
            counters["LinkInDrops"] += 1
            return
        for_us = pkt.tpa in self.local_v4
        if pkt.op == _arp.ARP_REQUEST:
            counters["ArpInRequests"] += 1
        elif pkt.op == _arp.ARP_REPLY:
            counters["ArpInReplies"] += 1
        else:
            return
        if pkt.spa != b"\x00\x00\x00\x00" and pkt.sha != mac_zero:
            # Learn the sender (arp_process: create the entry when the request targets us,
            # otherwise only refresh an existing one).
            queued = self.neigh.update(pkt.spa, pkt.sha, now, create=for_us and self.routing.is_onlink(pkt.spa))
            for item in queued:
                self._send_queued(pkt.spa, item)
        if for_us and pkt.op == _arp.ARP_REQUEST and self.dedicated:
            reply = _arp.build_arp(_arp.arp_reply_to(pkt, self.mac))
            counters["ArpOutReplies"] += 1
            self.transmit(_ETH.pack(pkt.sha, self.mac, ETH_P_ARP) + reply)

    def _rx_ipv4(self, buf: memoryview, trusted: bool, src_mac: bytes, now: float, counted: bool = False) -> None:
        counters = self.counters
        try:
            ip, payload = parse_ipv4(buf, not trusted)
        except ParseError:
            counters["IpInHdrErrors"] += 1
            return
        if ip.dst not in self.local_v4:
            if self.dedicated:
                counters["IpInAddrErrors"] += 1
            return
        if not counted:
            counters["IpInReceives"] += 1
        ipopt = None
        if ip.ihl != 5:
            # IPv4 options (never on the fast paths: _rx_frame sends every IHL != 5 header here)
            got = self._rx_ip_options(ip, buf, src_mac, now)
            if got is None:
                return
            ipopt, dst = got
        if ip.mf or ip.frag_offset:
            # RFC 1122 3.3.2 / RFC 791 3.2: queue it (ip/reassembly.py); the complete datagram
            # comes back through here with a header of our own -- its TCP / ICMP checksum verified
            # in full (a frame's trusted checksum vouches for no datagram beyond the frame)
            done = self.reasm.add_v4(ip.src, ip.dst, ip.ident, ip.proto, ip.frag_offset << 3, ip.mf, payload,
                                     (ip.ttl, ip.tos), now)
            if done is not None:
                (ttl, tos), data = done
                # (never the start of a GRO run: _rx_frames would take the frame -- a fragment -- as
                # the run's first segment and read its bytes as a TCP header)
                gro, self._gro_batch = self._gro_batch, False
                try:
                    self._rx_ipv4(memoryview(build_ipv4_header(ip.src, ip.dst, ip.proto, len(data), ttl, ip.ident,
                                                               df=False, tos=tos) + data), False, src_mac, now, True)
                finally:
                    self._gro_batch = gro
            return
        proto = ip.proto
        if proto == IPPROTO_TCP:
            self.rx_dsfield = ip.tos
            if ipopt is not None:
                self._rx_tcp_options(ip.src, dst, payload, trusted, now, ip.tos, ipopt)
            elif ip.tos & 3 == 3:
                self._rx_tcp_ce(ip.src, ip.dst, payload, trusted, now)
            else:
                self._rx_tcp(ip.src, ip.dst, payload, trusted, now)
        elif proto == IPPROTO_ICMP and len(payload) >= 8 and payload[0] in _ICMP_ERROR_TYPES:
            # (PMTUD/ICMP issue) errors go to TCP in both modes (ip/icmp_errors.py)
            counters["IpInDelivers"] += 1
            from .icmp_errors import rx_icmpv4_error
            rx_icmpv4_error(self, ip.src, payload, now)
        elif proto == IPPROTO_ICMP and self.dedicated:
            counters["IpInDelivers"] += 1
            from .icmp_echo import echo_reply_v4, fragment_ipv4
            reply = echo_reply_v4(payload, counters)
            if reply is not None and ipopt is not None:
                from .ip_options import echo_reply
                echo_reply(self, ip, dst, ipopt, reply, src_mac, now)
            elif reply is not None:
                # the request's whole TOS byte, ECN bits too, as Linux's icmp_reply
                # (``inet->tos = ip_hdr(skb)->tos``; checked on 6.18: 0x2b -> 0x2b)
                if 20 + len(reply) <= self.mtu:
                    self._send_l3_direct(src_mac, ETH_P_IP,
                                         build_ipv4_header(ip.dst, ip.src, IPPROTO_ICMP, len(reply), self.default_ttl,
                                                           ident=self._next_ident(), df=False, tos=ip.tos) + reply)
                else:       # the reply to a large (fragmented) request: in fragments, as Linux
                    for l3 in fragment_ipv4(ip.dst, ip.src, IPPROTO_ICMP, reply, self.mtu, self._next_ident(),
                                            self.default_ttl, ip.tos):
                        self._send_l3_direct(src_mac, ETH_P_IP, l3)
        elif self.dedicated:
            counters["IpInUnknownProtos"] += 1

    # -- IPv4 options (wire/ipv4_options.py; Linux ip_rcv_options) --------------------------------
    def _is_local_v4(self, addr: bytes) -> bool:
        return addr in self.local_v4

    def _rx_ip_options(self, ip: Any, buf: memoryview, src_mac: bytes,
                       now: float) -> "tuple[_ipopt.IpOptions, bytes] | None":
        """A received header with options (``ip/ip_options.py``): ``(options, destination)``,
        or None when it was dropped."""
        from .ip_options import rx_options
        return rx_options(self, ip, buf, src_mac, now)

    def _rx_tcp_options(self, src: bytes, dst: bytes, seg: memoryview, trusted: bool, now: float, tos: int,
                        opt: "_ipopt.IpOptions") -> None:
        """A TCP segment whose IPv4 header had options: never merged by GRO (Linux's GRO flushes
        on a differing IP header), the options of our answer (``echo_options``) kept in
        ``_rx_echo`` while it is processed: a SYN's go to its request sock (Linux
        ``tcp_v4_save_options`` -> ``ireq_opt``, then the child's ``inet_opt``: RFC 9293 MUST-53,
        a received source route reversed for the whole connection), a RST or TIME_WAIT ACK
        answering it carries them (``ip_send_unicast_reply``)."""
        if self._gro is not None:
            self._gro_flush(now)
        echo = _ipopt.echo_options(opt, src, self._is_local_v4)
        from .ip_options import later_route
        later = later_route(self, src, dst, seg, echo)
        gro = self._gro_batch
        self._gro_batch = False
        self._rx_echo = echo if echo is not None else False
        try:
            if tos & 3 == 3:
                self._rx_tcp_ce(src, dst, seg, trusted, now)
            else:
                self._rx_tcp(src, dst, seg, trusted, now)
        finally:
            self._gro_batch = gro
            self._rx_echo = None
        if later is not None:
            conn, route, before = later
            if (conn.rcv_nxt, conn.snd_una) != before and self.routes.get(conn) is route:
                route.set_ip_options(echo)

    def _rx_ipv6(self, buf: memoryview, trusted: bool, src_mac: bytes, now: float, reassembled: bool = False) -> None:
        from ..wire.ipv6 import parse_ipv6
        counters = self.counters
        try:
            ip, payload = parse_ipv6(buf)
        except ParseError:
            counters["Ip6InHdrErrors"] += 1
            return
        dst = ip.dst
        nh = ip.next_header
        if dst not in self.local_v6:
            if nh == IPPROTO_ICMPV6 and dst[0] == 0xFF:
                self._rx_icmpv6(ip, payload, src_mac, now)      # NDP to a multicast group
            return
        if ip.fragment:
            if not reassembled:
                self._rx_ipv6_fragment(ip, buf, payload, src_mac, now)
            else:
                counters["Ip6ReasmFails"] += 1      # a Fragment header inside a reassembled one
            return
        if nh == IPPROTO_TCP:
            self.rx_dsfield = ip.traffic_class
            if ip.traffic_class & 3 == 3:
                self._rx_tcp_ce(ip.src, dst, payload, trusted, now)
            else:
                self._rx_tcp(ip.src, dst, payload, trusted, now)
        elif nh == IPPROTO_ICMPV6:
            self._rx_icmpv6(ip, payload, src_mac, now)
        else:
            # (robustness issue: every drop is counted) Linux: Ip6InUnknownProtos
            counters["Ip6InUnknownProtos"] += 1

    def _rx_ipv6_fragment(self, ip: Any, buf: memoryview, payload: memoryview, src_mac: bytes, now: float) -> None:
        """RFC 8200 4.5: queue an IPv6 fragment (ip/reassembly.py).  ``parse_ipv6`` stopped right
        after the Fragment header, so it is the 8 bytes before ``payload``; the complete datagram
        (or an atomic fragment, RFC 6946) goes through :meth:`_rx_ipv6` again behind an IPv6
        header of our own, where the extension headers of the fragmentable part are walked and
        the upper layer's checksum is verified in full.  A Fragment header in there is dropped
        (no nesting: bounded recursion)."""
        off = IPV6_HLEN + ip.payload_length - len(payload)
        _nh, _res, offm, ident = _FRAG6(buf, off - 8)
        done = self.reasm.add_v6(ip.src, ip.dst, ident, offm & 0xFFF8, bool(offm & 1), ip.next_header,
                                 payload, (ip.hop_limit, ip.traffic_class, ip.flow_label), now)
        if done is not None:
            (hlim, tc, flow), nh, data = done      # (data <= 65535 bytes: reassembly checks)
            gro, self._gro_batch = self._gro_batch, False       # (as in _rx_ipv4)
            try:
                self._rx_ipv6(memoryview(build_ipv6_header(ip.src, ip.dst, nh, len(data), hlim, tc, flow) + data),
                              False, src_mac, now, True)
            finally:
                self._gro_batch = gro

    def _rx_icmpv6(self, ip: Any, payload: memoryview, src_mac: bytes, now: float) -> None:
        """NDP (RFC 4861: answer NS for our addresses in dedicated mode, learn from NS/NA) and
        echo (dedicated mode)."""
        from ..wire import icmp as _icmp
        counters = self.counters
        try:
            msg = _icmp.parse_icmpv6(payload, ip.src, ip.dst)
        except ParseError:
            counters["Icmp6InErrors"] += 1
            return
        t = msg.type
        if t == 135 or t == 136:
            if ip.hop_limit != 255:
                return                       # RFC 4861 7.1.1: not from on-link
            try:
                nd = _icmp.parse_ndp(msg)
            except ParseError:
                counters["Icmp6InErrors"] += 1
                return
            target = nd.target
            unspecified = ip.src == bytes(16)
            if t == 135:
                if target not in self.local_v6:
                    return
                if nd.source_lla and not unspecified:
                    for item in self.neigh.update(ip.src, nd.source_lla, now):
                        self._send_queued(ip.src, item)
                if self.dedicated:
                    if unspecified:         # DAD probe for our address: defend it
                        dst, dmac, solicited = b"\xff\x02" + bytes(13) + b"\x01", b"\x33\x33\x00\x00\x00\x01", False
                    else:
                        dst, dmac, solicited = ip.src, nd.source_lla or src_mac, True
                    na = _icmp.build_ndp_na(target, dst, target, self.mac, solicited=solicited, override=True)
                    counters["Icmp6OutNeighborAdvertisements"] += 1
                    self._send_l3_direct(dmac, ETH_P_IPV6,
                                         build_ipv6_header(target, dst, IPPROTO_ICMPV6, len(na), 255) + na)
            else:
                if nd.target_lla:
                    for item in self.neigh.update(target, nd.target_lla, now, create=False):
                        self._send_queued(target, item)
            return
        if 1 <= t <= 4:
            if ip.dst in self.local_v6:
                # (PMTUD/ICMP issue) errors go to TCP in both modes (ip/icmp_errors.py)
                from .icmp_errors import rx_icmpv6_error
                rx_icmpv6_error(self, msg, now)
            return
        if self.dedicated and ip.dst in self.local_v6:
            from .icmp_echo import echo_reply_v6, fragment_ipv6
            reply = echo_reply_v6(payload, ip.src, ip.dst, counters)
            if reply is not None:
                # the request's traffic class, ECN bits too (Linux icmpv6_echo_reply:
                # ``ipv6_get_dsfield``; checked on 6.18)
                tclass = ip.traffic_class
                if 40 + len(reply) <= self.mtu:
                    self._send_l3_direct(src_mac, ETH_P_IPV6,
                                         build_ipv6_header(ip.dst, ip.src, IPPROTO_ICMPV6, len(reply),
                                                           self.default_hop_limit, tclass) + reply)
                else:       # in fragments (RFC 8200 4.5), an unpredictable identification (RFC 7739)
                    for l3 in fragment_ipv6(ip.dst, ip.src, IPPROTO_ICMPV6, reply, self.mtu,
                                            _from_bytes(os.urandom(4), "big"), self.default_hop_limit,
                                            tclass):
                        self._send_l3_direct(src_mac, ETH_P_IPV6, l3)

    def _gro_reorder(self, g: GroHold, seq: int, payload: Any, flags: int, tsval: int) -> bool:
        """A data segment of the held flow (same ACK, window, TSecr, flags ACK[|PSH]) that does
        not continue the held run ``g``: True when it was put into a run of its own or appended
        to another run of this batch (it becomes the held run ``_gro``), so that the flush
        hands the runs to TCP in sequence order (gro.py); False (flush as before) when it or a
        held run lies before RCV.NXT or it overlaps a held run (a retransmission), or too many
        runs are held apart."""
        rcv_nxt = g.conn.rcv_nxt
        off = (seq - rcv_nxt) & 0xFFFFFFFF
        if off >= 0x80000000:
            return False
        end = off + len(payload)
        apart = self._gro_apart
        target = None
        for r in (g, *apart):
            ro = (r.seq - rcv_nxt) & 0xFFFFFFFF
            if ro >= 0x80000000 or (off < ro + r.nbytes and ro < end):
                return False
            if r.next_seq == seq and r is not g and continues(r, tsval):
                target = r
        if target is None:
            if len(apart) >= MAX_RUNS - 1:
                return False
            target = GroHold(g.conn, g.src, g.dst, g.sport, g.dport, seq, g.ack, g.window, flags, tsval, g.tsecr,
                             payload)
        else:
            if tsval != target.ts_last:
                target.extend_ts(tsval)
            target.parts.append(payload)
            target.nbytes += len(payload)
            target.next_seq = (seq + len(payload)) & 0xFFFFFFFF
            target.flags |= flags
            apart.remove(target)
        apart.append(g)
        self._gro = target
        self.counters["TcpGroReordered"] += 1
        return True

    def _gro_flush(self, now: float) -> None:
        """Hand what software GRO holds to TCP, the runs held apart (gro.py) in sequence order."""
        g = self._gro
        if g is None:
            return
        self._gro = None
        if not self._gro_apart:
            self._gro_hand(g, now)
            return
        runs = self._gro_apart
        self._gro_apart = []
        runs.append(g)
        for r in in_order(runs, g.conn.rcv_nxt):
            self._gro_hand(r, now)

    def _gro_hand(self, g: GroHold, now: float) -> None:
        """One held run to TCP: one header prediction for all of it, or, when that fails (e.g.
        the total does not fit the window), each part through the full path as if it had never
        been merged."""
        conn = g.conn
        counters = self.counters
        nparts = len(g.parts)
        free = conn.state is _ESTABLISHED and conn not in self._owned
        if free:
            if nparts == 1:
                ok = conn.rcv_predicted(g.seq, g.ack, g.window, g.tsval, g.tsecr, g.parts[0], now)
            elif nparts:
                ok = conn.rcv_predicted(g.seq, g.ack, g.window, g.tsval, g.tsecr, g.parts, now, g.nbytes)
            else:
                ok = conn.rcv_predicted(g.seq, g.ack, g.window, g.tsval, g.tsecr, b"", now, 0, g.acks)
            if ok:
                nsegs = nparts + g.acks
                counters["InSegs"] += nsegs
                if nsegs > 1:
                    counters["TCPHPHits"] += nsegs - 1
                    counters["TcpGroMerged" if nparts else "TcpAckMerged"] += nsegs - 1
                self._touched[conn] = None
                return
        opts = _tcp.TcpOptions(None, None, False, (), (g.tsval, g.tsecr)) if g.tsval >= 0 else _tcp.NO_OPTIONS
        if not nparts:
            # merged pure ACKs that do not predict (e.g. a new window): the newest, which says
            # all the others said, through the full path with the count of ACKs it stands for
            hdr = TcpHeader(g.sport, g.dport, g.seq, g.ack, g.flags, g.window, opts)
            if free:
                counters["InSegs"] += g.acks
                if g.acks > 1:
                    counters["TcpAckMerged"] += g.acks - 1
                conn.on_segment(hdr, b"", now, g.acks)
                self._touched[conn] = None
            else:
                counters["InSegs"] += g.acks - 1
                self._rx_tcp_conn(conn, g.dst, g.src, hdr, b"", now)
            return
        segs = g.segments()
        for i, (seq, part, tsval) in enumerate(segs):
            if i == 1 and nparts > 2 and conn.state is _ESTABLISHED and conn not in self._owned:
                # typically the first part carried a change (e.g. the window) that the slow path
                # took in: the rest may predict as one again (with the TSval of its first part:
                # the later ones are not older, gro.py)
                rest = g.parts[1:]
                if conn.rcv_predicted(seq, g.ack, g.window, tsval, g.tsecr, rest, now,
                                      g.nbytes - len(g.parts[0])):
                    counters["InSegs"] += nparts - 1
                    counters["TCPHPHits"] += nparts - 2
                    counters["TcpGroMerged"] += nparts - 2
                    self._touched[conn] = None
                    return
            if tsval != g.tsval:
                opts = _tcp.TcpOptions(None, None, False, (), (tsval, g.tsecr))
            self._rx_tcp_conn(conn, g.dst, g.src, TcpHeader(g.sport, g.dport, seq, g.ack, g.flags, g.window, opts),
                              part, now)

    def _rx_tcp(self, src: bytes, dst: bytes, seg: memoryview, trusted: bool, now: float) -> None:
        counters = self.counters
        if not trusted and not self.verify_tcp_checksum(seg, src, dst):
            counters["InCsumErrors"] += 1
            counters["InErrs"] += 1
            bad = counters["InCsumErrors"]
            if not self.vnet and not self._csum_warned and bad >= 16 and bad > counters["InSegs"]:
                self._csum_warned = True
                log.warning("TCP checksum errors on a link without the vnet header: if the peer "
                            "(e.g. a veth) uses checksum offload its frames carry partial checksums; "
                            "use vnet=True or turn tx checksum offload off on the peer")
            return
        # Header prediction straight from the raw fields (Linux tcp_v4_rcv -> tcp_rcv_established
        # without building a TcpHeader), after software GRO (ip/gro.py): an ESTABLISHED
        # connection that is not owned, ACK(+PSH) only, no options or exactly NOP,NOP,TS.
        # Anything else flushes what GRO holds and takes the full parse below.
        if len(seg) >= 20:
            sport, dport, seq, ack, offflags, window = _HP_UNPACK(seg)
            flags = offflags & 0xFF
            doff = offflags >> 12
            if doff == 8 and len(seg) >= 32:
                word, tsval, tsecr = _HP_TS(seg, 20)
                hp_opts = word == _HP_TS_WORD
            else:
                tsval = -1
                tsecr = 0
                hp_opts = doff == 5
            g = self._gro
            if g is not None:
                if (hp_opts and seq == g.next_seq and sport == g.sport and dport == g.dport and ack == g.ack
                        and window == g.window and (flags | PSH) == (g.flags | PSH) and tsecr == g.tsecr
                        and src == g.src and dst == g.dst and len(seg) > doff << 2 and g.nbytes
                        and (tsval == g.ts_last or (
                            tsval >= 0 and g.ts_last >= 0 and ((tsval - g.ts_last) & 0xFFFFFFFF) < 0x80000000))):
                    # (PSH may differ within a run, TSval may grow: gro.py)
                    p = seg[doff << 2:]
                    g.flags |= flags
                    if tsval != g.ts_last:
                        g.extend_ts(tsval)
                    g.parts.append(p)
                    n = len(p)
                    g.nbytes += n
                    g.next_seq = (seq + n) & 0xFFFFFFFF
                    return
                if (g.acks and flags == ACK and hp_opts and len(seg) == doff << 2 and seq == g.seq
                        and sport == g.sport and dport == g.dport and src == g.src and dst == g.dst
                        and 0 < ((ack - g.ack) & 0xFFFFFFFF) < 0x80000000 and (tsval < 0) == (g.tsval < 0)
                        and ((tsval - g.tsval) & 0xFFFFFFFF) < 0x80000000):
                    # a newer pure ACK of the flow supersedes the held one (gro.py: a stretch ACK
                    # that keeps the count)
                    g.ack = ack
                    g.window = window
                    g.tsval = tsval
                    g.tsecr = tsecr
                    g.acks += 1
                    return
                if (g.nbytes and hp_opts and (flags | PSH) == (g.flags | PSH) and len(seg) > doff << 2
                        and sport == g.sport and dport == g.dport and ack == g.ack and window == g.window
                        and tsecr == g.tsecr and src == g.src and dst == g.dst
                        and self._gro_reorder(g, seq, seg[doff << 2:], flags, tsval)):
                    return           # reordered within the batch: put back in order at the flush
                self._gro_flush(now)
            if hp_opts and (flags & _HP_FLAGS) == ACK:
                conn = self.demux.conns.get((dst, dport, src, sport))
                if conn is not None and conn.state is _ESTABLISHED and conn not in self._owned:
                    payload = seg[doff << 2:]
                    if self._gro_batch and (payload or (
                            flags == ACK and conn.ca_state == _CA_OPEN
                            and 0 < ((ack - conn.snd_una) & 0xFFFFFFFF) <= ((conn.snd_nxt - conn.snd_una) & 0xFFFFFFFF)
                            and (tsval < 0 or ((tsval - conn.ts_recent) & 0xFFFFFFFF) < 0x80000000))):
                        # data, or a pure ACK that acknowledges new data while nothing is being
                        # recovered (so never a duplicate ACK) and passes PAWS: hold it for GRO
                        # (ip/gro.py)
                        self._gro = GroHold(conn, src, dst, sport, dport, seq, ack, window, flags, tsval, tsecr,
                                            payload)
                        return
                    if conn.rcv_predicted(seq, ack, window, tsval, tsecr, payload, now):
                        counters["InSegs"] += 1
                        self._touched[conn] = None
                        return
        try:
            hdr, payload = self.parse_tcp(seg)
        except ParseError:
            counters["InErrs"] += 1
            return
        lport = hdr.dst_port
        conn = self.demux.conns.get((dst, lport, src, hdr.src_port))
        if conn is not None:
            self._rx_tcp_conn(conn, dst, src, hdr, payload, now)
            return
        listener = self.demux.listener_for(dst, lport)
        if listener is not None:
            counters["InSegs"] += 1
            if self.routing.is_broadcast_or_multicast(src):
                # RFC 9293 MUST-63 (RFC 1122 4.2.3.10): a SYN from a broadcast or multicast source
                # is dropped, as tcp_v4_conn_request does for RTCF_BROADCAST|RTCF_MULTICAST
                counters["ListenDrops"] += 1
                return
            echo = self._rx_echo
            child = (listener.on_segment(dst, src, hdr, payload, now) if echo is None
                     else listener.on_segment(dst, src, hdr, payload, now, ip_opts=echo))
            if child is not None:
                # the final ACK made a child (it is in the accept queue, or already handed out):
                # data/FIN that came with it is delivered and ACKed with the batch
                self._touched[child] = None
            return
        if not self.dedicated and not self.demux.port_in_use(lport) and not (
                self.port_held is not None and self.port_held(lport)):
            return               # shared mode: the kernel's port, not ours
        counters["InSegs"] += 1
        self.send_reset(dst, src, hdr, len(payload))

    def _rx_tcp_ce(self, src: bytes, dst: bytes, seg: memoryview, trusted: bool, now: float) -> None:
        """A TCP segment whose IP header says CE, Congestion Experienced (RFC 3168 5 / 6.1.3).
        Rare by nature, so off the fast path: what GRO holds is handed to TCP first and this
        segment is never merged (Linux's GRO flushes on a differing TOS; a merged CE would be
        lost, or smeared over unmarked data), then the segment takes the usual path, and after
        it the connection hears of the mark (``tcp/ecn.py``; after the segment, so that a CWR on
        this very segment does not cancel the echo its CE asks for, as Linux checks CE after
        ``tcp_ecn_accept_cwr``).  Only data counts (Linux checks CE where data is queued)."""
        if self._gro is not None:
            self._gro_flush(now)
        gro = self._gro_batch
        self._gro_batch = False
        try:
            self._rx_tcp(src, dst, seg, trusted, now)
        finally:
            self._gro_batch = gro
        if len(seg) < 20 or len(seg) <= (seg[12] >> 4) << 2:
            return                                   # no payload (or not even a header)
        sport, dport = _PORTS(seg)
        conn = self.demux.conns.get((dst, dport, src, sport))
        if conn is not None and getattr(conn, "ecn", 0):
            _ce_received(conn)
            if conn not in self._owned:              # (an owned one is touched at release)
                self._touched[conn] = None

    def _rx_tcp_conn(self, conn: Any, dst: bytes, src: bytes, hdr: TcpHeader, payload: Any, now: float) -> None:
        """A parsed segment for an existing connection (``tcp_v4_rcv`` after the socket lookup)."""
        self.counters["InSegs"] += 1
        if hdr.flags & SYN and hdr.options.mss:
            route = self.routes.get(conn)
            if route is not None:
                route.peer_mss = hdr.options.mss
        owner = self._owned.get(conn)
        if owner is not None:
            # sock_owned_by_user: a protocol callback of this connection is in progress
            self._backlog_add(owner, conn, hdr, payload)
            return
        conn.on_segment(hdr, payload, now)
        if conn.state == "CLOSED" and hdr.flags & SYN and not hdr.flags & (ACK | RST):
            # a SYN that reopens a TIME_WAIT connection (Linux TCP_TW_SYN): the connection has
            # released itself; the SYN goes to the listener
            self._touched.pop(conn, None)
            listener = self.demux.listener_for(dst, hdr.dst_port)
            if listener is not None:
                echo = self._rx_echo
                if echo is None:
                    listener.on_segment(dst, src, hdr, payload, now)
                else:
                    listener.on_segment(dst, src, hdr, payload, now, ip_opts=echo)
            return
        self._touched[conn] = None

    # ------------------------------------------------------------------------------------------
    # resets for segments that match nothing (RFC 9293 3.10.7.1)
    # ------------------------------------------------------------------------------------------
    def send_reset(self, lip: bytes, rip: bytes, hdr: TcpHeader, payload_len: int,
                   dsfield: int | None = None) -> None:
        """Answer ``hdr`` (from ``rip`` to our ``lip``), which found no connection, listener or
        TIME_WAIT record, with a RST (RFC 9293 3.10.7.1; none for a RST).

        Its IP header is Linux's: the stack's default TTL / hop limit, and the DSCP of the
        segment it answers (``dsfield``, by default :attr:`rx_dsfield`, the segment being
        received) with the ECN bits cleared (Not-ECT) -- ``tcp_v4_send_reset`` passes
        ``ip_hdr(skb)->tos`` and ``ip_send_unicast_reply`` masks ``INET_ECN_MASK``;
        ``tcp_v6_send_reset`` passes ``ipv6_get_dsfield`` and ``tcp_v6_send_response`` masks
        it the same way (checked against Linux 6.18 in a lab: TOS 0x2b -> RST with 0x28, v4
        and v6; tests/live/test_rst_tos_live.py)."""
        flags = hdr.flags
        if flags & RST:
            return           # never answer a RST
        rst_for = None
        try:
            from ..tcp import connection as _conn_mod
            rst_for = getattr(_conn_mod, "rst_for", None)
        except ImportError:
            pass
        if rst_for is not None:
            rst = rst_for(hdr, payload_len)
            if rst is None:
                return
        elif flags & ACK:
            rst = TcpHeader(hdr.dst_port, hdr.src_port, hdr.ack, 0, RST)
        else:
            seg_len = payload_len + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
            rst = TcpHeader(hdr.dst_port, hdr.src_port, 0, (hdr.seq + seg_len) & _MASK32, RST | ACK)
        echo = self._rx_echo
        if echo is False:
            return           # options Linux cannot answer (ip_send_unicast_reply gives up)
        self.counters["OutRsts"] += 1
        self.counters["OutSegs"] += 1
        route = Route(self, lip, rip, self.neigh.entry(self._next_hop(rip)))
        if echo is not None:
            route.set_ip_options(echo)     # the segment's options answered (a source route reversed)
        tos = (self.rx_dsfield if dsfield is None else dsfield) & 0xFC
        if tos:
            route.set_ip(route.ttl, tos)
        self._tcp_output(route, rst, b"")

    # ------------------------------------------------------------------------------------------
    # transmit path
    # ------------------------------------------------------------------------------------------
    def _next_ident(self) -> int:
        self._ident = i = (self._ident + 1) & 0xFFFF
        return i

    def _next_hop(self, rip: bytes) -> bytes:
        try:
            return self.routing.next_hop(rip)
        except OSError:
            return rip

    def _tcp_output(self, route: Route, hdr: TcpHeader, payload: bytes | memoryview) -> None:
        n = len(payload)
        if n:
            conn = route.conn
            cm = getattr(conn, "mss", 0) if conn is not None else 0
            if n <= cm:
                # conn.mss already has the timestamp option subtracted; only SACK blocks can
                # make a segment of that size too big (Linux shrinks mss_now for them)
                if not hdr.options.sack_blocks or n + 40 <= route.limit():
                    self._emit(route, hdr, payload, 0)
                    return
            elif not cm and n + 40 <= route.limit():
                self._emit(route, hdr, payload, 0)      # fits whatever the options are
                return
            optlen = len(self.encode_options(hdr.options)) if hdr.options is not _tcp.NO_OPTIONS else 0
            size = route.seg_size(optlen)
            if n > size:
                if self.vnet:
                    self._emit(route, hdr, payload, size)
                    return
                flags = hdr.flags
                # FIN / PSH on the last piece only, CWR (RFC 3168 6.1.2) on the first only, as
                # Linux tcp_gso_segment
                last_flags = flags & ~CWR
                mid_flags = flags & ~(FIN | PSH | CWR)
                first_flags = flags & ~(FIN | PSH)
                seq = hdr.seq
                mv = payload if type(payload) is memoryview else memoryview(payload)
                for off in range(0, n, size):
                    end = off + size
                    h = TcpHeader(hdr.src_port, hdr.dst_port, (seq + off) & _MASK32, hdr.ack,
                                  last_flags if end >= n else (first_flags if off == 0 else mid_flags),
                                  hdr.window, hdr.options, 0, hdr.urgent)
                    self._emit(route, h, mv[off:end], 0)
                return
        self._emit(route, hdr, payload, 0)

    def _emit(self, route: Route, hdr: TcpHeader, payload: bytes | memoryview, gso_size: int) -> None:
        lip = route.lip
        rip = route.rip
        local = route.local
        if local is None:
            local = route.local = self._decide_local(route, hdr)
        if local:
            self._emit_local(route, hdr, payload)
            return
        vnet = self.vnet
        e = route.neigh
        tx_tcp = self.transmit_tcp
        if tx_tcp is not None and e.state is REACHABLE and self.now - e.confirmed <= self.neigh.reachable_time:
            # fast path, scatter-gather (vnet links): the payload -- a view into the send buffer --
            # goes to sendmsg as its own iovec; no copy of it in user space
            th = _tcp.build_tcp_header(hdr, len(payload), lip, rip)
            self.counters["IpOutRequests"] += 1
            if route.v6:
                iph = build_ipv6_header(lip, rip, IPPROTO_TCP, len(th) + len(payload), route.ttl, route.tos)
                ethertype = ETH_P_IPV6
                gso_type = GSO_TCPV6 if gso_size else 0
            else:
                iph = (build_ipv4_header(lip, rip, IPPROTO_TCP, len(th) + len(payload), route.ttl,
                                         self._next_ident(), True, route.tos) if route.ipopt is None
                       else self._ipv4_header_opts(route, len(th) + len(payload)))
                ethertype = ETH_P_IP
                gso_type = GSO_TCPV4 if gso_size else 0
            eth = e.eth_header(ethertype, self.mac)
            tx_tcp(eth + iph, th, payload, gso_type, gso_size)
            return
        seg = self.build_tcp(hdr, payload, lip, rip, "partial" if vnet else "full")
        self.counters["IpOutRequests"] += 1
        if route.v6:
            iph = build_ipv6_header(lip, rip, IPPROTO_TCP, len(seg), route.ttl, route.tos)
            ethertype = ETH_P_IPV6
            gso_type = GSO_TCPV6 if gso_size else 0
        else:
            iph = (build_ipv4_header(lip, rip, IPPROTO_TCP, len(seg), route.ttl, self._next_ident(), True, route.tos)
                   if route.ipopt is None else self._ipv4_header_opts(route, len(seg)))
            ethertype = ETH_P_IP
            gso_type = GSO_TCPV4 if gso_size else 0
        e = route.neigh
        if e.state is REACHABLE and self.now - e.confirmed <= self.neigh.reachable_time:
            # fast path: resolved and fresh -> one copy into the frame
            eth = e.eth_header(ethertype, self.mac)
            if vnet:
                self.transmit(b"".join((eth, iph, seg)), gso_type, gso_size, ETH_HLEN + len(iph), 16)
            else:
                self.transmit(b"".join((eth, iph, seg)))
        elif vnet:
            self._send_l3(e, ethertype, iph + seg, gso_type, gso_size, ETH_HLEN + len(iph), 16)
        else:
            self._send_l3(e, ethertype, iph + seg, 0, 0, 0, 0)

    def _ipv4_header_opts(self, route: Route, tcp_len: int) -> bytes:
        """The IPv4 header of a segment on a route with options (``ip_queue_xmit`` ->
        ``ip_options_build``): sent to the source route's first hop if there is one, the final
        destination in the route's last slot, our address / timestamp in the Record Route /
        Timestamp slots reserved for them."""
        opt = route.ipopt
        rip = route.rip
        dst = opt.faddr if opt.srr >= 0 and opt.faddr else rip
        options = _ipopt.build_options(opt, rip, route.lip, self.ip_timestamp(self.now))
        return build_ipv4_header(route.lip, dst, IPPROTO_TCP, tcp_len, route.ttl, self._next_ident(), True,
                                 route.tos, options)

    def ip_timestamp(self, now: float) -> int:
        """The IP Timestamp option's value (RFC 791): milliseconds since midnight UT.  The core has
        no wall clock: ``wallclock(now)`` (set by ``aio.Stack``: ``time.time``) gives the
        seconds since the epoch; without it the time is ``now`` in milliseconds modulo a day with
        the high-order bit set, RFC 791's mark of a value that is not the standard one."""
        wall = self.wallclock
        if wall is None:
            return (int(now * 1000) % 86400000) | 0x80000000
        return int(wall() * 1000) % 86400000

    #: ``wallclock() -> float`` (seconds since the epoch, ``time.time``) for IP timestamps;
    #: None: see ``ip_timestamp``
    wallclock: Callable[[], float] | None = None

    #: ``transmit_tcp(l2l3_header, tcp_header, payload, gso_type, gso_size)``: scatter-gather
    #: send of a NEEDS_CSUM TCP frame (``AfPacketLink.send_tcp``, set by ``aio.Stack`` for vnet
    #: links); None: frames are joined and go through ``transmit``
    transmit_tcp: Callable[..., None] | None = None
    #: ``transmit_tcp_burst(csum_start, hdr_len, gso_type, frames)``: several such frames in one
    #: call, ``frames`` = ``[(headers, payload_parts, gso_size), ...]`` (``AfPacketLink.send_tcp_burst``,
    #: set by ``aio.Stack`` with ``transmit_tcp``); None: ``Route.output_ts_burst`` declines
    transmit_tcp_burst: Callable[..., None] | None = None

    #: (asyncio issue) the link is the kernel's loopback device (``lo``): zero MACs, every frame's
    #: source MAC equals ours, and in shared mode a local address may be a kernel peer's.  Set by
    #: ``aio.Stack`` from ``link.is_loopback``.
    loopback_link = False

    def _decide_local(self, route: Route, hdr: TcpHeader) -> bool:
        """Shared mode on ``lo``: is the other end one of our own endpoints (loop the segments
        internally, as before) or a kernel socket (send them on ``lo``, the kernel answers)?
        Decided once per connection, at its first segment."""
        demux = self.demux
        if (route.rip, hdr.dst_port, route.lip, hdr.src_port) in demux.conns:
            return True                       # our own active opener (SYN-ACK of a child)
        return demux.listener_for(route.rip, hdr.dst_port) is not None   # SYN to our own listener

    def _emit_local(self, route: Route, hdr: TcpHeader, payload: bytes | memoryview) -> None:
        """Loopback: the segment goes back into our own receive path (checksums trusted, like
        ``lo``), from the driver's next turn."""
        lip = route.lip
        rip = route.rip
        seg = self.build_tcp(hdr, payload, lip, rip, "none")
        self.counters["IpOutRequests"] += 1
        if route.v6:
            frame = b"".join((_ETH.pack(self.mac, _LO_MAC, ETH_P_IPV6),
                              build_ipv6_header(lip, rip, IPPROTO_TCP, len(seg), route.ttl, route.tos), seg))
        else:
            frame = b"".join((_ETH.pack(self.mac, _LO_MAC, ETH_P_IP),
                              build_ipv4_header(lip, rip, IPPROTO_TCP, len(seg), route.ttl, self._next_ident(), True,
                                                route.tos), seg))
        q = self._loop_q
        q.append((frame, True))
        if len(q) == 1 and self.loopback_hook is not None:
            self.loopback_hook()

    def flush_loopback(self, now: float) -> None:
        """Process the frames our own output addressed to ourselves (one batch)."""
        q = self._loop_q
        if q:
            self._loop_q = []
            self.receive(q, now)

    def _send_l3(self, e: NeighbourEntry, ethertype: int, l3: bytes, gso_type: int = 0, gso_size: int = 0,
                 csum_start: int = 0, csum_offset: int = 0) -> None:
        mac = self.neigh.resolve(e, self._now(), (ethertype, l3, gso_type, gso_size, csum_start, csum_offset))
        if mac is None:
            return               # queued until resolved
        eth = e.eth_header(ethertype, self.mac)
        if csum_start:
            self.transmit(eth + l3, gso_type, gso_size, csum_start, csum_offset)
        else:
            self.transmit(eth + l3)

    def _send_l3_direct(self, dst_mac: bytes, ethertype: int, l3: bytes) -> None:
        self.transmit(_ETH.pack(dst_mac, self.mac, ethertype) + l3)

    def _send_queued(self, ip: bytes, item: tuple) -> None:
        e = self.neigh.entries.get(ip)
        if e is not None and e.mac is not None:
            ethertype, l3, gso_type, gso_size, csum_start, csum_offset = item
            eth = e.eth_header(ethertype, self.mac)
            if csum_start:
                self.transmit(eth + l3, gso_type, gso_size, csum_start, csum_offset)
            else:
                self.transmit(eth + l3)

    def _now(self) -> float:
        if self.now_fn is not None:
            return self.now_fn()
        return self.now

    # -- neighbour resolution --------------------------------------------------------------------
    def _solicit(self, ip: bytes, known_mac: bytes | None) -> None:
        if self.neighbour_lookup is not None:
            self.neighbour_lookup(ip, lambda mac, ip=ip: self.neighbour_result(ip, mac))
            return
        if len(ip) == 16:
            self._solicit_v6(ip, known_mac)
            return
        try:
            spa = self.routing.source_for(ip)
        except OSError:
            return
        self.counters["ArpOutRequests"] += 1
        pkt = _arp.build_arp(_arp.arp_request(self.mac, spa, ip))
        self.transmit(_ETH.pack(known_mac or BROADCAST, self.mac, ETH_P_ARP) + pkt)

    def _solicit_v6(self, ip: bytes, known_mac: bytes | None) -> None:
        """Neighbor Solicitation (RFC 4861 7.2.2): to the solicited-node group, or unicast when
        refreshing a known entry."""
        from ..wire import icmp as _icmp
        from ..wire.ethernet import ipv6_multicast_mac
        try:
            src = self.routing.source_for(ip)
        except OSError:
            return
        dst = ip if known_mac else _icmp.solicited_node_multicast(ip)
        ns = _icmp.build_ndp_ns(src, dst, ip, self.mac)
        self.counters["Icmp6OutNeighborSolicits"] += 1
        self._send_l3_direct(known_mac or ipv6_multicast_mac(dst), ETH_P_IPV6,
                             build_ipv6_header(src, dst, IPPROTO_ICMPV6, len(ns), 255) + ns)

    def neighbour_result(self, ip: bytes, mac: bytes | None, now: float | None = None) -> None:
        """The answer of a shared-mode ``neighbour_lookup`` (None: unresolved)."""
        now = self._now() if now is None else now
        if mac is None:
            self.neigh.failed(ip, now)
            return
        for item in self.neigh.update(ip, mac, now):
            self._send_queued(ip, item)

    def _arm_neigh_timer(self, when: float) -> None:
        if self.wheel is None:
            return
        if self._neigh_timer is None:
            from ..tcp.timer_wheel import Timer
            self._neigh_timer = Timer(self._on_neigh_timer)
        if self._neigh_armed is None or when < self._neigh_armed:
            self._neigh_armed = when
            self.wheel.arm(self._neigh_timer, when)

    def _on_neigh_timer(self, now: float | None = None) -> None:
        now = self._now() if now is None else now
        self._neigh_armed = None
        self.neigh.on_timer(now)
        nxt = self.neigh.next_deadline()
        if nxt is not None:
            # (robustness issue, found by the fuzzer) a deadline a float ulp after ``now`` but in
            # the current wheel tick (e.g. 2.0540000000000003 at now=2.054) re-fired at once,
            # forever: the stack spun in wheel.advance.  Re-arm at least one tick ahead.
            self._arm_neigh_timer(max(nxt, now + getattr(self.wheel, "granularity", 0.001)))

    # ------------------------------------------------------------------------------------------
    # connections, listeners, ports
    # ------------------------------------------------------------------------------------------
    def _isn_gen(self):
        if self._isn is None:
            from ..tcp.isn import IsnGenerator
            self._isn = IsnGenerator(self.secret)
        return self._isn

    #: (generator, {(lip, rip): offset}): the per-address-pair TSval offsets already computed
    #: (a keyed BLAKE2s each; connections to one peer all share it), bounded, per generator
    _ts_off_cache: tuple[Any, dict] | None = None

    def _ts_offset(self, lip: bytes, lport: int, rip: bytes, rport: int) -> int:
        gen = self._isn if self._isn is not None else self._isn_gen()
        cache = self._ts_off_cache
        if cache is not None and cache[0] is gen:
            off = cache[1].get((lip, rip))
            if off is not None:
                return off
        if hasattr(gen, "ts_offset"):
            off = gen.ts_offset(lip, rip)       # per address pair, like Linux's tsoffset
            if cache is None or cache[0] is not gen or len(cache[1]) >= 1024:
                cache = self._ts_off_cache = (gen, {})
            cache[1][(lip, rip)] = off
            return off
        h = hashlib.blake2b(lip + rip + struct.pack("!HH", lport, rport), digest_size=4,
                            key=self.secret[:64], person=b"tsoff")
        return int.from_bytes(h.digest(), "big")

    def config_for(self, ip: bytes, config: TcpConfig | None = None) -> TcpConfig:
        pm = self.pmtu.cached(ip, self._now()) if self.pmtu.entries else None
        if pm is not None:
            # (PMTUD issue) a learned path MTU: new connections start at it.  Unlike Linux (which
            # advertises the device MTU's MSS) the SYN then advertises it too -- the only place
            # the connection takes its sending MSS from at creation; harmless (smaller is safe).
            mss = min(self.mss6 if len(ip) == 16 else self.mss4, pm - (60 if len(ip) == 16 else 40))
            return (config or self.config).with_options(mss=min(mss, (config or self.config).mss))
        if config is None:
            return self.config6 if len(ip) == 16 else self.config4
        mss = self.mss6 if len(ip) == 16 else self.mss4
        return config if config.mss <= mss else config.with_options(mss=mss)

    # -- (PMTUD/ICMP issue) hooks for ip/icmp_errors.py ---------------------------------------------
    def is_owned(self, conn: Any) -> bool:
        """``sock_owned_by_user``: a protocol callback of ``conn`` is in progress."""
        return conn in self._owned

    def apply_pmtu(self, dst: bytes, now: float) -> int:
        """The path MTU to ``dst`` went down (``pmtu`` cache): every connection to it shrinks its
        MSS (Linux ``tcp_v4_mtu_reduced``: ``tcp_sync_mss`` + ``tcp_simple_retransmit`` -- what
        is in flight at the old size was dropped, so it is retransmitted now).  Returns how many
        connections changed."""
        mtu = self.pmtu.get(dst, now)
        hdr = 60 if len(dst) == 16 else 40
        mtu_mss = mtu - hdr
        n = 0
        for conn, route in list(self.routes.items()):
            if route.rip != dst or route.mss <= mtu_mss:
                continue
            route.mss = mtu_mss
            update = getattr(conn, "update_mss", None)
            if update is not None:
                before = getattr(conn, "mss", 0)
                update(mtu_mss, now)
                if getattr(conn, "mss", 0) != before:
                    n += 1
        return n

    def new_connection(self, lip: bytes, lport: int, rip: bytes, rport: int, handler: Any, now: float,
                       config: TcpConfig | None = None, peer_syn: TcpHeader | None = None, *,
                       port_held: bool = False, next_hop: bytes | None = None) -> Any:
        """Create a connection for the 4-tuple, with its route, and put it in the demux table.

        ``port_held``: the caller holds a reference to ``lport`` (``allocate_port``'s) and hands
        it to the connection -- given back here if no connection is made.  ``next_hop``: the
        caller's route lookup for ``rip`` (``connect`` has just made it)."""
        TcpConnection = self.connection_factory
        if TcpConnection is None:
            from ..tcp.connection import TcpConnection
            self.connection_factory = TcpConnection
        if type(lip) is not bytes:
            lip = bytes(lip)
        if type(rip) is not bytes:
            rip = bytes(rip)
        key = (lip, lport, rip, rport)
        try:
            if key in self.demux.conns:
                raise OSError(errno.EADDRINUSE, "Address already in use")
            self._check_max_connections()          # (robustness issue) config.max_connections
        except BaseException:
            if port_held:
                self._unuse_port(lport)
            raise
        if not port_held:
            self._use_port(lport)
        route = Route(self, lip, rip, self.neigh.entry(self._next_hop(rip) if next_hop is None else next_hop))
        if peer_syn is not None and peer_syn.options.mss:
            route.peer_mss = peer_syn.options.mss
        config = self.config_for(rip, config)
        route.apply_config(config)           # IP_TTL / IP_TOS (IPv6: hop limit, traffic class)
        iss = (self._isn if self._isn is not None else self._isn_gen()).isn(lip, lport, rip, rport, now)
        return self._add_conn(key, lport, route, lambda: TcpConnection(
            config=config, wheel=self.wheel, counters=self.counters,
            local=(lip, lport), remote=(rip, rport), iss=iss, output=route.output, handler=handler,
            release=self._release_cb, ts_offset=self._ts_offset(lip, lport, rip, rport), now=now))

    def _add_conn(self, key: tuple, lport: int, route: Route, make: Callable[[], Any]) -> Any:
        """Create a connection with ``make()`` on ``route`` and enter it in the demux table; if
        that fails, the local port taken for it is given back (and the error raised)."""
        try:
            conn = make()
        except BaseException:
            self._unuse_port(lport)
            raise
        route.conn = conn
        self.routes[conn] = route
        self.demux.conns[key] = conn
        if route.ext_len and hasattr(conn, "ext_hdr_len"):
            # IPv4 options on the route from the start (IP_OPTIONS before connect(), a source
            # route of the peer's SYN): the connection's MSS leaves room for them
            conn.ext_hdr_len = route.ext_len
            conn.update_mss(route.mss, self.now, retransmit=False)
        return conn

    def _check_max_connections(self, raise_: bool = True) -> bool:
        """(robustness issue) ``config.max_connections``: False / ``OSError(ENOBUFS)`` at the cap."""
        cap = getattr(self.config, "max_connections", 0)
        if cap and len(self.demux.conns) >= cap:
            if raise_:
                raise OSError(errno.ENOBUFS, f"connection limit reached (max_connections={cap})")
            return False
        return True

    def connect(self, rip: bytes, rport: int, handler: Any, now: float, lip: bytes | None = None,
                lport: int | None = None, config: TcpConfig | None = None) -> Any:
        """Active open: allocate the local side, create the connection and send the SYN."""
        self.now = now
        if type(rip) is not bytes:
            rip = bytes(rip)
        if lip is None or lip == ANY:
            lip = self.routing.source_for(rip)
        elif lip not in self.local_v4 and lip not in self.local_v6:
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        if self.routing.is_broadcast_or_multicast(rip):
            # RFC 9293 MUST-46: an OPEN to a broadcast/multicast address is an error (Linux's
            # tcp_v4_connect answers ENETUNREACH for a broadcast or multicast route)
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        entry = self.routing.lookup(rip)          # ENETUNREACH early
        nh = entry.gateway if entry.gateway is not None else rip     # (routing.next_hop)
        if not lport:
            lport = self.allocate_port(lip, rip, rport)
            # allocate_port's reference becomes the connection's (or is given back)
            conn = self.new_connection(lip, lport, rip, rport, handler, now, config, port_held=True,
                                       next_hop=nh)
        else:
            conn = self.new_connection(lip, lport, rip, rport, handler, now, config, next_hop=nh)
        conn.connect(now)
        return conn

    def allocate_port(self, lip: bytes, rip: bytes, rport: int) -> int:
        """An ephemeral port for ``(lip, ?, rip, rport)`` (RFC 6056 algorithm 3 flavour: a keyed
        hash of the destination plus a counter, then a linear probe).  Returns with one port
        reference held (the caller drops it once the connection holds its own).

        With ``pick_port`` (shared mode) a pre-reserved port is taken first, when it is free for
        this 4-tuple (pooled ports are used by nothing of ours)."""
        users = self.demux.port_users
        pick = self.pick_port
        if pick is not None:
            port = pick()
            # (a port no connection or listener of ours uses: not in port_users)
            if port is not None and port not in users and self._use_port(port, probe=True):
                return port
        lo, hi = self.config.ephemeral_ports
        span = hi - lo + 1
        h = hashlib.blake2b(lip + rip + struct.pack("!H", rport), digest_size=4, key=self.secret[:64],
                            person=b"eport")
        start = int.from_bytes(h.digest(), "big") + self._port_counter
        conns = self.demux.conns
        listeners = self.demux.listeners
        users = self.demux.port_users
        for i in range(span):
            port = lo + (start + i) % span
            if (lip, port, rip, rport) in conns or (lip, port) in listeners or (ANY, port) in listeners:
                continue
            if port in users:
                continue      # prefer fresh ports (keeps kernel reservations one per connection)
            if not self._use_port(port, probe=True):
                continue
            self._port_counter += i + 1
            return port
        # every port is taken by some connection: share one whose 4-tuple differs (Linux does the
        # same: the port only has to be unique per 4-tuple; listeners' ports are never shared)
        for i in range(span):
            port = lo + (start + i) % span
            if (lip, port, rip, rport) in conns or (lip, port) in listeners or (ANY, port) in listeners:
                continue
            if port in users:
                users[port] += 1
                self._port_counter += i + 1
                return port
        raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")

    def _use_port(self, port: int, probe: bool = False) -> bool:
        users = self.demux.port_users
        n = users.get(port, 0)
        if n == 0 and self.reserve_port is not None:
            if not self.reserve_port(port):
                if probe:
                    return False
                raise OSError(errno.EADDRINUSE, "Address already in use")
        users[port] = n + 1
        return True

    def _unuse_port(self, port: int) -> None:
        users = self.demux.port_users
        n = users.get(port, 0) - 1
        if n > 0:
            users[port] = n
            return
        users.pop(port, None)
        if self.release_port is not None:
            self.release_port(port)

    def _release(self, conn: Any) -> None:
        """``TcpConnection`` is CLOSED for good: drop it from the demux table (once)."""
        route = self.routes.pop(conn, None)
        if route is None:
            return
        lip, lport = conn.local
        rip, rport = conn.remote
        key = (lip, lport, rip, rport)
        if self.demux.conns.get(key) is conn:
            del self.demux.conns[key]
        self._touched.pop(conn, None)
        self._owned.pop(conn, None)
        self._unuse_port(lport)

    def listen(self, lip: bytes | None, port: int, backlog: int,
               on_accept: Callable[[Any], Any] | None = None, config: TcpConfig | None = None, *,
               on_acceptable: Callable[[Listener], None] | None = None,
               young_check: bool = True) -> Listener:
        """Passive open on ``(lip or any, port)`` (port 0: an ephemeral one): a
        :class:`~aiotcpstack.tcp.listener.Listener` (SYN queue, accept queue bounded by
        ``backlog``, SYN cookies) hashed into the demux table.

        Children wait in the listener's accept queue until taken with ``listener.accept()``;
        ``on_acceptable(listener)`` is called whenever one is appended (the aio Server drains the
        queue from it while serving).  ``on_accept(conn) -> handler | None`` is the simple form for
        callers that always accept at once: each child is taken immediately and given the handler
        it returns (``tcp_established`` is then called on it), or aborted when it returns None
        (``ListenDrops``).
        """
        lip = ANY if lip is None else bytes(lip)
        if (lip != ANY and lip != ANY4 and lip != ANY6 and lip not in self.local_v4
                and lip not in self.local_v6):   # (IPv6 issue) ANY4/ANY6: per-family wildcards
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        listeners = self.demux.listeners
        if port:
            if self.demux.listen_conflict(lip, port):
                raise OSError(errno.EADDRINUSE, "Address already in use")
            self._use_port(port)
        else:
            port = self.allocate_port(lip if lip != ANY else b"\0\0\0\0", b"\0\0\0\0", 0)
        holder: list[Listener] = []
        if on_acceptable is not None:
            def acceptable() -> None:
                on_acceptable(holder[0])
        elif on_accept is not None:
            def acceptable() -> None:
                self._accept_now(holder[0], on_accept)
        else:
            acceptable = None     # type: ignore[assignment]
        try:
            listener = Listener(config=config if config is not None else self.config, wheel=self.wheel,
                                counters=self.counters, local=(lip, port), backlog=backlog,
                                isn=self._isn_gen(), secret=self.secret, send=self._listener_send,
                                make_child=self._make_child, on_acceptable=acceptable,
                                config_for=lambda rip: self.config_for(rip, config),
                                on_close=self.remove_listener, young_check=young_check)
        except BaseException:
            self._unuse_port(port)
            raise
        holder.append(listener)
        listeners[(lip, port)] = listener
        return listener

    def _accept_now(self, listener: Listener, on_accept: Callable[[Any], Any]) -> None:
        while (conn := listener.accept()) is not None:
            handler = on_accept(conn)
            if handler is None:
                self.counters["ListenDrops"] += 1
                conn.abort(self._now())
                continue
            conn.handler = handler
            handler.tcp_established()     # the child went ESTABLISHED with no handler
            self.wake(conn, self._now())

    def _listener_send(self, lip: bytes, rip: bytes, hdr: TcpHeader, payload: bytes | memoryview,
                       ip_opts: Any = None) -> None:
        """The listener's own segments (SYN-ACK, RST, ACK): it counts them itself.  A SYN-ACK
        carries the listener's TTL / TOS (IP_TTL, IP_TOS, IPV6_UNICAST_HOPS, IPV6_TCLASS set on
        it), as Linux's ``tcp_v4_send_synack`` / ``tcp_v6_send_synack`` use the listening
        socket's.  A RST or a request sock's bare ACK answers the segment being received and is
        sent as Linux sends it, from the per-netns control socket (``tcp_v4_send_reset``,
        ``tcp_v4_reqsk_send_ack`` with ``ip_hdr(skb)->tos``; v6 alike): the default TTL / hop
        limit and the received segment's DSCP, ECN bits cleared (:meth:`send_reset`).
        ``ip_opts``: the IPv4 options answering the peer's (a request sock's ``ireq_opt``, or the
        segment being answered); False: no answer (Linux could not build them).  IP_OPTIONS set
        on the listener take their place in a SYN-ACK (RFC 9293 MUST-52)."""
        if ip_opts is False:
            return
        route = Route(self, lip, rip, self.neigh.entry(self._next_hop(rip)))
        if ip_opts is not None:
            route.set_ip_options(ip_opts)
        if not hdr.flags & SYN:
            tos = self.rx_dsfield & 0xFC
            if tos:
                route.set_ip(route.ttl, tos)
            self._tcp_output(route, hdr, payload)
            return
        listener = self.demux.listener_for(lip, hdr.src_port)
        if listener is not None:
            config_for = listener.config_for
            route.apply_config(config_for(rip) if config_for is not None else listener.config)
        self._tcp_output(route, hdr, payload)

    def _make_child(self, *, config: TcpConfig, local: tuple[bytes, int], remote: tuple[bytes, int],
                    iss: int, syn: TcpHeader, ts_offset: int, syn_time: float,
                    synack_retransmitted: bool, now: float, ip_opts: Any = None) -> Any:
        """``tcp_v4_syn_recv_sock``: the child of a request sock / cookie, with its route, in the
        demux table (the listener then feeds it the completing segment)."""
        TcpConnection = self.connection_factory
        if TcpConnection is None or not hasattr(TcpConnection, "from_request"):
            from ..tcp.connection import TcpConnection
        lip, lport = bytes(local[0]), local[1]
        rip, rport = bytes(remote[0]), remote[1]
        key = (lip, lport, rip, rport)
        if key in self.demux.conns:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        if not self._check_max_connections(raise_=False):   # (robustness issue)
            self.counters["TCPMaxConnDrop"] += 1
            raise OSError(errno.ENOBUFS, "connection limit reached")   # listener: ListenDrops
        self._use_port(lport)           # the listener holds the port: only a reference
        route = Route(self, lip, rip, self.neigh.entry(self._next_hop(rip)))
        if syn.options.mss:
            route.peer_mss = syn.options.mss
        if ip_opts:
            # the request sock's options (Linux ireq_opt -> the child's inet_opt): a received
            # source route, reversed, for all of the connection's segments (RFC 9293 MUST-53)
            route.set_ip_options(ip_opts)
        route.apply_config(config)     # inherited from the listener (inet_csk_clone_lock copies them)
        return self._add_conn(key, lport, route, lambda: TcpConnection.from_request(
            config=config, wheel=self.wheel, counters=self.counters, local=(lip, lport), remote=(rip, rport),
            iss=iss, syn=syn, output=route.output, handler=None, release=self._release_cb,
            ts_offset=ts_offset, now=now, syn_time=syn_time, synack_retransmitted=synack_retransmitted))

    def remove_listener(self, listener: Listener) -> None:
        key = (listener.ip, listener.port)
        if self.demux.listeners.get(key) is listener:
            del self.demux.listeners[key]
            self._unuse_port(listener.port)

    # -- (robustness issue) addresses come and go (host/addr_monitor.py, Stack.remove_address) ---
    def add_address(self, addr: bytes, prefixlen: int) -> bool:
        """``addr`` is ours (again): answered, accepted and usable as a source from now on.
        False when it already was."""
        addr = bytes(addr)
        if self.routing.is_local(addr):
            return False
        self.routing.add_address(addr, prefixlen)
        # in place: receive() and the ICMP error path hold these very sets
        (self.local_v6 if len(addr) == 16 else self.local_v4).add(addr)
        return True

    def remove_address(self, addr: bytes, now: float, reason: str | None = None) -> int:
        """``addr`` left the interface.  From now on no ARP/NDP answer, no segment to it is
        accepted (no new SYN), none leaves from it: request socks answered from it and frames
        from it waiting for neighbour resolution are dropped, and every connection using it ends
        at once with ``OSError(EADDRNOTAVAIL, reason)`` (``TCPAbortOnAddrRemoved``) -- without a
        RST, as RFC 1122 3.2.1.3 allows a host to send only from its own addresses.  Listeners
        bound to it stay (as Linux's: they accept again if the address comes back); TIME_WAIT
        connections stay (they send nothing unless a segment to the address arrives).

        Deliberate departure from Linux, which keeps such sockets until they time out (minutes of
        retransmissions, and a reader blocked until then); Android's ``tcp_nuke_addr`` (later
        ``SOCK_DESTROY``) aborts them, which is what an application wants: a clear error now.
        Returns how many connections were aborted."""
        addr = bytes(addr)
        if not self.routing.remove_address(addr):
            return 0
        self.local_v4.discard(addr)
        self.local_v6.discard(addr)
        for listener in list(self.demux.listeners.values()):
            drop = getattr(listener, "drop_requests", None)
            if drop is not None:
                drop(addr)
        v6 = len(addr) == 16
        for e in self.neigh.entries.values():
            if e.queue:
                keep = [it for it in e.queue
                        if (it[1][8:24] if v6 else it[1][12:16]) != addr]
                if len(keep) != len(e.queue):
                    self.counters["NeighUnresolvedDiscards"] += len(e.queue) - len(keep)
                    e.queue = keep
        if reason is None:
            import ipaddress
            reason = f"local address {ipaddress.ip_address(addr)} was removed"
        n = 0
        for conn in [c for c in self.demux.conns.values() if c.local[0] == addr]:
            if conn.state in ("CLOSED", "TIME_WAIT"):
                continue
            n += 1
            try:
                destroy = getattr(conn, "destroy", None)
                if destroy is not None:
                    destroy(OSError(errno.EADDRNOTAVAIL, reason), now)
                else:
                    conn.abort(now)
            except Exception:
                self.counters["StackErrors"] += 1
                if self.strict:
                    raise
                log.exception("aborting %r after its address was removed", conn)
        if n:
            self.counters["TCPAbortOnAddrRemoved"] += n
        return n

    def listeners(self) -> list[Listener]:
        return list(self.demux.listeners.values())

    def connections(self) -> list[Any]:
        return list(self.demux.conns.values())


mac_zero = b"\x00" * 6
