"""Proportional Rate Reduction (RFC 9937, which obsoletes RFC 6937; Linux ``tcp_cwnd_reduction``).

PRR decides how much a sender may transmit on each ACK while it reduces its window after a
congestion signal (fast recovery, and ECN's CWR: tcp/ecn.py).  Instead of RFC 6675's "send whatever
``cwnd - pipe`` allows" -- a burst, or a long silence, right after the reduction -- it spreads
the reduction over the recovery round trip: while ``pipe > ssthresh`` it sends ``ssthresh /
RecoverFS`` bytes per byte delivered (the proportional part), and once ``pipe`` fell to
``ssthresh`` it grows back towards it no faster than slow start (PRR-SSRB: what was delivered,
plus one SMSS on a "safe" ACK).  At the end of recovery ``cwnd = ssthresh``
(``CongestionControl.on_recovery_exit``).

Units are bytes, like the rest of tcp/congestion/.  The connection tells this object what each
ACK delivered and what it transmitted; :meth:`Prr.sndcnt` returns how many bytes the ACK lets
out, and the connection sets ``cwnd = pipe + sndcnt`` (as Linux does), so its ordinary output
loop -- which sends while ``cwnd - pipe`` allows -- sends exactly that.

Choices (RFC 9937 section 4, where RFC 6937 differed):

* ``RecoverFS = SND.NXT - SND.UNA`` when recovery starts (including bytes SACKed before it,
  RFC 9937); Linux uses ``prior_cwnd``, which is the same for a cwnd-limited sender.
* SSRB only on a SafeACK (SND.UNA advanced and no further loss was detected), else the
  conservative bound (RFC 9937; Linux ``FLAG_SND_UNA_ADVANCED && !newly_lost``).
* The fast retransmit is forced: if nothing was sent yet in this recovery, at least one SMSS.
* The proportional part's CEIL is taken in whole SMSS, as Linux's packet counts do.
"""
from __future__ import annotations

__all__ = ["Prr"]


class Prr:
    """The PRR state of one reduction: ``prr_delivered``, ``prr_out``, ``recover_fs`` (bytes)."""

    __slots__ = ("prr_delivered", "prr_out", "recover_fs")

    def __init__(self) -> None:
        self.prr_delivered = 0
        self.prr_out = 0
        self.recover_fs = 0

    def start(self, recover_fs: int) -> None:
        """A reduction begins (RFC 9937 section 4 "on entering recovery", Linux
        ``tcp_init_cwnd_reduction``): ``recover_fs`` is SND.NXT - SND.UNA."""
        self.prr_delivered = 0
        self.prr_out = 0
        self.recover_fs = recover_fs if recover_fs > 0 else 1

    def sent(self, nbytes: int) -> None:
        """Data (new or retransmitted) went out during the reduction: ``prr_out += nbytes``."""
        self.prr_out += nbytes

    def sndcnt(self, delivered: int, pipe: int, ssthresh: int, mss: int, safe_ack: bool) -> int:
        """Bytes this ACK allows to send (RFC 9937 section 4; Linux ``tcp_cwnd_reduction``).

        ``delivered``: DeliveredData of this ACK (the advance of SND.UNA plus the change in
        SACKed bytes); ``pipe``: RFC 6675 pipe after the ACK was processed; ``safe_ack``: SND.UNA
        advanced and no new loss was marked.  Never negative."""
        self.prr_delivered += delivered
        prr_out = self.prr_out
        if pipe > ssthresh:
            # proportional: CEIL(prr_delivered * ssthresh / RecoverFS) - prr_out, the CEIL taken
            # in whole segments (Linux counts packets): in bytes, half a segment per ACK would
            # let a segment out on every third ACK, then every second
            target = -((-self.prr_delivered * ssthresh) // self.recover_fs)
            snd = -(-target // mss) * mss - prr_out
        else:
            # PRR-SSRB (slow start reduction bound); the conservative bound without SafeACK
            snd = self.prr_delivered - prr_out
            if snd < delivered:
                snd = delivered
            if safe_ack:
                snd += mss
            room = ssthresh - pipe
            if snd > room:
                snd = room
        if prr_out == 0 and snd < mss:
            snd = mss                            # force the fast retransmit
        return snd if snd > 0 else 0
