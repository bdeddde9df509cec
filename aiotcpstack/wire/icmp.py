"""ICMPv4 (RFC 792, RFC 1191, RFC 1812) and ICMPv6 (RFC 4443) including Neighbor Discovery
NS/NA (RFC 4861).

Every message is ``type, code, checksum, rest-of-header (4 bytes), body``.  ``IcmpMessage`` keeps
the 4-byte ``rest`` opaque; the helpers below read and write its per-type meaning (echo
identifier/sequence, next-hop MTU, NA flags).  ICMPv4's checksum covers the message only;
ICMPv6's also covers the IPv6 pseudo-header (RFC 4443 2.3), hence the addresses in its calls.

For errors (dest-unreachable, frag-needed, packet-too-big) the body quotes the packet that caused
them; :func:`parse_quoted_ipv4` / :func:`parse_quoted_ipv6` pull out the addresses, protocol, ports
and TCP sequence number the TCP layer needs to find and validate the connection (RFC 5927).
"""
from __future__ import annotations

import struct
from typing import NamedTuple, Optional, Union

from .checksum import ones_sum, pseudo_header_sum
from .errors import ChecksumError, ParseError

Buffer = Union[bytes, bytearray, memoryview]

IPPROTO_ICMP = 1
IPPROTO_ICMPV6 = 58

# ICMPv4 types and codes (RFC 792, RFC 1191)
ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11
ICMP_PARAMETER_PROBLEM = 12
ICMP_NET_UNREACH = 0
ICMP_HOST_UNREACH = 1
ICMP_PROT_UNREACH = 2
ICMP_PORT_UNREACH = 3
ICMP_FRAG_NEEDED = 4
ICMP_ADMIN_PROHIBITED = 13

# ICMPv6 types and codes (RFC 4443, RFC 4861)
ICMPV6_DEST_UNREACH = 1
ICMPV6_PACKET_TOO_BIG = 2
ICMPV6_TIME_EXCEEDED = 3
ICMPV6_PARAM_PROBLEM = 4
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
ND_ROUTER_SOLICIT = 133
ND_ROUTER_ADVERT = 134
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
ICMPV6_NO_ROUTE = 0
ICMPV6_ADMIN_PROHIBITED = 1
ICMPV6_ADDR_UNREACH = 3
ICMPV6_PORT_UNREACH = 4

# Neighbor Discovery (RFC 4861 4.4, 4.6.1)
ND_OPT_SOURCE_LLADDR = 1
ND_OPT_TARGET_LLADDR = 2
ND_NA_FLAG_ROUTER = 0x80000000
ND_NA_FLAG_SOLICITED = 0x40000000
ND_NA_FLAG_OVERRIDE = 0x20000000
NDP_HOP_LIMIT = 255  # RFC 4861 7.1: sent with, and only accepted with, IPv6 hop limit 255

# RFC 1812 4.3.2.3: quote as much as fits in 576 bytes; RFC 4443 2.4(c): in the IPv6 minimum MTU.
ICMPV4_MAX_QUOTE = 576 - 20 - 8
ICMPV6_MAX_QUOTE = 1280 - 40 - 8

_HDR = struct.Struct("!BBH4s")
_pack_hdr = _HDR.pack
_U16x2 = struct.Struct("!HH")
_U32 = struct.Struct("!I")
_ZERO4 = b"\x00\x00\x00\x00"


class IcmpMessage(NamedTuple):
    """An ICMP(v4 or v6) message: ``rest`` is the 4 bytes after the checksum, ``body`` the rest."""

    type: int
    code: int
    rest: bytes
    body: bytes


class QuotedHeader(NamedTuple):
    """What an ICMP error quotes of the offending packet (sent by us: ``src`` is our address).

    ``src_port``/``dst_port`` are the first 4 transport bytes and ``seq`` the next 4 (the TCP
    sequence number when ``proto`` is TCP; RFC 792 guarantees 64 bits of transport header).
    """

    src: bytes
    dst: bytes
    proto: int
    src_port: int
    dst_port: int
    seq: int


class NdpMessage(NamedTuple):
    """A Neighbor Solicitation or Advertisement (RFC 4861 4.3, 4.4).  The flags are False for NS;
    ``source_lla``/``target_lla`` are the link-layer address options (None when absent)."""

    type: int
    target: bytes
    router: bool
    solicited: bool
    override: bool
    source_lla: Optional[bytes]
    target_lla: Optional[bytes]


# --- generic ------------------------------------------------------------------------------------

def _split(buf: Buffer) -> tuple[memoryview, IcmpMessage]:
    mv = buf if type(buf) is memoryview else memoryview(buf)
    if len(mv) < 8:
        raise ParseError(f"ICMP message too short ({len(mv)} < 8 bytes)")
    return mv, IcmpMessage(mv[0], mv[1], bytes(mv[4:8]), bytes(mv[8:]))


