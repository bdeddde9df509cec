"""Route.output_ts (the one-pack transmit of the common NOP,NOP,TS segment) builds exactly the
bytes the general path (_tcp_output -> _emit: build_tcp_header, build_ipv4/6_header) builds, for
random addresses, ports, sequence numbers, flags, windows, timestamps, idents and payload sizes,
with and without GSO; and it declines (sending nothing) where the general path is needed."""
from __future__ import annotations

import random

import pytest

from aiotcpstack.ip.core import NetworkCore, Route
from aiotcpstack.ip.neighbour import REACHABLE
from aiotcpstack.mib import Counters
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.timer_wheel import TimerWheel
from aiotcpstack.wire.tcp import TcpHeader, TcpOptions

MY_MAC = bytes.fromhex("02aa00000001")
PEER_MAC = bytes.fromhex("02bb00000002")


class Conn:
    def __init__(self, mss: int) -> None:
        self.mss = mss


def make(v6: bool, rng: random.Random, vnet: bool = True):
    if v6:
        lip = bytes.fromhex("20010002") + rng.randbytes(12)
        rip = bytes.fromhex("20010002") + rng.randbytes(12)
        plen = 64
    else:
        lip = bytes([198, 18]) + rng.randbytes(2)
        rip = bytes([198, 19]) + rng.randbytes(2)
        plen = 15
    sent: list = []
    core = NetworkCore(MY_MAC, 1500, [(lip, plen)], Counters(), TcpConfig(), TimerWheel(), None, None,
                       vnet=vnet, dedicated=True, strict=True)
    core.transmit_tcp = lambda l2l3, th, payload, gso_type, gso_size: sent.append(
        (bytes(l2l3), bytes(th), bytes(payload), gso_type, gso_size))
    core.neigh.update(rip, PEER_MAC, 0.0)
    core.now = 0.5
    route = Route(core, lip, rip, core.neigh.entry(rip))
    route.local = False
    route.conn = Conn(1448 if not v6 else 1428)
    return core, route, sent


@pytest.mark.parametrize("v6", [False, True])
def test_same_bytes_as_the_general_path(v6: bool) -> None:
    rng = random.Random(7 + v6)
    for _ in range(400):
        core, route, sent = make(v6, rng)
        assert route.neigh.state is REACHABLE
        sport, dport = rng.randrange(1, 65536), rng.randrange(1, 65536)
        seq, ack = rng.getrandbits(32), rng.getrandbits(32)
        flags = rng.choice([0x10, 0x18, 0x11, 0x19, 0x14])
        win = rng.randrange(0, 65536)
        tsval, tsecr = rng.getrandbits(32), rng.getrandbits(32)
        n = rng.choice([0, 1, 100, route.conn.mss, route.conn.mss + 1, 5000, 65000 - 100])
        payload = rng.randbytes(n)
        core._ident = rng.randrange(0, 65536)
        ident0 = core._ident
        assert route.output_ts(sport, dport, seq, ack, flags, win, tsval, tsecr, payload)
        fast = sent.pop()
        core._ident = ident0
        route.output(TcpHeader(sport, dport, seq, ack, flags, win, TcpOptions(None, None, False, (), (tsval, tsecr))),
                     payload)
        assert len(sent) == 1
        assert sent.pop() == fast


def test_declines_where_the_general_path_is_needed() -> None:
    rng = random.Random(3)
    core, route, sent = make(False, rng)
    route.local = None                        # undecided (lo in shared mode)
    assert not route.output_ts(1, 2, 3, 4, 0x10, 5, 6, 7, b"")
    route.local = False
    route.neigh.state = "STALE"               # neighbour not fresh: needs resolution
    assert not route.output_ts(1, 2, 3, 4, 0x10, 5, 6, 7, b"")
    core, route, sent = make(False, rng, vnet=False)
    assert not route.output_ts(1, 2, 3, 4, 0x10, 5, 6, 7, b"x" * 5000)   # software split
    core.transmit_tcp = None
    assert not route.output_ts(1, 2, 3, 4, 0x10, 5, 6, 7, b"")
    assert sent == []


