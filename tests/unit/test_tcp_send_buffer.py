"""SendBuffer (chunk list, zero-copy views) against a plain bytearray model."""
import random

import pytest

from aiotcpstack.tcp.send_buffer import MASK, SendBuffer


@pytest.mark.parametrize("trial", range(60))
def test_send_buffer_matches_model(trial):
    rnd = random.Random(trial)
    isn = rnd.choice([0, MASK - 1000, rnd.getrandbits(32)])
    sb = SendBuffer(isn)
    ref = bytearray()
    refseq = isn
    for step in range(200):
        op = rnd.random()
        if op < 0.4:
            d = rnd.randbytes(rnd.choice([1, 5, 100, 600, 3000, 70000, 300000]))
            d = rnd.choice([d, bytearray(d), memoryview(d)])
            sb.append(d)
            ref += bytes(d)
            if isinstance(d, bytearray):
                d[:1] = b"\xff" if d[:1] != b"\xff" else b"\x00"   # caller reuses its buffer
        elif op < 0.7 and ref:
            a = rnd.randrange(len(ref))
            b = rnd.randrange(a, len(ref)) + 1
            assert bytes(sb.get((refseq + a) & MASK, b - a)) == bytes(ref[a:b]), (trial, step)
        elif op < 0.8 and ref:
            # parts_run: a run of equal ranges in one walk, each as parts() gives it
            size = rnd.choice([1, 1448, 5000, 65160])
            count = min(rnd.randrange(1, 8), len(ref) // size)
            if count:
                a = rnd.randrange(len(ref) - size * count + 1)
                seq = (refseq + a) & MASK
                run = sb.parts_run(seq, size, count)
                assert len(run) == count
                for j, parts in enumerate(run):
                    want = bytes(ref[a + j * size:a + (j + 1) * size])
                    assert b"".join(bytes(p) for p in parts) == want, (trial, step, j)
                    assert b"".join(bytes(p) for p in sb.parts((seq + j * size) & MASK, size)) == want
        elif ref:
            k = rnd.randrange(len(ref) + 1)
            assert sb.ack_to((refseq + k) & MASK) == k
            del ref[:k]
            refseq = (refseq + k) & MASK
        assert len(sb) == len(ref) and sb.seq == refseq
        assert sb.end_seq == (refseq + len(ref)) & MASK
    assert sb.ack_to((refseq - 5) & MASK) == 0
    assert sb.ack_to((refseq + len(ref) + 10) & MASK) == len(ref)
    assert len(sb) == 0


def test_get_inside_one_chunk_is_a_view():
    sb = SendBuffer(100)
    data = bytes(range(256)) * 1000
    sb.append(data)
    v = sb.get(100 + 10, 1000)
    assert isinstance(v, memoryview) and v.readonly and bytes(v) == data[10:1010]
    assert sb.get(100, len(data)) is data


@pytest.mark.parametrize("trial", range(40))
def test_pooled_blocks_match_model_and_are_reused(trial):
    """Large reusable-buffer writes go into pool blocks (send_buffer.BlockPool): contents always
    match a plain model, blocks return to the pool once fully acknowledged, and the caller's
    buffer is never referenced (it is scribbled over after every append)."""
    from aiotcpstack.tcp import send_buffer as sbm

    rnd = random.Random(1000 + trial)
    pool = sbm.BlockPool(keep=8)
    old = sbm.POOL
    sbm.POOL = pool
    try:
        isn = rnd.getrandbits(32)
        sb = SendBuffer(isn)
        ref = bytearray()
        refseq = isn
        for step in range(150):
            op = rnd.random()
            if op < 0.45:
                d = bytearray(rnd.randbytes(rnd.choice([3, 700, sbm.POOL_MIN, 70000, sbm.BLOCK + 5, 300000])))
                sb.append(rnd.choice([d, memoryview(d)]))
                ref += d
                d[:] = b"\xa5" * len(d)                  # the caller reuses its buffer
            elif op < 0.75 and ref:
                a = rnd.randrange(len(ref))
                b = min(len(ref), a + rnd.choice([1, 1448, 65160, 300000])) 
                assert bytes(sb.get((refseq + a) & MASK, b - a)) == bytes(ref[a:b]), (trial, step)
            elif ref:
                k = rnd.choice([rnd.randrange(len(ref) + 1), len(ref)])
                assert sb.ack_to((refseq + k) & MASK) == k
                del ref[:k]
                refseq = (refseq + k) & MASK
            assert len(sb) == len(ref)
            # blocks held = those with unacknowledged bytes (+ at most the rewound tail block)
            assert len(sb._blocks) <= (len(ref) + 2 * sbm.BLOCK - 1) // sbm.BLOCK + 1
        sb.ack_to((refseq + len(ref)) & MASK)
        assert len(sb._blocks) <= 1
        sb.clear()
        assert not sb._blocks and len(pool.free) <= pool.keep
        made = pool.allocated
        # steady state: a bulk writer that is acknowledged as it goes allocates nothing new
        sb2 = SendBuffer(0)
        seq = 0
        for _ in range(50):
            sb2.append(bytearray(sbm.BLOCK))
            seq += sbm.BLOCK
            sb2.ack_to(seq & MASK)
        assert pool.allocated - made <= 1
    finally:
        sbm.POOL = old


def test_non_byte_formats_and_non_contiguous_views_are_copied_correctly():
    import array

    sb = SendBuffer(0)
    a = array.array("H", range(20000))           # 40,000 bytes: the pooled path, cast to bytes
    sb.append(memoryview(a))
    nc = memoryview(bytearray(range(256)) * 200)[::2]    # not contiguous: a bytes copy
    sb.append(nc)
    want = a.tobytes() + bytes(nc)
    assert len(sb) == len(want)
    assert bytes(sb.get(0, len(want))) == want


def test_pooled_writes_into_one_block_stay_one_chunk():
    """Consecutive large writes that land in the same pool block grow its chunk instead of adding
    one per write: a range across the write boundary is still a view (no join), and the
    contents are right after the caller reuses its buffer."""
    from aiotcpstack.tcp import send_buffer as sbm

    sb = SendBuffer(7)
    w = bytearray(sbm.POOL_MIN)
    parts = []
    for i in range(3):
        w[:] = bytes([i + 1]) * len(w)
        sb.append(w)
        parts.append(bytes(w))
    w[:] = b"\x00" * len(w)
    assert len(sb._chunks) == 1
    v = sb.get(7 + sbm.POOL_MIN - 10, 20)
    assert isinstance(v, memoryview) and bytes(v) == parts[0][-10:] + parts[1][:10]
    sb.append(b"tail")                     # a bytes chunk in between: the next write starts anew
    sb.append(w)
    assert len(sb._chunks) == 3
    assert bytes(sb.get(7, len(sb))) == b"".join(parts) + b"tail" + bytes(w)
    sb.clear()

