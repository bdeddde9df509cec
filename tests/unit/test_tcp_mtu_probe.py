"""Black-hole detection (tcp/mtu_probe.py, Linux tcp_mtu_probing=1) and the PMTUD hooks of
TcpConnection (update_mss, icmp_error), at segment level on virtual time."""
from __future__ import annotations

import errno

from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.wire.tcp import TcpOptions

from tcp_harness import Harness


def _big_send(h, n=200_000):
    h.conn.send(b"y" * n, h.now)
    return h.take()


def test_blackhole_lowers_mss_after_retries1_rtos_then_continues():
    h = Harness()
    h.establish_active()
    assert h.conn.mss == 1448
    first = _big_send(h)
    assert first and max(len(s.payload) for s in first) <= 1448 * h.conn.config.tso_segs
    una = h.conn.snd_una
    # nothing is ever acknowledged: RTO 1, 2, 3 retransmit full-sized segments ...
    rtx = []
    t = h.now
    while h.counters["TCPTimeouts"] < 3:
        t += 0.05
        rtx += h.run_until(t)
    assert len(rtx) >= 3 and all(len(s.payload) == 1448 for s in rtx)   # (+ a tail loss probe)
    assert h.counters["TCPMTUPBlackhole"] == 0
    # ... the 4th (tcp_retries1 = 3 already failed) assumes a black hole: base_mss 1024
    while h.counters["TCPTimeouts"] < 4:
        t += 0.05
        rtx = h.run_until(t)
    assert h.counters["TCPMTUPBlackhole"] == 1
    assert h.conn.mss == 1024 - 12
    assert len(rtx) == 1 and rtx[0].seq == una and len(rtx[0].payload) == 1012
    # the small segment gets through: the transfer goes on at the new size
    seg = rtx[0]
    out = h.feed(t + 0.01, ".", seg.ack, una + 1012, opts=TcpOptions(timestamp=(500, seg.tsval)))
    assert out and max(len(s.payload) for s in out) <= 1012
    assert h.conn.mss == 1012


def test_blackhole_halves_on_further_detection_down_to_the_floor():
    h = Harness(TcpConfig(retries2=40))
    h.establish_active()
    _big_send(h)
    t = h.now
    seen = []
    while h.counters["TCPTimeouts"] < 12:
        t += 1.0
        h.run_until(t)
        if h.conn.mss not in seen:
            seen.append(h.conn.mss)
    # 1448 -> 1024 (base_mss) -> 512 -> 256 -> 128 -> 64 -> 48 (floor, minus the TS option)
    assert seen == [1448, 1012, 500, 244, 116, 52, 48]


def test_blackhole_detection_can_be_turned_off():
    h = Harness(TcpConfig(mtu_probing=0))
    h.establish_active()
    _big_send(h)
    h.run_until(30.0)
    assert h.conn.mss == 1448 and h.counters["TCPMTUPBlackhole"] == 0


def test_update_mss_retransmits_in_flight_data_cut_to_new_size():
    h = Harness()
    h.establish_active()
    first = _big_send(h, 20_000)
    una = h.conn.snd_una
    h.conn.update_mss(1300 - 40, h.now)
    out = h.take()
    assert h.conn.mss == 1300 - 40 - 12
    assert out and out[0].seq == una and all(len(s.payload) <= 1248 for s in out)
    # a larger report does not raise it again
    h.conn.update_mss(1460, h.now)
    assert h.conn.mss == 1248
    assert sum(len(s.payload) for s in first) == 20_000 or h.conn.snd_nxt != una


def test_icmp_error_hard_and_soft():
    h = Harness(TcpConfig(syn_retries=2))
    h.conn.connect(0.0)
    h.take()
    h.conn.icmp_error(errno.EHOSTUNREACH, False, 0.1)      # soft in SYN_SENT (owned socket)
    assert h.conn.state == "SYN_SENT"
    h.run_until(30.0)
    (exc,) = h.rec.closed
    assert exc.errno == errno.EHOSTUNREACH                 # reported instead of ETIMEDOUT
    h2 = Harness()
    h2.conn.connect(0.0)
    h2.conn.icmp_error(errno.ECONNREFUSED, True, 0.1)
    (exc,) = h2.rec.closed
    assert isinstance(exc, ConnectionRefusedError)
