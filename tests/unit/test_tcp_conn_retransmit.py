"""Reliability: RTO with exponential backoff and retries2, Karn, loss window and slow-start
retransmission, fast retransmit (RFC 5681), NewReno partial ACKs (RFC 6582), SACK loss recovery
(RFC 6675), SACK/DSACK generation (RFC 2018/2883), keepalive, user timeout."""
from __future__ import annotations

import pytest

from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.wire.tcp import TcpOptions

from tcp_harness import Harness

PLAIN = TcpConfig(timestamps=False, sack=False, window_scaling=False)
SACK = TcpConfig(timestamps=False, sack=True, window_scaling=False)
MSS = 1460


def est(cfg=PLAIN, *, sack=False, rtt=0.01, window=65535):
    h = Harness(cfg, iss=1000)
    h.establish_active(5000, rtt=rtt, window=window, peer_opts=TcpOptions(mss=1460, sack_permitted=sack))
    return h


def seg_seq(i):
    return 1001 + i * MSS


# ------------------------------------------------------------------ RTO

def test_rto_backoff_and_retries2_timeout():
    h = est(TcpConfig(timestamps=False, sack=False, window_scaling=False, retries2=4))
    h.conn.send(b"x" * 100, 0.0 + 0.01)
    h.take()
    rto = h.conn.rtt.rto
    assert rto == pytest.approx(0.01 + 0.2)
    out = h.run_until(100.0)
    times = [round(s.t - 0.01, 6) for s in out]
    assert times == pytest.approx([rto, 3 * rto, 7 * rto, 15 * rto])
    assert all(s.seq == 1001 and len(s.payload) == 100 for s in out)
    assert isinstance(h.rec.closed[0], TimeoutError) and h.conn.state == "CLOSED"
    assert h.counters["TCPTimeouts"] == 4 and h.counters["RetransSegs"] == 4
    assert h.counters["TCPAbortOnTimeout"] == 1 and h.released == [h.conn]
    assert h.conn.retransmits == 4


def test_rto_capped_at_rto_max():
    h = est(TcpConfig(timestamps=False, sack=False, window_scaling=False, rto_max=1.0, retries2=8))
    h.conn.send(b"x", 0.01)
    h.take()
    out = h.run_until(100.0)
    gaps = [round(b.t - a.t, 6) for a, b in zip(out, out[1:])]
    assert max(gaps) == pytest.approx(1.0)


def test_rto_resets_cwnd_and_slow_start_retransmits():
    h = est()
    h.conn.send(b"y" * 10 * MSS, 0.02)
    assert len(h.take()) == 10
    out = h.run_until(0.25)
    assert [s.seq for s in out] == [seg_seq(0)]                       # one segment: LW = 1 MSS
    assert h.conn.cc.cwnd == MSS
    out = h.feed(0.26, ".", 5001, seg_seq(1))
    assert [s.seq for s in out] == [seg_seq(1), seg_seq(2)]           # slow start, go-back
    assert h.counters["TCPSlowStartRetrans"] == 2 and h.counters["TCPTimeouts"] == 1


def test_karn_no_sample_from_retransmitted_segment():
    h = est(rtt=0.05)
    srtt = h.conn.rtt.srtt
    h.conn.send(b"k" * 10, 0.1)
    h.take()
    h.run_until(0.5)                                                   # retransmitted
    h.feed(0.9, ".", 5001, 1011)
    assert h.conn.rtt.srtt == srtt
    h.conn.send(b"k" * 10, 1.0)
    h.feed(1.02, ".", 5001, 1021)
    assert h.conn.rtt.srtt != srtt                                     # a clean sample counts


def test_user_timeout_aborts():
    h = est(TcpConfig(timestamps=False, sack=False, window_scaling=False, user_timeout=2.0))
    h.conn.send(b"u", 0.01)
    h.take()
    h.run_until(10.0)
    assert isinstance(h.rec.closed[0], TimeoutError)
    assert h.conn.state == "CLOSED"
    t_closed = h.released and True
    assert t_closed


# ------------------------------------------------------------------ fast retransmit, NewReno

