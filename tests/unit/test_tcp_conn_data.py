"""Data transfer: segmentation, Nagle/cork/nodelay, TSO, flow control (rwnd, receiver SWS),
delayed ACK policy (quickack, every second segment, ato timer), zero window and persist probes,
window updates on resume, batching of delivery, header prediction."""
from __future__ import annotations

import pytest

from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.wire.tcp import TcpOptions

from tcp_harness import Harness

PLAIN = TcpConfig(timestamps=False, sack=False, window_scaling=False)
MSS = 1460


def est(cfg=PLAIN, *, window=65535, iss=1000, peer_iss=5000, passive=False, **kw):
    h = Harness(cfg, iss=iss, **kw)
    if passive:
        h.establish_passive(peer_iss, window=window, peer_opts=TcpOptions(mss=1460))
    else:
        h.establish_active(peer_iss, window=window, peer_opts=TcpOptions(mss=1460))
    return h


# ------------------------------------------------------------------ sending

def test_initial_window_is_10_segments_and_psh_on_last():
    h = est()
    h.conn.send(b"x" * 20 * MSS, 0.1)
    out = h.take()
    assert [len(s.payload) for s in out] == [MSS] * 10
    assert [s.seq for s in out] == [1001 + i * MSS for i in range(10)]
    assert all(s.flags == "." for s in out)
    # ACK of the first two: two more (slow start, byte counting)
    out = h.feed(0.12, ".", 5001, 1001 + 2 * MSS)
    assert [len(s.payload) for s in out] == [MSS] * 4
    assert h.rec.names()[-1] == "send_space"


def test_small_write_goes_out_at_once_then_nagle_holds_next_small():
    h = est()
    h.conn.send(b"a", 0.1)
    assert [s.payload for s in h.take()] == [b"a"]
    h.conn.send(b"b", 0.1)
    h.conn.send(b"c", 0.1)
    assert h.take() == []                         # Nagle: a small segment is unacknowledged
    out = h.feed(0.2, ".", 5001, 1002)
    assert [(s.seq, s.payload, s.flags) for s in out] == [(1002, b"bc", "P.")]


def test_nodelay_sends_every_small_write():
    h = est(TcpConfig(timestamps=False, sack=False, window_scaling=False, nodelay=True))
    for ch in b"abc":
        h.conn.send(bytes([ch]), 0.1)
    assert [s.payload for s in h.take()] == [b"a", b"b", b"c"]


def test_nagle_lets_full_segments_through():
    h = est()
    h.conn.send(b"a", 0.1)
    h.take()
    h.conn.send(b"y" * (MSS + 10), 0.1)
    out = h.take()
    assert [len(s.payload) for s in out] == [MSS]  # the 10-byte tail waits
    out = h.feed(0.2, ".", 5001, 1002)
    assert [len(s.payload) for s in out] == [10]


def test_cork_holds_partial_segments_until_fin():
    h = est(TcpConfig(timestamps=False, sack=False, window_scaling=False, cork=True))
    h.conn.send(b"z" * 100, 0.1)
    assert h.take() == []
    h.conn.send(b"z" * (MSS - 100), 0.1)
    assert [len(s.payload) for s in h.take()] == [MSS]
    h.conn.send(b"tail", 0.1)
    assert h.take() == []
    h.conn.shutdown(0.1)
    assert [(s.flags, s.payload) for s in h.take()] == [("FP.", b"tail")]


def test_tso_output_counts_segments():
    h = est(TcpConfig(timestamps=False, sack=False, window_scaling=False, tso_segs=4))
    h.conn.send(b"q" * 10 * MSS, 0.1)
    out = h.take()
    assert [len(s.payload) for s in out] == [4 * MSS, 4 * MSS, 2 * MSS]
    assert h.counters["OutSegs"] - 2 == 10          # minus the handshake SYN and ACK