def parse_icmpv4(buf: Buffer, verify_checksum: bool = True) -> IcmpMessage:
    """Parse an ICMPv4 message (the IPv4 payload).  ``ChecksumError`` if the checksum (over the
    whole message, RFC 792) is wrong and ``verify_checksum``; ``ParseError`` if < 8 bytes."""
    mv, msg = _split(buf)
    if verify_checksum and ones_sum(mv) != 0xFFFF:
        raise ChecksumError("ICMPv4 checksum mismatch")
    return msg


def build_icmpv4(type: int, code: int, rest: bytes = _ZERO4, body: Buffer = b"") -> bytes:
    """An ICMPv4 message with its checksum (RFC 792: ones' complement of the message sum)."""
    if len(rest) != 4:
        raise ValueError("ICMP rest-of-header must be 4 bytes")
    head = _pack_hdr(type, code, 0, rest)
    csum = 0xFFFF - ones_sum(body, ones_sum(head))
    return _pack_hdr(type, code, csum, rest) + body


def parse_icmpv6(buf: Buffer, src: bytes, dst: bytes, verify_checksum: bool = True) -> IcmpMessage:
    """Parse an ICMPv6 message (the upper-layer payload of an IPv6 packet from ``src`` to ``dst``).
    The checksum includes the IPv6 pseudo-header (RFC 4443 2.3)."""
    mv, msg = _split(buf)
    if verify_checksum and ones_sum(mv, pseudo_header_sum(src, dst, IPPROTO_ICMPV6, len(mv))) != 0xFFFF:
        raise ChecksumError("ICMPv6 checksum mismatch")
    return msg


def build_icmpv6(src: bytes, dst: bytes, type: int, code: int, rest: bytes = _ZERO4, body: Buffer = b"") -> bytes:
    """An ICMPv6 message with its checksum (pseudo-header from ``src``/``dst``, RFC 4443 2.3)."""
    if len(rest) != 4:
        raise ValueError("ICMPv6 rest-of-header must be 4 bytes")
    head = _pack_hdr(type, code, 0, rest)
    psum = pseudo_header_sum(src, dst, IPPROTO_ICMPV6, 8 + len(body))
    csum = 0xFFFF - ones_sum(body, ones_sum(head, psum))
    return _pack_hdr(type, code, csum, rest) + body


# --- echo (RFC 792 "Echo or Echo Reply", RFC 4443 4.1/4.2) -------------------------------------

def echo_rest(ident: int, seq: int) -> bytes:
    """The 4-byte rest-of-header of an echo request/reply: identifier, sequence number."""
    return _U16x2.pack(ident & 0xFFFF, seq & 0xFFFF)


def echo_fields(msg: IcmpMessage) -> tuple[int, int]:
    """``(identifier, sequence)`` of an echo request/reply."""
    return _U16x2.unpack(msg.rest)


def build_icmpv4_echo(ident: int, seq: int, data: Buffer = b"", reply: bool = False) -> bytes:
    """An ICMPv4 echo request (or reply)."""
    return build_icmpv4(ICMP_ECHO_REPLY if reply else ICMP_ECHO_REQUEST, 0, echo_rest(ident, seq), data)


def build_icmpv6_echo(src: bytes, dst: bytes, ident: int, seq: int, data: Buffer = b"", reply: bool = False) -> bytes:
    """An ICMPv6 echo request (or reply)."""
    return build_icmpv6(src, dst, ICMPV6_ECHO_REPLY if reply else ICMPV6_ECHO_REQUEST, 0, echo_rest(ident, seq), data)


def icmpv4_echo_reply(request: IcmpMessage) -> bytes:
    """The reply to an echo request: same identifier, sequence and data (RFC 792)."""
    return build_icmpv4(ICMP_ECHO_REPLY, 0, request.rest, request.body)


def icmpv6_echo_reply(request: IcmpMessage, src: bytes, dst: bytes) -> bytes:
    """The reply to an ICMPv6 echo request, from ``src`` (us) to ``dst`` (RFC 4443 4.2)."""
    return build_icmpv6(src, dst, ICMPV6_ECHO_REPLY, 0, request.rest, request.body)


# --- errors: destination unreachable, fragmentation needed, packet too big ---------------------

def build_icmpv4_dest_unreach(code: int, original: Buffer, mtu: int = 0) -> bytes:
    """Destination unreachable quoting ``original`` (an IPv4 packet), cut to fit 576 bytes
    (RFC 1812 4.3.2.3).  ``mtu`` fills the next-hop MTU field for code 4 (RFC 1191 4)."""
    return build_icmpv4(ICMP_DEST_UNREACH, code, _U16x2.pack(0, mtu & 0xFFFF), bytes(original[:ICMPV4_MAX_QUOTE]))


