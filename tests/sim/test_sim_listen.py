"""The listen path between two full stacks on virtual time: handshakes through request socks and
the accept queue, accept-queue overflow (an application that stops accepting) and recovery, SYN
cookies end to end, and a listener that is closed with children still queued."""
from __future__ import annotations

import random
from typing import Any

from aiotcpstack.tcp.config import TcpConfig

from .harness import IP_B, Peer, make_pair


class Acceptor:
    """What the aio Server does: drain the listener's accept queue into Peers while serving."""

    def __init__(self, host, listener_kw: dict, port: int = 7000, backlog: int = 128,
                 data: bytes = b"", serving: bool = True) -> None:
        self.host = host
        self.data = data
        self.serving = serving
        self.peers: list[Peer] = []
        self.listener = host.core.listen(None, port, backlog, on_acceptable=self._acceptable, **listener_kw)

    def _acceptable(self, listener: Any) -> None:
        if self.serving:
            self.drain()

    def start(self) -> None:
        self.serving = True
        self.drain()
        self.host.kick()

    def drain(self) -> None:
        core = self.host.core
        now = self.host.clock.now
        while (conn := self.listener.accept()) is not None:
            p = Peer(self.host, self.data, 65536)
            p.conn = conn
            conn.handler = p
            p.tcp_established()
            core.wake(conn, now)
            self.peers.append(p)


def start_clients(clock, a, n: int, seed: int, port: int = 7000, max_size: int = 30000):
    rng = random.Random(seed)
    clients = []
    for _ in range(n):
        data = rng.randbytes(rng.randrange(1, max_size))
        p = Peer(a, data, 65536)
        p.conn = a.core.connect(IP_B, port, p, clock.now)
        clients.append((p, data))
    a.kick()
    return clients


def check_transfers(acc: Acceptor, clients) -> None:
    got = {s.conn.remote[1]: bytes(s.received) for s in acc.peers}
    assert len(got) == len(clients)
    for c, data in clients:
        assert c.exc is None
        assert got[c.conn.local[1]] == data


def test_handshake_through_request_socks_and_accept_queue() -> None:
    clock, net, a, b = make_pair(21, delay=0.005)
    acc = Acceptor(b, {}, serving=False)
    lst = acc.listener
    clients = start_clients(clock, a, 5, 21)
    clock.run(until=0.1, stop=lambda: lst.syn_queue_len == 5)     # ARP, then the SYNs arrived
    assert lst.syn_queue_len == 5 and b.core.demux.conns == {}     # request socks, no connections
    clock.run(until=0.5)
    assert lst.syn_queue_len == 0 and lst.accept_queue_len == 5
    assert all(c.conn.state in ("ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2") for c, _ in clients)
    acc.start()
    clock.run(until=60, stop=lambda: all(c.done for c, _ in clients) and all(s.done for s in acc.peers))
    check_transfers(acc, clients)
    assert b.counters["PassiveOpens"] == 5 and b.counters["SyncookiesSent"] == 0


def test_accept_queue_overflow_and_recovery_on_virtual_time() -> None:
    cfg = TcpConfig(syncookies=0)
    clock, net, a, b = make_pair(22, cfg, cfg, delay=0.002)
    acc = Acceptor(b, {}, backlog=2, serving=False)
    lst = acc.listener
    clients = start_clients(clock, a, 10, 22)
    clock.run(until=5.0)
    c = b.counters
    assert lst.accept_queue_len == 3                  # backlog + 1, as Linux
    assert c["ListenOverflows"] > 0 and c["ListenDrops"] >= c["ListenOverflows"]
    assert lst.syn_queue_len <= 2
    assert not acc.peers
    t_resume = clock.now
    acc.start()
    clock.run(until=300, stop=lambda: all(c.done for c, _ in clients) and len(acc.peers) == 10
              and all(s.done for s in acc.peers))
    check_transfers(acc, clients)
    assert c["PassiveOpens"] == 10
    # recovery is driven by the peers' retransmissions (SYN retries, our SYN-ACK retransmissions)
    assert clock.now - t_resume < 120


def test_syncookies_end_to_end() -> None:
    cfg_b = TcpConfig(syncookies=2)                   # always cookies: no request socks at all
    clock, net, a, b = make_pair(23, TcpConfig(), cfg_b, delay=0.003)
    acc = Acceptor(b, {}, data=b"reply" * 2000)
    clients = start_clients(clock, a, 20, 23)
    max_q = 0

    def stop() -> bool:
        nonlocal max_q
        max_q = max(max_q, acc.listener.syn_queue_len)
        return all(c.done for c, _ in clients) and len(acc.peers) == 20 and all(s.done for s in acc.peers)

    clock.run(until=120, stop=stop)
    check_transfers(acc, clients)
    assert all(bytes(c.received) == b"reply" * 2000 for c, _ in clients)
    c = b.counters
    assert c["SyncookiesSent"] == 20 and c["SyncookiesRecv"] == 20 and c["SyncookiesFailed"] == 0
    assert max_q == 0
    # the negotiated options survived the cookie (carried in the timestamp)
    s = acc.peers[0].conn
    assert s.sack_ok and s.ws_ok and s.ts_ok


def test_syn_queue_overflow_falls_back_to_cookies() -> None:
    cfg_b = TcpConfig(max_syn_backlog=4)
    clock, net, a, b = make_pair(24, TcpConfig(), cfg_b, delay=0.003)
    acc = Acceptor(b, {}, backlog=64)
    clients = start_clients(clock, a, 30, 24)
    clock.run(until=120, stop=lambda: all(c.done for c, _ in clients) and len(acc.peers) == 30
              and all(s.done for s in acc.peers))
    check_transfers(acc, clients)
    c = b.counters
    assert c["SyncookiesSent"] > 0 and c["SyncookiesRecv"] == c["SyncookiesSent"]
    assert c["TCPReqQFullDoCookies"] == c["SyncookiesSent"]


def test_closing_the_listener_resets_queued_children() -> None:
    clock, net, a, b = make_pair(25, delay=0.002)
    acc = Acceptor(b, {}, serving=False)
    clients = start_clients(clock, a, 3, 25)
    clock.run(until=0.5)
    assert acc.listener.accept_queue_len == 3
    acc.listener.close(clock.now)
    b.kick()
    clock.run(until=5, stop=lambda: all(c.closed for c, _ in clients))
    assert all(isinstance(c.exc, ConnectionResetError) for c, _ in clients)
    assert b.core.demux.conns == {} and b.core.demux.listeners == {}
