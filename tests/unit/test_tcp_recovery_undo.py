"""Recovery undo (Linux tcp_try_undo_*; RFC 2883 section 4 / RFC 3708 DSACK, RFC 3522 Eifel):
a reduction whose retransmissions all turn out spurious is undone (cwnd and ssthresh back,
TCPDSACKUndo / TCPFullUndo / TCPLossUndo); one real loss is not."""
from __future__ import annotations

from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.congestion.undo import RecoveryUndo
from aiotcpstack.wire.tcp import TcpOptions

from tcp_harness import Harness

M = 1460
SACK = TcpConfig(timestamps=False, sack=True, window_scaling=False, congestion_control="reno",
                 initial_cwnd=20, tlp=False)
TS = TcpConfig(timestamps=True, sack=True, window_scaling=False, congestion_control="reno",
               initial_cwnd=20, tlp=False)


def seg(i):
    return 1001 + i * M


def est(cfg=SACK):
    h = Harness(cfg, iss=1000)
    if cfg.timestamps:
        h.establish_active(5000, rtt=0.01, peer_opts=TcpOptions(mss=M, sack_permitted=True, timestamp=(100, 0)))
    else:
        h.establish_active(5000, rtt=0.01, peer_opts=TcpOptions(mss=M, sack_permitted=True))
    h.at(0.02)
    h.conn.send(b"u" * 60 * M, 0.02)
    assert len(h.take()) == 20
    return h


def enter_recovery(h, t=0.03, opts=None):
    """Segment 0 missing, 1..9 SACKed: fast recovery, segment 0 retransmitted."""
    out = []
    for k in range(2, 11):
        t += 1e-4
        o = dict(sack_blocks=((seg(1), seg(k)),))
        if opts:
            o.update(opts)
        out += h.feed(t, ".", 5001, seg(0), opts=TcpOptions(**o))
    assert h.conn.ca_state == 3
    assert [s for s in out if s.seq == seg(0)]
    return t


def test_dsack_for_every_retransmission_undoes_in_recovery():
    # (recovery=0: the second retransmission below is RFC 6582's partial-ACK rule, which RACK
    # replaces; tests/unit/test_tcp_rack.py has the RACK counterpart)
    h = est(SACK.with_options(recovery=0))
    prior = h.conn.cc.cwnd
    t = enter_recovery(h)
    assert h.conn.cc.cwnd < prior and h.conn.cc.ssthresh < prior
    # the original of 0 was only delayed: it arrives (ACK up to 10, a partial ACK: 10 is
    # retransmitted by RFC 6582's rule, spuriously), then both retransmissions, which the peer
    # reports as duplicates, while the recovery point is not reached yet
    h.feed(t + 0.001, ".", 5001, seg(10))
    assert h.conn.ca_state == 3 and h.counters["RetransSegs"] == 2
    h.feed(t + 0.002, ".", 5001, seg(10), opts=TcpOptions(sack_blocks=((seg(0), seg(1)),)))
    assert h.counters["TCPDSACKUndo"] == 0 and h.conn.undo.undo_retrans == 1
    assert h.conn.recovery_point > seg(20)
    h.feed(t + 0.003, ".", 5001, seg(20), opts=TcpOptions(sack_blocks=((seg(10), seg(11)),)))
    assert h.counters["TCPDSACKRecv"] == 2 and h.counters["TCPDSACKUndo"] == 1
    assert h.conn.ca_state == 0
    assert h.conn.cc.cwnd >= prior and h.conn.cc.ssthresh > prior      # the window is back


def test_late_dsack_after_recovery_ended_still_undoes():
    h = est()
    prior = h.conn.cc.cwnd
    t = enter_recovery(h)
    h.feed(t + 0.001, ".", 5001, h.conn.snd_nxt)        # full ACK: recovery ends, cwnd = ssthresh
    assert h.conn.ca_state == 0 and h.counters["TCPFullUndo"] == 0
    ssthresh = h.conn.cc.ssthresh
    assert h.conn.cc.cwnd == ssthresh
    h.feed(t + 0.002, ".", 5001, h.conn.snd_nxt, opts=TcpOptions(sack_blocks=((seg(0), seg(1)),)))
    assert h.counters["TCPDSACKUndo"] == 1
    assert h.conn.cc.cwnd >= prior and h.conn.cc.ssthresh > ssthresh


