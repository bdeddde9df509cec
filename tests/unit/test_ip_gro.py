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
from aiotcpstack.wire.tcp import ACK, FIN, PSH, SYN, TcpHeader, TcpOptions, build_tcp, parse_tcp

from tcp_harness import FrameTx as Tx

MY_MAC = bytes.fromhex("02aa00000001")
PEER_MAC = bytes.fromhex("02bb00000002")
MY_IP = bytes([198, 18, 0, 1])
PEER_IP = bytes([198, 18, 0, 2])
MSS = 1448


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
                                vnet=False, dedicated=True, strict=True, secret=b"gro")   # same ISNs in both
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

    def receive(self, batch: list, now: float) -> None:
        """Deliver as AfPacketLink does with rx_copy=False: every frame a view into one receive
        buffer that is overwritten when the batch is over (what the stack keeps, it must copy)."""
        buf = bytearray(b"".join(f for f, _ in batch))
        mv = memoryview(buf)
        views = []
        off = 0
        for f, trusted in batch:
            views.append((mv[off:off + len(f)], trusted))
            off += len(f)
        self.core.receive(views, now)
        buf[:] = b"\xee" * len(buf)

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
        c.receive([(c.data(data[i:i + MSS]), False) for i in range(0, len(data), MSS)], 0.02)

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
        c.receive(batch, 0.02)
        c.receive([(c.data(ch, window=600, flags=ACK), False) for ch in chunks[8:]], 0.03)

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
        c.receive(batch, 0.02)
        # the peer retransmits the corrupted one
        c.receive([(c.data(chunks[4], seq=(Conn.IRS + 1 + 4 * MSS) & 0xFFFFFFFF), False)], 0.03)

    on, _off = both(sc)
    assert bytes(on.sink.data) == data
    assert on.counters["InCsumErrors"] == 1
    assert on.counters["TCPOFOQueue"] >= 1


def test_merged_batch_larger_than_the_window_falls_back_segment_by_segment() -> None:
    # a window of 16 KB: the merged 24 segments do not fit, each part is judged on its own
    data = stream(24 * MSS, 4)

    def mk(gro: bool) -> Conn:
        c = Conn(gro, rcvbuf=16384)
        c.receive([(c.data(data[i:i + MSS]), False) for i in range(0, len(data), MSS)], 0.02)
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
        c.receive(batch, 0.02)

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
                c.receive(batch, t)
                batch = []
                t += 0.001
        c.receive(batch, t)
        # retransmit everything once (the corrupted ones get through now)
        for off, n, _c, _b, _x in plan:
            c.receive([(c.data(data[off:off + n], seq=(base + off) & 0xFFFFFFFF, ts=Conn.TS + 1), False)], t)

    on, _off = both(sc)
    assert bytes(on.sink.data) == data
    assert on.counters["TcpGroMerged"] > 0


def test_data_held_while_not_reading_survives_the_link_reusing_its_buffers() -> None:
    """Not reading: the batch's data stays queued past the batch (pin_rx copies it out of the
    link's buffers); delivered intact, in order, once reading resumes."""
    data = stream(30 * MSS, 7)
    c = Conn(True)
    c.conn.set_reading(False, 0.015)
    for k in range(3):
        part = data[k * 10 * MSS:(k + 1) * 10 * MSS]
        c.receive([(c.data(part[i:i + MSS]), False) for i in range(0, len(part), MSS)], 0.02 + k / 1000)
    assert c.sink.data == b"" and c.conn.rx_unread == len(data)
    assert c.counters["TcpGroMerged"] > 0
    c.conn.set_reading(True, 0.03)
    assert bytes(c.sink.data) == data


# ---- pure ACKs (a bulk sender's batches): merged into one, as a stretch ACK that keeps the count
def _ack(c: Conn, ack: int, window: int = 512, ts: int | None = None, sack: tuple = ()) -> bytes:
    hdr = TcpHeader(80, c.lport, c.seq, ack & 0xFFFFFFFF, ACK, window,
                    TcpOptions(timestamp=(Conn.TS if ts is None else ts, 1), sack_blocks=sack or None))
    return frame(hdr)


def _sender(gro: bool, nseg: int = 10) -> Conn:
    c = Conn(gro)
    c.conn.send(stream(40 * MSS, 8), 0.012)
    sent = [h for h in out_segments(c.tx) if h.flags & ACK]
    assert len(sent) == nseg                   # the initial window (RFC 6928: 10 segments)
    c.tx.clear()
    return c


