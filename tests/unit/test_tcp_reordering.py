"""Adaptive reordering (tcp/reordering.py; Linux tp->reordering, tcp_check_sack_reordering):
a hole filled by an original raises the connection's DupThresh to the distance seen, so the same
reordering does not start another (spurious) recovery, while a real loss still does."""
from __future__ import annotations

from aiotcpstack.tcp.congestion.undo import RecoveryUndo
from aiotcpstack.tcp.reordering import INITIAL_REORDERING, MAX_REORDERING, reordering_after
from aiotcpstack.wire.tcp import TcpOptions

from test_tcp_recovery_undo import M, SACK, TS, enter_recovery, est, seg


def test_reordering_after_unit():
    assert reordering_after(3, seg(0), seg(3), M) == 3                 # not beyond: unchanged
    assert reordering_after(3, seg(0), seg(4), M) == 4
    assert reordering_after(3, seg(0), seg(4) - 1, M) == 4            # whole segments, rounded up
    assert reordering_after(10, seg(0), seg(7), M) == 10              # never lowered
    assert reordering_after(3, seg(5), seg(5), M) is None             # nothing above the hole
    assert reordering_after(3, seg(6), seg(5), M) is None
    assert reordering_after(299, 0, 1000 * M, M) == MAX_REORDERING == 300       # the cap
    assert reordering_after(3, 0xFFFFFFFF - M, 2 * M, M) == 4          # across the wrap: 3 MSS + 1 byte


def _sack_above_a_hole(h, t: float, n: int):
    """The segment at SND.UNA missing, the ``n`` after it SACKed one per ACK; returns the time,
    SND.UNA and the congestion state after each ACK."""
    mss = h.conn.mss
    u = h.conn.snd_una
    assert h.conn.snd_nxt - u >= (n + 1) * mss
    states = []
    for k in range(2, n + 2):
        t += 1e-4
        h.feed(t, ".", 5001, u, opts=TcpOptions(sack_blocks=((u + mss, u + k * mss),)))
        states.append(h.conn.ca_state)
    return t, u, states


