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
at the end of what is held, same ACK number, same window, same flags (ACK or ACK|PSH only; PSH
may differ, the merged segment has it if any part had it), same timestamp option layout and
TSecr, payload not empty.  Anything else flushes first, so the order of everything the stack
processes is the order of the wire.  Two differences from Linux, neither changes what TCP decides
(the receive path delivers once per batch anyway):

* Linux flushes after a PSH segment (a bulk sender's every ~43rd segment, the end of each of its
  64 KB skbs); here the run goes on.
* Linux flushes when the TSval changes (it compares the option bytes); here a part may carry a
  newer TSval than the one before it (``GroHold.extend_ts``).  TCP sees the first part's TSval:
  within a batch no ACK goes out between the parts, so processed one by one only the first
  could update TS.Recent (RFC 7323 4.3: SEG.SEQ = Last.ACK.sent), and every later part, not
  older, would pass PAWS as well.  The one-by-one fallback gives each part its own TSval.

The run check (``NetworkCore._rx_frames``): once a data run is held, a frame whose raw headers
equal those of the run's first frame except for the fields a run may change (``RAW``), at the
next sequence number, is appended without a single call -- the IPv4 header checksum and the TCP
checksum are verified from the run's precomputed constant sums (``raw_key``) plus the few words
that vary, the TCP checksum over the payload alone.  Any other frame takes the general path
(which may still merge it by the rule above, e.g. a newer TSval; the run check then goes on from
that frame's headers).  With offloads off this is 99 % of the frames of a bulk receive (all but
each batch's first and the first after a new TSecr; PERF_LOG step 20).

Pure ACKs (a bulk sender gets one per TSO super-frame the peer received, ~20 per drained batch)
are held the same way: a newer pure ACK of the flow (same SEQ, ACK strictly further, TSval not
older, only ACK set, no options but timestamps -- so never a duplicate ACK and never SACK
information) supersedes the held one, and TCP processes the last, as a "stretch ACK" the network
could have made (RFC 5681 sec. 4.2 / RFC 3465 discuss them).  Unlike a real stretch ACK nothing
is lost: the count of merged ACKs goes with it, so RFC 3465's per-ACK slow-start limit L applies
per ACK that arrived (``CongestionControl.on_ack(acks=)``), and every one counts in ``InSegs``.
Linux's GRO does not merge pure ACKs (each costs it ~1 us; each costs us a Python call chain).

Reordering inside a batch (``NetworkCore._gro_reorder``, PERF_LOG step 23): a kernel sender on a
veth transmits from two CPUs (its own, and our CPU while our ACK's ``sendmsg`` runs its TCP
output in softirq), and veth queues each frame on the backlog of the CPU that sent it, so the
frames of one flow can reach our socket permuted within one batch.  Processed in that order, the
later segment would go to the out-of-order queue and our immediate duplicate ACK with a SACK
block would make the sender's RACK (RFC 8985, a reordering window of a quarter of a ~0.1 ms
min RTT) retransmit at once, spuriously.  So a data segment of the held flow that does not
continue the held run, but would continue another run of the batch or lies wholly beyond (or
before) every held run, starts or extends a run of its own (``NetworkCore._gro_apart``, at most ``MAX_RUNS``);
at the flush the runs go to TCP in sequence order, contiguous ones merged (``GroHold.absorb``).
A batch whose frames are only permuted then makes exactly the ACKs of the same batch in order.
A real hole stays a hole: the runs after it reach the out-of-order queue in sequence order.
Anything that overlaps a held run (a retransmission) flushes everything first, as before.

