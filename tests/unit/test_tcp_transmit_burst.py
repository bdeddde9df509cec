"""The burst transmit (TcpConnection._transmit_burst -> Route.output_ts_burst -> the link's
send_tcp_burst) puts exactly the frames on the wire that the segment-by-segment path
(_transmit -> Route.output_ts -> send_tcp) puts there: the same connection scenario -- a
handshake, large and small sends from a pooled send buffer (segments that span chunks), ACKs
that open the window, a delayed ACK owed, a FIN after the data, a retransmission -- runs on two
NetworkCores at frame level, one with a burst link and one without, and every frame, counter
and connection variable must be identical at every step.  A third core lays out runs of full TSO
frames with ``_output``'s general per-frame step (``connection.BULK_RUNS`` off) and must match
too, and every data frame's payload must be the bytes written at its sequence number."""
from __future__ import annotations

import random

import pytest

from aiotcpstack.ip.core import NetworkCore
from aiotcpstack.mib import Counters
from aiotcpstack.tcp import connection as connection_mod
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.timer_wheel import TimerWheel
from aiotcpstack.wire.ethernet import ETH_P_IP, build_ethernet
from aiotcpstack.wire.ipv4 import build_ipv4_header
from aiotcpstack.wire.tcp import ACK, FIN, SYN, TcpHeader, TcpOptions, build_tcp, parse_tcp

from tcp_harness import Recorder

MY_MAC = bytes.fromhex("02aa00000001")
PEER_MAC = bytes.fromhex("02bb00000002")
MY_IP = bytes([198, 18, 0, 1])
PEER_IP = bytes([198, 18, 0, 2])
PEER_ISS = 5000


def frame(hdr: TcpHeader, payload: bytes = b"") -> bytes:
    seg = build_tcp(hdr, payload, PEER_IP, MY_IP)
    return build_ethernet(MY_MAC, PEER_MAC, ETH_P_IP) + build_ipv4_header(PEER_IP, MY_IP, 6, len(seg)) + seg


class Side:
    """A vnet core whose scatter-gather link records (vnet fields, frame bytes); ``burst``:
    it also has send_tcp_burst."""

    def __init__(self, burst: bool, tso_segs: int = 1, runs: bool = True, iw: int = 10) -> None:
        self.sent: list = []
        self.bursts = 0
        self.runs = runs
        config = TcpConfig(tso_segs=tso_segs, initial_cwnd=iw)
        self.core = core = NetworkCore(MY_MAC, 1500, [(MY_IP, 24)], Counters(), config, TimerWheel(),
                                       self._transmit, None, vnet=True, dedicated=True, strict=True,
                                       secret=b"burst")   # one key: both cores pick the same ISNs
        core.transmit_tcp = self._send_tcp
        if burst:
            core.transmit_tcp_burst = self._send_tcp_burst
        core.neigh.update(PEER_IP, PEER_MAC, 0.0)
        self.rec = Recorder()
        accepted = []
        core.listen(None, 80, 8, lambda c: accepted.append(c) or self.rec)
        syn_opts = TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(100, 0))
        core.now = 0.0
        core.receive([(frame(TcpHeader(40000, 80, PEER_ISS - 1, 0, SYN, 65535, syn_opts)), False)], 0.0)
        synack = parse_tcp(self.sent[-1][1][34:])[0]
        core.receive([(frame(TcpHeader(40000, 80, PEER_ISS, synack.seq + 1, ACK, 65535,
                                       TcpOptions(timestamp=(101, synack.options.timestamp[0])))), False)], 0.01)
        self.conn, = accepted
        self.sent.clear()

    def _transmit(self, frame, gso_type=0, gso_size=0, csum_start=0, csum_offset=0):
        self.sent.append(((gso_type, gso_size, csum_start, csum_offset), bytes(frame)))

    def _send_tcp(self, l2l3, th, payload, gso_type=0, gso_size=0):
        self.sent.append(((gso_type, gso_size, len(l2l3), 16), b"".join((l2l3, th, payload))))

    def _send_tcp_burst(self, csum_start, hdr_len, gso_type, frames):
        self.bursts += 1
        for headers, parts, gso_size in frames:
            assert len(headers) == hdr_len
            self.sent.append(((gso_type if gso_size else 0, gso_size, csum_start, 16), b"".join((headers, *parts))))

    def ack(self, now: float, ack: int, window: int = 20000, payload: bytes = b"", seq: int | None = None) -> None:
        c = self.conn
        hdr = TcpHeader(40000, 80, c.rcv_nxt if seq is None else seq, ack & 0xFFFFFFFF, ACK, window,
                        TcpOptions(timestamp=(int(now * 1000) + 200, c.ts_recent and (int(now * 1000) + c.ts_offset))))
        self.core.receive([(frame(hdr, payload), False)], now)

    def state(self) -> tuple:
        c = self.conn
        out = list(self.sent)
        self.sent.clear()
        return (out, dict(self.core.counters), c.snd_nxt, c.snd_una, c.rcv_nxt, c.rcv_adv, c.rcv_wup,
                c.last_ack_sent, c.ack_pending, c.quick, c.tail_held, c._t_rtx.pending, c._t_dack.pending)


