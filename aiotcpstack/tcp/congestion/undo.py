"""Undoing a window reduction whose retransmissions were spurious (Linux ``tcp_try_undo_*``).

A sender that reduced its window for a loss that was not one (reordering, a delayed ACK path, a
spurious timeout) may put the window back.  Two kinds of evidence, as Linux:

* **DSACK** (RFC 2883 section 4 / RFC 3708): ``undo_retrans`` counts the segments retransmitted
  since ``undo_marker`` (SND.UNA when the reduction began); each DSACK reporting a duplicate
  above the marker and within the span of what was retransmitted takes its segments off.  At 0
  every retransmission reached the receiver twice: the originals had not been lost (Linux
  ``tcp_try_undo_dsack``: TCPDSACKUndo).  A DSACK is matched to the span of retransmissions, not
  to each one (Linux counts DSACKs below SND.UNA without any match): a duplicate the network
  made of a segment outside that span is no evidence, one inside it counts.
* **Timestamps** (Eifel, RFC 3522; Linux ``tcp_packet_delayed``): ``retrans_stamp`` is the TSval
  of the first retransmission; an ACK whose TSecr is older echoes an original, so the data it
  acknowledges was not lost (TCPFullUndo at the end of recovery, TCPPartialUndo on a partial
  ACK, TCPLossUndo after an RTO).

This object only keeps the evidence; the connection decides when to undo (``may_undo``) and
restores the window with ``CongestionControl.undo``.
"""
from __future__ import annotations

__all__ = ["RecoveryUndo"]

MASK = 0xFFFFFFFF
HALF = 0x80000000


def _after(a: int, b: int) -> bool:
    """``a`` is after ``b`` in sequence space (Linux ``after()``)."""
    d = (a - b) & MASK
    return d != 0 and d < HALF


class RecoveryUndo:
    """``undo_marker`` (None: nothing to undo), ``undo_retrans`` (-1: nothing retransmitted
    yet, as Linux), ``retrans_stamp`` (TSval of the first retransmission, None without
    timestamps)."""

    __slots__ = ("undo_marker", "undo_retrans", "retrans_stamp", "rtx_low", "rtx_high", "stamp_unknown")

    def __init__(self) -> None:
        self.undo_marker: int | None = None
        self.undo_retrans = -1
        self.retrans_stamp: int | None = None
        self.rtx_low = 0              # the span [rtx_low, rtx_high) of what was retransmitted
        self.rtx_high = 0
        self.stamp_unknown = False    # retransmissions before the marker, their TSval not known

    def start(self, snd_una: int, rtx_end: int | None = None, rtx_segs: int = 0) -> None:
        """A reduction begins (Linux ``tcp_init_undo``).  ``rtx_end``: retransmissions of an
        earlier episode are still outstanding up to there (``rtx_segs`` segments at most): they
        count in ``undo_retrans`` (Linux ``undo_retrans = retrans_out``) and ``retrans_stamp``
        stays that of the earlier first retransmission (Linux clears it only when none is
        outstanding) -- else an ACK echoing the earlier retransmission would look like an
        original's (Eifel) and undo a real loss."""
        self.undo_marker = snd_una
        self.stamp_unknown = False
        if rtx_end is None or rtx_segs <= 0:
            self.undo_retrans = -1
            self.retrans_stamp = None
            self.rtx_low = self.rtx_high = snd_una
        else:
            self.undo_retrans = rtx_segs
            self.rtx_low, self.rtx_high = snd_una, rtx_end
            self.stamp_unknown = self.retrans_stamp is None      # (then no Eifel undo)

    def clear(self) -> None:
        """Undone, or no longer undoable (Linux ``undo_marker = 0``)."""
        self.undo_marker = None

    def on_retransmit(self, seq: int, end: int, segs: int, tsval: int | None) -> None:
        """``segs`` segments ``[seq, end)`` were retransmitted (Linux ``tcp_retransmit_skb``:
        ``undo_retrans += pcount``; ``retrans_stamp`` set by the first)."""
        if self.undo_marker is None:
            return
        if self.undo_retrans <= 0:
            self.undo_retrans = 0
            self.rtx_low, self.rtx_high = seq, end
        else:
            if ((seq - self.rtx_low) & MASK) >= HALF:
                self.rtx_low = seq
            if ((self.rtx_high - end) & MASK) >= HALF:
                self.rtx_high = end
        self.undo_retrans += segs
        if self.retrans_stamp is None and not self.stamp_unknown:
            self.retrans_stamp = tsval

    def on_dsack(self, left: int, right: int, mss: int) -> None:
        """A DSACK block ``[left, right)`` arrived (RFC 2883 section 4): if it ends above
        ``undo_marker`` and overlaps what was retransmitted, take its segments off
        ``undo_retrans``."""
        marker = self.undo_marker
        if marker is None or self.undo_retrans <= 0:
            return
        if not _after(right, marker):
            return
        if not (_after(right, self.rtx_low) and _after(self.rtx_high, left)):
            return                                          # outside [rtx_low, rtx_high)
        n = (right - left) & MASK
        if n >= HALF or n == 0:
            return
        segs = (n + mss - 1) // mss
        self.undo_retrans = self.undo_retrans - segs if self.undo_retrans > segs else 0

    def packet_delayed(self, tsecr: int) -> bool:
        """Eifel (RFC 3522; Linux ``tcp_packet_delayed``): the ACK echoes a TSval older than the
        first retransmission, so it was triggered by an original transmission."""
        stamp = self.retrans_stamp
        return bool(stamp is not None and tsecr and ((tsecr - stamp) & MASK) >= HALF)

    def may_undo(self, tsecr: int) -> bool:
        """Linux ``tcp_may_undo``: every retransmission was DSACKed, or the ACK is delayed."""
        return self.undo_marker is not None and (self.undo_retrans == 0 or self.packet_delayed(tsecr))

    def all_dsacked(self) -> bool:
        """Every retransmission since the marker was reported as a duplicate (DSACK undo)."""
        return self.undo_marker is not None and self.undo_retrans == 0
