"""SimClock / SimNetwork: determinism, impairment rates, exact virtual timing, corruption, GSO."""
from __future__ import annotations

import pytest

from aiotcpstack.link.base import GSO_TCPV4, GSO_TCPV6
from aiotcpstack.link.sim import SimClock, SimNetwork, _ones_sum, _pseudo_sum, segment_tcp

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def frame(i: int, size: int = 100) -> bytes:
    """An Ethernet frame carrying its index (not a valid IP packet; the sim does not care)."""
    body = (i.to_bytes(4, "big") * size)[: size - 14]
    return MAC_B + MAC_A + b"\x08\x00" + body


def make(seed: int = 1, **kw):
    clock = SimClock()
    net = SimNetwork(clock, seed, record=True, **kw)
    a = net.link("a", MAC_A)
    b = net.link("b", MAC_B)
    got: list[tuple[float, bytes, bool]] = []
    b.open_reader(lambda batch: got.extend((clock.now, bytes(f), t) for f, t in batch))
    return clock, net, a, b, got


def run_traffic(seed: int, n: int = 500, **kw) -> tuple[list, dict]:
    clock, net, a, b, got = make(seed, **kw)
    for i in range(n):
        clock.call_at(i * 0.0001, a.send, frame(i))
    clock.run()
    return got, net.stats.as_dict()


IMPAIRED = dict(loss=0.05, dup=0.05, reorder=0.1, delay=0.002, jitter=0.001, rate_bps=100e6, corrupt=0.01)


# ----------------------------------------------------------------------------------- SimClock
def test_clock_orders_by_time_then_insertion() -> None:
    c = SimClock()
    out: list[str] = []
    c.call_at(2.0, out.append, "t2")
    c.call_at(1.0, out.append, "t1-first")
    c.call_at(1.0, out.append, "t1-second")
    c.call_at(0.5, lambda: c.call_at(1.0, out.append, "t1-third"))
    ev = c.call_at(1.5, out.append, "cancelled")
    ev.cancel()
    assert c.run() == 5  # incl. the scheduling lambda; not the cancelled one
    assert out == ["t1-first", "t1-second", "t1-third", "t2"]
    assert c.now == 2.0


def test_clock_until_stop_max_events() -> None:
    c = SimClock()
    ticks: list[float] = []

    def tick() -> None:
        ticks.append(c.now)
        c.call_later(0.1, tick)

    c.call_at(0.0, tick)
    c.run(until=0.35)
    assert len(ticks) == 4 and c.now == 0.35  # 0.0, 0.1, 0.2, 0.3; time advanced to `until`
    c.run(max_events=2)
    assert len(ticks) == 6
    c.run(stop=lambda: len(ticks) >= 10)
    assert len(ticks) == 10
    # nothing pending before `until`: time still advances
    c2 = SimClock(5.0)
    assert c2.run(until=7.5) == 0 and c2.now == 7.5
    # scheduling in the past runs "now", never moves time backwards
    c2.call_at(1.0, ticks.append, -1)
    c2.run()
    assert c2.now == 7.5 and ticks[-1] == -1


# ----------------------------------------------------------------------------------- determinism
def test_same_seed_same_deliveries_different_seed_differs() -> None:
    r1, s1 = run_traffic(42, **IMPAIRED)
    r2, s2 = run_traffic(42, **IMPAIRED)
    assert r1 == r2 and s1 == s2
    r3, s3 = run_traffic(43, **IMPAIRED)
    assert r3 != r1


def test_no_impairments_is_lossless_fifo() -> None:
    got, st = run_traffic(1, n=200)
    assert [f for _, f, _ in got] == [frame(i) for i in range(200)]
    assert st["lost"] == st["duplicated"] == st["reordered"] == st["corrupted"] == 0
    assert all(t is False for _, _, t in got)