def test_peer_window_limits_and_sws():
    h = est(window=3000)
    h.conn.send(b"w" * 10000, 0.1)
    out = h.take()
    assert [len(s.payload) for s in out] == [MSS, MSS]   # 80 bytes of window left: wait (SWS)
    out = h.feed(0.2, ".", 5001, 1001 + 2 * MSS, window=3000)
    assert [len(s.payload) for s in out] == [MSS, MSS]


def test_send_after_shutdown_raises():
    h = est()
    h.conn.shutdown(0.1)
    with pytest.raises(BrokenPipeError):
        h.conn.send(b"x", 0.1)


# ------------------------------------------------------------------ receiving / ACK policy

def test_data_delivered_once_per_batch_and_one_ack():
    h = est()
    segs = [dict(flags=".", seq=5001 + i * 100, ack=1001, payload=bytes([65 + i]) * 100) for i in range(5)]
    out = h.feed_batch(0.1, segs)
    assert h.rec.events[-1] == ("data", b"".join(bytes([65 + i]) * 100 for i in range(5)))
    assert [e[0] for e in h.rec.events].count("data") == 1
    assert [(s.flags, s.ack) for s in out] == [(".", 5501)]


def test_quickack_then_every_second_full_segment_then_delayed():
    h = est()
    seq = 5001
    t = 0.1
    # quickack mode at the start: every segment is ACKed at once
    for i in range(16):
        out = h.feed(t, ".", seq, 1001, payload=b"d" * MSS)
        seq += MSS
        assert [s.ack for s in out] == [seq], i
        t += 0.001
    # then: one full segment -> delayed; the second -> ACK now
    out = h.feed(t, ".", seq, 1001, payload=b"d" * MSS)
    seq += MSS
    assert out == []
    out = h.feed(t, ".", seq, 1001, payload=b"d" * MSS)
    seq += MSS
    assert [s.ack for s in out] == [seq]
    # a lone segment is ACKed by the delayed-ACK timer
    out = h.feed(t + 0.001, ".", seq, 1001, payload=b"d" * 100)
    seq += 100
    assert out == []
    later = h.run_until(t + 0.5)
    assert len(later) == 1 and later[0].ack == seq
    assert 0.04 - 1e-9 <= later[0].t - (t + 0.001) <= 0.2 + 1e-9
    assert h.counters["DelayedACKs"] == 1


def test_delayed_ack_piggybacks_on_response():
    h = est()
    for i in range(16):                    # leave quickack mode
        h.feed(0.1, ".", 5001 + i * 10, 1001, payload=b"r" * 10)
    h.take()
    h.rec.on_data = lambda d: h.conn.send(b"resp", h.now)
    out = h.feed(0.2, "P.", 5161, 1001, payload=b"req")
    assert [(s.payload, s.ack) for s in out] == [(b"resp", 5164)]
    assert h.run_until(0.4) == []                  # no separate ACK (the RTO comes at 0.41)


def test_out_of_order_gets_immediate_dupack_and_fill_delivers():
    h = est()
    out = h.feed(0.1, ".", 5001 + 1000, 1001, payload=b"B" * 1000)
    assert [(s.ack, s.window) for s in out] == [(5001, 65535)]
    assert h.counters["TCPOFOQueue"] == 1 and h.rec.names() == ["established"]
    out = h.feed(0.2, ".", 5001, 1001, payload=b"A" * 1000)
    assert [s.ack for s in out] == [7001]
    assert bytes(h.rec.data) == b"A" * 1000 + b"B" * 1000


