"""The urgent mechanism at segment level (RFC 9293 3.8.5 and 3.10.7.4 sixth step, RFC 6093):
receive -- RCV.UP is SEG.SEQ + SEG.UP (the first non-urgent octet), the handler is told once per
run of urgent data and before the data, the data stays in line, ``urgent_pending`` counts what
is left, a zero window still takes URG, pointers beyond the data, repeated, advancing, stale and
across the sequence-number wrap; send -- SND.UP, URG and the pointer on every segment that
starts before it (new data, pure ACKs, retransmissions), 0xFFFF while the mark is 64 KiB or
more ahead, segments cut at the MSS, no Nagle, and urgent mode ending once SND.UP is
acknowledged."""
from __future__ import annotations

import pytest

from aiotcpstack.tcp import urgent
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.wire.tcp import URG

from tcp_harness import Harness

MASK = 0xFFFFFFFF


def est(config: TcpConfig | None = None, peer_iss: int = 5000, iss: int = 1000) -> Harness:
    h = Harness(config or TcpConfig(), iss=iss)
    h.establish_active(peer_iss)
    return h


def urgent_events(h: Harness) -> list:
    return [e for e in h.rec.events if e[0] == "urgent"]


# ---------------------------------------------------------------- tcp/urgent.py arithmetic

def test_send_pointer_rules():
    # the first non-urgent octet, relative to SEG.SEQ
    assert urgent.send_pointer(100, 105, 100) == 5
    assert urgent.send_pointer(100, 100, 100) == urgent.NO_URG          # the mark is here: done
    assert urgent.send_pointer(106, 105, 100) == urgent.NO_URG          # after the mark
    assert urgent.send_pointer(100, 100 + 0xFFFF, 100) == 0xFFFF        # just fits
    assert urgent.send_pointer(100, 100 + 0x10000, 100) == 0xFFFF       # too far: 0xFFFF
    # too far, and 0xFFFF would point at or before SND.NXT: an old retransmission, no URG
    assert urgent.send_pointer(100, 100 + 0x30000, 100 + 0xFFFF) == urgent.NO_URG
    assert urgent.send_pointer(100, 100 + 0x30000, 100 + 0xFFFE) == 0xFFFF
    # across the wrap
    assert urgent.send_pointer(MASK - 2, 7, MASK - 2) == 10


def test_receive_arithmetic_wraps():
    assert urgent.receive_mark(MASK - 1, 5) == 3
    assert urgent.urgent_bytes(3, MASK - 1) == 5
    assert urgent.urgent_bytes(3, 3) == 0
    assert urgent.urgent_bytes(3, 10) == 0                               # behind: none


# ---------------------------------------------------------------- receive

def test_urgent_data_is_signalled_before_the_data_and_stays_in_line():
    h = est()
    h.feed(0.1, "PU.", 5001, 1001, payload=b"0123456789", urgent=3)
    # RFC 6093: octets 5001..5003 are urgent, 5004 is the first non-urgent one
    assert h.rec.events[-2:] == [("urgent", 3), ("data", b"0123456789")]
    assert h.conn.rcv_up == 5004
    assert h.conn.urgent_pending == 0                                    # all handed over


def test_pointer_beyond_the_data_counts_down_as_data_arrives():
    h = est()
    h.feed(0.1, "PU.", 5001, 1001, payload=b"a" * 10, urgent=25)
    assert urgent_events(h) == [("urgent", 25)]
    assert h.conn.urgent_pending == 15                                   # 15 urgent octets to come
    h.feed(0.2, "P.", 5011, 1001, payload=b"b" * 10)                     # no URG: header prediction
    assert h.conn.urgent_pending == 5
    h.feed(0.3, "PU.", 5021, 1001, payload=b"c" * 10, urgent=5)          # the same mark again
    assert urgent_events(h) == [("urgent", 25)]                          # told once per run
    assert h.conn.urgent_pending == 0
    assert bytes(h.rec.data) == b"a" * 10 + b"b" * 10 + b"c" * 10


def test_advancing_pointer_within_a_run_is_not_signalled_again_but_counted():
    h = est()
    h.conn.set_reading(False, 0.05)
    h.feed(0.1, "PU.", 5001, 1001, payload=b"a" * 10, urgent=4)
    h.feed(0.2, "PU.", 5011, 1001, payload=b"b" * 10, urgent=8)         # mark 5005 -> 5019
    assert urgent_events(h) == [("urgent", 4)]                           # told while not reading
    assert h.conn.urgent_pending == 18
    h.conn.set_reading(True, 0.3)
    assert h.conn.urgent_pending == 0
    # a new run after the old one was handed over: told again
    h.feed(0.4, "PU.", 5021, 1001, payload=b"c" * 4, urgent=2)
    assert urgent_events(h) == [("urgent", 4), ("urgent", 2)]


