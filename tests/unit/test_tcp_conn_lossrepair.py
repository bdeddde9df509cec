"""Loss repair without the RTO, at segment level on virtual time:

- lost retransmission detection (Linux tcp_mark_lost_retrans / RFC 8985 time order): a fast
  retransmission that is lost again is retransmitted once data sent after it is SACKed -- before,
  only the RTO (200 ms+, cwnd to 1) repaired it: the cause of the RTOs seen in a 4 MiB upload at 1 %;
- tail loss probe (RFC 8985 7): when the tail of a flight is lost no dupACK ever comes; after
  PTO = 2*SRTT a probe (new data, or the last segment again) elicits a SACK that starts fast recovery;
- TLP never fires while recovering, and recovery entered with a PTO armed restores the real RTO.
"""
from __future__ import annotations

from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.wire.tcp import TcpOptions

from tcp_harness import Harness

SACK = TcpConfig(timestamps=False, sack=True, window_scaling=False)
NOTLP = TcpConfig(timestamps=False, sack=True, window_scaling=False, tlp=False)
MSS = 1460


def est(cfg=SACK, rtt=0.01):
    h = Harness(cfg, iss=1000)
    h.establish_active(5000, rtt=rtt, peer_opts=TcpOptions(mss=1460, sack_permitted=True))
    return h


def seg(i):
    return 1001 + i * MSS


def sack(h, t, ack, *blocks):
    return h.feed(t, ".", 5001, ack, opts=TcpOptions(sack_blocks=tuple(blocks)))


def test_lost_fast_retransmission_is_retransmitted_again_without_rto():
    h = est()
    h.conn.send(b"a" * 40 * MSS, 0.02)
    first = h.take()
    assert len(first) == 10
    # segment 0 lost; 1..3 SACKed -> fast retransmit of 0
    out = []
    for k in (2, 3, 4):
        out += sack(h, 0.031, seg(0), (seg(1), seg(k)))
    assert [s.seq for s in out if s.seq == seg(0)] == [seg(0)]
    assert h.conn.ca_state == 3
    nxt_at_rtx = h.conn.snd_nxt
    # the rest of the flight and new data are SACKed, but the retransmission of 0 was lost too
    out = []
    for k in range(5, 11):
        out += sack(h, 0.032 + k * 1e-4, seg(0), (seg(1), seg(k)))
    assert not [s for s in out if s.seq == seg(0)]          # nothing sent after the rtx is SACKed yet
    assert h.conn.snd_nxt != nxt_at_rtx                     # new data went out during recovery
    # data sent after the retransmission arrives (SACKed beyond SND.NXT at retransmission time)
    out = sack(h, 0.045, seg(0), (seg(1), (nxt_at_rtx + MSS) & 0xFFFFFFFF))
    again = [s for s in out if s.seq == seg(0)]
    assert again and len(again[0].payload) == MSS
    assert h.counters["TCPLostRetransmit"] == 1
    # it arrives: everything acknowledged, no RTO at all
    h.feed(0.06, ".", 5001, h.conn.snd_nxt)
    assert h.conn.ca_state == 0 and h.counters["TCPTimeouts"] == 0


def test_retransmission_not_declared_lost_before_later_data_is_sacked():
    h = est()
    h.conn.send(b"a" * 10 * MSS, 0.02)
    h.take()
    for k in (2, 3, 4):
        sack(h, 0.031, seg(0), (seg(1), seg(k)))
    h.take()
    # SACKs for data sent BEFORE the retransmission say nothing about it
    out = []
    for k in range(5, 11):
        out += sack(h, 0.035, seg(0), (seg(1), seg(k)))
    assert not [s for s in out if s.seq == seg(0)]
    assert h.counters["TCPLostRetransmit"] == 0


def test_tail_loss_probe_sends_last_segment_then_recovery_not_rto():
    h = est()
    h.conn.send(b"t" * 4 * MSS, 0.02)
    assert len(h.take()) == 4
    h.feed(0.03, ".", 5001, seg(1))                        # segment 0 acked; 1, 2, 3 lost
    srtt = h.conn.rtt.srtt
    # nothing more: PTO = 2*SRTT (+2 ms) later a probe retransmits the last segment
    out = h.run_until(0.03 + 2 * srtt + 0.01)
    assert len(out) == 1 and out[0].seq == seg(3) and len(out[0].payload) == MSS
    assert h.counters["TCPLossProbes"] == 1 and h.counters["TCPTimeouts"] == 0
    t = out[0].t
    # its SACK: fast recovery marks 1 and 2 lost (RACK order: sent before the probe); PRR
    # (RFC 9937) lets out what the ACK delivered: one segment, the next on the next ACK
    out = sack(h, t + 0.01, seg(1), (seg(3), seg(4)))
    assert [s.seq for s in out] == [seg(1)]
    assert h.conn.ca_state == 3 and h.counters["TCPSackRecovery"] == 1
    out = sack(h, t + 0.015, seg(2), (seg(3), seg(4)))
    assert [s.seq for s in out] == [seg(2)]
    h.feed(t + 0.02, ".", 5001, seg(4))
    assert h.conn.ca_state == 0 and h.counters["TCPTimeouts"] == 0