def test_pause_reading_closes_window_resume_sends_update():
    cfg = TcpConfig(timestamps=False, sack=False, window_scaling=False, rcvbuf=8000, moderate_rcvbuf=False)
    h = est(cfg)
    h.conn.set_reading(False, 0.1)
    seq = 5001
    acks = []
    for i in range(6):
        out = h.feed(0.1 + i * 0.01, ".", seq, 1001, payload=b"p" * 1460)
        seq += 1460
        acks += out
    # the 6th segment only fits partly (700 of 1460 bytes): the window is full and
    # advertised as 0 (never shrunk before: 700 was still offered after the 5th)
    seq = 5001 + 8000
    assert h.rec.names() == ["established"]                     # nothing delivered
    assert (acks[-1].ack, acks[-1].window) == (seq, 0)
    assert h.conn.unread_bytes == 8000
    h.take()
    h.conn.set_reading(True, 1.0)
    assert bytes(h.rec.data) == b"p" * 8000
    upd = h.take()
    assert len(upd) == 1 and upd[0].window == 8000 and upd[0].ack == seq   # window update


def test_receiver_does_not_shrink_window():
    cfg = TcpConfig(timestamps=False, sack=False, window_scaling=False, rcvbuf=10000, moderate_rcvbuf=False)
    h = est(cfg)
    h.conn.set_reading(False, 0.1)
    edge0 = h.conn.rcv_adv                 # the right edge advertised so far
    assert edge0 > 5001 + 1000
    out = h.feed(0.1, ".", 5001, 1001, payload=b"x" * 1000)
    # RFC 9293 3.8.6.2.2 / SHLD-14: the right edge never moves left, even though the 1000 bytes
    # stay unread and the free space shrank
    assert out[0].ack == 5001 + 1000
    assert out[0].ack + out[0].window >= edge0


def test_data_beyond_window_is_trimmed():
    cfg = TcpConfig(timestamps=False, sack=False, window_scaling=False, rcvbuf=2000, moderate_rcvbuf=False)
    h = Harness(cfg, iss=1000)
    h.establish_active(5000, peer_opts=TcpOptions(mss=1460))
    h.conn.set_reading(False, 0.1)
    w = h.conn.rcv_adv - h.conn.rcv_nxt
    out = h.feed(0.1, ".", 5001, 1001, payload=b"y" * (w + 500))
    assert h.conn.unread_bytes == w and out[-1].ack == 5001 + w


def test_zero_window_probe_with_backoff_and_recovery():
    h = est(window=0)
    h.conn.send(b"data", 0.1)
    assert h.take() == []
    out = h.run_until(5.0)
    # persist timer: first probe after one RTO (1 s, no RTT sample yet but SYN gave one: srtt 10ms ->
    # rto 0.21), then doubling
    ts = [round(s.t - 0.1, 3) for s in out]
    assert all(s.seq == 1000 and s.payload == b"" and s.flags == "." for s in out)   # SND.UNA - 1
    assert len(ts) >= 3 and all(abs((b - a) - 2 * (a - p)) < 1e-6 for p, a, b in zip([0.0] + ts, ts, ts[1:]))
    assert h.counters["TCPWinProbe"] == len(out)
    # the peer answers a probe with an open window: data goes out
    out = h.feed(5.0, ".", 5001, 1001, window=1000)
    assert [(s.seq, s.payload) for s in out] == [(1001, b"data")]


def test_zero_window_persists_while_peer_answers():
    h = est(TcpConfig(timestamps=False, sack=False, window_scaling=False, retries2=3), window=0)
    h.conn.send(b"data", 0.1)
    t = 0.1
    for _ in range(10):
        while True:                                     # step to the next probe
            ne = h.wheel.next_expiry()
            out = h.run_until(ne)
            if out:
                break
        assert out[0].payload == b"" and out[0].seq == 1000
        h.feed(h.now + 0.01, ".", 5001, 1001, window=0)    # the peer is alive: zero window
    assert h.conn.state == "ESTABLISHED" and h.counters["TCPWinProbe"] == 10


def test_header_prediction_counts_hits():
    h = est()
    for i in range(4):
        h.feed(0.1 + i * 0.01, ".", 5001 + i * 100, 1001, payload=b"h" * 100)
    assert h.counters["TCPHPHits"] >= 3
    assert bytes(h.rec.data) == b"h" * 400


