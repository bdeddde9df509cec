"""Ethernet II header and ARP (RFC 826): round trips and scapy in both directions."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import ARP, Ether

from aiotcpstack.wire.arp import ARP_REPLY, ARP_REQUEST, ArpPacket, arp_reply_to, arp_request, build_arp, parse_arp
from aiotcpstack.wire.errors import ParseError
from aiotcpstack.wire.ethernet import (
    BROADCAST, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, build_ethernet, ipv4_multicast_mac, ipv6_multicast_mac, mac_from_str,
    mac_to_str, parse_ethernet,
)

SETTINGS = settings(max_examples=100, deadline=None, database=None)
macs = st.binary(min_size=6, max_size=6)
ip4s = st.binary(min_size=4, max_size=4)


@SETTINGS
@given(macs, macs, st.integers(0x0600, 0xFFFF), st.binary(max_size=100))  # below 0x600 is 802.3 length
def test_ethernet_round_trip_and_scapy(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> None:
    frame = build_ethernet(dst, src, ethertype) + payload
    d, s, t, p = parse_ethernet(frame)
    assert (d, s, t, bytes(p)) == (dst, src, ethertype, payload)
    assert isinstance(p, memoryview)
    e = Ether(frame)
    assert (mac_from_str(e.dst), mac_from_str(e.src), e.type) == (dst, src, ethertype)


@pytest.mark.parametrize("etype", [ETH_P_IP, ETH_P_ARP, ETH_P_IPV6])
def test_scapy_built_ethernet(etype: int) -> None:
    frame = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:01", type=etype) / (b"x" * 3))
    assert parse_ethernet(frame)[:3] == (BROADCAST, bytes.fromhex("020000000001"), etype)


def test_ethernet_errors() -> None:
    for n in range(14):
        with pytest.raises(ParseError):
            parse_ethernet(b"\x00" * n)
    assert bytes(parse_ethernet(b"\x00" * 14)[3]) == b""
    with pytest.raises(ValueError):
        build_ethernet(b"\x00" * 5, b"\x00" * 6, ETH_P_IP)


def test_mac_helpers() -> None:
    assert mac_to_str(bytes.fromhex("0a1b2c3d4e5f")) == "0a:1b:2c:3d:4e:5f"
    assert mac_from_str("0a:1b:2c:3d:4e:5f") == bytes.fromhex("0a1b2c3d4e5f")
    with pytest.raises(ValueError):
        mac_from_str("0a:1b:2c")
    # RFC 2464 7 and RFC 1112 6.4 mappings
    assert ipv6_multicast_mac(bytes.fromhex("ff0200000000000000000001ff123456")) == bytes.fromhex("3333ff123456")
    assert ipv4_multicast_mac(bytes([224, 129, 2, 3])) == bytes.fromhex("01005e010203")


# --- ARP ----------------------------------------------------------------------------------------

@SETTINGS
@given(st.sampled_from([ARP_REQUEST, ARP_REPLY]), macs, ip4s, macs, ip4s)
def test_arp_round_trip_and_scapy(op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> None:
    pkt = ArpPacket(op, sha, spa, tha, tpa)
    raw = build_arp(pkt)
    assert len(raw) == 28
    assert parse_arp(raw) == pkt
    a = ARP(raw)
    assert (a.hwtype, a.ptype, a.hwlen, a.plen, a.op) == (1, 0x0800, 6, 4, op)
    assert (mac_from_str(a.hwsrc), a.psrc, mac_from_str(a.hwdst), a.pdst) == \
        (sha, ".".join(map(str, spa)), tha, ".".join(map(str, tpa)))


def test_scapy_built_arp_with_padding() -> None:
    frame = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:01") /
                  ARP(op="who-has", hwsrc="02:00:00:00:00:01", psrc="198.18.0.1", pdst="198.18.0.2") / (b"\x00" * 18))
    _, _, etype, payload = parse_ethernet(frame)
    assert etype == ETH_P_ARP and len(payload) == 46
    pkt = parse_arp(payload)
    assert pkt == ArpPacket(ARP_REQUEST, bytes.fromhex("020000000001"), bytes([198, 18, 0, 1]), b"\x00" * 6,
                            bytes([198, 18, 0, 2]))
    reply = arp_reply_to(pkt, bytes.fromhex("020000000002"))
    a = ARP(build_arp(reply))
    assert (a.op, a.hwsrc, a.psrc, a.hwdst, a.pdst) == (2, "02:00:00:00:00:02", "198.18.0.2", "02:00:00:00:00:01", "198.18.0.1")
    assert arp_request(pkt.sha, pkt.spa, pkt.tpa) == pkt


@pytest.mark.parametrize("raw", [
    b"",
    b"\x00" * 27,
    bytes(ARP(hwtype=6))[:28],                 # not Ethernet
    bytes(ARP(ptype=0x86DD, plen=4))[:28],     # not IPv4
    bytes.fromhex("0001080006050001") + b"\x00" * 20,  # hlen 6, plen 5
])
def test_arp_errors(raw: bytes) -> None:
    with pytest.raises(ParseError):
        parse_arp(raw)


def test_build_arp_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        build_arp(ArpPacket(1, b"\x00" * 6, b"\x00" * 16, b"\x00" * 6, b"\x00" * 4))