def test_eifel_raises_reordering_then_the_same_reordering_is_no_recovery_but_a_loss_is():
    # (recovery=0: DupThresh decides here; with RACK the time since sending does)
    h = est(TS.with_options(recovery=0))
    mss = h.conn.mss                                   # (1448: the timestamp option takes 12)
    assert h.conn.reordering == INITIAL_REORDERING == h.conn.snapshot()["reordering"]
    t = enter_recovery(h, t=0.05, opts=dict(timestamp=(200, 20)))
    rtx = h.counters["RetransSegs"]
    # segment 0 was only late: the ACK for it echoes the original's TSval (Eifel); from the
    # hole to the highest SACKed sequence: 10 * 1460 bytes, 11 segments of 1448
    h.feed(t + 1e-3, ".", 5001, seg(10), opts=TcpOptions(timestamp=(201, 20)))
    assert h.counters["TCPPartialUndo"] == 1 and h.conn.ca_state == 0
    r = h.conn.reordering
    assert r == -(-10 * M // mss) == 11 and h.counters["TCPTSReorder"] == 1
    assert h.conn.snapshot()["reordering"] == r and h.conn.snapshot()["reord_seen"] == 1
    # the same reordering again: one segment late, r - 1 segments SACKed above it
    t, u, states = _sack_above_a_hole(h, t + 2e-3, r - 1)
    assert states == [0] * (r - 1) and h.counters["RetransSegs"] == rtx
    # ... and it arrives: the cumulative ACK of a never-retransmitted segment below the highest
    # SACK is reordering too (counted; r segments is no more than `reordering`)
    h.feed(t + 1e-4, ".", 5001, u + r * mss)
    assert h.counters["TCPSACKReorder"] == 1 and h.conn.reordering == r
    # a real loss: the next segment never arrives, r segments are SACKed beyond it
    t, u, states = _sack_above_a_hole(h, t + 2e-4, r)
    assert states == [0] * (r - 1) + [3]
    assert h.counters["TCPSackRecovery"] == 2
    assert h.counters["RetransSegs"] == rtx + 1


def _recovery_at_head(left: int, right: int):
    """Segments 0 .. left - 1 late, left .. right - 1 SACKed one by one: recovery, 0 retransmitted."""
    h = est(SACK)
    t = 0.03
    for k in range(left + 1, right + 1):
        t += 1e-4
        h.feed(t, ".", 5001, seg(0), opts=TcpOptions(sack_blocks=((seg(left), seg(k)),)))
    assert h.conn.ca_state == 3 and h.counters["RetransSegs"] == 1
    return h, t + 1e-4


def test_a_sacked_original_filling_a_hole_raises_reordering():
    """Segments 0 and 1 late, 2..4 SACKed: recovery, 0 retransmitted; then the original 1 is
    SACKed (it was never retransmitted): 4 segments from it to the highest SACK."""
    h, t = _recovery_at_head(2, 5)
    h.feed(t, ".", 5001, seg(0), opts=TcpOptions(sack_blocks=((seg(1), seg(5)),)))
    assert h.conn.reordering == 4 and h.counters["TCPSACKReorder"] == 1
    # a SACK of the retransmitted segment 0 is no evidence (it may be the retransmission)
    h, t = _recovery_at_head(1, 4)
    h.feed(t, ".", 5001, seg(0), opts=TcpOptions(sack_blocks=((seg(0), seg(4)),)))
    assert h.conn.reordering == 3 and h.counters["TCPSACKReorder"] == 0


def test_a_timeout_still_repairs_a_tail_loss_after_reordering_was_raised():
    h = est(TS)
    t = enter_recovery(h, t=0.05, opts=dict(timestamp=(200, 20)))
    h.feed(t + 1e-3, ".", 5001, seg(10), opts=TcpOptions(timestamp=(201, 20)))
    assert h.conn.reordering == 11
    una = h.conn.snd_una
    h.take()
    out = h.run_until(h.now + h.conn.rtt.rto + 0.01)
    assert h.counters["TCPTimeouts"] == 1 and h.conn.ca_state == 4
    assert [s for s in out if s.seq == una]


def test_an_ack_that_acknowledges_a_segment_and_sacks_a_later_one_is_no_reordering():
    """Segment 0 arrives, 1 is lost, 2 arrives: the peer's ACK acknowledges 0 and SACKs 2 at once.
    Segment 0 was below no SACK known before this ACK (Linux ``prior_fack``): a loss, not
    reordering."""
    h = est(SACK)
    h.feed(0.03, ".", 5001, seg(1), opts=TcpOptions(sack_blocks=((seg(2), seg(3)),)))
    assert h.counters["TCPSACKReorder"] == 0 and h.conn.reord_seen == 0


def test_undo_evidence_keeps_the_stamp_of_retransmissions_still_outstanding():
    """A new reduction while an earlier retransmission is in flight (Linux ``tcp_init_undo``:
    ``undo_retrans = retrans_out``, ``retrans_stamp`` kept): an ACK echoing the earlier
    retransmission is no Eifel evidence, so no false undo and no false reordering."""
    u = RecoveryUndo()
    u.start(1000)
    u.on_retransmit(1000, 1000 + M, 1, 50)
    u.clear()
    u.start(1000, 1000 + M, 1)                      # the retransmission (TSval 50) not acked yet
    assert u.undo_retrans == 1 and u.retrans_stamp == 50
    u.on_retransmit(1000, 1000 + M, 1, 60)
    assert u.retrans_stamp == 50 and u.undo_retrans == 2
    assert not u.packet_delayed(55) and u.packet_delayed(40)
    # the earlier one's TSval unknown (it was sent outside a reduction, e.g. a loss probe)
    u = RecoveryUndo()
    u.start(1000, 1000 + M, 1)
    u.on_retransmit(1000, 1000 + M, 1, 60)
    assert u.retrans_stamp is None and not u.packet_delayed(55)
    u.start(1000)                                   # nothing outstanding: a fresh start
    u.on_retransmit(1000, 1000 + M, 1, 70)
    assert u.retrans_stamp == 70 and u.packet_delayed(65)


def test_a_timeout_with_dupthresh_sacked_puts_reordering_back_to_3():
    """Linux tcp_enter_loss: a timeout in the open state with 3 or more segments SACKed means
    the raised reordering degree kept fast recovery from starting: back to 3.  (recovery=0: with
    RACK the time since sending starts recovery first)"""
    h = est(TS.with_options(recovery=0))
    t = enter_recovery(h, t=0.05, opts=dict(timestamp=(200, 20)))
    h.feed(t + 1e-3, ".", 5001, seg(10), opts=TcpOptions(timestamp=(201, 20)))
    assert h.conn.reordering == 11
    t, u, states = _sack_above_a_hole(h, t + 2e-3, 4)
    assert states == [0] * 4
    h.run_until(h.now + h.conn.rtt.rto + 0.01)
    assert h.counters["TCPTimeouts"] == 1 and h.conn.reordering == INITIAL_REORDERING
