"""Close paths: active close, passive close, simultaneous close, half-close both ways,
FIN_WAIT_2 timeout, TIME_WAIT (2MSL, RFC 1337, retransmitted FIN, SYN), abort, close with unread
data, tcp_closed/release exactly once, CurrEstab accounting."""
from __future__ import annotations

from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.wire.tcp import TcpOptions

from tcp_harness import Harness

PLAIN = TcpConfig(timestamps=False, sack=False, window_scaling=False)


def est(cfg=PLAIN, **kw):
    h = Harness(cfg, iss=1000, **kw)
    h.establish_active(5000, peer_opts=TcpOptions(mss=1460))
    return h


def test_active_close_full_sequence_and_time_wait():
    h = est()
    h.conn.send(b"bye", 0.1)
    h.conn.close(0.1)
    out = h.take()
    # the data left on send(); the FIN follows on its own (Linux does the same)
    assert [(s.flags, s.seq, s.payload) for s in out] == [("P.", 1001, b"bye"), ("F.", 1004, b"")]
    assert h.conn.state == "FIN_WAIT_1" and h.counters["CurrEstab"] == 0
    h.feed(0.2, ".", 5001, 1005)
    assert h.conn.state == "FIN_WAIT_2" and h.rec.closed == [None]      # FIN acked after close()
    out = h.feed(0.3, "F.", 5001, 1005)
    assert [(s.flags, s.seq, s.ack) for s in out] == [(".", 1005, 5002)]
    assert h.conn.state == "TIME_WAIT" and h.released == []
    h.run_until(60.29)
    assert h.conn.state == "TIME_WAIT"
    h.run_until(60.31)
    assert h.conn.state == "CLOSED" and h.released == [h.conn]
    assert h.counters["TimeWaited"] == 1 and h.rec.closed == [None]
    assert h.counters["EstabResets"] == 0


def test_passive_close():
    h = est()
    out = h.feed(0.1, "F.", 5001, 1001)
    assert h.conn.state == "CLOSE_WAIT" and h.rec.names()[-1] == "eof"
    assert h.counters["CurrEstab"] == 1                  # CLOSE_WAIT still counts
    # the FIN's ACK is delayed (Linux pingpong) so that our FIN can ride with it ...
    h.conn.close(0.101)
    out = h.take()
    assert [(s.flags, s.seq, s.ack) for s in out] == [("F.", 1001, 5002)]
    assert h.conn.state == "LAST_ACK" and h.counters["CurrEstab"] == 0
    h.feed(0.2, ".", 5002, 1002)
    assert h.conn.state == "CLOSED" and h.rec.closed == [None] and h.released == [h.conn]


def test_fin_ack_sent_by_delack_timer_if_app_does_not_close():
    h = est()
    for i in range(16):
        h.feed(0.1, ".", 5001 + i, 1001, payload=b"x")
    h.take()
    h.feed(0.2, "F.", 5017, 1001)
    assert h.take() == []
    out = h.run_until(0.5)
    assert [(s.flags, s.ack) for s in out] == [(".", 5018)]


def test_simultaneous_close():
    h = est()
    h.conn.close(0.1)
    fin = h.take_one()
    assert fin.flags == "F." and fin.seq == 1001
    out = h.feed(0.11, "F.", 5001, 1001)                 # peer's FIN crosses ours
    assert h.conn.state == "CLOSING"
    assert [(s.flags, s.ack) for s in out] == [(".", 5002)]
    h.feed(0.12, ".", 5002, 1002)
    assert h.conn.state == "TIME_WAIT" and h.rec.closed == [None]
    h.run_until(61.0)
    assert h.conn.state == "CLOSED" and h.released == [h.conn]


def test_fin_and_ack_of_our_fin_together():
    h = est()
    h.conn.close(0.1)
    h.take()
    out = h.feed(0.2, "F.", 5001, 1002)
    assert h.conn.state == "TIME_WAIT" and [(s.flags, s.ack) for s in out] == [(".", 5002)]


