"""A lone frame (a batch of one, as request/response traffic drains) skips the frame loop
(NetworkCore.receive -> _rx_frame without _rx_frames): the same random scenario -- data
segments answered from the delivery callback (a reply written in ``tcp_data``), pure ACKs, bad
checksums, frames for another MAC or address, ARP, frames with timestamps that fail PAWS, and
batches of several frames (GRO runs) in between -- runs on two NetworkCores at frame level, one
with the shortcut and one without, and every frame sent, counter, delivered byte and connection
variable must be identical at every step."""
from __future__ import annotations

import random

import pytest

from aiotcpstack.ip.core import NetworkCore
from aiotcpstack.wire.ethernet import ETH_P_ARP, build_ethernet
from aiotcpstack.wire.tcp import ACK, PSH, TcpHeader, TcpOptions

from test_tcp_transmit_burst import MY_MAC, PEER_MAC, Side, frame


def make_frames(s: Side, rng: random.Random, now: float, kind: str) -> list:
    """Frames of one kind for ``s``'s connection, built from its own state (both sides agree)."""
    c = s.conn
    tsval = int(now * 1000) + 200
    tsecr = int(now * 1000) + c.ts_offset
    if kind == "stale":
        tsval -= 100_000                   # older than ts_recent: PAWS, the slow path
    opts = TcpOptions(timestamp=(tsval, tsecr))
    if kind in ("data", "stale", "bad", "run"):
        n = 3 if kind == "run" else 1
        out = []
        seq = c.rcv_nxt
        for _ in range(n):
            payload = rng.randbytes(rng.choice([1, 40, 1448]))
            f = bytearray(frame(TcpHeader(40000, 80, seq, c.snd_nxt, ACK | PSH, 65535, opts), payload))
            seq += len(payload)
            if kind == "bad":
                f[-1] ^= 0xFF                  # a TCP checksum error
            out.append(bytes(f))
        return out
    if kind == "ack":
        return [frame(TcpHeader(40000, 80, c.rcv_nxt, c.snd_nxt, ACK, 65535, opts))]
    if kind == "other_mac":
        f = frame(TcpHeader(40000, 80, c.rcv_nxt, c.snd_nxt, ACK, 65535, opts), b"x")
        return [bytes.fromhex("02cc00000003") + f[6:]]
    if kind == "arp":
        body = bytes.fromhex("0001080006040001") + PEER_MAC + bytes([198, 18, 0, 2]) + bytes(6) + bytes([198, 18, 0, 1])
        return [build_ethernet(MY_MAC, PEER_MAC, ETH_P_ARP) + body]
    raise AssertionError(kind)


def snapshot(s: Side) -> tuple:
    c = s.conn
    return (s.state(), bytes(s.rec.data), len(s.rec.events), c.ts_recent, c.snd_wl1, c.snd_wl2, c.rcv_mss,
            c.ato, c._t_dack.expires if c._t_dack.pending else None)


@pytest.mark.parametrize("seed", range(6))
def test_lone_frame_shortcut_does_what_the_frame_loop_does(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    loops = [0]
    real = NetworkCore._rx_frames

    def counted(self: NetworkCore, *args) -> None:
        loops[0] += 1
        real(self, *args)

    monkeypatch.setattr(NetworkCore, "_rx_frames", counted)
    rng = random.Random(seed)
    a, b = Side(True), Side(True)
    for s in (a, b):
        s.core.gro = True
        # request/response: a reply written in the delivery callback, sometimes
        s.rec.on_data = (lambda s: lambda data: s.conn.send(b"r" * len(data[:100]), s.core.now, False)
                         if len(data) % 2 else None)(s)
    t = 0.02
    lone = 0
    for step in range(150):
        t += rng.choice([0.0002, 0.001, 0.05])
        kind = rng.choice(["data", "data", "data", "ack", "stale", "bad", "other_mac", "arp", "run"])
        for s, fast in ((a, True), (b, False)):
            monkeypatch.setattr(NetworkCore, "lone_rx", fast)
            frames = make_frames(s, rng if s is a else random.Random(0), t, kind)
            if s is a:
                rng_frames = frames
            else:
                frames = rng_frames          # the very same frames for both
            before = loops[0]
            s.core.receive([(f, False) for f in frames], t)
            if fast and len(frames) == 1:
                assert loops[0] == before    # the shortcut was taken (fails without it)
                lone += 1
        if rng.random() < 0.2:
            for s in (a, b):
                s.core.wheel.advance(t + 0.3)     # delayed ACK / RTO / TLP
            t += 0.3
        assert snapshot(a) == snapshot(b), (seed, step, kind)
    assert lone > 100 and a.core.counters["LinkInFrames"] > lone


def test_delivery_owner_is_reused_and_starts_clean() -> None:
    """_deliver_conn keeps its released _Owner for the next delivery: a delivery whose callback
    takes the connection (lock_conn) and never lets go, then one into which a segment arrives
    (the backlog, processed right after the callback) -- every byte delivered, in order, and
    one _Owner serves every delivery."""
    s = Side(True)
    core, c = s.core, s.conn
    seen: list = []

    def on_data(data: bytes) -> None:
        seen.append(bytes(data))
        if data == b"lock":
            core.lock_conn(c)               # taken and never released: the delivery's end drops it
            core.lock_conn(c)
        elif data == b"reenter":
            # a segment arriving during the delivery (a re-entrant receive): backlogged, owned
            s.ack(core.now, c.snd_nxt, 65535, b"later")
            assert core.is_owned(c) and seen[-1] == b"reenter"

    s.rec.on_data = on_data
    s.ack(0.03, c.snd_nxt, 65535, b"first")
    owner = core._spare_owner
    assert owner is not None and not core.is_owned(c)
    for i, payload in enumerate([b"lock", b"after", b"reenter", b"last"]):
        s.ack(0.04 + i * 0.001, c.snd_nxt, 65535, payload)
        assert not core.is_owned(c)
        assert core._spare_owner is owner and not owner.queue and not owner.wake
    assert seen == [b"first", b"lock", b"after", b"reenter", b"later", b"last"]
