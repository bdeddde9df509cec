"""Robustness, unit tier: property-based fuzzing of the input path (hypothesis) with live
connections and listeners (tests/sim/fuzz_harness.py), and the resource bounds: neighbour table
cap (gc_thresh3 + forced GC), out-of-order queue pruning (tcp_prune_ofo_queue), max_connections.
The long coverage-guided run is fuzz/run_fuzz.py (docs/robustness.md)."""
from __future__ import annotations

import errno
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiotcpstack.ip.neighbour import FAILED, NeighbourTable
from aiotcpstack.mib import Counters
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.receive_buffer import OFO_SEG_OVERHEAD, OutOfOrderQueue
from tests.sim.fuzz_harness import FuzzWorld
from tests.sim.harness import IP_B, Peer, make_pair

_WORLD: dict = {}


def _world() -> FuzzWorld:
    w = _WORLD.get("w")
    if w is None or w.fed >= 3000:
        if w is not None:
            w.finish()                      # the previous world's transfers end byte-exact
        w = _WORLD["w"] = FuzzWorld(seed=len(_WORLD) + 11)
    return w


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.binary(min_size=1, max_size=96))
def test_fuzz_receive_never_raises_and_counts_every_drop(data: bytes) -> None:
    w = _world()
    frame, trusted = w.mutate(data, random.Random(data))
    w.feed(frame, trusted)                 # asserts: no exception, StackErrors 0, accounted
    if w.fed % 20 == 0:
        w.step()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.binary(min_size=0, max_size=1600), st.booleans())
def test_fuzz_raw_bytes(data: bytes, trusted: bool) -> None:
    """Not derived from the corpus at all: arbitrary bytes (no liveness invariant applies: a
    trusted raw frame may be anything); only 'never raises, always accounted'."""
    w = _WORLD.get("raw") or _WORLD.setdefault("raw", FuzzWorld(seed=99))
    w.feed(data, False)


def test_fuzz_world_transfers_finish_byte_exact() -> None:
    w = _world()
    rng = random.Random(3)
    for i in range(2000):
        frame, trusted = w.mutate(rng.randbytes(8), rng)
        w.feed(frame, trusted)
        if i % 20 == 0:
            w.step()
    w.finish()
    _WORLD.pop("w", None)


# ------------------------------------------------------------------ neighbour table bound

def test_neighbour_table_capped_under_spoofed_flood() -> None:
    c = Counters()
    solicited = []
    t = NeighbourTable(c, lambda ip, mac: solicited.append(ip), max_entries=256)
    for i in range(100_000):
        ip = bytes([198, 18, (i >> 8) & 0xFF, i & 0xFF])
        e = t.entry(ip)
        t.resolve(e, i * 1e-4, ("pkt", i))
        assert len(t.entries) <= 256
    assert c["NeighForcedGcRuns"] > 0 and c["NeighTableEvictions"] > 90_000
    assert sum(len(e.queue) for e in t.entries.values()) <= 256 * t.queue_len
    assert c["NeighUnresolvedDiscards"] > 0


def test_neighbour_gc_prefers_failed_and_evicted_route_entry_comes_back() -> None:
    c = Counters()
    t = NeighbourTable(c, lambda ip, mac: None, max_entries=4, gc_batch=1)
    live = t.entry(b"\xc6\x12\x00\x01")
    t.update(live.ip, b"\x02" * 6, 0.0)
    bad = t.entry(b"\xc6\x12\x00\x02")
    bad.state = FAILED
    t.entry(b"\xc6\x12\x00\x03")
    t.entry(b"\xc6\x12\x00\x04")
    t.entry(b"\xc6\x12\x00\x05")          # full: the FAILED one goes first
    assert bad.ip not in t.entries and live.ip in t.entries
    for i in range(6, 20):                # now the live one is evicted eventually
        t.entry(bytes([198, 18, 0, i]))
    assert len(t.entries) <= 4
    # a route still holding the evicted entry: resolve() puts it back (and it stays usable)
    assert t.resolve(live, 1.0) == b"\x02" * 6
    assert t.entries[live.ip] is live
    assert t.update(live.ip, b"\x02" * 6, 2.0) == [] and live.confirmed == 2.0


