"""The one copy of received data (tcp/rx_copy.py): the populated join gives exactly the bytes
``b"".join`` would, for every kind of chunk the receive path queues, and TcpConnection uses it
for large deliveries (PERF_LOG step 19)."""
from __future__ import annotations

import mmap
import random
import sys

import pytest

from aiotcpstack.tcp import rx_copy
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.wire.tcp import TcpOptions

from tcp_harness import Harness

needs_api = pytest.mark.skipif(rx_copy._API is None, reason="no MADV_POPULATE_WRITE / not CPython on Linux")


def _chunks(rng: random.Random, total: int) -> list:
    """A random mix of what ``TcpConnection.rx`` holds: views into a writable receive buffer
    (the link's slots), read-only views into ``bytes`` frames, ``bytes`` (OOO queue, copied
    frames) and a bytearray."""
    area = mmap.mmap(-1, 1 << 20)
    area[:] = rng.randbytes(1 << 20)
    frame = rng.randbytes(70000)
    out, n = [], 0
    while n < total:
        size = min(total - n, rng.choice((1, 7, 1448, 4096, 4097, 65160, rng.randrange(1, 70000))))
        kind = rng.randrange(4)
        if kind == 0:
            at = rng.randrange(0, (1 << 20) - size)
            c = memoryview(area)[at:at + size]
        elif kind == 1:
            at = rng.randrange(0, 70000 - size + 1)
            c = memoryview(frame)[at:at + size]
        elif kind == 2:
            c = rng.randbytes(size)
        else:
            c = bytearray(rng.randbytes(size))
        out.append(c)
        n += size
    return out


@pytest.mark.parametrize("seed", range(40))
def test_populated_join_equals_join(seed: int) -> None:
    rng = random.Random(seed)
    total = rng.choice((1, 4095, rx_copy.MIN_POPULATE - 1, rx_copy.MIN_POPULATE, 65536 + 4096 * 3 + 5,
                        rng.randrange(1, 1 << 19)))
    chunks = _chunks(rng, total)
    got = rx_copy.populated_join(chunks, total)
    assert type(got) is bytes
    assert got == b"".join(chunks)
    assert hash(got) == hash(b"".join(chunks))
    if total >= rx_copy.MIN_POPULATE:
        assert sys.getrefcount(got) == 2        # ours only: the C call's reference is not leaked


def test_wrong_length_is_refused() -> None:
    big = [b"a" * 40000, memoryview(bytearray(b"b" * 40000))]
    for chunks, n in ((big, 80001), (big, 79999), ([b"ab", b"c"], 4), ([b"x" * 100], 99)):
        with pytest.raises(ValueError):
            rx_copy.populated_join(chunks, n)


def test_single_bytes_chunk_is_not_copied() -> None:
    b = bytes(200000)
    assert rx_copy.populated_join([b], len(b)) is b


def test_without_the_api_it_is_a_join(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rx_copy, "_API", None)
    chunks = _chunks(random.Random(7), 300000)
    assert rx_copy.populated_join(chunks, 300000) == b"".join(chunks)


class _Counting:
    """The real C functions, counting the populate calls (and checking their range lies in
    the new object's data)."""

    def __init__(self, api) -> None:
        self.api = api
        self.new = api.new
        self.ranges: list[tuple[int, int]] = []
        self.objects: list[int] = []

    def address(self, obj) -> int:
        addr = self.api.address(obj)
        self.objects.append((addr, len(obj)))
        return addr

    def madvise(self, addr: int, length: int, advice: int) -> int:
        assert advice == rx_copy.MADV_POPULATE_WRITE
        self.ranges.append((addr, length))
        return self.api.madvise(addr, length, advice)


@needs_api
def test_connection_delivers_a_large_batch_through_the_populated_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A receive batch of 60 segments (86 KB) held as views into a reused receive buffer: one
    delivery, copied through the populated join (the madvise range inside the new object, page
    aligned), the bytes right even after the buffer is overwritten."""
    counting = _Counting(rx_copy._API)
    monkeypatch.setattr(rx_copy, "_API", counting)
    h = Harness(TcpConfig(rcvbuf=1 << 20))
    h.establish_active(peer_opts=TcpOptions(mss=1460, wscale=7, sack_permitted=True))
    rng = random.Random(3)
    slot = mmap.mmap(-1, 60 * 1448)
    data = rng.randbytes(60 * 1448)
    slot[:] = data
    view = memoryview(slot)
    seq = 5001
    segs = [dict(flags=".", seq=seq + i * 1448, ack=h.conn.snd_nxt, window=1000,
                 payload=view[i * 1448:(i + 1) * 1448]) for i in range(60)]
    h.feed_batch(0.1, segs)
    slot[:] = bytes(len(slot))                       # the link reuses its buffer
    assert bytes(h.rec.data) == data
    assert [e[0] for e in h.rec.events].count("data") == 1
    assert len(counting.ranges) == 1
    (addr, length), (obj, size) = counting.ranges[0], counting.objects[0]
    assert size == len(data)
    assert addr % mmap.PAGESIZE == 0 and length % mmap.PAGESIZE == 0 and length > 0
    assert obj <= addr and addr + length <= obj + size
