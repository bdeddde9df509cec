"""Two TcpConnections back to back through an in-test lossy pipe on virtual time: handshake,
a few hundred KB each way byte-exact, orderly close, with loss, reordering and all option mixes."""
from __future__ import annotations

import heapq
import random

import pytest

from aiotcpstack.mib import Counters
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.connection import TcpConnection, rst_for
from aiotcpstack.tcp.timer_wheel import TimerWheel
from aiotcpstack.wire.tcp import TcpHeader

from tcp_harness import Recorder

A = (bytes([10, 0, 0, 1]), 40000)
B = (bytes([10, 0, 0, 2]), 80)


class Pipe:
    """Delivers segments after ``delay`` (+ jitter, which reorders), dropping ``loss`` of them,
    and duplicating ``dup`` of them, deterministically per seed."""

    def __init__(self, seed: int, loss: float = 0.0, delay: float = 0.01, jitter: float = 0.0,
                 dup: float = 0.0, rate_bps: float | None = None) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.delay = delay
        self.jitter = jitter
        self.dup = dup
        self.rate = rate_bps
        self.heap: list = []
        self.n = 0
        self.now = 0.0
        self.sent = 0
        self.dropped = 0
        self.busy_until = {}

    def output_to(self, target_getter, mss_getter):
        def output(hdr: TcpHeader, payload) -> None:
            payload = bytes(payload)
            mss = mss_getter()
            # split TSO-sized payloads like ip/ would
            pieces = [(hdr, payload)]
            if len(payload) > mss:
                pieces = []
                for off in range(0, len(payload), mss):
                    chunk = payload[off:off + mss]
                    last = off + mss >= len(payload)
                    flags = hdr.flags if last else hdr.flags & ~0x09
                    pieces.append((TcpHeader(hdr.src_port, hdr.dst_port, (hdr.seq + off) & 0xFFFFFFFF, hdr.ack,
                                             flags, hdr.window, hdr.options), chunk))
            for h, p in pieces:
                self.sent += 1
                if self.rng.random() < self.loss:
                    self.dropped += 1
                    continue
                copies = 2 if self.rng.random() < self.dup else 1
                for _ in range(copies):
                    t = self.now + self.delay + (self.rng.random() * self.jitter if self.jitter else 0.0)
                    if self.rate:
                        key = id(target_getter)
                        start = max(self.now, self.busy_until.get(key, 0.0))
                        self.busy_until[key] = start + (len(p) + 52) * 8 / self.rate
                        t = max(t, self.busy_until[key] + self.delay)
                    self.n += 1
                    heapq.heappush(self.heap, (t, self.n, target_getter, h, p))
        return output


class Pair:
    def __init__(self, cfg_a: TcpConfig, cfg_b: TcpConfig | None = None, *, seed: int = 1, iss_a: int = 1000,
                 iss_b: int = 2000000, **pipe_kw) -> None:
        self.wheel = TimerWheel(0.0)
        self.counters = Counters()
        self.pipe = Pipe(seed, **pipe_kw)
        self.ra = Recorder()
        self.rb = Recorder()
        self.released = []
        self.a = TcpConnection(config=cfg_a, wheel=self.wheel, counters=self.counters, local=A, remote=B,
                               iss=iss_a, output=self.pipe.output_to(lambda: self.b, lambda: self.a.mss),
                               handler=self.ra, release=self.released.append, ts_offset=12345)
        self.b = TcpConnection(config=cfg_b or cfg_a, wheel=self.wheel, counters=self.counters, local=B, remote=A,
                               iss=iss_b, output=self.pipe.output_to(lambda: self.a, lambda: self.b.mss),
                               handler=self.rb, release=self.released.append, ts_offset=0xFFFFF000)
        self.now = 0.0

    def run(self, until: float, stop=None) -> None:
        pipe = self.pipe
        while True:
            if stop is not None and stop():
                return
            t_pkt = pipe.heap[0][0] if pipe.heap else None
            t_tmr = self.wheel.next_expiry()
            cands = [t for t in (t_pkt, t_tmr) if t is not None]
            if not cands:
                return
            t = min(cands)
            if t > until:
                return
            self.now = pipe.now = max(self.now, t)
            if t_pkt is not None and t_pkt <= t:
                touched = []
                while pipe.heap and pipe.heap[0][0] <= t:
                    _, _, target, h, p = heapq.heappop(pipe.heap)
                    conn = target()
                    if conn is self.b and self.b_waiting_syn:
                        if h.flags & 0x02:          # the listener's job: accept the first SYN
                            self.b_waiting_syn = False
                            conn.accept_syn(h, self.now)
                        continue
                    if conn.state == "CLOSED":
                        # what ip/ does for a segment matching no connection: RFC 9293 3.10.7.1
                        rst = rst_for(h, len(p))
                        if rst is not None:
                            other = self.a if conn is self.b else self.b
                            self.pipe.output_to(lambda o=other: o, lambda: 1460)(rst, b"")
                        continue
                    conn.on_segment(h, p, self.now)
                    if conn not in touched:
                        touched.append(conn)
                for conn in touched:
                    conn.end_batch(self.now)
            else:
                self.wheel.advance(t)

    b_waiting_syn = True