# ----------------------------------------------------------------------------------- rates
@pytest.mark.parametrize("what,key", [("loss", "lost"), ("dup", "duplicated"), ("reorder", "reordered"), ("corrupt", "corrupted")])
def test_impairment_rates_within_tolerance(what: str, key: str) -> None:
    n = 20000
    p = 0.1
    got, st = run_traffic(7, n=n, delay=0.001, **{what: p})
    rate = st[key] / n
    assert abs(rate - p) < 0.01, (what, rate)  # > 4 sigma
    if what == "loss":
        assert len(got) == n - st["lost"]
    if what == "dup":
        assert len(got) == n + st["duplicated"]
    if what == "reorder":
        idx = [int.from_bytes(f[14:18], "big") for _, f, _ in got]
        assert sorted(idx) == list(range(n)) and idx != sorted(idx)
        # a frame counts as reordered when something sent after it arrived before it
        late = sum(1 for k in range(1, len(idx)) if idx[k] < idx[k - 1])
        assert late > 0


def test_jitter_without_reorder_keeps_order() -> None:
    got, _ = run_traffic(3, n=2000, delay=0.001, jitter=0.005)
    idx = [int.from_bytes(f[14:18], "big") for _, f, _ in got]
    assert idx == list(range(2000))
    times = [t for t, _, _ in got]
    assert times == sorted(times) and times[-1] > 2000 * 0.0001 + 0.001


# ----------------------------------------------------------------------------------- timing
def test_delay_and_rate_timing_exact() -> None:
    clock, net, a, b, got = make(delay=0.010, rate_bps=1_000_000)
    # 1250-byte frames at 1 Mbit/s: 10 ms serialization each, queued back to back
    for i in range(3):
        a.send(frame(i, 1250))
    clock.run()
    assert [t for t, _, _ in got] == pytest.approx([0.020, 0.030, 0.040], abs=1e-12)
    # the transmitter was idle again by t=1.0: no queueing
    clock.call_at(1.0, a.send, frame(9, 125))  # 1 ms serialization
    clock.run()
    assert got[-1][0] == pytest.approx(1.011, abs=1e-12)


def test_directions_are_independent_full_duplex() -> None:
    clock, net, a, b, got_b = make(delay=0.005, rate_bps=8_000_000)
    got_a: list[float] = []
    a.open_reader(lambda batch: got_a.extend(clock.now for _ in batch))
    a.send(frame(1, 1000))  # 1 ms serialization
    b.send(frame(2, 1000))
    clock.run()
    assert got_b[0][0] == pytest.approx(0.006) and got_a[0] == pytest.approx(0.006)


def test_corruption_flips_one_byte_after_ethernet_header() -> None:
    got, st = run_traffic(5, n=300, corrupt=1.0)
    assert st["corrupted"] == 300
    for i, (_, f, _) in enumerate(got):
        orig = frame(i)
        diff = [k for k in range(len(f)) if f[k] != orig[k]]
        assert len(diff) == 1 and diff[0] >= 14


def test_link_details() -> None:
    clock, net, a, b, got = make()
    with pytest.raises(ValueError):
        net.link("c", MAC_A)
    with pytest.raises(OSError):
        a.send(frame(0, 1515))  # larger than MTU 1500 + 14
    with pytest.raises(ValueError):
        a.send(frame(0), gso_type=GSO_TCPV4, gso_size=1000)  # vnet=False
    a.attach(object())  # no-op
    assert a.stats.tx_frames == 0
    b.close()
    a.send(frame(1))
    clock.run()
    assert got == [] and net.stats.no_reader == 1


# ----------------------------------------------------------------------------------- GSO (vnet=True)
def _tcp_super(v6: bool, payload: bytes, flags: int = 0x18) -> tuple[bytes, int]:
    src4, dst4 = bytes([198, 18, 1, 1]), bytes([198, 18, 1, 2])
    src6, dst6 = bytes.fromhex("20010002" + "00" * 11 + "01"), bytes.fromhex("20010002" + "00" * 11 + "02")
    tcp = bytearray(20)
    tcp[0:2] = (40000).to_bytes(2, "big")
    tcp[2:4] = (80).to_bytes(2, "big")
    tcp[4:8] = (0xFFFFF000).to_bytes(4, "big")  # wraps during segmentation
    tcp[12] = 5 << 4
    tcp[13] = flags
    tcp[14:16] = (65535).to_bytes(2, "big")
    if v6:
        ip = bytearray(40)
        ip[0] = 0x60
        ip[4:6] = (20 + len(payload)).to_bytes(2, "big")
        ip[6], ip[7] = 6, 64
        ip[8:24], ip[24:40] = src6, dst6
        et = b"\x86\xdd"
    else:
        ip = bytearray(20)
        ip[0] = 0x45
        ip[2:4] = (40 + len(payload)).to_bytes(2, "big")
        ip[4:6] = (7).to_bytes(2, "big")
        ip[6] = 0x40
        ip[8], ip[9] = 64, 6
        ip[12:16], ip[16:20] = src4, dst4
        et = b"\x08\x00"
    return MAC_B + MAC_A + et + bytes(ip) + bytes(tcp) + payload, 14 + len(ip)


