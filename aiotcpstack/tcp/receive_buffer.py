"""Out-of-order queue of the receive side (Linux ``tp->out_of_order_queue``), with the SACK
block bookkeeping it feeds (RFC 2018 section 4: most recent block first) and duplicate detection
for DSACK (RFC 2883).

Segments are kept as disjoint, merged ranges ``[start, end)`` with their bytes, sorted by their
distance from ``rcv_nxt`` (mod 2**32, so ISNs near 2**32 are fine).  The queue is bounded by the
caller: it checks :attr:`OutOfOrderQueue.mem` (bytes plus a per-range overhead standing in for
the skb truesize, so a flood of 1-byte segments at distinct offsets is bounded too) against the
receive buffer before inserting, and makes room with :meth:`OutOfOrderQueue.prune_after` like
Linux's ``tcp_prune_ofo_queue`` (drop the highest-sequence ranges first, never those before the
incoming segment, so holes can still be filled).  The queue is always collapsed (adjacent and
overlapping ranges are merged on insert), so ``tcp_collapse_ofo_queue`` has nothing left to do.
"""
from __future__ import annotations

MASK = 0xFFFFFFFF
#: memory one queued range costs beyond its bytes (list + bytearray + ints, measured ~200 B on
#: CPython 3.11; the skb truesize overhead in Linux is of the same order)
OFO_SEG_OVERHEAD = 192


class OutOfOrderQueue:
    __slots__ = ("segs", "nbytes", "fin_seq", "_recent")

    def __init__(self) -> None:
        # (both lists are made on first use: until then the shared empty tuple -- most
        # connections never see out-of-order data)
        self.segs: list[list] | tuple = ()    # [start, end, bytearray], sorted, disjoint, non-adjacent
        self.nbytes = 0
        self.fin_seq: int | None = None   # sequence number of an out-of-order FIN
        self._recent: list[int] | tuple = ()  # start seqs of recently received segments, newest last

    def __bool__(self) -> bool:
        return bool(self.segs) or self.fin_seq is not None

    def __len__(self) -> int:
        return len(self.segs)

    @property
    def mem(self) -> int:
        """Memory charged to the queue: queued bytes + ``OFO_SEG_OVERHEAD`` per range."""
        return self.nbytes + OFO_SEG_OVERHEAD * len(self.segs)

    def prune_after(self, seq: int, rcv_nxt: int, goal: int) -> int:
        """``tcp_prune_ofo_queue``: free at least ``goal`` bytes of :attr:`mem` by dropping whole
        ranges from the tail (highest sequence first), but only ranges that start after ``seq``.
        Returns the memory freed (may be less than ``goal``)."""
        segs = self.segs
        rel = (seq - rcv_nxt) & MASK
        freed = 0
        while segs and freed < goal and ((segs[-1][0] - rcv_nxt) & MASK) > rel:
            s, e, b = segs.pop()
            self.nbytes -= len(b)
            freed += len(b) + OFO_SEG_OVERHEAD
            if self.fin_seq is not None:
                self.fin_seq = None          # an out-of-order FIN beyond pruned data goes too
        return freed

    def insert(self, seq: int, data: bytes, rcv_nxt: int) -> tuple[int, tuple[int, int] | None]:
        """Queue ``data`` at ``seq`` (which is after ``rcv_nxt``).  Returns ``(new_bytes, dup)``
        where ``dup`` is the first ``(start, end)`` range that was already queued (for a DSACK)."""
        n = len(data)
        if n == 0:
            return 0, None
        rel_s = (seq - rcv_nxt) & MASK
        rel_e = rel_s + n
        segs = self.segs
        if not segs:
            segs = self.segs = []
        dup = None
        # Find the first segment whose end reaches rel_s (could overlap or be adjacent).
        i = 0
        nseg = len(segs)
        while i < nseg and ((segs[i][1] - rcv_nxt) & MASK) < rel_s:
            i += 1
        # Merge with every segment overlapping or adjacent to [rel_s, rel_e).
        j = i
        new_s, new_e = rel_s, rel_e
        pieces: list = []
        added = n
        while j < nseg:
            s = (segs[j][0] - rcv_nxt) & MASK
            e = (segs[j][1] - rcv_nxt) & MASK
            if s > rel_e:
                break
            # overlap [max(s, rel_s), min(e, rel_e))
            os_, oe = max(s, rel_s), min(e, rel_e)
            if oe > os_:
                added -= oe - os_
                if dup is None:
                    dup = ((rcv_nxt + os_) & MASK, (rcv_nxt + oe) & MASK)
            pieces.append((s, e, segs[j][2]))
            if s < new_s:
                new_s = s
            if e > new_e:
                new_e = e
            j += 1
        if not pieces:
            segs.insert(i, [seq & MASK, (seq + n) & MASK, bytearray(data)])
        else:
            buf = bytearray(new_e - new_s)
            # the new data first, then the queued pieces on top (identical bytes in a sane peer)
            buf[rel_s - new_s:rel_e - new_s] = data
            for s, e, b in pieces:
                buf[s - new_s:e - new_s] = b
            segs[i:j] = [[(rcv_nxt + new_s) & MASK, (rcv_nxt + new_e) & MASK, buf]]
        self.nbytes += added
        rec = self._recent
        if not rec:
            rec = self._recent = []
        rec.append(seq & MASK)
        if len(rec) > 8:
            del rec[0]
        return added, dup

    def pop_ready(self, rcv_nxt: int) -> bytes | None:
        """If the first queued range starts at or before ``rcv_nxt``, remove it and return the
        part from ``rcv_nxt`` on (``b""`` when it was entirely old)."""
        segs = self.segs
        if not segs:
            return None
        s, e, b = segs[0]
        rel_s = (s - rcv_nxt) & MASK
        if rel_s != 0 and rel_s < 0x80000000:
            return None
        del segs[0]
        self.nbytes -= len(b)
        skip = (rcv_nxt - s) & MASK
        if skip >= len(b):
            return b""
        return bytes(b[skip:]) if skip else bytes(b)

    def drop_before(self, rcv_nxt: int) -> None:
        """Forget queued ranges entirely before ``rcv_nxt``."""
        segs = self.segs
        while segs and ((rcv_nxt - segs[0][1]) & MASK) < 0x80000000:   # end <= rcv_nxt
            self.nbytes -= len(segs[0][2])
            del segs[0]

    def blocks(self, rcv_nxt: int, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` SACK blocks, the one holding the most recently received segment first,
        then the others by recency (RFC 2018 section 4), then by position."""
        segs = self.segs
        if not segs or limit <= 0:
            return []
        out: list[tuple[int, int]] = []
        seen: set[int] = set()
        for start in reversed(self._recent):
            rel = (start - rcv_nxt) & MASK
            for k, (s, e, _b) in enumerate(segs):
                if ((s - rcv_nxt) & MASK) <= rel < ((e - rcv_nxt) & MASK):
                    if k not in seen:
                        seen.add(k)
                        out.append((s, e))
                    break
            if len(out) >= limit:
                return out
        for k, (s, e, _b) in enumerate(segs):
            if k not in seen:
                out.append((s, e))
                if len(out) >= limit:
                    break
        return out

    def clear(self) -> None:
        self.segs = ()
        self.nbytes = 0
        self.fin_seq = None
        self._recent = ()
