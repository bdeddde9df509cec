"""The classic BPF receive filter, checked with the in-repo interpreter (no root needed)."""
from __future__ import annotations

import ipaddress
import struct

import pytest

from aiotcpstack.link.bpf import (
    ACCEPT_ALL,
    PACKET_BROADCAST,
    PACKET_HOST,
    PACKET_MULTICAST,
    PACKET_OTHERHOST,
    PACKET_OUTGOING,
    Program,
    build_filter,
    pack_program,
    run_filter,
)

OUR = bytes.fromhex("02aabbccddee")
PEER = bytes.fromhex("02112233445f")
V4 = ipaddress.ip_address("198.18.5.1").packed
V4_OTHER = ipaddress.ip_address("198.18.5.9").packed
V6 = ipaddress.ip_address("2001:2:0:5::1").packed
V6_OTHER = ipaddress.ip_address("2001:2:0:5::9").packed


def ipv4(dst: bytes, proto: int = 6, dport: int = 80, ihl: int = 5, frag: int = 0, eth_dst: bytes = OUR) -> bytes:
    opts = b"\x01" * ((ihl - 5) * 4)
    l4 = struct.pack("!HH", 12345, dport) + bytes(16)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(opts) + len(l4), 1, frag, 64, proto, 0, bytes([198, 18, 5, 2]), dst)
    return eth_dst + PEER + b"\x08\x00" + hdr + opts + l4


def ipv6(dst: bytes, nh: int = 6, dport: int = 80, eth_dst: bytes = OUR) -> bytes:
    l4 = struct.pack("!HH", 12345, dport) + bytes(16)
    hdr = struct.pack("!IHBB16s16s", 0x60000000, len(l4), nh, 64, V6_OTHER, dst)
    return eth_dst + PEER + b"\x86\xdd" + hdr + l4


def arp(eth_dst: bytes = b"\xff" * 6) -> bytes:
    return eth_dst + PEER + b"\x08\x06" + bytes(28)


def ok(prog, frame: bytes, pkttype: int = PACKET_HOST) -> bool:
    r = run_filter(prog, frame, pkttype)
    assert r in (0, ACCEPT_ALL)
    return r == ACCEPT_ALL


def test_default_filter_ethertypes_and_pkttypes() -> None:
    prog = build_filter(mac=OUR)
    assert ok(prog, ipv4(V4)) and ok(prog, ipv6(V6)) and ok(prog, arp(), PACKET_BROADCAST)
    assert not ok(prog, OUR + PEER + b"\x88\xb5" + bytes(40))  # other ethertype
    assert not ok(prog, ipv4(V4), PACKET_OUTGOING)
    assert not ok(prog, ipv4(V4), PACKET_OTHERHOST)
    # MAC check (independent of pkttype): unicast to someone else is dropped, group addresses pass
    assert not ok(prog, ipv4(V4, eth_dst=bytes.fromhex("02aabbccddef")))
    assert ok(prog, ipv6(V6, eth_dst=bytes.fromhex("333300000001")), PACKET_MULTICAST)
    assert not ok(prog, b"\x00" * 5)  # short frame: out-of-bounds load drops


def test_address_filter() -> None:
    prog = build_filter(mac=OUR, ipv4=[V4, "198.18.5.3"], ipv6=["2001:2:0:5::1"])
    assert ok(prog, ipv4(V4)) and ok(prog, ipv4(ipaddress.ip_address("198.18.5.3").packed))
    assert not ok(prog, ipv4(V4_OTHER))
    assert ok(prog, ipv6(V6)) and not ok(prog, ipv6(V6_OTHER))
    # NDP needs multicast destinations (solicited-node)
    assert ok(prog, ipv6(ipaddress.ip_address("ff02::1:ff00:1").packed, nh=58, eth_dst=bytes.fromhex("3333ff000001")), PACKET_MULTICAST)
    assert ok(prog, arp(), PACKET_BROADCAST)
    # empty list rejects the family
    prog = build_filter(ipv4=[V4], ipv6=[])
    assert ok(prog, ipv4(V4)) and not ok(prog, ipv6(V6))


def test_port_and_protocol_filter() -> None:
    prog = build_filter(ipv4=[V4], ipv6=[V6], tcp_ports=[80, 443])
    assert ok(prog, ipv4(V4, dport=80)) and ok(prog, ipv4(V4, dport=443))
    assert not ok(prog, ipv4(V4, dport=22))
    assert ok(prog, ipv4(V4, dport=80, ihl=7))  # IPv4 options: X = 4*IHL
    assert not ok(prog, ipv4(V4, dport=22, ihl=7))
    assert ok(prog, ipv4(V4, dport=22, frag=100))  # non-first fragment has no TCP header
    assert ok(prog, ipv6(V6, dport=443)) and not ok(prog, ipv6(V6, dport=22))
    assert ok(prog, ipv4(V4, proto=1))  # no protocol restriction: ICMP passes
    prog = build_filter(ipv4=[V4], ipv6=[V6], tcp_ports=[80], ip_protocols=[6, 1, 58])
    assert ok(prog, ipv4(V4, proto=1)) and not ok(prog, ipv4(V4, proto=17))
    assert ok(prog, ipv6(V6, nh=58)) and not ok(prog, ipv6(V6, nh=17))
    assert ok(prog, ipv6(V6, nh=44))  # extension header: the stack decides
    assert not ok(prog, ipv4(V4, dport=81))


def test_assembler_errors_and_packing() -> None:
    p = Program().jeq(1, "nowhere").ret(0)
    with pytest.raises(ValueError):
        p.assemble()
    far = Program().ld_abs(0x08, 12).jeq(1, "end")
    for _ in range(300):
        far.ret(0)
    far.label("end").ret(1)
    with pytest.raises(ValueError, match="too far"):
        far.assemble()
    prog = build_filter()
    raw = pack_program(prog)
    assert len(raw) == 8 * len(prog)
