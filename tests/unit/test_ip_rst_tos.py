"""The IP header of the replies sent without a connection of their own (a RST for a segment that
found nothing, a listener's RST and a request sock's bare ACK; ICMP echo replies at the end):
Linux sends them from its per-netns
control socket with the default TTL / hop limit and the DSCP of the segment they answer, the ECN
bits cleared (``tcp_v4_send_reset`` / ``tcp_v4_reqsk_send_ack``: ``ip_hdr(skb)->tos``, masked by
``ip_send_unicast_reply``; ``tcp_v6_send_reset``: ``ipv6_get_dsfield``, masked by
``tcp_v6_send_response``).  The expected values were read from Linux 6.18 in a lab (a SYN / ACK
with TOS 0x28, 0x29, 0x2a, 0x2b, 0xb8, 0x03 to a closed port and to a listener whose IP_TOS is
0x10: the RST carries 0x28, 0x28, 0x28, 0x28, 0xb8, 0x00, the default TTL, v4 and v6); the same
probe against the stack is tests/live/test_rst_tos_live.py.  Every receive path that can end in
such a reply is covered: the inline IPv4 path, the general IPv4 path (a header with options), IPv6,
and a CE-marked segment."""
from __future__ import annotations

import random
import struct

import pytest

from aiotcpstack.ip.icmp_echo import fragment_ipv4, fragment_ipv6
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.wire import icmp as wicmp
from aiotcpstack.wire.ethernet import ETH_P_IP, ETH_P_IPV6, build_ethernet, parse_ethernet
from aiotcpstack.wire.ipv4 import parse_ipv4
from aiotcpstack.wire.ipv6 import parse_ipv6
from aiotcpstack.wire.tcp import ACK, RST, SYN, TcpHeader, build_tcp

from test_ip_output_ts import MY_MAC, PEER_MAC, make  # noqa: E402

#: (received DiffServ field, what Linux 6.18 puts in the reply's)
LINUX = [(0x00, 0x00), (0x28, 0x28), (0x29, 0x28), (0x2A, 0x28), (0x2B, 0x28), (0xB8, 0xB8), (0x03, 0x00)]


def _ipv4(src: bytes, dst: bytes, tos: int, l4: bytes, options: bytes = b"") -> bytes:
    """An IPv4 header by hand (``options`` padded to 4 bytes), checksum right."""
    from aiotcpstack.wire.checksum import internet_checksum
    ihl = 5 + len(options) // 4
    h = bytearray(bytes([0x40 | ihl, tos]) + (ihl * 4 + len(l4)).to_bytes(2, "big") + b"\x12\x34\x40\x00"
                  + bytes([64, 6]) + b"\0\0" + src + dst + options)
    h[10:12] = internet_checksum(bytes(h)).to_bytes(2, "big")
    return bytes(h) + l4


def _ipv6(src: bytes, dst: bytes, tclass: int, l4: bytes) -> bytes:
    first = (6 << 28) | (tclass << 20)
    return first.to_bytes(4, "big") + len(l4).to_bytes(2, "big") + bytes([6, 64]) + src + dst + l4


def _segment(src: bytes, dst: bytes, hdr: TcpHeader) -> bytes:
    return build_tcp(hdr, b"", src, dst)


def _frame(route, hdr: TcpHeader, ds: int, options: bytes = b"") -> bytes:
    seg = _segment(route.rip, route.lip, hdr)
    if route.v6:
        return build_ethernet(MY_MAC, PEER_MAC, ETH_P_IPV6) + _ipv6(route.rip, route.lip, ds, seg)
    return build_ethernet(MY_MAC, PEER_MAC, ETH_P_IP) + _ipv4(route.rip, route.lip, ds, seg, options)


def _replies(core) -> list:
    out: list = []
    core.transmit_tcp = None
    core.transmit = lambda frame, *a: out.append(bytes(frame))
    core.vnet = False
    return out


def _ip_and_flags(frame: bytes) -> tuple[int, int, int]:
    """(TTL / hop limit, TOS / traffic class, TCP flags) of a reply."""
    _, _, et, payload = parse_ethernet(frame)
    if et == ETH_P_IP:
        ip, seg = parse_ipv4(payload)
        return ip.ttl, ip.tos, seg[13]
    ip, seg = parse_ipv6(payload)
    return ip.hop_limit, ip.traffic_class, seg[13]