def _valid(f: bytes, v6: bool) -> bool:
    if v6:
        src, dst, l4 = f[22:38], f[38:54], f[54:]
    else:
        if _ones_sum(f[14:34]) != 0xFFFF:
            return False
        src, dst, l4 = f[26:30], f[30:34], f[34:]
    s = _pseudo_sum(src, dst, 6, len(l4)) + _ones_sum(l4)
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


@pytest.mark.parametrize("v6", [False, True])
def test_sim_gso_segments_like_the_kernel(v6: bool) -> None:
    clock = SimClock()
    net = SimNetwork(clock, 1, volatile_rx=False)      # the test keeps the frames
    a = net.link("a", MAC_A, vnet=True)
    b = net.link("b", MAC_B, vnet=True)
    got: list = []
    b.open_reader(got.extend)
    payload = bytes(range(256)) * 40  # 10240 bytes
    sf, cs = _tcp_super(v6, payload, flags=0x80 | 0x18 | 0x01)  # CWR PSH ACK FIN
    a.send(sf, gso_type=GSO_TCPV6 if v6 else GSO_TCPV4, gso_size=1400, csum_start=cs, csum_offset=16)
    clock.run()
    assert len(got) == 8 and net.stats.gso_segments == 8
    data = b""
    for k, (f, trusted) in enumerate(got):
        assert trusted is True and _valid(f, v6)
        tcp = f[cs:]
        assert int.from_bytes(tcp[4:8], "big") == (0xFFFFF000 + 1400 * k) & 0xFFFFFFFF
        fl = tcp[13]
        assert bool(fl & 0x80) == (k == 0)  # CWR first only
        assert bool(fl & 0x09) == (k == 7)  # PSH/FIN last only
        assert fl & 0x10
        if not v6:
            assert int.from_bytes(f[18:20], "big") == 7 + k
        data += tcp[20:]
    assert data == payload
    assert segment_tcp(sf, GSO_TCPV4 if not v6 else GSO_TCPV6, 1400) == [f for f, _ in got]


def test_partial_checksum_completed_without_vnet() -> None:
    clock = SimClock()
    net = SimNetwork(clock, 1, volatile_rx=False)      # the test keeps the frames
    a = net.link("a", MAC_A)
    b = net.link("b", MAC_B)
    got: list = []
    b.open_reader(got.extend)
    sf, cs = _tcp_super(False, b"hello world!")
    f = bytearray(sf)
    f[cs + 16:cs + 18] = _pseudo_sum(f[26:30], f[30:34], 6, len(f) - cs).to_bytes(2, "big")
    a.send(bytes(f), csum_start=cs, csum_offset=16)
    clock.run()
    assert len(got) == 1 and got[0][1] is False
    l4 = got[0][0][cs:]
    s = _pseudo_sum(sf[26:30], sf[30:34], 6, len(l4)) + _ones_sum(l4)
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    assert s == 0xFFFF


def test_volatile_rx_frames_are_views_overwritten_after_the_batch() -> None:
    """The default delivery is AfPacketLink's rx_copy=False contract: a view valid during the
    callback only (so the stack's tests prove it copies what it keeps)."""
    clock = SimClock()
    net = SimNetwork(clock, 1)
    a = net.link("a", MAC_A)
    b = net.link("b", MAC_B)
    seen: list = []
    kept: list = []

    def on_frames(batch: list) -> None:
        for f, _ in batch:
            seen.append(bytes(f))
            kept.append(f)

    b.open_reader(on_frames)
    frame = MAC_B + MAC_A + b"\x08\x00" + b"payload"
    a.send(frame)
    clock.run()
    assert seen == [frame]
    assert type(kept[0]) is memoryview and bytes(kept[0]) == b"\xee" * len(frame)
    net2 = SimNetwork(SimClock(), 1, volatile_rx=False)
    assert net2.volatile_rx is False
