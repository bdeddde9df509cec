"""Smaller behaviours: from_request, shutdown/close during the handshake, PMTU (update_mss),
PAWS exception for reordered duplicate ACKs, RFC 6298 5.7 RTO fallback, restart after idle,
snapshot(), timers preallocated, counters."""
from __future__ import annotations

import pytest

from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.connection import TcpConnection
from aiotcpstack.tcp.timer_wheel import Timer
from aiotcpstack.wire.tcp import TcpOptions

from tcp_harness import Harness, LOCAL, REMOTE

PLAIN = TcpConfig(timestamps=False, sack=False, window_scaling=False)
MSS = 1460


def est(cfg=PLAIN, **kw):
    h = Harness(cfg, iss=1000)
    h.establish_active(5000, peer_opts=TcpOptions(mss=1460), **kw)
    return h


def test_from_request_with_completing_ack():
    h = Harness(PLAIN)
    syn = h.segment("S", 7000, 0, 65535, TcpOptions(mss=1400))
    ack = h.segment(".", 7001, 301, 65535)
    conn = TcpConnection.from_request(config=PLAIN, wheel=h.wheel, counters=h.counters, local=LOCAL,
                                      remote=REMOTE, iss=300, syn=syn, output=h._output, handler=h.rec,
                                      release=h.released.append, now=0.5, ack=ack, syn_time=0.4)
    assert conn.state == "ESTABLISHED" and conn.mss == 1400 and conn.snd_una == 301 and conn.rcv_nxt == 7001
    assert h.rec.names() == ["established"] and conn.rtt.srtt == pytest.approx(0.1)
    assert h.counters["PassiveOpens"] == 1 and h.counters["CurrEstab"] == 1


def test_shutdown_in_syn_received_sends_fin_after_ack():
    h = Harness(PLAIN, iss=1)
    h.conn.accept_syn(h.segment("S", 7000, 0, 65535, TcpOptions(mss=1460)), 0.0)
    h.take()
    h.conn.shutdown(0.1)
    assert h.take() == [] and h.conn.state == "SYN_RECEIVED"
    out = h.feed(0.2, ".", 7001, 2)
    assert [(s.flags, s.seq) for s in out] == [("F.", 2)] and h.conn.state == "FIN_WAIT_1"


def test_update_mss_shrinks_segments_and_retransmits():
    h = est()
    h.conn.send(b"m" * 3 * MSS, 0.1)
    assert [len(s.payload) for s in h.take()] == [MSS] * 3
    h.conn.update_mss(1000, 0.11)
    out = h.take()
    assert out and all(len(s.payload) <= 1000 for s in out) and out[0].seq == 1001
    assert h.conn.mss == 1000 and h.conn.cc.mss == 1000
    h.conn.update_mss(1200, 0.12)                        # never grows this way
    assert h.conn.mss == 1000


def test_reordered_duplicate_ack_is_not_a_paws_victim():
    h = Harness(TcpConfig(), iss=1000)
    h.establish_active(5000)
    h.conn.send(b"x" * 10, 0.1)
    h.take()
    h.feed(0.11, ".", 5001, 1001, window=1024, opts=TcpOptions(timestamp=(150, 100)))
    h.feed(0.12, ".", 5001, 1001, window=1024, opts=TcpOptions(timestamp=(149, 100)))
    assert h.counters["PAWSEstab"] == 0


def test_rto_fallback_3s_after_syn_retransmission():
    h = Harness(PLAIN, iss=1000)
    h.conn.connect(0.0)
    h.take()
    h.run_until(1.0)                                      # SYN retransmitted
    h.take()
    h.feed(1.05, "S.", 5000, 1001, opts=TcpOptions(mss=1460))
    assert h.conn.rtt.rto == pytest.approx(3.0)           # RFC 6298 5.7 (no Karn-safe sample)


def test_restart_window_after_idle():
    h = est()
    c = h.conn
    c.send(b"i" * 30 * MSS, 0.1)
    t = 0.1
    while c.send_buffer_size:
        t += 0.02
        h.take()
        h.feed(t, ".", 5001, c.snd_nxt)
    big = c.cc.cwnd
    assert big > 10 * MSS
    c.send(b"j" * 30 * MSS, t + 10.0)
    out = h.take()
    assert len(out) == 10                                  # RFC 5681 4.1: back to IW


def test_snapshot_fields():
    h = est()
    h.conn.send(b"abc", 0.1)
    snap = h.conn.snapshot()
    for k in ("state", "local", "remote", "snd_una", "snd_nxt", "rcv_nxt", "snd_wnd", "rcv_wnd", "srtt",
              "rttvar", "rto", "cwnd", "ssthresh", "mss", "retransmits", "bytes_acked", "bytes_received",
              "send_buffer", "unread"):
        assert k in snap
    assert snap["state"] == "ESTABLISHED" and snap["send_buffer"] == 3 and snap["snd_nxt"] == 1004


def test_exactly_four_timers_reused():
    h = est()
    c = h.conn
    timers = [getattr(c, n) for n in TcpConnection.__slots__ if isinstance(getattr(c, n, None), Timer)]
    assert len(timers) == 4
    ids = {id(t) for t in timers}
    c.send(b"x" * 100, 0.1)
    h.run_until(1.0)
    h.feed(1.0, ".", 5001, 1101)
    assert {id(getattr(c, n)) for n in TcpConnection.__slots__ if isinstance(getattr(c, n, None), Timer)} == ids


def test_send_space_reported_once_per_batch():
    h = est()
    h.conn.send(b"s" * 3 * MSS, 0.1)
    h.take()
    h.feed_batch(0.2, [dict(flags=".", seq=5001, ack=1001 + MSS), dict(flags=".", seq=5001, ack=1001 + 3 * MSS)])
    assert h.rec.names().count("send_space") == 1 and h.conn.send_buffer_size == 0