@pytest.mark.parametrize("path", ["v4", "v4-options", "v6"])
@pytest.mark.parametrize("flags", [SYN, ACK], ids=["syn", "ack"])
def test_rst_for_a_closed_port_echoes_the_dscp(path: str, flags: int) -> None:
    core, route, _ = make(path == "v6", random.Random(3))
    core.default_ttl, core.default_hop_limit = 33, 44
    out = _replies(core)
    for ds, want in LINUX:
        hdr = TcpHeader(40000 + ds, 9, 1000, 5 if flags & ACK else 0, flags, 1000)
        core.receive([(_frame(route, hdr, ds, b"\x01\x01\x01\x00" if path == "v4-options" else b""), False)],
                     1.0)
        assert len(out) == 1, (hex(ds), out)
        ttl, tos, rflags = _ip_and_flags(out.pop())
        assert rflags & RST
        assert (ttl, tos) == ((44 if route.v6 else 33), want), hex(ds)
    assert core.counters["OutRsts"] == len(LINUX)


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_listener_rst_and_request_ack_echo_the_dscp_syn_ack_keeps_the_listeners(v6: bool) -> None:
    core, route, _ = make(v6, random.Random(4))
    out = _replies(core)
    cfg = TcpConfig(ipv6_tclass=0x10) if v6 else TcpConfig(ip_tos=0x10)
    core.listen(route.lip, 7777, 8, None, cfg)
    # an ACK for no request: RST (RFC 9293 3.10.7.2), with the ACK's DSCP, not the listener's
    core.receive([(_frame(route, TcpHeader(41000, 7777, 1000, 5, ACK, 1000), 0x2B), False)], 1.0)
    assert [_ip_and_flags(f)[1:] for f in out] == [(0x28, RST)]
    out.clear()
    # a SYN: the SYN-ACK is the listener's (IP_TOS / IPV6_TCLASS 0x10), whatever the SYN had
    core.receive([(_frame(route, TcpHeader(41001, 7777, 1000, 0, SYN, 1000), 0xB8), False)], 1.1)
    assert [_ip_and_flags(f)[1:] for f in out] == [(0x10, SYN | ACK)]
    out.clear()
    # an out-of-window segment for the request sock: its bare ACK (tcp_v4_reqsk_send_ack) echoes
    req = next(iter(core.demux.listener_for(route.lip, 7777).synq.values()))
    bad = TcpHeader(41001, 7777, (req.irs + 1 + 10**6) & 0xFFFFFFFF, (req.iss + 1) & 0xFFFFFFFF, ACK, 1000)
    core.receive([(_frame(route, bad, 0x49), False)], 1.2)
    assert [_ip_and_flags(f)[1:] for f in out] == [(0x48, ACK)]


@pytest.mark.parametrize("size", [100, 3000], ids=["one-frame", "fragmented"])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_echo_reply_echoes_the_whole_dsfield(v6: bool, size: int) -> None:
    """Dedicated mode's echo replies: Linux's ``icmp_reply`` sets ``inet->tos = ip_hdr(skb)->tos``
    and ``icmpv6_echo_reply`` uses ``ipv6_get_dsfield``: the request's whole byte, ECN bits too
    (checked on 6.18: 0x2b -> 0x2b, 0x03 -> 0x03); a reply larger than the MTU carries it in
    every fragment.  The request arrives in fragments of 1,000 bytes (made by the same helpers)."""
    core, route, _ = make(v6, random.Random(5))
    out = _replies(core)
    lip, rip = route.lip, route.rip
    data = bytes(range(100)) * (size // 100)
    for ident, (ds, _) in enumerate(LINUX):
        if v6:
            req = wicmp.build_icmpv6(rip, lip, 128, 0, struct.pack("!HH", ident, 1), data)
            l3s = fragment_ipv6(rip, lip, 58, req, 1048, ident, 64, ds)
            et = ETH_P_IPV6
        else:
            req = wicmp.build_icmpv4(8, 0, struct.pack("!HH", ident, 1), data)
            l3s = fragment_ipv4(rip, lip, 1, req, 1020, ident, 64, ds)
            et = ETH_P_IP
        core.receive([(build_ethernet(MY_MAC, PEER_MAC, et) + l3, False) for l3 in l3s], 1.0 + ident)
        assert len(out) == (1 if size < 1000 else 3), (hex(ds), len(out))
        assert {_ip_and_flags(f)[:2] for f in out} == {(64, ds)}
        out.clear()
