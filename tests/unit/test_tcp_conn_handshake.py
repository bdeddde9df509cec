"""Handshakes (active, passive, simultaneous), SYN/SYN-ACK retransmission timing, RST to SYN,
option negotiation (MSS, window scale, SACK-permitted, timestamps), rst_for()."""
from __future__ import annotations

import pytest

from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.connection import rst_for
from aiotcpstack.wire.tcp import ACK, FIN, RST, SYN, TcpHeader, TcpOptions

from tcp_harness import Harness

PLAIN = TcpConfig(timestamps=False, sack=False, window_scaling=False)


def test_active_open_syn_options_and_ack():
    h = Harness(iss=1000)
    h.conn.connect(0.0)
    syn = h.take_one()
    assert syn.flags == "S" and syn.seq == 1000 and syn.ack == 0
    assert syn.window == 65535                                     # never scaled in a SYN
    assert syn.opts.mss == 1460 and syn.opts.wscale == 7 and syn.opts.sack_permitted
    assert syn.opts.timestamp == (0, 0)
    assert h.conn.state == "SYN_SENT" and h.counters["ActiveOpens"] == 1
    out = h.feed(0.05, "S.", 5000, 1001, window=29200, opts=TcpOptions(mss=1400, wscale=9, sack_permitted=True,
                                                                         timestamp=(777, 0)))
    assert [s.flags for s in out] == ["."]
    ack = out[0]
    assert ack.seq == 1001 and ack.ack == 5001 and ack.opts.timestamp == (50, 777)
    assert ack.window == 131072 >> 7
    c = h.conn
    assert c.state == "ESTABLISHED" and h.rec.names() == ["established"]
    assert c.snd_wnd == 29200                                      # SYN-ACK window unscaled
    assert c.snd_wscale == 9 and c.rcv_wscale == 7 and c.sack_ok and c.ts_ok
    assert c.mss == 1400 - 12                                      # min(peer, ours) - TS option
    assert h.counters["CurrEstab"] == 1
    assert c.rtt.srtt == pytest.approx(0.05)                       # RTT sample from the SYN


def test_wscale_only_if_both_sides_send_it():
    h = Harness(iss=1000)
    h.conn.connect(0.0)
    h.take()
    h.feed(0.01, "S.", 5000, 1001, window=1000, opts=TcpOptions(mss=1460))
    c = h.conn
    assert not c.ws_ok and c.snd_wscale == 0 and c.rcv_wscale == 0
    assert not c.sack_ok and not c.ts_ok and c.mss == 1460
    h.take()
    h.feed(0.02, ".", 5001, 1001, window=1000)
    assert c.snd_wnd == 1000
    c.send(b"x", 0.02)
    assert h.take_one().window == 65535                             # unscaled: clamped at 64K


def test_default_mss_when_absent_ipv4_and_ipv6():
    h = Harness(iss=1)
    h.conn.connect(0.0)
    h.take()
    h.feed(0.01, "S.", 5, 2, opts=TcpOptions())
    assert h.conn.mss == 536                                       # RFC 9293 3.7.1 / RFC 1122
    h6 = Harness(iss=1, local=(bytes(16), 1), remote=(bytes(15) + b"\x01", 2))
    h6.conn.connect(0.0)
    h6.take()
    h6.feed(0.01, "S.", 5, 2, opts=TcpOptions())
    assert h6.conn.mss == 1220


def test_syn_retransmission_1_2_4_then_timeout():
    h = Harness(TcpConfig(syn_retries=3), iss=1000)
    h.conn.connect(0.0)
    h.take()
    out = h.run_until(100.0)
    assert [(s.t, s.flags, s.seq) for s in out] == [(1.0, "S", 1000), (3.0, "S", 1000), (7.0, "S", 1000)]
    assert [s.tsval for s in out] == [1000, 3000, 7000]
    assert h.rec.closed and isinstance(h.rec.closed[0], TimeoutError)
    assert h.conn.state == "CLOSED" and h.released == [h.conn]
    assert h.counters["AttemptFails"] == 1 and h.counters["TCPTimeouts"] == 3
    assert h.counters["TCPSynRetrans"] == 3


