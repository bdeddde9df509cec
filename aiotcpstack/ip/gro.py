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

Pure ACKs (a bulk sender gets one per TSO super-frame the peer received, ~20 per drained batch)
are held the same way: a newer pure ACK of the flow (same SEQ, ACK strictly further, TSval not
older, only ACK set, no options but timestamps -- so never a duplicate ACK and never SACK
information) supersedes the held one, and TCP processes the last, as a "stretch ACK" the network
could have made (RFC 5681 sec. 4.2 / RFC 3465 discuss them).  Unlike a real stretch ACK nothing
is lost: the count of merged ACKs goes with it, so RFC 3465's per-ACK slow-start limit L applies
per ACK that arrived (``CongestionControl.on_ack(acks=)``), and every one counts in ``InSegs``.
Linux's GRO does not merge pure ACKs (each costs it ~1 us; each costs us a Python call chain).
"""
from __future__ import annotations

from typing import Any


class GroHold:
    """The segments held for one connection, waiting to be handed to TCP as one."""

    __slots__ = ("conn", "src", "dst", "sport", "dport", "seq", "next_seq", "ack", "window", "flags",
                 "tsval", "tsecr", "parts", "nbytes", "acks")

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
        self.parts = [payload] if n else []
        self.nbytes = n
        self.acks = 0 if n else 1     # pure ACKs held (merged ones included)

    def segments(self) -> list[tuple[int, Any]]:
        """The held parts as ``(seq, payload)``, for the one-by-one fallback."""
        out = []
        seq = self.seq
        for p in self.parts:
            out.append((seq, p))
            seq = (seq + len(p)) & 0xFFFFFFFF
        return out