def test_no_undo_when_the_retransmission_was_needed():
    h = est()
    prior = h.conn.cc.cwnd
    t = enter_recovery(h)
    h.feed(t + 0.001, ".", 5001, h.conn.snd_nxt)        # the retransmission filled the hole
    ssthresh = h.conn.cc.ssthresh
    assert h.conn.cc.cwnd == ssthresh
    # a DSACK for data never retransmitted (a network duplicate of segment 5) is not evidence
    h.feed(t + 0.002, ".", 5001, h.conn.snd_nxt, opts=TcpOptions(sack_blocks=((seg(5), seg(6)),)))
    assert h.counters["TCPDSACKRecv"] == 1
    assert h.counters["TCPDSACKUndo"] == h.counters["TCPFullUndo"] == 0
    assert h.conn.cc.ssthresh == ssthresh and h.conn.cc.cwnd < prior


def test_one_of_two_retransmissions_dsacked_is_no_undo():
    h = est()
    t = enter_recovery(h)
    t += 1e-3
    # segment 10 is found lost too (the ACK moves to 10, 11.. SACKed): a second retransmission
    for k in range(12, 16):
        t += 1e-4
        h.feed(t, ".", 5001, seg(10), opts=TcpOptions(sack_blocks=((seg(11), seg(k)),)))
    assert h.counters["RetransSegs"] == 2
    h.feed(t + 0.001, ".", 5001, seg(16), opts=TcpOptions(sack_blocks=((seg(0), seg(1)),)))
    assert h.counters["TCPDSACKUndo"] == 0
    assert h.conn.undo.undo_retrans == h.counters["RetransSegs"] - 1 > 0


def test_eifel_full_undo_on_an_ack_echoing_the_original():
    h = est(TS)
    first_tsval = 20                                      # sent at t = 0.02 (ts_offset 0)
    prior = h.conn.cc.cwnd
    t = enter_recovery(h, t=0.05, opts=dict(timestamp=(200, first_tsval)))
    assert h.conn.undo.retrans_stamp > first_tsval
    # the ACK for everything echoes the original's TSval: the original filled the hole
    h.feed(t + 0.001, ".", 5001, h.conn.snd_nxt, opts=TcpOptions(timestamp=(201, first_tsval)))
    assert h.counters["TCPFullUndo"] == 1 and h.conn.ca_state == 0
    assert h.conn.cc.cwnd >= prior


def test_eifel_spurious_rto_is_undone():
    h = est(TS)
    prior = h.conn.cc.cwnd
    out = h.run_until(0.02 + h.conn.rtt.rto + 0.001)     # RTO: the head is retransmitted
    assert h.counters["TCPTimeouts"] == 1 and out[0].seq == seg(0) and h.conn.ca_state == 4
    assert h.conn.cc.cwnd == h.conn.mss
    nxt = h.conn.snd_nxt
    h.take()
    h.feed(h.now + 0.001, ".", 5001, nxt, opts=TcpOptions(timestamp=(300, 20)))
    assert h.counters["TCPLossUndo"] == 1 and h.conn.ca_state == 0
    assert h.conn.cc.cwnd >= prior
    # the rest is not retransmitted as lost: what goes out now is new data
    sent = [s for s in h.take() if s.payload]
    assert sent and all(s.seq >= nxt for s in sent)


def test_rto_with_the_retransmission_echoed_is_not_undone():
    h = est(TS)
    out = h.run_until(0.02 + h.conn.rtt.rto + 0.001)
    rtx_tsval = out[0].tsval
    h.feed(h.now + 0.001, ".", 5001, seg(0) + h.conn.mss, opts=TcpOptions(timestamp=(300, rtx_tsval)))
    assert h.counters["TCPLossUndo"] == 0 and h.conn.ca_state == 4


