"""IPv4 header (RFC 791 3.1): round trips, strict length checks, fragments, options, checksum,
and scapy in both directions."""
from __future__ import annotations

import struct

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, IPOption_NOP, IPOption_RR

from aiotcpstack.wire.checksum import ones_sum
from aiotcpstack.wire.errors import ChecksumError, ParseError
from aiotcpstack.wire.ipv4 import IPv4Header, build_ipv4_header, parse_ipv4

SETTINGS = settings(max_examples=150, deadline=None, database=None)
ip4s = st.binary(min_size=4, max_size=4)
A, B = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])


def dotted(a: bytes) -> str:
    return ".".join(map(str, a))


@SETTINGS
@given(ip4s, ip4s, st.integers(0, 255), st.binary(max_size=200), st.integers(1, 255), st.integers(0, 0xFFFF),
       st.booleans(), st.integers(0, 255))
@example(bytes(4), bytes(4), 2, bytes(8), 1, 0, False, 0)     # IGMP: scapy rewrites its payload
def test_round_trip_and_scapy(src, dst, proto, payload, ttl, ident, df, tos) -> None:
    pkt = build_ipv4_header(src, dst, proto, len(payload), ttl=ttl, ident=ident, df=df, tos=tos) + payload
    hdr, data = parse_ipv4(pkt)
    assert hdr == IPv4Header(src, dst, proto, ttl, ident, df, False, 0, tos, 20 + len(payload), 5, b"")
    assert not hdr.is_fragment
    assert bytes(data) == payload
    # scapy: same fields, and it computes the same header checksum
    s = IP(pkt)
    assert (s.version, s.ihl, s.tos, s.len, s.id, s.ttl, s.proto, s.src, s.dst) == \
        (4, 5, tos, 20 + len(payload), ident, ttl, proto, dotted(src), dotted(dst))
    assert bool(s.flags.DF) == df and not s.flags.MF and s.frag == 0
    # the header alone: scapy re-serializing a payload it dissected may change it (proto 2,
    # IGMP: its post_build adds a Router Alert option, so the checksum would differ)
    recomputed = IP(pkt[:20])
    del recomputed.chksum
    assert IP(bytes(recomputed)).chksum == s.chksum == struct.unpack_from("!H", pkt, 10)[0]


def test_defaults() -> None:
    hdr = build_ipv4_header(A, B, 6, 100)
    h, _ = parse_ipv4(hdr + b"\x00" * 100)
    assert h.df and h.ttl == 64 and h.ident == 0 and h.tos == 0 and h.total_length == 120
    assert ones_sum(hdr) == 0xFFFF


@pytest.mark.parametrize("kw", [
    dict(),
    dict(flags="MF", frag=0, id=7),
    dict(flags=0, frag=185, id=7),
    dict(flags="MF", frag=3, id=7),
    dict(options=[IPOption_NOP(), IPOption_NOP(), IPOption_NOP(), IPOption_NOP()]),
    dict(options=[IPOption_RR(routers=["198.18.0.9", "198.18.0.10"])]),
    dict(tos=0xB8, ttl=1, flags="DF"),
])
def test_scapy_built(kw: dict) -> None:
    s = IP(src="198.18.0.1", dst="198.18.0.2", proto=6, **kw) / (b"p" * 33)
    raw = bytes(s)
    s = IP(raw)
    hdr, data = parse_ipv4(raw)
    assert (hdr.src, hdr.dst, hdr.proto, hdr.ttl, hdr.ident, hdr.tos, hdr.total_length, hdr.ihl) == \
        (A, B, 6, s.ttl, s.id, s.tos, s.len, s.ihl)
    assert (hdr.df, hdr.mf, hdr.frag_offset) == (bool(s.flags.DF), bool(s.flags.MF), s.frag)
    assert hdr.is_fragment == (bool(s.flags.MF) or s.frag != 0)
    assert hdr.options == raw[20:s.ihl * 4]
    assert bytes(data) == b"p" * 33


def test_payload_trimmed_to_total_length() -> None:
    # Ethernet pads short frames to 60 bytes: the padding must not reach TCP.
    pkt = build_ipv4_header(A, B, 6, 20) + b"t" * 20 + b"\x00" * 6
    hdr, data = parse_ipv4(pkt)
    assert hdr.total_length == 40 and bytes(data) == b"t" * 20
    assert isinstance(data, memoryview) and data.obj is pkt


def test_bad_checksum() -> None:
    pkt = bytearray(build_ipv4_header(A, B, 6, 0))
    pkt[8] = 63  # TTL changed without fixing the checksum
    with pytest.raises(ChecksumError):
        parse_ipv4(pkt)
    assert parse_ipv4(pkt, verify_checksum=False)[0].ttl == 63


def _hdr(vihl=0x45, total=20, extra=b"") -> bytes:
    return struct.pack("!BBHHHBBH4s4s", vihl, 0, total, 0, 0, 64, 6, 0, A, B) + extra


@pytest.mark.parametrize("raw, why", [
    (b"", "empty"),
    (_hdr()[:19], "short"),
    (_hdr(vihl=0x65), "version 6"),
    (_hdr(vihl=0x44), "IHL 4"),
    (_hdr(vihl=0x40), "IHL 0"),
    (_hdr(vihl=0x46, total=24), "IHL past the end"),
    (_hdr(vihl=0x4F, total=60, extra=b"\x01" * 39), "IHL 15, short by one"),
    (_hdr(total=19), "total length below header"),
    (_hdr(vihl=0x46, total=20, extra=b"\x01" * 4), "total length below IHL"),
    (_hdr(total=21), "total length past the end"),
    (_hdr(total=0xFFFF, extra=b"x" * 100), "truncated"),
])
def test_malformed(raw: bytes, why: str) -> None:
    with pytest.raises(ParseError):
        parse_ipv4(raw, verify_checksum=False)


def test_build_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        build_ipv4_header(b"\x00" * 16, B, 6, 0)
    with pytest.raises(ValueError):
        build_ipv4_header(A, B, 6, 0xFFFF - 19)