Lookahead (``NetworkCore.gro_lookahead``, PERF_LOG step 29): by the rules above a hold is joined
by the frame right after it or never, and only by a frame of its flow and kind (data joins data,
a pure ACK a pure ACK).  So ``_rx_frames`` starts no hold for a frame whose next frame visibly
cannot join -- both option-less IPv4, other addresses or ports, or data after a pure ACK or the
reverse -- nor for a batch's last frame (as for a lone frame): it goes straight to header
prediction, which is what the hold's flush would have done one frame later, without the hold,
the flush and the hand-over (request/response traffic of many connections drained in one batch:
conn_rate's ACK, response and FIN of eight connections interleaved).  Anything the check cannot
read (IPv6, IP options, a short frame) is held as before.  One difference: a frame that never
reaches TCP (another address, a bad IP checksum) between two segments of a flow used to leave
the first one held for the second to join; now they are processed one by one, which, as above,
changes no TCP decision.
"""
from __future__ import annotations

import struct
from typing import Any

#: the most runs of one flow held apart within one batch (reordering; beyond it: flush)
MAX_RUNS = 8
_M32 = 0xFFFFFFFF

from ..wire.tcp import PSH

#: An Ethernet frame of an option-less IPv4 header (IHL 5) and a TCP header with exactly
#: NOP,NOP,TS (data offset 8) up to its payload (66 bytes), as the run check in
#: ``NetworkCore._rx_frames`` reads it: what may differ between the segments of one run are ints
#: (IP total length, ident and header checksum; TCP sequence number and checksum), the rest are
#: byte strings compared whole with the run's first frame: [0:16] Ethernet header, version/IHL,
#: TOS; [20:24] fragment word, TTL, protocol; [26:38] addresses, ports; [42:50] ACK, data
#: offset/flags, window; [52:66] urgent pointer, NOP,NOP,TS, TSval, TSecr.
RAW = struct.Struct("!16sHHIH12sI8sH14s")
RAW_LEN = RAW.size
RAW_PAYLOAD = RAW_LEN            # where the payload starts
_TS_OPT = b"\x01\x01\x08\x0a"
_PSH_WORD = PSH                  # the flags byte is the low byte of the data offset/flags word


#: the 16-bit words of the constant fields (RAW): version/IHL/TOS; fragment word, TTL/protocol;
#: addresses (4 words); ports (2); ACK, data offset/flags, window (4); urgent pointer and the
#: timestamp option (7)
_CONST_WORDS = struct.Struct("!14xH4xHH2xHHHHHH4xHHHH2xHHHHHHH").unpack_from


def raw_key(frame: Any) -> tuple | None:
    """The run key of ``frame``, the first segment of a held data run (its ``GroHold`` was just
    made from it), or None when it is not of the one layout the run check reads (``RAW``).

    ``(eth_ip16, frag_ttl_proto, addrs_ports, ack_flags_win, ack_flags_win_psh, urg_ts, tsval,
    ip_sum, tcp_sum, tcp_sum_psh)``: the constant byte strings, the same ACK/flags/window bytes with
    PSH toggled (PSH may differ within a run), the TSval in ``urg_ts`` (it may grow within a run:
    the run check then adds the difference to the TCP sum), and the ones'-complement
    sums (RFC 1071, as plain ints: only their value mod 0xffff matters) of what is constant:
    ``ip_sum`` of the IPv4 header words but total length, ident and checksum; ``tcp_sum`` of the
    pseudo-header (addresses, protocol; the TCP length is added per frame as ``tot - 20``, hence
    the -20 here) and the TCP header words but sequence number and checksum, for both PSH values.
    A frame of the run then verifies its IPv4 header checksum as ``(ip_sum + tot + ident + csum)
    % 0xffff == 0`` and its TCP checksum over the payload alone (``NetworkCore._rx_frames``)."""
    if len(frame) < RAW_LEN:
        return None
    e16, _tot, _ident, w4, _csum, a12, _seq, d8, _tcsum, o14 = RAW.unpack_from(frame)
    if e16[12:15] != b"\x08\x00\x45" or d8[4] >> 4 != 8 or o14[2:6] != _TS_OPT:
        return None
    w = _CONST_WORDS(frame)
    addr = w[3] + w[4] + w[5] + w[6]
    ip_sum = w[0] + w[1] + w[2] + addr
    tcp_sum = addr + 6 - 20 + sum(w[7:])
    flags = d8[5]
    d8p = d8[:5] + bytes((flags ^ _PSH_WORD,)) + d8[6:]
    tcp_sum_psh = tcp_sum + (-_PSH_WORD if flags & _PSH_WORD else _PSH_WORD)
    return (e16, w4, a12, d8, d8p, o14, int.from_bytes(o14[6:10], "big"), ip_sum, tcp_sum, tcp_sum_psh)


class GroHold:
    """The segments held for one connection, waiting to be handed to TCP as one."""

    __slots__ = ("conn", "src", "dst", "sport", "dport", "seq", "next_seq", "ack", "window", "flags",
                 "tsval", "tsecr", "parts", "nbytes", "acks", "ts_last", "ts_marks")

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
        self.tsval = tsval            # -1: no timestamp option; of the first part (data)
        self.tsecr = tsecr
        self.parts = [payload] if n else []
        self.nbytes = n
        self.acks = 0 if n else 1     # pure ACKs held (merged ones included)
        self.ts_last = tsval          # data: the newest part's TSval
        self.ts_marks: list[tuple[int, int]] | None = None   # (first part, TSval) where it changed

    def extend_ts(self, tsval: int) -> None:
        """The next part carries a newer TSval than the parts before it (recorded for the
        one-by-one fallback, which gives each part its own)."""
        if self.ts_marks is None:
            self.ts_marks = []
        self.ts_marks.append((len(self.parts), tsval))
        self.ts_last = tsval

    def segments(self) -> list[tuple[int, Any, int]]:
        """The held parts as ``(seq, payload, tsval)``, for the one-by-one fallback."""
        out = []
        seq = self.seq
        tsval = self.tsval
        marks = self.ts_marks or ()
        m = 0
        for i, p in enumerate(self.parts):
            if m < len(marks) and marks[m][0] == i:
                tsval = marks[m][1]
                m += 1
            out.append((seq, p, tsval))
            seq = (seq + len(p)) & 0xFFFFFFFF
        return out

    def absorb(self, later: "GroHold") -> None:
        """Append ``later``, the run that starts where this one ends (same flow, ACK, window,
        TSecr; TSval not older: the caller checks), as if its parts had extended this run."""
        if later.tsval != self.ts_last:
            self.extend_ts(later.tsval)          # (marks the index where later's parts start)
        if later.ts_marks:
            n0 = len(self.parts)
            if self.ts_marks is None:
                self.ts_marks = []
            self.ts_marks.extend((i + n0, ts) for i, ts in later.ts_marks)
            self.ts_last = later.ts_last
        self.parts.extend(later.parts)
        self.nbytes += later.nbytes
        self.next_seq = later.next_seq
        self.flags |= later.flags


def continues(prev: GroHold, tsval: int) -> bool:
    """May a segment (or run) with ``tsval`` follow ``prev``'s last part in one run: the same
    TSval, or a newer one (gro.py: TSval may grow within a run, never fall)."""
    return tsval == prev.ts_last or (
        tsval >= 0 and prev.ts_last >= 0 and ((tsval - prev.ts_last) & _M32) < 0x80000000)


def in_order(runs: list[GroHold], rcv_nxt: int) -> list[GroHold]:
    """The data runs of one flow held apart in a batch, sorted by sequence number (relative to
    RCV.NXT: the caller only holds runs that start at or beyond it), contiguous ones merged."""
    runs.sort(key=lambda r: (r.seq - rcv_nxt) & _M32)
    out = [runs[0]]
    for r in runs[1:]:
        prev = out[-1]
        if prev.next_seq == r.seq and continues(prev, r.tsval):
            prev.absorb(r)
        else:
            out.append(r)
    return out