def test_receive_buffer_autotuning_grows():
    cfg = TcpConfig(timestamps=False, sack=False, window_scaling=True, rcvbuf=65536)
    h = Harness(cfg, iss=1000)
    h.establish_active(5000, peer_opts=TcpOptions(mss=1460, wscale=7))
    seq = 5001
    t = 0.1
    for i in range(200):
        h.feed(t, ".", seq, 1001, payload=b"a" * 1460)
        seq += 1460
        t += 0.0005
    assert h.conn.rcvbuf > 65536


def test_bulk_batch_is_acked_before_delivery_when_the_window_is_open():
    """A batch of several full segments with a window that the delivery would not double: the
    ACK goes out before the data is handed over (as Linux ACKs in softirq before the
    application reads), one ACK per batch, the right edge never moves left.  While the
    delivery would open the window a lot (the first batch after the SYN's 64 KB window), the
    ACK stays after it and carries the opened window."""
    cfg = TcpConfig(timestamps=False, sack=False, window_scaling=True, rcvbuf=1 << 20, moderate_rcvbuf=False)
    h = Harness(cfg, iss=1000)
    h.establish_active(5000, peer_opts=TcpOptions(mss=1460, wscale=7))
    acks_at_delivery = []
    h.rec.on_data = lambda d: acks_at_delivery.append([s.ack for s in h.out])
    seq = 5001
    t = 0.1
    for i in range(16):                    # leave quickack mode (each segment ACKed)
        h.feed(t, ".", seq, 1001, payload=b"q" * MSS)
        seq += MSS
    h.take()
    acks_at_delivery.clear()
    edges = []
    for batch in range(3):
        segs = [dict(flags=".", seq=seq + i * MSS, ack=1001, payload=b"b" * MSS) for i in range(4)]
        out = h.feed_batch(t, segs)
        seq += 4 * MSS
        assert [s.ack for s in out] == [seq]
        assert acks_at_delivery[-1][-1] == seq          # already sent when the data was delivered
        edges.append(out[0].ack + (out[0].window << h.conn.rcv_wscale))
        h.take()
        t += 0.001
    assert edges == sorted(edges)
    assert bytes(h.rec.data) == b"q" * 16 * MSS + b"b" * 12 * MSS


def test_batch_that_opens_the_window_a_lot_is_acked_after_delivery():
    cfg = TcpConfig(timestamps=False, sack=False, window_scaling=True, rcvbuf=8 * MSS, moderate_rcvbuf=False)
    h = Harness(cfg, iss=1000)
    h.establish_active(5000, peer_opts=TcpOptions(mss=1460, wscale=7))
    acks_at_delivery = []
    h.rec.on_data = lambda d: acks_at_delivery.append(len(h.out))
    segs = [dict(flags=".", seq=5001 + i * MSS, ack=1001, payload=b"s" * MSS) for i in range(6)]
    out = h.feed_batch(0.1, segs)
    # 6 of 8 segments' space taken: the delivery frees 4x the window left -> one ACK, after it,
    # with the whole buffer as the window
    assert acks_at_delivery == [0]
    assert [s.ack for s in out] == [5001 + 6 * MSS]
    assert out[0].window << h.conn.rcv_wscale >= 7 * MSS


def test_cork_partial_segment_flushed_after_ceiling():
    h = est(TcpConfig(timestamps=False, sack=False, window_scaling=False, cork=True))
    h.conn.send(b"c" * 100, 0.1)
    assert h.take() == []
    out = h.run_until(0.5)
    # Linux: TCP_CORK holds a partial frame at most ~200 ms; here the persist/probe timer
    # (one RTO, >= rto_min = 200 ms) flushes it
    assert [(len(s.payload), s.seq) for s in out] == [(100, 1001)]
    assert 0.2 <= out[0].t - 0.1 <= 0.25
