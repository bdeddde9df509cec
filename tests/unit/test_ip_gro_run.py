"""Software GRO's run check (``NetworkCore._rx_frames`` + ``gro.raw_key``): the frames of a data run
are extended inline, with both checksums verified from the run's constant sums, and everything
that is not exactly the next segment of the run goes through the general path.

Every scenario runs with GRO on and off over the same frames (views into a buffer that is
overwritten after each batch, as test_ip_gro's ``Conn.receive`` does); the delivered stream,
RCV.NXT, TS.Recent, the segment/IP/error counters and every segment sent (flags, SEQ, ACK, TSecr)
must agree."""
from __future__ import annotations

import random
import struct

from aiotcpstack.ip.gro import RAW_LEN, raw_key
from aiotcpstack.wire import arp as warp
from aiotcpstack.wire.checksum import internet_checksum
from aiotcpstack.wire.ethernet import BROADCAST, ETH_P_ARP, build_ethernet
from aiotcpstack.wire.tcp import ACK, PSH, RST, TcpHeader, TcpOptions

from test_ip_gro import MSS, PEER_IP, PEER_MAC, Conn, frame, out_segments, stream

COUNTED = ("InSegs", "TCPHPHits", "InCsumErrors", "InErrs", "TCPOFOQueue", "IpInReceives", "IpInHdrErrors",
           "LinkInFrames", "OutRsts", "TCPDSACKOldSent", "TCPPAWSEstab", "PAWSEstab")


def sent(c: Conn) -> list[tuple]:
    return [(h.flags, h.seq, h.ack, h.options.timestamp and h.options.timestamp[1]) for h in out_segments(c.tx)]


def both(scenario, rcvbuf: int = 1 << 20) -> tuple[Conn, Conn]:
    on, off = Conn(True, rcvbuf), Conn(False, rcvbuf)
    scenario(on)
    scenario(off)
    assert bytes(on.sink.data) == bytes(off.sink.data)
    assert on.conn.rcv_nxt == off.conn.rcv_nxt
    assert on.conn.ts_recent == off.conn.ts_recent
    for k in COUNTED:
        assert on.counters[k] == off.counters[k], k
    assert sent(on) == sent(off)
    return on, off


def with_ip(f: bytes, **fields: int) -> bytes:
    """``f`` with IPv4 header bytes changed (offset -> value) and the header checksum redone."""
    b = bytearray(f)
    for off, v in fields.items():
        b[int(off[1:])] = v
    b[24:26] = b"\0\0"
    b[24:26] = struct.pack("!H", internet_checksum(bytes(b[14:34])))
    return bytes(b)


def corrupt_ip(f: bytes) -> bytes:
    b = bytearray(f)
    b[25] ^= 0x40
    return bytes(b)


def test_raw_key_reads_only_the_one_layout() -> None:
    c = Conn(True)
    f = c.data(b"x" * 100)
    key = raw_key(f)
    assert key is not None and len(f) > RAW_LEN
    assert raw_key(f[:RAW_LEN - 1]) is None                       # too short
    no_ts = frame(TcpHeader(80, c.lport, c.seq, 1, ACK, 512, TcpOptions()), b"y" * 10)
    assert raw_key(no_ts) is None                                  # data offset 5
    assert raw_key(with_ip(f, b14=0x46)) is None                   # IHL 6
    # PSH is the only flag the key allows to differ: the two variants and their sums differ by it
    _e16, _w4, _a12, d8, d8p, _o14, _ts, _ip, kt, ktp = key
    assert d8[5] ^ d8p[5] == PSH and d8[:5] == d8p[:5] and abs(kt - ktp) == PSH


def general_path_frames(c: Conn) -> list:
    """Counts the frames that take the general path (``NetworkCore._rx_frame``)."""
    seen: list = []
    real = c.core._rx_frame

    def spy(frame, *args):
        seen.append(frame)
        return real(frame, *args)

    c.core._rx_frame = spy
    return seen


