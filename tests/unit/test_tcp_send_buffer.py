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
            d = rnd.randbytes(rnd.choice([1, 5, 100, 600, 3000, 70000]))
            d = rnd.choice([d, bytearray(d), memoryview(d)])
            sb.append(d)
            ref += bytes(d)
            if isinstance(d, bytearray):
                d[:1] = b"\xff" if d[:1] != b"\xff" else b"\x00"   # caller reuses its buffer
        elif op < 0.7 and ref:
            a = rnd.randrange(len(ref))
            b = rnd.randrange(a, len(ref)) + 1
            assert bytes(sb.get((refseq + a) & MASK, b - a)) == bytes(ref[a:b]), (trial, step)
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
