"""Incoming segment validation: acceptability table (RFC 9293 3.10.7.4), RST handling and RFC 5961
challenge ACKs (with rate limit), SYN in synchronized states, unacceptable ACKs (RFC 5961 5),
PAWS and TS.Recent (RFC 7323), sequence numbers near 2**32."""
from __future__ import annotations

from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.wire.tcp import TcpOptions

from tcp_harness import Harness

PLAIN = TcpConfig(timestamps=False, sack=False, window_scaling=False)
TOP = 0xFFFFFFFF


def est(cfg=PLAIN, iss=1000, peer_iss=5000, **kw):
    h = Harness(cfg, iss=iss, **kw)
    h.establish_active(peer_iss, peer_opts=TcpOptions(mss=1460))
    return h


def test_in_window_rst_not_exact_gets_challenge_ack():
    h = est()
    out = h.feed(0.1, "R", 5001 + 100, 0)
    assert [(s.flags, s.seq, s.ack) for s in out] == [(".", 1001, 5001)]
    assert h.conn.state == "ESTABLISHED" and h.counters["TCPChallengeACK"] == 1


def test_out_of_window_rst_dropped_silently():
    h = est()
    assert h.feed(0.1, "R", 5001 + 10_000_000, 0) == []
    assert h.feed(0.1, "R", 4000, 0) == []
    assert h.conn.state == "ESTABLISHED" and h.counters["TCPChallengeACK"] == 0


def test_syn_in_established_gets_challenge_ack():
    h = est()
    out = h.feed(0.1, "S", 12345, 0, opts=TcpOptions(mss=1460))
    assert [(s.flags, s.seq, s.ack) for s in out] == [(".", 1001, 5001)]
    assert h.conn.state == "ESTABLISHED" and h.counters["TCPChallengeACK"] == 1
    out = h.feed(0.1, "S", 5001, 0, opts=TcpOptions(mss=1460))       # even in window
    assert len(out) == 1 and h.conn.state == "ESTABLISHED"


def test_challenge_ack_rate_limit():
    h = est(TcpConfig(timestamps=False, sack=False, window_scaling=False, challenge_ack_limit=3))
    sent = []
    for i in range(10):
        sent += h.feed(0.1 + i * 0.01, "R", 5001 + 10 + i, 0)
    assert len(sent) == 3 and h.counters["TCPChallengeACK"] == 3
    sent = h.feed(1.2, "R", 5001 + 50, 0)
    assert len(sent) == 1                                   # a new second


def test_ack_for_unsent_data_is_dropped_with_ack():
    h = est()
    out = h.feed(0.1, "P.", 5001, 1001 + 5000, payload=b"injected")
    assert [(s.flags, s.ack) for s in out] == [(".", 5001)]
    assert h.rec.data == b"" and h.conn.rcv_nxt == 5001           # RFC 5961 5: data dropped


def test_too_old_ack_is_dropped():
    h = est()
    out = h.feed(0.1, "P.", 5001, (1001 - 200000) & TOP, payload=b"x")
    assert len(out) == 1 and h.rec.data == b""


def test_unacceptable_segment_gets_ack():
    h = est()
    out = h.feed(0.1, "P.", 5001 + 100000, 1001, payload=b"far")     # beyond the window
    assert [(s.flags, s.ack) for s in out] == [(".", 5001)]
    out = h.feed(0.1, "P.", 4000, 1001, payload=b"old")              # entirely old
    assert [(s.flags, s.ack) for s in out] == [(".", 5001)]


def test_zero_window_special_allowance_processes_ack():
    cfg = TcpConfig(timestamps=False, sack=False, window_scaling=False, rcvbuf=2000, moderate_rcvbuf=False)
    h = est(cfg)
    h.conn.set_reading(False, 0.1)
    h.feed(0.1, ".", 5001, 1001, payload=b"f" * 2000)                # fills the window
    h.take()
    h.conn.send(b"abc", 0.2)
    h.take()
    out = h.feed(0.3, "P.", 7001, 1004, payload=b"zz")               # zero window: data dropped
    assert h.conn.snd_una == 1004                                    # ... but the ACK counted
    assert [(s.ack, s.window) for s in out] == [(7001, 0)]


