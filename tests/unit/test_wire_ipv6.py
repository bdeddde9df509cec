"""IPv6 header (RFC 8200): round trips, extension-header walk, fragments, and scapy both ways."""
from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import TCP
from scapy.layers.inet6 import (
    IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, PadN,
)

from aiotcpstack.wire.errors import ParseError
from aiotcpstack.wire.ipv6 import IPv6Header, build_ipv6_header, parse_ipv6

SETTINGS = settings(max_examples=150, deadline=None, database=None)
ip6s = st.binary(min_size=16, max_size=16)
A = ipaddress.IPv6Address("2001:2::1").packed
B = ipaddress.IPv6Address("2001:2::2").packed


def text(a: bytes) -> str:
    return str(ipaddress.IPv6Address(a))


@SETTINGS
@given(ip6s, ip6s, st.integers(0, 255).filter(lambda n: n not in (0, 43, 44, 60)), st.binary(max_size=200),
       st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFFF))
def test_round_trip_and_scapy(src, dst, nh, payload, hlim, tc, fl) -> None:
    pkt = build_ipv6_header(src, dst, nh, len(payload), hop_limit=hlim, traffic_class=tc, flow_label=fl) + payload
    hdr, data = parse_ipv6(pkt)
    assert hdr == IPv6Header(src, dst, nh, hlim, len(payload), tc, fl, False)
    assert bytes(data) == payload
    s = IPv6(pkt)
    assert (s.version, s.tc, s.fl, s.plen, s.nh, s.hlim, s.src, s.dst) == \
        (6, tc, fl, len(payload), nh, hlim, text(src), text(dst))


def test_defaults_and_padding_trimmed() -> None:
    pkt = build_ipv6_header(A, B, 6, 4) + b"abcd" + b"\x00" * 10
    hdr, data = parse_ipv6(pkt)
    assert hdr.hop_limit == 64 and hdr.traffic_class == 0 and hdr.flow_label == 0 and not hdr.fragment
    assert bytes(data) == b"abcd" and data.obj is pkt


@pytest.mark.parametrize("ext, fragment", [
    ([], False),
    ([IPv6ExtHdrHopByHop()], False),
    ([IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\x00" * 12)])], False),
    ([IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(addresses=["2001:2::9", "2001:2::a"]),
      IPv6ExtHdrDestOpt()], False),
    ([IPv6ExtHdrRouting(addresses=[])], False),
    ([IPv6ExtHdrFragment(id=1234, m=1, offset=0)], True),
    ([IPv6ExtHdrDestOpt(), IPv6ExtHdrFragment(id=1234, m=0, offset=100)], True),
])
def test_scapy_built_extension_headers(ext: list, fragment: bool) -> None:
    pkt = IPv6(src="2001:2::1", dst="2001:2::2", hlim=7, tc=3, fl=0x12345)
    for e in ext:
        pkt = pkt / e
    pkt = pkt / TCP(sport=1, dport=2) / b"data"
    raw = bytes(pkt)
    hdr, data = parse_ipv6(raw)
    assert (hdr.src, hdr.dst, hdr.hop_limit, hdr.traffic_class, hdr.flow_label) == (A, B, 7, 3, 0x12345)
    assert hdr.next_header == 6
    assert hdr.payload_length == len(raw) - 40
    assert hdr.fragment == fragment
    assert bytes(data) == bytes(pkt[TCP])


def test_hop_by_hop_must_be_first() -> None:
    raw = bytes(IPv6(src="2001:2::1", dst="2001:2::2") / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / TCP())
    with pytest.raises(ParseError):
        parse_ipv6(raw)


def _hdr(vtf=0x60000000, plen=0, nh=59, extra=b"") -> bytes:
    return struct.pack("!IHBB16s16s", vtf, plen, nh, 64, A, B) + extra


@pytest.mark.parametrize("raw, why", [
    (b"", "empty"),
    (_hdr()[:39], "short"),
    (_hdr(vtf=0x40000000), "version 4"),
    (_hdr(plen=1), "payload length past the end"),
    (_hdr(plen=0, nh=0), "jumbogram / hop-by-hop with no room"),
    (_hdr(plen=4, nh=60, extra=b"\x06\x00\x00\x00"), "extension header truncated"),
    (_hdr(plen=8, nh=60, extra=b"\x06\x01" + b"\x00" * 6), "extension header length past the payload"),
    (_hdr(plen=8, nh=43, extra=b"\x2b\x00" + b"\x00" * 6), "routing header chain runs off the end"),
    (_hdr(plen=7, nh=44, extra=b"\x06\x00" + b"\x00" * 5), "fragment header truncated"),
])
def test_malformed(raw: bytes, why: str) -> None:
    with pytest.raises(ParseError):
        parse_ipv6(raw)


def test_build_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        build_ipv6_header(b"\x00" * 4, B, 6, 0)
    with pytest.raises(ValueError):
        build_ipv6_header(A, B, 6, 0x10000)