def test_psh_and_plain_segments_are_one_run_checked_inline() -> None:
    data = stream(40 * MSS, 21)
    general: dict[bool, list] = {}

    def sc(c: Conn) -> None:
        general[c.core.gro] = general_path_frames(c)
        c.receive([(c.data(data[i:i + MSS], flags=ACK | PSH if (i // MSS) % 3 == 2 else ACK), False)
                   for i in range(0, len(data), MSS)], 0.02)

    on, off = both(sc)
    assert bytes(on.sink.data) == data and on.sink.calls == 1
    assert on.counters["TcpGroMerged"] == 39 and on.counters["IpInReceives"] == 40
    assert len(general[True]) == 1 and len(general[False]) == 40       # only the run's first frame


def test_a_newer_tsval_continues_the_run() -> None:
    data = stream(30 * MSS, 22)
    general: dict[bool, list] = {}

    def sc(c: Conn) -> None:
        general[c.core.gro] = general_path_frames(c)
        c.receive([(c.data(data[i:i + MSS], ts=Conn.TS + i // (7 * MSS)), False) for i in range(0, len(data), MSS)],
                  0.02)
        c.receive([(c.data(b"z" * 10, ts=Conn.TS + 9), False)], 0.03)    # ACKed: TS.Recent is the first part's

    on, _off = both(sc)
    assert on.counters["TcpGroMerged"] == 29
    assert len(general[True]) == 2                   # the run's first frame, the lone last one
    assert bytes(on.sink.data) == data + b"z" * 10


def test_the_fallback_gives_each_part_its_own_tsval() -> None:
    # a 16 KB window: the merged run does not fit, each part goes through the full path with the
    # TSval it came with (TS.Recent and the TSecr of the ACKs show which one TCP saw)
    data = stream(24 * MSS, 23)

    def sc(c: Conn) -> None:
        c.receive([(c.data(data[i:i + MSS], ts=Conn.TS + 3 * (i // (4 * MSS))), False)
                   for i in range(0, len(data), MSS)], 0.02)
        c.receive([(c.data(b"", flags=ACK, ts=Conn.TS + 40), False)], 0.03)

    on, off = both(sc, rcvbuf=16384)
    assert 0 < len(on.sink.data) < len(data)


def test_an_older_tsval_breaks_the_run() -> None:
    data = stream(12 * MSS, 24)

    def sc(c: Conn) -> None:
        ts = [Conn.TS + 5] * 6 + [Conn.TS + 4] + [Conn.TS + 5] * 5      # PAWS drops the 7th
        c.receive([(c.data(data[i * MSS:(i + 1) * MSS], ts=ts[i]), False) for i in range(12)], 0.02)

    on, _off = both(sc)
    assert on.counters["PAWSEstab"] + on.counters["TCPPAWSEstab"] >= 1


def _perturbed(c: Conn, data: bytes, kind: str, at: int, n: int = 20) -> list:
    """A run of ``n`` segments of ``data`` with segment ``at`` changed the ``kind`` way."""
    base = c.seq
    batch = []
    for i in range(n):
        seq = (base + i * MSS) & 0xFFFFFFFF
        chunk = data[i * MSS:(i + 1) * MSS]
        f = c.data(chunk, seq=seq)
        if i == at:
            if kind == "bad_ip":
                f = corrupt_ip(f)
            elif kind == "bad_tcp":
                f = c.data(chunk, seq=seq, bad_csum=True)
            elif kind == "truncated":
                f = f[:-10]
            elif kind == "padded":
                f = f + b"\xab" * 7
            elif kind == "ttl":
                f = with_ip(f, b22=17)
            elif kind == "tos":
                f = with_ip(f, b15=0x10)
            elif kind == "window":
                f = c.data(chunk, seq=seq, window=700)
            elif kind == "retransmit":
                f = c.data(data[:MSS], seq=base)
            elif kind == "gap":
                continue
            elif kind == "other_port":
                batch.append((frame(TcpHeader(81, c.lport, 1, 1, ACK, 512, TcpOptions(timestamp=(1, 1))), b"q"), False))
            elif kind == "arp":
                batch.append((build_ethernet(BROADCAST, PEER_MAC, ETH_P_ARP)
                              + warp.build_arp(warp.arp_request(PEER_MAC, PEER_IP, bytes([198, 18, 0, 1]))), False))
            elif kind == "pure_ack":
                batch.append((c.data(b"", seq=seq, flags=ACK), False))
            elif kind == "odd":
                f = c.data(chunk[:-1], seq=seq)
            else:
                raise AssertionError(kind)
        batch.append((f, False))
    c.seq = (base + n * MSS) & 0xFFFFFFFF
    return batch


KINDS = ("bad_ip", "bad_tcp", "truncated", "padded", "ttl", "tos", "window", "retransmit", "gap", "other_port",
         "arp", "pure_ack", "odd")


def test_anything_but_the_next_segment_goes_through_the_general_path() -> None:
    data = stream(20 * MSS, 25)
    for kind in KINDS:
        merged = 0
        for at in (1, 7, 19):
            def sc(c: Conn) -> None:
                c.receive(_perturbed(c, data, kind, at), 0.02)
                # the peer retransmits everything once (what was dropped gets through now)
                c.receive([(c.data(data[i * MSS:(i + 1) * MSS], seq=(Conn.IRS + 1 + i * MSS) & 0xFFFFFFFF), False)
                           for i in range(20)], 0.03)

            on, _off = both(sc)
            assert bytes(on.sink.data) == data, (kind, at)
            merged += on.counters["TcpGroMerged"]
        assert merged > 0, kind


def test_trusted_frames_skip_both_checksums_in_both_paths() -> None:
    data = stream(10 * MSS, 26)

    def sc(c: Conn) -> None:
        batch = []
        for i in range(10):
            f = bytearray(c.data(data[i * MSS:(i + 1) * MSS]))
            if i % 3 == 1:
                f[50] ^= 0x11                      # the TCP checksum field (as a partial one would be)
            batch.append((corrupt_ip(bytes(f)) if i == 5 else bytes(f), True))
        c.receive(batch, 0.02)

    on, _off = both(sc)
    assert bytes(on.sink.data) == data and on.counters["InCsumErrors"] == 0
    assert on.counters["TcpGroMerged"] == 9


def test_bytes_frames_are_handled_like_views() -> None:
    data = stream(16 * MSS, 27)
    res = []
    for views in (True, False):
        c = Conn(True)
        batch = [(c.data(data[i * MSS:(i + 1) * MSS], bad_csum=(i == 9)), False) for i in range(16)]
        if views:
            c.receive(batch, 0.02)
        else:
            c.core.receive(batch, 0.02)
        res.append((bytes(c.sink.data), c.conn.rcv_nxt, {k: c.counters[k] for k in COUNTED + ("TcpGroMerged",)},
                    sent(c)))
    assert res[0] == res[1]
    assert res[0][2]["InCsumErrors"] == 1 and res[0][2]["TcpGroMerged"] == 8


def test_random_runs_match_gro_off() -> None:
    nseg = 600
    data = stream(nseg * MSS, 28)

    general: dict[bool, list] = {}

    def sc(c: Conn) -> None:
        general[c.core.gro] = general_path_frames(c)
        r = random.Random(5)
        base = (Conn.IRS + 1) & 0xFFFFFFFF
        t = 0.02
        ts = ts_max = Conn.TS
        i = 0
        again: list[int] = []             # dropped segments, sent again at the start of the next batch
        while i < nseg or again:
            batch = [(c.data(data[k * MSS:(k + 1) * MSS], seq=(base + k * MSS) & 0xFFFFFFFF, ts=ts_max), False)
                     for k in again]
            again = []
            for _ in range(r.randint(1, 40)):
                if i >= nseg:
                    break
                seq = (base + i * MSS) & 0xFFFFFFFF
                chunk = data[i * MSS:(i + 1) * MSS]
                if r.random() < 0.05:
                    ts += r.choice((1, 1, 2, -1))
                    ts_max = max(ts, ts_max)
                f = c.data(chunk, seq=seq, ts=ts, flags=r.choice((ACK, ACK, ACK | PSH)))
                x = r.random()
                if ts < ts_max:
                    again.append(i)                              # PAWS may drop it
                if x < 0.01:
                    f = corrupt_ip(f)
                    again.append(i)
                elif x < 0.02:
                    f = c.data(chunk, seq=seq, ts=ts, bad_csum=True)
                    again.append(i)
                elif x < 0.03:
                    f = with_ip(f, b22=9)
                elif x < 0.04:
                    f = f + b"\0" * r.randint(1, 9)              # Ethernet padding
                elif x < 0.05:
                    again.append(i)                              # lost
                    i += 1
                    continue
                elif x < 0.06:
                    batch.append((c.data(data[:MSS], seq=base, ts=ts), False))    # an old retransmission
                batch.append((f, False))
                i += 1
            c.receive(batch, t)
            t += 0.001
        for k in range(0, nseg, 20):        # what PAWS dropped (TSval went back): all once more
            c.receive([(c.data(data[j * MSS:(j + 1) * MSS], seq=(base + j * MSS) & 0xFFFFFFFF, ts=ts + 50), False)
                       for j in range(k, min(k + 20, nseg))], t)

    on, _off = both(sc)
    assert bytes(on.sink.data) == data
    assert on.counters["TcpGroMerged"] > nseg // 4
    assert len(general[True]) < len(general[False]) // 2