def test_advancing_pure_acks_merge_into_one_and_keep_the_slow_start_count() -> None:
    for gro in (True, False):
        c = _sender(gro)
        base = (c.iss + 1) & 0xFFFFFFFF
        seg = c.conn.mss
        cwnd0 = c.conn.cc.cwnd
        c.receive([(_ack(c, base + 2 * k * seg), False) for k in range(1, 6)], 0.02)
        assert c.conn.snd_una == (base + 10 * seg) & 0xFFFFFFFF
        assert c.counters["InSegs"] == 5
        assert c.counters["TcpAckMerged"] == (4 if gro else 0)
        grown = (c.conn.cc.cwnd - cwnd0) // c.conn.cc.mss
        if gro:
            # RFC 3465 L = 2 per ACK that arrived: 5 ACKs of 2 segments each, one slow-start step
            # of 10 segments (as 5 ACKs each followed by a transmission would give)
            assert grown == 10
        else:
            # one by one within the batch, nothing is sent between them: the flight shrinks and
            # slow start stops once cwnd >= 2 * flight (is_cwnd_limited)
            assert 0 < grown < 10
        sent = [h for h in out_segments(c.tx) if h.flags & ACK]
        assert sent and sent[0].seq == (base + 10 * seg) & 0xFFFFFFFF      # new data, in order
        assert c.conn.snd_nxt == (c.conn.snd_una + c.conn.cc.cwnd) & 0xFFFFFFFF or c.conn.snd_nxt == (
            base + len(stream(40 * MSS, 8))) & 0xFFFFFFFF


def test_duplicate_acks_are_never_merged_and_still_trigger_fast_retransmit() -> None:
    res = {}
    for gro in (True, False):
        c = _sender(gro)
        base = (c.iss + 1) & 0xFFFFFFFF
        m = c.conn.mss
        # (each duplicate SACKs one more segment: on a SACK connection only a duplicate ACK with
        # new SACK information counts, RFC 6675)
        c.receive([(_ack(c, base + m), False)] + [
            (_ack(c, base + m, sack=(((base + 2 * m) & 0xFFFFFFFF, (base + (2 + i) * m) & 0xFFFFFFFF),)), False)
            for i in range(1, 4)], 0.02)
        assert c.counters["TcpAckMerged"] == 0
        assert c.conn.ca_state != 0                    # recovery entered on the third duplicate
        rtx = [h.seq for h in out_segments(c.tx) if h.seq == (base + c.conn.mss) & 0xFFFFFFFF]
        assert rtx, "the first unacknowledged segment is retransmitted"
        res[gro] = (c.conn.snd_una, c.counters["InSegs"], [(h.seq, h.flags) for h in out_segments(c.tx)])
    assert res[True] == res[False]


def test_merged_acks_with_a_new_window_take_the_newest_through_the_full_path() -> None:
    c = _sender(True)
    base = (c.iss + 1) & 0xFFFFFFFF
    c.receive([(_ack(c, base + c.conn.mss, window=512), False), (_ack(c, base + 3 * c.conn.mss, window=700), False),
               (_ack(c, base + 4 * c.conn.mss, window=800), False)], 0.02)
    assert c.conn.snd_una == (base + 4 * c.conn.mss) & 0xFFFFFFFF
    assert c.conn.snd_wnd_field == 800
    assert c.counters["InSegs"] == 3 and c.counters["TcpAckMerged"] == 2


def test_an_older_timestamp_or_an_older_ack_is_not_merged() -> None:
    c = _sender(True)
    base = (c.iss + 1) & 0xFFFFFFFF
    c.receive([(_ack(c, base + 2 * c.conn.mss, ts=Conn.TS + 5), False),
               (_ack(c, base + 3 * c.conn.mss, ts=Conn.TS + 4), False),      # TSval older: PAWS decides alone
               (_ack(c, base + 4 * c.conn.mss, ts=Conn.TS + 6), False),
               (_ack(c, base + 1 * c.conn.mss, ts=Conn.TS + 6), False)],     # behind SND.UNA: old, alone
              0.02)
    assert c.counters["TcpAckMerged"] == 0
    assert c.counters["InSegs"] == 4
    assert c.conn.snd_una == (base + 4 * c.conn.mss) & 0xFFFFFFFF
