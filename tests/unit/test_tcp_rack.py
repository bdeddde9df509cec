"""RACK loss detection (tcp/rack.py; RFC 8985 sections 6.2-6.3, Linux tcp_recovery.c with
net.ipv4.tcp_recovery = 1): a segment is lost when one sent after it was delivered and its own
transmission lies RACK.rtt + reo_wnd in the past -- by time, not by a count of SACKed segments.
Each scenario here behaves differently with ``recovery=0`` (RFC 6675's DupThresh rules), which
the tests check too, so they fail without RACK."""
from __future__ import annotations

import pytest

from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.rack import Rack
from aiotcpstack.wire.tcp import TcpOptions

from tcp_harness import Harness

M = 1460
CFG = TcpConfig(timestamps=False, sack=True, window_scaling=False, congestion_control="reno",
                initial_cwnd=20, tlp=False)
OFF = CFG.with_options(recovery=0)


def seg(i: int) -> int:
    return 1001 + i * M


def est(cfg: TcpConfig = CFG) -> Harness:
    """20 segments out at t = 0.02 (one send: one transmission time), SYN RTT 10 ms."""
    h = Harness(cfg, iss=1000)
    h.establish_active(5000, rtt=0.01, peer_opts=TcpOptions(mss=M, sack_permitted=True))
    h.at(0.02)
    h.conn.send(b"u" * 60 * M, 0.02)
    assert len(h.take()) == 20
    return h


def sack(h: Harness, t: float, ack: int, *blocks) -> list:
    return h.feed(t, ".", 5001, ack, opts=TcpOptions(sack_blocks=tuple(blocks)))


def rtx_of(out: list, i: int) -> bool:
    return any(s.seq == seg(i) and s.payload for s in out)


@pytest.mark.parametrize("cfg", [CFG, OFF], ids=["rack", "dupthresh"])
def test_tail_loss_found_by_the_reordering_timer(cfg):
    """Segment 18 lost, only 19 SACKed above it (one segment: below DupThresh).  RACK: 18 was
    sent with 19, so it is lost once RACK.rtt + reo_wnd (min_rtt / 4, no reordering seen, fewer
    than DupThresh SACKed) passed: the reordering timer fires then and recovery retransmits it,
    long before the RTO.  DupThresh alone waits for the RTO."""
    h = est(cfg)
    out = sack(h, 0.031, seg(18), (seg(19), seg(20)))
    assert not rtx_of(out, 18) and h.conn.ca_state == 0
    rack = h.conn.rack
    if cfg.recovery:
        # RACK.xmit_ts is segment 19's (sent at 0.02), its RTT 11 ms; reo_wnd 10 ms / 4
        assert rack.xmit_ts == pytest.approx(0.02) and rack.rtt == pytest.approx(0.011)
        assert rack.reo_at == pytest.approx(0.02 + 0.011 + 0.0025)
        assert h.conn._t_rtx.expires == rack.reo_at
    else:
        assert rack is None
    out = h.run_until(0.036)
    if cfg.recovery:
        # (at the timer's deadline, rounded up to the wheel's 1 ms tick)
        assert rtx_of(out, 18) and 0.0335 <= [s.t for s in out if s.seq == seg(18)][0] <= 0.0345
        assert h.conn.ca_state == 3 and h.counters["TCPSackRecovery"] == 1
        assert h.counters["TCPTimeouts"] == 0
    else:
        assert not rtx_of(out, 18) and h.counters["RetransSegs"] == 0


@pytest.mark.parametrize("cfg", [CFG, OFF], ids=["rack", "dupthresh"])
def test_a_retransmission_lost_again_is_found_by_time_order(cfg):
    """Holes at 0 and 5: both retransmitted, 0 first.  The peer SACKs the retransmission of 5
    (sent after 0's) but still not 0: RACK (reo_wnd 0 in recovery without reordering) marks 0's
    retransmission lost at once and sends it again (TCPLostRetransmit).  The pre-RACK rule
    (tcp_mark_lost_retrans) needs a SACK beyond SND.NXT of that retransmission: none."""
    h = est(cfg)
    t = 0.031
    out = sack(h, t, seg(0), (seg(6), seg(10)), (seg(1), seg(5)))
    assert h.conn.ca_state == 3
    # more SACKs let PRR send: both holes retransmitted, 0 first
    for k in range(11, 15):
        t += 1e-4
        out += sack(h, t, seg(0), (seg(6), seg(k)), (seg(1), seg(5)))
    first = [s for s in out if s.seq in (seg(0), seg(5)) and s.payload]
    # (sent in one go: the same time, and RACK orders those by sequence, RFC 8985 6.2)
    assert [s.seq for s in first] == [seg(0), seg(5)] and first[0].t <= first[1].t
    t = first[1].t + 0.011
    out = sack(h, t, seg(0), (seg(5), seg(14)), (seg(1), seg(4)))
    if cfg.recovery:
        assert h.counters["TCPLostRetransmit"] == 1
        assert rtx_of(out, 0)
    else:
        assert h.counters["TCPLostRetransmit"] == 0 and not rtx_of(out, 0)


