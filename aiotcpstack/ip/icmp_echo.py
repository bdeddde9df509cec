"""ICMP echo (ping) answering for a dedicated address (RFC 792; RFC 1122 3.2.2.6: the reply
carries the request's identifier, sequence number and data unchanged)."""
from __future__ import annotations

import struct

from ..wire import icmp as _icmp
from ..wire.checksum import internet_checksum
from ..wire.errors import ParseError
from ..wire.ipv6 import build_ipv6_header

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
_IP4_HDR = struct.Struct("!BBHHHBBH4s4s")
_FRAG6_HDR = struct.Struct("!BBHI")          # next header, reserved, offset/M, identification


def echo_reply_v4(buf, counters: dict[str, int]) -> bytes | None:
    """The ICMPv4 message answering ``buf`` (an ICMP message), or None when none is due."""
    counters["IcmpInMsgs"] += 1
    try:
        msg = _icmp.parse_icmpv4(buf)
    except ParseError:
        counters["IcmpInErrors"] += 1
        return None
    if msg.type == ICMP_ECHO_REQUEST and msg.code == 0:
        counters["IcmpInEchos"] += 1
        counters["IcmpOutMsgs"] += 1
        counters["IcmpOutEchoReps"] += 1
        return _icmp.build_icmpv4(ICMP_ECHO_REPLY, 0, msg.rest, msg.body)
    if msg.type == 3:
        counters["IcmpInDestUnreachs"] += 1
    return None


def echo_reply_v6(buf, src: bytes, dst: bytes, counters: dict[str, int]) -> bytes | None:
    """The ICMPv6 echo reply for ``buf`` sent from ``src`` to ``dst`` (our address), or None."""
    counters["Icmp6InMsgs"] += 1
    try:
        msg = _icmp.parse_icmpv6(buf, src, dst)
    except ParseError:
        counters["Icmp6InErrors"] += 1
        return None
    if msg.type == ICMPV6_ECHO_REQUEST and msg.code == 0:
        counters["Icmp6OutMsgs"] += 1
        return _icmp.build_icmpv6(dst, src, ICMPV6_ECHO_REPLY, 0, msg.rest, msg.body)
    return None


def _pieces(payload: bytes, step: int):
    """``(offset, piece, more)`` for cutting ``payload`` into pieces of ``step`` bytes (a multiple
    of 8: fragment offsets count 8-byte units in both families)."""
    n = len(payload)
    for off in range(0, n, step):
        yield off, payload[off:off + step], off + step < n


def fragment_ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, mtu: int, ident: int, ttl: int,
                  tos: int = 0) -> list[bytes]:
    """``payload`` as IPv4 fragments of at most ``mtu`` bytes (RFC 791 3.2 / 2.3 "Fragmentation"):
    every fragment but the last carries a multiple of 8 bytes and MF; DF is clear; each carries
    ``tos``.  For an echo reply larger than the MTU, as Linux's ``ip_fragment`` sends one
    (``ping -s 3000`` works); TCP never needs it (DF, PMTUD)."""
    out = []
    for off, part, more in _pieces(payload, (mtu - 20) & ~7):
        hdr = bytearray(_IP4_HDR.pack(0x45, tos, 20 + len(part), ident & 0xFFFF, (0x2000 if more else 0) | (off >> 3),
                                      ttl, proto, 0, src, dst))
        hdr[10:12] = internet_checksum(hdr).to_bytes(2, "big")
        out.append(bytes(hdr) + part)
    return out


def fragment_ipv6(src: bytes, dst: bytes, next_header: int, payload: bytes, mtu: int, ident: int,
                  hop_limit: int, traffic_class: int = 0) -> list[bytes]:
    """``payload`` (the fragmentable part) as IPv6 fragments of at most ``mtu`` bytes, each with a
    Fragment header (RFC 8200 4.5: a source may fragment; multiples of 8 but the last)."""
    out = []
    for off, part, more in _pieces(payload, (mtu - 48) & ~7):
        frag = _FRAG6_HDR.pack(next_header, 0, off | (1 if more else 0), ident & 0xFFFFFFFF)
        out.append(build_ipv6_header(src, dst, 44, 8 + len(part), hop_limit, traffic_class) + frag + part)
    return out
