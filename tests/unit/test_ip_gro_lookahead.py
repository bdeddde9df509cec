"""GRO's lookahead (NetworkCore._rx_frames, ``gro_lookahead``): a frame whose next frame in the
batch cannot join a hold (another flow, data after a pure ACK or the reverse, the batch's last)
starts none and takes the direct header prediction.  The same random batches -- segments of four
connections interleaved, with runs of data and of pure ACKs of one flow, replies written in the
delivery callback, a FIN now and then -- run on two NetworkCores at frame level, one with the
lookahead and one without: every frame sent, counter (InSegs, TcpGroMerged, TcpAckMerged, ...),
delivered byte and connection variable must be identical after every batch, and the lookahead
must have started fewer holds (fails without it) while still merging the runs."""
from __future__ import annotations

import random

import pytest

from aiotcpstack.ip import core as core_mod
from aiotcpstack.ip.core import NetworkCore
from aiotcpstack.mib import Counters
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.state import ESTABLISHED
from aiotcpstack.tcp.timer_wheel import TimerWheel
from aiotcpstack.wire.tcp import ACK, FIN, PSH, SYN, TcpHeader, TcpOptions, parse_tcp

from tcp_harness import Recorder
from test_tcp_transmit_burst import MY_IP, MY_MAC, PEER_IP, PEER_MAC, PEER_ISS, frame

FLOWS = 4


class Multi:
    """A core with ``FLOWS`` accepted connections (peer ports 40000..), each with a Recorder
    whose connection answers odd-sized data with a short reply from the delivery callback."""

    def __init__(self, lookahead: bool) -> None:
        self.lookahead = lookahead
        self.sent: list = []
        self.core = core = NetworkCore(MY_MAC, 1500, [(MY_IP, 24)], Counters(), TcpConfig(), TimerWheel(),
                                       self._transmit, None, vnet=True, dedicated=True, strict=True,
                                       secret=b"lookahead")       # one key: both cores pick the same ISNs
        core.transmit_tcp = self._send_tcp
        core.neigh.update(PEER_IP, PEER_MAC, 0.0)
        self.recs: list[Recorder] = []
        accepted: list = []

        def accept(c):
            rec = Recorder()
            rec.on_data = lambda data, c=c: (c.send(b"r" * (len(data) % 50 + 1), core.now, False)
                                             if len(data) % 2 else None)
            self.recs.append(rec)
            accepted.append(c)
            return rec

        core.listen(None, 80, 8, accept)
        syn_opts = TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(100, 0))
        core.now = 0.0
        for i in range(FLOWS):
            core.receive([(frame(TcpHeader(40000 + i, 80, PEER_ISS - 1, 0, SYN, 65535, syn_opts)), False)], 0.0)
            synack = parse_tcp(self.sent[-1][34:])[0]
            core.receive([(frame(TcpHeader(40000 + i, 80, PEER_ISS, synack.seq + 1, ACK, 65535,
                                           TcpOptions(timestamp=(101, synack.options.timestamp[0])))), False)], 0.01)
        self.conns = accepted
        self.sent.clear()

    def _transmit(self, frame, gso_type=0, gso_size=0, csum_start=0, csum_offset=0):
        self.sent.append(bytes(frame))

    def _send_tcp(self, l2l3, th, payload, gso_type=0, gso_size=0):
        self.sent.append(b"".join((l2l3, th, payload)))

    def receive(self, batch: list, now: float) -> None:
        saved = NetworkCore.gro_lookahead
        NetworkCore.gro_lookahead = self.lookahead
        try:
            self.core.receive([(f, False) for f in batch], now)
        finally:
            NetworkCore.gro_lookahead = saved

    def state(self) -> tuple:
        out = list(self.sent)
        self.sent.clear()
        conns = tuple((c.state, c.snd_nxt, c.snd_una, c.rcv_nxt, c.rcv_adv, c.rcv_wup, c.last_ack_sent,
                       c.ack_pending, c.quick, c.ts_recent, c.snd_wl1, c.snd_wl2, c.cc.cwnd if c.cc else None,
                       c._t_rtx.expires if c._t_rtx.pending else None,
                       c._t_dack.expires if c._t_dack.pending else None) for c in self.conns)
        return (out, dict(self.core.counters), conns, tuple((bytes(r.data), r.names()) for r in self.recs))


