"""The sender's reordering degree (Linux ``tp->reordering``, ``tcp_check_sack_reordering``).

RFC 5681 and RFC 6675 fix DupThresh at 3: three duplicate ACKs, or more than two segments SACKed
above a hole, and the hole is taken as lost.  A path that reorders by more than that makes the
sender enter fast recovery for losses that are not; undo (tcp/congestion/undo.py) gives the
window back afterwards, but the same reordering starts the next spurious recovery.  As Linux
(and RFC 4653's idea of a DupThresh that follows the reordering seen), each connection keeps
``reordering``: initially 3 (``net.ipv4.tcp_reordering``), raised -- never lowered -- when an
ACK shows a hole filled by a segment that was *not retransmitted* (the original was only late),
to the distance in segments from that hole to the highest SACKed sequence (``fack``), capped at
300 (``net.ipv4.tcp_max_reordering``).  The connection uses it as DupThresh (RFC 6675 IsLost;
Linux ``tcp_time_to_recover``).  Every detection counts (Linux ``reord_seen``): TCPSACKReorder
when SACK or the cumulative ACK showed it, TCPTSReorder when timestamps did (Eifel, RFC 3522).
"""
from __future__ import annotations

__all__ = ["INITIAL_REORDERING", "MAX_REORDERING", "reordering_after"]

MASK = 0xFFFFFFFF
HALF = 0x80000000

#: ``net.ipv4.tcp_reordering``: the RFC 5681 DupThresh
INITIAL_REORDERING = 3
#: ``net.ipv4.tcp_max_reordering``
MAX_REORDERING = 300


def reordering_after(reordering: int, low_seq: int, fack: int, mss: int) -> int | None:
    """The reordering degree after a hole at ``low_seq`` was filled by an original while data up
    to ``fack`` (the highest SACKed sequence, or the ACK) had arrived; None when ``low_seq`` is
    not below ``fack`` (no reordering shown).  Linux ``tcp_check_sack_reordering``: raised to
    ``ceil((fack - low_seq) / mss)`` when that is more than ``reordering`` segments, capped."""
    metric = (fack - low_seq) & MASK
    if metric == 0 or metric >= HALF or mss <= 0:
        return None
    if metric > reordering * mss:
        segs = (metric + mss - 1) // mss
        return segs if segs < MAX_REORDERING else MAX_REORDERING
    return reordering
