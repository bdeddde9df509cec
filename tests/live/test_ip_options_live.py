"""Live: IPv4 options against the kernel in the lab (RFC 9293 3.9.2.1 MUST-51/52/53, RFC 1122
3.2.1.8 / 4.2.3.8).

* The kernel peer (ns_b) connects with ``setsockopt(IP_OPTIONS)``: a loose source route whose
  only hop is our address (what Linux accepts from an application: pointer 4, whole addresses;
  on the wire the SYN goes to us with our address in the route).  Our stack drops it by default,
  as a Linux host (``IpInSrcRouteDrops``), and serves it with ``accept_source_route=True``.
* Our client sets IP_OPTIONS through ``get_extra_info('socket')`` mid-connection (MUST-51): a
  loose source route through a second address of ns_b; ns_b, with ``accept_source_route=1``,
  takes the segments (an nft rule there counts them with the option on the wire) and the
  transfer completes byte for byte.
* The kernel's ``ping -R`` to a dedicated address: our echo reply records us as Linux would.
* A SYN whose route was traversed (sent from ns_b's raw socket, built by scapy) gets a SYN-ACK
  with the route reversed (MUST-53): to the recorded hop, with the source as the last address --
  counted by nft in ns_b."""
from __future__ import annotations

import asyncio
import hashlib
import socket

import pytest
from scapy.layers.inet import IP, TCP, IPOption_LSRR, IPOption_NOP, IPOption_RR

from aiotcpstack import Stack
from aiotcpstack.host.netns import socket_in_netns
from live_peers import echo_cb, kernel_echo_client, wait_for
from test_pmtud_live import KernelServer
from test_ttl_tos_live import _counters as _ttl_counters

pytestmark = pytest.mark.timeout(120)

TABLE = "ats_ipopt"


def _counters(lab) -> dict[str, int]:
    return _ttl_counters(lab, TABLE)


def _second_b_address(lab) -> str:
    """A second address of ns_b on the lab's link (a hop of the source routes), and ns_b set to
    accept source-routed datagrams (net.ipv4.conf.{all,<if>}.accept_source_route, both needed)."""
    b2 = lab.addr_b.rsplit(".", 1)[0] + ".9"
    lab.run(lab.ns_b, ["ip", "addr", "add", f"{b2}/24", "dev", lab.if_b])
    for name in ("all", lab.if_b):
        lab.run(lab.ns_b, ["sysctl", "-qw", f"net.ipv4.conf.{name}.accept_source_route=1"])
    return b2


async def test_kernel_source_routed_client_dropped_by_default_served_when_accepted(lab) -> None:
    loop = asyncio.get_running_loop()
    lsrr = bytes(IPOption_LSRR(routers=[lab.addr_a], pointer=4)) + bytes(IPOption_NOP())
    async with Stack(lab.if_a, netns=lab.ns_a) as stack:
        server = await stack.start_server(echo_cb, lab.addr_a, 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(OSError):        # (socket.timeout: the SYNs are dropped)
            await loop.run_in_executor(None, kernel_echo_client, lab, lab.addr_a, port, b"x", 2.0, lsrr)
        assert stack.counters["IpInSrcRouteDrops"] >= 1 and stack.counters["PassiveOpens"] == 0
        server.close()
    async with Stack(lab.if_a, netns=lab.ns_a, accept_source_route=True) as stack:
        server = await stack.start_server(echo_cb, lab.addr_a, 0)
        port = server.sockets[0].getsockname()[1]
        data = bytes(range(256)) * 400
        got = await asyncio.wait_for(loop.run_in_executor(
            None, kernel_echo_client, lab, lab.addr_a, port, data, 30.0, lsrr), 40)
        assert got == data
        assert stack.counters["IpInSrcRouteDrops"] == 0 and stack.counters["PassiveOpens"] == 1
        server.close()


async def test_our_source_route_on_the_wire(lab) -> None:
    """MUST-51: IP_OPTIONS set on our connection (LSRR via ns_b's second address, and a Record
    Route) from the next segment; ns_b's kernel accepts the segments and counts the option."""
    loop = asyncio.get_running_loop()
    b2 = _second_b_address(lab)
    ks = KernelServer(lab.ns_b, lab.addr_b, b"r" * 5000)
    lab.nft(lab.ns_b, f"table inet {TABLE} {{\n chain pre {{\n type filter hook prerouting priority -300; "
                      f"policy accept;\n"
                      f" ip saddr {lab.addr_a} ip daddr {b2} tcp dport {ks.port} ip option lsrr exists "
                      f"ip option rr exists counter comment \"lsrr\"\n"
                      f" ip saddr {lab.addr_a} tcp dport {ks.port} counter comment \"all\"\n }}\n}}\n")
    async with Stack(lab.if_a, netns=lab.ns_a) as stack:
        reader, writer = await stack.open_connection(lab.addr_b, ks.port)
        s = writer.get_extra_info("socket")
        given = bytes(IPOption_LSRR(routers=[b2], pointer=4)) + bytes(IPOption_RR(routers=["0.0.0.0"], pointer=4))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, given)
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, 40) == given + b"\0" * (-len(given) % 4)
        payload = b"q" * 200_000
        writer.write(payload)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 30) == b"r" * 5000
        writer.close()
        await loop.run_in_executor(None, ks.thread.join, 10)
        assert ks.error is None and ks.result == (hashlib.sha256(payload).hexdigest(), len(payload))
        counts = _counters(lab)
        # every segment after the SYN's ACK went through b2 with the options
        assert counts["lsrr"] >= 10 and counts["lsrr"] >= counts["all"] - 3


