"""The TIME_WAIT record (tcp/timewait.py, Linux ``inet_timewait_sock``) behaves exactly like the
whole connection it replaces: the same scenarios run through two ``NetworkCore``s at frame level,
one that swaps TIME_WAIT connections for the record and one that keeps them whole, and every
frame sent, every counter, the demux table and the port references must be identical at every
step -- RFC 1337 (RSTs ignored), retransmitted FIN (ACK + 2MSL restart), data, PAWS, old SYNs
(rate-limited challenge ACKs), a SYN that reopens the 4-tuple (RFC 6191 / TCP_TW_SYN, handed to
the listener) and the 2MSL expiry."""
from __future__ import annotations

import gc
import sys

import pytest

from aiotcpstack.ip.core import NetworkCore
from aiotcpstack.mib import Counters
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.timer_wheel import TimerWheel
from aiotcpstack.tcp.timewait import TimeWaitSock
from aiotcpstack.wire.ethernet import ETH_P_IP, build_ethernet, parse_ethernet
from aiotcpstack.wire.ipv4 import build_ipv4_header, parse_ipv4
from aiotcpstack.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpHeader, TcpOptions, build_tcp, parse_tcp

from tcp_harness import FrameTx as Tx, Recorder

MY_MAC = bytes.fromhex("02aa00000001")
PEER_MAC = bytes.fromhex("02bb00000002")
MY_IP = bytes([198, 18, 0, 1])
PEER_IP = bytes([198, 18, 0, 2])
PEER_ISS = 5000


def make_core(cfg: TcpConfig, record: bool):
    tx = Tx()
    core = NetworkCore(MY_MAC, 1500, [(MY_IP, 24)], Counters(), cfg, TimerWheel(), tx, None,
                       dedicated=True, strict=True, secret=b"tw")   # one key: both cores pick the same ISNs
    core.neigh.update(PEER_IP, PEER_MAC, 0.0)
    if not record:
        core._time_wait_sock = lambda conn: None        # keep TIME_WAIT connections whole
    return core, tx


def frame(hdr: TcpHeader, payload: bytes = b"") -> bytes:
    seg = build_tcp(hdr, payload, PEER_IP, MY_IP)
    return build_ethernet(MY_MAC, PEER_MAC, ETH_P_IP) + build_ipv4_header(PEER_IP, MY_IP, 6, len(seg)) + seg


def segs(tx):
    out = []
    for f in tx:
        _, _, et, payload = parse_ethernet(f)
        if et == ETH_P_IP:
            ip, seg = parse_ipv4(payload)
            out.append(parse_tcp(seg)[0])
    return out


