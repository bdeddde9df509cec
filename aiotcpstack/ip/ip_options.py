"""IPv4 options on the receive side (Linux ``ip_rcv_options``, ``icmp_reply``): what
``NetworkCore`` does with a received header whose IHL is above 5 -- validation with an ICMP
parameter problem, the source-route policy of a host (``accept_source_route``), the options of
an ICMP echo reply, and RFC 9293 SHLD-24's later source route.  The option bytes themselves are
``wire/ipv4_options.py``'s; the TCP side (request socks, routes with options) is in
``ip/core.py``.  Never on the fast paths: ``NetworkCore._rx_frame`` sends every IHL != 5 header
to ``_rx_ipv4``, which calls here."""
from __future__ import annotations

import struct
from typing import Any

from ..wire import ipv4_options as _ipopt
from ..wire.ethernet import ETH_P_IP
from ..wire.icmp import build_icmpv4
from ..wire.ipv4 import IPPROTO_ICMP, build_ipv4_header

_PORTS = struct.Struct("!HH").unpack_from


def rx_options(core: Any, ip: Any, buf: memoryview, src_mac: bytes,
               now: float) -> tuple[_ipopt.IpOptions, bytes] | None:
    """A received header with options, as Linux ``ip_rcv_options``: validated and compiled
    (our address / timestamp recorded in Record Route / Timestamp, as Linux does on input);
    malformed -> ``IpInHdrErrors`` and an ICMP parameter problem pointing at the bad octet
    (dedicated mode: in shared mode the address is the kernel's, see docs/conformance.md);
    a source route -> dropped unless ``accept_source_route`` (``IpInSrcRouteDrops``), else
    our addresses still ahead in it consumed and the datagram kept only if nothing else
    remains (a host does not forward).  Returns ``(options, destination)`` or None (dropped)."""
    counters = core.counters
    try:
        opt = _ipopt.compile_options(ip.options, received=True, our_addr=ip.dst,
                                     timestamp=core.ip_timestamp(now), is_local=core._is_local_v4)
    except _ipopt.IpOptionError as err:
        counters["IpInHdrErrors"] += 1
        param_problem(core, ip, buf, err.pointer, src_mac, now)
        return None
    dst = ip.dst
    if opt.srr >= 0:
        if not core.accept_source_route:
            counters["IpInSrcRouteDrops"] += 1
            return None
        try:
            final, for_us = _ipopt.srr_next_hops(opt, core._is_local_v4)
        except _ipopt.IpOptionError as err:
            counters["IpInSrcRouteDrops"] += 1
            param_problem(core, ip, buf, err.pointer, src_mac, now)
            return None
        if not for_us:
            counters["IpInSrcRouteDrops"] += 1       # the next hop is not ours: not forwarded
            return None
        if final is not None:
            dst = final                              # "loopback forward" to the last of ours
    return opt, dst


def param_problem(core: Any, ip: Any, buf: memoryview, pointer: int, src_mac: bytes, now: float) -> None:
    """ICMP parameter problem (type 12, code 0, RFC 792) for a malformed option, as Linux's
    ``ip_options_compile`` -> ``icmp_send``: the pointer in the first octet, the offending
    header and 8 octets of its data quoted; dedicated mode only, at most one per second per
    source (Linux ``icmp_ratelimit``)."""
    if not core.dedicated:
        return
    last = core._pp_sent.get(ip.src)
    if last is not None and 0 <= now - last < 1.0:
        return
    if len(core._pp_sent) >= 1024:
        core._pp_sent.clear()
    core._pp_sent[ip.src] = now
    quoted = bytes(buf[:(ip.ihl << 2) + 8])
    msg = build_icmpv4(12, 0, bytes((pointer, 0, 0, 0)), quoted)
    counters = core.counters
    counters["IcmpOutMsgs"] += 1
    counters["IcmpOutParmProbs"] += 1
    core._send_l3_direct(src_mac, ETH_P_IP, build_ipv4_header(ip.dst, ip.src, IPPROTO_ICMP, len(msg),
                                                              core.default_ttl, core._next_ident(), False) + msg)


def echo_reply(core: Any, ip: Any, dst: bytes, opt: _ipopt.IpOptions, reply: bytes, src_mac: bytes,
               now: float) -> None:
    """An ICMP echo reply to a request with options (Linux ``icmp_reply`` ->
    ``ip_options_echo``): Record Route and Timestamp echoed with our entry added, a source
    route reversed (sent to its first hop).  Not fragmented: a reply that does not fit is
    not sent."""
    echo = _ipopt.echo_options(opt, ip.src, core._is_local_v4)
    if echo is None:
        return
    daddr = echo.faddr if echo.srr >= 0 and echo.faddr else ip.src
    options = _ipopt.build_options(echo, ip.src, dst, core.ip_timestamp(now)) if echo.optlen else b""
    if 20 + len(options) + len(reply) > core.mtu:
        return
    l3 = build_ipv4_header(dst, daddr, IPPROTO_ICMP, len(reply), core.default_ttl, core._next_ident(), False,
                           ip.tos, options) + reply    # (the whole TOS byte, as icmp_reply)
    if daddr == ip.src:
        core._send_l3_direct(src_mac, ETH_P_IP, l3)
    else:
        core._send_l3(core.neigh.entry(core._next_hop(daddr)), ETH_P_IP, l3)


def later_route(core: Any, src: bytes, dst: bytes, seg: memoryview, echo: Any) -> tuple | None:
    """RFC 9293 SHLD-24 / RFC 1122 4.2.3.8: a different source route arriving later on a
    connection that uses a received one overrides it -- taken once the segment was accepted
    (it moved RCV.NXT or SND.UNA), never over the application's IP_OPTIONS (MUST-52).  Linux
    keeps the SYN's route for good; this is the RFC's SHOULD.  Returns what to check after
    the segment, or None."""
    if echo is None or echo.srr < 0 or len(seg) < 4:
        return None
    sport, dport = _PORTS(seg)
    conn = core.demux.conns.get((dst, dport, src, sport))
    route = core.routes.get(conn) if conn is not None else None
    if route is None or route.app_opts or route.ipopt is None or route.ipopt.srr < 0 \
            or route.ipopt.data == echo.data:
        return None
    return conn, route, (conn.rcv_nxt, conn.snd_una)
