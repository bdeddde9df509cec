"""IPv6 header parse/emit (RFC 8200 sections 3 and 4).

The parser walks the extension-header chain (RFC 8200 4.1) so ``next_header`` is the upper-layer
protocol: Hop-by-Hop Options (0), Routing (43) and Destination Options (60) are skipped by their
Hdr Ext Len; a Fragment header (44) sets ``fragment=True`` and ends the walk: the payload starts
right after it (the caller reads the 8 bytes before the payload and reassembles,
``ip/reassembly.py``).  Payload is trimmed to ``payload_length`` (Ethernet padding dropped).
"""
from __future__ import annotations

import struct
from typing import NamedTuple, Union

from .errors import ParseError

Buffer = Union[bytes, bytearray, memoryview]

IPPROTO_HOPOPTS = 0
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60

IPV6_HLEN = 40

# version/traffic class/flow label (32 bits), payload length, next header, hop limit, src, dst
_HDR = struct.Struct("!IHBB16s16s")
_unpack_hdr = _HDR.unpack_from
_pack_hdr = _HDR.pack
_tuple_new = tuple.__new__


class IPv6Header(NamedTuple):
    """A parsed IPv6 header.  ``next_header`` is the upper-layer protocol after any skipped
    extension headers; ``payload_length`` is the raw field (it includes extension headers)."""

    src: bytes
    dst: bytes
    next_header: int
    hop_limit: int
    payload_length: int
    traffic_class: int
    flow_label: int
    fragment: bool = False


def parse_ipv6(buf: Buffer) -> tuple[IPv6Header, memoryview]:
    """Parse an IPv6 packet; return the header and the upper-layer payload.

    Raises ``ParseError`` for: fewer than 40 bytes, version != 6, payload length past the end
    of the buffer (truncated; this includes jumbograms, RFC 2675, which are not supported),
    extension headers running past the payload, or a Hop-by-Hop header anywhere but first
    (RFC 8200 4.1).  Each extension header is at least 8 bytes, so the walk always ends.
    """
    mv = buf if type(buf) is memoryview else memoryview(buf)
    n = len(mv)
    if n < IPV6_HLEN:
        raise ParseError(f"IPv6 packet too short ({n} < 40 bytes)")
    vtf, plen, nh, hlim, src, dst = _unpack_hdr(mv)
    if vtf >> 28 != 6:
        raise ParseError(f"IP version {vtf >> 28} in an IPv6 packet")
    end = IPV6_HLEN + plen
    if end > n:
        raise ParseError(f"IPv6 packet truncated (payload length {plen}, have {n - IPV6_HLEN} bytes)")
    off = IPV6_HLEN
    fragment = False
    if nh == IPPROTO_HOPOPTS or nh == IPPROTO_ROUTING or nh == IPPROTO_DSTOPTS or nh == IPPROTO_FRAGMENT:
        first = True
        while True:
            if nh == IPPROTO_HOPOPTS or nh == IPPROTO_ROUTING or nh == IPPROTO_DSTOPTS:
                if nh == IPPROTO_HOPOPTS and not first:
                    raise ParseError("IPv6 Hop-by-Hop header not directly after the IPv6 header")
                if off + 8 > end:
                    raise ParseError("IPv6 extension header truncated")
                nxt = mv[off]
                off += (mv[off + 1] + 1) << 3  # Hdr Ext Len: 8-octet units, not counting the first 8
            elif nh == IPPROTO_FRAGMENT:
                if off + 8 > end:
                    raise ParseError("IPv6 fragment header truncated")
                # RFC 8200 4.5: fixed 8 bytes.  Stop here: past a non-first fragment there is no
                # header to walk; the caller walks the rest once the datagram is reassembled.
                fragment = True
                nh = mv[off]
                off += 8
                break
            else:
                break
            if off > end:
                raise ParseError("IPv6 extension header runs past the payload")
            nh = nxt
            first = False
    hdr = _tuple_new(IPv6Header, (src, dst, nh, hlim, plen, (vtf >> 20) & 0xFF, vtf & 0xFFFFF, fragment))
    return hdr, mv[off:end]


def build_ipv6_header(src: bytes, dst: bytes, next_header: int, payload_len: int, hop_limit: int = 64,
                      traffic_class: int = 0, flow_label: int = 0) -> bytes:
    """The fixed 40-byte IPv6 header (RFC 8200 3).  No checksum in IPv6: the upper layer's
    pseudo-header covers the addresses (RFC 8200 8.1)."""
    if len(src) != 16 or len(dst) != 16:
        raise ValueError("IPv6 addresses must be 16 bytes")
    if not 0 <= payload_len <= 0xFFFF:
        raise ValueError(f"IPv6 payload length {payload_len} out of range (no jumbograms)")
    vtf = (6 << 28) | ((traffic_class & 0xFF) << 20) | (flow_label & 0xFFFFF)
    return _pack_hdr(vtf, payload_len, next_header, hop_limit, src, dst)