def transfer(cfg_a, cfg_b=None, *, size=300_000, back=0, seed=1, until=600.0, iss_a=1000, iss_b=2000000, **pipe_kw):
    p = Pair(cfg_a, cfg_b, seed=seed, iss_a=iss_a, iss_b=iss_b, **pipe_kw)
    rng = random.Random(seed + 100)
    data_ab = rng.randbytes(size)
    data_ba = rng.randbytes(back)
    p.a.connect(0.0)
    p.run(until, stop=lambda: p.a.state == "ESTABLISHED" and p.b.state == "ESTABLISHED")
    assert p.a.state == "ESTABLISHED" and p.b.state == "ESTABLISHED"
    # write in pieces of various sizes, as an application would
    off = 0
    while off < size:
        n = rng.choice((1, 100, 1448, 5000, 65536))
        p.a.send(data_ab[off:off + n], p.now)
        off += n
    if back:
        p.b.send(data_ba, p.now)
    p.a.shutdown(p.now)
    # b closes when it sees EOF
    p.rb.on_data = None
    orig_eof = p.rb.tcp_eof

    def b_eof():
        orig_eof()
        p.b.close(p.now)
    p.rb.tcp_eof = b_eof
    p.run(until, stop=lambda: bool(p.ra.closed) and bool(p.rb.closed))
    assert bytes(p.rb.data) == data_ab, (len(p.rb.data), size)
    assert bytes(p.ra.data) == data_ba
    assert p.ra.closed == [None] and p.rb.closed == [None], (p.ra.events[-3:], p.rb.events[-3:], p.a, p.b)
    # a is in TIME_WAIT (it closed first... or both CLOSED); run out the clock
    p.run(until + 1000.0)
    assert p.a.state == "CLOSED" and p.b.state == "CLOSED"
    assert len(p.released) == 2
    assert p.counters["CurrEstab"] == 0
    return p


PLAIN = TcpConfig(timestamps=False, sack=False, window_scaling=False)
FULL = TcpConfig()


@pytest.mark.parametrize("cfg", [PLAIN, FULL, TcpConfig(timestamps=False), TcpConfig(sack=False),
                                 TcpConfig(congestion_control="reno")], ids=["plain", "full", "nots", "nosack", "reno"])
def test_clean_transfer(cfg):
    p = transfer(cfg, size=400_000, back=50_000)
    assert p.counters["RetransSegs"] == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("cfg", [PLAIN, FULL, TcpConfig(sack=False)], ids=["plain", "full", "nosack"])
def test_lossy_transfer(cfg, seed):
    p = transfer(cfg, size=300_000, back=20_000, seed=seed, loss=0.03)
    assert p.counters["RetransSegs"] > 0