def test_half_close_we_shutdown_then_keep_receiving():
    h = est()
    h.conn.shutdown(0.1)
    assert h.take_one().flags == "F."
    h.feed(0.2, ".", 5001, 1002)
    assert h.conn.state == "FIN_WAIT_2" and h.rec.closed == []      # shutdown: not closed yet
    h.run_until(200.0)                                             # no fin_timeout without close()
    assert h.conn.state == "FIN_WAIT_2"
    h.feed(200.0, "P.", 5001, 1002, payload=b"more data")
    assert bytes(h.rec.data) == b"more data"
    h.feed(200.1, "F.", 5010, 1002)
    assert h.rec.names()[-2:] == ["eof", "closed"] and h.conn.state == "TIME_WAIT"


def test_half_close_peer_shuts_down_we_keep_sending():
    h = est()
    h.feed(0.1, "F.", 5001, 1001)
    assert h.conn.state == "CLOSE_WAIT"
    h.take()
    h.conn.send(b"still talking", 0.2)
    out = h.take()
    assert [(s.payload, s.ack) for s in out] == [(b"still talking", 5002)]
    h.feed(0.3, ".", 5002, 1014)
    h.conn.shutdown(0.3)
    assert h.take_one().flags == "F." and h.conn.state == "LAST_ACK"
    h.feed(0.4, ".", 5002, 1015)
    assert h.conn.state == "CLOSED" and h.rec.closed == [None]


def test_fin_wait_2_timeout_after_close():
    h = est(TcpConfig(timestamps=False, sack=False, window_scaling=False, fin_timeout=30.0))
    h.conn.close(0.1)
    h.take()
    h.feed(0.2, ".", 5001, 1002)
    assert h.conn.state == "FIN_WAIT_2"
    out = h.run_until(31.0)
    assert [(s.t, s.flags) for s in out] == [(30.2, "R.")]        # Linux resets the orphan
    assert h.conn.state == "CLOSED" and h.released == [h.conn] and h.rec.closed == [None]


def test_data_after_close_in_fin_wait_gets_rst():
    h = est()
    h.conn.close(0.1)
    h.take()
    h.feed(0.2, ".", 5001, 1002)
    out = h.feed(0.3, "P.", 5001, 1002, payload=b"late")
    assert [s.flags for s in out] == ["R."] and h.counters["TCPAbortOnData"] == 1
    assert h.conn.state == "CLOSED" and h.released == [h.conn]


def test_close_with_unread_data_sends_rst():
    h = est()
    h.conn.set_reading(False, 0.1)
    h.feed(0.1, "P.", 5001, 1001, payload=b"unread")
    h.take()
    h.conn.close(0.2)
    out = h.take()
    assert [(s.flags, s.seq, s.ack) for s in out] == [("R.", 1001, 5007)]
    assert h.counters["TCPAbortOnClose"] == 1 and h.counters["EstabResets"] == 1
    assert h.rec.closed == [None] and h.released == [h.conn] and h.conn.state == "CLOSED"


def test_abort_sends_rst_and_reports_none():
    h = est()
    h.conn.abort(0.1)
    out = h.take()
    assert [(s.flags, s.seq) for s in out] == [("R.", 1001)]
    assert h.rec.closed == [None] and h.released == [h.conn]
    assert h.counters["OutRsts"] == 1 and h.counters["CurrEstab"] == 0
    h.conn.abort(0.2)
    h.conn.close(0.2)
    assert h.rec.closed == [None] and h.released == [h.conn]


def test_abort_in_syn_sent_sends_nothing():
    h = Harness(PLAIN)
    h.conn.connect(0.0)
    h.take()
    h.conn.abort(0.1)
    assert h.take() == [] and h.rec.closed == [None] and h.released == [h.conn]
    assert h.run_until(10.0) == []


