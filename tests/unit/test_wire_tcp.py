"""TCP header and options (RFC 9293 3.1/3.2, RFC 7323, RFC 2018): round trips, Linux option
layout byte for byte, checksum modes, malformed input, and scapy as an independent oracle."""
from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, in4_chksum
from scapy.layers.inet6 import IPv6, in6_chksum

from aiotcpstack.wire.checksum import internet_checksum, pseudo_header_sum
from aiotcpstack.wire.errors import ParseError
from aiotcpstack.wire.ipv4 import build_ipv4_header
from aiotcpstack.wire.ipv6 import build_ipv6_header
from aiotcpstack.wire.tcp import (
    ACK, CWR, ECE, FIN, NO_OPTIONS, PSH, RST, SYN, URG, TcpHeader, TcpOptions, build_tcp, encode_options, parse_tcp,
    verify_tcp_checksum,
)

SETTINGS = settings(max_examples=200, deadline=None, database=None)

V4A, V4B = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
V6A = bytes.fromhex("20010002000000000000000000000001")
V6B = bytes.fromhex("20010002000000000000000000000002")
SCAPY_ADDR = {V4A: "198.18.0.1", V4B: "198.18.0.2", V6A: "2001:2::1", V6B: "2001:2::2"}

u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 0xFFFF)
options_st = st.builds(
    TcpOptions,
    mss=st.none() | u16,
    wscale=st.none() | st.integers(0, 14),
    sack_permitted=st.booleans(),
    sack_blocks=st.lists(st.tuples(u32, u32), max_size=4).map(tuple),
    timestamp=st.none() | st.tuples(u32, u32),
)
headers_st = st.builds(
    TcpHeader, src_port=u16, dst_port=u16, seq=u32, ack=u32, flags=st.integers(0, 0xFF), window=u16,
    options=options_st, urgent=u16,
)


def fits(opts: TcpOptions) -> TcpOptions:
    """What survives encode_options' 40-byte limit (SACK blocks dropped from the end)."""
    used = (4 if opts.mss is not None else 0) + (12 if opts.timestamp else 4 if opts.sack_permitted else 0) \
        + (4 if opts.wscale is not None else 0)
    room = max(0, (40 - used - 4) // 8)
    return TcpOptions(opts.mss, opts.wscale, opts.sack_permitted, opts.sack_blocks[:room], opts.timestamp)


def same(a: TcpHeader, b: TcpHeader) -> bool:
    return all(getattr(a, k) == getattr(b, k) for k in ("src_port", "dst_port", "seq", "ack", "flags", "window", "urgent"))


# --- encode_options: Linux tcp_options_write layout -------------------------------------------

def test_syn_layout_full() -> None:
    opts = TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(0x01020304, 0))
    assert encode_options(opts) == bytes.fromhex("020405b4" "0402080a" "01020304" "00000000" "01030307")


def test_syn_layout_ts_without_sack() -> None:
    opts = TcpOptions(mss=1460, wscale=7, timestamp=(5, 6))
    assert encode_options(opts) == bytes.fromhex("020405b4" "0101080a" "00000005" "00000006" "01030307")


def test_syn_layout_sack_without_ts() -> None:
    opts = TcpOptions(mss=536, wscale=0, sack_permitted=True)
    assert encode_options(opts) == bytes.fromhex("02040218" "01010402" "01030300")


def test_syn_layout_mss_only() -> None:
    assert encode_options(TcpOptions(mss=1460)) == bytes.fromhex("020405b4")


def test_non_syn_ts_and_sack() -> None:
    opts = TcpOptions(timestamp=(1, 2), sack_blocks=((10, 20), (30, 40)))
    assert encode_options(opts) == bytes.fromhex(
        "0101080a" "00000001" "00000002" "0101" "0512" "0000000a" "00000014" "0000001e" "00000028")


def test_sack_blocks_dropped_to_fit() -> None:
    blocks = tuple((i, i + 1) for i in range(0, 50, 10))
    with_ts = encode_options(TcpOptions(timestamp=(1, 2), sack_blocks=blocks))
    assert len(with_ts) == 40 and with_ts[14:16] == bytes((5, 2 + 3 * 8))  # 3 blocks with TS (RFC 2018 3)
    no_ts = encode_options(TcpOptions(sack_blocks=blocks))
    assert len(no_ts) == 36 and no_ts[2:4] == bytes((5, 2 + 4 * 8))  # 4 blocks without
    parsed = parse_tcp(build_tcp(TcpHeader(1, 2, 3, 4, ACK, 5, TcpOptions(timestamp=(1, 2), sack_blocks=blocks)), b"", V4A, V4B))[0]
    assert parsed.options.sack_blocks == blocks[:3]


