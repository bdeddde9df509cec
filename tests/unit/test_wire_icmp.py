"""ICMPv4 (RFC 792/1191) and ICMPv6 (RFC 4443) incl. NDP NS/NA (RFC 4861): round trips, quoted
headers of error messages, checksums, malformed input, and scapy in both directions."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr, ICMPv6PacketTooBig, IPv6, IPv6ExtHdrDestOpt,
)

from aiotcpstack.wire import icmp
from aiotcpstack.wire.errors import ChecksumError, ParseError
from aiotcpstack.wire.ipv4 import build_ipv4_header, parse_ipv4
from aiotcpstack.wire.ipv6 import build_ipv6_header, parse_ipv6
from aiotcpstack.wire.tcp import ACK, TcpHeader, build_tcp

SETTINGS = settings(max_examples=100, deadline=None, database=None)
A4, B4 = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
A6 = ipaddress.IPv6Address("2001:2::1").packed
B6 = ipaddress.IPv6Address("2001:2::2").packed
LL6 = ipaddress.IPv6Address("fe80::1").packed
MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def v6(a: bytes) -> str:
    return str(ipaddress.IPv6Address(a))


def icmp6_bytes(pkt) -> bytes:
    return bytes(pkt)[40:]


# --- ICMPv4 -------------------------------------------------------------------------------------

@SETTINGS
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=100), st.booleans())
def test_echo_v4_round_trip_and_scapy(ident: int, seq: int, data: bytes, reply: bool) -> None:
    raw = icmp.build_icmpv4_echo(ident, seq, data, reply=reply)
    msg = icmp.parse_icmpv4(raw)
    assert (msg.type, msg.code, icmp.echo_fields(msg), msg.body) == (0 if reply else 8, 0, (ident, seq), data)
    s = ICMP(raw)
    assert (s.type, s.code, s.id, s.seq, bytes(s.payload)) == (0 if reply else 8, 0, ident, seq, data)
    redo = ICMP(raw)
    del redo.chksum
    assert ICMP(bytes(redo)).chksum == s.chksum


def test_scapy_echo_v4_and_reply() -> None:
    req = bytes(ICMP(type=8, id=0x1234, seq=7) / b"ping-data")
    msg = icmp.parse_icmpv4(req)
    assert icmp.echo_fields(msg) == (0x1234, 7) and msg.body == b"ping-data"
    rep = ICMP(icmp.icmpv4_echo_reply(msg))
    assert (rep.type, rep.id, rep.seq, bytes(rep.payload)) == (0, 0x1234, 7, b"ping-data")


def _tcp_packet_v4() -> bytes:
    seg = build_tcp(TcpHeader(40000, 80, 0xDEADBEEF, 1, ACK, 100), b"x" * 1400, A4, B4)
    return build_ipv4_header(A4, B4, 6, len(seg)) + seg


def test_frag_needed_round_trip_and_scapy() -> None:
    orig = _tcp_packet_v4()
    raw = icmp.build_icmpv4_frag_needed(orig, 1280)
    assert len(raw) == 576 - 20  # RFC 1812 4.3.2.3: the whole datagram fits in 576 bytes
    msg = icmp.parse_icmpv4(raw)
    assert icmp.icmpv4_mtu(msg) == 1280
    q = icmp.parse_quoted_ipv4(msg.body)
    assert q == icmp.QuotedHeader(A4, B4, 6, 40000, 80, 0xDEADBEEF)
    s = ICMP(raw)
    assert (s.type, s.code, s.nexthopmtu) == (3, 4, 1280)
    assert s.payload.src == "198.18.0.1" and s.payload.payload.seq == 0xDEADBEEF


def test_scapy_frag_needed_parsed() -> None:
    orig = IP(src="198.18.0.1", dst="198.18.0.2") / TCP(sport=1111, dport=2222, seq=99)
    raw = bytes(ICMP(type=3, code=4, nexthopmtu=1400) / bytes(orig)[:28])  # RFC 792: header + 64 bits
    msg = icmp.parse_icmpv4(raw)
    assert (msg.type, msg.code, icmp.icmpv4_mtu(msg)) == (3, 4, 1400)
    assert icmp.parse_quoted_ipv4(msg.body) == icmp.QuotedHeader(A4, B4, 6, 1111, 2222, 99)
    port = icmp.parse_icmpv4(bytes(ICMP(type=3, code=3) / bytes(orig)[:28]))
    assert icmp.icmpv4_mtu(port) is None


def test_dest_unreach_v4_through_ip() -> None:
    raw = icmp.build_icmpv4_dest_unreach(icmp.ICMP_PORT_UNREACH, _tcp_packet_v4()[:28])
    pkt = build_ipv4_header(B4, A4, 1, len(raw)) + raw
    hdr, payload = parse_ipv4(pkt)
    msg = icmp.parse_icmpv4(payload)
    assert (msg.type, msg.code) == (3, 3)
    s = IP(pkt)
    assert s[ICMP].type == 3 and s[ICMP].code == 3


def test_icmpv4_errors() -> None:
    with pytest.raises(ParseError):
        icmp.parse_icmpv4(b"\x08\x00\x00")
    raw = bytearray(icmp.build_icmpv4_echo(1, 2, b"abc"))
    raw[-1] ^= 0xFF
    with pytest.raises(ChecksumError):
        icmp.parse_icmpv4(raw)
    assert icmp.parse_icmpv4(raw, verify_checksum=False).body == bytes(raw[8:])
    with pytest.raises(ValueError):
        icmp.build_icmpv4(8, 0, b"\x00", b"")


@pytest.mark.parametrize("body", [
    b"",
    b"\x45" + b"\x00" * 26,                                              # 27 bytes: no 8 transport bytes
    b"\x65" + b"\x00" * 27,                                              # not IPv4
    b"\x44" + b"\x00" * 27,                                              # IHL 4
    b"\x46" + b"\x00" * 27,                                              # IHL 6, only 4 transport bytes
    b"\x45\x00\x00\x00\x00\x00\x00\x10" + b"\x00" * 20,                  # non-first fragment
])
def test_quoted_v4_errors(body: bytes) -> None:
    with pytest.raises(ParseError):
        icmp.parse_quoted_ipv4(body)


# --- ICMPv6 -------------------------------------------------------------------------------------

@SETTINGS
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=100), st.booleans())
def test_echo_v6_round_trip_and_scapy(ident: int, seq: int, data: bytes, reply: bool) -> None:
    raw = icmp.build_icmpv6_echo(A6, B6, ident, seq, data, reply=reply)
    msg = icmp.parse_icmpv6(raw, A6, B6)
    assert (msg.type, icmp.echo_fields(msg), msg.body) == (129 if reply else 128, (ident, seq), data)
    s = IPv6(build_ipv6_header(A6, B6, 58, len(raw)) + raw)
    layer = s[ICMPv6EchoReply if reply else ICMPv6EchoRequest]
    assert (layer.id, layer.seq, layer.data) == (ident, seq, data)
    again = IPv6(src=v6(A6), dst=v6(B6)) / (ICMPv6EchoReply if reply else ICMPv6EchoRequest)(id=ident, seq=seq, data=data)
    assert icmp6_bytes(again) == raw  # scapy computes the identical checksum


def test_scapy_echo_v6_and_reply() -> None:
    raw = icmp6_bytes(IPv6(src=v6(B6), dst=v6(A6)) / ICMPv6EchoRequest(id=5, seq=6, data=b"hello"))
    msg = icmp.parse_icmpv6(raw, B6, A6)
    assert icmp.echo_fields(msg) == (5, 6) and msg.body == b"hello"
    reply = icmp.icmpv6_echo_reply(msg, A6, B6)
    assert reply == icmp6_bytes(IPv6(src=v6(A6), dst=v6(B6)) / ICMPv6EchoReply(id=5, seq=6, data=b"hello"))
    with pytest.raises(ChecksumError):
        icmp.parse_icmpv6(raw, A6, A6)  # wrong pseudo-header
    assert icmp.parse_icmpv6(raw, A6, A6, verify_checksum=False) == msg


def _tcp_packet_v6(n: int = 1400) -> bytes:
    seg = build_tcp(TcpHeader(40000, 443, 123456, 1, ACK, 100), b"y" * n, A6, B6)
    return build_ipv6_header(A6, B6, 6, len(seg)) + seg


def test_packet_too_big_round_trip_and_scapy() -> None:
    orig = _tcp_packet_v6(1400)
    raw = icmp.build_icmpv6_packet_too_big(B6, A6, 1280, orig)
    assert 40 + len(raw) == 1280  # RFC 4443 2.4(c): fits in the minimum MTU
    msg = icmp.parse_icmpv6(raw, B6, A6)
    assert icmp.icmpv6_mtu(msg) == 1280
    assert icmp.parse_quoted_ipv6(msg.body) == icmp.QuotedHeader(A6, B6, 6, 40000, 443, 123456)
    theirs = icmp6_bytes(IPv6(src=v6(B6), dst=v6(A6)) / ICMPv6PacketTooBig(mtu=1280) / orig[:1232])
    assert raw == theirs


def test_scapy_packet_too_big_and_unreach_parsed() -> None:
    orig = IPv6(src=v6(A6), dst=v6(B6)) / IPv6ExtHdrDestOpt() / TCP(sport=7, dport=8, seq=9)
    raw = icmp6_bytes(IPv6(src=v6(B6), dst=v6(A6)) / ICMPv6PacketTooBig(mtu=1400) / orig)
    msg = icmp.parse_icmpv6(raw, B6, A6)
    assert icmp.icmpv6_mtu(msg) == 1400
    assert icmp.parse_quoted_ipv6(msg.body) == icmp.QuotedHeader(A6, B6, 6, 7, 8, 9)
    raw = icmp6_bytes(IPv6(src=v6(B6), dst=v6(A6)) / ICMPv6DestUnreach(code=4) / orig)
    msg = icmp.parse_icmpv6(raw, B6, A6)
    assert (msg.type, msg.code, icmp.icmpv6_mtu(msg)) == (1, 4, None)
    assert raw == icmp.build_icmpv6_dest_unreach(B6, A6, 4, bytes(orig))


@pytest.mark.parametrize("body", [
    b"",
    b"\x60" + b"\x00" * 46,                                              # 47 bytes: 7 transport bytes
    b"\x40" + b"\x00" * 47,                                              # not IPv6
    b"\x60" + b"\x00" * 5 + b"\x3c" + b"\x00" * 33 + b"\x06\x00" + b"\x00" * 6,  # dest opts then nothing
    b"\x60" + b"\x00" * 5 + b"\x2c" + b"\x00" * 33 + b"\x06\x00\x00\x08" + b"\x00" * 12,  # non-first fragment
])
def test_quoted_v6_errors(body: bytes) -> None:
    with pytest.raises(ParseError):
        icmp.parse_quoted_ipv6(body)


# --- NDP ----------------------------------------------------------------------------------------

def test_solicited_node_multicast() -> None:
    assert icmp.solicited_node_multicast(ipaddress.IPv6Address("2001:2::12:3456").packed) == \
        ipaddress.IPv6Address("ff02::1:ff12:3456").packed


def test_ns_round_trip_and_scapy() -> None:
    dst = icmp.solicited_node_multicast(B6)
    raw = icmp.build_ndp_ns(A6, dst, B6, MAC_A)
    nd = icmp.parse_ndp(icmp.parse_icmpv6(raw, A6, dst))
    assert nd == icmp.NdpMessage(135, B6, False, False, False, MAC_A, None)
    s = IPv6(build_ipv6_header(A6, dst, 58, len(raw), hop_limit=255) + raw)
    assert s[ICMPv6ND_NS].tgt == v6(B6) and s[ICMPv6NDOptSrcLLAddr].lladdr == "02:00:00:00:00:01"
    theirs = icmp6_bytes(IPv6(src=v6(A6), dst=v6(dst), hlim=255) / ICMPv6ND_NS(tgt=v6(B6)) /
                         ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:01"))
    assert raw == theirs


def test_dad_ns_without_lla() -> None:
    unspec = b"\x00" * 16
    dst = icmp.solicited_node_multicast(A6)
    raw = icmp.build_ndp_ns(unspec, dst, A6)
    assert len(raw) == 24
    assert icmp.parse_ndp(icmp.parse_icmpv6(raw, unspec, dst)) == icmp.NdpMessage(135, A6, False, False, False, None, None)


@pytest.mark.parametrize("r, s, o", [(0, 1, 1), (1, 0, 0), (1, 1, 1), (0, 0, 1)])
def test_na_round_trip_and_scapy(r: int, s: int, o: int) -> None:
    raw = icmp.build_ndp_na(B6, A6, B6, MAC_B, router=bool(r), solicited=bool(s), override=bool(o))
    nd = icmp.parse_ndp(icmp.parse_icmpv6(raw, B6, A6))
    assert nd == icmp.NdpMessage(136, B6, bool(r), bool(s), bool(o), None, MAC_B)
    theirs = IPv6(src=v6(B6), dst=v6(A6), hlim=255) / ICMPv6ND_NA(R=r, S=s, O=o, tgt=v6(B6)) / \
        ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:02")
    assert raw == icmp6_bytes(theirs)
    parsed = IPv6(bytes(theirs))
    assert (parsed[ICMPv6ND_NA].R, parsed[ICMPv6ND_NA].S, parsed[ICMPv6ND_NA].O) == (r, s, o)


def test_scapy_ndp_parsed() -> None:
    ns = icmp6_bytes(IPv6(src="fe80::1", dst="ff02::1:ff00:2") / ICMPv6ND_NS(tgt="2001:2::2") /
                     ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:01"))
    nd = icmp.parse_ndp(icmp.parse_icmpv6(ns, LL6, ipaddress.IPv6Address("ff02::1:ff00:2").packed))
    assert (nd.type, nd.target, nd.source_lla, nd.target_lla) == (135, B6, MAC_A, None)
    na = icmp6_bytes(IPv6(src="2001:2::2", dst="2001:2::1") / ICMPv6ND_NA(R=0, S=1, O=1, tgt="2001:2::2") /
                     ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:02"))
    nd = icmp.parse_ndp(icmp.parse_icmpv6(na, B6, A6))
    assert (nd.type, nd.target, nd.solicited, nd.override, nd.router, nd.target_lla) == (136, B6, True, True, False, MAC_B)


def _ns(body: bytes, code: int = 0, type_: int = 135) -> icmp.IcmpMessage:
    return icmp.IcmpMessage(type_, code, b"\x00" * 4, body)


@pytest.mark.parametrize("msg", [
    _ns(B6, type_=128),                          # not NS/NA
    _ns(B6, code=1),                             # code must be 0
    _ns(B6[:15]),                                # shorter than 24 bytes
    _ns(b"\xff\x02" + b"\x00" * 14),             # multicast target
    _ns(B6 + b"\x01\x00" + b"\x00" * 6),         # zero-length option (RFC 4861 4.6)
    _ns(B6 + b"\x01\x02" + b"\x00" * 6),         # option past the end
    _ns(B6 + b"\x01"),                           # option truncated
])
def test_ndp_errors(msg: icmp.IcmpMessage) -> None:
    with pytest.raises(ParseError):
        icmp.parse_ndp(msg)


def test_ndp_unknown_options_skipped() -> None:
    body = B6 + b"\x0e\x01" + b"\x00" * 6 + b"\x01\x01" + MAC_A   # nonce option (RFC 3971) then SLLA
    assert icmp.parse_ndp(_ns(body)).source_lla == MAC_A


def test_icmpv6_through_ipv6() -> None:
    raw = icmp.build_ndp_na(B6, A6, B6, MAC_B)
    pkt = build_ipv6_header(B6, A6, 58, len(raw), hop_limit=icmp.NDP_HOP_LIMIT) + raw
    hdr, payload = parse_ipv6(pkt)
    assert hdr.next_header == 58 and hdr.hop_limit == 255
    assert icmp.parse_ndp(icmp.parse_icmpv6(payload, hdr.src, hdr.dst)).target_lla == MAC_B
