"""Ethernet II framing (IEEE 802.3 / RFC 894 for IPv4, RFC 2464 for IPv6).

Only the 14-byte DIX header: the FCS is stripped by the NIC/kernel before AF_PACKET sees a frame
and added on transmit.  802.1Q tags are not interpreted here: a tagged frame reports ethertype
0x8100 and the caller drops it as an unknown protocol.
"""
from __future__ import annotations

import struct
from typing import Union

from .errors import ParseError

Buffer = Union[bytes, bytearray, memoryview]

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100

ETH_HLEN = 14
ETH_ZLEN = 60  # minimum frame length without FCS; shorter frames are padded by the sender
ETH_ALEN = 6

BROADCAST = b"\xff" * 6

_HDR = struct.Struct("!6s6sH")
_unpack_hdr = _HDR.unpack_from
_pack_hdr = _HDR.pack


def parse_ethernet(buf: Buffer) -> tuple[bytes, bytes, int, memoryview]:
    """Split a frame into ``(dst, src, ethertype, payload)``.

    ``payload`` is a zero-copy memoryview of everything after the header; it may carry
    Ethernet minimum-size padding, which the IP parsers trim by their own length fields.
    Raises ``ParseError`` for frames shorter than 14 bytes.
    """
    mv = buf if type(buf) is memoryview else memoryview(buf)
    if len(mv) < ETH_HLEN:
        raise ParseError(f"ethernet frame too short ({len(mv)} < {ETH_HLEN} bytes)")
    dst, src, ethertype = _unpack_hdr(mv)
    return dst, src, ethertype, mv[ETH_HLEN:]


def build_ethernet(dst: bytes, src: bytes, ethertype: int) -> bytes:
    """The 14-byte Ethernet II header; the caller appends the payload (and the NIC the FCS)."""
    if len(dst) != 6 or len(src) != 6:
        raise ValueError("MAC addresses must be 6 bytes")
    return _pack_hdr(dst, src, ethertype)


def ipv6_multicast_mac(addr: bytes) -> bytes:
    """Ethernet address for an IPv6 multicast destination: 33:33 + the low 32 bits (RFC 2464 7)."""
    if len(addr) != 16:
        raise ValueError("IPv6 address must be 16 bytes")
    return b"\x33\x33" + bytes(addr[12:16])


def ipv4_multicast_mac(addr: bytes) -> bytes:
    """Ethernet address for an IPv4 multicast destination: 01:00:5e + low 23 bits (RFC 1112 6.4)."""
    if len(addr) != 4:
        raise ValueError("IPv4 address must be 4 bytes")
    return b"\x01\x00\x5e" + bytes((addr[1] & 0x7F, addr[2], addr[3]))


def mac_to_str(mac: bytes) -> str:
    """``aa:bb:cc:dd:ee:ff`` (for logs and repr)."""
    return ":".join(f"{b:02x}" for b in mac)


def mac_from_str(text: str) -> bytes:
    """Inverse of :func:`mac_to_str`; raises ``ValueError`` on malformed text."""
    parts = text.split(":")
    if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)
