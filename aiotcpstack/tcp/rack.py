"""RACK: loss detection by time (RFC 8985 sections 6.1-6.3; Linux tcp_recovery.c, the default
since 4.18: ``net.ipv4.tcp_recovery = 1``).

RFC 6675 calls a segment lost when DupThresh segments above it were SACKed; with adaptive
reordering (tcp/reordering.py) that threshold can be tens of segments, and a loss near the tail
of a flight, or a retransmission lost again, then waits for the RTO.  RACK asks *when* a segment
was sent instead: once a segment sent later has been delivered (ACKed or SACKed), an earlier one
is lost when its transmission lies more than one RTT plus a reordering window (``reo_wnd``) in
the past.  What it needs per connection:

* the transmission time of every outstanding segment (RFC 8985 6.1 ``Segment.xmit_ts``): originals
  go out in sequence order, so a log of ``[end_seq, ts]`` per send call (one entry per distinct
  clock reading, extended while the clock stands still) gives the time of any original byte;
  retransmissions keep ``[seq, end, ts]`` each, in sending order (Linux's ``tsorted_sent_queue``),
  the latest transmission replacing what an earlier one of the same bytes recorded;
* ``RACK.xmit_ts`` / ``RACK.end_seq`` / ``RACK.rtt`` of the most recently sent segment delivered
  so far (6.2 step 2; ``advance``), skipping a retransmission whose RTT is below ``min_rtt`` (it
  may be the original's ACK: Linux ``tcp_rack_advance``);
* ``reo_wnd`` as Linux ``tcp_rack_reo_wnd``: 0 while no reordering was seen and the connection is
  recovering or has DupThresh segments SACKed, else ``min_rtt / 4 * reo_wnd_steps`` capped at
  SRTT; ``reo_wnd_steps`` grows by one per round trip with a DSACK (``tcp_rack_update_reo_wnd``)
  and falls back to 1 after ``reo_wnd_persist`` (16) recoveries without one.

``detect`` (6.3 ``RACK_detect_loss``) reports what became lost -- the end of the lost originals
(the connection's ``lost_end``) and the lost retransmissions (its ``relost`` ranges) -- and the
earliest deadline of a segment not yet lost, for the reordering timer (``tcp_rack_reo_timeout``).
The connection owns the scoreboard (what is SACKed, what is marked lost); this module only reads
it.  Pure sans-IO: times are the ``now`` the connection passes in.
"""
from __future__ import annotations

from bisect import bisect_left

__all__ = ["Rack", "RECOVERY_THRESH"]

MASK = 0xFFFFFFFF
HALF = 0x80000000

#: Linux TCP_RACK_RECOVERY_THRESH: recoveries a widened reo_wnd outlives
RECOVERY_THRESH = 16
#: the reo_wnd_steps cap (Linux keeps it in a u8)
MAX_STEPS = 0xFF
_SLACK = 1e-6


def _after(a: int, b: int) -> bool:
    """Sequence ``a`` lies after ``b`` (mod 2**32)."""
    return 0 < ((a - b) & MASK) < HALF


def _sent_after(t1: float, seq1: int, t2: float, seq2: int) -> bool:
    """Segment (t1, end seq1) was sent after (t2, seq2): later, or at the same time and higher
    in sequence (RFC 8985 6.2 ``RACK_sent_after``; Linux ``tcp_skb_sent_after``)."""
    return t1 > t2 or (t1 == t2 and _after(seq1, seq2))


