"""The TIME_WAIT mini-socket (Linux ``inet_timewait_sock`` / ``tcp_timewait_sock``).

When a connection reaches TIME_WAIT with nothing left to do -- its handler was told
(``tcp_closed``), every byte and the EOF handed over, no ACK pending -- ``ip/`` replaces it in the
demux table by a :class:`TimeWaitSock` (``TcpConnection.time_wait_sock``, the analogue of
``tcp_time_wait`` -> ``inet_twsk_hashdance``): the 4-tuple, the sequence numbers, what the ACK
needs (window, timestamps) and the 2MSL timer, ~0.3 KB instead of the ~4 KB of a whole
connection with its route, buffers, RTT/congestion state, timers and transport.  The record *is*
its 2MSL timer (a :class:`~aiotcpstack.tcp.timer_wheel.Timer` subclass, as the kernel embeds
``tw_timer``).

Behaviour is exactly ``TcpConnection._rcv_time_wait`` (RFC 9293 3.10.7.4, RFC 1337, RFC 6191 /
Linux ``tcp_timewait_state_process``): RSTs are ignored; a SYN that cannot be confused with the
old incarnation (ISN above RCV.NXT without timestamps, or a newer timestamp) ends TIME_WAIT
(``TimeWaited``, state CLOSED, ``release``) so ``ip/`` hands it to the listener; any other SYN gets
a rate-limited challenge ACK; PAWS failures (``PAWSEstab``) and data are ACKed; a retransmitted
FIN is ACKed and restarts the 2MSL timer.  The ACK is the one the connection would send: SND.NXT,
RCV.NXT, the same window selection, NOP,NOP,TS when timestamps are on.

``output(tw, hdr)`` sends a header with no payload; ``release(tw)`` is called once, when TIME_WAIT
ends.  The ``ip/`` layer drives it like a connection: ``on_segment`` then ``end_batch``.
"""
from __future__ import annotations

from typing import Any, Callable

from ..wire.tcp import ACK, FIN, NO_OPTIONS, RST, SYN, TcpHeader, TcpOptions
from . import state as S
from .seq import seq_gt
from .timer_wheel import Timer
from .challenge_ack import challenge_ack_allowed
from .window import select_window

MASK = 0xFFFFFFFF
HALF = 0x80000000
TIME_WAIT = S.TIME_WAIT
CLOSED = S.CLOSED



# time_wait_verdict: what a segment means to a connection in TIME_WAIT
TW_IGNORE, TW_REOPEN, TW_CHALLENGE, TW_PAWS, TW_ACK, TW_ACK_RESTART = range(6)


def time_wait_verdict(hdr: TcpHeader, payload: Any, ts_ok: bool, rcv_nxt: int, ts_recent: int) -> int:
    """The decision of Linux ``tcp_timewait_state_process`` (RFC 9293 3.10.7.4) for one segment,
    shared by a whole connection in TIME_WAIT and its record (``TimeWaitSock``):

    * RST: ignored (RFC 1337, TIME-WAIT assassination) -> ``TW_IGNORE``;
    * SYN without ACK: a new incarnation may take the 4-tuple if it cannot be confused with the
      old one -- its ISN above our RCV.NXT, or a newer timestamp (RFC 6191 / TCP_TW_SYN) ->
      ``TW_REOPEN``; else a challenge ACK (RFC 5961 4) -> ``TW_CHALLENGE``;
    * an older timestamp: PAWS (RFC 7323 5) -> ``TW_PAWS`` (count, ACK);
    * a retransmitted FIN (our last ACK was lost): ACK again and restart the 2MSL timer ->
      ``TW_ACK_RESTART``; data: ACK -> ``TW_ACK``; anything else ``TW_IGNORE``.
    """
    flags = hdr.flags
    if flags & RST:
        return TW_IGNORE
    ts = hdr.options.timestamp if ts_ok else None
    if flags & SYN and not flags & ACK:
        newer_ts = ts is not None and ((ts[0] - ts_recent) & MASK) - 1 < HALF - 1
        if (ts is None and seq_gt(hdr.seq, rcv_nxt)) or newer_ts:
            return TW_REOPEN
        return TW_CHALLENGE
    if ts is not None and ((ts[0] - ts_recent) & MASK) >= HALF:
        return TW_PAWS
    if flags & FIN:
        return TW_ACK_RESTART
    if payload:
        return TW_ACK
    return TW_IGNORE