def test_undo_state_unit():
    u = RecoveryUndo()
    u.on_retransmit(1000, 2000, 1, 5)                     # no marker: ignored
    assert u.undo_marker is None and not u.may_undo(1)
    u.start(1000)
    assert not u.all_dsacked()                            # -1: nothing retransmitted yet
    u.on_retransmit(1000, 2000, 1, 50)
    u.on_retransmit(2000, 3000, 1, 60)
    assert u.retrans_stamp == 50 and u.undo_retrans == 2
    u.on_dsack(500, 1000, 1000)                           # at or below the marker: ignored
    u.on_dsack(3000, 4000, 1000)                          # not retransmitted: ignored
    assert u.undo_retrans == 2
    u.on_dsack(1000, 2000, 1000)
    assert u.undo_retrans == 1 and not u.may_undo(55)
    assert u.may_undo(49)                                 # Eifel: echoes an older TSval
    u.on_dsack(2000, 3000, 1000)
    assert u.all_dsacked() and u.may_undo(0)


# ---------------------------------------------------------------- F-RTO (RFC 5682 section 3)

def _rto(h):
    out = h.run_until(0.02 + h.conn.rtt.rto + 0.001)
    assert h.counters["TCPTimeouts"] == 1 and out[0].seq == seg(0) and h.conn.ca_state == 4
    h.take()
    return h.now


def test_frto_spurious_timeout_sends_new_data_then_undoes():
    h = est()                                             # SACK, no timestamps: no Eifel
    prior = h.conn.cc.cwnd
    t = _rto(h)
    nxt = h.conn.snd_nxt
    # step 2b: the first ACK covers the retransmitted head only: new data, not retransmissions
    out = h.feed(t + 0.001, ".", 5001, seg(1))
    assert out and all(s.seq >= nxt for s in out if s.payload)
    assert h.conn.ca_state == 4 and h.counters["RetransSegs"] == 1
    # step 3b: the next ACK acknowledges originals that were never retransmitted: spurious
    h.feed(t + 0.002, ".", 5001, seg(8))
    assert h.counters["TCPSpuriousRTOs"] == 1 and h.counters["TCPLossUndo"] == 1
    assert h.conn.ca_state == 0 and h.conn.cc.cwnd >= prior
    assert h.counters["RetransSegs"] == 1


def test_frto_real_loss_falls_back_to_retransmitting():
    h = est()
    t = _rto(h)
    nxt = h.conn.snd_nxt
    out = h.feed(t + 0.001, ".", 5001, seg(1))            # step 2b: new data
    new = [s for s in out if s.payload]
    assert new and new[0].seq == nxt
    # step 3a: a duplicate ACK that SACKs only the new data: the originals were lost
    out = h.feed(t + 0.002, ".", 5001, seg(1), opts=TcpOptions(sack_blocks=((nxt, nxt + M),)))
    assert h.counters["TCPSpuriousRTOs"] == 0 and h.counters["TCPLossUndo"] == 0
    assert h.conn.ca_state == 4 and h.conn.frto == 0
    out += h.feed(t + 0.003, ".", 5001, seg(2), opts=TcpOptions(sack_blocks=((nxt, nxt + M),)))
    assert [s for s in out if s.seq in (seg(1), seg(2))]  # the conventional slow-start retransmission


def test_timeout_retransmission_is_recorded_at_the_time_it_carries():
    """The retransmission timer's ``now`` can be older than the connection's clock (a send
    brought a later time: PERF_LOG step 31); ``_transmit`` stamps the segment with the clock,
    and the undo evidence (Eifel's ``retrans_stamp``, RFC 3522) and RACK's transmission time
    (RFC 8985 6.1) must record that same time -- an older record makes later-sent originals
    look sent after the retransmission (RACK: the retransmission "lost" again when they are
    delivered) and shifts Eifel's comparison."""
    h = est(TS)
    h.conn.send(b"w" * M, 0.5)               # a later clock; the window is full, nothing goes out
    assert not [s for s in h.take() if s.payload]
    out = h.run_until(0.02 + h.conn.rtt.rto + 0.001)     # (< 0.5) RTO: the head again
    assert h.counters["TCPTimeouts"] == 1 and out[0].seq == seg(0)
    assert out[0].tsval == h.conn._tsval(0.5)
    assert h.conn.undo.retrans_stamp == out[0].tsval
    assert h.conn.rack.rtx[-1] == [seg(0), seg(0) + h.conn.mss, 0.5]