def test_default_syn_retries_total_127s():
    h = Harness(iss=1000)
    h.conn.connect(0.0)
    h.take()
    out = h.run_until(200.0)
    assert [s.t for s in out] == [1.0, 3.0, 7.0, 15.0, 31.0, 63.0]
    # closed at 127 s (the sixth retransmission's timeout of 64 s)
    assert isinstance(h.rec.closed[0], TimeoutError)


def test_syn_timeout_time_is_127():
    h = Harness(iss=1000)
    h.conn.connect(0.0)
    h.run_until(126.9)
    assert h.conn.state == "SYN_SENT"
    h.run_until(127.0)
    assert h.conn.state == "CLOSED"


def test_rst_answering_syn_is_connection_refused():
    h = Harness(iss=1000)
    h.conn.connect(0.0)
    h.take()
    out = h.feed(0.01, "R.", 0, 1001, window=0)
    assert out == []
    assert isinstance(h.rec.closed[0], ConnectionRefusedError)
    assert h.conn.state == "CLOSED" and h.released == [h.conn]
    assert h.counters["AttemptFails"] == 1 and h.counters["CurrEstab"] == 0


def test_rst_with_wrong_ack_in_syn_sent_is_ignored():
    h = Harness(iss=1000)
    h.conn.connect(0.0)
    h.take()
    assert h.feed(0.01, "R.", 0, 999) == []       # unacceptable ACK + RST: drop silently
    assert h.feed(0.01, "R", 0, 0) == []          # RST without ACK: drop
    assert h.conn.state == "SYN_SENT" and h.rec.events == []


def test_bad_ack_in_syn_sent_gets_rst():
    h = Harness(iss=1000)
    h.conn.connect(0.0)
    h.take()
    out = h.feed(0.01, "S.", 5000, 4242)
    assert [(s.flags, s.seq) for s in out] == [("R", 4242)]
    assert h.conn.state == "SYN_SENT"


def test_passive_open_synack_and_ack():
    h = Harness(iss=0xFFFFFFFF, now=0.0)
    syn = h.segment("S", 7000, 0, 65535, TcpOptions(mss=1400, wscale=2, sack_permitted=True, timestamp=(99, 0)))
    h.conn.accept_syn(syn, 0.0)
    sa = h.take_one()
    assert sa.flags == "S." and sa.seq == 0xFFFFFFFF and sa.ack == 7001 and sa.window == 65535
    assert sa.opts.mss == 1460 and sa.opts.wscale == 7 and sa.opts.sack_permitted and sa.opts.timestamp == (0, 99)
    assert h.conn.state == "SYN_RECEIVED" and h.counters["PassiveOpens"] == 1
    out = h.feed(0.02, ".", 7001, 0, window=1000, opts=TcpOptions(timestamp=(100, 0)))
    assert out == []
    assert h.conn.state == "ESTABLISHED" and h.rec.names() == ["established"]
    assert h.conn.snd_wnd == 4000 and h.conn.snd_una == 0                       # ISN wrapped
    assert h.counters["CurrEstab"] == 1


def test_synack_retransmission_bounded_by_synack_retries():
    h = Harness(TcpConfig(synack_retries=2), iss=1)
    h.conn.accept_syn(h.segment("S", 7000, 0, 65535, TcpOptions(mss=1460)), 0.0)
    h.take()
    out = h.run_until(50.0)
    assert [(s.t, s.flags) for s in out] == [(1.0, "S."), (3.0, "S.")]
    assert h.conn.state == "CLOSED" and h.released == [h.conn]
    assert h.counters["AttemptFails"] == 1


def test_retransmitted_syn_gets_synack_again():
    h = Harness(iss=1)
    syn = h.segment("S", 7000, 0, 65535, TcpOptions(mss=1460))
    h.conn.accept_syn(syn, 0.0)
    h.take()
    out = h.feed(0.5, "S", 7000, 0, opts=TcpOptions(mss=1460))
    assert [(s.flags, s.seq, s.ack) for s in out] == [("S.", 1, 7001)]