def test_empty_options() -> None:
    assert encode_options(TcpOptions()) == b""
    assert encode_options(NO_OPTIONS) == b""


@SETTINGS
@given(options_st)
def test_encode_padded_and_bounded(opts: TcpOptions) -> None:
    raw = encode_options(opts)
    assert len(raw) % 4 == 0 and len(raw) <= 40


# --- round trips --------------------------------------------------------------------------------

@SETTINGS
@given(headers_st, st.binary(max_size=300), st.sampled_from([(V4A, V4B), (V6A, V6B)]))
def test_round_trip(hdr: TcpHeader, payload: bytes, addrs: tuple[bytes, bytes]) -> None:
    seg = build_tcp(hdr, payload, *addrs)
    got, data = parse_tcp(seg)
    assert same(got, hdr)
    want = fits(hdr.options)
    if want == TcpOptions():
        assert got.options is NO_OPTIONS
    else:
        assert got.options == want
    assert bytes(data) == payload
    assert verify_tcp_checksum(seg, *addrs)


def test_bare_header_reuses_no_options_and_payload_is_a_view() -> None:
    seg = build_tcp(TcpHeader(1000, 80, 1, 2, ACK | PSH, 512), b"hello", V4A, V4B)
    assert len(seg) == 25
    hdr, payload = parse_tcp(seg)
    assert hdr.options is NO_OPTIONS
    assert isinstance(payload, memoryview) and payload.obj is seg and bytes(payload) == b"hello"
    mv = memoryview(bytearray(seg))
    assert parse_tcp(mv)[1].obj is mv.obj  # no copy when handed a memoryview either


def test_all_flags() -> None:
    for flag in (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR):
        assert parse_tcp(build_tcp(TcpHeader(1, 2, 3, 4, flag), b"", V4A, V4B))[0].flags == flag


def test_reserved_bits_ignored_on_receive() -> None:
    seg = bytearray(build_tcp(TcpHeader(1, 2, 3, 4, ACK), b"", V4A, V4B))
    seg[12] |= 0x0F  # reserved bits + AE (RFC 9293 3.1: ignore on receive)
    assert parse_tcp(seg)[0].flags == ACK


def test_nop_only_options_give_no_options() -> None:
    seg = struct.pack("!HHIIHHHH", 1, 2, 3, 4, (6 << 12) | ACK, 5, 0, 0) + b"\x01\x01\x01\x00"
    assert parse_tcp(seg)[0].options is NO_OPTIONS


# --- parsing details ----------------------------------------------------------------------------