def test_time_wait_rfc1337_rst_ignored():
    h = est()
    h.conn.close(0.1)
    h.take()
    h.feed(0.2, "F.", 5001, 1002)
    h.take()
    assert h.feed(1.0, "R", 5002, 0) == []
    assert h.conn.state == "TIME_WAIT"


def test_time_wait_retransmitted_fin_is_acked_and_restarts_timer():
    h = est()
    h.conn.close(0.1)
    h.take()
    h.feed(0.2, "F.", 5001, 1002)
    h.take()
    out = h.feed(30.0, "F.", 5001, 1002)
    assert [(s.flags, s.ack) for s in out] == [(".", 5002)]
    h.run_until(89.9)
    assert h.conn.state == "TIME_WAIT"
    h.run_until(90.1)
    assert h.conn.state == "CLOSED"


def test_time_wait_new_syn_releases_for_reuse():
    h = est()
    h.conn.close(0.1)
    h.take()
    h.feed(0.2, "F.", 5001, 1002)
    h.take()
    out = h.feed(5.0, "S", 900000, 0, opts=TcpOptions(mss=1460))
    assert out == [] and h.conn.state == "CLOSED" and h.released == [h.conn]


def test_time_wait_old_syn_gets_ack():
    h = est()
    h.conn.close(0.1)
    h.take()
    h.feed(0.2, "F.", 5001, 1002)
    h.take()
    out = h.feed(5.0, "S", 4000, 0, opts=TcpOptions(mss=1460))
    assert [(s.flags, s.ack) for s in out] == [(".", 5002)] and h.conn.state == "TIME_WAIT"


def test_peer_rst_in_established_is_connection_reset():
    h = est()
    h.feed(0.1, "R", 5001, 0)
    assert isinstance(h.rec.closed[0], ConnectionResetError)
    assert h.counters["EstabResets"] == 1 and h.counters["CurrEstab"] == 0
    assert h.released == [h.conn]


def test_rst_in_last_ack_is_quiet():
    h = est()
    h.feed(0.1, "F.", 5001, 1001)
    h.conn.close(0.1)
    h.take()
    h.feed(0.2, "R", 5002, 0)
    assert h.rec.closed == [None] and h.conn.state == "CLOSED"


def test_bare_fin_accepted_with_zero_window():
    cfg = TcpConfig(timestamps=False, sack=False, window_scaling=False, rcvbuf=1000, moderate_rcvbuf=False)
    h = est(cfg)
    h.conn.set_reading(False, 0.1)
    h.feed(0.1, "P.", 5001, 1001, payload=b"f" * 1000)
    h.take()
    assert h.conn.rcv_adv == h.conn.rcv_nxt                    # zero window
    out = h.feed(0.2, "F.", 6001, 1001)
    assert h.conn.state == "CLOSE_WAIT" and out[-1].ack == 6002
    h.conn.set_reading(True, 0.3)
    assert h.rec.names()[-2:] == ["data", "eof"]


def test_retransmitted_data_with_fin_after_partial_receipt():
    h = est()
    h.feed(0.1, "P.", 5001, 1001, payload=b"abc")
    out = h.feed(0.2, "FP.", 5001, 1001, payload=b"abcdef")       # overlaps, adds def + FIN
    assert bytes(h.rec.data) == b"abcdef" and h.conn.state == "CLOSE_WAIT"
    assert h.rec.names()[-1] == "eof"


def test_data_then_rst_in_one_batch_delivers_data_before_closed():
    h = est()
    h.feed_batch(0.1, [dict(flags="P.", seq=5001, ack=1001, payload=b"last words"),
                       dict(flags="R", seq=5011, ack=0)])
    assert h.rec.names()[-2:] == ["data", "closed"]
    assert isinstance(h.rec.closed[0], ConnectionResetError) and bytes(h.rec.data) == b"last words"
