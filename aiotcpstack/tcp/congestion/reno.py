"""Reno/NewReno window growth (RFC 5681) with appropriate byte counting (RFC 3465).

Slow start (inherited): ``cwnd += min(acked, 2*SMSS)`` per ACK (RFC 3465 L = 2), so a window
doubles per RTT whether the receiver ACKs every segment or every second one.
Congestion avoidance: RFC 3465 section 2.1 byte counting: ``bytes_acked`` accumulates the bytes
ACKed and each time it reaches ``cwnd``, ``cwnd += SMSS`` (and ``bytes_acked -= cwnd``): exactly
one SMSS per window of data (RFC 5681 3.1 eq. 3 without its per-ACK rounding error).
Loss: ``ssthresh = max(FlightSize/2, 2*SMSS)`` (RFC 5681 eq. 4; FlightSize is the ``in_flight``
the caller passes, or cwnd when it does not).
"""
from __future__ import annotations

from .base import CongestionControl

__all__ = ["Reno"]


class Reno(CongestionControl):
    """RFC 5681 / RFC 6582 NewReno congestion control (the kernel's ``tcp_reno_*``)."""

    name = "reno"

    def _cong_avoid(self, acked_bytes: int, now: float) -> None:
        # RFC 3465 2.1: "cwnd is incremented by SMSS bytes" each time bytes_acked >= cwnd.
        self.bytes_acked += acked_bytes
        while self.bytes_acked >= self.cwnd:
            self.bytes_acked -= self.cwnd
            self.cwnd += self.mss