async def test_traversed_route_reversed_on_the_synack(lab) -> None:
    """MUST-53: a SYN from ns_b whose loose source route recorded b2 gets a SYN-ACK to b2 with
    ns_b's address as the route's last entry (ns_b's kernel resets it: no socket there)."""
    b2 = _second_b_address(lab)
    async with Stack(lab.if_a, netns=lab.ns_a, accept_source_route=True) as stack:
        server = await stack.start_server(echo_cb, lab.addr_a, 0)
        port = server.sockets[0].getsockname()[1]
        lab.nft(lab.ns_b, f"table inet {TABLE} {{\n chain pre {{\n type filter hook prerouting priority -300; "
                          f"policy accept;\n"
                          f" ip saddr {lab.addr_a} ip daddr {b2} tcp sport {port} tcp flags & (syn | ack) == "
                          f"syn | ack ip option lsrr exists counter comment \"rev\"\n }}\n}}\n")
        # (the TCP checksum over the destination, ours: the route is complete -- scapy would take
        # the route's last address)
        tcp = bytes(IP(src=lab.addr_b, dst=lab.addr_a) / TCP(sport=40555, dport=port, flags="S", seq=1000,
                                                             window=65535))[20:]
        syn = bytes(IP(src=lab.addr_b, dst=lab.addr_a, proto=6, options=[IPOption_LSRR(routers=[b2], pointer=8)]) /
                    tcp)
        raw = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        try:
            raw.sendto(syn, (lab.addr_a, 0))
        finally:
            raw.close()
        assert await wait_for(lambda: _counters(lab).get("rev", 0) >= 1, 5)
        assert stack.counters["IpInSrcRouteDrops"] == 0
        server.close()


async def test_ping_record_route_answered_as_linux(lab) -> None:
    """MAY-11: the kernel's ``ping -R`` to a dedicated address of ours: the reply's Record Route
    names our address twice (recorded on input and on output), as a Linux host's does."""
    loop = asyncio.get_running_loop()
    async with Stack(lab.if_a, netns=lab.ns_a, address=f"{lab.spare_addr}/24") as stack:
        out = await loop.run_in_executor(None, lambda: lab.run(
            lab.ns_b, ["ping", "-n", "-R", "-c", "1", "-W", "5", lab.spare_addr], check=False).stdout)
        assert "1 received" in out, out
        rr = out[out.index("RR:") + 3:].split("\n\n")[0].split()
        # the sender's output address, ours on input, ours on output, the sender's input address
        assert rr == [lab.addr_b, lab.spare_addr, lab.spare_addr, lab.addr_b], out
        assert stack.counters["IcmpOutEchoReps"] == 1