def test_tail_loss_probe_prefers_new_data():
    h = est(TcpConfig(timestamps=False, sack=True, window_scaling=False, cork=True))
    h.conn.send(b"t" * 3 * MSS, 0.02)
    assert len(h.take()) == 3
    h.feed(0.03, ".", 5001, seg(1))                        # 1 and 2 lost (the tail)
    h.conn.send(b"u" * 100, 0.031)                         # a partial segment: TCP_CORK holds it
    assert h.take() == []
    probe = h.run_until(0.2)
    assert probe[0].seq == seg(3) and len(probe[0].payload) == 100   # new data first (RFC 8985 7.3)
    assert h.counters["TCPLossProbes"] == 1 and h.counters["RetransSegs"] == 0
    out = sack(h, h.now + 0.01, seg(1), (seg(3), seg(3) + 100))
    # the probe's SACK starts fast recovery (PRR, RFC 9937: the fast retransmit first)
    assert [s.seq for s in out] == [seg(1)] and h.conn.ca_state == 3
    h.feed(h.now + 0.01, ".", 5001, h.conn.snd_nxt)
    assert h.counters["TCPTimeouts"] == 0


def test_tail_loss_probe_for_a_lost_fin():
    h = est()
    h.conn.send(b"f" * 100, 0.02)
    h.conn.shutdown(0.02)
    out = h.take()
    assert out[-1].flags.startswith("F")
    h.feed(0.03, ".", 5001, 1101)                          # data acked, FIN lost
    out = h.run_until(0.03 + h.conn.rtt.rto + 0.001)      # PTO = min(2*SRTT + 200 ms, RTO)
    assert out and out[0].flags.startswith("F") and out[0].seq == 1101
    assert h.counters["TCPLossProbes"] == 1 and h.counters["TCPTimeouts"] == 0


def test_no_tail_loss_probe_when_disabled_or_without_sack():
    h = est(NOTLP)
    h.conn.send(b"t" * 4 * MSS, 0.02)
    h.take()
    out = h.run_until(0.02 + h.conn.rtt.rto - 0.001)
    assert out == [] and h.counters["TCPLossProbes"] == 0
    h = Harness(TcpConfig(timestamps=False, sack=False, window_scaling=False), iss=1000)
    h.establish_active(5000, rtt=0.01, peer_opts=TcpOptions(mss=1460))
    h.conn.send(b"t" * 4 * MSS, 0.02)
    h.take()
    assert h.run_until(0.02 + h.conn.rtt.rto - 0.001) == []


def test_recovery_entered_with_pto_armed_keeps_the_rto_not_the_pto():
    h = est()
    h.conn.send(b"r" * 10 * MSS, 0.02)
    h.take()
    for k in (2, 3, 4):
        sack(h, 0.031, seg(0), (seg(1), seg(k)))
    assert h.conn.ca_state == 3 and not h.conn.tlp_armed
    h.take()
    rto = h.conn.rtt.rto
    # no further ACKs: nothing fires before the RTO (no probe in recovery, no early "RTO")
    assert h.run_until(0.031 + rto - 0.005) == []
    assert h.counters["TCPLossProbes"] == 0 and h.counters["TCPTimeouts"] == 0
    h.run_until(0.031 + rto + 0.01)
    assert h.counters["TCPTimeouts"] == 1


def test_fin_after_a_delayed_full_segment_is_acked_at_once():
    """Linux __tcp_ack_snd_check: more than one full segment unacknowledged (the FIN counts) -> ACK
    now, not after the delayed-ACK timer; else the sender's tail loss probe fires first and sends
    the last segment again (seen live: the kernel's TCPLossProbes + a DSACK from us)."""
    h = est()
    for _ in range(20):                                    # leave quickack mode (bulk receiver)
        seq = h.conn.rcv_nxt
        h.feed(h.now + 0.001, ".", seq, 1001, payload=b"d" * MSS)
        h.feed(h.now + 0.0001, ".", seq + MSS, 1001, payload=b"d" * MSS)
    h.take()
    seq = h.conn.rcv_nxt
    assert h.feed(h.now + 0.001, ".", seq, 1001, payload=b"d" * MSS) == []   # delayed ACK
    out = h.feed(h.now + 0.0005, "F.", seq + MSS, 1001)
    assert out and out[0].ack == seq + MSS + 1 and h.conn.state == "CLOSE_WAIT"


def test_lone_fin_ack_is_still_delayed_for_piggybacking():
    h = est()
    for _ in range(20):
        seq = h.conn.rcv_nxt
        h.feed(h.now + 0.001, ".", seq, 1001, payload=b"d" * MSS)
        h.feed(h.now + 0.0001, ".", seq + MSS, 1001, payload=b"d" * MSS)
    h.take()
    seq = h.conn.rcv_nxt
    assert h.feed(h.now + 0.001, "F.", seq, 1001) == []    # pingpong: the ACK may ride on our FIN
    assert h.conn.ack_pending == 1
