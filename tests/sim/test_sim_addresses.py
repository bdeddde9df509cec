"""(robustness issue) An address leaves the interface while connections use it:
``NetworkCore.remove_address`` / ``add_address`` between two full stacks on virtual time (the live
tier does the same through the kernel's netlink notifications, tests/live/test_address_removed_live.py)."""
from __future__ import annotations

import errno
import struct

import pytest

from aiotcpstack.wire import arp as warp
from aiotcpstack.wire.ethernet import BROADCAST, ETH_P_ARP, build_ethernet
from aiotcpstack.wire.ipv4 import build_ipv4_header
from aiotcpstack.wire.tcp import SYN, TcpHeader, TcpOptions, build_tcp

from .harness import IP_A, IP_B, MAC_A, MAC_B, Peer, make_pair

SPOOF = bytes([198, 18, 0, 77])


def _syn_frame(src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    hdr = TcpHeader(sport, dport, 12345, 0, SYN, 64240, TcpOptions(mss=1460))
    seg = build_tcp(hdr, b"", src, dst)
    return struct.pack("!6s6sH", MAC_B, MAC_A, 0x0800) + build_ipv4_header(src, dst, 6, len(seg)) + seg


class Idle(Peer):
    def pump(self) -> None:           # connected and quiet
        pass


def test_remove_address_aborts_its_connections_without_sending_and_readd_works() -> None:
    clock, net, a, b = make_pair(1, delay=0.001)
    servers_b: list[Peer] = []
    servers_a: list[Peer] = []

    def accept_on(host, into):
        def on_accept(conn):
            p = Idle(host, b"", 65536)
            p.conn = conn
            into.append(p)
            return p
        return on_accept

    listener_b = b.core.listen(None, 6000, 16, accept_on(b, servers_b))       # wildcard
    b.core.listen(IP_B, 6001, 16, accept_on(b, []))                           # bound to IP_B
    a.core.listen(None, 7000, 16, accept_on(a, servers_a))
    clients_a = []
    for _ in range(2):                                                        # a -> b
        p = Idle(a, b"", 65536)
        p.conn = a.core.connect(IP_B, 6000, p, clock.now)
        clients_a.append(p)
    client_b = Idle(b, b"", 65536)                                            # b -> a
    client_b.conn = b.core.connect(IP_A, 7000, client_b, clock.now)
    a.kick()
    b.kick()
    clock.run(until=clock.now + 1.0)
    assert len(servers_b) == 2 and len(servers_a) == 1
    assert all(p.conn.state == "ESTABLISHED" for p in clients_a + servers_b + [client_b])
    # a half-open request sock answered from IP_B (the spoofed source never completes)
    b.core.receive([(_syn_frame(SPOOF, IP_B, 40000, 6000), False)], clock.now)
    b.kick()
    assert listener_b.syn_queue_len == 1
    ports_before = dict(b.core.demux.port_users)
    tx_before = b.link.stats.tx_frames
    out_before = b.counters["OutSegs"], b.counters["OutRsts"]

    n = b.core.remove_address(IP_B, clock.now, "local address 198.18.0.2 was removed from interface b0")
    assert n == 3
    assert b.counters["TCPAbortOnAddrRemoved"] == 3
    for p in servers_b + [client_b]:                     # b's side: a clear error, at once
        assert p.closed and isinstance(p.exc, OSError) and p.exc.errno == errno.EADDRNOTAVAIL, p.exc
        assert "198.18.0.2 was removed from interface b0" in str(p.exc)
    assert listener_b.syn_queue_len == 0                 # no SYN-ACK retransmission from IP_B
    assert b.core.connections() == []
    # the connections' port references went; the listeners' stay
    assert set(b.core.demux.port_users) == {6000, 6001} and set(ports_before) > {6000, 6001}
    clock.run(until=clock.now + 5.0)
    assert b.link.stats.tx_frames == tx_before           # nothing left from the removed address
    assert (b.counters["OutSegs"], b.counters["OutRsts"]) == out_before
    assert all(p.conn.state == "ESTABLISHED" and not p.closed for p in clients_a)   # no RST reached a

    # ARP for it: not answered any more; a SYN to it: not taken (nothing sent, no request sock)
    arp_replies = b.counters["ArpOutReplies"]
    req = warp.build_arp(warp.arp_request(MAC_A, IP_A, IP_B))
    b.core.receive([(build_ethernet(BROADCAST, MAC_A, ETH_P_ARP) + req, False)], clock.now)
    b.core.receive([(_syn_frame(IP_A, IP_B, 40001, 6000), False)], clock.now)
    b.kick()
    clock.run(until=clock.now + 0.1)
    assert b.counters["ArpOutReplies"] == arp_replies and b.link.stats.tx_frames == tx_before
    assert listener_b.syn_queue_len == 0
    # a new connect from it: EADDRNOTAVAIL with a message that says why
    with pytest.raises(OSError) as ei:
        b.core.connect(IP_A, 7000, Idle(b, b"", 65536), clock.now)
    assert ei.value.errno == errno.EADDRNOTAVAIL and "no IPv4 address" in str(ei.value)
    with pytest.raises(OSError) as ei:
        b.core.connect(IP_A, 7000, Idle(b, b"", 65536), clock.now, lip=IP_B)
    assert ei.value.errno == errno.EADDRNOTAVAIL
    assert b.core.remove_address(IP_B, clock.now) == 0    # not ours: nothing to do

    # back: both directions work again, through the listeners that stayed
    assert b.core.add_address(IP_B, 24) and not b.core.add_address(IP_B, 24)
    p = Idle(a, b"", 65536)
    p.conn = a.core.connect(IP_B, 6001, p, clock.now)
    q = Peer(b, b"hello", 65536)
    q.conn = b.core.connect(IP_A, 7000, q, clock.now)
    a.kick()
    b.kick()
    clock.run(until=clock.now + 1.0, stop=lambda: p.conn.state == "ESTABLISHED" and q.established)
    assert p.conn.state == "ESTABLISHED" and q.established and q.conn.local[0] == IP_B


def test_remove_address_spares_time_wait_and_other_addresses() -> None:
    clock, net, a, b = make_pair(2, delay=0.001)
    other = bytes([198, 18, 0, 9])
    assert b.core.add_address(other, 24)

    def on_accept(conn):
        p = Peer(a, b"x" * 1000, 65536) if conn.remote[0] == IP_B else Idle(a, b"", 65536)
        p.conn = conn
        return p
    a.core.listen(None, 7000, 16, on_accept)
    done = Peer(b, b"y" * 1000, 65536)              # exchanges, closes: b ends in TIME_WAIT
    done.conn = b.core.connect(IP_A, 7000, done, clock.now, lip=IP_B)
    idle = Idle(b, b"", 65536)                      # from the address that stays
    idle.conn = b.core.connect(IP_A, 7000, idle, clock.now, lip=other)
    b.kick()
    clock.run(until=clock.now + 2.0)
    # (the demux entry is the connection's TIME_WAIT record, tcp/timewait.py)
    tw = b.core.demux.conns[(IP_B, done.conn.local[1], IP_A, 7000)]
    assert tw.state == "TIME_WAIT" and idle.conn.state == "ESTABLISHED"
    assert b.core.remove_address(IP_B, clock.now) == 0
    assert b.counters["TCPAbortOnAddrRemoved"] == 0
    # TIME_WAIT keeps protecting its 4-tuple (it sends nothing while the address is gone)
    assert tw in b.core.connections() and tw.state == "TIME_WAIT"
    assert idle.conn.state == "ESTABLISHED" and not idle.closed
    assert b.core.routing.addresses == [(other, 24)]
    assert b.core.local_v4 == {other}