@pytest.mark.parametrize("cfg", [PLAIN, FULL], ids=["plain", "full"])
def test_reordering_and_duplication(cfg):
    transfer(cfg, size=300_000, seed=7, loss=0.01, jitter=0.004, dup=0.02)


def test_sequence_wrap_both_directions():
    transfer(FULL, size=300_000, back=100_000, iss_a=0xFFFFFFFF - 5000, iss_b=0xFFFFFFFF - 70, loss=0.02, seed=5)


def test_tso_output():
    cfg = TcpConfig(tso_segs=16)
    p = transfer(cfg, size=500_000, seed=9, loss=0.01)
    assert p.counters["OutSegs"] >= 500_000 // 1448


def test_rate_limited_bottleneck():
    transfer(FULL, size=400_000, seed=4, rate_bps=10_000_000, delay=0.02)


def _random_config(r: random.Random) -> TcpConfig:
    return TcpConfig(timestamps=r.random() < .6, sack=r.random() < .6, window_scaling=r.random() < .6,
                     congestion_control=r.choice(["reno", "cubic"]), nodelay=r.random() < .3,
                     tso_segs=r.choice([1, 1, 4]), rcvbuf=r.choice([2000, 4000, 20000, 131072]),
                     dsack=r.random() < .8, moderate_rcvbuf=r.random() < .5)


@pytest.mark.parametrize("seed", range(12))
def test_random_configs_and_impairments(seed):
    """Option mixes x loss/reorder/duplication x ISNs near 2**32, byte-exact both ways."""
    r = random.Random(seed)
    cfg = _random_config(r)
    transfer(cfg, size=r.choice([1, 1000, 60_000]), back=r.choice([0, 10, 20_000]), seed=seed, until=3000.0,
             iss_a=r.choice([1000, 0xFFFFFFFF - 3000, r.getrandbits(32)]),
             iss_b=r.choice([2000000, 0xFFFFFFFF, r.getrandbits(32)]),
             loss=r.choice([0, 0.01, 0.05, 0.15]), jitter=r.choice([0, 0.003, 0.02]), dup=r.choice([0, 0.02]),
             delay=r.choice([0.001, 0.01, 0.05]))


def test_heavy_loss_with_reader_pauses_and_simultaneous_shutdown():
    """20 % loss, the receiver pauses reading now and then (window closes, persist probes),
    both sides shut down at once (simultaneous close)."""
    from aiotcpstack.tcp.timer_wheel import Timer
    cfg = TcpConfig(rcvbuf=8000, moderate_rcvbuf=False)
    p = Pair(cfg, seed=3, loss=0.2, delay=0.01)
    rng = random.Random(3)
    data_ab, data_ba = rng.randbytes(100_000), rng.randbytes(30_000)
    p.a.connect(0.0)
    p.run(3000, stop=lambda: p.a.state == "ESTABLISHED" and p.b.state == "ESTABLISHED")
    resume = Timer(lambda now: p.b.set_reading(True, now))
    orig = p.rb.tcp_data

    def on_data(d):
        orig(d)
        if rng.random() < 0.2 and not resume.pending:
            p.b.set_reading(False, p.now)
            p.wheel.arm(resume, p.now + rng.choice([0.01, 0.5, 3.0]))
    p.rb.tcp_data = on_data
    p.a.send(data_ab, p.now)
    p.b.send(data_ba, p.now)
    p.a.shutdown(p.now)
    p.b.shutdown(p.now)
    p.run(5000, stop=lambda: bool(p.ra.closed) and bool(p.rb.closed))
    assert bytes(p.rb.data) == data_ab and bytes(p.ra.data) == data_ba
    assert p.ra.closed == [None] and p.rb.closed == [None]
    p.run(9000)
    assert p.a.state == p.b.state == "CLOSED" and len(p.released) == 2
    assert p.counters["TCPWinProbe"] + p.counters["RetransSegs"] > 0