def build_icmpv4_frag_needed(original: Buffer, mtu: int) -> bytes:
    """"Fragmentation needed and DF set" with the next-hop MTU (RFC 1191 4)."""
    return build_icmpv4_dest_unreach(ICMP_FRAG_NEEDED, original, mtu)


def icmpv4_mtu(msg: IcmpMessage) -> Optional[int]:
    """The next-hop MTU of a frag-needed message (0 from pre-RFC 1191 routers), else None."""
    if msg.type == ICMP_DEST_UNREACH and msg.code == ICMP_FRAG_NEEDED:
        return _U16x2.unpack(msg.rest)[1]
    return None


def build_icmpv6_dest_unreach(src: bytes, dst: bytes, code: int, original: Buffer) -> bytes:
    """ICMPv6 destination unreachable quoting ``original`` within the minimum MTU (RFC 4443 3.1)."""
    return build_icmpv6(src, dst, ICMPV6_DEST_UNREACH, code, _ZERO4, bytes(original[:ICMPV6_MAX_QUOTE]))


def build_icmpv6_packet_too_big(src: bytes, dst: bytes, mtu: int, original: Buffer) -> bytes:
    """ICMPv6 packet too big with the 32-bit MTU (RFC 4443 3.2)."""
    return build_icmpv6(src, dst, ICMPV6_PACKET_TOO_BIG, 0, _U32.pack(mtu & 0xFFFFFFFF), bytes(original[:ICMPV6_MAX_QUOTE]))


def icmpv6_mtu(msg: IcmpMessage) -> Optional[int]:
    """The MTU of a packet-too-big message, else None."""
    if msg.type == ICMPV6_PACKET_TOO_BIG:
        return _U32.unpack(msg.rest)[0]
    return None


def parse_quoted_ipv4(body: Buffer) -> QuotedHeader:
    """The quoted IPv4 header + first 8 transport bytes from an ICMPv4 error body.

    Lenient where the quote is necessarily partial (the quoted total length and checksum describe
    the original packet, not the quote) and strict where it matters: version 4, IHL >= 5, IHL
    plus 8 bytes present, and not a non-first fragment (it has no transport header).
    """
    mv = body if type(body) is memoryview else memoryview(body)
    if len(mv) < 20:
        raise ParseError("quoted IPv4 header truncated")
    if mv[0] >> 4 != 4:
        raise ParseError("quoted packet is not IPv4")
    hlen = (mv[0] & 0x0F) << 2
    if hlen < 20:
        raise ParseError("quoted IPv4 IHL < 5")
    if len(mv) < hlen + 8:
        raise ParseError("quoted IPv4 packet has fewer than 8 transport bytes")
    if ((mv[6] << 8) | mv[7]) & 0x1FFF:
        raise ParseError("quoted IPv4 packet is a non-first fragment")
    sport, dport = _U16x2.unpack_from(mv, hlen)
    return QuotedHeader(bytes(mv[12:16]), bytes(mv[16:20]), mv[9], sport, dport, _U32.unpack_from(mv, hlen + 4)[0])


def parse_quoted_ipv6(body: Buffer) -> QuotedHeader:
    """The quoted IPv6 header (extension headers skipped as in RFC 8200 4) + first 8 transport
    bytes from an ICMPv6 error body.  The quoted payload length is not checked (the quote is cut)."""
    mv = body if type(body) is memoryview else memoryview(body)
    n = len(mv)
    if n < 40:
        raise ParseError("quoted IPv6 header truncated")
    if mv[0] >> 4 != 6:
        raise ParseError("quoted packet is not IPv6")
    nh = mv[6]
    off = 40
    while nh in (0, 43, 44, 60):  # hop-by-hop, routing, fragment, destination options
        if off + 8 > n:
            raise ParseError("quoted IPv6 extension header truncated")
        if nh == 44:
            if ((mv[off + 2] << 8) | mv[off + 3]) & 0xFFF8:
                raise ParseError("quoted IPv6 packet is a non-first fragment")
            step = 8
        else:
            step = (mv[off + 1] + 1) << 3
        nh = mv[off]
        off += step
    if off + 8 > n:
        raise ParseError("quoted IPv6 packet has fewer than 8 transport bytes")
    sport, dport = _U16x2.unpack_from(mv, off)
    return QuotedHeader(bytes(mv[8:24]), bytes(mv[24:40]), nh, sport, dport, _U32.unpack_from(mv, off + 4)[0])


# --- Neighbor Discovery: NS / NA (RFC 4861 4.3, 4.4, 4.6.1) -------------------------------------