def each(sides: tuple, fn) -> None:
    """``fn(side)`` for every side, with ``_output``'s full-frame runs on or off as the side wants."""
    try:
        for s in sides:
            connection_mod.BULK_RUNS = s.runs
            fn(s)
    finally:
        connection_mod.BULK_RUNS = True


def check_payloads(frames: list, stream: bytearray, base: int) -> int:
    """Every data frame carries the bytes written at its sequence number; returns how many bytes
    the frames carried."""
    n = 0
    for _vnet, raw in frames:
        hdr, payload = parse_tcp(raw[34:])
        if payload:
            off = (hdr.seq - base) & 0xFFFFFFFF
            assert bytes(payload) == bytes(stream[off:off + len(payload)]), off
            n += len(payload)
    return n


@pytest.mark.parametrize("tso_segs, iw", [(1, 10), (20, 100)])
@pytest.mark.parametrize("seed", range(6))
def test_burst_and_one_by_one_send_the_same_frames(seed: int, tso_segs: int, iw: int) -> None:
    rng = random.Random(seed)
    a, b, c = Side(True, tso_segs, iw=iw), Side(False, tso_segs, iw=iw), Side(True, tso_segs, False, iw)
    sides = (a, b, c)
    base = a.conn.snd_nxt
    stream = bytearray()
    carried = 0
    t = 0.02
    sent_total = 0
    steps = []
    for step in range(25):
        t += 0.001
        op = rng.random()
        if op < 0.45:
            n = rng.choice([1, 700, 20000, 100_000, 300_000])
            data = bytearray(rng.randbytes(n))      # reusable buffers: pooled blocks
            stream += data
            more = rng.random() < 0.5
            each(sides, lambda s: s.conn.send(data, t, more))
            if rng.random() < 0.5:
                each(sides, lambda s: s.conn.push(t))
            sent_total += n
        elif op < 0.8:
            k = rng.randrange(0, ((a.conn.snd_nxt - a.conn.snd_una) & 0xFFFFFFFF) + 1)
            win = rng.choice([20000, 65535])
            payload = rng.randbytes(rng.choice([0, 0, 100]))
            each(sides, lambda s: s.ack(t, s.conn.snd_una + k, win, payload))
        elif op < 0.9:
            each(sides, lambda s: s.core.wheel.advance(t + 0.5))     # RTO / TLP / delayed ACK
            t += 0.5
        else:
            each(sides, lambda s: s.core.wheel.advance(t))
        sa, sb, sc = a.state(), b.state(), c.state()
        assert sa == sb, (seed, step)
        assert sa == sc, (seed, step)
        carried += check_payloads(sa[0], stream, base)
        steps.append(len(sa[0]))
    each(sides, lambda s: s.conn.shutdown(t))
    assert a.state() == b.state() == c.state()
    assert a.bursts > 0 and b.bursts == 0 and c.bursts > 0 and sum(steps) > 20 and carried > 0