class Scenario:
    """One core and its peer's view: drives the core into TIME_WAIT (we close first, as client
    or as server) and then feeds it the events of a test."""

    def __init__(self, cfg: TcpConfig, record: bool, server: bool) -> None:
        self.core, self.tx = make_core(cfg, record)
        self.ts = cfg.timestamps
        self.log: list = []
        self.rec = Recorder()
        core = self.core
        self.listener = None
        t = 0.0
        if server:
            accepted = []
            self.listener = core.listen(None, 80, 8, lambda c: accepted.append(c) or self.rec)
            self.lport, self.rport = 80, 40000
            core.receive([(frame(TcpHeader(self.rport, 80, PEER_ISS - 1, 0, SYN, 65535,
                                           self.opts(100, 0, syn=True))), False)], t)
            synack = segs(self.tx)[-1]
            self.my_iss = synack.seq
            self.peer_ts = synack.options.timestamp
            core.receive([(frame(TcpHeader(self.rport, 80, PEER_ISS, synack.seq + 1, ACK, 65535,
                                           self.opts(101))), False)], 0.01)
            conn, = accepted
        else:
            conn = core.connect(PEER_IP, 80, self.rec, t)
            self.lport, self.rport = conn.local[1], 80
            syn = segs(self.tx)[-1]
            self.my_iss = syn.seq
            core.receive([(frame(TcpHeader(80, self.lport, PEER_ISS - 1, syn.seq + 1, SYN | ACK, 65535,
                                           self.opts(100, syn.options.timestamp[0] if self.ts else 0,
                                                     syn=True))), False)], 0.01)
        assert conn.state == "ESTABLISHED"
        self.conn = conn
        self.key = (MY_IP, self.lport, PEER_IP, self.rport)
        conn.send(b"hello", 0.02)
        conn.close(0.02)                                     # our FIN: FIN_WAIT_1
        assert segs(self.tx)[-1].flags & FIN
        self.snd_nxt = conn.snd_nxt
        self.rcv_nxt = PEER_ISS
        self.peer(0.03, ACK | FIN, tsval=102)                 # their ACK + FIN: TIME_WAIT
        self.rcv_nxt = PEER_ISS + 1
        assert core.demux.conns[self.key].state == "TIME_WAIT"
        self.snap("time_wait")

    def opts(self, tsval, tsecr=0, syn=False):
        ts = (tsval, tsecr) if self.ts else None
        if syn:
            return TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=ts)
        return TcpOptions(timestamp=ts)

    def peer(self, now, flags, seq=None, payload=b"", tsval=200, tsecr=0):
        seq = self.rcv_nxt if seq is None else seq
        hdr = TcpHeader(self.rport, self.lport, seq, self.snd_nxt if flags & ACK else 0, flags, 1000,
                        self.opts(tsval, tsecr, syn=bool(flags & SYN)))
        self.core.receive([(frame(hdr, payload), False)], now)

    def advance(self, now):
        self.core.wheel.advance(now)

    def snap(self, step):
        core = self.core
        entry = core.demux.conns.get(self.key)
        self.log.append((step, list(self.tx), dict(core.counters), sorted(core.demux.conns),
                         dict(core.demux.port_users), entry.state if entry is not None else None))
        self.tx.clear()


def both(cfg, server, events):
    """Run ``events(scenario)`` on a recording and a whole-connection core; compare the logs."""
    a, b = Scenario(cfg, True, server), Scenario(cfg, False, server)
    assert type(a.core.demux.conns[a.key]) is TimeWaitSock
    assert a.conn.state == "CLOSED" and a.conn not in a.core.routes
    assert type(b.core.demux.conns[b.key]) is not TimeWaitSock
    for s in (a, b):
        events(s)
    assert len(a.log) == len(b.log)
    for la, lb in zip(a.log, b.log):
        assert la == lb, (la[0], la, lb)
    return a, b


CONFIGS = [TcpConfig(), TcpConfig(timestamps=False), TcpConfig(timestamps=False, sack=False, window_scaling=False),
           TcpConfig(challenge_ack_limit=2)]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("server", [False, True])
