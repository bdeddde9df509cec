"""Robustness: random and mutated bytes into every wire parser.  The only exception allowed out is
``ParseError`` (the receive path's single drop-and-count branch), and nothing may hang
(pytest-timeout guards each test; every parser loop advances by at least one byte)."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, IPOption_NOP
from scapy.layers.inet6 import (
    ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr, ICMPv6PacketTooBig, IPv6, IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, Ether

from aiotcpstack.wire import icmp
from aiotcpstack.wire.arp import parse_arp
from aiotcpstack.wire.errors import ParseError
from aiotcpstack.wire.ethernet import ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, parse_ethernet
from aiotcpstack.wire.ipv4 import parse_ipv4
from aiotcpstack.wire.ipv6 import parse_ipv6
from aiotcpstack.wire.tcp import TcpHeader, TcpOptions, build_tcp, parse_tcp, verify_tcp_checksum

pytestmark = pytest.mark.timeout(60)
FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

A4, B4 = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
A6 = bytes.fromhex("20010002000000000000000000000001")
B6 = bytes.fromhex("20010002000000000000000000000002")
E = Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01")

TCP_OPTS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 2)), ("NOP", None), ("WScale", 7)]
SEEDS = [bytes(p) for p in (
    E / IP(src="198.18.0.1", dst="198.18.0.2") / TCP(flags="S", options=TCP_OPTS) / b"hello",
    E / IP(src="198.18.0.1", dst="198.18.0.2", options=[IPOption_NOP()] * 4, flags="MF") / TCP(
        options=[("NOP", None), ("NOP", None), ("SAck", (1, 2, 3, 4))]),
    E / IP(src="198.18.0.1", dst="198.18.0.2") / ICMP(type=3, code=4, nexthopmtu=1280) / bytes(
        IP(src="198.18.0.2", dst="198.18.0.1") / TCP(sport=5, dport=6, seq=7))[:28],
    E / IP(src="198.18.0.1", dst="198.18.0.2") / ICMP(type=8) / b"ping",
    E / ARP(psrc="198.18.0.1", pdst="198.18.0.2"),
    E / IPv6(src="2001:2::1", dst="2001:2::2") / TCP(flags="SA", options=TCP_OPTS) / b"data",
    E / IPv6(src="2001:2::1", dst="2001:2::2") / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt()
    / TCP(),
    E / IPv6(src="2001:2::1", dst="2001:2::2") / IPv6ExtHdrFragment(m=1) / TCP(),
    E / IPv6(src="2001:2::1", dst="2001:2::2", hlim=255) / ICMPv6ND_NS(tgt="2001:2::2")
    / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:01"),
    E / IPv6(src="2001:2::2", dst="2001:2::1", hlim=255) / ICMPv6ND_NA(tgt="2001:2::2")
    / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:02"),
    E / IPv6(src="2001:2::2", dst="2001:2::1") / ICMPv6PacketTooBig(mtu=1280) / bytes(
        IPv6(src="2001:2::1", dst="2001:2::2") / IPv6ExtHdrDestOpt() / TCP(sport=1, dport=2) / (b"z" * 100)),
)]
SEEDS.append(b"\x00" * 14 + build_tcp(TcpHeader(1, 2, 3, 4, 0x10, 5, TcpOptions(timestamp=(9, 9),
                                                                             sack_blocks=((1, 2),) * 3)), b"x", A4, B4))


@st.composite
def mutated(draw) -> bytes:
    """A valid frame with a few random edits: bit flips, byte sets (biased to 0, 1, 0xff and
    length-like values), truncation, insertion and deletion."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "set", "truncate", "insert", "delete"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.sampled_from([0, 1, 2, 4, 5, 0x0A, 0x0F, 0x40, 0x45, 0x4F, 0x60, 0x7F, 0x80, 0xF0, 0xFF])
                             | st.integers(0, 255))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[pos:pos + draw(st.integers(1, 8))]
    return bytes(data)