def solicited_node_multicast(addr: bytes) -> bytes:
    """ff02::1:ffXX:XXXX for ``addr`` (RFC 4291 2.7.1): where NS for it are sent."""
    if len(addr) != 16:
        raise ValueError("IPv6 address must be 16 bytes")
    return b"\xff\x02" + b"\x00" * 9 + b"\x01\xff" + bytes(addr[13:16])


def _lla_option(kind: int, lla: bytes) -> bytes:
    # RFC 4861 4.6: length in units of 8 octets including type and length; padded.
    raw = bytes((kind, 0)) + bytes(lla)
    units = (len(raw) + 7) >> 3
    return bytes((kind, units)) + bytes(lla) + b"\x00" * (units * 8 - len(raw))


def build_ndp_ns(src: bytes, dst: bytes, target: bytes, source_lla: Optional[bytes] = None) -> bytes:
    """A Neighbor Solicitation for ``target`` (RFC 4861 4.3).  ``dst`` is normally the target's
    solicited-node multicast address; for DAD ``src`` is ``::`` and ``source_lla`` must be None
    (RFC 4861 7.2.2 / RFC 4862 5.4.2).  Send with IPv6 hop limit 255."""
    if len(target) != 16:
        raise ValueError("NS target must be a 16-byte IPv6 address")
    body = bytes(target) + (_lla_option(ND_OPT_SOURCE_LLADDR, source_lla) if source_lla else b"")
    return build_icmpv6(src, dst, ND_NEIGHBOR_SOLICIT, 0, _ZERO4, body)


def build_ndp_na(src: bytes, dst: bytes, target: bytes, target_lla: Optional[bytes] = None, router: bool = False,
                 solicited: bool = True, override: bool = True) -> bytes:
    """A Neighbor Advertisement for ``target`` (RFC 4861 4.4).  Answering a solicitation: ``dst``
    is the solicitor (S=1); unsolicited: ``ff02::1`` with ``solicited=False``.  Hop limit 255."""
    if len(target) != 16:
        raise ValueError("NA target must be a 16-byte IPv6 address")
    flags = (ND_NA_FLAG_ROUTER if router else 0) | (ND_NA_FLAG_SOLICITED if solicited else 0) | \
        (ND_NA_FLAG_OVERRIDE if override else 0)
    body = bytes(target) + (_lla_option(ND_OPT_TARGET_LLADDR, target_lla) if target_lla else b"")
    return build_icmpv6(src, dst, ND_NEIGHBOR_ADVERT, 0, _U32.pack(flags), body)


def parse_ndp(msg: IcmpMessage) -> NdpMessage:
    """Decode an NS or NA (``ParseError`` for any other type or an invalid one).

    Checks here are the ones that need only the message (RFC 4861 7.1.1/7.1.2): code 0, at least
    24 bytes, target not multicast, every option length > 0 and inside the message.  The caller
    checks the IP-level rules: hop limit 255, no source link-layer option from ``::``, S=0 when
    the NA went to a multicast address.  Link-layer options of an unexpected size are ignored.
    """
    if msg.type != ND_NEIGHBOR_SOLICIT and msg.type != ND_NEIGHBOR_ADVERT:
        raise ParseError(f"ICMPv6 type {msg.type} is not NS/NA")
    if msg.code != 0:
        raise ParseError(f"NDP message with code {msg.code}")
    body = msg.body
    if len(body) < 16:
        raise ParseError("NDP message shorter than 24 bytes")
    target = bytes(body[:16])
    if target[0] == 0xFF:
        raise ParseError("NDP target is a multicast address")
    source_lla = target_lla = None
    i, n = 16, len(body)
    while i < n:
        if i + 2 > n:
            raise ParseError("NDP option truncated")
        olen = body[i + 1] << 3
        if olen == 0:
            raise ParseError("NDP option with length 0")  # RFC 4861 4.6: MUST silently discard
        if i + olen > n:
            raise ParseError("NDP option runs past the message")
        kind = body[i]
        if olen == 8 and kind == ND_OPT_SOURCE_LLADDR:
            source_lla = bytes(body[i + 2:i + 8])
        elif olen == 8 and kind == ND_OPT_TARGET_LLADDR:
            target_lla = bytes(body[i + 2:i + 8])
        i += olen
    if msg.type == ND_NEIGHBOR_ADVERT:
        flags = _U32.unpack(msg.rest)[0]
        return NdpMessage(msg.type, target, bool(flags & ND_NA_FLAG_ROUTER), bool(flags & ND_NA_FLAG_SOLICITED),
                          bool(flags & ND_NA_FLAG_OVERRIDE), source_lla, target_lla)
    return NdpMessage(msg.type, target, False, False, False, source_lla, target_lla)
