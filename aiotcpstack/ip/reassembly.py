"""IPv4 and IPv6 fragment reassembly (RFC 791 3.2 / RFC 815, RFC 8200 4.5, RFC 5722, RFC 6946;
RFC 1122 3.3.2: a host MUST reassemble), modelled on Linux (``net/ipv4/ip_fragment.c``,
``net/ipv6/reassembly.c``, ``net/ipv4/inet_fragment.c``).  Sans-IO: ``now`` is passed in.

Queues are keyed as Linux keys them: IPv4 ``(src, dst, id, protocol)``, IPv6 ``(src, dst, id)``
(the addresses' lengths keep the two apart in one table).  A queue's fragments are kept sorted by
offset and pairwise disjoint: the holes of RFC 815 are the gaps between them, and the datagram is
complete once the last fragment (MF / M clear) has fixed the length and the bytes held add up to
it.  Linux's insertion rule (``inet_frag_queue_insert``) decides a fragment that touches one
already held: lying entirely inside one is a duplicate, dropped with the queue kept; any other
overlap discards the whole datagram -- RFC 5722 for IPv6, and for IPv4 too since Linux 4.19
("ip: discard IPv4 datagrams with overlapping segments", 2018), which also defeats the RFC 1858
overlapping-fragment attack on the TCP header.

Timeout (``ipfrag_time``: 30 s for IPv4, 60 s for IPv6, from the queue's first fragment, never
refreshed) is checked on receive: every call first expires the queues past their deadline, oldest
first (one table per family, each in creation order and so in deadline order: this looks at one
entry a family when nothing is due).  Why not
the timer wheel: the only moment the table can grow is a fragment's arrival, and the memory held
is bounded by the limits below anyway, so a stale queue costs at most its bytes until the next
fragment; no timer is armed or cancelled per datagram, and a stack that never sees a fragment pays
nothing.  (Linux's timer also sends ICMP time exceeded, code 1, for a queue holding the first
fragment; we do not send it -- RFC 1122 3.3.2 makes that a MAY.)

Memory (``ipfrag_high_thresh``, 4 MiB): each fragment costs its bytes plus
``FRAG_OVERHEAD`` (the skb truesize stand-in, so a flood of tiny fragments is bounded too).  As
Linux since 4.17 (``inet_frag_find``: ``frag_mem_limit(fqdir) > high_thresh`` -> NULL, and
``ip_defrag`` / ``ipv6_frag_rcv`` count ``REASMFAILS`` and free the fragment), a fragment that
arrives while the memory held is *above* the threshold is refused -- whether its datagram has a
queue or not -- and counted as a reassembly failure; nothing already queued is evicted (the
memory comes back as queues complete, fail or time out).  The check comes before the fragment is
charged, so the memory held can pass the threshold by one fragment's cost, as in Linux.  Linux
has no count limit of its own (each queue's struct is charged to the memory); ``max_queues``
(1,024) bounds the table here: a fragment that would open a queue beyond it is refused the same
way.  Before 4.17 Linux evicted the oldest queues instead (``inet_frag_evictor``, dropped for its
cost under the FragmentSmack flood); so did this module before PERF_LOG step 30.

Counters, as Linux's MIB (``/proc/net/snmp`` ``Ip:`` / ``/proc/net/snmp6``): ``IpReasmReqds`` /
``Ip6ReasmReqds`` per fragment received, ``...ReasmOKs`` per datagram reassembled,
``...ReasmFails`` per failure (a datagram discarded: overlap, timeout, eviction, oversize,
inconsistent length in IPv6; a fragment dropped for an inconsistent or empty length in IPv4, or
refused over the limits), ``...ReasmTimeout`` per queue
expired (also a failure, as in Linux), ``...ReasmOverlaps`` per overlap (Linux's ``IpExt:
ReasmOverlaps``).
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Any

#: ``net.ipv4.ipfrag_time`` / ``net.ipv6.ip6frag_time`` (seconds)
IPFRAG_TIME = 30.0
IP6FRAG_TIME = 60.0
#: ``net.ipv4.ipfrag_high_thresh`` (bytes, fragment payload plus FRAG_OVERHEAD each)
IPFRAG_HIGH_THRESH = 4 * 1024 * 1024
#: queues at most (both families): a bound on the dict and on the expiry walk
MAX_QUEUES = 1024
#: bytes a queued fragment costs beyond its payload (stands in for the skb truesize overhead)
FRAG_OVERHEAD = 256
#: largest IPv4 datagram (total length field) and IPv6 payload (payload length field)
IP_MAXLEN = 65535

# IPv6 extension headers that may precede the upper-layer header in a first fragment
_EXT_HDRS = (0, 43, 60)
#: upper-layer header bytes a first fragment must carry (RFC 8200 4.5 / RFC 7112; Linux
#: ``ipv6frag_thdr_truncated``: TCP 20, UDP 8, ICMPv6 8)
_UPPER_MIN = {6: 20, 17: 8, 58: 8}


class _Queue:
    """One datagram being reassembled (Linux ``struct inet_frag_queue``)."""

    __slots__ = ("deadline", "starts", "frags", "held", "length", "last_in", "meta", "mem", "v6")

    def __init__(self, deadline: float, v6: bool) -> None:
        self.deadline = deadline
        self.starts: list[int] = []            # fragment offsets, sorted (for bisect)
        self.frags: list[tuple[int, int, bytes]] = []   # (start, end, data), disjoint, sorted
        self.held = 0                          # bytes of data held (sum of end - start)
        self.length = 0                        # highest end seen; the datagram's once last_in
        self.last_in = False                   # the last fragment (MF / M clear) arrived
        self.meta: Any = None                  # the first fragment's header fields (offset 0)
        self.mem = 0                           # bytes charged to the table's memory
        self.v6 = v6


class Reassembler:
    """The fragment queues of one stack (Linux's per-netns ``fqdir``), both families.

    ``add_v4`` / ``add_v6`` take one fragment and return the reassembled datagram's data (with
    the first fragment's header fields) once it is complete, else None.
    """

    def __init__(self, counters: dict, *, high_thresh: int = IPFRAG_HIGH_THRESH, max_queues: int = MAX_QUEUES,
                 timeout4: float = IPFRAG_TIME, timeout6: float = IP6FRAG_TIME) -> None:
        self.counters = counters
        self.high_thresh = high_thresh
        self.max_queues = max_queues
        self.timeout4 = timeout4
        self.timeout6 = timeout6
        #: one table per family, each in creation (= deadline) order: oldest first
        self.q4: dict[tuple, _Queue] = {}
        self.q6: dict[tuple, _Queue] = {}
        self.mem = 0

    @property
    def queues(self) -> dict[tuple, _Queue]:
        """Every queue, IPv4 then IPv6 (a new dict: for inspection and tests)."""
        return {**self.q4, **self.q6}

    # -- public ------------------------------------------------------------------------------
    def add_v4(self, src: bytes, dst: bytes, ident: int, proto: int, offset: int, more: bool,
               data: Any, meta: Any, now: float) -> tuple[Any, bytes] | None:
        """One IPv4 fragment: ``offset`` in bytes (the header field times 8), ``more`` the MF
        flag, ``data`` the payload after the header, ``meta`` what to return with the datagram
        if this is the first fragment (offset 0: RFC 791 3.2 takes the header from it).

        Returns ``(meta, data)`` of the complete datagram, or None.  A non-last fragment whose
        length is not a multiple of 8 is trimmed to one, as Linux does (RFC 791: only the last
        may end anywhere); a datagram longer than 65535 bytes with its 20-byte header is
        discarded whole (Linux ``ip_frag_reasm``: "Oversized IP packet")."""
        c = self.counters
        c["IpReasmReqds"] += 1
        end = offset + len(data)
        if more and end & 7:
            end &= ~7
            data = data[:end - offset]
        return self._add((src, dst, ident, proto), "Ip", False, offset, end, more, data, meta, now,
                         IP_MAXLEN - 20, self.timeout4)

    def add_v6(self, src: bytes, dst: bytes, ident: int, offset: int, more: bool, next_header: int,
               data: Any, meta: Any, now: float) -> tuple[Any, int, bytes] | None:
        """One IPv6 fragment (RFC 8200 4.5): ``next_header`` from its Fragment header, ``data``
        the fragmentable part after it.  Returns ``(meta, next_header, data)`` of the complete
        datagram (the first fragment's next header and ``meta``), or None.

        An atomic fragment (offset 0, M clear: RFC 6946) is returned at once and never touches
        a queue (its identification may collide with a real fragmented datagram's).  Dropped:
        a first fragment without the whole upper-layer header (RFC 8200 4.5 / RFC 7112, counted
        ``Ip6InHdrErrors`` as Linux does); a non-last fragment whose length is not a multiple of 8
        and one ending past 65535 discard the datagram (Linux sends a parameter problem; we do
        not)."""
        c = self.counters
        c["Ip6ReasmReqds"] += 1
        if offset == 0 and not more:
            c["Ip6ReasmOKs"] += 1
            return meta, next_header, bytes(data)
        if offset == 0 and _upper_truncated(next_header, data):
            c["Ip6InHdrErrors"] += 1
            return None
        end = offset + len(data)
        if more and end & 7:
            self._fail_key((src, dst, ident), "Ip6")
            return None
        got = self._add((src, dst, ident), "Ip6", True, offset, end, more, data, (meta, next_header)
                        if offset == 0 else None, now, IP_MAXLEN, self.timeout6)
        if got is None:
            return None
        (meta0, nh0), joined = got
        return meta0, nh0, joined

    def expire(self, now: float) -> None:
        """Discard the queues whose timeout has passed (``ip_expire`` / ``ip6_frag_expire``),
        oldest first; a family's table is in creation order and its timeout is fixed, so the walk
        stops at the first queue still in time."""
        c = self.counters
        for queues, p in ((self.q4, "Ip"), (self.q6, "Ip6")):
            while queues:
                key = next(iter(queues))
                q = queues[key]
                if q.deadline > now:
                    break
                del queues[key]
                self.mem -= q.mem
                c[p + "ReasmTimeout"] += 1
                c[p + "ReasmFails"] += 1

    # -- the queue ----------------------------------------------------------------------------
    def _add(self, key: tuple, p: str, v6: bool, offset: int, end: int, more: bool, data: Any, meta: Any,
             now: float, maxlen: int, timeout: float) -> tuple[Any, bytes] | None:
        c = self.counters
        self.expire(now)
        if self.mem > self.high_thresh:
            # Linux inet_frag_find: over ipfrag_high_thresh no queue is found or made -- every
            # fragment is refused (REASMFAILS) until memory is released
            c[p + "ReasmFails"] += 1
            return None
        queues = self.q6 if v6 else self.q4
        q = queues.get(key)
        if end > maxlen:
            self._fail_key(key, p)              # too long for any datagram: discard it
            return None
        # the last fragment fixes the length: nothing may lie beyond it, and a second last fragment
        # must agree (RFC 791 3.2); an empty fragment is bad too.  Linux drops such a fragment
        # and keeps the IPv4 queue (ip_frag_queue: "goto err"), but discards the IPv6 datagram
        # (ip6_frag_queue: "goto discard_fq"); either way it is counted as a failure here
        if end == offset or (q is not None and (
                (not more and (end < q.length or (q.last_in and end != q.length)))
                or (more and q.last_in and end > q.length))):
            if v6:
                self._fail_key(key, p)
            else:
                c[p + "ReasmFails"] += 1
            return None
        if q is None:
            if len(self.q4) + len(self.q6) >= self.max_queues:
                c[p + "ReasmFails"] += 1          # no new queue (the table's bound; see above)
                return None
            q = queues[key] = _Queue(now + timeout, v6)
        # Linux inet_frag_queue_insert: a fragment inside one already held is a duplicate (dropped,
        # queue kept); any other overlap discards the datagram (RFC 5722)
        starts = q.starts
        frags = q.frags
        i = bisect_right(starts, offset)
        if i:
            ps, pe, _ = frags[i - 1]
            if end <= pe:
                return None                         # a duplicate: inside [ps, pe)
            if offset < pe:
                return self._overlap(key, p)
        if i < len(frags) and frags[i][0] < end:
            return self._overlap(key, p)
        cost = len(data) + FRAG_OVERHEAD
        chunk = bytes(data)      # (a copy: ``data`` may be a view into the link's receive buffer)
        starts.insert(i, offset)
        frags.insert(i, (offset, end, chunk))
        q.held += end - offset
        q.mem += cost
        self.mem += cost
        if end > q.length:
            q.length = end
        if not more:
            q.last_in = True
        if offset == 0:
            q.meta = meta
        if q.last_in and q.held == q.length:
            # complete: disjoint fragments inside [0, length) adding up to length cover it all
            del queues[key]
            self.mem -= q.mem
            c[p + "ReasmOKs"] += 1
            return q.meta, b"".join([f[2] for f in frags])
        return None

    def _overlap(self, key: tuple, p: str) -> None:
        self.counters[p + "ReasmOverlaps"] += 1
        self._fail_key(key, p)
        return None

    def _fail_key(self, key: tuple, p: str) -> None:
        """Discard ``key``'s datagram (if queued) and count one failure."""
        q = (self.q6 if p == "Ip6" else self.q4).pop(key, None)
        if q is not None:
            self.mem -= q.mem
        self.counters[p + "ReasmFails"] += 1


def _upper_truncated(nh: int, data: Any) -> bool:
    """True when a first IPv6 fragment does not hold every header up to and including the
    upper-layer one (RFC 8200 4.5, RFC 7112), walking extension headers after the Fragment
    header by their Hdr Ext Len; an unknown upper layer needs no bytes (Linux does the same)."""
    off = 0
    n = len(data)
    while nh in _EXT_HDRS:
        if off + 8 > n:
            return True
        nh, off = data[off], off + ((data[off + 1] + 1) << 3)
    return off + _UPPER_MIN.get(nh, 0) > n