def test_stale_and_zero_pointers_are_ignored():
    h = est()
    h.feed(0.1, "PU.", 5001, 1001, payload=b"a" * 10, urgent=10)
    assert urgent_events(h) == [("urgent", 10)] and h.conn.urgent_pending == 0
    # a retransmission of it (already delivered): no second signal
    h.feed(0.2, "PU.", 5001, 1001, payload=b"a" * 10, urgent=10)
    # URG with a zero pointer: the urgent data ended before this segment
    h.feed(0.3, "PU.", 5011, 1001, payload=b"b" * 5, urgent=0)
    assert urgent_events(h) == [("urgent", 10)]
    assert h.conn.urgent_pending == 0 and h.conn.rcv_urg == 0


def test_pointer_into_data_received_but_not_yet_delivered_counts():
    """Linux ignores a pointer before RCV.NXT (it could not pull that octet out of band any
    more); in line, the octets are still the application's to read, so the run counts."""
    h = est()
    h.conn.set_reading(False, 0.05)
    h.feed(0.1, "P.", 5001, 1001, payload=b"a" * 10)
    h.feed(0.2, "PU.", 5011, 1001, payload=b"b" * 2, urgent=1)           # mark 5012
    assert h.conn.urgent_pending == 11 and urgent_events(h) == [("urgent", 11)]
    h.conn.set_reading(True, 0.3)
    assert bytes(h.rec.data) == b"a" * 10 + b"bb" and h.conn.urgent_pending == 0


def closed_window() -> Harness:
    """Established, the application not reading, its 2000-octet receive window filled."""
    h = est(TcpConfig(timestamps=False, sack=False, window_scaling=False, rcvbuf=2000, moderate_rcvbuf=False))
    h.conn.set_reading(False, 0.1)
    h.feed(0.1, ".", 5001, 1001, payload=b"f" * 2000)
    h.take()
    return h


def test_urgent_processed_with_a_zero_receive_window():
    """MUST-66: with RCV.WND = 0 the segment's data is dropped but its URG is taken."""
    h = closed_window()
    out = h.feed(0.3, "PU.", 7001, 1001, payload=b"!", urgent=1)
    assert [(s.ack, s.window) for s in out] == [(7001, 0)]              # data dropped, ACKed
    assert h.conn.rcv_nxt == 7001
    assert urgent_events(h) == [("urgent", 2001)]                        # told at once
    assert h.conn.urgent_pending == 2001
    # a bare URG ACK (the sender's pointer while its urgent data waits for our window)
    h2 = closed_window()
    h2.feed(0.3, ".U", 7001, 1001, urgent=3)
    assert urgent_events(h2) == [("urgent", 2003)]


def test_urgent_across_the_sequence_wrap():
    h = est(peer_iss=MASK - 5)                                           # first data octet MASK - 4
    h.feed(0.1, "PU.", MASK - 4, 1001, payload=b"w" * 20, urgent=12)
    assert h.conn.rcv_up == 7 and urgent_events(h) == [("urgent", 12)]
    h.conn.set_reading(False, 0.15)
    h.feed(0.2, "PU.", 15, 1001, payload=b"x" * 4, urgent=30)            # mark 45, a new run
    assert urgent_events(h) == [("urgent", 12), ("urgent", 30)]
    assert h.conn.urgent_pending == 30


def test_urgent_with_fin_counts_only_data():
    h = est()
    h.conn.set_reading(False, 0.05)
    h.feed(0.1, "FPU.", 5001, 1001, payload=b"abc", urgent=3)
    assert h.conn.state == "CLOSE_WAIT"
    assert h.conn.urgent_pending == 3                                    # the FIN is no octet
    assert urgent_events(h) == [("urgent", 3)]


def test_urg_after_the_peers_fin_is_ignored():
    h = est()
    h.feed(0.1, "F.", 5001, 1001)
    assert h.conn.state == "CLOSE_WAIT"
    h.feed(0.2, "PU.", 5002, 1001, payload=b"z", urgent=1)
    assert urgent_events(h) == [] and h.conn.urgent_pending == 0


