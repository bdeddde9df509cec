"""The send queue of one connection: bytes the application handed to ``send()`` that are not yet
acknowledged (Linux: the write queue plus the retransmit queue, as one byte stream).

Byte ``i`` of the buffer has sequence number ``seq + i`` (mod 2**32).

Zero-copy layout (like the kernel's skb list of the write queue): the buffer is a list of
immutable ``bytes`` chunks, one per ``append`` (``bytes`` are taken as they are; ``bytearray`` /
``memoryview`` are copied once, since the caller may reuse them), with their absolute start
positions for a ``bisect``.  ``get`` returns a ``memoryview`` slice of one chunk when the range
lies inside it (the usual case: TSO super-frames out of 256 KiB writes) and joins only ranges
that span chunks.  ``ack_to`` only moves a position and drops whole chunks from the front (lazily
compacted), so an ACK costs O(1) amortised and no byte is ever moved in user space.  Tiny appends
are coalesced so a stream of small writes does not become a long chunk list.

Large writes of reusable buffers (``bytearray`` / ``memoryview``, at least ``POOL_MIN`` bytes) are
copied into fixed-size blocks from a process-wide :class:`BlockPool` instead of fresh ``bytes``
(like the kernel's per-socket page frags, ``sk_page_frag``): a fresh 256 KiB object is a new
``mmap`` for malloc, 64 page faults to fill and a ``munmap`` when acknowledged -- measured as a
quarter of a bulk sender's CPU time.  A block goes back to the pool when every byte in it is
acknowledged.  Views into a block never outlive the transmit call that gets them (``get``'s
result goes straight to ``sendmsg`` or into a joined frame), so reuse is safe.  Consecutive
writes into one block share one chunk (a view grown over them), so ranges cross chunks only at
block boundaries.
"""
from __future__ import annotations

from bisect import bisect_right

MASK = 0xFFFFFFFF
_COALESCE = 512          # appends this small are merged into a small last chunk
POOL_MIN = 16384         # reusable buffers this large are copied into pool blocks
BLOCK = 256 * 1024       # bytes per pool block


class BlockPool:
    """Free ``bytearray`` blocks of ``BLOCK`` bytes, reused across connections (at most ``keep``
    held while free: 64 x 256 KiB = 16 MiB, the send buffers of a few busy connections)."""

    __slots__ = ("free", "keep", "allocated")

    def __init__(self, keep: int = 64) -> None:
        self.free: list[bytearray] = []
        self.keep = keep
        self.allocated = 0           # blocks made (a statistic for tests and curious users)

    def take(self) -> bytearray:
        free = self.free
        if free:
            return free.pop()
        self.allocated += 1
        return bytearray(BLOCK)

    def give(self, block: bytearray) -> None:
        if len(self.free) < self.keep:
            self.free.append(block)


POOL = BlockPool()