frames = st.one_of(st.binary(max_size=200), mutated())
as_type = st.sampled_from([bytes, bytearray, memoryview])


def receive(frame: bytes) -> None:
    """The whole receive path, as ip/ would run it: every step may only raise ParseError."""
    _dst, _src, etype, payload = parse_ethernet(frame)
    if etype == ETH_P_ARP:
        parse_arp(payload)
    elif etype == ETH_P_IP:
        hdr, l4 = parse_ipv4(payload, verify_checksum=False)
        assert len(l4) == hdr.total_length - hdr.ihl * 4
        if hdr.proto == 6:
            th, data = parse_tcp(l4)
            verify_tcp_checksum(l4, hdr.src, hdr.dst)
            assert len(data) <= len(l4) - 20
        elif hdr.proto == 1:
            msg = icmp.parse_icmpv4(l4, verify_checksum=False)
            icmp.icmpv4_mtu(msg)
            if msg.type == 3:
                icmp.parse_quoted_ipv4(msg.body)
    elif etype == ETH_P_IPV6:
        hdr, l4 = parse_ipv6(payload)
        assert len(l4) <= hdr.payload_length
        if hdr.next_header == 6:
            parse_tcp(l4)
            verify_tcp_checksum(l4, hdr.src, hdr.dst)
        elif hdr.next_header == 58:
            msg = icmp.parse_icmpv6(l4, hdr.src, hdr.dst, verify_checksum=False)
            icmp.icmpv6_mtu(msg)
            if msg.type in (1, 2):
                icmp.parse_quoted_ipv6(msg.body)
            elif msg.type in (135, 136):
                icmp.parse_ndp(msg)


def test_seeds_are_valid() -> None:
    for frame in SEEDS:
        receive(frame)


@FUZZ
@given(frames)
def test_receive_path(frame: bytes) -> None:
    try:
        receive(frame)
    except ParseError:
        pass


PARSERS = {
    "ethernet": parse_ethernet,
    "arp": parse_arp,
    "ipv4": parse_ipv4,
    "ipv4_nocsum": lambda b: parse_ipv4(b, verify_checksum=False),
    "ipv6": parse_ipv6,
    "tcp": parse_tcp,
    "icmpv4": icmp.parse_icmpv4,
    "icmpv4_nocsum": lambda b: icmp.parse_icmpv4(b, verify_checksum=False),
    "icmpv6": lambda b: icmp.parse_icmpv6(b, A6, B6),
    "ndp": lambda b: icmp.parse_ndp(icmp.parse_icmpv6(b, A6, B6, verify_checksum=False)),
    "quoted_ipv4": icmp.parse_quoted_ipv4,
    "quoted_ipv6": icmp.parse_quoted_ipv6,
}


@pytest.mark.parametrize("name", sorted(PARSERS))
@FUZZ
@given(st.one_of(st.binary(max_size=120), mutated().map(lambda f: f[14:]), mutated().map(lambda f: f[34:]),
                 mutated().map(lambda f: f[54:]), mutated().map(lambda f: f[62:])), as_type)
def test_each_parser_only_raises_parse_error(name: str, data: bytes, kind: type) -> None:
    # Offsets 14/34/54/62 start the random input at L3, L4 (v4), L4 (v6) and an ICMPv6 body.
    try:
        PARSERS[name](kind(data))
    except ParseError:
        pass


@FUZZ
@given(st.binary(min_size=20, max_size=80))
def test_tcp_options_region(options_and_payload: bytes) -> None:
    # A valid fixed header with a data offset covering random option bytes.
    doff = min(15, 5 + len(options_and_payload) // 4)
    head = bytes(12) + bytes(((doff << 4), 0x10)) + bytes(6)
    try:
        hdr, payload = parse_tcp(head + options_and_payload)
    except ParseError:
        return
    opts = hdr.options
    assert opts.mss is None or 0 <= opts.mss <= 0xFFFF
    assert all(len(b) == 2 for b in opts.sack_blocks)
    assert len(payload) == len(head) + len(options_and_payload) - doff * 4