def raw_segment(options: bytes, payload: bytes = b"", flags: int = ACK) -> bytes:
    assert len(options) % 4 == 0
    return struct.pack("!HHIIHHHH", 1, 2, 3, 4, ((5 + len(options) // 4) << 12) | flags, 5, 0, 0) + options + payload


def test_unknown_options_skipped() -> None:
    opts = bytes((253, 4, 0xAA, 0xBB)) + bytes((99, 2)) + b"\x01\x01" + bytes.fromhex("0101080a0000000700000008")
    hdr, payload = parse_tcp(raw_segment(opts, b"xyz"))
    assert hdr.options == TcpOptions(timestamp=(7, 8))
    assert bytes(payload) == b"xyz"


def test_eol_ends_options() -> None:
    opts = bytes.fromhex("020405b4" "00" "030307" "0101080a0000000700000008")  # everything after EOL is ignored
    assert parse_tcp(raw_segment(opts, flags=SYN))[0].options == TcpOptions(mss=1460)


def test_known_option_with_wrong_length_ignored() -> None:
    # Linux tcp_parse_options skips MSS/WS/TS of the wrong size instead of dropping the segment.
    opts = bytes.fromhex("0205000000" "03040000" "0402" "0101" "010100")
    assert parse_tcp(raw_segment(opts, flags=SYN))[0].options == TcpOptions(sack_permitted=True)


def test_wscale_reported_raw() -> None:
    # RFC 7323 2.3 clamping (to 14) is the TCP layer's decision; the parser reports the wire value.
    assert parse_tcp(raw_segment(bytes.fromhex("01030320"), flags=SYN))[0].options.wscale == 32


def test_last_duplicate_wins() -> None:
    opts = bytes.fromhex("020405b4" "02040218")
    assert parse_tcp(raw_segment(opts, flags=SYN))[0].options.mss == 536


def test_sack_blocks_parsed() -> None:
    opts = bytes.fromhex("0101" "0512" "00000001" "00000002" "fffffff0" "00000010")
    assert parse_tcp(raw_segment(opts))[0].options.sack_blocks == ((1, 2), (0xFFFFFFF0, 0x10))


@pytest.mark.parametrize("seg, why", [
    (b"", "empty"),
    (b"\x00" * 19, "truncated header"),
    (struct.pack("!HHIIHHHH", 1, 2, 3, 4, (4 << 12) | ACK, 5, 0, 0), "doff < 5"),
    (struct.pack("!HHIIHHHH", 1, 2, 3, 4, (0 << 12) | ACK, 5, 0, 0), "doff 0"),
    (struct.pack("!HHIIHHHH", 1, 2, 3, 4, (6 << 12) | ACK, 5, 0, 0), "doff past the end"),
    (struct.pack("!HHIIHHHH", 1, 2, 3, 4, (15 << 12) | ACK, 5, 0, 0) + b"\x01" * 39, "doff 15, one byte short"),
    (raw_segment(bytes.fromhex("02000000")), "zero-length option"),
    (raw_segment(bytes.fromhex("fd010000")), "option length 1"),
    (raw_segment(bytes.fromhex("0101fd05")), "option length runs past the header"),
    (raw_segment(bytes.fromhex("0101080a00000001")), "timestamp cut by the data offset"),
    (raw_segment(bytes.fromhex("01010102")), "kind without a length byte"),
    (raw_segment(bytes.fromhex("01010105") + b"\x00" * 4, b"\x0a" * 20), "option runs into the payload"),
])
def test_malformed(seg: bytes, why: str) -> None:
    with pytest.raises(ParseError):
        parse_tcp(seg)


# --- checksum modes -----------------------------------------------------------------------------

@pytest.mark.parametrize("src, dst", [(V4A, V4B), (V6A, V6B)])
@pytest.mark.parametrize("n", [0, 1, 2, 1447, 1448, 65000])
def test_checksum_modes(src: bytes, dst: bytes, n: int) -> None:
    hdr = TcpHeader(40000, 443, 123456789, 987654321, ACK | PSH, 1000, TcpOptions(timestamp=(11, 22)))
    payload = os.urandom(n)
    full = build_tcp(hdr, payload, src, dst, "full")
    assert verify_tcp_checksum(full, src, dst)
    # partial: the folded pseudo-header sum, uncomplemented, as CHECKSUM_PARTIAL wants ...
    part = build_tcp(hdr, payload, src, dst, "partial")
    psum = pseudo_header_sum(src, dst, 6, len(full))
    assert struct.unpack_from("!H", part, 16)[0] == psum
    assert part[:16] == full[:16] and part[18:] == full[18:]
    # ... so that the NIC's "checksum from csum_start to the end, store the complement" yields full.
    assert internet_checksum(part) == struct.unpack_from("!H", full, 16)[0]
    none = build_tcp(hdr, payload, src, dst, "none")
    assert none[16:18] == b"\x00\x00" and none[18:] == full[18:]
    assert not verify_tcp_checksum(none, src, dst) or struct.unpack_from("!H", full, 16)[0] == 0


def test_bad_checksum_detected() -> None:
    seg = bytearray(build_tcp(TcpHeader(1, 2, 3, 4, ACK), b"data", V4A, V4B))
    assert verify_tcp_checksum(seg, V4A, V4B)
    seg[-1] ^= 0x01
    assert not verify_tcp_checksum(seg, V4A, V4B)
    seg[-1] ^= 0x01
    assert not verify_tcp_checksum(bytes(seg), V4A, bytes([198, 18, 0, 3]))  # wrong pseudo-header


def test_bad_csum_mode() -> None:
    with pytest.raises(ValueError):
        build_tcp(TcpHeader(1, 2, 3), b"", V4A, V4B, csum="bogus")


def test_payload_types() -> None:
    hdr = TcpHeader(1, 2, 3, 4, ACK)
    want = build_tcp(hdr, b"abcdef", V4A, V4B)
    assert build_tcp(hdr, bytearray(b"abcdef"), V4A, V4B) == want
    assert build_tcp(hdr, memoryview(b"xxabcdef")[2:], V4A, V4B) == want


# --- scapy as the oracle ------------------------------------------------------------------------

def _scapy_packet(src: bytes, dst: bytes, seg: bytes):
    if len(src) == 4:
        return IP(build_ipv4_header(src, dst, 6, len(seg)) + seg)
    return IPv6(build_ipv6_header(src, dst, 6, len(seg)) + seg)


def _scapy_csum(src: bytes, dst: bytes, seg: bytes) -> int:
    zeroed = seg[:16] + b"\x00\x00" + seg[18:]
    if len(src) == 4:
        return in4_chksum(6, IP(src=SCAPY_ADDR[src], dst=SCAPY_ADDR[dst]), zeroed)
    return in6_chksum(6, IPv6(src=SCAPY_ADDR[src], dst=SCAPY_ADDR[dst]), zeroed)


@SETTINGS
@given(headers_st, st.binary(max_size=200), st.sampled_from([(V4A, V4B), (V6A, V6B)]))
def test_ours_parsed_by_scapy(hdr: TcpHeader, payload: bytes, addrs: tuple[bytes, bytes]) -> None:
    seg = build_tcp(hdr, payload, *addrs)
    t = _scapy_packet(*addrs, seg)[TCP]
    assert (t.sport, t.dport, t.seq, t.ack, int(t.flags), t.window, t.urgptr) == \
        (hdr.src_port, hdr.dst_port, hdr.seq, hdr.ack, hdr.flags, hdr.window, hdr.urgent)
    assert bytes(t.payload) == payload
    assert t.chksum == _scapy_csum(*addrs, seg)
    opts = fits(hdr.options)
    sopts = dict((k, v) for k, v in t.options if k not in ("NOP", "EOL"))
    assert sopts.get("MSS") == opts.mss
    assert sopts.get("WScale") == opts.wscale
    assert ("SAckOK" in sopts) == opts.sack_permitted
    assert sopts.get("Timestamp") == opts.timestamp
    blocks = sopts.get("SAck", ())
    assert tuple(zip(blocks[::2], blocks[1::2])) == opts.sack_blocks


def test_syn_layout_matches_scapy_linux_style() -> None:
    # The same option list scapy emits for a Linux-like SYN, byte for byte.
    ours = encode_options(TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(1, 2)))
    theirs = bytes(TCP(options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 2)), ("NOP", None), ("WScale", 7)]))[20:]
    assert ours == theirs