def _dupacks(h, t, n, ack=seg_seq(0), sack_blocks=()):
    out = []
    for i in range(n):
        opts = TcpOptions(sack_blocks=sack_blocks[i]) if sack_blocks else TcpOptions()
        out += h.feed(t, ".", 5001, ack, opts=opts)
    return out


def test_fast_retransmit_on_third_dupack_and_newreno_partial_ack():
    h = est()
    h.conn.send(b"z" * 14 * MSS, 0.02)
    assert len(h.take()) == 10                             # initial window
    # segments 0 and 3 lost; 1, 2 arrive -> 2 dupacks
    out = _dupacks(h, 0.03, 2)
    assert [len(s.payload) for s in out] == [MSS, MSS]     # limited transmit-like: new data
    out = _dupacks(h, 0.031, 1)
    assert out[0].seq == seg_seq(0) and h.counters["TCPFastRetrans"] == 1
    assert h.counters["TCPRenoRecovery"] == 1
    ss = h.conn.cc.ssthresh
    assert ss < 10 * MSS
    h.take()
    # partial ACK: up to segment 3 (lost) -> retransmit it at once (RFC 6582)
    out = h.feed(0.05, ".", 5001, seg_seq(3))
    assert out[0].seq == seg_seq(3) and h.conn.ca_state == 3
    # full ACK: recovery ends, cwnd = ssthresh
    h.feed(0.07, ".", 5001, h.conn.snd_nxt)
    assert h.conn.ca_state == 0 and h.conn.cc.cwnd == h.conn.cc.ssthresh
    assert h.counters["TCPTimeouts"] == 0


def test_no_fast_retransmit_on_window_update_dupacks():
    h = est()
    h.conn.send(b"z" * 5 * MSS, 0.02)
    h.take()
    for w in (60000, 61000, 62000, 63000):
        h.feed(0.03, ".", 5001, seg_seq(0), window=w)
    assert h.counters["TCPFastRetrans"] == 0


# ------------------------------------------------------------------ SACK

def test_sack_recovery_retransmits_holes_only():
    h = est(SACK, sack=True)
    assert h.conn.sack_ok
    h.conn.send(b"s" * 10 * MSS, 0.02)
    h.take()
    # segment 0 and 4 lost
    blocks = [((seg_seq(1), seg_seq(2)),), ((seg_seq(1), seg_seq(3)),), ((seg_seq(1), seg_seq(4)),)]
    out = _dupacks(h, 0.03, 3, sack_blocks=blocks)
    rtx = [s for s in out if s.seq == seg_seq(0)]
    assert rtx and h.counters["TCPSackRecovery"] == 1 and h.counters["TCPFastRetrans"] == 1
    h.take()
    # more SACKs above the second hole: segment 4 is lost too (3 segments SACKed above it)
    more = [((seg_seq(5), seg_seq(6)), (seg_seq(1), seg_seq(4))),
            ((seg_seq(5), seg_seq(7)), (seg_seq(1), seg_seq(4))),
            ((seg_seq(5), seg_seq(8)), (seg_seq(1), seg_seq(4)))]
    out = _dupacks(h, 0.04, 3, sack_blocks=more)
    assert seg_seq(4) in [s.seq for s in out]
    assert not any(s.seq in (seg_seq(1), seg_seq(2), seg_seq(3), seg_seq(5)) for s in out)
    h.feed(0.06, ".", 5001, h.conn.snd_nxt)
    assert h.conn.ca_state == 0 and h.conn.sb.sacked == 0


def test_dsack_received_is_counted_not_sacked():
    h = est(SACK, sack=True)
    h.conn.send(b"d" * 3 * MSS, 0.02)
    h.take()
    h.feed(0.03, ".", 5001, seg_seq(3))
    h.conn.send(b"d" * MSS, 0.04)
    h.take()
    h.feed(0.05, ".", 5001, seg_seq(3), opts=TcpOptions(sack_blocks=((seg_seq(0), seg_seq(1)),)))
    assert h.counters["TCPDSACKRecv"] == 1 and h.conn.sb.sacked == 0


