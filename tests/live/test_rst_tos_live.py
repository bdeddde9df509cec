"""Live: the DiffServ field of the replies sent without a connection (ip/core.py ``send_reset``,
``_listener_send``) is the kernel's.  A scapy-built SYN or ACK with a given TOS / traffic class
(0x28, ECN bits 1, 2, 3, DSCP 46, ECN only) goes from ns_b's AF_PACKET socket to a closed port
and to a listener whose IP_TOS / IPV6_TCLASS is 0x10 -- once at the kernel of ns_a, once at our
stack (dedicated mode, a spare address of the same link) -- and the RST that comes back must have
the same TOS / traffic class, TTL / hop limit and flags from both (Linux: the received DSCP, ECN
bits cleared, the default TTL; not the listener's TOS).  ICMP echo replies (dedicated mode) are
compared the same way: Linux echoes the request's whole DiffServ byte there, ECN bits too."""
from __future__ import annotations

import asyncio
import socket
import time
from typing import Any, Callable

import pytest

from aiotcpstack import Stack
from test_ipv6_live import _wait_dad

pytestmark = pytest.mark.timeout(120)

DSFIELDS = (0x00, 0x28, 0x29, 0x2A, 0x2B, 0xB8, 0x03)


def exchange(lab, frame: bytes, answer: Callable[[Any], tuple | None]) -> tuple | None:
    """Send ``frame`` from ns_b's AF_PACKET socket; the first non-None ``answer(Ether(frame))`` of
    what comes back within 3 s, or None."""
    from scapy.layers.l2 import Ether

    def run() -> tuple | None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)) as s:
            s.bind((lab.if_b, 0))
            s.settimeout(0.2)
            s.send(frame)
            end = time.monotonic() + 3
            while time.monotonic() < end:
                try:
                    got = answer(Ether(s.recv(4096)))
                except socket.timeout:
                    continue
                if got is not None:
                    return got
        return None

    return lab.run_in(lab.ns_b, run)


def probe(lab, dst: str, dst_mac: bytes, dport: int, ds: int, v6: bool, flags: str) -> tuple | None:
    """Send one TCP segment (``flags``) with DiffServ field ``ds`` from ns_b to ``dst``:``dport``;
    the (TOS / traffic class, TTL / hop limit, flags) of the RST that answers it, or None."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    sport = 40000 + ds + (1000 if flags == "A" else 0)
    l3 = IPv6(src=lab.addr6_b, dst=dst, tc=ds) if v6 else IP(src=lab.addr_b, dst=dst, tos=ds)
    frame = bytes(Ether(src=lab.mac_b, dst=dst_mac) / l3
                  / TCP(sport=sport, dport=dport, flags=flags, seq=1000, ack=5 if flags == "A" else 0))

    def rst(e: Any) -> tuple | None:
        if TCP in e and e[TCP].dport == sport and e[TCP].flags.R:
            ip = e[IPv6] if v6 else e[IP]
            return (ip.tc, ip.hlim, str(e[TCP].flags)) if v6 else (ip.tos, ip.ttl, str(e[TCP].flags))
        return None

    return exchange(lab, frame, rst)


def kernel_listener(lab, v6: bool, port: int) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET)
        s.setsockopt(socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP,
                     socket.IPV6_TCLASS if v6 else socket.IP_TOS, 0x10)
        s.bind(("::" if v6 else "0.0.0.0", port))
        s.listen()
        return s
    return lab.run_in(lab.ns_a, make)


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
async def test_rst_dsfield_is_the_kernels(lab, v6: bool) -> None:
    loop = asyncio.get_running_loop()
    if v6:
        await loop.run_in_executor(None, _wait_dad, lab)
    kaddr, ours = (lab.addr6_a, lab.spare_addr6) if v6 else (lab.addr_a, lab.spare_addr)
    klisten = kernel_listener(lab, v6, 7777)
    try:
        async with Stack(lab.if_a, netns=lab.ns_a, address=f"{ours}/{64 if v6 else 24}") as stack:
            srv = await stack.create_server(asyncio.Protocol, ours, 7777)
            (ls,) = srv.sockets
            ls.setsockopt(socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP,
                          socket.IPV6_TCLASS if v6 else socket.IP_TOS, 0x10)
            checked = 0
            for port, flags in ((9, "S"), (9, "A"), (7777, "A")):
                for ds in DSFIELDS:
                    theirs = await loop.run_in_executor(None, probe, lab, kaddr, lab.mac_a, port, ds, v6, flags)
                    mine = await loop.run_in_executor(None, probe, lab, ours, lab.mac_a, port, ds, v6, flags)
                    assert theirs is not None and mine == theirs, (port, flags, hex(ds), mine, theirs)
                    assert theirs[0] == ds & 0xFC        # (what the kernel does, as documented)
                    checked += 1
            assert checked == 3 * len(DSFIELDS)
            assert stack.counters["OutRsts"] >= 3 * len(DSFIELDS)
            srv.close()
            await srv.wait_closed()
    finally:
        klisten.close()


def ping(lab, dst: str, ds: int, v6: bool) -> tuple | None:
    """One echo request with DiffServ field ``ds`` from ns_b to ``dst``: the (TOS / traffic
    class, TTL / hop limit) of the reply, or None."""
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
    from scapy.layers.l2 import Ether

    ident = 300 + ds
    pkt = (IPv6(src=lab.addr6_b, dst=dst, tc=ds) / ICMPv6EchoRequest(id=ident, seq=1) if v6
           else IP(src=lab.addr_b, dst=dst, tos=ds) / ICMP(id=ident, seq=1))

    def reply(e: Any) -> tuple | None:
        if v6 and ICMPv6EchoReply in e and e[ICMPv6EchoReply].id == ident:
            return e[IPv6].tc, e[IPv6].hlim
        if not v6 and ICMP in e and e[ICMP].type == 0 and e[ICMP].id == ident:
            return e[IP].tos, e[IP].ttl
        return None

    return exchange(lab, bytes(Ether(src=lab.mac_b, dst=lab.mac_a) / pkt), reply)


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
async def test_echo_reply_dsfield_is_the_kernels(lab, v6: bool) -> None:
    loop = asyncio.get_running_loop()
    if v6:
        await loop.run_in_executor(None, _wait_dad, lab)
    kaddr, ours = (lab.addr6_a, lab.spare_addr6) if v6 else (lab.addr_a, lab.spare_addr)
    async with Stack(lab.if_a, netns=lab.ns_a, address=f"{ours}/{64 if v6 else 24}"):
        for ds in DSFIELDS:
            theirs = await loop.run_in_executor(None, ping, lab, kaddr, ds, v6)
            mine = await loop.run_in_executor(None, ping, lab, ours, ds, v6)
            assert theirs is not None and mine == theirs, (hex(ds), mine, theirs)
            assert theirs[0] == ds                     # (the whole byte, as documented)
