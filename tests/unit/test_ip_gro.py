"""Software GRO (ip/gro.py) and the raw-field header prediction in ``NetworkCore._rx_tcp``,
against a real TcpConnection: merging changes how many times TCP runs, never what it decides.

Every scenario is run twice, GRO on and off, on the same frames; the delivered stream, RCV.NXT,
the counters that count segments and the ACKs sent must agree."""
from __future__ import annotations

import random

from aiotcpstack.ip.core import NetworkCore
from aiotcpstack.mib import Counters
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.timer_wheel import TimerWheel
from aiotcpstack.wire import arp as warp
from aiotcpstack.wire.ethernet import BROADCAST, ETH_P_ARP, ETH_P_IP, build_ethernet, parse_ethernet
from aiotcpstack.wire.ipv4 import build_ipv4_header, parse_ipv4
from aiotcpstack.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpHeader, TcpOptions, build_tcp, parse_tcp

MY_MAC = bytes.fromhex("02aa00000001")
PEER_MAC = bytes.fromhex("02bb00000002")
MY_IP = bytes([198, 18, 0, 1])
PEER_IP = bytes([198, 18, 0, 2])
MSS = 1448


class Tx(list):
    def __call__(self, frame, gso_type=0, gso_size=0, csum_start=0, csum_offset=0):
        self.append(bytes(frame))


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.calls = 0
        self.eof = False

    def tcp_established(self) -> None:
        pass

    def tcp_data(self, data: bytes) -> None:
        self.data += data
        self.calls += 1

    def tcp_eof(self) -> None:
        self.eof = True

    def tcp_send_space(self) -> None:
        pass

    def tcp_closed(self, exc) -> None:
        pass


def frame(hdr: TcpHeader, payload: bytes = b"", bad_csum: bool = False) -> bytes:
    seg = bytearray(build_tcp(hdr, payload, PEER_IP, MY_IP))
    if bad_csum:
        seg[-1 if payload else 16] ^= 0x5A
    ip = build_ipv4_header(PEER_IP, MY_IP, 6, len(seg))
    return build_ethernet(MY_MAC, PEER_MAC, ETH_P_IP) + ip + bytes(seg)


def out_segments(tx: Tx) -> list[TcpHeader]:
    out = []
    for f in tx:
        _d, _s, et, l3 = parse_ethernet(f)
        if et == ETH_P_IP:
            _ip, seg = parse_ipv4(l3)
            out.append(parse_tcp(seg)[0])
    return out


class Conn:
    """Our active open to PEER:80 with timestamps, established by a crafted SYN-ACK."""

    IRS = 5000
    TS = 777

    def __init__(self, gro: bool, rcvbuf: int = 1 << 20) -> None:
        self.tx = Tx()
        self.counters = Counters()
        cfg = TcpConfig(rcvbuf=rcvbuf, moderate_rcvbuf=False)
        self.core = NetworkCore(MY_MAC, 1500, [(MY_IP, 24)], self.counters, cfg, TimerWheel(), self.tx, None,
                                vnet=False, dedicated=True, strict=True)
        self.core.gro = gro
        self.core.neigh.update(PEER_IP, PEER_MAC, 0.0)
        self.sink = Sink()
        self.conn = self.core.connect(PEER_IP, 80, self.sink, 0.0)
        syn = out_segments(self.tx)[-1]
        assert syn.flags == SYN
        self.lport = syn.src_port
        self.iss = syn.seq
        ts = syn.options.timestamp
        synack = TcpHeader(80, self.lport, self.IRS, (self.iss + 1) & 0xFFFFFFFF, SYN | ACK, 65535,
                           TcpOptions(mss=MSS, wscale=7, sack_permitted=True, timestamp=(self.TS, ts[0])))
        self.core.receive([(frame(synack), False)], 0.01)
        assert self.conn.state == "ESTABLISHED"
        self.seq = (self.IRS + 1) & 0xFFFFFFFF
        # the peer's first scaled window (the SYN-ACK's is unscaled): later segments predict
        self.core.receive([(self.data(b"", flags=ACK), False)], 0.011)
        self.tx.clear()
        for k in self.counters:           # the scenarios count from here
            self.counters[k] = 0

    def data(self, payload: bytes, seq: int | None = None, flags: int = ACK | PSH, ts: int | None = None,
             window: int = 512, bad_csum: bool = False) -> bytes:
        s = self.seq if seq is None else seq
        hdr = TcpHeader(80, self.lport, s, (self.iss + 1) & 0xFFFFFFFF, flags, window,
                        TcpOptions(timestamp=(self.TS if ts is None else ts, 1)))
        if seq is None:
            self.seq = (self.seq + len(payload)) & 0xFFFFFFFF
        return frame(hdr, payload, bad_csum)


