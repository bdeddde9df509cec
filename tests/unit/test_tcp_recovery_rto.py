"""The loss state after a retransmission timeout (RFC 5681 3.1, RFC 5682 F-RTO; Linux
tcp_enter_loss / tcp_process_loss / tcp_xmit_recovery) on the segment-level harness."""
from __future__ import annotations

from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.wire.tcp import TcpOptions

from tcp_harness import Harness

M = 1460
CA_LOSS = 4

SACK_RENO = TcpConfig(timestamps=False, sack=True, window_scaling=False, congestion_control="reno",
                      initial_cwnd=20, tlp=False)


def seg(i: int) -> int:
    return 1001 + i * M


def est(cfg: TcpConfig = SACK_RENO, window: int = 65535) -> Harness:
    h = Harness(cfg, iss=1000)
    h.establish_active(5000, rtt=0.01, peer_opts=TcpOptions(mss=M, sack_permitted=True), window=window)
    return h


def _rto(h: Harness) -> None:
    """Let the retransmission timer fire once; the head segment is retransmitted."""
    out = h.run_until(h.wheel.next_expiry() + 1e-6)
    assert [s.seq for s in out if s.payload] == [seg(0)] and h.conn.ca_state == CA_LOSS
    assert h.conn.frto == 1


def test_frto_step_2b_falls_back_to_retransmission_when_no_new_data_fits():
    # the peer's window is full (its right edge stays where it was, as a kernel receiver's does
    # while it holds the out-of-order data): after the RTO the ACK of the retransmitted head
    # leaves room for less than a segment, so F-RTO's step 2b cannot send new data (sender SWS
    # avoidance).  RFC 5682 step 2b: then the conventional recovery -- retransmit now (Linux
    # tcp_xmit_recovery clears tp->frto and retransmits); before, this ACK sent nothing and the
    # next RTO had to repair
    w = 10 * M + 500
    h = est(window=w)
    h.conn.send(b"d" * 30 * M, 0.02)
    assert len(h.take()) == 10                    # the window is full (500 bytes left: SWS)
    _rto(h)
    out = h.feed(h.now + 0.01, ".", 5001, seg(1), window=w - M)
    assert [s.seq for s in out if s.payload] == [seg(1), seg(2)]    # cwnd 2 SMSS, retransmissions
    assert h.conn.frto == 0 and h.conn.cc.cwnd == 2 * M
    # then slow start (RFC 5681 3.1): +1 SMSS per ACKed segment, two retransmissions per ACK
    nxt = 3
    for k in range(2, 5):                          # (ssthresh: 10 outstanding / 2)
        out = h.feed(h.now + 0.01, ".", 5001, seg(k), window=w - k * M)
        assert h.conn.cc.cwnd == (k + 1) * M
        assert [s.seq for s in out if s.payload] == [seg(nxt), seg(nxt + 1)]
        nxt += 2


def test_frto_step_2b_sends_new_data_when_it_fits():
    # the counterpart: with room for new data, step 2b sends it (two segments) and no
    # retransmission; the next ACK decides
    h = est()
    h.conn.send(b"d" * 30 * M, 0.02)
    assert len(h.take()) == 20
    _rto(h)
    out = h.feed(h.now + 0.01, ".", 5001, seg(1))
    assert [s.seq for s in out if s.payload] == [seg(20), seg(21)]
    assert h.conn.frto == 1


# ---------------------------------------------------------------- the lost mark, lost_end

NOSACK = TcpConfig(timestamps=False, sack=False, window_scaling=False, congestion_control="reno",
                   initial_cwnd=20, tlp=False, nodelay=True)


def test_lost_mark_never_past_snd_nxt_with_less_than_a_segment_outstanding():
    # 500 bytes outstanding, three duplicate ACKs: fast retransmit marks SND.UNA + SMSS lost
    # (RFC 6582), which reached 960 bytes past SND.NXT; the retransmission scan then moved
    # HighRxt there too, over sequence space not yet sent -- data written afterwards counted as
    # already retransmitted in this recovery (never repaired by it if lost)
    h = est(NOSACK)
    h.conn.send(b"a" * 500, 0.02)
    assert len(h.take()) == 1
    t = 0.03
    for _ in range(3):
        t += 1e-4
        h.feed(t, ".", 5001, 1001)
    out = h.take()
    assert h.conn.ca_state == 3 and [s.seq for s in out if s.payload] == [1001]   # fast retransmit
    assert h.conn.lost_end == h.conn.snd_nxt == 1501
    assert h.conn.high_rxt == 1501
    assert h.conn._pipe() == 500                  # the retransmission is in flight


# ---------------------------------------------------------------- duplicate ACKs on a SACK connection

def _fifteen_out(h: Harness) -> Harness:
    h.conn.send(b"d" * 15 * M, 0.02)
    assert len(h.take()) == 15
    return h


def test_window_updates_at_the_maximum_window_are_not_duplicate_acks_with_sack():
    # a receiver reading its backlog sends window updates; with the window already at its
    # maximum their window field does not change, so they look exactly like duplicate ACKs.
    # On a SACK connection only an ACK with new SACK information counts (RFC 5681 section 2's
    # SACK alternative, RFC 6675; Linux: SACKed segments, tcp_dupack_heuristics): three of these
    # started a false fast recovery, which without SACK information crept one segment per
    # partial ACK (the kernel receiver delays each by 40 ms: a bulk send 4x slower)
    h = _fifteen_out(est())
    t = 0.03
    for _ in range(5):
        t += 1e-4
        out = h.feed(t, ".", 5001, seg(0))
        assert not [s for s in out if s.payload]
    assert h.conn.ca_state == 0 and h.counters["RetransSegs"] == 0
    # with SACK information the same duplicate ACKs do start it (IsLost / DupThresh)
    for k in range(2, 5):
        t += 1e-4
        out = h.feed(t, ".", 5001, seg(0), opts=TcpOptions(sack_blocks=((seg(1), seg(k)),)))
    assert h.conn.ca_state == 3 and seg(0) in [s.seq for s in out if s.payload]


def test_duplicate_acks_without_sack_still_count_when_sack_is_off():
    h = _fifteen_out(est(NOSACK))
    t = 0.03
    for _ in range(3):
        t += 1e-4
        out = h.feed(t, ".", 5001, seg(0))
    assert h.conn.ca_state == 3 and [s.seq for s in out if s.payload][:1] == [seg(0)]