class NoUrgentHandler:
    """A handler of the required methods only (``tcp_urgent`` is optional)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def tcp_established(self) -> None:
        pass

    def tcp_data(self, data: bytes) -> None:
        self.data += data

    def tcp_eof(self) -> None:
        pass

    def tcp_send_space(self) -> None:
        pass

    def tcp_closed(self, exc) -> None:
        pass


def test_handler_without_tcp_urgent_still_gets_the_data():
    h = est()
    h.conn.handler = plain = NoUrgentHandler()
    h.feed(0.1, "PU.", 5001, 1001, payload=b"abc", urgent=2)
    assert bytes(plain.data) == b"abc"
    assert h.conn.rcv_up == 5003 and h.conn.urgent_pending == 0


# ---------------------------------------------------------------- send

def urg_fields(segs) -> list:
    return [(s.seq, bool(s.hdr.flags & URG), s.hdr.urgent, len(s.payload)) for s in segs]


def test_send_urgent_sets_urg_and_the_pointer():
    h = est()
    h.conn.send(b"n" * 5, 0.1)
    h.conn.send_urgent(b"u" * 10, 0.1)
    out = h.take()
    assert h.conn.snd_up == 1016
    assert urg_fields(out) == [(1001, False, 0, 5), (1006, True, 10, 10)]
    # data after the mark: no URG
    h.conn.send(b"m" * 7, 0.1)
    assert urg_fields(h.take()) == [(1016, False, 0, 7)]


def test_segments_before_the_mark_all_carry_it_and_are_cut_at_the_mss():
    h = est(TcpConfig(tso_segs=8, initial_cwnd=100, nodelay=True))
    mss = h.conn.mss
    h.conn.send_urgent(b"u" * (5 * mss), 0.1)
    out = h.take()
    assert all(len(s.payload) <= mss for s in out)                      # each with its own pointer
    assert [(s.seq, s.hdr.urgent) for s in out] == [(1001 + i * mss, (5 - i) * mss) for i in range(5)]
    assert all(s.hdr.flags & URG for s in out)
    assert [s.flags for s in out] == ["U."] * 4 + ["PU."]


def test_far_mark_sends_ffff_and_exact_pointer_when_near():
    h = est(TcpConfig(initial_cwnd=200, nodelay=True))
    h.feed(0.05, ".", 5001, 1001, window=4000)                           # 512 kB (scale 7)
    mss = h.conn.mss
    n = 100_000
    h.conn.send_urgent(b"u" * n, 0.1)
    out = h.take()
    assert sum(len(s.payload) for s in out) == n
    up = 1001 + n
    for s in out:
        assert s.hdr.flags & URG
        assert s.hdr.urgent == min(up - s.seq, 0xFFFF), s
    assert out[0].hdr.urgent == 0xFFFF and out[-1].hdr.urgent == n - (len(out) - 1) * mss


def test_retransmissions_carry_urg_unless_far_behind_snd_nxt():
    h = est(TcpConfig(initial_cwnd=200, nodelay=True))
    h.conn.send_urgent(b"u" * 10, 0.1)
    first = h.take()
    assert urg_fields(first) == [(1001, True, 10, 10)]
    rtx = h.run_until(2.0)                                               # RTO
    assert urg_fields(rtx)[0] == (1001, True, 10, 10)
    # a mark 100 kB ahead and SND.NXT beyond SEG.SEQ + 0xFFFF: the retransmission has no URG
    h2 = est(TcpConfig(initial_cwnd=200, nodelay=True))
    h2.feed(0.05, ".", 5001, 1001, window=4000)
    h2.conn.send_urgent(b"u" * 100_000, 0.1)
    h2.take()
    rtx = h2.run_until(2.0)
    tlp = rtx[0]                                                         # the tail loss probe
    assert tlp.seq == 1001 + 100_000 - len(tlp.payload) and tlp.hdr.flags & URG
    assert tlp.hdr.urgent == len(tlp.payload)
    rto = [s for s in rtx if s.seq == 1001]                              # then the RTO
    assert rto and not rto[0].hdr.flags & URG


def test_pure_ack_carries_the_pointer_while_urgent_data_waits_for_the_window():
    h = Harness(TcpConfig(), iss=1000)
    h.establish_active(5000, window=0)
    h.conn.send_urgent(b"u" * 3, 0.1)
    assert [s for s in h.take() if s.payload] == []                      # the window is closed
    out = h.feed(0.2, "P.", 5001, 1001, window=0, payload=b"q")
    acks = [s for s in out if not s.payload and s.seq == 1001]
    assert acks and all(s.hdr.flags & URG and s.hdr.urgent == 3 for s in acks)


def test_urgent_mode_ends_when_snd_up_is_acknowledged():
    h = est()
    h.conn.send_urgent(b"u" * 10, 0.1)
    h.take()
    assert h.conn.snd_urg and h.conn._fast_out is None
    h.feed(0.2, ".", 5001, 1011)
    h.conn.send(b"x", 0.3)
    assert urg_fields(h.take()) == [(1011, False, 0, 1)]
    assert not h.conn.snd_urg


def test_urgent_data_is_not_held_by_nagle():
    h = est(TcpConfig(nodelay=False))
    h.conn.send(b"a", 0.1)                                               # a small segment in flight
    h.take()
    h.conn.send(b"b", 0.11)
    assert h.take() == []                                                # Nagle holds it
    h.conn.send_urgent(b"!", 0.12)
    assert urg_fields(h.take()) == [(1002, True, 2, 2)]


def test_send_urgent_after_shutdown_raises():
    h = est()
    h.conn.shutdown(0.1)
    with pytest.raises(BrokenPipeError):
        h.conn.send_urgent(b"x", 0.2)