@pytest.mark.parametrize("cfg", [CFG, OFF], ids=["rack", "dupthresh"])
def test_reordering_within_reo_wnd_is_not_marked(cfg):
    """Once reordering was seen, reo_wnd is min_rtt / 4 = 2.5 ms whatever the count: eight
    segments SACKed above a hole within 1 ms, then the late original -- no retransmission with
    RACK; DupThresh (3, the first reordering was only 2 segments deep) retransmits."""
    h = est(cfg)
    sack(h, 0.031, seg(0), (seg(1), seg(2)))
    sack(h, 0.0312, seg(2))                     # 0 was only late: reordering seen
    assert h.conn.reord_seen == 1 and h.conn.reordering == 3
    t = 0.0313
    for k in range(7, 15):
        t += 1e-4
        sack(h, t, seg(5), (seg(6), seg(k)))
    out = sack(h, t + 1e-4, seg(14))            # ... and 5 arrives, 1 ms after the first SACK
    if cfg.recovery:
        assert h.counters["RetransSegs"] == 0 and h.conn.ca_state == 0
        assert not rtx_of(out, 5)
    else:
        assert h.counters["RetransSegs"] >= 1


def test_reordering_beyond_reo_wnd_is_marked_and_dsack_widens_it():
    """A hole whose segment is later than reo_wnd (2.5 ms) is marked lost by the reordering
    timer and retransmitted; the original arrives after all and the peer reports the
    retransmission as a duplicate (DSACK): reo_wnd grows a step (Linux
    tcp_rack_update_reo_wnd), to 5 ms, so the same 4 ms of reordering is not marked again."""
    h = est()
    rack = h.conn.rack
    sack(h, 0.031, seg(0), (seg(1), seg(2)))
    sack(h, 0.0312, seg(2))                     # reordering seen: reo_wnd 2.5 ms from now on
    sack(h, 0.0315, seg(5), (seg(6), seg(8)))
    out = h.run_until(0.040)                    # 5 sent at 0.02, RACK.rtt 11.5 ms: lost at 0.034
    assert rtx_of(out, 5) and h.counters["RetransSegs"] == 1
    # the original 5 arrives after all; then the DSACK for its retransmission
    sack(h, 0.0405, seg(8))
    assert rack.reo_wnd_steps == 1
    sack(h, 0.041, seg(8), (seg(5), seg(6)))
    assert h.counters["TCPDSACKRecv"] == 1 and rack.reo_wnd_steps == 2
    assert rack.reo_wnd(1, False, 0, 3 * M, h.conn.rtt.min_rtt, h.conn.rtt.srtt) == pytest.approx(0.005)
    # the next hole, 4 ms late: within the widened window, not marked
    una = h.conn.snd_una
    t = 0.045
    sack(h, t, una, (una + M, una + 2 * M))
    h.run_until(t + 0.004)
    assert h.counters["RetransSegs"] == 1
    sack(h, t + 0.004, una + 2 * M)
    assert h.counters["RetransSegs"] == 1 and h.conn.ca_state == 0


def test_recovery_option_validated_and_rack_only_with_sack():
    with pytest.raises(ValueError, match="recovery"):
        TcpConfig(recovery=2)
    h = Harness(CFG.with_options(sack=False), iss=1000)
    h.establish_active(5000, rtt=0.01, peer_opts=TcpOptions(mss=M))
    assert h.conn.rack is None                  # (Linux: RACK needs SACK; NewReno without)


def test_rack_state_made_with_the_first_data_only():
    """RACK's state is a sender's: an established connection that has sent nothing (an idle
    one, or one that only receives) holds none (memory per idle connection); the first data
    queued makes it, and data queued before the handshake completed has it from ESTABLISHED on
    -- with recovery on; never with recovery=0."""
    for cfg in (CFG, OFF):
        h = Harness(cfg, iss=1000)
        h.establish_active(5000, rtt=0.01, peer_opts=TcpOptions(mss=M, sack_permitted=True))
        h.feed(0.02, "P.", 5001, 1001, payload=b"x" * 100)   # the peer's data only
        assert h.conn.rack is None
        h.conn.send(b"y" * 10, 0.03)
        assert (h.conn.rack is not None) == bool(cfg.recovery)
        early = Harness(cfg, iss=1000)
        early.at(0.0)
        early.conn.connect(0.0)
        syn = early.take_one()
        early.conn.send(b"z" * 10, 0.001)               # queued in SYN-SENT
        assert early.conn.rack is None
        early.feed(0.01, "S.", 5000, syn.seq + 1, opts=TcpOptions(mss=M, sack_permitted=True))
        assert early.conn.state == "ESTABLISHED"
        assert (early.conn.rack is not None) == bool(cfg.recovery)
        out = early.take()
        assert any(s.payload == b"z" * 10 for s in out)
        if cfg.recovery:
            assert early.conn.rack.sent                  # its transmission was logged