# ------------------------------------------------------------------ OFO queue prune

class Idle:
    """A ConnectionHandler that never sends nor closes."""

    def tcp_established(self) -> None: ...
    def tcp_data(self, data: bytes) -> None: ...
    def tcp_eof(self) -> None: ...
    def tcp_send_space(self) -> None: ...
    def tcp_closed(self, exc) -> None: ...


def test_ofo_prune_after_drops_highest_first_never_before_incoming() -> None:
    q = OutOfOrderQueue()
    for k in range(10):
        q.insert(1000 + 10 * k, b"x", 0)
    before = q.mem
    freed = q.prune_after(1055, 0, 2 * (1 + OFO_SEG_OVERHEAD))
    assert freed == 2 * (1 + OFO_SEG_OVERHEAD) and q.mem == before - freed
    assert [s for s, _e, _b in q.segs] == [1000 + 10 * k for k in range(8)]
    assert q.prune_after(1100, 0, 10**9) == 0          # nothing after 1100


def test_ofo_one_byte_flood_is_bounded_by_rcvbuf_and_counted() -> None:
    from tests.unit.tcp_harness import __name__ as _h  # noqa: F401 (the unit harness exists)
    clock, net, a, b = make_pair(1, TcpConfig(rcvbuf=65536, moderate_rcvbuf=False),
                                 TcpConfig(rcvbuf=65536, moderate_rcvbuf=False))
    got: list = []
    b.core.listen(IP_B, 5000, 8, lambda conn: (got.append(conn), Idle())[1])
    cl = Peer(a, b"", 65536)
    cl.pump = lambda: None                 # never half-close
    cl.conn = a.core.connect(IP_B, 5000, cl, clock.now)
    clock.run(until=1.0)
    conn = got[0]
    assert conn.state == "ESTABLISHED"
    from aiotcpstack.wire.tcp import ACK, TcpHeader
    nxt = conn.rcv_nxt
    for k in range(1, 30000):          # 1-byte segments at every other offset: all out of order
        hdr = TcpHeader(cl.conn.local[1], 5000, (nxt + 2 * k) & 0xFFFFFFFF, conn.snd_nxt, ACK, 512)
        conn.on_segment(hdr, b"z", clock.now)
        assert conn.ofo.mem <= conn.rcvbuf + (conn.rcvbuf >> 2) + conn.mss + OFO_SEG_OVERHEAD
    c = b.counters
    assert c["PruneCalled"] > 0 and c["TCPOFODrop"] > 0 and c["RcvPruned"] > 0
    assert len(conn.ofo) < 65536 // 100


# ------------------------------------------------------------------ max_connections

def test_max_connections_enobufs_on_connect_and_drop_on_accept() -> None:
    cfg = TcpConfig(max_connections=3)
    clock, net, a, b = make_pair(2, cfg, cfg)
    accepted: list = []
    b.core.listen(IP_B, 5000, 16, lambda conn: (accepted.append(conn), Peer(b, b"", 65536))[1])
    peers = []
    for _ in range(3):
        p = Peer(a, b"", 65536)
        p.conn = a.core.connect(IP_B, 5000, p, clock.now)
        peers.append(p)
    with pytest.raises(OSError) as ei:
        a.core.connect(IP_B, 5000, Peer(a, b"", 65536), clock.now)
    assert ei.value.errno == errno.ENOBUFS
    clock.run(until=2.0)
    assert len(accepted) == 3
    # B is at its cap too: a 4th handshake (from a fresh client stack) is dropped, counted
    clock2, net2, a2, b2 = make_pair(3, TcpConfig(), TcpConfig(max_connections=1))
    acc2: list = []
    b2.core.listen(IP_B, 5000, 16, lambda conn: (acc2.append(conn), Peer(b2, b"", 65536))[1])
    ps = []
    for _ in range(2):
        p = Peer(a2, b"", 65536)
        p.conn = a2.core.connect(IP_B, 5000, p, clock2.now)
        ps.append(p)
    clock2.run(until=3.0)
    assert len(acc2) == 1
    assert b2.counters["TCPMaxConnDrop"] >= 1 and b2.counters["ListenDrops"] >= 1
    assert len(b2.core.demux.conns) == 1
