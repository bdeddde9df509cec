"""Software GRO for one receive batch (Linux ``tcp_gro_receive``, done in user space).

Why: with offloads off a bulk receiver gets ~90,000 MTU-sized segments per 128 MiB, and in a
drained batch nearly all of them are consecutive segments of one flow with identical headers
except the sequence number.  Merging them before TCP sees them turns up to a batch of header
predictions, receive-queue appends and ACK decisions into one, exactly as the kernel's GRO feeds
``tcp_rcv_established`` one super-segment.  Every segment's checksum is still verified
individually before it is merged (``ip/core.py``), and the merged segment still goes through
header prediction; if that fails, the parts are processed one by one through the full path, so
merging never changes what TCP decides.

Merge rule, as ``tcp_gro_receive`` (stricter where cheap): same 4-tuple, sequence number exactly
at the end of what is held, same ACK number, same window, same flags (ACK or ACK|PSH only), same
timestamp option (TSval and TSecr, or both absent), payload not empty.  Anything else flushes
first, so the order of everything the stack processes is the order of the wire.
"""
from __future__ import annotations

from typing import Any


class GroHold:
    """The segments held for one connection, waiting to be handed to TCP as one."""

    __slots__ = ("conn", "src", "dst", "sport", "dport", "seq", "next_seq", "ack", "window", "flags",
                 "tsval", "tsecr", "parts", "nbytes")

    def __init__(self, conn: Any, src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int,
                 window: int, flags: int, tsval: int, tsecr: int, payload: Any) -> None:
        self.conn = conn
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        self.seq = seq
        n = len(payload)
        self.next_seq = (seq + n) & 0xFFFFFFFF
        self.ack = ack
        self.window = window
        self.flags = flags
        self.tsval = tsval            # -1: no timestamp option
        self.tsecr = tsecr
        self.parts = [payload]
        self.nbytes = n

    def segments(self) -> list[tuple[int, Any]]:
        """The held parts as ``(seq, payload)``, for the one-by-one fallback."""
        out = []
        seq = self.seq
        for p in self.parts:
            out.append((seq, p))
            seq = (seq + len(p)) & 0xFFFFFFFF
        return out
