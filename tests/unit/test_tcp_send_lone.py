"""The lone-segment send path (TcpConnection.send -> _send_lone: a write of at most one MSS into
an empty send buffer, as request/response traffic makes) puts exactly the frames on the wire and
leaves exactly the state that the general path (_output) does: the same random scenario --
small and large writes, ACKs that acknowledge all or part, small and zero windows, data from the
peer (ACKs owed), idle gaps longer than the RTO (the restart window), RTO / tail-loss-probe /
delayed-ACK timers -- runs on two NetworkCores at frame level, one with the path and one
without, and every frame, counter, timer and connection variable must be identical at every
step."""
from __future__ import annotations

import random

import pytest

from aiotcpstack.tcp.connection import TcpConnection
from test_tcp_transmit_burst import Side


def state(s: Side) -> tuple:
    c = s.conn
    cc = c.cc
    return (s.state(), c.snd_sml, c.last_send, c.last_progress, c.probe_mode, c.persist_backoff,
            c.tlp_armed, c._t_rtx.expires if c._t_rtx.pending else None, c.rtt_time, c.rtt_seq,
            vars(cc) if hasattr(cc, "__dict__") else repr(cc), c.ca_state, len(c.sndbuf))


@pytest.mark.parametrize("seed", range(8))
def test_lone_segment_path_sends_what_output_sends(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    used = [0]
    real = TcpConnection._send_lone

    def counted(self: TcpConnection, data: bytes, now: float) -> bool:
        ok = real(self, data, now)
        used[0] += ok
        return ok

    monkeypatch.setattr(TcpConnection, "_send_lone", counted)
    rng = random.Random(seed)
    a, b = Side(True), Side(True)

    def both(fn) -> None:
        for s, fast in ((a, True), (b, False)):
            monkeypatch.setattr(TcpConnection, "small_fast", fast)
            fn(s)

    t = 0.02
    for step in range(200):
        t += rng.choice([0.0005, 0.001, 0.003])
        op = rng.random()
        if op < 0.3:
            # a request/response exchange: a small write, the peer's reply acknowledges it
            data = rng.randbytes(rng.choice([1, 1, 60, 1448]))
            both(lambda s: s.conn.send(data, t, True))
            payload = rng.randbytes(rng.choice([0, 1, 1, 300]))
            both(lambda s: s.ack(t + 0.0002, s.conn.snd_nxt, 65535, payload))
            op = 1.0
        elif op < 0.55:
            n = rng.choice([1, 1, 7, 100, 1447, 1448, 1449, 3000])
            data = rng.randbytes(n)
            if rng.random() < 0.1:
                data = bytearray(data)                # reusable buffer: the general path
            more = rng.random() < 0.3
            both(lambda s: s.conn.send(data, t, more))
        elif op < 0.8:
            c = a.conn
            out = (c.snd_nxt - c.snd_una) & 0xFFFFFFFF
            full = rng.random() < 0.75
            k = out if full else rng.randrange(0, out + 1)
            win = 65535 if full and rng.random() < 0.8 else rng.choice([20000, 50, 5, 0])
            payload = rng.randbytes(rng.choice([0, 0, 1, 100]))
            both(lambda s: s.ack(t, s.conn.snd_una + k, win, payload))
        elif op < 0.86:
            both(lambda s: s.core.wheel.advance(t + 0.5))     # RTO / TLP / delayed ACK / probes
            t += 0.5
        elif op < 0.9:
            t += rng.choice([0.3, 1.5, 4.0])                  # idle: the restart window applies
        elif op < 1.0:
            both(lambda s: s.core.wheel.advance(t))
        assert state(a) == state(b), (seed, step)
    assert used[0] >= 20, used[0]        # the path was taken (fails without it)
