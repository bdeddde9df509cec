"""Network-core behaviour between two full stacks on virtual time: many concurrent connections
(demux, ephemeral ports), refused connects, SYN timeouts, ARP under loss, release of the demux
entries after TIME_WAIT."""
from __future__ import annotations

import random

from aiotcpstack.tcp.config import TcpConfig

from .harness import IP_B, Peer, make_pair


def test_many_concurrent_connections_under_loss() -> None:
    clock, net, a, b = make_pair(11, loss=0.01, reorder=0.01, delay=0.002)
    rng = random.Random(11)
    servers: list[Peer] = []

    def on_accept(conn):
        p = Peer(b, b"", 65536)
        p.conn = conn
        servers.append(p)
        return p

    b.core.listen(None, 6000, 512, on_accept)
    clients = []
    for i in range(200):
        data = rng.randbytes(rng.randrange(0, 40000))
        p = Peer(a, data, 65536)
        p.conn = a.core.connect(IP_B, 6000, p, clock.now)
        clients.append((p, data))
    a.kick()
    clock.run(until=600, stop=lambda: len(servers) == 200 and all(s.done for s in servers)
              and all(c.done for c, _ in clients))
    assert len(servers) == 200
    ports = {c.conn.local[1] for c, _ in clients}
    assert len(ports) == 200
    got = {s.conn.remote[1]: bytes(s.received) for s in servers}
    for c, data in clients:
        assert got[c.conn.local[1]] == data
        assert c.exc is None
    assert b.counters["PassiveOpens"] == 200 and a.counters["ActiveOpens"] == 200
    # after TIME_WAIT everything leaves the demux tables and the ports are free again
    clock.run(until=clock.now + 200)
    assert a.core.demux.conns == {} and b.core.demux.conns == {}
    assert list(a.core.demux.port_users) == []
    assert list(b.core.demux.port_users) == [6000]          # the listener


def test_connect_to_closed_port_is_refused() -> None:
    clock, net, a, b = make_pair(3, delay=0.001)
    p = Peer(a, b"hello", 65536)
    p.conn = a.core.connect(IP_B, 4444, p, clock.now)
    a.kick()
    clock.run(until=10, stop=lambda: p.closed)
    assert isinstance(p.exc, ConnectionRefusedError)
    assert b.counters["OutRsts"] == 1
    assert a.core.demux.conns == {}


def test_syn_retries_exhausted_when_nobody_answers() -> None:
    cfg = TcpConfig(syn_retries=3)
    clock, net, a, b = make_pair(5, cfg, cfg, loss=1.0)
    p = Peer(a, b"x", 65536)
    p.conn = a.core.connect(IP_B, 80, p, clock.now)
    a.kick()
    clock.run(until=600, stop=lambda: p.closed)
    assert isinstance(p.exc, TimeoutError)
    # 1 + 2 + 4 + 8 s of backoff (RFC 6298 5.5), ARP never answered either
    assert 14.0 <= clock.now <= 16.5
    assert a.counters["ArpOutRequests"] >= 3
    assert a.core.demux.conns == {}


def test_arp_survives_loss_and_entries_refresh() -> None:
    clock, net, a, b = make_pair(9, loss=0.3, delay=0.001)
    servers: list[Peer] = []

    def on_accept(conn):
        p = Peer(b, b"", 65536)
        p.conn = conn
        servers.append(p)
        return p

    b.core.listen(None, 7000, 16, on_accept)
    data = random.Random(9).randbytes(50000)
    c = Peer(a, data, 65536)
    c.conn = a.core.connect(IP_B, 7000, c, clock.now)
    a.kick()
    clock.run(until=3600, stop=lambda: c.done and servers and servers[0].done)
    assert bytes(servers[0].received) == data
    assert a.core.neigh.lookup(IP_B) == b.core.mac


def test_loopback_to_own_address() -> None:
    clock, net, a, b = make_pair(13, loss=0.5)          # the wire is terrible; loopback never uses it
    from .harness import IP_A
    servers: list[Peer] = []

    def on_accept(conn):
        p = Peer(a, b"pong" * 1000, 65536)
        p.conn = conn
        servers.append(p)
        return p

    a.core.listen(None, 9000, 16, on_accept)
    data = random.Random(13).randbytes(300_000)
    c = Peer(a, data, 65536)
    c.conn = a.core.connect(IP_A, 9000, c, clock.now)
    a.kick()
    clock.run(until=60, stop=lambda: c.done and servers and servers[0].done)
    assert bytes(servers[0].received) == data and bytes(c.received) == b"pong" * 1000
    assert net.stats.sent == 0