def stream(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def both(scenario) -> tuple[Conn, Conn]:
    on, off = Conn(True), Conn(False)
    scenario(on)
    scenario(off)
    assert bytes(on.sink.data) == bytes(off.sink.data)
    assert on.conn.rcv_nxt == off.conn.rcv_nxt
    for k in ("InSegs", "TCPHPHits", "InCsumErrors", "InErrs", "TCPOFOQueue"):
        assert on.counters[k] == off.counters[k], k
    acks_on = [(h.flags, h.ack) for h in out_segments(on.tx)]
    acks_off = [(h.flags, h.ack) for h in out_segments(off.tx)]
    assert acks_on == acks_off
    return on, off


def test_consecutive_segments_merge_into_one_delivery_and_one_ack() -> None:
    data = stream(40 * MSS)

    def sc(c: Conn) -> None:
        c.core.receive([(c.data(data[i:i + MSS]), False) for i in range(0, len(data), MSS)], 0.02)

    on, off = both(sc)
    assert bytes(on.sink.data) == data
    assert on.counters["TcpGroMerged"] == 39 and off.counters["TcpGroMerged"] == 0
    assert on.counters["InSegs"] == 40 and on.counters["TCPHPHits"] == 40
    assert on.sink.calls == 1
    acks = out_segments(on.tx)
    assert len(acks) == 1 and acks[0].ack == (Conn.IRS + 1 + len(data)) & 0xFFFFFFFF


def test_anything_different_flushes_first_and_order_is_kept() -> None:
    data = stream(12 * MSS, 2)
    chunks = [data[i:i + MSS] for i in range(0, len(data), MSS)]

    def sc(c: Conn) -> None:
        arp = build_ethernet(BROADCAST, PEER_MAC, ETH_P_ARP) + warp.build_arp(
            warp.arp_request(PEER_MAC, PEER_IP, MY_IP))
        batch = [(c.data(chunks[0]), False), (c.data(chunks[1]), False),
                 (arp, False),                                              # flushes
                 (c.data(chunks[2]), False),
                 (c.data(chunks[3], ts=Conn.TS + 1), False),               # TSval changes
                 (c.data(chunks[4], ts=Conn.TS + 1), False),
                 (c.data(chunks[5], window=600), False),                   # window update
                 (c.data(chunks[6], window=600, flags=ACK), False),        # flags differ
                 (c.data(chunks[7], window=600, flags=ACK), False)]
        c.core.receive(batch, 0.02)
        c.core.receive([(c.data(ch, window=600, flags=ACK), False) for ch in chunks[8:]], 0.03)

    on, off = both(sc)
    assert bytes(on.sink.data) == data
    assert 0 < on.counters["TcpGroMerged"] < 11


def test_corrupt_segment_is_counted_and_the_rest_goes_out_of_order() -> None:
    data = stream(10 * MSS, 3)
    chunks = [data[i:i + MSS] for i in range(0, len(data), MSS)]

    def sc(c: Conn) -> None:
        batch = []
        for i, ch in enumerate(chunks):
            batch.append((c.data(ch, bad_csum=(i == 4)), False))
        c.core.receive(batch, 0.02)
        # the peer retransmits the corrupted one
        c.core.receive([(c.data(chunks[4], seq=(Conn.IRS + 1 + 4 * MSS) & 0xFFFFFFFF), False)], 0.03)

    on, _off = both(sc)
    assert bytes(on.sink.data) == data
    assert on.counters["InCsumErrors"] == 1
    assert on.counters["TCPOFOQueue"] >= 1


def test_merged_batch_larger_than_the_window_falls_back_segment_by_segment() -> None:
    # a window of 16 KB: the merged 24 segments do not fit, each part is judged on its own
    data = stream(24 * MSS, 4)

    def mk(gro: bool) -> Conn:
        c = Conn(gro, rcvbuf=16384)
        c.core.receive([(c.data(data[i:i + MSS]), False) for i in range(0, len(data), MSS)], 0.02)
        return c

    on, off = mk(True), mk(False)
    assert bytes(on.sink.data) == bytes(off.sink.data)
    assert on.conn.rcv_nxt == off.conn.rcv_nxt
    assert 0 < len(on.sink.data) < len(data)          # the window really cut it
    assert on.counters["InSegs"] == off.counters["InSegs"] == 24


def test_fin_rst_and_pure_acks_are_not_merged() -> None:
    data = stream(4 * MSS, 5)

    def sc(c: Conn) -> None:
        batch = [(c.data(data[i:i + MSS]), False) for i in range(0, 3 * MSS, MSS)]
        batch.append((c.data(data[3 * MSS:], flags=ACK | FIN), False))
        batch.append((c.data(b"", flags=ACK), False))
        c.core.receive(batch, 0.02)

    on, _off = both(sc)
    assert bytes(on.sink.data) == data and on.sink.eof
    assert on.conn.state == "CLOSE_WAIT"
    assert on.counters["TcpGroMerged"] == 2


def test_random_batches_match_gro_off() -> None:
    rng = random.Random(11)
    data = stream(300 * MSS, 6)
    plan = []
    off = 0
    while off < len(data):
        n = rng.randint(1, MSS)
        plan.append((off, n, rng.random() < 0.08, rng.random() < 0.1, rng.randint(1, 12)))
        off += n

    def sc(c: Conn) -> None:
        base = (Conn.IRS + 1) & 0xFFFFFFFF
        batch = []
        t = 0.02
        for off, n, corrupt, ts_bump, cut in plan:
            batch.append((c.data(data[off:off + n], seq=(base + off) & 0xFFFFFFFF, bad_csum=corrupt,
                                 ts=Conn.TS + (1 if ts_bump else 0)), False))
            if len(batch) >= cut:
                c.core.receive(batch, t)
                batch = []
                t += 0.001
        c.core.receive(batch, t)
        # retransmit everything once (the corrupted ones get through now)
        for off, n, _c, _b, _x in plan:
            c.core.receive([(c.data(data[off:off + n], seq=(base + off) & 0xFFFFFFFF, ts=Conn.TS + 1), False)], t)

    on, _off = both(sc)
    assert bytes(on.sink.data) == data
    assert on.counters["TcpGroMerged"] > 0