def test_time_wait_record_answers_like_the_connection(cfg, server):
    def events(s):
        s.peer(0.5, RST | ACK)
        s.snap("rst ignored (RFC 1337)")
        s.peer(0.6, RST)
        s.snap("bare rst ignored")
        s.peer(1.0, ACK | FIN, seq=PEER_ISS, tsval=300)
        s.snap("retransmitted FIN: ACK")
        s.peer(1.1, ACK | PSH, payload=b"late", tsval=301)
        s.snap("data: ACK")
        s.peer(1.2, ACK, tsval=5)
        s.snap("old timestamp: PAWS")
        for i in range(4):
            s.peer(1.3 + i * 0.01, SYN, seq=PEER_ISS - 100, tsval=1)
            s.snap(f"old SYN {i}: challenge ACK")
        s.peer(3.0, SYN, seq=PEER_ISS - 100, tsval=1)
        s.snap("old SYN in the next second")
        s.advance(60.5)
        s.snap("2MSL restarted by the FIN at 1.0: still TIME_WAIT")
        s.advance(61.1)
        s.snap("2MSL over")
        s.peer(62.0, ACK | FIN, seq=PEER_ISS)
        s.snap("after TIME_WAIT: RST")
    a, _ = both(cfg, server, events)
    n = {step: len(tx) for step, tx, *_ in a.log}
    assert n["rst ignored (RFC 1337)"] == n["bare rst ignored"] == 0
    assert n["retransmitted FIN: ACK"] == n["data: ACK"] == 1
    assert n["old timestamp: PAWS"] == (1 if cfg.timestamps else 0)
    limit = cfg.challenge_ack_limit
    assert [n[f"old SYN {i}: challenge ACK"] for i in range(4)] == [1 if i < limit else 0 for i in range(4)]
    assert n["old SYN in the next second"] == 1
    state = {step: st for step, *_, st in a.log}
    assert state["2MSL restarted by the FIN at 1.0: still TIME_WAIT"] == "TIME_WAIT"
    assert state["2MSL over"] is None and a.core.demux.conns.get(a.key) is None
    assert a.core.counters["TimeWaited"] == 1
    assert a.core.counters["PAWSEstab"] == (1 if cfg.timestamps else 0)


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("server", [False, True])
def test_syn_reopens_the_time_wait_record(cfg, server):
    def events(s):
        s.peer(2.0, SYN, seq=(PEER_ISS + 100000) & 0xFFFFFFFF, tsval=10000)
        s.snap("new SYN: TIME_WAIT ends, the listener answers (server) / dropped (client)")
        s.advance(70.0)
        s.snap("no timer left")
    a, _ = both(cfg, server, events)
    assert a.core.counters["TimeWaited"] == 1 and a.core.demux.conns.get(a.key) is None
    step, tx, *_ = a.log[-2]
    assert [h.flags for h in segs(tx)] == ([SYN | ACK] if server else [])


def test_record_holds_the_port_and_frees_the_connection():
    s = Scenario(TcpConfig(), True, False)
    tw = s.core.demux.conns[s.key]
    assert isinstance(tw, TimeWaitSock) and tw.state == "TIME_WAIT"
    assert s.core.demux.port_users.get(s.lport) == 1
    assert s.rec.closed == [None]
    snap = tw.snapshot()
    assert snap["state"] == "TIME_WAIT" and snap["local"] == (MY_IP, s.lport) and snap["remote"] == (PEER_IP, 80)
    assert tw in s.core.connections()
    conn = s.conn
    assert not any(t.pending for t in (conn._t_rtx, conn._t_dack, conn._t_ka))
    assert conn.handler is None
    gc.collect()
    # nothing holds the connection any more but this test (not even its own timers: no cycle is
    # left, so reference counting frees it and its transport without the GC)
    others = [r for r in gc.get_referrers(conn) if r is not s and r is not getattr(s, "__dict__", None)
              and not isinstance(r, type(sys._getframe()))]
    assert others == []
    s.advance(61.0)
    assert s.core.demux.conns == {} and s.lport not in s.core.demux.port_users


def test_time_wait_with_unread_eof_stays_whole_until_delivered():
    """A connection whose EOF the application has not taken yet (reading paused) is not
    replaced: it still has something to hand over."""
    core, tx = make_core(TcpConfig(timestamps=False), True)
    rec = Recorder()
    conn = core.connect(PEER_IP, 80, rec, 0.0)
    syn = segs(tx)[-1]
    lport = conn.local[1]
    core.receive([(frame(TcpHeader(80, lport, PEER_ISS - 1, syn.seq + 1, SYN | ACK, 65535,
                                   TcpOptions(mss=1460))), False)], 0.01)
    conn.set_reading(False, 0.015)
    conn.shutdown(0.02)                                   # our FIN, the connection stays open
    core.receive([(frame(TcpHeader(80, lport, PEER_ISS, syn.seq + 2, ACK | FIN, 1000)), False)], 0.03)
    key = (MY_IP, lport, PEER_IP, 80)
    assert conn.state == "TIME_WAIT" and core.demux.conns[key] is conn
    conn.set_reading(True, 0.04)                          # EOF handed over, tcp_closed follows
    assert rec.names()[-2:] == ["eof", "closed"]
    core.receive([(frame(TcpHeader(80, lport, PEER_ISS, syn.seq + 2, ACK | FIN, 1000)), False)], 0.05)
    assert type(core.demux.conns[key]) is TimeWaitSock    # replaced at the next delivery