@pytest.mark.parametrize("src, dst", [(V4A, V4B), (V6A, V6B)])
@pytest.mark.parametrize("options, want", [
    ([], TcpOptions()),
    ([("MSS", 1460), ("SAckOK", b""), ("Timestamp", (123, 0)), ("NOP", None), ("WScale", 7)],
     TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(123, 0))),
    ([("NOP", None), ("NOP", None), ("Timestamp", (2**32 - 1, 5))], TcpOptions(timestamp=(2**32 - 1, 5))),
    ([("NOP", None), ("NOP", None), ("Timestamp", (1, 2)), ("NOP", None), ("NOP", None), ("SAck", (100, 200, 300, 400))],
     TcpOptions(timestamp=(1, 2), sack_blocks=((100, 200), (300, 400)))),
    ([("SAck", (1, 2, 3, 4, 5, 6, 7, 8))], TcpOptions(sack_blocks=((1, 2), (3, 4), (5, 6), (7, 8)))),
    ([(253, b"\x12\x34"), ("MSS", 1200), (30, b""), ("WScale", 14)], TcpOptions(mss=1200, wscale=14)),
    ([("EOL", None), ("MSS", 1200)], TcpOptions()),
])
def test_scapy_built_parsed_by_ours(src: bytes, dst: bytes, options: list, want: TcpOptions) -> None:
    l3 = IP(src=SCAPY_ADDR[src], dst=SCAPY_ADDR[dst]) if len(src) == 4 else IPv6(src=SCAPY_ADDR[src], dst=SCAPY_ADDR[dst])
    pkt = l3 / TCP(sport=5555, dport=80, seq=2**32 - 3, ack=77, flags="SA", window=29200, urgptr=9, options=options) / b"payload!"
    seg = bytes(pkt[TCP])
    hdr, payload = parse_tcp(seg)
    assert (hdr.src_port, hdr.dst_port, hdr.seq, hdr.ack, hdr.flags, hdr.window, hdr.urgent) == \
        (5555, 80, 2**32 - 3, 77, SYN | ACK, 29200, 9)
    assert hdr.options == want
    assert bytes(payload) == b"payload!"
    assert verify_tcp_checksum(seg, src, dst)
    assert hdr.checksum == pkt.__class__(bytes(pkt))[TCP].chksum
