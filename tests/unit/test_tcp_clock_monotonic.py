"""The connection's clock never runs backwards (PERF_LOG step 31).

A batch of ACKs is processed at the ``now`` read when it arrived.  An application that writes
from ``resume_writing`` -- a callback made inside that batch (``tcp_send_space``) -- sends with a
later ``now``; what the batch itself sends afterwards must not carry an older TSval than the
segments already sent, or the peer's PAWS (RFC 7323 5.3) drops them as old duplicates.  Seen
live: bulk send to a kernel receiver, offloads off, 40 segments stamped 8 ms older than the ones
before them, dropped by the receiver (its ``PAWSEstab``), a recovery and 1.7 s of retransmissions
one per delayed ACK."""
from __future__ import annotations

from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.wire.tcp import TcpOptions

from tcp_harness import Harness

PEER_ISS = 5000
MSS = 1000


def _established() -> Harness:
    h = Harness(TcpConfig(mss=MSS), iss=1000)
    syn = h.establish_active(PEER_ISS, t=1.0, peer_opts=TcpOptions(
        mss=MSS, wscale=7, sack_permitted=True, timestamp=(100, 0)))
    assert h.conn.ts_ok
    del syn
    return h


def _ack(h: Harness, ack: int, tsval: int) -> dict:
    return dict(flags=".", seq=PEER_ISS + 1, ack=ack, window=4096,
                opts=TcpOptions(timestamp=(tsval, h.conn._tsval(1.0))))


def test_batch_after_a_later_nested_send_keeps_tsval_order():
    h = _established()
    base = h.conn.snd_nxt
    mss = h.conn.mss                                  # (MSS less the timestamp option)
    h.conn.send(b"a" * (10 * mss), 1.1)               # the initial window
    first = h.take()
    assert len(first) == 10
    # the application writes again from the send-space callback of the batch below, at a
    # later clock than the batch's (its loop read the time after the batch had begun)
    writes = []

    def send_space() -> None:
        if not writes:
            writes.append(1)
            # (``more``: the transport's write, the partial last segment is held for the next
            # write -- and sent by the batch's own output at its end when none comes)
            h.conn.send(b"b" * (4 * mss + 100), 1.109, True)

    h.rec.tcp_send_space = send_space
    # one batch at t=1.101: the ACK of the initial window
    out = h.feed_batch(1.101, [_ack(h, base + 10 * mss, 101)])
    data = [s for s in out if s.payload]
    assert writes and [len(s.payload) for s in data] == [mss] * 4 + [100]
    tsvals = [s.tsval for s in data]
    late = h.conn._tsval(1.109)
    assert tsvals[0] == late                        # the nested send went first, at its clock
    # nothing sent after it is stamped older (without the clock: the batch's 1.101 -> 8 ticks back)
    assert all(((b - a) & 0xFFFFFFFF) < 0x80000000 for a, b in zip(tsvals, tsvals[1:])), tsvals
    assert min(tsvals) == late


def test_clock_follows_the_latest_call():
    h = _established()
    h.conn.send(b"x" * MSS, 2.0)
    assert h.conn.clock == 2.0
    # a later call that brings an older time (a batch begun before the send) leaves it
    h.conn._output(1.5)
    assert h.conn.clock == 2.0