class Rack:
    """The RACK state of one SACK connection (RFC 8985 6.1)."""

    __slots__ = ("xmit_ts", "end_seq", "rtt", "reo_wnd_steps", "reo_wnd_persist", "dsack_seen",
                 "dsack_round", "sent", "rtx", "reo_at")

    def __init__(self) -> None:
        self.xmit_ts: float | None = None   # RACK.xmit_ts (None: nothing delivered yet)
        self.end_seq = 0                    # RACK.end_seq
        self.rtt = 0.0                      # RACK.rtt
        self.reo_wnd_steps = 1              # RACK.reo_wnd_mult
        self.reo_wnd_persist = 0            # RACK.reo_wnd_persist
        self.dsack_seen = False             # RACK.dsack_round pending: a DSACK arrived
        self.dsack_round: int | None = None  # SND.NXT when reo_wnd last grew (one step per RTT)
        self.sent: list[list] = []          # originals: [end_seq, ts], in sequence = sending order
        self.rtx: list[list] = []           # retransmissions: [seq, end, ts], in sending order
        self.reo_at: float | None = None    # the retransmission timer's deadline when it is RACK's

    # ------------------------------------------------------------------ transmissions

    def on_send(self, end: int, now: float, una: int) -> None:
        """Originals up to ``end`` went out at ``now`` (after what the log already holds)."""
        sent = self.sent
        if sent:
            last = sent[-1]
            if last[1] == now:
                last[0] = end
                return
            if not _after(sent[0][0], una):
                self._prune(una)
                sent = self.sent
        sent.append([end, now])

    def on_retransmit(self, seq: int, end: int, now: float) -> None:
        """``[seq, end)`` was retransmitted at ``now``: its time is this one from now on (an older
        record of the same bytes is trimmed away)."""
        rtx = self.rtx
        if rtx:
            keep = []
            for e in rtx:
                s0, e0 = e[0], e[1]
                if not _after(e0, seq) or not _after(end, s0):
                    keep.append(e)                    # no overlap
                    continue
                if _after(seq, s0):
                    keep.append([s0, seq, e[2]])      # the part below survives
                if _after(e0, end):
                    keep.append([end, e0, e[2]])      # ... and the part above
            self.rtx = rtx = keep
        rtx.append([seq, end, now])

    def reset(self) -> None:
        """A retransmission timeout marked everything outstanding lost (Linux tcp_enter_loss):
        the per-retransmission records are moot."""
        self.rtx = []
        self.reo_at = None

    def _prune(self, una: int) -> None:
        """Forget originals the cumulative ACK covers (an end at or below ``una``)."""
        sent = self.sent
        k = 0
        n = len(sent)
        while k < n and not _after(sent[k][0], una):
            k += 1
        if k:
            del sent[:k]

    def _orig_ts(self, seq: int, una: int) -> float | None:
        """Transmission time of the original byte just below ``seq`` (None: not in the log)."""
        sent = self.sent
        if not sent:
            return None
        rel = (seq - una) & MASK
        i = bisect_left(sent, rel, key=lambda e: ((e[0] - una) & MASK) or MASK)
        if i == len(sent):
            return None
        return sent[i][1]

    # ------------------------------------------------------------------ RFC 8985 6.2

    def advance(self, una: int, prior_una: int, sacked_end: int | None, sb, now: float,
                min_rtt: float | None) -> None:
        """Step 2 of 6.2 for one ACK: among the segments it newly delivered -- retransmissions
        fully ACKed or SACKed now, the original ending at the new SND.UNA, the original ending at
        ``sacked_end`` (the highest newly SACKed sequence) -- take the most recently sent one
        whose delivery is not ambiguous; ``una``: SND.UNA after the ACK, ``sb`` pruned to it."""
        self._prune(prior_una)
        best_ts = None
        best_end = 0
        # originals first: a byte with a retransmission on record is the retransmission's
        for end in (una if una != prior_una else None, sacked_end):
            if end is None or self._retransmitted(end):
                continue
            ts = self._orig_ts(end, prior_una)
            if ts is not None and (best_ts is None or _sent_after(ts, end, best_ts, best_end)):
                best_ts, best_end = ts, end
        rtx = self.rtx
        if rtx:
            keep = []
            for e in rtx:
                s, end, ts = e
                rel_e = (end - una) & MASK
                if rel_e == 0 or rel_e >= HALF:
                    done = True                      # cumulatively acknowledged
                else:
                    rel_s = (s - una) & MASK
                    if rel_s >= HALF:
                        rel_s = 0
                    done = bool(sb.blocks) and sb.sacked_in(una, rel_s, rel_e) >= rel_e - rel_s
                if not done:
                    keep.append(e)
                    continue
                # (Linux tcp_rack_advance: an RTT below min_rtt may be the original's ACK)
                if min_rtt is not None and now - ts < min_rtt:
                    continue
                if best_ts is None or _sent_after(ts, end, best_ts, best_end):
                    best_ts, best_end = ts, end
            self.rtx = keep
        if best_ts is None:
            return
        if self.xmit_ts is None or _sent_after(best_ts, best_end, self.xmit_ts, self.end_seq):
            self.xmit_ts = best_ts
            self.end_seq = best_end
            self.rtt = now - best_ts

    def _retransmitted(self, end: int) -> bool:
        """The byte below ``end`` has a retransmission on record (its original's time is not
        its delivery's)."""
        b = (end - 1) & MASK
        for s, e, _ in self.rtx:
            if ((b - s) & MASK) < ((e - s) & MASK):
                return True
        return False

    def on_dsack(self) -> None:
        """A DSACK arrived (Linux tcp_check_dsack: ``rack.dsack_seen``)."""
        self.dsack_seen = True

    def update_reo_wnd(self, una: int, snd_nxt: int) -> None:
        """Per ACK (Linux ``tcp_rack_update_reo_wnd``): a DSACK widens the window by one step,
        at most once per round trip (the ACK must pass SND.NXT of the last widening), and makes
        it persist for RECOVERY_THRESH recoveries; without one the window is back to one step
        once that persistence ran out."""
        if self.dsack_seen:
            r = self.dsack_round
            if r is not None and ((una - r) & MASK) >= HALF:
                self.dsack_seen = False               # a round trip has not passed yet
                return
            if self.reo_wnd_steps < MAX_STEPS:
                self.reo_wnd_steps += 1
            self.dsack_seen = False
            self.dsack_round = snd_nxt
            self.reo_wnd_persist = RECOVERY_THRESH
        elif not self.reo_wnd_persist:
            self.reo_wnd_steps = 1

    def on_recovery_end(self, undo: str | None) -> None:
        """Recovery (or the loss state) ended: a DSACK undo makes the widened window persist one
        more recovery, an end without undo uses one up (Linux tcp_try_undo_dsack /
        tcp_try_undo_recovery)."""
        if undo == "TCPDSACKUndo":
            if self.reo_wnd_persist < RECOVERY_THRESH:
                self.reo_wnd_persist += 1
        elif undo is None and self.reo_wnd_persist:
            self.reo_wnd_persist -= 1

    def reo_wnd(self, reord_seen: int, recovering: bool, sacked: int, dupthresh_bytes: int,
                min_rtt: float | None, srtt: float) -> float:
        """RACK.reo_wnd (RFC 8985 6.2 step 4; Linux ``tcp_rack_reo_wnd``)."""
        if not reord_seen and (recovering or sacked >= dupthresh_bytes):
            return 0.0
        if min_rtt is None:
            return 0.0
        w = min_rtt / 4 * self.reo_wnd_steps
        return w if w < srtt else srtt

    # ------------------------------------------------------------------ RFC 8985 6.3

    def detect(self, una: int, lost_from: int, sb, now: float, reo_wnd: float):
        """RACK_detect_loss: ``(orig_lost_end, relost, deadline)``.  ``orig_lost_end``: originals
        from ``lost_from`` (SND.UNA, or the end of what is already marked lost) up to it are
        lost (None: none); ``relost``: ``[seq, end]`` retransmissions lost again (taken off the
        record); ``deadline``: the earliest time a segment sent before RACK.xmit_ts, not yet
        delivered or lost, will be (None: none), for the reordering timer."""
        xts = self.xmit_ts
        if xts is None:
            return None, (), None
        self._prune(una)
        rack_end = self.end_seq
        # sent at or before this: lost (RACK.xmit_ts + RACK.rtt + reo_wnd <= now; within 1 us, so
        # a timer firing at a deadline rounded to its tick finds what it was armed for)
        lim_t = now + _SLACK - self.rtt - reo_wnd
        deadline = None
        relost: list = []
        rtx = self.rtx
        if rtx:
            keep = []
            for e in rtx:
                s, end, ts = e
                if not _sent_after(xts, rack_end, ts, end):
                    keep.append(e)
                    continue
                rel_s = (s - una) & MASK
                rel_e = (end - una) & MASK
                if rel_e == 0 or rel_e >= HALF:
                    continue                           # acknowledged
                if rel_s >= HALF:
                    rel_s = 0
                if sb.blocks and sb.sacked_in(una, rel_s, rel_e) >= rel_e - rel_s:
                    continue
                if ts <= lim_t:
                    relost.append([(una + rel_s) & MASK, end])
                    continue
                keep.append(e)
                d = ts + self.rtt + reo_wnd
                if deadline is None or d < deadline:
                    deadline = d
            self.rtx = keep
        # originals, in sequence (= sending) order, from lost_from on
        lost_end = None
        sent = self.sent
        if sent:
            rel_from = (lost_from - una) & MASK
            if rel_from >= HALF:
                rel_from = 0
            i = bisect_left(sent, rel_from + 1, key=lambda e: ((e[0] - una) & MASK) or MASK)
            start = rel_from
            rel_rack = (rack_end - una) & MASK
            # originals stop at the first retransmission on record: its bytes' time is the
            # retransmission's (a tail loss probe's copy of the last segment, say)
            clip = HALF
            for e in self.rtx:
                r = (e[0] - una) & MASK
                if rel_from <= r < clip:
                    clip = r
            for r_s, _ in relost:
                r = (r_s - una) & MASK
                if rel_from <= r < clip:
                    clip = r
            for k in range(i, len(sent)):
                end_abs, ts = sent[k]
                if ts > xts or start >= clip:
                    break
                rel_e = (end_abs - una) & MASK
                if rel_e > clip:
                    rel_e = clip
                if ts == xts:
                    if rel_rack >= HALF or rel_rack <= start:
                        break
                    if rel_e > rel_rack:
                        rel_e = rel_rack               # the same send: only what lies below RACK's
                if rel_e >= HALF or rel_e <= start:
                    start = rel_e if rel_e < HALF else start
                    continue
                if sb.blocks and sb.sacked_in(una, start, rel_e) >= rel_e - start:
                    start = rel_e
                    continue                           # all delivered: nothing to decide
                if ts <= lim_t:
                    lost_end = (una + rel_e) & MASK
                    start = rel_e
                    continue
                d = ts + self.rtt + reo_wnd
                if deadline is None or d < deadline:
                    deadline = d
                break                                   # the rest was sent later still
        return lost_end, relost, deadline