def test_bad_ack_in_syn_received_gets_rst():
    h = Harness(iss=1)
    h.conn.accept_syn(h.segment("S", 7000, 0, 65535, TcpOptions(mss=1460)), 0.0)
    h.take()
    out = h.feed(0.1, ".", 7001, 99)
    assert [(s.flags, s.seq) for s in out] == [("R", 99)]
    assert h.conn.state == "SYN_RECEIVED"


def test_rst_in_syn_received_passive_closes_quietly():
    h = Harness(iss=1)
    h.conn.accept_syn(h.segment("S", 7000, 0, 65535, TcpOptions(mss=1460)), 0.0)
    h.take()
    h.feed(0.1, "R", 7001, 0)
    assert h.conn.state == "CLOSED" and h.released == [h.conn]


def test_simultaneous_open():
    h = Harness(PLAIN, iss=1000)
    h.conn.connect(0.0)
    h.take()
    # the peer's SYN crosses ours
    out = h.feed(0.01, "S", 5000, 0, window=8000, opts=TcpOptions(mss=1460))
    assert [(s.flags, s.seq, s.ack) for s in out] == [("S.", 1000, 5001)]
    assert h.conn.state == "SYN_RECEIVED"
    # the peer's SYN-ACK for our SYN
    out = h.feed(0.02, "S.", 5000, 1001, window=8000, opts=TcpOptions(mss=1460))
    # Linux (tcp_validate_incoming): a SYN-ACK acknowledging our SYN completes it
    assert out == [] and h.conn.state == "ESTABLISHED"
    assert h.conn.snd_una == 1001 and h.conn.rcv_nxt == 5001 and h.conn.snd_wnd == 8000
    h.feed(0.03, ".", 5001, 1001, window=8000)
    assert h.conn.state == "ESTABLISHED"
    assert h.rec.names() == ["established"]


def test_simultaneous_open_synack_retransmission():
    h = Harness(PLAIN, iss=1000)
    h.conn.connect(0.0)
    h.take()
    h.feed(0.5, "S", 5000, 0, opts=TcpOptions(mss=1460))
    h.take()
    out = h.run_until(1.01)
    assert [(s.t, s.flags, s.seq, s.ack) for s in out] == [(1.0, "S.", 1000, 5001)]


def test_syn_ack_with_data_and_fin():
    h = Harness(PLAIN, iss=1000)
    h.conn.connect(0.0)
    h.take()
    h.at(0.01)
    h.conn.on_segment(h.segment("FS.", 5000, 1001, 8000), b"hi", 0.01)
    h.conn.end_batch(0.01)
    assert bytes(h.rec.data) == b"hi" and h.rec.names() == ["established", "data", "eof"]
    assert h.conn.state == "CLOSE_WAIT" and h.conn.rcv_nxt == 5004


def test_shutdown_while_connecting_sends_fin_after_handshake():
    h = Harness(PLAIN, iss=1000)
    h.conn.connect(0.0)
    h.take()
    h.conn.send(b"abc", 0.0)
    h.conn.shutdown(0.0)
    assert h.take() == []
    out = h.feed(0.01, "S.", 5000, 1001, window=8000, opts=TcpOptions(mss=1460))
    assert [(s.flags, s.seq, s.payload) for s in out] == [("FP.", 1001, b"abc")]
    assert h.conn.state == "FIN_WAIT_1"


def test_rst_for():
    syn = TcpHeader(1234, 80, 100, 0, SYN, 1000)
    r = rst_for(syn, 0)
    assert (r.src_port, r.dst_port, r.seq, r.ack, r.flags) == (80, 1234, 0, 101, RST | ACK)
    data = TcpHeader(1234, 80, 0xFFFFFFFF, 0, FIN, 1000)
    r = rst_for(data, 10)
    assert (r.seq, r.ack, r.flags) == (0, 10, RST | ACK)                     # wraps, FIN counts
    acked = TcpHeader(1234, 80, 5, 777, ACK, 1000)
    r = rst_for(acked, 3)
    assert (r.seq, r.ack, r.flags) == (777, 0, RST)
    assert rst_for(TcpHeader(1, 2, 3, 4, RST | ACK, 0), 0) is None
