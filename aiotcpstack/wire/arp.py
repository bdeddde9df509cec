"""ARP for IPv4 over Ethernet (RFC 826).

Only hardware type Ethernet (1) with protocol type IPv4 (0x0800), hlen 6, plen 4 is accepted:
anything else is not for this stack, and is reported as ``ParseError`` so the receive path has
exactly one "drop and count" branch.
"""
from __future__ import annotations

import struct
from typing import NamedTuple, Union

from .errors import ParseError

Buffer = Union[bytes, bytearray, memoryview]

ARP_REQUEST = 1
ARP_REPLY = 2
ARP_HRD_ETHER = 1
ARP_PRO_IP = 0x0800
ARP_LEN = 28

# RFC 826 "Packet format": ar$hrd, ar$pro, ar$hln, ar$pln, ar$op, ar$sha, ar$spa, ar$tha, ar$tpa
_ARP = struct.Struct("!HHBBH6s4s6s4s")


class ArpPacket(NamedTuple):
    """An Ethernet/IPv4 ARP packet: sender/target hardware (6 bytes) and protocol (4 bytes) addresses."""

    op: int
    sha: bytes
    spa: bytes
    tha: bytes
    tpa: bytes


def parse_arp(buf: Buffer) -> ArpPacket:
    """Parse the ARP payload of an Ethernet frame (trailing padding is ignored)."""
    if len(buf) < ARP_LEN:
        raise ParseError(f"ARP packet too short ({len(buf)} < {ARP_LEN} bytes)")
    hrd, pro, hln, pln, op, sha, spa, tha, tpa = _ARP.unpack_from(buf)
    if hrd != ARP_HRD_ETHER or pro != ARP_PRO_IP or hln != 6 or pln != 4:
        raise ParseError(f"ARP for hrd={hrd} pro={pro:#06x} hln={hln} pln={pln} is not Ethernet/IPv4")
    return ArpPacket(op, sha, spa, tha, tpa)


def build_arp(pkt: ArpPacket) -> bytes:
    """The 28-byte ARP packet (put it in an Ethernet frame with ethertype ``ETH_P_ARP``)."""
    if len(pkt.sha) != 6 or len(pkt.tha) != 6 or len(pkt.spa) != 4 or len(pkt.tpa) != 4:
        raise ValueError("ARP needs 6-byte hardware and 4-byte protocol addresses")
    return _ARP.pack(ARP_HRD_ETHER, ARP_PRO_IP, 6, 4, pkt.op, pkt.sha, pkt.spa, pkt.tha, pkt.tpa)


def arp_request(sha: bytes, spa: bytes, tpa: bytes) -> ArpPacket:
    """Who-has ``tpa``? (target hardware address zero, RFC 826 / RFC 5227 2.1.1)."""
    return ArpPacket(ARP_REQUEST, sha, spa, b"\x00" * 6, tpa)


def arp_reply_to(request: ArpPacket, my_mac: bytes) -> ArpPacket:
    """The reply to ``request``: RFC 826 swaps sender and target and fills in our hardware address."""
    return ArpPacket(ARP_REPLY, my_mac, request.tpa, request.sha, request.spa)