@pytest.mark.parametrize("v6", [False, True])
def test_syn_same_bytes_as_the_general_path(v6: bool) -> None:
    """Route.output_syn (the usual SYN: MSS, SACKOK+TS, NOP+WS; also an ECN-setup SYN) == the
    general path's frame."""
    rng = random.Random(11 + v6)
    for _ in range(300):
        core, route, sent = make(v6, rng)
        sport, dport, iss = rng.randrange(1, 65536), rng.randrange(1, 65536), rng.getrandbits(32)
        win, mss, ws, tsval = rng.randrange(0, 65536), rng.randrange(88, 65536), rng.randrange(0, 15), rng.getrandbits(32)
        core._ident = ident0 = rng.randrange(0, 65536)
        flags = rng.choice([0x02, 0xC2])          # SYN, or an ECN-setup SYN (ECE|CWR, RFC 3168)
        assert route.output_syn(sport, dport, iss, win, mss, ws, tsval, flags) if flags != 0x02 else \
            route.output_syn(sport, dport, iss, win, mss, ws, tsval)
        fast = sent.pop()
        core._ident = ident0
        route.output(TcpHeader(sport, dport, iss, 0, flags, win, TcpOptions(mss, ws, True, (), (tsval, 0))), b"")
        assert sent.pop() == fast and not sent
    route.local = None
    assert not route.output_syn(1, 2, 3, 4, 1460, 7, 5) and not sent


@pytest.mark.parametrize("v6", [False, True])
def test_burst_same_frames_as_one_by_one(v6: bool) -> None:
    """output_ts_burst: every frame of a burst (payloads given as several parts, FIN-only
    segments, one-segment and GSO frames) is the frame output_ts builds for that segment alone,
    with the same IP idents in order."""
    rng = random.Random(11 + v6)
    for _ in range(150):
        core, route, sent = make(v6, rng)
        burst: list = []
        core.transmit_tcp_burst = lambda cs, hl, gt, frames: burst.append((cs, hl, gt, list(frames)))
        sport, dport = rng.randrange(1, 65536), rng.randrange(1, 65536)
        ack, win = rng.getrandbits(32), rng.randrange(0, 65536)
        tsval, tsecr = rng.getrandbits(32), rng.getrandbits(32)
        segs = []
        for _ in range(rng.randrange(1, 6)):
            n = rng.choice([0, 1, route.conn.mss, route.conn.mss + 1, 30000, 65000 - 100])
            data = rng.randbytes(n)
            cuts = sorted(rng.sample(range(1, n), min(n - 1, rng.randrange(0, 3)))) if n > 1 else []
            parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, n])] if n else []
            segs.append((rng.getrandbits(32), rng.choice([0x10, 0x18, 0x11, 0x19]), parts, n))
        core._ident = ident0 = rng.randrange(0, 65536)
        assert route.output_ts_burst(sport, dport, ack, win, tsval, tsecr, segs)
        assert len(burst) == 1 and not sent
        cs, hl, gt, frames = burst.pop()
        ident1 = core._ident
        core._ident = ident0
        for (seq, flags, parts, n), (headers, fparts, gso_size) in zip(segs, frames, strict=True):
            assert route.output_ts(sport, dport, seq, ack, flags, win, tsval, tsecr, b"".join(parts))
            l2l3, th, payload, one_gt, one_gso = sent.pop()
            assert headers == l2l3 + th and cs == len(l2l3) and hl == cs + len(th)
            assert b"".join(fparts) == payload and gso_size == one_gso
            assert one_gt == (gt if gso_size else 0)
        assert core._ident == ident1


def test_burst_declines_where_output_ts_would() -> None:
    rng = random.Random(5)
    core, route, sent = make(False, rng)
    assert not route.output_ts_burst(1, 2, 3, 4, 5, 6, [(7, 0x10, [b"x"], 1)])   # no burst link
    core.transmit_tcp_burst = lambda *a: sent.append(a)
    route.local = None
    assert not route.output_ts_burst(1, 2, 3, 4, 5, 6, [(7, 0x10, [b"x"], 1)])
    route.local = False
    route.neigh.state = "STALE"
    assert not route.output_ts_burst(1, 2, 3, 4, 5, 6, [(7, 0x10, [b"x"], 1)])
    core, route, sent = make(False, rng, vnet=False)
    core.transmit_tcp_burst = lambda *a: sent.append(a)
    assert not route.output_ts_burst(1, 2, 3, 4, 5, 6, [(7, 0x10, [b"x"], 1)])   # no GSO link
    assert sent == []