def test_paws_drops_old_timestamp_and_acks():
    h = Harness(TcpConfig(), iss=1000)
    h.establish_active(5000)
    h.feed(0.1, "P.", 5001, 1001, payload=b"a", opts=TcpOptions(timestamp=(500, 100)))
    h.take()
    out = h.feed(0.2, "P.", 5002, 1001, payload=b"b", opts=TcpOptions(timestamp=(400, 100)))
    assert [(s.flags, s.ack) for s in out] == [(".", 5002)]
    assert h.counters["PAWSEstab"] == 1 and bytes(h.rec.data) == b"a"
    out = h.feed(0.3, "P.", 5002, 1001, payload=b"b", opts=TcpOptions(timestamp=(501, 100)))
    assert bytes(h.rec.data) == b"ab"
    assert out[0].tsecr == 501                                       # TS.Recent echoed


def test_paws_timestamp_wraps():
    h = Harness(TcpConfig(), iss=1000)
    syn = h.establish_active(5000, peer_opts=TcpOptions(mss=1460, wscale=7, sack_permitted=True,
                                                         timestamp=(TOP - 10, 0)))
    out = h.feed(0.1, "P.", 5001, 1001, payload=b"a", opts=TcpOptions(timestamp=(5, 0)))   # wrapped: newer
    assert bytes(h.rec.data) == b"a" and out[0].tsecr == 5


def test_ts_recent_not_updated_by_out_of_order_segment():
    h = Harness(TcpConfig(), iss=1000)
    h.establish_active(5000)
    h.feed(0.1, "P.", 5001 + 100, 1001, payload=b"x" * 10, opts=TcpOptions(timestamp=(900, 0)))
    out = h.take()
    assert h.conn.ts_recent == 100                                   # from the SYN-ACK


def test_rst_with_old_timestamp_still_processed():
    h = Harness(TcpConfig(), iss=1000)
    h.establish_active(5000)
    h.feed(0.1, "R", 5001, 0, opts=TcpOptions(timestamp=(1, 0)))
    assert h.conn.state == "CLOSED"


def test_rtt_from_timestamps_even_after_retransmission():
    h = Harness(TcpConfig(), iss=1000)
    h.establish_active(5000, rtt=0.05)
    h.conn.send(b"x" * 100, 0.1)
    first = h.take_one()
    rtx = h.run_until(0.36)[0]
    assert abs(rtx.t - 0.35) < 1e-9                                   # RTO = 0.05 + max(4*0.025, 0.2)
    assert rtx.seq == first.seq and rtx.tsval > first.tsval
    h.feed(rtx.t + 0.03, ".", 5001, 1101, opts=TcpOptions(timestamp=(200, rtx.tsval)))
    assert abs(h.conn.rtt.srtt - (0.05 * 7 / 8 + 0.03 / 8)) < 0.002


def test_sequence_numbers_near_2_32():
    h = est(iss=TOP - 2, peer_iss=TOP - 1)
    c = h.conn
    assert c.snd_una == TOP - 1 and c.rcv_nxt == TOP
    c.send(b"0123456789", 0.1)
    out = h.take_one()
    assert out.seq == TOP - 1
    h.feed(0.2, "P.", TOP, 8, payload=b"abcdef")                     # peer data wraps too
    assert bytes(h.rec.data) == b"abcdef" and c.rcv_nxt == 5
    assert c.snd_una == 8 and c.send_buffer_size == 0
    out = h.feed(0.3, "P.", 5 + 100, 8, payload=b"ooo")              # out of order after wrap
    assert [s.ack for s in out] == [5]
    h.feed(0.3, "P.", 5, 8, payload=b"g" * 100)
    assert bytes(h.rec.data).endswith(b"g" * 100 + b"ooo") and c.rcv_nxt == 108


def test_duplicate_retransmission_updates_ts_recent():
    """Our ACK was lost and the peer retransmitted: the dupack echoes the retransmission's
    TSval (Linux-like deviation from RFC 7323 5.3's R2-before-R3 order), so the peer does not
    measure its whole backoff as RTT."""
    h = Harness(TcpConfig(), iss=1000)
    h.establish_active(5000)
    h.feed(0.1, "P.", 5001, 1001, payload=b"a" * 100, opts=TcpOptions(timestamp=(500, 100)))
    h.take()
    out = h.feed(1.5, "P.", 5001, 1001, payload=b"a" * 100, opts=TcpOptions(timestamp=(1900, 100)))
    assert [(s.ack, s.tsecr) for s in out] == [(5101, 1900)]