def test_sack_blocks_generated_most_recent_first_max3_with_ts():
    h = Harness(TcpConfig(), iss=1000)
    h.establish_active(5000)
    base = 5001
    outs = []
    for k in (1, 3, 5, 7):                                    # four islands
        outs = h.feed(0.1 + k * 0.001, ".", base + k * 100, 1001, payload=b"o" * 50,
                      opts=TcpOptions(timestamp=(200, 0)))
    blocks = outs[-1].opts.sack_blocks
    assert blocks[0] == (base + 700, base + 750)              # most recent first
    assert len(blocks) == 3                                   # 3 fit with timestamps
    assert set(blocks[1:]) <= {(base + 100, base + 150), (base + 300, base + 350), (base + 500, base + 550)}
    assert outs[-1].ack == base


def test_dsack_generated_for_duplicate_data():
    h = est(SACK, sack=True)
    h.feed(0.1, "P.", 5001, 1001, payload=b"a" * 100)
    out = h.feed(0.2, "P.", 5001, 1001, payload=b"a" * 100)
    assert out[0].opts.sack_blocks == ((5001, 5101),) and out[0].ack == 5101
    assert h.counters["TCPDSACKOldSent"] == 1
    assert bytes(h.rec.data) == b"a" * 100


def test_dsack_for_duplicate_out_of_order_data():
    h = est(SACK, sack=True)
    h.feed(0.1, "P.", 5101, 1001, payload=b"b" * 100)
    out = h.feed(0.2, "P.", 5101, 1001, payload=b"b" * 100)
    assert out[0].opts.sack_blocks[0] == (5101, 5201)
    assert h.counters["TCPDSACKOfoSent"] == 1


# ------------------------------------------------------------------ keepalive

def test_keepalive_probes_then_timeout():
    cfg = TcpConfig(timestamps=False, sack=False, window_scaling=False, keepalive=True,
                    keepalive_time=100.0, keepalive_intvl=10.0, keepalive_probes=3)
    h = est(cfg)
    out = h.run_until(200.0)
    assert [(round(s.t, 3), s.flags, s.seq) for s in out] == [
        (100.01, ".", 1000), (110.01, ".", 1000), (120.01, ".", 1000), (130.01, "R.", 1001)]
    assert isinstance(h.rec.closed[0], TimeoutError) and h.counters["TCPKeepAlive"] == 3


def test_keepalive_answered_keeps_connection():
    cfg = TcpConfig(timestamps=False, sack=False, window_scaling=False, keepalive=True,
                    keepalive_time=100.0, keepalive_intvl=10.0, keepalive_probes=3)
    h = est(cfg)
    out = h.run_until(100.5)
    assert len(out) == 1
    h.feed(100.5, ".", 5001, 1001)                            # the probe's answer
    out = h.run_until(200.4)
    assert out == [] and h.conn.state == "ESTABLISHED"
    out = h.run_until(200.6)
    assert len(out) == 1 and out[0].t == pytest.approx(200.5)


def test_keepalive_not_sent_when_traffic_flows():
    cfg = TcpConfig(timestamps=False, sack=False, window_scaling=False, keepalive=True,
                    keepalive_time=100.0, keepalive_intvl=10.0, keepalive_probes=3)
    h = est(cfg)
    for t in range(10, 300, 50):
        h.feed(float(t), "P.", 5001 + t, 1001, payload=b"x")
    h.take()
    assert h.counters["TCPKeepAlive"] == 0


def test_window_shrunk_to_zero_with_data_outstanding_lives_while_peer_answers():
    """Linux tcp_retransmit_timer: with SND.WND = 0 the retransmissions are probes and the
    connection is only dropped after rto_max without any answer (RFC 9293 MUST-37/SHLD-17)."""
    h = est(TcpConfig(timestamps=False, sack=False, window_scaling=False, retries2=3, rto_max=10.0))
    c = h.conn
    c.send(b"z" * 2 * MSS, 0.1)
    h.take()
    h.feed(0.11, ".", 5001, 1001, window=0)
    for _ in range(8):
        ne = h.wheel.next_expiry()
        h.run_until(ne)
        h.feed(h.now + 0.01, ".", 5001, 1001, window=0)
    assert c.state == "ESTABLISHED"
    h.run_until(h.now + 100.0)                                  # the peer goes silent
    assert c.state == "CLOSED" and isinstance(h.rec.closed[0], TimeoutError)