class SendBuffer:
    __slots__ = ("_chunks", "_starts", "_first", "_base", "_end", "seq", "_blocks", "_fill")

    def __init__(self, seq: int) -> None:
        # (both lists are made by the first append: a connection that never sends holds the
        # shared empty tuple)
        self._chunks: list | tuple = ()        # bytes chunks (None once dropped, before compaction)
        self._starts: list[int] | tuple = ()   # absolute position of each chunk's first byte
        self._first = 0                # index of the first live chunk
        self._base = 0                 # absolute position of ``seq``
        self._end = 0                  # absolute position just past the last byte held
        self.seq = seq & MASK          # sequence number of the first byte held
        # pool blocks in use, oldest first: [absolute end of the bytes written to it, block];
        # the last one is the tail block new large appends go into (``_fill`` bytes used)
        self._blocks: list | tuple = ()
        self._fill = 0

    def __len__(self) -> int:
        return self._end - self._base

    @property
    def end_seq(self) -> int:
        """Sequence number just past the last byte held."""
        return (self.seq + self._end - self._base) & MASK

    def append(self, data: bytes | bytearray | memoryview) -> None:
        if type(data) is not bytes:
            # the caller may reuse its buffer: one copy (into pool blocks when large)
            mv = memoryview(data)
            if mv.nbytes >= POOL_MIN and mv.c_contiguous:
                self._append_pooled(mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B"))
                return
            data = bytes(mv)
        n = len(data)
        if not n:
            return
        chunks = self._chunks
        if not chunks:
            self._chunks = [data]
            self._starts = [self._end]
            self._end += n
            return
        if n <= _COALESCE and len(chunks) > self._first:
            last = chunks[-1]
            if len(last) + n <= _COALESCE and type(last) is bytes:
                chunks[-1] = last + data
                self._end += n
                return
        chunks.append(data)
        self._starts.append(self._end)
        self._end += n

    def _append_pooled(self, src: memoryview) -> None:
        n = len(src)
        blocks = self._blocks
        if not blocks:
            blocks = self._blocks = []
        if type(self._chunks) is tuple:       # the shared empty tuple of a fresh buffer
            self._chunks = []
            self._starts = []
        chunks = self._chunks
        starts = self._starts
        off = 0
        while off < n:
            if not blocks or self._fill == BLOCK:
                blocks.append([self._end, POOL.take()])
                self._fill = 0
            entry = blocks[-1]
            blk = entry[1]
            f = self._fill
            k = BLOCK - f
            if k > n - off:
                k = n - off
            mv = memoryview(blk)
            # through a memoryview: ``bytearray[a:b] = view`` first copies the view into a
            # temporary bytearray (a second copy, and a fresh 256 KiB allocation per write)
            mv[f:f + k] = src[off:off + k]
            last = chunks[-1] if f and len(chunks) > self._first else None
            if type(last) is memoryview and last.obj is blk:
                # the last chunk ends at ``f`` in this block: grow it, so a run of writes into one
                # block stays one chunk (segments cross chunks only at block boundaries)
                chunks[-1] = mv[f - len(last):f + k]
            else:
                chunks.append(mv[f:f + k])
                starts.append(self._end)
            self._end += k
            entry[0] = self._end
            self._fill = f + k
            off += k

    def _release_blocks(self, base: int, everything: bool) -> None:
        """Give back the blocks whose bytes are all acknowledged (absolute position ``base``);
        the tail block is kept (rewound) when nothing is left, for the next large append."""
        blocks = self._blocks
        give = POOL.give
        while blocks and blocks[0][0] <= base:
            if len(blocks) == 1:
                if everything:
                    self._fill = 0               # all acknowledged: reuse from the start
                    blocks[0][0] = 0
                    return
                if self._fill < BLOCK:
                    return                       # still the tail: later appends go into it
            give(blocks.pop(0)[1])

    def get(self, seq: int, n: int) -> bytes | memoryview:
        """``n`` bytes starting at sequence ``seq`` (which must be held): a read-only view into
        the held data when it lies in one chunk, else a joined copy."""
        p = self.parts(seq, n)
        return p[0] if len(p) == 1 else b"".join(p)

    def parts(self, seq: int, n: int) -> list:
        """``n`` bytes starting at sequence ``seq`` as a list of buffers in order (views into
        the held data, or whole chunks), never joined: for scatter-gather transmit."""
        pos = self._base + ((seq - self.seq) & MASK)
        starts = self._starts
        chunks = self._chunks
        i = bisect_right(starts, pos, self._first) - 1
        chunk = chunks[i]
        off = pos - starts[i]
        end = off + n
        clen = len(chunk)
        if end <= clen:
            return [chunk if off == 0 and end == clen else memoryview(chunk)[off:end]]
        out = [memoryview(chunk)[off:] if off else chunk]
        left = end - clen
        while left > 0:
            i += 1
            chunk = chunks[i]
            clen = len(chunk)
            if left >= clen:
                out.append(chunk)
                left -= clen
            else:
                out.append(memoryview(chunk)[:left])
                left = 0
        return out

    def parts_run(self, seq: int, size: int, count: int) -> list:
        """``count`` consecutive ranges of ``size`` bytes from sequence ``seq`` (all held), each
        as :meth:`parts` would give it: one walk over the chunks for a run of full TSO frames
        instead of a ``bisect`` and a fresh view of the chunk per frame."""
        pos = self._base + ((seq - self.seq) & MASK)
        starts = self._starts
        chunks = self._chunks
        i = bisect_right(starts, pos, self._first) - 1
        chunk = chunks[i]
        view = chunk if type(chunk) is memoryview else memoryview(chunk)
        clen = len(chunk)
        off = pos - starts[i]
        out = []
        add = out.append
        for _ in range(count):
            if off == clen:                    # the last range ended with its chunk
                i += 1
                chunk = chunks[i]
                view = chunk if type(chunk) is memoryview else memoryview(chunk)
                clen = len(chunk)
                off = 0
            end = off + size
            if end <= clen:
                add([view[off:end]])
                off = end
                continue
            part = [view[off:]]                # spans chunks: as parts()
            left = end - clen
            while True:
                i += 1
                chunk = chunks[i]
                view = chunk if type(chunk) is memoryview else memoryview(chunk)
                clen = len(chunk)
                if left > clen:
                    part.append(view)
                    left -= clen
                else:
                    part.append(view[:left])
                    off = left
                    break
            add(part)
        return out

    def ack_to(self, seq: int) -> int:
        """Drop bytes before ``seq`` (clamped to what is held); returns how many were dropped."""
        n = (seq - self.seq) & MASK
        held = self._end - self._base
        if n > held:
            if n >= 0x80000000:       # seq is behind us: nothing to drop
                return 0
            n = held
        if n:
            self.seq = (self.seq + n) & MASK
            if n == held:
                self._chunks.clear()
                self._starts.clear()
                self._first = 0
                self._base = self._end = 0
                if self._blocks:
                    self._release_blocks(1 << 62, True)
                return n
            base = self._base = self._base + n
            chunks = self._chunks
            starts = self._starts
            i = self._first
            while starts[i] + len(chunks[i]) <= base:
                chunks[i] = None       # release the bytes at once
                i += 1
            if i > 32 and i * 2 > len(chunks):
                del chunks[:i]
                del starts[:i]
                i = 0
            self._first = i
            if self._blocks:
                self._release_blocks(base, False)
        return n

    def clear(self) -> None:
        for _end, blk in self._blocks:
            POOL.give(blk)
        self._blocks = ()
        self._fill = 0
        self._chunks = ()
        self._starts = ()
        self._first = 0
        self._base = self._end = 0