def test_rack_state_units():
    """The transmission log and RACK.advance on their own: originals by sequence, one entry per
    clock reading; a retransmission's time replaces the original's; an ambiguous one (RTT below
    min_rtt) does not advance RACK."""
    r = Rack()
    r.on_send(100, 1.0, 0)
    r.on_send(200, 1.0, 0)                      # the same clock reading: one entry
    r.on_send(300, 2.0, 0)
    assert r.sent == [[200, 1.0], [300, 2.0]]
    assert r._orig_ts(150, 0) == 1.0 and r._orig_ts(201, 0) == 2.0 and r._orig_ts(301, 0) is None
    r.on_retransmit(100, 200, 3.0)
    r.on_retransmit(150, 250, 3.5)              # overlaps: the older record keeps [100, 150)
    assert r.rtx == [[100, 150, 3.0], [150, 250, 3.5]]

    class NoSack:
        blocks = ()
    r.advance(160, 0, None, NoSack(), 3.51, 0.1)   # ACK to 160: 100-150's rtx after 0.51 s
    assert r.xmit_ts == 3.0 and r.end_seq == 150 and r.rtt == pytest.approx(0.51)
    r.advance(250, 160, None, NoSack(), 3.52, 0.1)  # 150-250's rtx after 20 ms < min_rtt: ambiguous
    assert r.xmit_ts == 3.0 and r.rtx == []


def test_scoreboard_reports_the_highest_newly_sacked_end():
    """RACK's original candidate (``SackScoreboard.newly_end``): the end of the highest range a
    SACK newly covered -- below a block already known when the new one only extends it
    downwards, None when nothing is new."""
    from aiotcpstack.tcp.sack import SackScoreboard
    sb = SackScoreboard()
    sb.update(((300, 400),), 100, 1000)
    assert sb.newly_end == 400
    sb.update(((200, 400),), 100, 1000)         # extends [300, 400) down: new bytes end at 300
    assert sb.newly_end == 300
    sb.update(((200, 400), (500, 600)), 100, 1000)
    assert sb.newly_end == 600
    sb.update(((200, 400),), 100, 1000)         # nothing new
    assert sb.newly_end is None


def test_a_batch_tail_sent_after_a_nested_later_send_is_not_marked_lost_in_flight():
    """RACK's send times follow the connection's clock, which never runs backwards (PERF_LOG
    steps 31-32).  A batch of ACKs runs at the ``now`` read when it arrived; the application's
    write from its send-space callback sends at a *later* clock and holds the partial tail,
    which the batch's own output then sends.  Recorded at the batch's older ``now``, that tail
    looked sent *before* the nested segments that precede it on the wire: as soon as one of
    them was SACKed, RACK (RFC 8985 6.3: sent before RACK.xmit_ts, more than RACK.rtt +
    reo_wnd ago) marked the tail lost while it was still in flight.  In a bulk send that hit
    every batch with a nested write during a recovery: 1,272 spurious fast retransmissions,
    all DSACKed, in one run (one per ACK, none of them F-RTO's or the RTO's to undo)."""
    h = Harness(CFG.with_options(initial_cwnd=30), iss=1000)      # (room for the new data)
    h.establish_active(5000, rtt=0.01, peer_opts=TcpOptions(mss=M, sack_permitted=True))
    h.at(0.02)
    h.conn.send(b"u" * 20 * M, 0.02)
    assert len(h.take()) == 20
    writes = []

    def send_space() -> None:
        if not writes:
            writes.append(1)
            h.conn.send(b"v" * (4 * M + 100), 0.039, True)   # (the application's later clock)

    h.rec.tcp_send_space = send_space
    # segment 1 is missing; the ACK of segment 0 frees space: the nested write sends four
    # segments at 0.039 and holds its 100-byte tail, the batch (at 0.031) sends the tail
    out = sack(h, 0.031, seg(1), (seg(2), seg(4)))
    tail = seg(24)
    assert writes and [(s.seq, len(s.payload)) for s in out if s.payload][-1] == (tail, 100)
    # the nested segments are SACKed (RACK.xmit_ts: 0.039); the tail, sent after them, is not yet
    out = sack(h, 0.05, seg(1), (seg(20), seg(24)), (seg(2), seg(4)))
    assert h.conn.ca_state == 3 and rtx_of(out, 1)           # segment 1: sent at 0.02, lost
    assert not any(s.seq == tail and s.payload for s in out)  # the tail is in flight, not lost
    # lost: what was sent at 0.02 and is not SACKed (1, 4-19); not the tail (before: up to its end)
    assert h.conn.lost_end == seg(20)
