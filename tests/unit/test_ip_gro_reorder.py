"""Software GRO puts the frames of one flow back in sequence order within a batch
(``NetworkCore._gro_reorder``, ``gro.in_order``; PERF_LOG step 23).

A kernel sender on a veth transmits from two CPUs, so frames of one flow can reach us permuted
within one batch.  Processed as they came, the later segment would go to the out-of-order queue
and our immediate duplicate ACK with a SACK block would make the sender's RACK retransmit
spuriously.  A batch whose frames are only permuted must make exactly the ACKs (and deliver
exactly the stream) of the same batch in order; a real hole must still be reported."""
from __future__ import annotations

import random

from aiotcpstack.ip.gro import MAX_RUNS
from aiotcpstack.wire.tcp import ACK, PSH

from test_ip_gro import MSS, Conn, out_segments, stream


def acks(c: Conn) -> list[tuple]:
    """Every segment we sent: flags, SEQ, ACK, window, SACK blocks, TSecr."""
    return [(h.flags, h.seq, h.ack, h.window, tuple(h.options.sack_blocks or ()),
             h.options.timestamp and h.options.timestamp[1]) for h in out_segments(c.tx)]


def run(order: list[int], nseg: int, seed: int, ts_step: int = 0, psh_every: int = 0,
        lengths: list[int] | None = None) -> Conn:
    """One batch of ``nseg`` data segments in the given order (indices into the in-order list),
    then a lone in-order segment in a second batch; GRO on."""
    lengths = lengths or [MSS] * nseg
    data = stream(sum(lengths) + 100, seed)
    c = Conn(True)
    base = c.seq
    frames = []
    off = 0
    for i, n in enumerate(lengths):
        flags = ACK | PSH if psh_every and i % psh_every == psh_every - 1 else ACK
        frames.append(c.data(data[off:off + n], seq=(base + off) & 0xFFFFFFFF, flags=flags,
                             ts=Conn.TS + (i * ts_step) // 4))
        off += n
    c.seq = (base + off) & 0xFFFFFFFF
    c.receive([(frames[i], False) for i in order], 0.02)
    c.receive([(c.data(data[off:off + 100], ts=Conn.TS + nseg * ts_step), False)], 0.03)
    assert bytes(c.sink.data) == data
    return c


def test_a_swapped_pair_makes_the_acks_of_the_batch_in_order() -> None:
    in_order = run(list(range(6)), 6, 1)
    swapped = run([0, 1, 3, 2, 4, 5], 6, 1)
    assert acks(swapped) == acks(in_order)
    assert all(not sack for _f, _s, _a, _w, sack, _t in acks(swapped))
    assert swapped.counters["TCPOFOQueue"] == 0 and swapped.counters["TCPSACKSent"] == 0
    assert swapped.counters["TcpGroReordered"] >= 1
    assert swapped.sink.calls == in_order.sink.calls


def test_a_later_frame_first_and_super_frame_sizes() -> None:
    # offloads on: a batch of a few 64 KB super-frames, the second one first
    lengths = [65160, 65160, 30000, 65160]
    in_order = run([0, 1, 2, 3], 4, 2, lengths=lengths)
    for order in ([1, 0, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):
        c = run(order, 4, 2, lengths=lengths)
        assert acks(c) == acks(in_order), order
        assert c.counters["TCPOFOQueue"] == 0


def test_random_permutations_with_tsval_steps_and_psh() -> None:
    rng = random.Random(23)
    for nseg in (3, 9, 40):
        in_order = run(list(range(nseg)), nseg, nseg, ts_step=1, psh_every=7)
        for _ in range(12):
            order = list(range(nseg))
            # swap a few neighbours (the reordering seen on a veth) or shuffle all (at most
            # MAX_RUNS runs are held apart: beyond that the batch is processed as it came)
            if nseg <= MAX_RUNS and rng.random() < 0.5:
                rng.shuffle(order)
            else:
                for _k in range(rng.randint(1, 3)):
                    j = rng.randrange(nseg - 1)
                    order[j], order[j + 1] = order[j + 1], order[j]
            c = run(order, nseg, nseg, ts_step=1, psh_every=7)
            assert bytes(c.sink.data) == bytes(in_order.sink.data)
            assert c.conn.rcv_nxt == in_order.conn.rcv_nxt
            # a run whose TSval is older than the run before it in sequence order is not merged
            # (it goes to TCP as a segment of its own, in sequence order): never an out-of-order
            # queue, never a SACK block
            assert c.counters["TCPOFOQueue"] == 0, order
            assert all(not sack for _f, _s, _a, _w, sack, _t in acks(c)), order


def test_a_real_hole_is_still_reported_in_sequence_order() -> None:
    # segments 0..7 with 3 missing, permuted: the stream up to the hole is delivered and the
    # rest is SACKed as one block (the same ACKs as the batch without the hole in order)
    nseg = 8
    want = run_hole([0, 1, 2, 4, 5, 6, 7], nseg)
    for order in ([0, 2, 1, 5, 4, 6, 7], [4, 0, 1, 2, 7, 6, 5], [7, 6, 5, 4, 2, 1, 0]):
        got = run_hole(order, nseg)
        assert acks(got) == acks(want), order
        assert bytes(got.sink.data) == bytes(want.sink.data)


def run_hole(present: list[int], nseg: int) -> Conn:
    data = stream(nseg * MSS, 9)
    c = Conn(True)
    base = c.seq
    c.receive([(c.data(data[i * MSS:(i + 1) * MSS], seq=(base + i * MSS) & 0xFFFFFFFF, flags=ACK), False)
               for i in present], 0.02)
    assert bytes(c.sink.data) == data[:3 * MSS]
    sacks = [sack for _f, _s, _a, _w, sack, _t in acks(c) if sack]
    assert sacks and sacks[-1][0] == ((base + 4 * MSS) & 0xFFFFFFFF, (base + nseg * MSS) & 0xFFFFFFFF)
    return c


def test_an_overlapping_retransmission_flushes_as_before() -> None:
    # a segment that overlaps a held run (the old retransmission of part of it) is not held
    # apart: everything held goes to TCP first, then the duplicate (a DSACK, RFC 2883)
    data = stream(6 * MSS, 4)
    c = Conn(True)
    base = c.seq
    frames = [c.data(data[i * MSS:(i + 1) * MSS], seq=(base + i * MSS) & 0xFFFFFFFF, flags=ACK) for i in range(6)]
    c.receive([(f, False) for f in frames[:4]] + [(frames[1], False)] + [(f, False) for f in frames[4:]], 0.02)
    assert bytes(c.sink.data) == data
    assert c.counters["TcpGroReordered"] == 0
    assert c.counters["TCPDSACKOldSent"] == 1