def make_batch(m: Multi, rng: random.Random, now: float) -> list:
    """Frames of the four flows, interleaved, with same-flow runs of data or of pure ACKs; built
    from ``m``'s connection state (both cores agree), sequence numbers advanced within the batch."""
    seqs = [c.rcv_nxt for c in m.conns]
    acks = [c.snd_una for c in m.conns]
    out = []
    for _ in range(rng.randint(1, 10)):
        i = rng.randrange(FLOWS)
        c = m.conns[i]
        if c.state is not ESTABLISHED:
            continue
        tsval = int(now * 1000) + 200
        opts = TcpOptions(timestamp=(tsval, int(now * 1000) + c.ts_offset))
        kind = rng.choice(["data", "data", "run", "ack", "acks", "fin"] if rng.random() < 0.05 else
                          ["data", "data", "run", "ack", "acks"])
        if kind in ("ack", "acks"):
            # pure ACKs: of what the core sent (new data acknowledged: may be held), one or two
            for _ in range(1 if kind == "ack" else 2):
                if acks[i] != c.snd_nxt:
                    acks[i] = (acks[i] + rng.randint(1, (c.snd_nxt - acks[i]) & 0xFFFFFFFF)) & 0xFFFFFFFF
                out.append(frame(TcpHeader(40000 + i, 80, seqs[i], acks[i], ACK, 65535, opts)))
            continue
        for _ in range(3 if kind == "run" else 1):
            payload = rng.randbytes(rng.choice([1, 2, 40, 1448]))
            flags = ACK | PSH | (FIN if kind == "fin" else 0)
            out.append(frame(TcpHeader(40000 + i, 80, seqs[i], acks[i], flags, 65535, opts), payload))
            seqs[i] = (seqs[i] + len(payload) + (kind == "fin")) & 0xFFFFFFFF
    return out


@pytest.mark.parametrize("seed", range(5))
def test_lookahead_changes_nothing_but_the_holds(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    holds = {True: 0, False: 0}
    real = core_mod.GroHold
    which = [True]

    def counted(*args, **kwargs):
        holds[which[0]] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(core_mod, "GroHold", counted)
    rng = random.Random(seed)
    a, b = Multi(True), Multi(False)
    t = 0.02
    for step in range(120):
        t += rng.choice([0.0002, 0.001, 0.05])
        batch = make_batch(a, rng, t)
        for m in (a, b):
            which[0] = m.lookahead
            m.receive(batch, t)
        if rng.random() < 0.2:
            t += 0.3
            for m in (a, b):
                m.core.wheel.advance(t)       # delayed ACK / RTO / TLP
        assert a.state() == b.state(), (seed, step)
    counters = a.core.counters
    assert holds[True] < holds[False]                   # holds were skipped (fails without it)
    assert counters["TcpGroMerged"] > 0 and counters["TcpAckMerged"] > 0    # runs still merge


def test_a_pure_ack_followed_by_data_of_its_flow_is_not_held(monkeypatch: pytest.MonkeyPatch) -> None:
    """The request/response shape (the peer's ACK of a request, then its response, then another
    connection's segment): no hold at all with the lookahead, one per segment without it."""
    holds = []
    real = core_mod.GroHold
    monkeypatch.setattr(core_mod, "GroHold", lambda *a, **k: holds.append(a[0]) or real(*a, **k))
    for lookahead, expect in ((True, 0), (False, 3)):
        holds.clear()
        m = Multi(lookahead)
        for i in (0, 1):
            m.conns[i].send(b"REQ", 0.02, False)
        m.sent.clear()
        opts = TcpOptions(timestamp=(300, 20 + m.conns[0].ts_offset))
        c0, c1 = m.conns[0], m.conns[1]
        m.receive([frame(TcpHeader(40000, 80, c0.rcv_nxt, c0.snd_nxt, ACK, 65535, opts)),
                   frame(TcpHeader(40000, 80, c0.rcv_nxt, c0.snd_nxt, ACK | PSH, 65535, opts), b"RSP0"),
                   frame(TcpHeader(40001, 80, c1.rcv_nxt, c1.snd_nxt, ACK | PSH, 65535, opts), b"RSP1")], 0.03)
        assert len(holds) == expect
        assert bytes(m.recs[0].data) == b"RSP0" and bytes(m.recs[1].data) == b"RSP1"
        assert c0.snd_una == c0.snd_nxt and c1.snd_una == c1.snd_nxt
