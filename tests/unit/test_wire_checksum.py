"""Internet checksum (RFC 1071) and pseudo-header sums: the fast mod-0xffff implementation is
checked against a naive word-by-word reference, RFC 1071's worked example, and scapy."""
from __future__ import annotations

import os
import struct

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aiotcpstack.wire.checksum import internet_checksum, ones_sum, pseudo_header_sum

SETTINGS = settings(max_examples=400, deadline=None, database=None)


def naive_ones_sum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 section 4.1 in Python: add 16-bit big-endian words, fold carries."""
    data = bytes(data)
    if len(data) % 2:
        data += b"\x00"
    s = initial
    for (w,) in struct.iter_unpack("!H", data):
        s += w
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
    return s


def naive_checksum(data: bytes, initial: int = 0) -> int:
    return ~naive_ones_sum(data, initial) & 0xFFFF


EDGE_CASES = [
    b"", b"\x00", b"\x00\x00", b"\x00" * 101, b"\xff", b"\xff\xff", b"\xff\xff" * 50, b"\xff" * 101,
    b"\x00\x01", b"\x01", b"\xfe\xff\x00\x01", b"\xff\xfe\x00\x01", b"\x80\x00\x80\x00",
    b"\x00\x01\xf2\x03\xf4\xf5\xf6\xf7",
]


@pytest.mark.parametrize("data", EDGE_CASES)
@pytest.mark.parametrize("initial", [0, 1, 0xFFFE, 0xFFFF])
def test_edge_cases_match_reference(data: bytes, initial: int) -> None:
    assert ones_sum(data, initial) == naive_ones_sum(data, initial)
    assert internet_checksum(data, initial) == naive_checksum(data, initial)


def test_negative_zero() -> None:
    # Non-zero data that sums to a multiple of 0xffff must fold to 0xffff, never 0.
    assert ones_sum(b"\xff\xff") == 0xFFFF
    assert ones_sum(b"\x80\x00\x7f\xff") == 0xFFFF
    assert internet_checksum(b"\x80\x00\x7f\xff") == 0
    # Only all-zero input (and a zero initial value) sums to 0.
    assert ones_sum(b"\x00" * 64) == 0
    assert internet_checksum(b"") == 0xFFFF
    assert ones_sum(b"", 0xFFFF) == 0xFFFF


def test_rfc1071_example() -> None:
    # RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
    assert ones_sum(bytes.fromhex("0001f203f4f5f6f7")) == 0xDDF2
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


@SETTINGS
@given(st.binary(max_size=3000), st.integers(0, 0xFFFF))
def test_matches_naive_reference(data: bytes, initial: int) -> None:
    assert ones_sum(data, initial) == naive_ones_sum(data, initial)
    assert internet_checksum(data, initial) == naive_checksum(data, initial)


@SETTINGS
@given(st.lists(st.sampled_from([0x00, 0xFF, 0x01, 0xFE, 0x80, 0x7F]), max_size=64).map(bytes), st.integers(0, 0xFFFF))
def test_matches_naive_on_adversarial_bytes(data: bytes, initial: int) -> None:
    # Runs of 0x00/0xff are where the 0 / 0xffff ambiguity of mod arithmetic bites.
    assert ones_sum(data, initial) == naive_ones_sum(data, initial)
    assert internet_checksum(data, initial) == naive_checksum(data, initial)


@SETTINGS
@given(st.binary(max_size=600).map(lambda b: b[: len(b) & ~1]), st.binary(max_size=600))
def test_chaining_over_even_pieces(a: bytes, b: bytes) -> None:
    assert ones_sum(b, ones_sum(a)) == naive_ones_sum(a + b)


@SETTINGS
@given(st.binary(min_size=2, max_size=400).map(lambda b: b[: len(b) & ~1]), st.integers(0, 1000))
def test_checksum_verifies(data: bytes, pos: int) -> None:
    # Store the checksum in a zeroed 16-bit field: the whole then sums to 0xffff (RFC 1071 "verify").
    pos = (pos % (len(data) // 2)) * 2
    zeroed = data[:pos] + b"\x00\x00" + data[pos + 2:]
    filled = zeroed[:pos] + struct.pack("!H", internet_checksum(zeroed)) + zeroed[pos + 2:]
    assert ones_sum(filled) == 0xFFFF
    assert internet_checksum(filled) == 0


def test_buffer_types() -> None:
    data = os.urandom(1001)
    want = naive_ones_sum(data)
    assert ones_sum(bytearray(data)) == want
    assert ones_sum(memoryview(data)) == want
    assert ones_sum(memoryview(b"xx" + data)[2:]) == want


def test_large_buffer() -> None:
    data = os.urandom(65536)
    assert ones_sum(data) == naive_ones_sum(data)
    assert internet_checksum(data + b"\x01") == naive_checksum(data + b"\x01")


def test_against_scapy() -> None:
    from scapy.utils import checksum as scapy_checksum

    for n in (0, 1, 2, 3, 20, 1499, 1500):
        data = os.urandom(n)
        assert internet_checksum(data) == scapy_checksum(data)


@SETTINGS
@example(b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", 0, 0)   # words sum to 0xffff * k: "negative zero"
@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4), st.integers(0, 255), st.integers(0, 0xFFFF))
def test_pseudo_header_v4(src: bytes, dst: bytes, proto: int, length: int) -> None:
    # RFC 9293 3.1: src, dst, zero, PTCL, TCP length
    ph = src + dst + struct.pack("!BBH", 0, proto, length)
    assert pseudo_header_sum(src, dst, proto, length) == naive_ones_sum(ph)


@SETTINGS
@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16), st.integers(0, 255),
       st.integers(0, 0xFFFFFFFF))
def test_pseudo_header_v6(src: bytes, dst: bytes, proto: int, length: int) -> None:
    # RFC 8200 8.1: src, dst, 32-bit upper-layer length, 3 zero bytes, next header
    ph = src + dst + struct.pack("!I3xB", length, proto)
    assert pseudo_header_sum(src, dst, proto, length) == naive_ones_sum(ph)


def test_pseudo_header_against_scapy() -> None:
    from scapy.layers.inet import IP, in4_chksum
    from scapy.layers.inet6 import IPv6, in6_chksum

    payload = os.urandom(77)
    ip = IP(src="198.18.0.1", dst="198.18.0.2", proto=6)
    want = in4_chksum(6, ip, payload)
    assert internet_checksum(payload, pseudo_header_sum(bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2]), 6, 77)) == want
    ip6 = IPv6(src="2001:2::1", dst="2001:2::2", nh=6)
    want6 = in6_chksum(6, ip6, payload)
    a = bytes.fromhex("20010002" + "00" * 11 + "01")
    b = bytes.fromhex("20010002" + "00" * 11 + "02")
    assert internet_checksum(payload, pseudo_header_sum(a, b, 6, 77)) == want6


def test_pseudo_header_rejects_bad_addresses() -> None:
    with pytest.raises(ValueError):
        pseudo_header_sum(b"\x00" * 4, b"\x00" * 16, 6, 0)
    with pytest.raises(ValueError):
        pseudo_header_sum(b"\x00" * 5, b"\x00" * 5, 6, 0)


# --- the fold before the long division (checksum.FOLD_BITS) and verify_tcp_checksum ----------------
from aiotcpstack.wire.checksum import FOLD2_BITS, FOLD2_MASK, FOLD_BITS, FOLD_MASK, FOLD_MAX  # noqa: E402
from aiotcpstack.wire.tcp import verify_tcp_checksum  # noqa: E402

FOLD_BYTES = FOLD_BITS // 8
# lengths on both sides of where folding starts, odd and even, and the sizes that matter (MTU)
FOLD_LENGTHS = [FOLD_BYTES - 9, FOLD_BYTES - 1, FOLD_BYTES, FOLD_BYTES + 1, FOLD_BYTES + 2,
                FOLD_BYTES + FOLD2_BITS // 8 + 1, 2 * FOLD_BYTES - 1, 2 * FOLD_BYTES, 2 * FOLD_BYTES + 1,
                FOLD_MAX - 1, FOLD_MAX, FOLD_MAX + 1, 1460, 1480, 1481, 3001, 9000]


def test_fold_constant_is_a_multiple_of_16_bits() -> None:
    # hi << k | lo == hi + lo (mod 0xffff) needs 2**k == 1 (mod 0xffff), i.e. k % 16 == 0
    for k, mask in ((FOLD_BITS, FOLD_MASK), (FOLD2_BITS, FOLD2_MASK)):
        assert k % 16 == 0 and mask == (1 << k) - 1
        assert pow(2, k, 0xFFFF) == 1


@pytest.mark.parametrize("n", FOLD_LENGTHS)
@pytest.mark.parametrize("fill", ["random", "ff", "zero", "ff-then-zero"])
def test_folded_sums_match_reference(n: int, fill: str) -> None:
    if fill == "random":
        data = os.urandom(n)
    elif fill == "ff":
        data = b"\xff" * n              # every partial sum a multiple of 0xffff: the 0/0xffff trap
    elif fill == "zero":
        data = bytes(n)
    else:
        data = b"\xff" * (n // 2) + bytes(n - n // 2)
    for initial in (0, 1, 0xFFFF):
        assert ones_sum(data, initial) == naive_ones_sum(data, initial)
        assert internet_checksum(data, initial) == naive_checksum(data, initial)
        assert ones_sum(memoryview(b"x" + data)[1:], initial) == naive_ones_sum(data, initial)


def _pseudo(src: bytes, dst: bytes, n: int) -> bytes:
    if len(src) == 4:
        return src + dst + b"\x00\x06" + struct.pack("!H", n)          # RFC 9293 3.1
    return src + dst + struct.pack("!I", n) + b"\x00\x00\x00\x06"      # RFC 8200 8.1


def _segment(n: int, src: bytes, dst: bytes, fill: bytes | None = None) -> bytearray:
    """A TCP-like segment of n bytes with a correct checksum at offset 16 (naive RFC 1071)."""
    seg = bytearray(fill * n if fill is not None else os.urandom(n))
    seg[16:18] = b"\x00\x00"
    seg[16:18] = struct.pack("!H", naive_checksum(_pseudo(src, dst, n) + bytes(seg)))
    return seg


ADDRS = [(bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])),
         (bytes([255, 255, 255, 255]), bytes([0, 0, 0, 0])),
         (bytes.fromhex("20010002" + "00" * 11 + "01"), bytes.fromhex("20010002" + "00" * 11 + "02"))]


@pytest.mark.parametrize("n", [20, 21, 31] + FOLD_LENGTHS)
@pytest.mark.parametrize("addrs", ADDRS, ids=["v4", "v4-ff-zero", "v6"])
def test_verify_tcp_checksum_against_reference(n: int, addrs: tuple[bytes, bytes]) -> None:
    src, dst = addrs
    for fill in (None, b"\xff", b"\x00"):
        seg = _segment(n, src, dst, fill)
        view = memoryview(bytearray(14 + 20) + seg)[34:]      # as the core passes it: a view
        assert verify_tcp_checksum(view, src, dst)
        assert verify_tcp_checksum(bytes(seg), src, dst)
        # any single bit flipped anywhere must fail (a one-bit change is never 0 mod 0xffff)
        for pos in {0, 17, n // 2, FOLD_BYTES - 1, FOLD_BYTES, n - 1}:
            if pos < n:
                bad = bytearray(seg)
                bad[pos] ^= 0x10
                assert not verify_tcp_checksum(bad, src, dst), pos
        # the wrong pseudo-header fails: a zero word more changes only the length (by 2), a
        # flipped address bit changes the sum by 1 -- neither is ever 0 mod 0xffff
        if n % 2 == 0:
            assert not verify_tcp_checksum(seg + b"\x00\x00", src, dst)
        assert not verify_tcp_checksum(seg, src[:-1] + bytes([src[-1] ^ 1]), dst)


def test_verify_tcp_checksum_negative_zero_field() -> None:
    # RFC 1071: 0x0000 and 0xffff are the same ones'-complement value; a checksum field holding
    # either verifies iff the reference sum says so.  Find segments whose checksum is 0x0000/0xffff.
    src, dst = ADDRS[0]
    found = 0
    for i in range(200_000):
        seg = bytearray(struct.pack("!HHII", 40000, 80, i, 7) + b"\x50\x10\x20\x00" + b"\x00\x00\x00\x00")
        c = naive_checksum(_pseudo(src, dst, len(seg)) + bytes(seg))
        if c not in (0x0000, 0xFFFF):
            continue
        for field in (0x0000, 0xFFFF):
            seg[16:18] = struct.pack("!H", field)
            want = naive_ones_sum(_pseudo(src, dst, len(seg)) + bytes(seg)) == 0xFFFF
            assert verify_tcp_checksum(seg, src, dst) is want
            assert want            # both encodings of zero verify
        found += 1
        if found == 3:
            break
    assert found == 3


def test_verify_tcp_checksum_rejects_bad_addresses() -> None:
    with pytest.raises(ValueError):
        verify_tcp_checksum(bytes(20), bytes(4), bytes(16))