class TimeWaitSock(Timer):
    """A connection in TIME_WAIT, reduced to what TIME_WAIT needs; also its own 2MSL timer."""

    __slots__ = ("state", "local", "remote", "snd_nxt", "rcv_nxt", "rcv_adv", "rcvbuf", "rcv_wscale",
                 "rcv_mss", "ts_ok", "ts_recent", "ts_recent_stamp", "ts_offset", "chal_window", "chal_count",
                 "ack_pending", "config", "wheel", "counters", "output", "release")

    def __init__(self, conn: Any, output: Callable[["TimeWaitSock", TcpHeader], None],
                 release: Callable[["TimeWaitSock"], None]) -> None:
        # (Timer.__init__'s fields, set here: one call less per TIME_WAIT connection)
        self.name = "time_wait"
        self.expires = 0.0
        self._tick = self._filed = 0
        self._slot = self._prev = self._next = self._parked = None
        self.state = TIME_WAIT
        self.local = conn.local
        self.remote = conn.remote
        self.snd_nxt = conn.snd_nxt
        self.rcv_nxt = conn.rcv_nxt
        # the window selection's inputs (nothing is unread or out of order: free space = rcvbuf)
        self.rcv_adv = conn.rcv_adv
        self.rcvbuf = conn.rcvbuf
        self.rcv_wscale = conn.rcv_wscale
        self.rcv_mss = conn.rcv_mss
        self.ts_ok = conn.ts_ok
        self.ts_recent = conn.ts_recent
        self.ts_recent_stamp = conn.ts_recent_stamp
        self.ts_offset = conn.ts_offset
        self.chal_window = conn.chal_window
        self.chal_count = conn.chal_count
        self.ack_pending = 0
        self.config = conn.config
        self.wheel = conn.wheel
        self.counters = conn.counters
        self.output = output
        self.release = release

    # ------------------------------------------------------------------ the 2MSL timer
    def callback(self, now: float) -> None:
        if self.state == TIME_WAIT:
            self.counters["TimeWaited"] += 1
            self.state = CLOSED
            self.release(self)

    # ------------------------------------------------------------------ receive
    def on_segment(self, hdr: TcpHeader, payload: Any, now: float) -> None:
        """``TcpConnection._rcv_time_wait``."""
        if self.state != TIME_WAIT:
            return
        v = time_wait_verdict(hdr, payload, self.ts_ok, self.rcv_nxt, self.ts_recent)
        if v == TW_IGNORE:
            return
        if v == TW_REOPEN:
            if self._slot is not None:
                self.wheel.cancel(self)
            self.counters["TimeWaited"] += 1
            self.state = CLOSED
            self.release(self)
        elif v == TW_CHALLENGE:
            self._challenge_ack(now)
        else:
            if v == TW_PAWS:
                self.counters["PAWSEstab"] += 1
            self.ack_pending = 2
            if v == TW_ACK_RESTART:
                self.wheel.arm(self, now + self.config.time_wait)

    def end_batch(self, now: float) -> None:
        if self.ack_pending and self.state == TIME_WAIT:
            self._transmit(now)

    # ------------------------------------------------------------------ transmit
    def _challenge_ack(self, now: float) -> None:
        """RFC 5961 challenge ACK, rate limited per connection (``TcpConnection._challenge_ack``)."""
        if challenge_ack_allowed(self, now):
            self._transmit(now)

    def _select_window(self) -> int:
        """``TcpConnection._select_window`` with nothing unread or out of order."""
        field, self.rcv_adv = select_window(self.rcvbuf, self.rcv_adv, self.rcv_nxt, self.rcv_wscale,
                                            self.rcvbuf, self.rcv_mss)
        return field

    def _transmit(self, now: float) -> None:
        """The ACK ``TcpConnection._transmit(snd_nxt, b"", ACK)`` sends in TIME_WAIT."""
        win = self._select_window()
        if self.ts_ok:
            opts = TcpOptions(None, None, False, (), ((int(now * 1000) + self.ts_offset) & MASK, self.ts_recent))
        else:
            opts = NO_OPTIONS
        self.ack_pending = 0
        self.counters["OutSegs"] += 1
        self.output(self, TcpHeader(self.local[1], self.remote[1], self.snd_nxt, self.rcv_nxt, ACK, win, opts))

    # ------------------------------------------------------------------ introspection
    @property
    def lport(self) -> int:
        return self.local[1]

    @property
    def rport(self) -> int:
        return self.remote[1]

    def snapshot(self) -> dict:
        """What ``Stack.connections()`` / ``aiotcpstack ss`` show for it (as ``ss`` shows no
        ``tcp_info`` for a kernel TIME-WAIT socket: no RTT or congestion fields)."""
        return {
            "state": self.state,
            "local": self.local,
            "remote": self.remote,
            "snd_una": self.snd_nxt,
            "snd_nxt": self.snd_nxt,
            "rcv_nxt": self.rcv_nxt,
            "rcv_wnd": max(0, (self.rcv_adv - self.rcv_nxt) & MASK) if self.state != CLOSED else 0,
            "send_buffer": 0,
            "unread": 0,
            "timestamps": self.ts_ok,
        }

    def __repr__(self) -> str:
        return f"<TimeWaitSock {self.local!r} -> {self.remote!r} {self.state}>"
