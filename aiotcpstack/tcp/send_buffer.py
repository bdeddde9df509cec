"""The send queue of one connection: bytes the application handed to ``send()`` that are not yet
acknowledged (Linux: the write queue plus the retransmit queue, as one byte stream).

Byte ``i`` of the buffer has sequence number ``seq + i`` (mod 2**32).  Acknowledged bytes are
dropped from the front lazily (a head offset, compacted when it passes half the storage) so an
ACK costs O(1) amortised instead of a memmove per ACK.
"""
from __future__ import annotations

MASK = 0xFFFFFFFF


class SendBuffer:
    __slots__ = ("_buf", "_head", "seq")

    def __init__(self, seq: int) -> None:
        self._buf = bytearray()
        self._head = 0
        self.seq = seq & MASK          # sequence number of the first byte held

    def __len__(self) -> int:
        return len(self._buf) - self._head

    @property
    def end_seq(self) -> int:
        """Sequence number just past the last byte held."""
        return (self.seq + len(self._buf) - self._head) & MASK

    def append(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def get(self, seq: int, n: int) -> bytes:
        """``n`` bytes starting at sequence ``seq`` (which must be held)."""
        off = self._head + ((seq - self.seq) & MASK)
        return bytes(self._buf[off:off + n])

    def ack_to(self, seq: int) -> int:
        """Drop bytes before ``seq`` (clamped to what is held); returns how many were dropped."""
        n = (seq - self.seq) & MASK
        held = len(self._buf) - self._head
        if n > held:
            if n >= 0x80000000:       # seq is behind us: nothing to drop
                return 0
            n = held
        if n:
            self._head += n
            self.seq = (self.seq + n) & MASK
            if self._head == len(self._buf):
                self._buf.clear()
                self._head = 0
            elif self._head > 65536 and self._head * 2 > len(self._buf):
                del self._buf[:self._head]
                self._head = 0
        return n

    def clear(self) -> None:
        self._buf.clear()
        self._head = 0
