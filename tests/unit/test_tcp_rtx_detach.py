"""The retransmission timer stopped by the ACK of everything is detached, not cancelled
(``TimerWheel.detach``, Linux ``inet_csk_clear_xmit_timer``): not pending, still linked, and the
next send re-arms it in place (no unlink, no re-filing).  A random request/response scenario
runs on two cores at frame level, one as shipped and one whose wheel cancels instead of
detaching: the same frames, counters and timer deadlines at every step (a stale deadline never
fires or shortens a new one), the detach must have been used and the re-arm must have taken
the timer back in place (fails without it); a connection that ends (RST, or TIME_WAIT handed to
its record) leaves no link in the wheel."""
from __future__ import annotations

import random

import pytest

from aiotcpstack.tcp.state import CLOSED
from aiotcpstack.wire.tcp import ACK, FIN, RST, TcpHeader, TcpOptions

from test_tcp_transmit_burst import Side, frame


def twin_sides() -> tuple[Side, Side]:
    a, b = Side(False), Side(False)
    b.core.wheel.detach = b.core.wheel.cancel       # type: ignore[method-assign]  # the old behaviour
    return a, b


def view(s: Side) -> tuple:
    c = s.conn
    t = c._t_rtx
    return (s.state(), t.pending, t.expires if t.pending else None, c.tlp_armed, c.rtt.rto, c.cc.cwnd)


@pytest.mark.parametrize("seed", range(4))
def test_detached_rtx_timer_changes_nothing_but_the_wheel_work(seed: int) -> None:
    rng = random.Random(seed)
    a, b = twin_sides()
    in_place = detached = 0
    t = 0.02
    for step in range(150):
        # a response sent, then (mostly) the peer's ACK of all of it; now and then part of it,
        # nothing, or a pause that lets the TLP / RTO fire and the wheel's slots come up
        t += rng.choice([0.0005, 0.002, 0.03])
        size = rng.choice([10, 100, 1448, 3000])
        r = rng.random()
        op = "ack" if r < 0.75 else "ack_part" if r < 0.85 else "none"
        pause = rng.random() < 0.15
        for s in (a, b):
            c = s.conn
            rtx = c._t_rtx
            parked = rtx._parked
            filed: list = []
            real = s.core.wheel._file
            s.core.wheel._file = lambda timer, tick: filed.append(timer) or real(timer, tick)
            try:
                c.send(b"q" * size, t, False)
            finally:
                del s.core.wheel._file
            if s is a and parked is not None and rtx._slot is parked:
                assert rtx not in filed           # taken back in place
                in_place += 1
            if op != "none" and c.snd_nxt != c.snd_una:
                out = (c.snd_nxt - c.snd_una) & 0xFFFFFFFF
                s.ack(t + 0.0002, c.snd_una + (out if op == "ack" or out < 2 else out // 2))
                if s is a and op == "ack" and c.snd_una == c.snd_nxt and not c.probe_mode:
                    assert not rtx.pending and rtx._parked is not None     # detached
                    detached += 1
            if pause:
                s.core.wheel.advance(t + 0.5)
        if pause:
            t += 0.5
        assert view(a) == view(b), (seed, step, op)
    assert in_place > 5 and detached > 5


def exchanged() -> tuple:
    """A connection that sent a response the peer acknowledged whole: its timer detached."""
    a = Side(False)
    c = a.conn
    c.send(b"response", 0.02, False)
    a.ack(0.021, c.snd_nxt)
    assert not c._t_rtx.pending and c._t_rtx._parked is not None
    return a, c, a.core.wheel, c._t_rtx


def test_a_connection_that_ends_leaves_no_link() -> None:
    a, c, w, rtx = exchanged()
    a.core.receive([(frame(TcpHeader(40000, 80, c.rcv_nxt, 0, RST, 0, TcpOptions())), False)], 0.03)
    assert c.state is CLOSED
    assert rtx._parked is None and rtx._prev is None and len(w) == 0
    assert all(slot._next is slot for slot in w._slots)   # nothing left linked in any slot


def test_time_wait_record_leaves_no_link() -> None:
    a, c, w, rtx = exchanged()
    c.close(0.022)                                        # our FIN (re-arms the timer in place)
    fin_end = c.snd_nxt
    opts = TcpOptions(timestamp=(400, int(0.03 * 1000) + c.ts_offset))
    a.core.receive([(frame(TcpHeader(40000, 80, c.rcv_nxt, fin_end, ACK | FIN, 65535, opts)), False)], 0.03)
    record = a.core.demux.conns.get((c.local[0], 80, c.remote[0], 40000))
    assert record is not None and record is not c        # TIME_WAIT handed to the record
    assert rtx._parked is None and rtx._prev is None and not rtx.pending
    assert len(w) == 1                                    # only the record's 2MSL timer
