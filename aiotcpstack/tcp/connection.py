"""One TCP connection, sans-IO (RFC 9293, with Linux's choices where the RFC leaves room).

The connection never reads a clock or touches a socket: every entry point takes ``now`` (seconds,
float), segments go out through ``output(hdr, payload)``, timers are three preallocated
:class:`~aiotcpstack.tcp.timer_wheel.Timer` objects re-armed in place on the stack's shared wheel
(retransmit/zero-window probe, delayed ACK, keepalive/SYN-ACK/FIN_WAIT2 -- which is also the
TIME_WAIT timer: no state needs both), and the layer above
hears about events through a :class:`~aiotcpstack.tcp.handler.ConnectionHandler`.

Receive path (Linux ``tcp_v4_do_rcv``):

* ``on_segment`` first tries header prediction (``tcp_rcv_established``'s fast path: ESTABLISHED,
  expected sequence number, only ACK/PSH, same window, no SACK blocks, nothing out of order, not
  in loss recovery), which handles a pure ACK or in-order data without the general machinery;
* otherwise the general state machine runs (``tcp_rcv_synsent_state_process`` for SYN_SENT,
  ``tcp_rcv_state_process`` for the rest, following RFC 9293 3.10.7.4's order: PAWS, sequence
  check, RST, SYN, ACK, data, FIN);
* data and ACKs are coalesced per batch: ``on_segment`` only queues; ``end_batch(now)`` hands the
  in-order bytes to ``handler.tcp_data`` once (joined), then EOF, then write space, then sends what
  the windows allow, then at most one pending ACK (RFC 9293 MUST-58/59: aggregate ACKs, process
  everything queued before acknowledging).

Semantics chosen where the contract leaves room (documented for ``aio/``):

* ``tcp_closed(exc)`` is called exactly once: ``None`` after an orderly close (our FIN acked
  after ``close()``, or both FINs exchanged), also after ``abort()`` and after ``close()`` with unread
  data (RST sent) -- asyncio's ``transport.abort()`` also ends in ``connection_lost(None)``;
  ``ConnectionRefusedError`` for a RST answering our SYN, ``ConnectionResetError`` for a RST
  later, ``TimeoutError`` when SYN retries, retransmissions (retries2), zero-window probes,
  keepalive probes or the user timeout are exhausted.
* ``release(conn)`` is called exactly once when the connection may leave the demux table:
  TIME_WAIT expired, LAST_ACK/CLOSING finished without TIME_WAIT, reset, abort, timeout.  A SYN
  that may reopen a TIME_WAIT connection (Linux ``TCP_TW_SYN``) also releases it: ``ip/`` should
  look at ``conn.state == "CLOSED"`` after ``on_segment`` of a SYN and hand the SYN to the listener.
* ``send_buffer_size`` counts bytes queued and not yet acknowledged (Linux ``sk_wmem_queued``).
* ``mss`` is the payload bytes per segment (MSS minus option bytes, like Linux ``mss_cache``);
  a payload given to ``output`` longer than ``mss`` (TSO, ``config.tso_segs > 1``) must be split
  by ``ip/`` at ``conn.mss`` bytes, each piece with the same header except seq (and FIN/PSH only on
  the last piece).
"""
from __future__ import annotations

import os
from typing import Callable

from ..wire.tcp import ACK, CWR, ECE, FIN, NO_OPTIONS, PSH, RST, SYN, URG, TcpHeader, TcpOptions
from . import ecn as _ecn
from . import mtu_probe as _mtu_probe     # (PMTUD issue) black-hole detection
from . import state as S
from .congestion import registry as _cc_registry
from .congestion.prr import Prr
from .congestion.undo import RecoveryUndo
from .rack import Rack
from .reordering import INITIAL_REORDERING, reordering_after
from .options_negotiation import choose_wscale, default_peer_mss, max_sack_blocks
from .receive_buffer import OFO_SEG_OVERHEAD, OutOfOrderQueue
from .rx_copy import join as _rx_join
from .rtt import RttEstimator
from .sack import SackScoreboard
from .send_buffer import SendBuffer
from .seq import seq_ge, seq_gt, seq_le, seq_lt, seq_max
from .timer_wheel import Timer
from .window import select_window as _select_window
from . import timewait as _tw
from . import urgent as _urg
from .challenge_ack import challenge_ack_allowed
from .timewait import TimeWaitSock

MASK = 0xFFFFFFFF
HALF = 0x80000000

CLOSED = S.CLOSED
LISTEN = S.LISTEN
SYN_SENT = S.SYN_SENT
SYN_RECEIVED = S.SYN_RECEIVED
ESTABLISHED = S.ESTABLISHED
FIN_WAIT_1 = S.FIN_WAIT_1
FIN_WAIT_2 = S.FIN_WAIT_2
CLOSE_WAIT = S.CLOSE_WAIT
CLOSING = S.CLOSING
LAST_ACK = S.LAST_ACK
TIME_WAIT = S.TIME_WAIT

# Congestion-avoidance states (Linux icsk_ca_state)
CA_OPEN = 0
CA_RECOVERY = 3
CA_LOSS = 4

PAWS_24DAYS = 24 * 86400.0          # RFC 7323 5.5: TS.Recent older than this is invalid
TCP_MAX_QUICKACKS = 16              # Linux
FLAGS_HP_MASK = ~PSH & 0xFF         # header prediction: only ACK (and PSH) may be set
# floor of the tail loss probe timeout (Linux 3.10-4.x tcp_schedule_loss_probe: 10 ms): on a
# sub-millisecond path 2*SRTT is shorter than a user-space stack's scheduling latency, and a probe
# would go out before an ACK that is already on its way (seen live on veth)
TLP_MIN = 0.010
#: ``_output`` lays out a run of full TSO frames in one step (bulk send); False makes it take the
#: general per-frame step for those too (tests/unit/test_tcp_transmit_burst.py compares the two)
BULK_RUNS = True


def rst_for(hdr: TcpHeader, payload_len: int) -> TcpHeader | None:
    """The reset to send for ``hdr`` arriving for no connection (RFC 9293 3.10.7.1, CLOSED state).

    Never answers a RST.  If the segment has ACK: ``<SEQ=SEG.ACK><CTL=RST>``; otherwise
    ``<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`` where SEG.LEN counts SYN and FIN.  Ports are
    swapped; ``ip/`` swaps the addresses."""
    flags = hdr.flags
    if flags & RST:
        return None
    if flags & ACK:
        return TcpHeader(hdr.dst_port, hdr.src_port, hdr.ack, 0, RST, 0)
    seg_len = payload_len + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    return TcpHeader(hdr.dst_port, hdr.src_port, 0, (hdr.seq + seg_len) & MASK, RST | ACK, 0)


_CC_CLASS: dict[str, type] = {}      # congestion_control name -> class (registry.get, once per name)


def _new_cc(config, mss: int, now: float):
    """The congestion-control instance named by ``config.congestion_control`` (tcp/congestion/)."""
    name = config.congestion_control
    cls = _CC_CLASS.get(name)
    if cls is None:
        cls = _cc_registry.get(name)
        if len(_CC_CLASS) < 64:
            _CC_CLASS[name] = cls
    return cls(mss, config.initial_cwnd, now)


_WSCALE: dict[int, int] = {}     # rcvbuf_max -> choose_wscale(rcvbuf_max), for __init__
#: the send MSS before the peer's SYN says otherwise (RFC 9293 3.7.1 / RFC 8200), for __init__
_PEER_MSS4 = default_peer_mss(False)
_PEER_MSS6 = default_peer_mss(True)


def _wscale_for(rcvbuf_max: int) -> int:
    ws = _WSCALE.get(rcvbuf_max)
    if ws is None:
        if len(_WSCALE) >= 64:
            _WSCALE.clear()
        ws = _WSCALE[rcvbuf_max] = choose_wscale(rcvbuf_max)
    return ws


class _Detached:
    """What the timers of a connection replaced by its TIME_WAIT record point at (never armed
    again; inert if they were)."""

    __slots__ = ()

    def _on_rtx_timer(self, now: float) -> None:
        pass

    _on_dack_timer = _on_ka_timer = _on_rtx_timer


_DETACHED = _Detached()


class _ConnTimer(Timer):
    """A connection's timer: ``callback(now)`` is a method of the subclass calling the
    connection's handler, so the timer holds the connection, not a bound-method object
    (64 bytes less per timer)."""

    __slots__ = ("conn",)

    def __init__(self, conn: "TcpConnection", name: str) -> None:
        # (Timer.__init__'s fields, set here: one call per timer, three timers per connection)
        self.name = name
        self.expires = 0.0
        self._tick = self._filed = 0
        self._slot = self._prev = self._next = self._parked = None
        self.conn = conn


class _RtxTimer(_ConnTimer):
    __slots__ = ()

    def callback(self, now: float) -> None:
        self.conn._on_rtx_timer(now)


class _DackTimer(_ConnTimer):
    __slots__ = ()

    def callback(self, now: float) -> None:
        self.conn._on_dack_timer(now)


class _KaTimer(_ConnTimer):
    __slots__ = ()

    def callback(self, now: float) -> None:
        self.conn._on_ka_timer(now)


class TcpConnection:
    """One TCP connection: see the module docstring and ``docs/contracts.md``."""

    __slots__ = (
        # identity and plumbing
        "config", "wheel", "counters", "local", "remote", "lport", "rport", "output", "_fast_out", "handler",
        "release", "ts_offset", "state", "passive", "_is_v6",
        # send sequence space (RFC 9293 3.3.1)
        "iss", "snd_una", "snd_nxt", "snd_wnd", "snd_wnd_field", "snd_wl1", "snd_wl2",
        "max_snd_wnd", "snd_wscale", "sndbuf", "fin_queued", "fin_sent", "fin_seq", "snd_sml",
        # receive sequence space
        "irs", "rcv_nxt", "rcv_adv", "rcv_wup", "rcv_wscale", "rcvbuf", "rcv_mss", "last_ack_sent",
        "rx", "rx_unread", "ofo", "eof_pending", "eof_delivered", "reading", "rcv_closed",
        # negotiated options
        "mss", "peer_mss", "ts_ok", "ts_recent", "ts_recent_stamp", "sack_ok", "ws_ok", "ext_hdr_len",
        # reliability
        "rtt", "cc", "sb", "ca_state", "dupacks", "reno_sacked", "recovery_point", "high_rxt",
        "lost_end", "force_rtx", "n_rtx", "retransmits", "rtt_seq", "rtt_time", "last_progress",
        "probe_mode", "probes_out", "persist_backoff",
        # lost-retransmission detection ([seq, end, snd_nxt when sent] per recovery retransmission,
        # ranges found lost again) and the tail loss probe (RFC 8985 7)
        "rtx_marks", "relost", "tlp_high", "tlp_armed",
        # PRR (RFC 9937) and recovery undo (DSACK / Eifel), made at the first recovery or RTO
        "prr", "undo", "frto",
        # the reordering degree, DupThresh (tcp/reordering.py; Linux tp->reordering, reord_seen)
        # and the end of the highest retransmission (what lies below it may be a retransmission)
        "reordering", "reord_seen", "rtx_hw",
        # RACK loss detection (tcp/rack.py, RFC 8985): None unless SACK and ``recovery`` is on;
        # made with the first data queued (an idle or receive-only connection never needs it)
        "rack",
        # ACK policy
        "ack_pending", "quick", "ato", "lrcvtime", "dsack",
        # timers
        "_t_rtx", "_t_dack", "_t_ka", "_t_tw",
        # misc
        "ka_probes", "last_rcv_time", "chal_window", "chal_count", "closed_by_app", "_notified",
        "_released", "send_space_pending", "bytes_acked", "bytes_received", "rcvq_time",
        "rcvq_copied", "_syn_time", "last_send", "ka_probe_time", "clock",
        # (PMTUD/ICMP issue) ICMP soft error (Linux sk_err_soft) + snd_una when it was recorded,
        # black-hole detection state (tcp/mtu_probe.py)
        "soft_err", "soft_err_una", "mtu_probe",
        # a partial TSO frame held back by send(more=True) until push()
        "tail_held",
        # the urgent mechanism (RFC 9293 3.8.5, tcp/urgent.py): RCV.UP and whether it may be ahead
        # of what the application was handed (0 no, 1 yes and not told yet, 2 told); SND.UP and,
        # in urgent mode (SND.UP ahead of SND.UNA), a 1-tuple holding the ``_fast_out`` to give
        # back when it ends (while it lasts segments take the general output path), else ()
        "rcv_up", "rcv_urg", "snd_up", "snd_urg",
        # ECN (tcp/ecn.py): state bits (0: not negotiated), highest new data sent, SND.NXT when
        # the window was reduced on ECE, ECT(0) on the route now
        "ecn", "ecn_high", "ecn_cwr_high", "_ect",
    )

    def __init__(self, *, config, wheel, counters, local: tuple[bytes, int], remote: tuple[bytes, int],
                 iss: int, output: Callable[[TcpHeader, bytes | memoryview], None], handler=None,
                 release: Callable[["TcpConnection"], None] | None = None, ts_offset: int = 0,
                 now: float = 0.0) -> None:
        self.config = config
        self.wheel = wheel
        self.counters = counters
        self.local = local
        self.remote = remote
        self.lport = local[1]
        self.rport = remote[1]
        self.output = output
        # the route behind a bound ``Route.output`` offers output_ts (one-pack headers for the
        # common NOP,NOP,TS segment); plain callables (tests, harnesses) do not
        r = getattr(output, "__self__", None)
        self._fast_out = r if hasattr(r, "output_ts") else None
        self.handler = handler
        self.release = release
        self.ts_offset = ts_offset & MASK
        self.state = CLOSED
        self.passive = False
        self._is_v6 = len(remote[0]) == 16

        iss &= MASK
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_wnd = 0
        self.snd_wnd_field = -1
        self.snd_wl1 = 0
        self.snd_wl2 = iss
        self.max_snd_wnd = 0
        self.snd_wscale = 0
        self.sndbuf = SendBuffer((iss + 1) & MASK)
        self.fin_queued = False
        self.fin_sent = False
        self.fin_seq = 0
        self.snd_sml = iss

        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0
        self.rcv_wup = 0
        if config.window_scaling:
            ws = _WSCALE.get(config.rcvbuf_max)
            self.rcv_wscale = ws if ws is not None else _wscale_for(config.rcvbuf_max)
        else:
            self.rcv_wscale = 0
        self.rcvbuf = config.rcvbuf
        self.last_ack_sent = 0
        self.rx: list[bytes] = []
        self.rx_unread = 0
        self.ofo = OutOfOrderQueue()
        self.eof_pending = False
        self.eof_delivered = False
        self.reading = True
        self.rcv_closed = False

        #: octets of IPv4 options on our segments (Linux ``icsk_ext_hdr_len``; set by ip/ for a
        #: route with options): the MSS leaves room for them
        self.ext_hdr_len = 0
        self.peer_mss = pm = _PEER_MSS6 if self._is_v6 else _PEER_MSS4
        mss = config.mss
        self.mss = mss if mss < pm else pm
        self.rcv_mss = mss if mss < 536 else 536
        self.ts_ok = False
        self.ts_recent = 0
        self.ts_recent_stamp = None
        self.sack_ok = False
        self.ws_ok = False

        # (RttEstimator.from_config without its keyword/getattr overhead: once per connection)
        self.rtt = RttEstimator(config.rto_initial, config.rto_min, config.rto_max, 0.001)
        self.cc = None
        self.sb = SackScoreboard()
        self.ca_state = CA_OPEN
        self.dupacks = 0
        self.reno_sacked = 0
        self.recovery_point = iss
        self.high_rxt = iss
        self.lost_end = iss
        self.force_rtx = False
        self.n_rtx = 0
        self.retransmits = 0
        self.rtt_seq = 0
        self.rtt_time = None
        self.last_progress = now
        self.probe_mode = False
        self.probes_out = 0
        self.persist_backoff = 0
        # (lists made on first use: an idle connection holds the shared empty tuple)
        self.rtx_marks: list[list[int]] | tuple = ()
        self.relost: list[list[int]] | tuple = ()
        self.tlp_high = None              # SND.NXT after a loss probe, until it is acknowledged
        self.tlp_armed = False            # the retransmission timer is armed as the probe timer (PTO)
        self.prr: Prr | None = None       # tcp/congestion/prr.py, from the first reduction on
        self.undo: RecoveryUndo | None = None     # tcp/congestion/undo.py, likewise
        self.frto = 0                     # F-RTO (RFC 5682) after an RTO: 0 off, 1 on, 2 send new data
        self.reordering = INITIAL_REORDERING
        self.reord_seen = 0
        self.rtx_hw = iss
        self.rack: Rack | None = None

        self.ack_pending = 0          # 0 none, 1 delayed, 2 now
        self.quick = 0
        self.ato = 0.0
        self.lrcvtime = now
        self.dsack = None

        self._t_rtx = _RtxTimer(self, "rtx")
        self._t_dack = _DackTimer(self, "delack")
        # TIME_WAIT has no keepalive, SYN-ACK or FIN_WAIT2 timeout: its 2MSL timer is the same
        # object (as FIN_WAIT2's timeout rides on the keepalive timer); _on_ka_timer dispatches
        self._t_ka = self._t_tw = _KaTimer(self, "keepalive")

        self.ka_probes = 0
        self.ka_probe_time = 0.0
        self.last_rcv_time = now
        self.chal_window = -1.0
        self.chal_count = 0
        self.closed_by_app = False
        self._notified = False
        self._released = False
        self.send_space_pending = False
        self.tail_held = False
        self.bytes_acked = 0
        self.bytes_received = 0
        self.rcvq_time = now
        self.rcvq_copied = 0
        self._syn_time = now
        self.last_send = now
        # the latest ``now`` any call brought (see _output: a batch's ``now`` can be older than
        # that of an application send made from one of its callbacks)
        self.clock = now
        self.soft_err = 0                 # (PMTUD/ICMP issue)
        self.soft_err_una = iss
        self.mtu_probe = None
        self.rcv_up = 0
        self.rcv_urg = 0
        self.snd_up = iss
        self.snd_urg: tuple = ()
        self.ecn = 0
        self.ecn_high = (iss + 1) & MASK
        self.ecn_cwr_high = iss
        self._ect = False

    # ================================================================== public API

    @property
    def send_buffer_size(self) -> int:
        """Bytes queued by ``send()`` and not yet acknowledged."""
        return len(self.sndbuf)

    @property
    def unread_bytes(self) -> int:
        """In-order bytes received and not yet handed to ``handler.tcp_data``."""
        return self.rx_unread

    def connect(self, now: float) -> None:
        """Active open (RFC 9293 3.10.1; Linux tcp_v4_connect/tcp_connect): SYN, SYN_SENT."""
        if self.state != CLOSED:
            raise OSError("connect() on a connection that is not CLOSED")
        self._set_state(SYN_SENT)
        self.counters["ActiveOpens"] += 1
        self.snd_nxt = (self.iss + 1) & MASK
        self._syn_time = now
        self._send_syn(now)
        self.wheel.arm(self._t_rtx, now + self.rtt.rto)

    def accept_syn(self, syn: TcpHeader, now: float) -> None:
        """Passive open from a received SYN (RFC 9293 3.10.7.2): SYN-ACK, SYN_RECEIVED."""
        if self.state not in (CLOSED, LISTEN):
            raise OSError("accept_syn() on a connection in use")
        self.passive = True
        self._set_state(SYN_RECEIVED)
        self.counters["PassiveOpens"] += 1
        self._take_syn(syn, now)
        self.snd_nxt = (self.iss + 1) & MASK
        self._syn_time = now
        self._send_syn(now)
        # SYN-ACK retransmission rides on the keepalive timer (like a request sock's timer;
        # the retransmit timer is the SYN's in simultaneous open)
        self._arm(self._t_ka, now + self.rtt.rto)

    @classmethod
    def from_request(cls, *, config, wheel, counters, local, remote, iss: int, syn: TcpHeader,
                     output, handler=None, release=None, ts_offset: int = 0, now: float = 0.0,
                     ack: TcpHeader | None = None, syn_time: float | None = None,
                     synack_retransmitted: bool = False) -> "TcpConnection":
        """A child connection made by the listener from a request sock (or a SYN cookie): ``syn``
        is the peer's SYN (its options drive the negotiation exactly as in ``accept_syn``), we sent
        SYN-ACK with ``iss``; if the completing ``ack`` is given the connection is processed into
        ESTABLISHED (it is fed through ``on_segment``, so data on it is queued too)."""
        conn = cls(config=config, wheel=wheel, counters=counters, local=local, remote=remote,
                   iss=iss, output=output, handler=handler, release=release, ts_offset=ts_offset,
                   now=now)
        conn.passive = True
        conn._set_state(SYN_RECEIVED)
        conn.counters["PassiveOpens"] += 1
        conn._take_syn(syn, now)
        conn.snd_nxt = (iss + 1) & MASK
        conn._syn_time = syn_time if syn_time is not None else now
        if synack_retransmitted:
            conn.n_rtx = 1
        if ack is not None:
            conn.on_segment(ack, b"", now)
        else:
            conn._arm(conn._t_ka, now + conn.rtt.rto)
        return conn

    def send(self, data, now: float, more: bool = False) -> None:
        """Queue ``data`` and push what Nagle/cork/cwnd/rwnd allow (always accepts the bytes).

        ``more``: the caller may add more data before it calls :meth:`push` (at the end of the
        application's turn): when this send filled at least one full TSO frame, a partial frame
        after it is held (``tail_held``) so the next send can fill it."""
        if not data:
            return
        st = self.state
        if self.fin_queued or st in (CLOSED, LISTEN, FIN_WAIT_1, FIN_WAIT_2, CLOSING, LAST_ACK, TIME_WAIT):
            raise BrokenPipeError("send() after the write side was closed")
        if now > self.clock:
            self.clock = now                      # (see _output)
        if self.rack is None:
            self._start_rack(st)
        sndbuf = self.sndbuf
        # (sndbuf._end == sndbuf._base: len(sndbuf) == 0 without the call)
        if (st is ESTABLISHED and sndbuf._end == sndbuf._base and type(data) is bytes
                and self.small_fast and len(data) <= self.mss):
            # nothing in flight, nothing queued: a request or a response (see _send_lone)
            sndbuf.append(data)
            if self._send_lone(data, now):
                return
            self._output(now, more)
            return
        sndbuf.append(data)
        if st == ESTABLISHED or st == CLOSE_WAIT:
            self._output(now, more)

    #: :meth:`send`'s lone-segment path on (tests turn it off to compare with :meth:`_output`)
    small_fast = True

    def _send_lone(self, data: bytes, now: float) -> bool:
        """Send ``data`` -- just queued into an empty send buffer, at most one MSS, ESTABLISHED --
        as one segment if nothing holds it, with exactly what :meth:`_output` does for that case
        (tests/unit/test_tcp_send_lone.py compares the two): request/response traffic writes one
        small message per round trip, and the general loop (retransmission scan, window, Nagle,
        TSO and burst bookkeeping) is most of the send path's Python.  Returns False, having
        changed nothing, when the general path must decide (recovery, SACK blocks to carry,
        window or cwnd too small, cork)."""
        if self.ca_state != CA_OPEN or self.force_rtx or self.dsack is not None or self.ofo.segs:
            return False
        cfg = self.config
        if cfg.cork:
            return False
        nxt = self.snd_nxt                            # == SND.UNA: the buffer was empty
        n = len(data)
        cc = self.cc
        rtt = self.rtt
        if cc is not None:
            if now - self.last_send > rtt.rto:
                return False          # RFC 5681 4.1 restart after idle: _output does it
            cwnd = cc.cwnd
        else:
            cwnd = cfg.initial_cwnd * self.mss
        snd_wnd = self.snd_wnd
        # nothing is outstanding, so pipe <= 0: the room is the peer's window and cwnd
        if n > snd_wnd or n > cwnd or snd_wnd >= HALF:
            return False
        self.counters["TCPOrigDataSent"] += 1
        self._transmit(nxt, data, ACK | PSH, now)
        end = (nxt + n) & MASK
        if n != self.mss:
            self.snd_sml = end                        # a partial segment (Nagle's Minshall state)
        if self.rtt_time is None and not self.ts_ok:
            self.rtt_seq = end
            self.rtt_time = now
        t = self._t_rtx
        rto_due = False
        if self.probe_mode or t._slot is None:
            # RFC 6298 5.1: start the timer (as the tail loss probe timer when that applies)
            self.probe_mode = False
            self.persist_backoff = 0
            self.last_progress = now
            rto_due = True
        self.snd_nxt = end
        self.last_send = now
        if not (self.sack_ok and self._schedule_tlp(now, rto_due)) and rto_due:
            self.wheel.arm(t, now + rtt.rto)
        return True

    def push(self, now: float) -> None:
        """Send what :meth:`send` held back with ``more``."""
        if self.tail_held:
            self.tail_held = False
            self._output(now)

    def send_urgent(self, data, now: float) -> None:
        """Queue ``data`` as urgent data (RFC 9293 3.9.1 SEND with the urgent flag, MUST-30/31;
        Linux ``send(MSG_OOB)``): SND.UP moves to the octet after it, and every segment sent
        while SND.UP is after its SEG.SEQ -- retransmissions and pure ACKs too -- carries URG and
        the pointer (``_transmit``).  Urgent data is never held by Nagle or cork (Linux
        ``tcp_nagle_test``).  An earlier urgent mark not yet acknowledged is superseded: the
        urgent data runs from SND.UNA to the new mark, as in Linux."""
        if not data:
            return
        st = self.state
        if self.fin_queued or st in (CLOSED, LISTEN, FIN_WAIT_1, FIN_WAIT_2, CLOSING, LAST_ACK, TIME_WAIT):
            raise BrokenPipeError("send_urgent() after the write side was closed")
        if self.rack is None:
            self._start_rack(st)
        sndbuf = self.sndbuf
        sndbuf.append(data)
        self.snd_up = sndbuf.end_seq
        if not self.snd_urg:
            # urgent mode: the one-pack fast paths (_send_lone's output_ts, _transmit_burst) know
            # no URG; with _fast_out cleared every segment takes _transmit's general path, where
            # the pointer is set, until SND.UNA passes SND.UP (_urg_send_done gives it back)
            self.snd_urg = (self._fast_out,)
            self._fast_out = None
        if st == ESTABLISHED or st == CLOSE_WAIT:
            self._output(now)

    def _start_rack(self, st: int) -> None:
        """RACK (net.ipv4.tcp_recovery = 1) from the first data queued on: its state (~0.2 KiB)
        is only of use to a sender, and an idle or receive-only connection never needs it
        (memory per idle connection, issue #6).  Only once SACK is settled (synchronized);
        data queued before the handshake completed makes ``_established`` create it."""
        if self.sack_ok and (st is ESTABLISHED or st == CLOSE_WAIT) and self.config.recovery:
            self.rack = Rack()

    def _urg_send_done(self) -> None:
        """SND.UNA reached SND.UP: leave urgent mode, give the fast output paths back."""
        self._fast_out = self.snd_urg[0]
        self.snd_urg = ()

    def _urg_send_check(self) -> bool:
        """Urgent mode, about to lay out new segments: if SND.UNA has passed SND.UP, leave it now
        (not only at the next segment) so that this output already takes the fast paths;
        returns whether they are there."""
        if _urg.urgent_bytes(self.snd_up, self.snd_una):
            return False
        self._urg_send_done()
        return self._fast_out is not None

    @property
    def urgent_pending(self) -> int:
        """How many of the octets not yet handed to the application (``tcp_data``) are urgent,
        i.e. lie before the urgent mark RCV.UP; 0 when there is no urgent data (RFC 9293
        MUST-33).  Some of them may still be on their way (the pointer can point beyond the
        data received)."""
        return self.urgent_pending_after(0)

    def urgent_pending_after(self, held: int) -> int:
        """:attr:`urgent_pending` for a layer above that still holds ``held`` octets it was
        given but has not handed to the application (the aio transport before
        ``connection_made``)."""
        if not self.rcv_urg:
            return 0
        return _urg.urgent_bytes(self.rcv_up, (self._rcv_consumed() - held) & MASK)

    def _rcv_consumed(self) -> int:
        """The sequence number of the next octet the application will be handed (RCV.NXT less
        what is queued for delivery, and less the FIN once one was received)."""
        return (self.rcv_nxt - self.rx_unread - (1 if self.rcv_closed else 0)) & MASK

    def shutdown(self, now: float) -> None:
        """Close the write side (half-close): FIN after queued data; receiving goes on."""
        if self.fin_queued:
            return
        st = self.state
        if st in (ESTABLISHED, SYN_RECEIVED, SYN_SENT):
            self.fin_queued = True
            self.fin_seq = self.sndbuf.end_seq
            if st == ESTABLISHED:
                self._set_state(FIN_WAIT_1)
            # SYN_SENT / SYN_RECEIVED: FIN_WAIT_1 (and the FIN) once established
            # (RFC 9293 3.10.4: "queue for processing after entering ESTABLISHED state")
        elif st == CLOSE_WAIT:
            self.fin_queued = True
            self.fin_seq = self.sndbuf.end_seq
            self._set_state(LAST_ACK)
        else:
            return
        self._output(now)

    def close(self, now: float) -> None:
        """Full close (Linux tcp_close): RST if unread data remains (TCPAbortOnClose), else FIN
        after queued data; the handler gets ``tcp_closed(None)`` once our FIN is acknowledged."""
        st = self.state
        if self.closed_by_app or st == CLOSED:
            self.closed_by_app = True
            return
        self.closed_by_app = True
        self.reading = False
        if st in (LISTEN, SYN_SENT):
            self._finish(None)
            return
        if st == TIME_WAIT:
            self._notify(None)
            return
        if self.rx_unread and st in S.NEED_RESET:
            # RFC 9293 3.10.4 / RFC 2525: data lost on close -> reset (Linux tcp_close).
            self.counters["TCPAbortOnClose"] += 1
            self._send_rst_now(now)
            self._finish(None)
            return
        self.rx.clear()
        self.rx_unread = 0
        self.shutdown(now)
        st = self.state
        if st == FIN_WAIT_2 or (self.fin_sent and self.snd_una == self.snd_nxt and st != LAST_ACK):
            self._notify(None)
            if st == FIN_WAIT_2:
                self._arm(self._t_ka, now + self.config.fin_timeout)

    def abort(self, now: float) -> None:
        """Abort (RST if synchronized, Linux tcp_disconnect); ``tcp_closed(None)`` like asyncio's
        ``transport.abort()`` -> ``connection_lost(None)``."""
        st = self.state
        if st == CLOSED:
            return
        self.closed_by_app = True
        if st in S.NEED_RESET:
            self._send_rst_now(now)
        self._finish(None)

    def destroy(self, exc: BaseException, now: float) -> None:
        """(robustness issue) End the connection now with ``exc`` and send nothing (Linux
        ``tcp_done`` after ``sk_err``, as Android's ``tcp_nuke_addr`` did): used when the local
        address left the interface, where no segment may leave from it any more (RFC 1122
        3.2.1.3).  Data already received is still handed over first; ``tcp_closed(exc)``."""
        if self.state == CLOSED:
            return
        self._finish(exc)

    def set_reading(self, enabled: bool, now: float) -> None:
        """Pause/resume delivery (asyncio pause_reading/resume_reading).  While paused, data stays
        in the receive buffer and the advertised window closes as it fills; on resume the buffered
        data is delivered and a window update is sent if the window opened significantly."""
        self.reading = bool(enabled)
        if not enabled or self.closed_by_app:
            return
        old_win = (self.rcv_adv - self.rcv_nxt) & MASK
        self._deliver(now)
        if self.state == CLOSED:
            return
        if self.state in S.SYNCHRONIZED and self.state != TIME_WAIT:
            self._window_update_check(old_win)
            self._output(now)
            if self.ack_pending == 2:
                self._send_ack(now)

    def end_batch(self, now: float) -> None:
        """After a drained receive batch: deliver data once, then send data and one pending ACK.

        When the batch brought more than one full-sized segment (an immediate ACK is due: RFC
        9293 3.8.6.3 / RFC 1122 4.2.3.2, Linux ``__tcp_ack_snd_check``), the ACK goes out
        *before* the delivery, as Linux ACKs in softirq before the application reads: the
        sender's next flight is then under way while the data is copied to the application
        (on a veth the peer's ACK processing runs inside our ``sendmsg``), instead of one
        delivery later.  The right edge does not move (never shrinks, RFC 9293 SHLD-14); the
        space the delivery frees is announced by the next ACK.  The ACK stays after the
        delivery (one ACK, as before) when the delivery will open the window so much that a
        window update would be due at once anyway (Linux ``tcp_cleanup_rbuf``: at least twice
        the window the peer knows -- a small buffer, the start of a connection), when the
        application is not reading, and for a batch of at most one segment (request/response
        traffic: a reply written in ``data_received`` still carries the ACK)."""
        if self.rcv_urg:
            self._urg_signal()            # before the data it is about
        if (self.ack_pending == 2 and self.rx and self.state is ESTABLISHED and self.reading
                and ((self.rcv_nxt - self.rcv_wup) & MASK) > self.rcv_mss):
            win = (self.rcv_adv - self.rcv_nxt) & MASK
            if win >= HALF:
                win = 0
            free = self.rcvbuf - self.ofo.nbytes          # after the delivery
            if free < 2 * win or free - win < self.rcv_mss:
                self._send_ack(now)
                self._deliver(now)
                if self.state is ESTABLISHED:
                    self._window_update_check((self.rcv_adv - self.rcv_nxt) & MASK)
            else:
                self._deliver(now)
        else:
            self._deliver(now)
        st = self.state
        if st == CLOSED:
            return
        if self.send_space_pending:
            self.send_space_pending = False
            h = self.handler
            if h is not None and not self.closed_by_app:
                h.tcp_send_space()
        st = self.state
        if st == CLOSED or st == LISTEN:
            return
        if st != SYN_SENT and (self.sndbuf.end_seq != self.snd_nxt or self.ca_state != CA_OPEN or self.force_rtx
                               or (self.fin_queued and not self.fin_sent)):
            self._output(now)           # (_output's own early return, without the call)
        ap = self.ack_pending
        if ap == 2:
            self._send_ack(now)
        elif ap == 1:
            self._schedule_delack(now)

    def _window_update_check(self, old_win: int) -> None:
        """After the application took data: ACK now if the window it frees is at least twice the
        one the peer knows and grows it by a segment or more (Linux ``tcp_cleanup_rbuf``,
        "lots means at least twice")."""
        if old_win >= HALF:
            old_win = 0
        free = self.rcvbuf - self.rx_unread - self.ofo.nbytes
        if free >= 2 * old_win and free - old_win >= self.rcv_mss:
            self.ack_pending = 2

    def update_mss(self, mtu_mss: int, now: float, retransmit: bool = True) -> None:
        """Path MTU went down (ICMP fragmentation needed / packet too big, RFC 1191/8201):
        ``mtu_mss`` is the new MTU minus IP and TCP headers; segments shrink from now on (Linux
        tcp_sync_mss).  Outstanding data is not re-segmented: the next retransmission is cut to
        the new size."""
        eff = min(mtu_mss, self.peer_mss, self.config.mss)
        if self.ts_ok:
            eff -= 12
        eff -= self.ext_hdr_len              # IPv4 options (Linux icsk_ext_hdr_len, RFC 9293 3.7.1)
        eff = max(eff, 48)
        if eff >= self.mss:
            return
        self.mss = eff
        if self.cc is not None:
            self.cc.set_mss(eff)
        if retransmit and self.state in S.SYNCHRONIZED and self.snd_una != self.snd_nxt:
            # retransmit what was lost to the too-big packets right away (Linux tcp_simple_retransmit)
            self.lost_end = self.snd_nxt
            self.high_rxt = self.snd_una
            if self.ca_state == CA_OPEN:
                self.ca_state = CA_LOSS
                self.recovery_point = self.snd_nxt
                if self.undo is not None:
                    self.undo.clear()         # not a congestion loss: nothing to undo (Linux)
            self.force_rtx = True
            self._output(now)

    def icmp_error(self, err: int, hard: bool, now: float) -> None:
        """(PMTUD/ICMP issue) An ICMP error for this connection, already validated by
        ``ip/icmp_errors.py`` (Linux tcp_v4_err): ``hard`` fails the connection now with ``err``
        (SYN-SENT); otherwise it is recorded as the soft error (``sk_err_soft``), which a later
        timeout reports instead of ETIMEDOUT (Linux tcp_write_err) unless the connection made
        progress since (Linux clears sk_err_soft on every ACK)."""
        if hard:
            self._finish(OSError(err, os.strerror(err)))
            return
        self.soft_err = err
        self.soft_err_una = self.snd_una

    def snapshot(self) -> dict:
        """Connection info for ``Stack.connections()`` and ``get_extra_info('tcp_info')``."""
        rtt = self.rtt
        cc = self.cc
        return {
            "state": self.state,
            "local": self.local,
            "remote": self.remote,
            "snd_una": self.snd_una,
            "snd_nxt": self.snd_nxt,
            "rcv_nxt": self.rcv_nxt,
            "snd_wnd": self.snd_wnd,
            "rcv_wnd": max(0, (self.rcv_adv - self.rcv_nxt) & MASK) if self.state != CLOSED else 0,
            "srtt": rtt.srtt,
            "rttvar": rtt.rttvar,
            "rto": rtt.rto,
            "cwnd": cc.cwnd if cc is not None else self.config.initial_cwnd * self.mss,
            "ssthresh": cc.ssthresh if cc is not None else None,
            "mss": self.mss,
            "rcv_mss": self.rcv_mss,
            "retransmits": self.retransmits,
            "bytes_acked": self.bytes_acked,
            "bytes_received": self.bytes_received,
            "send_buffer": len(self.sndbuf),
            "unread": self.rx_unread,
            "rcvbuf": self.rcvbuf,
            "ca_state": ("open", "", "", "recovery", "loss")[self.ca_state],
            "wscale": (self.snd_wscale, self.rcv_wscale) if self.ws_ok else None,
            "timestamps": self.ts_ok,
            "sack": self.sack_ok,
            "ecn": bool(self.ecn),                    # negotiated (RFC 3168; ss -i "ecn")
            "reordering": self.reordering,          # (Linux tcpi_reordering, tcpi_reord_seen)
            "reord_seen": self.reord_seen,
            # the pending ICMP soft error (errno, 0: none), readable at any time as Linux's
            # SO_ERROR reads sk_err_soft (RFC 1122 4.2.3.9, RFC 9293 SHLD-25 / MUST-47); void
            # once the connection made progress, as Linux clears it on a new ACK
            "soft_error": self.soft_err if self.soft_err_una == self.snd_una else 0,
        }

    # ================================================================== receive path

    def rcv_predicted(self, seq: int, ack: int, window: int, tsval: int, tsecr: int, payload,
                      now: float, nbytes: int = -1, acks: int = 1) -> bool:
        """Header prediction (Linux ``tcp_rcv_established`` fast path, RFC 9293 3.10.7.4 folded
        for the common case): the caller checked ESTABLISHED, only ACK(+PSH) set and no SACK
        blocks; ``tsval < 0``: no timestamp option.  Here: expected sequence number, unchanged
        window, not recovering, no out-of-order data or SACK state, timestamp not older (else
        PAWS runs on the slow path), an acceptable ACK and data that fits the window.  Returns
        False, having changed nothing but ``last_rcv_time``, when the segment needs the slow path.
        ``ip/`` calls this straight from the raw header fields (no ``TcpHeader``); after software
        GRO (ip/gro.py) ``payload`` is a list of consecutive chunks of ``nbytes`` bytes in all;
        ``acks`` > 1: the last of that many pure ACKs GRO merged (for the slow-start limit)."""
        self.last_rcv_time = now
        if (seq != self.rcv_nxt or window != self.snd_wnd_field or self.ca_state != CA_OPEN
                or self.ofo.segs or self.sb.blocks):
            return False
        if self.ts_ok:
            if tsval < 0 or ((tsval - self.ts_recent) & MASK) >= HALF:   # older: PAWS, slow path
                return False
        else:
            tsecr = 0
        una = self.snd_una
        acked = (ack - una) & MASK
        plen = len(payload) if nbytes < 0 else nbytes
        if acked > ((self.snd_nxt - una) & MASK) or (plen and plen > ((self.rcv_adv - seq) & MASK)) or not (
                acked or plen or una == self.snd_nxt):
            return False
        self.counters["TCPHPHits"] += 1
        self.probes_out = 0
        if self.ts_ok and seq == self.last_ack_sent:
            self.ts_recent = tsval        # RFC 7323 4.3
            self.ts_recent_stamp = now
        self.snd_wl1 = seq
        if acked:
            self.snd_wl2 = ack
            self._clean_rtx(ack, acked, tsecr, now, acks)
            if self.state is not ESTABLISHED:
                return True
            if self.ecn & _ecn.ECN_IN_CWR:
                _ecn.on_ack(self, acked, True, now)         # (PRR during CWR, its end)
        if plen:
            self._queue_in_order(payload, plen, now)
        return True

    def on_segment(self, hdr: TcpHeader, payload, now: float, acks: int = 1) -> None:
        """Process one received segment (checksum already verified by ``ip/``); ``acks`` > 1: a
        pure ACK that stands for that many merged ones (ip/gro.py)."""
        if self.state is ESTABLISHED and (hdr.flags & FLAGS_HP_MASK) == ACK:
            opts = hdr.options
            if not opts.sack_blocks:
                ts = opts.timestamp
                if ts is None:
                    if self.rcv_predicted(hdr.seq, hdr.ack, hdr.window, -1, 0, payload, now, -1, acks):
                        return
                elif self.rcv_predicted(hdr.seq, hdr.ack, hdr.window, ts[0], ts[1], payload, now, -1, acks):
                    return
        self.last_rcv_time = now
        # ---------------------------------------------------------------- slow path
        st = self.state
        if st == SYN_SENT:
            self._rcv_synsent(hdr, payload, now)
        elif st == CLOSED or st == LISTEN:
            return
        elif st == TIME_WAIT:
            self._rcv_time_wait(hdr, payload, now)
        else:
            self._rcv_state_process(hdr, payload, now, acks)
            if self.ecn:
                _ecn.on_segment(self, hdr.flags, len(payload), now)

    # ---------------------------------------------------------------- SYN_SENT

    def _rcv_synsent(self, hdr: TcpHeader, payload, now: float) -> None:
        """RFC 9293 3.10.7.3 (Linux tcp_rcv_synsent_state_process)."""
        flags = hdr.flags
        if flags & ACK:
            ack = hdr.ack
            # acceptable iff SND.UNA < SEG.ACK =< SND.NXT (i.e. it acknowledges our SYN):
            # seq_gt(ack, snd_una) and seq_le(ack, snd_nxt), inline
            if not (((self.snd_una - ack) & MASK) >= HALF and ((self.snd_nxt - ack) & MASK) < HALF):
                if not flags & RST:
                    self._send_rst(ack, 0, RST, now)
                return
            if flags & RST:
                self._finish(ConnectionRefusedError(111, "Connection refused"))
                return
        elif flags & RST:
            return                      # RFC 9293: no ACK -> drop the RST
        if not flags & SYN:
            return
        self._take_syn(hdr, now)
        if flags & ACK:
            # SYN-ACK: tcp_finish_connect
            ack = hdr.ack
            tsecr = 0
            if self.ts_ok and hdr.options.timestamp is not None:
                tsecr = hdr.options.timestamp[1]
            self.snd_una = ack
            self._syn_rtt_sample(tsecr, now)
            if self.rtt.backoffs:
                self.rtt.reset_backoff()
            self.n_rtx = 0
            if self._t_rtx._slot is not None:         # (pending)
                self.wheel.cancel(self._t_rtx)
            self.snd_wnd = hdr.window                 # RFC 7323 2.2: never scaled in a SYN
            # the next (scaled) window field is only comparable if there is no scaling
            self.snd_wnd_field = hdr.window if self.snd_wscale == 0 else -1
            self.max_snd_wnd = self.snd_wnd
            self.snd_wl1 = hdr.seq
            self.snd_wl2 = ack
            self._established(now)
            if self.state != ESTABLISHED:
                return
            self.ack_pending = 2
            if self.fin_queued:                       # shutdown() while connecting
                self._set_state(FIN_WAIT_1)
            plen = len(payload)
            if plen or flags & FIN:
                self._data_and_fin((hdr.seq + 1) & MASK, payload, plen, bool(flags & FIN), now)
        else:
            # Simultaneous open (RFC 9293 3.10.7.3 fourth; MUST-10): SYN-ACK, SYN_RECEIVED.
            self._set_state(SYN_RECEIVED)
            self.snd_wnd = hdr.window
            self.max_snd_wnd = self.snd_wnd
            self.snd_wl1 = hdr.seq
            self._send_syn(now)
            if not self._t_rtx.pending:
                self._arm(self._t_rtx, now + self.rtt.rto)

    def _take_syn(self, syn: TcpHeader, now: float) -> None:
        """Record the peer's ISN and negotiate options from its SYN / SYN-ACK."""
        cfg = self.config
        opts = syn.options
        self.irs = syn.seq
        self.rcv_nxt = (syn.seq + 1) & MASK
        self.rcv_wup = self.rcv_nxt
        self.last_ack_sent = self.rcv_nxt
        rcvbuf = self.rcvbuf
        self.rcv_adv = (self.rcv_nxt + (rcvbuf if rcvbuf < 65535 else 65535)) & MASK
        if opts.mss:
            self.peer_mss = opts.mss
        # RFC 7323 2.2: window scaling only if both sides sent the option
        if cfg.window_scaling and opts.wscale is not None:
            self.ws_ok = True
            ws = opts.wscale
            self.snd_wscale = ws if ws < 14 else 14
        else:
            self.ws_ok = False
            self.snd_wscale = 0
            self.rcv_wscale = 0
        self.sack_ok = bool(cfg.sack and opts.sack_permitted)
        if cfg.timestamps and opts.timestamp is not None:
            self.ts_ok = True
            self.ts_recent = opts.timestamp[0]
            self.ts_recent_stamp = now
        else:
            self.ts_ok = False
        eff = cfg.mss
        if self.peer_mss < eff:
            eff = self.peer_mss
        if self.ts_ok:
            eff -= 12                                 # Linux mss_cache excludes the TS option
        eff -= self.ext_hdr_len                       # and IPv4 options (icsk_ext_hdr_len)
        if eff < 48:
            eff = 48
        self.mss = eff
        self.rcv_mss = eff if eff < 536 else 536
        # RFC 3168 6.1.1 (tcp/ecn.py): passive open takes an ECN-setup SYN, active open an
        # ECN-setup SYN-ACK (or a simultaneous open's ECN-setup SYN) answering ours
        self.ecn = _ecn.ECN_OK if _ecn.syn_negotiated(cfg, syn.flags, self.passive) else 0
        self.ecn_high = (self.iss + 1) & MASK

    def _syn_rtt_sample(self, tsecr: int, now: float) -> None:
        if self.ts_ok and tsecr:
            r = ((int(now * 1000) + self.ts_offset) - tsecr) & MASK     # (_tsval(now) - tsecr)
            if r < HALF:
                self.rtt.sample(r / 1000.0, now)
                return
        if self.n_rtx == 0:                           # Karn: not from a retransmitted SYN
            self.rtt.sample(now - self._syn_time, now)
        elif not self.rtt.has_sample:
            # RFC 6298 5.7: the SYN timed out and no sample exists: RTO = 3 s once established
            self.rtt.reset(3.0)

    def _established(self, now: float) -> None:
        self._set_state(ESTABLISHED)
        cfg = self.config
        self.cc = _new_cc(cfg, self.mss, now)
        self.last_progress = now
        self.lrcvtime = now
        self.rcvq_time = now
        self.recovery_point = self.high_rxt = self.lost_end = self.snd_una
        if cfg.recovery and self.sack_ok and self.sndbuf._end != self.sndbuf._base:
            self.rack = Rack()                        # (net.ipv4.tcp_recovery = 1: RACK)
        if cfg.keepalive:
            self.wheel.arm(self._t_ka, now + cfg.keepalive_time)
        else:
            self.wheel.cancel(self._t_ka)             # it was the SYN-ACK timer (no-op if idle)
        h = self.handler
        if h is not None:
            h.tcp_established()

    # ---------------------------------------------------------------- general states

    def _rcv_state_process(self, hdr: TcpHeader, payload, now: float, acks: int = 1) -> None:
        """RFC 9293 3.10.7.4 for SYN_RECEIVED and the synchronized states (not TIME_WAIT)."""
        flags = hdr.flags
        seq = hdr.seq
        plen = len(payload)
        opts = hdr.options
        st = self.state
        ts = opts.timestamp if self.ts_ok else None
        if st == SYN_RECEIVED and flags & (SYN | ACK | RST) == SYN and seq == self.irs:
            # retransmitted SYN: answer with the SYN-ACK again, echoing this SYN's TSval
            # (Linux tcp_check_req), or the peer would take its SYN backoff as an RTT sample
            if self.ts_ok and opts.timestamp is not None:
                self.ts_recent = opts.timestamp[0]
                self.ts_recent_stamp = now
            self._send_syn(now)
            return
        if (st == SYN_RECEIVED and not self.passive and flags & (SYN | ACK | RST) == SYN | ACK
                and seq == self.irs and hdr.ack == self.snd_nxt):
            # simultaneous open: the peer's SYN-ACK acknowledges our SYN; Linux
            # (tcp_validate_incoming) lets it through as the ACK completing the handshake.
            flags &= ~SYN
            seq = (seq + 1) & MASK
        # ---- RFC 7323 5.3 PAWS (before the sequence check, like Linux tcp_validate_incoming).
        # Linux's tcp_paws_check tolerates a TSval one tick older than TS.Recent
        # (TCP_PAWS_WINDOW = 1, for reordering); RFC 7323 5.3 R1 rejects any SEG.TSval < TS.Recent
        # and the RFC wins here: a segment reordered behind a newer one by a tick is dropped
        # (PAWSEstab) and ACKed, and the sender retransmits it.
        if ts is not None and not flags & RST and ((ts[0] - self.ts_recent) & MASK) >= HALF:
            if (self.ts_recent_stamp is not None and now - self.ts_recent_stamp <= PAWS_24DAYS
                    and not self._disordered_ack(hdr, plen, ts[0])):
                self.counters["PAWSEstab"] += 1
                self.ack_pending = 2                      # RFC 7323: send an ACK, drop
                return
            # TS.Recent too old to judge (RFC 7323 5.5): accept and resynchronize below
        # ---- first: sequence number check
        seg_len = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        rcv_nxt = self.rcv_nxt
        wnd = (self.rcv_adv - rcv_nxt) & MASK
        if wnd >= HALF:
            wnd = 0
        off = (seq - rcv_nxt) & MASK
        if seg_len == 0:
            acceptable = off == 0 if wnd == 0 else off < wnd
        elif wnd == 0:
            acceptable = False
        else:
            end_off = (seq + seg_len - 1 - rcv_nxt) & MASK
            acceptable = off < wnd or end_off < wnd
        if not acceptable:
            if flags & RST:
                return
            if wnd == 0 and off == 0 and flags & ACK and not flags & SYN:
                # RFC 9293: "special allowance ... to accept valid ACKs, URGs, and RSTs" with a
                # zero window: process the ACK, drop the data (answered by an ACK below).
                if plen:
                    flags &= ~FIN
                # (a bare FIN is taken even with a zero window, as Linux tcp_data_queue does)
                plen = 0
                payload = b""
                self.ack_pending = 2
            else:
                if plen and off >= HALF:
                    # entirely old data: a retransmission because our ACK was lost
                    end = (seq + plen) & MASK
                    if seq_le(end, rcv_nxt):
                        if self.sack_ok and self.config.dsack:       # RFC 2883 DSACK
                            self.dsack = (seq, end)
                            self.counters["TCPDSACKOldSent"] += 1
                        if ts is not None and ((ts[0] - self.ts_recent) & MASK) < HALF:
                            # Deviation from RFC 7323 5.3 (R2 drops before R3 updates
                            # TS.Recent), like Linux for a retransmission of the last segment:
                            # echo the retransmission's TSval, or the sender measures an RTT
                            # that includes its whole backoff (and RTO spirals up to rto_max).
                            self.ts_recent = ts[0]
                            self.ts_recent_stamp = now
                self.ack_pending = 2
                return
        # ---- timestamps: RFC 7323 4.3 TS.Recent update
        if ts is not None and seq_le(seq, self.last_ack_sent) and ((ts[0] - self.ts_recent) & MASK) < HALF:
            self.ts_recent = ts[0]
            self.ts_recent_stamp = now
        elif ts is not None and self.ts_recent_stamp is not None and now - self.ts_recent_stamp > PAWS_24DAYS:
            self.ts_recent = ts[0]
            self.ts_recent_stamp = now
        # ---- second: RST (RFC 9293 3.10.7.4 + RFC 5961 3.2)
        if flags & RST:
            if seq == rcv_nxt:
                self._rcv_reset(now)
            else:
                self._challenge_ack(now)
            return
        # ---- fourth: SYN (RFC 5961 4.2: challenge ACK in any synchronized state)
        if flags & SYN:
            self._challenge_ack(now)
            return
        # ---- fifth: ACK
        if not flags & ACK:
            return
        ack = hdr.ack
        if st == SYN_RECEIVED:
            if not (seq_gt(ack, self.snd_una) and seq_le(ack, self.snd_nxt)):
                self._send_rst(ack, 0, RST, now)
                return
            self.snd_una = ack
            tsecr = ts[1] if ts is not None else 0
            self._syn_rtt_sample(tsecr, now)
            self.rtt.reset_backoff()
            self.n_rtx = 0
            self._cancel(self._t_rtx)
            self.snd_wnd = hdr.window << self.snd_wscale
            self.snd_wnd_field = hdr.window
            self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            self._established(now)
            if self.state != ESTABLISHED:
                return
            if self.fin_queued:
                self._set_state(FIN_WAIT_1)
            st = self.state
        else:
            # RFC 5961 5.2: acceptable iff SND.UNA - MAX.SND.WND =< SEG.ACK =< SND.NXT
            if seq_gt(ack, self.snd_nxt):
                self._challenge_ack(now)
                return
            if seq_lt(ack, (self.snd_una - self.max_snd_wnd) & MASK):
                self._challenge_ack(now)
                return
            self._process_ack(hdr, plen, ts[1] if ts is not None else 0, now, acks)
            st = self.state
            if st == CLOSED:
                return
            if self.fin_sent and self.snd_una == self.snd_nxt:      # our FIN is acknowledged
                if st == FIN_WAIT_1:
                    self._set_state(FIN_WAIT_2)
                    self._cancel(self._t_rtx)
                    if self.closed_by_app:
                        self._notify(None)
                        self._arm(self._t_ka, now + self.config.fin_timeout)
                    st = FIN_WAIT_2
                elif st == CLOSING:
                    self._enter_time_wait(now)
                    return
                elif st == LAST_ACK:
                    self._finish(None)
                    return
        # ---- sixth: URG (also with a zero window: MUST-66, the special allowance above)
        if flags & URG and (st is ESTABLISHED or st is FIN_WAIT_1 or st is FIN_WAIT_2):
            self._rcv_urg(hdr.seq, hdr.urgent)
        # ---- seventh/eighth: segment text and FIN
        if plen or flags & FIN:
            if st in S.CAN_RECEIVE:
                if self.closed_by_app and plen and st != ESTABLISHED:
                    end = (seq + plen) & MASK
                    if seq_gt(end, self.rcv_nxt):
                        # Linux: new data for a socket the application closed -> RST
                        self.counters["TCPAbortOnData"] += 1
                        self._send_rst_now(now)
                        self._finish(None)
                        return
                self._data_and_fin(seq, payload, plen, bool(flags & FIN), now)
            elif flags & FIN or plen:
                # CLOSE_WAIT/CLOSING/LAST_ACK: the peer's FIN was already processed; a
                # retransmission of it (or of old data) is just acknowledged.
                self.ack_pending = 2

    def _rcv_urg(self, seg_seq: int, seg_up: int) -> None:
        """RFC 9293 3.10.7.4 sixth step: RCV.UP <- max(RCV.UP, SEG.SEQ + SEG.UP) (RFC 6093: the
        first non-urgent octet), and the application is to be told if RCV.UP is ahead of the
        data it consumed -- once per continuous run of urgent data ("if the user has already
        been signaled (or is still in the 'urgent mode') ... do not signal the user again").
        A pointer at or before what the application was already handed (a retransmission, a
        zero pointer) changes nothing (Linux ``tcp_check_urg``: "ignore urgent data that we've
        already seen and read").  Unlike Linux, a pointer into data received but not yet
        delivered counts too: nothing is pulled out of band, so there is nothing to miss."""
        mark = _urg.receive_mark(seg_seq, seg_up)
        consumed = self._rcv_consumed()
        if self.rcv_urg and _urg.urgent_bytes(self.rcv_up, consumed):
            if seq_gt(mark, self.rcv_up):
                self.rcv_up = mark                    # the run goes on: no second signal
        elif _urg.urgent_bytes(mark, consumed):
            self.rcv_up = mark
            self.rcv_urg = 1                          # told at the end of the batch (_urg_signal)

    def _urg_signal(self) -> None:
        """End of a receive batch with urgent state: tell the handler (``tcp_urgent(n)``, if it
        has it: MUST-32, asynchronously, before the batch's data) of a new run of urgent data,
        or forget a run the application has been handed in full."""
        n = _urg.urgent_bytes(self.rcv_up, self._rcv_consumed())
        if not n:
            self.rcv_urg = 0
            return
        if self.rcv_urg == 1:
            self.rcv_urg = 2
            f = getattr(self.handler, "tcp_urgent", None)
            if f is not None and not self.closed_by_app:
                f(n)

    def _disordered_ack(self, hdr: TcpHeader, plen: int, tsval: int) -> bool:
        """Linux tcp_disordered_ack: a pure duplicate ACK that was merely reordered behind a
        newer segment (within one RTO of TS.Recent) is not a PAWS victim."""
        return (plen == 0 and hdr.flags & (ACK | SYN | FIN | RST) == ACK and hdr.seq == self.rcv_nxt
                and hdr.ack == self.snd_una and hdr.window == self.snd_wnd_field
                and ((self.ts_recent - tsval) & MASK) <= self.rtt.rto * 1000)

    def _rcv_reset(self, now: float) -> None:
        st = self.state
        if st == SYN_RECEIVED:
            exc: BaseException | None = (ConnectionResetError(104, "Connection reset by peer") if self.passive
                                         else ConnectionRefusedError(111, "Connection refused"))
        elif st in (CLOSING, LAST_ACK):
            exc = None
        else:
            exc = ConnectionResetError(104, "Connection reset by peer")
        self._finish(exc)

    def _rcv_time_wait(self, hdr: TcpHeader, payload, now: float) -> None:
        """TIME_WAIT (RFC 9293 3.10.7.4, RFC 1337, Linux tcp_timewait_state_process): the
        decision is ``timewait.time_wait_verdict``, shared with the TIME_WAIT record."""
        v = _tw.time_wait_verdict(hdr, payload, self.ts_ok, self.rcv_nxt, self.ts_recent)
        if v == _tw.TW_IGNORE:
            return
        if v == _tw.TW_REOPEN:
            self._cancel(self._t_tw)
            self.counters["TimeWaited"] += 1
            self._set_state(CLOSED)
            self._do_release()
        elif v == _tw.TW_CHALLENGE:
            self._challenge_ack(now)
        else:
            if v == _tw.TW_PAWS:
                self.counters["PAWSEstab"] += 1
            self.ack_pending = 2
            if v == _tw.TW_ACK_RESTART:
                self._arm(self._t_tw, now + self.config.time_wait)

    # ---------------------------------------------------------------- ACK processing

    def _process_ack(self, hdr: TcpHeader, plen: int, tsecr: int, now: float, acks: int = 1) -> None:
        """The slow-path tcp_ack: window update, SACK, cumulative ACK, duplicate ACKs."""
        ack = hdr.ack
        seq = hdr.seq
        una = self.snd_una
        win_changed = False
        # (for PRR's DeliveredData and SafeACK, RFC 9937 section 4)
        sacked0 = self.sb.sacked if self.sack_ok else self.reno_sacked
        lost0 = self.lost_end
        if self.frto and self.ca_state == CA_LOSS:
            # (F-RTO: retransmitted and not yet acknowledged; SACKed below the recovery point)
            rtx_out = (self.high_rxt - una) & MASK
            if rtx_out >= HALF:
                rtx_out = 0
            frto_sacked0 = self.sb.sacked_in(una, 0, (self.recovery_point - una) & MASK)
        # RFC 9293 3.10.7.4: update the send window if SND.UNA =< SEG.ACK and the segment is
        # newer (SND.WL1 < SEG.SEQ, or equal and SND.WL2 =< SEG.ACK).
        if seq_ge(ack, una):
            wl1 = self.snd_wl1
            # (robustness issue, found by the fuzzer) also when the ACK advances SND.UNA, as
            # Linux tcp_may_update_window: otherwise one blind in-window pure ACK with a future
            # SEQ (and window 0) pins SND.WL1 ahead of the peer's real SEQ and the send window is
            # never updated again -- the transfer stalls for good.
            if seq_gt(ack, una) or seq_lt(wl1, seq) or (wl1 == seq and seq_le(self.snd_wl2, ack)):
                field = hdr.window
                if field != self.snd_wnd_field:
                    win_changed = True
                    self.snd_wnd_field = field
                    self.snd_wnd = field << self.snd_wscale
                    if self.snd_wnd > self.max_snd_wnd:
                        self.max_snd_wnd = self.snd_wnd
                self.snd_wl1 = seq
                self.snd_wl2 = ack
        newly_sacked = 0
        dsack = None
        # (the highest SACK before this ACK, relative to SND.UNA: Linux prior_fack)
        prior_hi = self.sb.highest(una) if self.sb.blocks else 0
        if self.sack_ok:
            blocks = hdr.options.sack_blocks
            if blocks:
                newly_sacked, dsack = self.sb.update(blocks, una, self.snd_nxt, ack)
                low = self.sb.reord
                if low is not None and not self._retransmitted(low):
                    # a never-retransmitted segment SACKed below the highest SACK: reordering
                    self._check_reordering(low, (una + self.sb.highest(una)) & MASK, False)
                if dsack is not None:
                    self.counters["TCPDSACKRecv"] += 1
                    if self.undo is not None:
                        self.undo.on_dsack(dsack[0], dsack[1], self.mss)
        if hdr.flags & (ECE | SYN) == ECE and self.ecn and self.ca_state == CA_OPEN:
            _ecn.ece_received(self, now)          # (RFC 3168 6.1.2: reduce, once per window)
        acked = (ack - una) & MASK
        self.probes_out = 0                       # Linux tcp_ack: any valid ACK
        if acked and acked < HALF:
            if prior_hi:
                self._acked_reordering(una, acked, prior_hi)
            self._clean_rtx(ack, acked, tsecr, now, acks)
            if self.state == CLOSED:
                return
        elif (acked == 0 and plen == 0 and not hdr.flags & (SYN | FIN) and not win_changed
              and self.snd_nxt != una):
            # RFC 5681 duplicate ACK; on a SACK connection only one with new SACK information
            # (RFC 5681 section 2's SACK alternative, RFC 6675; Linux counts SACKed segments,
            # tcp_dupack_heuristics): a receiver reading a backlog sends window updates whose
            # window field is already at its maximum -- identical to duplicate ACKs, and three
            # of them started a false fast recovery that then crept one segment per (delayed)
            # partial ACK (PERF_LOG step 27)
            if (self.ca_state == CA_OPEN or self.ca_state == CA_RECOVERY) and (newly_sacked or not self.sack_ok):
                self.dupacks += 1
                if not self.sack_ok:
                    # Linux tcp_add_reno_sack: each dupack means one segment left the network
                    out = (self.snd_nxt - una) & MASK
                    self.reno_sacked = min(self.reno_sacked + self.mss, max(out - self.mss, 0))
        if self.frto and self.ca_state == CA_LOSS:
            adv = acked if acked < HALF else 0
            una2 = self.snd_una
            below = self.sb.sacked_in(una2, 0, (self.recovery_point - una2) & MASK)
            self._frto_ack(adv + below - frto_sacked0, rtx_out, adv, newly_sacked, now)
        # Loss detection (RFC 5681 3.2 / RFC 6675 5: DupThresh dupacks or IsLost(SND.UNA)); on a
        # SACK connection with ``recovery`` on, RACK instead (RFC 8985; Linux disables RFC 6675's
        # rules then: tcp_time_to_recover, tcp_identify_packet_loss)
        ca = self.ca_state
        rack = self.rack
        if rack is not None:
            rack.advance(self.snd_una, una, self.sb.newly_end if hdr.options.sack_blocks else None,
                         self.sb, now, self.rtt.min_rtt)
            if dsack is not None:
                rack.on_dsack()
            rack.update_reo_wnd(self.snd_una, self.snd_nxt)
            # (duplicate ACKs without SACK blocks from a SACK peer count for nothing here, as in
            # Linux: they are not duplicate ACKs on a SACK connection -- see above -- and RACK has
            # no delivered segment to time against; the RTO repairs)
            self._rack_mark(rack, now)
        elif ca == CA_OPEN:
            # RFC 8985 7.4: a SACK for the tail loss probe (sent last) shows that everything sent
            # before it and still un-SACKed is lost (RACK's time order), whatever DupThresh says
            tlp_sacked = (self.tlp_high is not None and self.sb.blocks and seq_ge(
                (self.snd_una + self.sb.highest(self.snd_una)) & MASK, self.tlp_high))
            if (self.dupacks >= self.reordering or tlp_sacked
                    or (self.sb.blocks and self.sb.lost_limit(self.snd_una, self.mss, self.reordering))):
                if self.snd_nxt != self.snd_una:
                    self._enter_recovery(now)
                    if tlp_sacked:
                        self._mark_lost_to((self.snd_una + self.sb.highest(self.snd_una)) & MASK)
        elif ca == CA_RECOVERY and self.sb.blocks:
            lim = self.sb.lost_limit(self.snd_una, self.mss, self.reordering)
            if lim:
                self._mark_lost_to((self.snd_una + lim) & MASK)
            if newly_sacked and self.rtx_marks:
                self._mark_lost_retrans()
        if self.ca_state == CA_RECOVERY:
            if self.undo is not None and self.undo.all_dsacked():
                # every retransmission was DSACKed: the losses were reordering (Linux
                # tcp_try_undo_dsack, then tcp_try_to_open)
                self._exit_recovery(now, "TCPDSACKUndo")
            elif self.cc is not None:
                adv = acked if acked < HALF else 0
                delivered = adv + (self.sb.sacked if self.sack_ok else self.reno_sacked) - sacked0
                self.cwnd_reduction(delivered, bool(adv) and self.lost_end == lost0 and not (
                    self.relost and newly_sacked))
        elif (dsack is not None and ca == CA_OPEN and self.undo is not None and self.undo.all_dsacked()
              and not self.ecn & _ecn.ECN_IN_CWR):
            # the DSACKs came after recovery (or the RTO's loss state) ended: undo still
            # (Linux tcp_try_undo_dsack in the Open/Disorder states; not in CWR)
            self._exit_recovery(now, "TCPDSACKUndo")
        if self.ecn & _ecn.ECN_IN_CWR and self.ca_state == CA_OPEN:
            # ECN's window reduction (CWR), paced per ACK by PRR (tcp/ecn.py)
            adv = acked if acked < HALF else 0
            _ecn.on_ack(self, adv + (self.sb.sacked if self.sack_ok else self.reno_sacked) - sacked0,
                        bool(adv), now)

    def _frto_ack(self, delivered: int, rtx_out: int, adv: int, newly_sacked: int, now: float) -> None:
        """F-RTO, the SACK-enhanced version (RFC 5682 section 3; Linux ``tcp_process_loss`` with
        ``tp->frto``): after an RTO, an ACK or SACK for data that was never retransmitted shows
        the timeout was spurious (undo: TCPSpuriousRTOs, TCPLossUndo).  The first ACK that
        advances SND.UNA before anything new was sent lets two new segments go out instead of
        retransmissions (step 2b); what the ACKs after them say decides (step 3).  ``delivered``:
        bytes below the recovery point (SND.NXT at the timeout, or at step 2b) this ACK newly
        acknowledged or SACKed; ``rtx_out``: bytes retransmitted and not acknowledged before it
        -- more delivered than that means originals arrived (Linux ``FLAG_ORIG_SACK_ACKED``,
        which also counts only data up to ``high_seq``)."""
        una = self.snd_una
        if delivered > rtx_out:
            self.counters["TCPSpuriousRTOs"] += 1
            self._exit_recovery(now, "TCPLossUndo")          # step 3b (and Linux's SACK variant)
            return
        if seq_gt(self.snd_nxt, self.recovery_point):
            if newly_sacked or not adv:
                self.frto = 0                                 # step 3a: the loss was real
        elif adv:
            # step 2b: send new data, if there is any and the window allows, else go back to the
            # conventional recovery
            self.recovery_point = self.snd_nxt
            avail = (self.sndbuf.end_seq - self.snd_nxt) & MASK
            room = (una + self.snd_wnd - self.snd_nxt) & MASK
            self.frto = 2 if 0 < avail < HALF and 0 < room < HALF else 0

    def _fack(self, ack: int) -> int:
        """The highest SACKed sequence (its end, as Linux ``tcp_highest_sack_seq``), or
        ``ack`` when nothing above it is SACKed."""
        if not self.sb.blocks:
            return ack
        return seq_max((ack + self.sb.highest(ack)) & MASK, ack)

    def _retransmitted(self, seq: int) -> bool:
        """``seq`` may have been retransmitted: it lies below the end of the highest
        retransmission still outstanding (conservative: Linux marks each segment TCPCB_RETRANS;
        a hole below a later retransmission counts as retransmitted)."""
        una = self.snd_una
        hw = (self.rtx_hw - una) & MASK
        return 0 < hw <= ((self.snd_nxt - una) & MASK) and ((seq - una) & MASK) < hw

    def _start_undo(self, undo: RecoveryUndo) -> None:
        """Start the undo evidence of a new reduction, counting retransmissions of an earlier
        episode that are still outstanding (``rtx_hw``)."""
        una = self.snd_una
        hw = (self.rtx_hw - una) & MASK
        if 0 < hw <= ((self.snd_nxt - una) & MASK):
            undo.start(una, self.rtx_hw, -(-hw // self.mss))
        else:
            undo.start(una)

    def _check_reordering(self, low: int, fack: int, ts: bool) -> None:
        """A hole at ``low`` was filled by an original while data up to ``fack`` had arrived
        (Linux ``tcp_check_sack_reordering``): raise ``reordering`` (tcp/reordering.py); count
        TCPTSReorder (timestamps showed it) or TCPSACKReorder."""
        r = reordering_after(self.reordering, low, fack, self.mss)
        if r is None:
            return
        self.reordering = r
        self.reord_seen += 1
        self.counters["TCPTSReorder" if ts else "TCPSACKReorder"] += 1

    def _acked_reordering(self, una: int, acked: int, prior_hi: int) -> None:
        """The cumulative ACK covers a never-retransmitted, un-SACKed segment below the
        highest SACKed sequence before this ACK (``prior_hi``, relative to ``una``): it was
        overtaken (Linux tcp_clean_rtx_queue's ``reord`` against ``prior_fack``; the ACK that
        both acknowledges a segment and SACKs a later one shows a loss after it, not reordering)."""
        sb = self.sb
        hi = sb.highest(una)
        hw = (self.rtx_hw - una) & MASK
        start = hw if 0 < hw <= ((self.snd_nxt - una) & MASK) else 0
        limit = acked if acked < prior_hi else prior_hi
        if start >= limit:
            return
        hole = sb.next_hole(una, start, limit)
        if hole is not None:
            self._check_reordering((una + hole[0]) & MASK, (una + hi) & MASK, False)

    def _rack_mark(self, rack: Rack, now: float) -> bool:
        """RACK's loss marking (RFC 8985 6.3; Linux tcp_rack_mark_lost): the originals it finds
        lost extend ``lost_end``, the retransmissions go to ``relost`` (TCPLostRetransmit); a
        loss in the open state starts fast recovery.  The earliest deadline of a segment not lost
        yet arms the retransmission timer as the reordering timer (``rack.reo_at``) when that
        comes first.  Returns whether anything was marked."""
        una = self.snd_una
        if una == self.snd_nxt:
            return False
        ca = self.ca_state
        sb = self.sb
        rtt = self.rtt
        min_rtt = rtt.min_rtt
        reo = rack.reo_wnd(self.reord_seen, ca != CA_OPEN, sb.sacked, self.reordering * self.mss,
                           min_rtt, rtt.srtt)
        lost_from = self.lost_end if ca != CA_OPEN and seq_gt(self.lost_end, una) else una
        lost_end, relost, deadline = rack.detect(una, lost_from, sb, now, reo)
        marked = lost_end is not None or bool(relost)
        if marked:
            if ca == CA_OPEN:
                self._enter_recovery(now)
                self.lost_end = una                   # RACK's marks, not DupThresh's
            if lost_end is not None and seq_gt(lost_end, self.lost_end):
                self.lost_end = lost_end
            if relost:
                if not self.relost:
                    self.relost = []
                self.relost.extend(relost)
                self.counters["TCPLostRetransmit"] += len(relost)
        if deadline is not None:
            t = self._t_rtx
            if t._slot is None or deadline < t.expires:
                self.tlp_armed = False
                rack.reo_at = deadline
                self.wheel.arm(t, deadline)
        return marked

    def _rack_timeout(self, now: float) -> None:
        """The reordering timer (RFC 8985 6.3 ``RACK_detect_loss`` at the deadline; Linux
        tcp_rack_reo_timeout): mark what is lost by now, start recovery if it was not on, send
        the retransmissions; then the RTO again unless another deadline was armed."""
        rack = self.rack
        if rack is None or self.probe_mode or self.snd_una == self.snd_nxt:
            return
        if self._rack_mark(rack, now) and self.ca_state == CA_RECOVERY and self.cc is not None:
            self.cwnd_reduction(0, False)
        self._output(now)
        if self._t_rtx._slot is None:
            self._arm(self._t_rtx, now + self.rtt.rto)

    def _mark_lost_retrans(self) -> None:
        """Lost retransmission detection (Linux tcp_mark_lost_retrans, the pre-RACK form of
        RFC 8985's rule): a retransmission is lost when the peer SACKs data we sent after it
        (beyond SND.NXT at the time of the retransmission) while the retransmitted range is still
        not acknowledged.  Without this only the RTO repairs a lost retransmission (RFC 6675
        never retransmits a range twice in one recovery)."""
        una = self.snd_una
        hi = self.sb.highest(una)
        sb = self.sb
        keep = []
        for m in self.rtx_marks:
            seq, end, mark = m
            rel_e = (end - una) & MASK
            if rel_e == 0 or rel_e >= HALF:
                continue                              # acknowledged meanwhile
            rel_m = (mark - una) & MASK
            if rel_m < HALF and rel_m < hi:
                rel_s = (seq - una) & MASK
                if rel_s >= HALF:
                    rel_s = 0
                if sb.sacked_in(una, rel_s, rel_e) < rel_e - rel_s:
                    if not self.relost:
                        self.relost = []
                    self.relost.append([(una + rel_s) & MASK, end])
                    self.counters["TCPLostRetransmit"] += 1
                continue
            keep.append(m)
        self.rtx_marks = keep or ()

    def _clean_rtx(self, ack: int, acked: int, tsecr: int, now: float, acks: int = 1) -> None:
        """New data acknowledged (Linux tcp_clean_rtx_queue + tcp_ack's tail); ``acks``: how
        many arrived ACKs this stands for (> 1 after ip/gro.py merged pure ACKs)."""
        if self.cc is None:
            prior_in_flight = 0
        elif self.ca_state == CA_OPEN:
            # (_pipe() for the open state, inline: nothing is marked lost)
            prior_in_flight = ((self.snd_nxt - self.snd_una) & MASK) - (
                self.sb.sacked if self.sack_ok else self.reno_sacked)
            if prior_in_flight < 0:
                prior_in_flight = 0
        else:
            prior_in_flight = self._pipe()
        prior_una = self.snd_una
        self.snd_una = ack
        freed = self.sndbuf.ack_to(ack)
        if freed:
            self.bytes_acked += freed
            self.send_space_pending = True
        # RTT sample: RFC 7323 4.1 (TSecr) or Karn's algorithm on one timed segment (RFC 6298 3)
        rtt = None
        est = self.rtt
        if tsecr and self.ts_ok:
            r = ((int(now * 1000) + self.ts_offset) - tsecr) & MASK      # (_tsval, inline)
            if r < HALF:
                rtt = r / 1000.0
        elif self.rtt_time is not None and seq_ge(ack, self.rtt_seq):
            rtt = now - self.rtt_time
            self.rtt_time = None
        if rtt is not None:
            est.sample(rtt, now)
        if est.backoffs:                              # (after a timeout: rto follows)
            est.reset_backoff()
        self.n_rtx = 0
        self.probes_out = 0
        self.last_progress = now
        if self.sb.blocks:
            self.sb.prune(ack)
        if self.reno_sacked:
            self.reno_sacked = max(0, self.reno_sacked - acked)
        ca = self.ca_state
        cc = self.cc
        if ca == CA_OPEN:
            self.dupacks = 0
            if cc is not None:
                cc.on_ack(freed or acked, rtt, now, prior_in_flight, acks)
        elif ca == CA_RECOVERY:
            undo = self.undo
            delayed = undo is not None and undo.undo_marker is not None and undo.packet_delayed(tsecr)
            if delayed:
                # the hole was filled by an original, not by the retransmission: reordering
                # (Linux tcp_try_undo_partial's tcp_check_sack_reordering(prior_snd_una, ts))
                self._check_reordering(prior_una, self._fack(ack), True)
            if seq_ge(ack, self.recovery_point):
                # full ACK: undo if the retransmissions were spurious (Linux
                # tcp_try_undo_recovery), else cwnd = ssthresh
                self._exit_recovery(now, "TCPFullUndo" if undo is not None and undo.may_undo(tsecr) else None)
            elif delayed and not seq_gt(self.high_rxt, ack):
                # a partial ACK of originals (Eifel) with no retransmission outstanding
                # (Linux tcp_try_undo_partial)
                self._exit_recovery(now, "TCPPartialUndo")
            else:
                self.high_rxt = seq_max(self.high_rxt, ack)
                self.dupacks = 0
                if not delayed and self.rack is None:
                    # RFC 6582 3.2 step 5 (partial ACK): the first unacknowledged segment is
                    # lost.  Linux marks it with SACK only when more than ``reordering`` segments
                    # are SACKed beyond it (tcp_force_fast_retransmit), and with RACK on (``rack``)
                    # not at all: RACK finds the loss by time.  Without RACK Linux's rule had twice
                    # the timeouts in the sim at 3 % loss (PERF_LOG 26).  An ACK of originals
                    # (Eifel) with retransmissions outstanding marks nothing (Linux
                    # tcp_try_undo_partial)
                    # (never past SND.NXT: a retransmission of unsent bytes gets an ACK beyond
                    # SND.NXT, which RFC 9293 drops -- a stall, sim seed 565)
                    self._mark_lost_to((ack + self.mss) & MASK)
                    if not self.sb.is_sacked(ack, 0):
                        self.force_rtx = True
        elif self.undo is not None and self.undo.may_undo(tsecr):
            # CA_LOSS and the timeout was spurious: the ACK echoes an original (Eifel) or every
            # retransmission was DSACKed (Linux tcp_try_undo_loss)
            self._exit_recovery(now, "TCPLossUndo")
        else:   # CA_LOSS: slow start retransmission after an RTO
            if cc is not None:
                cc.on_ack(freed or acked, rtt, now, prior_in_flight, acks)
            if seq_ge(ack, self.recovery_point):
                self._exit_recovery(now)
            else:
                self.high_rxt = seq_max(self.high_rxt, ack)
        if self.tlp_high is not None and seq_ge(ack, self.tlp_high):
            self.tlp_high = None                      # the loss probe is acknowledged
        # RFC 6298 5.2/5.3: stop the timer when all is acked, else restart it (or the tail loss
        # probe timer, RFC 8985 7.2, which falls back to the RTO).  In ESTABLISHED stopped as
        # Linux's inet_csk_clear_xmit_timer does: not pending, but left linked in the wheel, so
        # that the next send (a request/response round trip's) re-arms it in place
        # (TimerWheel.detach); when closing (nothing more to send, most likely) unlinked at once
        self.tlp_armed = False
        if ack == self.snd_nxt:
            if not self.probe_mode and self._t_rtx._slot is not None:
                if self.state is ESTABLISHED:
                    self.wheel.detach(self._t_rtx)
                else:
                    self.wheel.cancel(self._t_rtx)
        else:
            self.probe_mode = False
            self.persist_backoff = 0
            if not self._schedule_tlp(now, True):
                self._arm(self._t_rtx, now + self.rtt.rto)

    def _schedule_tlp(self, now: float, rearm: bool = False) -> bool:
        """Arm the retransmission timer as the tail loss probe timer (RFC 8985 7.2, Linux
        tcp_schedule_loss_probe): SACK connection, not recovering, nothing SACKed, no probe
        outstanding; PTO = 2 * SRTT (+ the delayed-ACK time when one segment is out), only if that
        comes before the RTO.  ``rearm``: the RTO is being restarted anyway (ignore its deadline)."""
        if (not self.sack_ok or self.ca_state != CA_OPEN or self.sb.blocks or self.tlp_high is not None
                or self.probe_mode or self.snd_una == self.snd_nxt or not self.config.tlp):
            return False
        rtt = self.rtt
        srtt = rtt.srtt
        if not srtt:
            return False
        out = (self.snd_nxt - self.snd_una) & MASK
        pto = 2 * srtt + (self.config.delack_max if out <= self.mss else 0.002)
        if pto < TLP_MIN:
            pto = TLP_MIN
        if pto > rtt.rto:
            pto = rtt.rto                             # RFC 8985 7.2: PTO = min(PTO, RTO)
        when = now + pto
        t = self._t_rtx
        if not rearm and t.pending and not self.tlp_armed and t.expires < when:
            when = t.expires                          # ... the RTO deadline already running
        self.tlp_armed = True
        self.wheel.arm(t, when)
        return True

    def _send_loss_probe(self, now: float) -> None:
        """The tail loss probe (RFC 8985 7.3, Linux tcp_send_loss_probe): one new segment if the
        peer's window allows, else the last segment (or the FIN) again; then the ordinary RTO.
        Its SACK lets the ACK processing start fast recovery for the losses before it."""
        self.counters["TCPLossProbes"] += 1
        una = self.snd_una
        nxt = self.snd_nxt
        avail = (self.sndbuf.end_seq - nxt) & MASK
        if avail >= HALF or self.fin_sent:
            avail = 0
        wnd_room = (una + self.snd_wnd - nxt) & MASK
        if wnd_room >= HALF:
            wnd_room = 0
        n = min(avail, self.mss, wnd_room)
        if n:
            self._transmit(nxt, self.sndbuf.get(nxt, n), ACK | (PSH if n == avail else 0), now)
            self.counters["TCPOrigDataSent"] += 1
            self.snd_nxt = (nxt + n) & MASK
            self.last_send = now
            if self.rack is not None:
                self.rack.on_send(self.snd_nxt, now, una)
        else:
            data_end = self.fin_seq if self.fin_sent else nxt
            dlen = (data_end - una) & MASK
            if dlen >= HALF:
                dlen = 0
            k = dlen if dlen < self.mss else self.mss
            self._retransmit((data_end - k) & MASK, k, now)
        self.tlp_high = self.snd_nxt
        self._arm(self._t_rtx, now + self.rtt.rto)

    def _enter_recovery(self, now: float) -> None:
        """Fast retransmit / fast recovery (RFC 5681 3.2, RFC 6582, RFC 6675 5)."""
        self.ca_state = CA_RECOVERY
        self.recovery_point = self.snd_nxt
        self.high_rxt = self.snd_una
        lim = self.sb.lost_limit(self.snd_una, self.mss, self.reordering) if self.sack_ok else 0
        self.lost_end = self.snd_una
        self._mark_lost_to((self.snd_una + max(lim, self.mss)) & MASK)
        if self.sack_ok:
            self.counters["TCPSackRecovery"] += 1
        else:
            self.counters["TCPRenoRecovery"] += 1
        undo = self.undo
        if undo is None:
            undo = self.undo = RecoveryUndo()
        self._start_undo(undo)                         # (Linux tcp_init_undo)
        if self.cc is not None:
            if self.ecn & _ecn.ECN_IN_CWR and self.cc.ca_state == "recovery":
                # a loss during ECN's CWR: the reduction is under way -- no second one, PRR
                # goes on with its counts (Linux tcp_enter_recovery: tcp_init_cwnd_reduction
                # only when not tcp_in_cwnd_reduction; prior_ssthresh 0: not undone beyond it)
                self.ecn &= ~_ecn.ECN_IN_CWR
            else:
                self.cc.on_congestion_event(now, self._pipe())
                self.init_cwnd_reduction()
        self.rtt_time = None
        self.rtx_marks = ()
        self.relost = ()
        self.tlp_high = None
        if self.tlp_armed:               # the probe timer becomes the RTO again (tcp_rearm_rto)
            self.tlp_armed = False
            self._arm(self._t_rtx, now + self.rtt.rto)
        self.force_rtx = True            # RFC 6675 (4.3): retransmit the first segment now

    def _exit_recovery(self, now: float, undo: str | None = None) -> None:
        """Leave recovery or the loss state (also from the open state after a late DSACK undo).

        ``undo``: the reduction was spurious; the MIB counter to count it under (TCPFullUndo,
        TCPPartialUndo, TCPDSACKUndo, TCPLossUndo, as Linux): the window before the reduction
        comes back (Linux tcp_undo_cwnd_reduction) and what was marked lost is not retransmitted.
        Otherwise the congestion control ends the reduction (``cwnd = ssthresh`` after fast
        recovery, the PRR end state, RFC 9937 section 4)."""
        self.ca_state = CA_OPEN
        self.dupacks = 0
        self.reno_sacked = 0
        self.rtx_marks = ()
        self.relost = ()
        self.frto = 0
        self.force_rtx = False if undo else self.force_rtx
        self.high_rxt = self.lost_end = self.snd_una
        if self.rack is not None:
            self.rack.on_recovery_end(undo)
        if undo:
            self.counters[undo] += 1
            if self.undo is not None:
                self.undo.clear()
            if self.cc is not None:
                self.cc.undo(now)
        elif self.cc is not None:
            self.cc.on_recovery_exit(now)

    def init_cwnd_reduction(self) -> None:
        """Start a PRR reduction (RFC 9937 section 4; Linux ``tcp_init_cwnd_reduction``), after
        the congestion control set ``ssthresh``.  For fast recovery and ECN's CWR (Linux
        ``tcp_enter_cwr`` shares ``tcp_cwnd_reduction``; ``ecn.enter_cwr``): call this on entry, then
        :meth:`cwnd_reduction` per ACK, and ``cc.on_recovery_exit`` at the end."""
        prr = self.prr
        if prr is None:
            prr = self.prr = Prr()
        prr.start((self.snd_nxt - self.snd_una) & MASK)

    def cwnd_reduction(self, delivered: int, safe_ack: bool) -> None:
        """One ACK during a PRR reduction (Linux ``tcp_cwnd_reduction``): ``delivered`` is its
        DeliveredData in bytes, ``safe_ack`` RFC 9937's SafeACK.  Sets ``cwnd = pipe +
        sndcnt``, so ``_output`` sends exactly what PRR allows; an ACK that delivered nothing
        changes nothing (RFC 9937 section 4) unless nothing was sent yet (the fast retransmit)."""
        prr = self.prr
        if prr is None or (delivered <= 0 and prr.prr_out):
            return
        pipe = self._pipe()
        cc = self.cc
        cc.cwnd = pipe + prr.sndcnt(delivered if delivered > 0 else 0, pipe, cc.ssthresh, self.mss, safe_ack)

    def _mark_lost_to(self, end: int) -> None:
        """Everything not SACKed below ``end`` is lost (RFC 6675 IsLost / RFC 6582's partial
        ACK / RFC 8985's probe SACK): raise ``lost_end``, never above SND.NXT.  Every writer goes
        through here because ``_pipe`` and the retransmission loop count ``[SND.UNA, lost_end)``
        as sent-and-lost: a mark past SND.NXT (e.g. "SND.UNA + SMSS" with less than a segment
        outstanding) would later cover new data sent after it -- counted lost while in flight,
        and retransmitted at once."""
        if seq_gt(end, self.snd_nxt):
            end = self.snd_nxt
        if seq_gt(end, self.lost_end):
            self.lost_end = end

    def _pipe(self) -> int:
        """RFC 6675 pipe (Linux tcp_packets_in_flight in bytes): outstanding minus SACKed minus
        lost-and-not-yet-retransmitted."""
        una = self.snd_una
        out = (self.snd_nxt - una) & MASK
        if self.sack_ok:
            out -= self.sb.sacked
        else:
            out -= self.reno_sacked
        if self.ca_state != CA_OPEN:
            start = self.high_rxt if seq_gt(self.high_rxt, una) else una
            if seq_lt(start, self.lost_end):
                a = (start - una) & MASK
                b = (self.lost_end - una) & MASK
                lost = b - a
                if self.sack_ok and self.sb.blocks:
                    lost -= self.sb.sacked_in(una, a, b)
                out -= lost
            for s, e in self.relost:                  # retransmissions found lost again
                a = (s - una) & MASK
                b = (e - una) & MASK
                if a < HALF and b < HALF and b > a:
                    out -= (b - a) - (self.sb.sacked_in(una, a, b) if self.sb.blocks else 0)
        return out if out > 0 else 0

    # ---------------------------------------------------------------- data reception

    def _data_and_fin(self, seq: int, payload, plen: int, fin: bool, now: float) -> None:
        """RFC 9293 3.10.7.4 seventh and eighth (Linux tcp_data_queue + tcp_fin)."""
        rcv_nxt = self.rcv_nxt
        if plen:
            off = (seq - rcv_nxt) & MASK
            if off >= HALF:
                # starts before RCV.NXT: trim the old part (DSACK it, RFC 2883)
                dup = (rcv_nxt - seq) & MASK
                if self.sack_ok and self.config.dsack:
                    self.dsack = (seq, (seq + min(dup, plen)) & MASK)
                    self.counters["TCPDSACKOldSent"] += 1
                self.ack_pending = 2
                if dup >= plen:
                    if fin and (seq + plen) & MASK != rcv_nxt:
                        fin = False                   # an old FIN (already counted)
                    payload = b""
                    plen = 0
                    seq = rcv_nxt
                else:
                    payload = payload[dup:]
                    plen -= dup
                    seq = rcv_nxt
                off = 0
            # trim what lies beyond the advertised window
            wnd = (self.rcv_adv - rcv_nxt) & MASK
            if wnd >= HALF:
                wnd = 0
            if off + plen > wnd:
                keep = wnd - off
                if keep <= 0:
                    self.ack_pending = 2
                    return
                payload = payload[:keep]
                plen = keep
                fin = False
            if plen and off == 0:
                self._queue_in_order(payload, plen, now)
            elif plen:
                self._queue_ofo(seq, payload, plen, now)
                if fin:
                    self.ofo.fin_seq = (seq + plen) & MASK
                return
        if fin:
            fseq = (seq + plen) & MASK if plen else seq
            if fseq == self.rcv_nxt:
                self._rcv_fin(now)
            elif seq_gt(fseq, self.rcv_nxt):
                self.ofo.fin_seq = fseq
                self.ack_pending = 2
            else:
                self.ack_pending = 2          # old FIN retransmitted

    def _queue_in_order(self, payload, plen: int, now: float) -> None:
        """In-order data: append for end_batch, advance RCV.NXT, pull from the OOO queue.
        ``payload`` may be a list of consecutive chunks (software GRO, ip/gro.py).

        Chunks are kept as they come, also views into the link's receive buffers (valid only
        for the current batch): the one copy is the join at delivery (``_deliver``), and
        whatever is still queued when the batch ends is copied by ``pin_rx``, which ``ip/``
        calls for every connection the batch touched."""
        seg_len = plen
        if type(payload) is list:
            self.rx.extend(payload)
            seg_len = 0
            for p in payload:
                if len(p) > seg_len:
                    seg_len = len(p)     # tcp_measure_rcv_mss takes GRO's gso_size, not the total
        else:
            self.rx.append(payload)
        self.rx_unread += plen
        self.bytes_received += plen
        nxt = (self.rcv_nxt + plen) & MASK
        self.rcv_nxt = nxt
        if seg_len > self.rcv_mss:
            self.rcv_mss = min(seg_len, self.config.mss)
        ofo = self.ofo
        if ofo.segs or ofo.fin_seq is not None:
            filled = False
            while True:
                chunk = ofo.pop_ready(nxt)
                if chunk is None:
                    break
                filled = True
                if chunk:
                    self.rx.append(chunk)
                    n = len(chunk)
                    self.rx_unread += n
                    self.bytes_received += n
                    nxt = (nxt + n) & MASK
            self.rcv_nxt = nxt
            if filled:
                self.ack_pending = 2          # RFC 5681 4.2: ACK at once when a hole fills
            if ofo.fin_seq is not None and ofo.fin_seq == nxt:
                ofo.fin_seq = None
                self._rcv_fin(now)
                return
            if not ofo:
                ofo.fin_seq = None
        self._event_data_recv(now)

    def _event_data_recv(self, now: float) -> None:
        """Linux tcp_event_data_recv + __tcp_ack_snd_check: adapt ato, pick now vs delayed ACK."""
        cfg = self.config
        ato_min = cfg.delack_min
        if not self.ato:
            self._incr_quickack()
            self.ato = ato_min
        else:
            m = now - self.lrcvtime
            if m <= ato_min / 2:
                self.ato = self.ato / 2 + ato_min / 2
            elif m < self.ato:
                self.ato = self.ato / 2 + m
                rto = self.rtt.rto
                if self.ato > rto:
                    self.ato = rto
            elif m > self.rtt.rto:
                self._incr_quickack()
        self.lrcvtime = now
        if self.ack_pending == 2:
            return
        # more than one full-sized segment unacknowledged (RFC 5681 4.2, RFC 9293 SHLD-19),
        # quickack mode, or out-of-order data pending
        if ((self.rcv_nxt - self.rcv_wup) & MASK) > self.rcv_mss or self.quick or self.ofo.segs:
            self.ack_pending = 2
        else:
            self.ack_pending = 1

    def _incr_quickack(self) -> None:
        wnd = (self.rcv_adv - self.rcv_nxt) & MASK
        if wnd >= HALF:
            wnd = 0
        q = wnd // (2 * self.rcv_mss) if self.rcv_mss else 2
        if q < 2:
            q = 2
        self.quick = min(q, TCP_MAX_QUICKACKS)

    def _queue_ofo(self, seq: int, payload, plen: int, now: float) -> None:
        ofo = self.ofo
        self.counters["TCPOFOQueue"] += 1
        # (robustness issue) charge a per-range overhead (truesize) and make room like Linux
        # tcp_prune_queue -> tcp_prune_ofo_queue (PruneCalled / OfoPruned; RcvPruned + TCPOFODrop
        # when even that does not make room); see receive_buffer.OutOfOrderQueue.prune_after
        # (the rcvbuf/4 slack pays for the range overhead of a window full of MSS-sized holes, so
        # in-window data from a sane peer is never refused; a 1-byte-segment flood is bounded)
        over = (self.rx_unread + ofo.mem + plen + OFO_SEG_OVERHEAD
                - (self.rcvbuf + (self.rcvbuf >> 2) + self.mss))
        if over > 0:
            self.counters["PruneCalled"] += 1
            if ofo.prune_after(seq, self.rcv_nxt, over) >= over:
                self.counters["OfoPruned"] += 1
            else:
                self.counters["RcvPruned"] += 1
                self.counters["TCPOFODrop"] += 1
                self.ack_pending = 2
                return
        added, dup = ofo.insert(seq, payload if type(payload) is bytes else bytes(payload), self.rcv_nxt)
        if dup is not None and self.sack_ok and self.config.dsack:
            self.dsack = dup
            self.counters["TCPDSACKOfoSent"] += 1
        self.ack_pending = 2                  # RFC 5681 4.2: immediate ACK for out-of-order data

    def _rcv_fin(self, now: float) -> None:
        """FIN reached in sequence (RFC 9293 3.10.7.4 eighth, Linux tcp_fin)."""
        self.rcv_nxt = (self.rcv_nxt + 1) & MASK
        self.rcv_closed = True
        self.eof_pending = True
        self.ofo.clear()
        st = self.state
        if st == ESTABLISHED or st == SYN_RECEIVED:
            self._set_state(CLOSE_WAIT)
            # Linux enters pingpong mode: the ACK is delayed so that a FIN from the
            # application's close() can ride on it -- unless quickack mode is on.
            self.quick = 0
            if self.ack_pending != 2:
                # ... but Linux __tcp_ack_snd_check still ACKs at once when more than one full
                # segment is unacknowledged, and the FIN counts: a delayed-ACK'd last segment + FIN
                # must not wait for the delayed-ACK timer (the peer's tail loss probe would fire
                # first and retransmit the last segment spuriously)
                self.ack_pending = 2 if ((self.rcv_nxt - self.rcv_wup) & MASK) > self.rcv_mss else 1
        elif st == FIN_WAIT_1:
            self.ack_pending = 2
            if self.fin_sent and self.snd_una == self.snd_nxt:
                self._enter_time_wait(now)
            else:
                self._set_state(CLOSING)
        elif st == FIN_WAIT_2:
            self.ack_pending = 2
            self._enter_time_wait(now)

    def _deliver(self, now: float) -> None:
        """Hand buffered in-order data (then EOF) to the handler, if reading."""
        h = self.handler
        if h is None or not self.reading or self.closed_by_app or self._notified:
            return
        rx = self.rx
        if rx:
            # the one copy of the data (views into the link's buffers, GRO parts) into the bytes
            # the handler gets; large ones into pages populated in one go (rx_copy.py)
            n = self.rx_unread
            data = _rx_join(rx, n)
            rx.clear()
            self.rx_unread = 0
            if now is not None:
                self._rcv_space_adjust(n, now)
            h.tcp_data(data)
            if self.state == CLOSED or self.closed_by_app:
                return
        if self.eof_pending and not self.rx:
            self.eof_pending = False
            self.eof_delivered = True
            h.tcp_eof()
            if self.state == CLOSED:
                return
            if self.state == TIME_WAIT or self.state == CLOSED:
                self._notify(None)

    def pin_rx(self) -> None:
        """Copy the queued data that still refers to the link's receive buffers (a view whose
        underlying object is not immutable ``bytes``) before the link reuses them; called by
        ``ip/`` at the end of every receive batch for the connections it touched.  Usually
        ``rx`` is empty by then (``end_batch`` delivered it); it holds data only while the
        application is not reading or the connection waits in an accept queue."""
        rx = self.rx
        for i, p in enumerate(rx):
            if type(p) is not bytes and (type(p) is not memoryview or type(p.obj) is not bytes):
                rx[i] = bytes(p)

    def _rcv_space_adjust(self, copied: int, now: float) -> None:
        """Receive-buffer auto-tuning (Linux tcp_rcv_space_adjust): once per RTT, if the
        application drained more than half the buffer, grow it toward rcvbuf_max."""
        cfg = self.config
        if not cfg.moderate_rcvbuf:
            return
        self.rcvq_copied += copied
        srtt = self.rtt.srtt
        lim = cfg.delack_min
        if srtt and srtt > lim:
            lim = srtt                       # (max(srtt, delack_min) without the call)
        if now - self.rcvq_time < lim:
            return
        c = self.rcvq_copied
        self.rcvq_copied = 0
        self.rcvq_time = now
        if 2 * c > self.rcvbuf and self.rcvbuf < cfg.rcvbuf_max:
            self.rcvbuf = min(cfg.rcvbuf_max, max(self.rcvbuf * 2, 4 * c))

    # ================================================================== output

    def _tsval(self, now: float) -> int:
        return (int(now * 1000) + self.ts_offset) & MASK

    def _select_window(self) -> int:
        """Window field to advertise (Linux __tcp_select_window/tcp_select_window with RFC 1122
        4.2.3.3 receiver SWS avoidance); never shrinks the right edge (RFC 9293 SHLD-14)."""
        field, self.rcv_adv = _select_window(self.rcvbuf - self.rx_unread - self.ofo.nbytes, self.rcv_adv,
                                             self.rcv_nxt, self.rcv_wscale, self.rcvbuf, self.rcv_mss)
        return field

    def _sack_blocks(self) -> tuple:
        limit = max_sack_blocks(self.ts_ok)
        out = []
        if self.dsack is not None:
            out.append(self.dsack)
            limit -= 1
        if self.ofo.segs:
            out.extend(self.ofo.blocks(self.rcv_nxt, limit))
        return tuple(out)

    def _transmit(self, seq: int, data, flags: int, now: float) -> None:
        """Build one (possibly TSO-sized) segment and hand it to ``output``; every segment but a
        bare SYN carries the current ACK and window, so it clears any pending ACK."""
        c = self.clock
        if now < c:
            now = c                               # (never an older TSval: see _output)
        else:
            self.clock = now
        if self.ecn:
            flags = _ecn.out_flags(self, seq, len(data), flags)
        blocks = ()
        if self.sack_ok and (self.dsack is not None or self.ofo.segs):
            blocks = self._sack_blocks()
        rcv_nxt = self.rcv_nxt
        win, self.rcv_adv = _select_window(self.rcvbuf - self.rx_unread - self.ofo.nbytes, self.rcv_adv,
                                           rcv_nxt, self.rcv_wscale, self.rcvbuf, self.rcv_mss)
        fast = None                            # (above: _select_window(), inline)
        if self.ts_ok:
            tsval = (int(now * 1000) + self.ts_offset) & MASK
            if not blocks:
                fast = self._fast_out          # the route's output_ts (ip/core.py), or None
            opts = NO_OPTIONS if fast is not None else TcpOptions(None, None, False, blocks, (tsval, self.ts_recent))
        elif blocks:
            opts = TcpOptions(None, None, False, blocks)
        else:
            opts = NO_OPTIONS
        hdr = None if fast is not None else TcpHeader(self.lport, self.rport, seq, rcv_nxt, flags, win, opts)
        # (_ack_carried(rcv_nxt, 1), inline)
        self.rcv_wup = rcv_nxt
        self.last_ack_sent = rcv_nxt
        self.dsack = None
        if self.ack_pending:
            self.ack_pending = 0
            if self._t_dack._slot is not None:
                self.wheel.cancel(self._t_dack)
        q = self.quick
        if q:
            self.quick = q - 1
        n = len(data)
        mss = self.mss
        self.counters["OutSegs"] += 1 if n <= mss else (n + mss - 1) // mss
        if fast is not None:
            if fast.output_ts(self.lport, self.rport, seq, rcv_nxt, flags, win, tsval, self.ts_recent, data):
                return
            hdr = TcpHeader(self.lport, self.rport, seq, rcv_nxt, flags, win,
                            TcpOptions(None, None, False, (), (tsval, self.ts_recent)))
        if self.snd_urg:
            self._output_urg(hdr, data)       # (urgent mode: _fast_out is None, so we are here)
            return
        self.output(hdr, data)

    def _output_urg(self, hdr: TcpHeader, data) -> None:
        """``output`` in urgent mode: URG and the pointer on each segment that starts before
        SND.UP (RFC 9293 3.8.5, tcp/urgent.py ``send_pointer``).  A TSO-sized payload is cut
        into MSS-sized segments here, each with its own pointer: ``ip/``'s split (and the
        kernel's GSO behind a vnet header) would copy one pointer into every piece.  Once SND.UNA
        has reached SND.UP urgent mode ends."""
        snd_up = self.snd_up
        if not _urg.urgent_bytes(snd_up, self.snd_una):
            self._urg_send_done()
            self.output(hdr, data)
            return
        snd_nxt = self.snd_nxt
        seq = hdr.seq
        n = len(data)
        mss = self.mss
        if n <= mss:
            up = _urg.send_pointer(seq, snd_up, snd_nxt)
            if up != _urg.NO_URG:
                hdr.flags |= URG
                hdr.urgent = up
            self.output(hdr, data)
            return
        last_flags = hdr.flags
        mid_flags = last_flags & ~(FIN | PSH)
        mv = data if type(data) is memoryview else memoryview(data)
        for off in range(0, n, mss):
            end = off + mss
            s = (seq + off) & MASK
            flags = last_flags if end >= n else mid_flags
            up = _urg.send_pointer(s, snd_up, snd_nxt)
            if up == _urg.NO_URG:
                up = 0
            else:
                flags |= URG
            self.output(TcpHeader(hdr.src_port, hdr.dst_port, s, hdr.ack, flags, hdr.window, hdr.options,
                                  0, up), mv[off:end])

    def _transmit_burst(self, segs: list, outsegs: int, now: float) -> None:
        """:meth:`_transmit` for the new segments of one ``_output`` call (NOP,NOP,TS only, no
        SACK blocks): ``segs`` = ``[(seq, flags, payload_parts, payload_len), ...]`` (``outsegs``
        MSS-sized segments in all).  ACK, window and timestamps are the same for all of them
        (nothing was received in between), so they and the ACK bookkeeping are done once and the
        route builds and sends every frame in one call (``Route.output_ts_burst``); where it
        declines, segment by segment through ``_transmit``."""
        rcv_nxt = self.rcv_nxt
        win = self._select_window()
        tsval = self._tsval(now)
        if self.ecn:
            segs = _ecn.burst_flags(self, segs)
        if not self._fast_out.output_ts_burst(self.lport, self.rport, rcv_nxt, win, tsval, self.ts_recent, segs):
            if self.ecn:
                self.ecn_high = segs[0][0]            # (each goes through out_flags again)
            for seq, flags, parts, n in segs:
                self._transmit(seq, parts[0] if len(parts) == 1 else b"".join(parts), flags, now)
            return
        self._ack_carried(rcv_nxt, len(segs))
        self.counters["OutSegs"] += outsegs

    def _ack_carried(self, rcv_nxt: int, frames: int) -> None:
        """``frames`` segments carrying ACK = ``rcv_nxt`` and the window just selected are being
        sent: no ACK is owed any more (the delayed-ACK timer stops), the DSACK block went out,
        and each one uses up a quick ACK (Linux tcp_event_ack_sent)."""
        self.rcv_wup = rcv_nxt
        self.last_ack_sent = rcv_nxt
        self.dsack = None
        if self.ack_pending:
            self.ack_pending = 0
            if self._t_dack.pending:
                self.wheel.cancel(self._t_dack)
        q = self.quick
        if q:
            self.quick = q - frames if q > frames else 0

    def _send_ack(self, now: float) -> None:
        st = self.state
        if st == CLOSED or st == SYN_SENT or st == LISTEN:
            self.ack_pending = 0
            return
        self._transmit(self.snd_nxt, b"", ACK, now)

    def _send_syn(self, now: float) -> None:
        """SYN (SYN_SENT) or SYN-ACK (SYN_RECEIVED) with our options (RFC 9293 3.7.1, RFC 7323,
        RFC 2018); the window in a SYN is never scaled (RFC 7323 2.2)."""
        cfg = self.config
        synack = self.state == SYN_RECEIVED
        if synack:
            ws = self.rcv_wscale if self.ws_ok else None
            sackp = self.sack_ok
            ts = (self._tsval(now), self.ts_recent) if self.ts_ok else None
        else:
            win = self.rcvbuf if self.rcvbuf < 65535 else 65535
            fast = self._fast_out
            ecn_flags = _ecn.syn_flags(cfg, self.n_rtx > 0) if cfg.ecn == 1 else 0   # RFC 3168 6.1.1
            if fast is not None and cfg.window_scaling and cfg.sack and cfg.timestamps and fast.output_syn(
                    self.lport, self.rport, self.iss, win, cfg.mss, self.rcv_wscale,
                    (int(now * 1000) + self.ts_offset) & MASK, SYN | ecn_flags):
                self.counters["OutSegs"] += 1          # (the usual SYN, packed by the route)
                return
            ws = self.rcv_wscale if cfg.window_scaling else None
            sackp = cfg.sack
            ts = ((int(now * 1000) + self.ts_offset) & MASK, 0) if cfg.timestamps else None   # (_tsval)
        opts = TcpOptions(mss=cfg.mss, wscale=ws, sack_permitted=sackp, timestamp=ts)
        win = min(self.rcvbuf, 65535)
        if synack:
            self.rcv_adv = (self.rcv_nxt + win) & MASK
            self.rcv_wup = self.rcv_nxt
            self.last_ack_sent = self.rcv_nxt
            # ECN-setup SYN-ACK: ECE alone (RFC 3168 6.1.1; Linux tcp_ecn_send_synack)
            hdr = TcpHeader(self.lport, self.rport, self.iss, self.rcv_nxt,
                            SYN | ACK | (ECE if self.ecn else 0), win, opts)
            self.ack_pending = 0
        else:
            hdr = TcpHeader(self.lport, self.rport, self.iss, 0, SYN | ecn_flags, win, opts)
        self.counters["OutSegs"] += 1
        self.output(hdr, b"")

    def _send_rst(self, seq: int, ack: int, flags: int, now: float) -> None:
        self.counters["OutRsts"] += 1
        self.counters["OutSegs"] += 1
        self.output(TcpHeader(self.lport, self.rport, seq & MASK, ack & MASK, flags, 0), b"")

    def _send_rst_now(self, now: float) -> None:
        """Active reset from a synchronized state (Linux tcp_send_active_reset: SEQ=SND.NXT)."""
        self._send_rst(self.snd_nxt, self.rcv_nxt, RST | ACK, now)

    def _challenge_ack(self, now: float) -> None:
        """RFC 5961 challenge ACK, rate limited to config.challenge_ack_limit per second (per
        connection here; Linux also keeps a per-netns limit)."""
        if challenge_ack_allowed(self, now):
            self._transmit(self.snd_nxt, b"", ACK, now)

    def _schedule_delack(self, now: float) -> None:
        """Arm the delayed-ACK timer (Linux tcp_send_delayed_ack): min(ato, srtt, delack_max)."""
        cfg = self.config
        ato = self.ato or cfg.delack_min
        max_ato = cfg.delack_max
        srtt = self.rtt.srtt
        if srtt:
            r = srtt if srtt > cfg.delack_min else cfg.delack_min
            if r < max_ato:
                max_ato = r
        if ato > max_ato:
            ato = max_ato
        when = now + ato
        t = self._t_dack
        if t.pending and t.expires <= when:
            return
        self.wheel.arm(t, when)

    def _output(self, now: float, more: bool = False) -> None:
        """Send what the windows allow (Linux tcp_write_xmit + tcp_xmit_retransmit_queue):
        first lost segments (RFC 6675 NextSeg rule 1 / RFC 6582), then new data subject to
        rwnd, cwnd, sender SWS avoidance and Nagle (RFC 9293 3.7.4), then FIN."""
        st = self.state
        if st not in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK):
            return
        # The connection's clock never runs backwards.  A batch of ACKs is processed at the
        # ``now`` read when it arrived; an application that writes from ``resume_writing`` (a
        # callback inside that batch) sends with a later ``now``, and what the batch sends after
        # it would carry an *older* TSval than segments already on the wire: the peer's PAWS
        # (RFC 7323 5.3; Linux tcp_paws_discard allows one tick) drops them as old duplicates
        # and answers with duplicate ACKs -- a recovery for nothing (before RACK, 40 such
        # segments went back one per delayed ACK: 1.7 s; PERF_LOG step 31).  RACK's send-time
        # order (RFC 8985) and the RTT stamps need the same.
        c = self.clock
        if now < c:
            now = c
        else:
            self.clock = now
        sndbuf = self.sndbuf
        buf_end = sndbuf.end_seq           # (retransmitting below does not change it, nor SND.NXT)
        nothing_new = buf_end == self.snd_nxt and (self.fin_sent or not self.fin_queued)
        if nothing_new and self.ca_state == CA_OPEN and not self.force_rtx:
            return        # the common call after a batch: nothing to retransmit, nothing new
        cc = self.cc
        cwnd = cc.cwnd if cc is not None else self.config.initial_cwnd * self.mss
        mss = self.mss
        una = self.snd_una
        pipe = -1
        # ---- retransmissions in recovery / loss
        if (self.ca_state != CA_OPEN or self.force_rtx) and self.frto != 2:
            relost = self.relost
            while relost:
                s, e = relost[0]
                a = (s - una) & MASK
                b = (e - una) & MASK
                if b == 0 or b >= HALF:
                    del relost[0]
                    continue
                if a >= HALF:
                    a = 0
                if self.sb.blocks:
                    hole = self.sb.next_hole(una, a, b)
                    if hole is None:
                        del relost[0]
                        continue
                    a, b = hole
                if cwnd - self._pipe() < mss:
                    break
                end = self._retransmit((una + a) & MASK, min(b - a, mss), now)
                if seq_ge(end, e):
                    del relost[0]
                else:
                    relost[0][0] = end
            while True:
                start = self.high_rxt if seq_gt(self.high_rxt, una) else una
                if not seq_lt(start, self.lost_end):
                    break
                a = (start - una) & MASK
                b = (self.lost_end - una) & MASK
                if self.sack_ok and self.sb.blocks:
                    hole = self.sb.next_hole(una, a, b)
                    if hole is None:
                        self.high_rxt = self.lost_end
                        break
                    a, b = hole
                if not self.force_rtx and cwnd - self._pipe() < mss:
                    break
                self.force_rtx = False
                seq = (una + a) & MASK
                end = self._retransmit(seq, min(b - a, mss), now)
                self.high_rxt = end
            self.force_rtx = False
        # ---- new data
        if nothing_new:
            return                                    # nothing new to send
        if una == self.snd_nxt and cc is not None and now - self.last_send > self.rtt.rto and buf_end != una:
            # RFC 5681 4.1 (Linux tcp_cwnd_restart): restart window after an idle period
            cc.restart_after_idle(now, self.rtt.rto)
            cwnd = cc.cwnd
        sent_new = False
        cfg = self.config
        burst = None
        if self.sack_ok and (self.dsack is not None or self.ofo.segs):
            seg_mss = mss - 4 - 8 * max_sack_blocks(self.ts_ok)   # room for SACK blocks
            lim_tso = seg_mss
        else:
            seg_mss = mss
            lim_tso = cfg.tso_segs * mss
            if self.ts_ok and (self._fast_out is not None or (self.snd_urg and self._urg_send_check())):
                burst = []        # NOP,NOP,TS segments: headers for all of them at once, after the loop
        outsegs = 0
        # (urgent mode: no Nagle, no cork -- Linux tcp_nagle_test; nor F-RTO's new data of step
        # 2b, which Linux pushes with TCP_NAGLE_OFF)
        nagle = (cfg.cork or not cfg.nodelay) and not self.snd_urg and self.frto != 2
        snd_wnd_end = (una + self.snd_wnd) & MASK
        pipe = self._pipe()
        counters = self.counters
        nxt = nxt0 = self.snd_nxt
        rto_due = False
        while True:
            avail = (buf_end - nxt) & MASK
            if avail >= HALF:
                avail = 0
            want_fin = self.fin_queued and not self.fin_sent
            if not avail and not want_fin:
                break
            wnd_room = (snd_wnd_end - nxt) & MASK
            if wnd_room >= HALF:
                wnd_room = 0                          # the window shrank below SND.NXT
            cwnd_room = cwnd - pipe
            if cwnd_room < 0:
                cwnd_room = 0
            limit = wnd_room if wnd_room < cwnd_room else cwnd_room
            if limit > lim_tso:
                limit = lim_tso
            if limit == lim_tso and avail > lim_tso and burst is not None and BULK_RUNS:
                # a run of full TSO frames (bulk send): neither the last bytes (PSH, FIN, the held
                # tail, Nagle) nor a window edge are in it, so each frame is what the general
                # step below would make -- ACK only, lim_tso bytes -- and its bookkeeping
                # (counters, pipe, the timer) is done once for the run
                m = (avail - 1) // lim_tso
                room = (wnd_room if wnd_room < cwnd_room else cwnd_room) // lim_tso
                if room < m:
                    m = room
                k = m * (lim_tso // seg_mss)
                counters["TCPOrigDataSent"] += k
                outsegs += k
                add = burst.append
                for parts in sndbuf.parts_run(nxt, lim_tso, m):
                    add((nxt, ACK, parts, lim_tso))
                    nxt = (nxt + lim_tso) & MASK
                pipe += m * lim_tso
                sent_new = True
                if self.probe_mode or (not rto_due and not self._t_rtx.pending):
                    self.probe_mode = False          # (RFC 6298 5.1, as in the general step)
                    self.persist_backoff = 0
                    if una == self.snd_nxt:
                        self.last_progress = now
                    rto_due = True
                self.snd_nxt = nxt
                continue
            if avail <= limit:
                n = avail
                if more and sent_new and n < lim_tso and not want_fin:
                    self.tail_held = True
                    break
                if nagle and n % seg_mss and not want_fin and (
                        cfg.cork or (((una - self.snd_sml) & MASK) >= HALF and nxt != una)):
                    # a partial last segment: Nagle (RFC 9293 3.7.4, Minshall's variant as
                    # Linux: only while a small segment is unacknowledged) or TCP_CORK holds it
                    n -= n % seg_mss
                    if n == 0:
                        break
            elif limit >= seg_mss:
                n = limit - limit % seg_mss
            elif (wnd_room and wnd_room <= cwnd_room and self.max_snd_wnd
                  and wnd_room >= self.max_snd_wnd // 2):
                n = wnd_room                          # sender SWS: at least half the max window
            else:
                break
            fin = FIN if (want_fin and n == avail and wnd_room > n) else 0
            if n == 0 and not fin:
                break
            flags = ACK | fin
            if n:
                if n == avail:
                    flags |= PSH
                k = 1 if n <= seg_mss else (n + seg_mss - 1) // seg_mss
                counters["TCPOrigDataSent"] += k
            else:
                k = 1
            if burst is not None:
                burst.append((nxt, flags, sndbuf.parts(nxt, n) if n else (), n))
                outsegs += k
            else:
                self._transmit(nxt, sndbuf.get(nxt, n) if n else b"", flags, now)
            sent_new = True
            end = (nxt + n) & MASK
            if n % seg_mss:
                self.snd_sml = end
            if fin:
                self.fin_sent = True
                end = (end + 1) & MASK
            pipe += n + (1 if fin else 0)
            if self.rtt_time is None and not self.ts_ok:
                self.rtt_seq = end
                self.rtt_time = now
            if self.probe_mode or (not rto_due and not self._t_rtx.pending):
                # RFC 6298 5.1: start the timer (armed after the loop: as the tail loss probe
                # timer when that applies, else as the RTO -- one wheel operation, not two)
                self.probe_mode = False
                self.persist_backoff = 0
                if una == nxt:
                    self.last_progress = now
                rto_due = True
            nxt = self.snd_nxt = end
            if fin:
                break
        if burst:
            if len(burst) > 1:
                self._transmit_burst(burst, outsegs, now)
            else:                                     # one segment: the plain path is shorter
                seq, flags, parts, n = burst[0]
                self._transmit(seq, parts[0] if len(parts) == 1 else b"".join(parts), flags, now)
        if self.frto == 2:
            if self.snd_nxt != nxt0:
                self.frto = 1             # (F-RTO step 2b done: the next ACK decides)
            else:
                # no new data could go out after all (window, SWS, cwnd): RFC 5682 step 2b's
                # fallback to the conventional recovery, now, as Linux tcp_xmit_recovery (else
                # nothing is sent on this ACK, and with nothing in flight the next RTO repairs)
                self.frto = 0
                self._output(now, more)
                return
        if sent_new:
            self.last_send = now
            if self.rack is not None:
                self.rack.on_send(self.snd_nxt, now, una)      # (RACK: the originals' time)
            if (self.ca_state != CA_OPEN or self.ecn & _ecn.ECN_IN_CWR) and self.prr is not None:
                # PRR counts new data too (in any reduction state: recovery, an ECN CWR)
                self.prr.prr_out += (self.snd_nxt - nxt0) & MASK
            if not (self.sack_ok and self.ca_state == CA_OPEN and self._schedule_tlp(now, rto_due)) and rto_due:
                self.wheel.arm(self._t_rtx, now + self.rtt.rto)
        # ---- zero window: persist timer (RFC 9293 3.8.6.1, Linux tcp_check_probe_timer)
        if not sent_new and self.snd_una == self.snd_nxt:
            pending = ((buf_end - self.snd_nxt) & MASK) or (self.fin_queued and not self.fin_sent)
            if pending and not self._t_rtx.pending:
                self.probe_mode = True
                self._arm(self._t_rtx, now + self._probe_interval())

    def _retransmit(self, seq: int, n: int, now: float, timeout: bool = False) -> int:
        """Retransmit up to ``n`` sequence numbers from ``seq`` (data, and FIN if it is there);
        returns the sequence number after what was sent."""
        c = self.clock
        if now < c:
            # (a timer's ``now`` -- the RTO's, the loss probe's -- can lie behind the clock, see
            # _output): _transmit stamps the clock, and RACK's transmission time and Eifel's
            # retrans_stamp below must record that same time, else originals sent earlier look
            # sent later and the retransmission is "lost" again when they are delivered
            now = c
        sndbuf = self.sndbuf
        # only what was sent before: up to SND.NXT, never into data written since (a lost-range
        # end such as RFC 6582's "ACK + MSS" may lie beyond SND.NXT when the last segment was
        # short; sending past it would let the peer ACK beyond SND.NXT, an ACK we must drop)
        avail = (self.snd_nxt - seq) & MASK
        if avail >= HALF:
            avail = 0
        buffered = (sndbuf.end_seq - seq) & MASK
        if buffered < avail or buffered >= HALF:
            avail = buffered if buffered < HALF else 0
        d = n if n < avail else avail
        flags = ACK
        end = (seq + d) & MASK
        if self.fin_sent and end == self.fin_seq and d < n + 1 and (d == avail):
            flags |= FIN
        if d == 0 and not flags & FIN:
            return (seq + n) & MASK
        data = sndbuf.get(seq, d) if d else b""
        if d and d == avail:
            flags |= PSH
        self._transmit(seq, data, flags, now)
        self.retransmits += 1
        self.counters["RetransSegs"] += 1
        if self.rack is not None:
            self.rack.on_retransmit(seq, end, now)
        hw = (self.rtx_hw - self.snd_una) & MASK
        if not 0 < hw <= ((self.snd_nxt - self.snd_una) & MASK) or seq_gt(end, self.rtx_hw):
            self.rtx_hw = end                         # (stale below SND.UNA, or a higher one)
        if self.undo is not None and self.undo.undo_marker is not None:
            self.undo.on_retransmit(seq, end, 1, self._tsval(now) if self.ts_ok else None)
        if (self.ca_state != CA_OPEN or self.ecn & _ecn.ECN_IN_CWR) and self.prr is not None:
            self.prr.prr_out += d + (1 if flags & FIN else 0)      # (PRR: sent during a reduction)
        if self.ca_state == CA_RECOVERY and self.sack_ok and not timeout:
            if not self.rtx_marks:
                self.rtx_marks = []
            self.rtx_marks.append([seq, end, self.snd_nxt])
        if timeout:
            pass                                      # counted as TCPTimeouts by the caller
        elif self.ca_state == CA_LOSS:
            self.counters["TCPSlowStartRetrans"] += 1
        else:
            self.counters["TCPFastRetrans"] += 1
        self.rtt_time = None                          # Karn
        return (end + 1) & MASK if flags & FIN else end

    def _probe_interval(self) -> float:
        rto = self.rtt.rto
        base = rto if rto > self.config.rto_min else self.config.rto_min
        t = base * (1 << min(self.persist_backoff, 16))
        return t if t < self.config.rto_max else self.config.rto_max

    # ================================================================== timers

    def _arm(self, timer: Timer, when: float) -> None:
        self.wheel.arm(timer, when)

    def _cancel(self, timer: Timer) -> None:
        if timer._slot is not None:                   # (pending)
            self.wheel.cancel(timer)

    def _on_rtx_timer(self, now: float) -> None:
        """Retransmission timer (RFC 6298 5.4-5.7, Linux tcp_retransmit_timer) and, when nothing
        is outstanding, the zero-window probe timer (Linux tcp_probe_timer)."""
        st = self.state
        cfg = self.config
        if st == SYN_SENT or (st == SYN_RECEIVED and not self.passive):
            if self.n_rtx >= cfg.syn_retries:
                self._finish(TimeoutError(110, "Connection timed out"))
                return
            if self.n_rtx >= cfg.retries1:
                self._negative_advice(now)
            self._syn_retransmit(self._t_rtx, now)
            return
        if st not in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK):
            return
        rack = self.rack
        if rack is not None and rack.reo_at is not None and rack.reo_at == self._t_rtx.expires:
            rack.reo_at = None                        # RACK's reordering timer, not the RTO
            self._rack_timeout(now)
            return
        if self.tlp_armed:
            self.tlp_armed = False
            if not self.probe_mode and self.snd_una != self.snd_nxt and self.ca_state == CA_OPEN:
                self._send_loss_probe(now)
                return
            if not self.probe_mode and self.snd_una != self.snd_nxt:
                # no longer eligible (recovery began): this was not the RTO, arm that
                self._arm(self._t_rtx, now + self.rtt.rto)
                return
        if self.probe_mode:
            self._probe_timer(now)
            return
        if self.snd_una == self.snd_nxt:
            return
        ut = cfg.user_timeout
        zero_wnd = self.snd_wnd == 0 and not self.closed_by_app
        if zero_wnd:
            # Linux tcp_retransmit_timer: the receiver shrank its window to zero; our
            # retransmissions are window probes and the connection lives as long as the peer
            # answers (RFC 9293 MUST-37, SHLD-17): give up only after rto_max of silence.
            if now - self.last_rcv_time > cfg.rto_max or (ut and now - self.last_progress >= ut):
                self.counters["TCPAbortOnTimeout"] += 1
                self._finish(TimeoutError(110, "Connection timed out"))
                return
        elif self.n_rtx >= cfg.retries2 or (ut and now - self.last_progress >= ut):
            self.counters["TCPAbortOnTimeout"] += 1
            self._finish(TimeoutError(110, "Connection timed out"))
            return
        self.counters["TCPTimeouts"] += 1
        self.rtx_marks = ()
        self.relost = ()
        if rack is not None:
            rack.reset()                              # (everything outstanding is lost now)
        self.tlp_high = None
        if self.config.mtu_probing:
            # (PMTUD issue) black-hole detection (Linux tcp_write_timeout -> tcp_mtu_probing):
            # after tcp_retries1 RTOs the MSS drops, so the retransmission below is smaller
            _mtu_probe.on_rto(self, now)
        if self.n_rtx >= cfg.retries1 and not zero_wnd:
            # (with a zero window the peer is answering our probes: the path is fine; Linux's
            # zero-window branch skips tcp_write_timeout too)
            self._negative_advice(now)
        # RFC 5681 3.1 / RFC 6298 5.5-5.6: collapse cwnd, back off, retransmit the head;
        # Linux enters CA_Loss and retransmits everything not SACKed in slow start.
        if self.ca_state == CA_OPEN:
            undo = self.undo                          # (Linux tcp_enter_loss -> tcp_init_undo;
            if undo is None:                          # from recovery its marker is kept)
                undo = self.undo = RecoveryUndo()
            self._start_undo(undo)
            if self.sb.sacked >= INITIAL_REORDERING * self.mss and self.reordering > INITIAL_REORDERING:
                # a timeout with DupThresh segments SACKed and no recovery: the reordering degree
                # was over-estimated (a SACK lost on the way looks like reordering); back to 3
                # (Linux tcp_enter_loss)
                self.reordering = INITIAL_REORDERING
        self.ecn &= ~_ecn.ECN_IN_CWR                  # (CWR, if any, becomes the loss state)
        # F-RTO (RFC 5682; Linux tcp_enter_loss: not for the first timeout of a fast recovery)
        self.frto = 1 if self.sack_ok and self.ca_state != CA_RECOVERY else 0
        if self.cc is not None:
            self.cc.on_rto(now, self._pipe())
        self.ca_state = CA_LOSS
        self.recovery_point = self.snd_nxt
        self.high_rxt = self.snd_una
        self.lost_end = self.snd_nxt
        self.reno_sacked = 0
        self.dupacks = 0
        self.rtt_time = None
        self.rtt.backoff()
        self.n_rtx += 1
        una = self.snd_una
        if self.sb.blocks:
            hole = self.sb.next_hole(una, 0, (self.snd_nxt - una) & MASK)
            a, b = hole if hole is not None else (0, self.mss)
        else:
            a, b = 0, (self.snd_nxt - una) & MASK
        self.high_rxt = self._retransmit((una + a) & MASK, min(b - a, self.mss), now, timeout=True)
        when = now + self.rtt.rto
        if ut:
            when = min(when, self.last_progress + ut) if self.last_progress + ut > now else when
        self._arm(self._t_rtx, when)

    def _negative_advice(self, now: float) -> None:
        """RFC 9293 3.8.3 (MUST-20, SHLD-10; RFC 1122 4.2.3.5): the segment has been retransmitted
        R1 times (``config.retries1``, Linux ``tcp_retries1``: 3) without an answer, so IP gets
        negative advice -- at this and every later timeout, as Linux's ``tcp_write_timeout``
        calls ``__dst_negative_advice`` -- to trigger dead-gateway diagnosis (the route's
        neighbour is re-confirmed, ``ip.core.Route.negative_advice``).  Linux advises on every
        SYN retransmission; we wait for R1 there too (the neighbour was just resolved for the
        SYN).  The route is the object behind ``output`` (a bound ``Route.output``, as for
        ``_fast_out``); a plain callable (a test harness) has nobody to advise.  Counted
        ``TCPNegativeAdvice`` (our name; Linux has no counter for it)."""
        self.counters["TCPNegativeAdvice"] += 1
        advise = getattr(getattr(self.output, "__self__", None), "negative_advice", None)
        if advise is not None:
            advise(now)

    def _syn_retransmit(self, timer: Timer, now: float) -> None:
        """Retransmit our SYN / SYN-ACK with exponential backoff: 1 s, 2 s, 4 s ... (RFC 6298
        5.5, Linux TCP_TIMEOUT_INIT)."""
        self.n_rtx += 1
        self.retransmits += 1
        self.counters["TCPTimeouts"] += 1
        self.counters["RetransSegs"] += 1
        self.counters["TCPSynRetrans"] += 1
        self.rtt.backoff()
        self._send_syn(now)
        self._arm(timer, now + self.rtt.rto)

    def _synack_timer(self, now: float) -> None:
        """SYN-ACK retransmission of a passive open, bounded by synack_retries (Linux
        reqsk_timer_handler / tcp_synack_retries)."""
        if self.n_rtx >= self.config.synack_retries:
            self._finish(TimeoutError(110, "Connection timed out"))
            return
        self._syn_retransmit(self._t_ka, now)

    def _probe_timer(self, now: float) -> None:
        cfg = self.config
        pending = ((self.sndbuf.end_seq - self.snd_nxt) & MASK) or (self.fin_queued and not self.fin_sent)
        if not pending or self.snd_una != self.snd_nxt:
            self.probe_mode = False
            return
        ut = cfg.user_timeout
        if self.probes_out >= cfg.retries2 or (ut and self.probes_out and now - self.last_progress >= ut):
            self.counters["TCPAbortOnTimeout"] += 1
            self._finish(TimeoutError(110, "Connection timed out"))
            return
        wnd_room = (self.snd_una + self.snd_wnd - self.snd_nxt) & MASK
        if wnd_room and wnd_room < HALF:
            # tcp_write_wakeup: the window is open a little: send what fits
            self.probe_mode = False
            n = min(wnd_room, (self.sndbuf.end_seq - self.snd_nxt) & MASK, self.mss)
            nxt = self.snd_nxt
            if n:
                self._transmit(nxt, self.sndbuf.get(nxt, n), ACK | PSH, now)
                self.snd_nxt = (nxt + n) & MASK
                self.counters["TCPOrigDataSent"] += 1
            else:
                self._output(now)
            self.probes_out += 1
            self.persist_backoff += 1
            self._arm(self._t_rtx, now + self._probe_interval())
            return
        # zero window: a probe with an old sequence number elicits an ACK with the window
        # (Linux tcp_xmit_probe_skb: SEQ=SND.UNA-1, no data)
        self.counters["TCPWinProbe"] += 1
        self._transmit((self.snd_una - 1) & MASK, b"", ACK, now)
        self.probes_out += 1
        self.persist_backoff += 1
        self._arm(self._t_rtx, now + self._probe_interval())

    def _on_dack_timer(self, now: float) -> None:
        """Delayed-ACK timer (Linux tcp_delack_timer_handler)."""
        if self.ack_pending and self.state != CLOSED:
            self.counters["DelayedACKs"] += 1
            self._send_ack(now)

    def _on_ka_timer(self, now: float) -> None:
        """Keepalive (RFC 9293 3.8.4 / RFC 1122 4.2.3.6, Linux tcp_keepalive_timer) and the
        FIN_WAIT_2 timeout for closed connections (tcp_fin_timeout); in TIME_WAIT the same
        timer object is the 2MSL timer (``_t_tw``)."""
        st = self.state
        if st == TIME_WAIT:
            self._on_tw_timer(now)
            return
        cfg = self.config
        if st == SYN_RECEIVED and self.passive:
            self._synack_timer(now)
            return
        if st == FIN_WAIT_2:
            if self.closed_by_app:
                # Linux: an orphaned FIN_WAIT_2 past tcp_fin_timeout is reset and dropped
                self.counters["TCPAbortOnTimeout"] += 1
                self._send_rst_now(now)
                self._finish(None)
                return
        if not cfg.keepalive or st in (CLOSED, LISTEN, SYN_SENT, SYN_RECEIVED, TIME_WAIT):
            return
        if self.snd_una != self.snd_nxt or self.sndbuf.end_seq != self.snd_nxt:
            # data in flight or queued: the retransmission/probe machinery watches the peer
            self._arm(self._t_ka, now + cfg.keepalive_time)
            return
        last = self.last_rcv_time
        if self.ka_probes and last >= self.ka_probe_time:
            self.ka_probes = 0                        # the peer answered (any segment counts)
        idle = now - last
        if self.ka_probes == 0 and idle + 1e-6 < cfg.keepalive_time:
            when = last + cfg.keepalive_time
            self._arm(self._t_ka, when if when > now + 1e-3 else now + 1e-3)
            return
        ut = cfg.user_timeout
        if self.ka_probes >= cfg.keepalive_probes or (ut and self.ka_probes and idle >= ut):
            self.counters["TCPAbortOnTimeout"] += 1
            self._send_rst_now(now)
            self._finish(TimeoutError(110, "Connection timed out"))
            return
        # RFC 9293 3.8.4 / RFC 1122 4.2.3.6: a probe with SEG.SEQ = SND.NXT - 1, no data
        self.counters["TCPKeepAlive"] += 1
        self._transmit((self.snd_una - 1) & MASK, b"", ACK, now)
        self.ka_probes += 1
        self.ka_probe_time = now
        self._arm(self._t_ka, now + cfg.keepalive_intvl)

    def _on_tw_timer(self, now: float) -> None:
        if self.state == TIME_WAIT:
            self.counters["TimeWaited"] += 1
            self._set_state(CLOSED)
            self._do_release()

    # ================================================================== state changes

    def _set_state(self, new: str) -> None:
        """Linux tcp_set_state's MIB bookkeeping (CurrEstab, EstabResets, AttemptFails)."""
        old = self.state
        if old == new:
            return
        c = self.counters
        if new == ESTABLISHED:
            c["CurrEstab"] += 1
        elif new == CLOSE_WAIT:
            if old == SYN_RECEIVED:
                c["CurrEstab"] += 1
        else:
            if new == CLOSED:
                if old == ESTABLISHED or old == CLOSE_WAIT:
                    c["EstabResets"] += 1
                elif old == SYN_SENT or old == SYN_RECEIVED:
                    c["AttemptFails"] += 1
            if old == ESTABLISHED or old == CLOSE_WAIT:
                c["CurrEstab"] -= 1
        self.state = new

    def _enter_time_wait(self, now: float) -> None:
        self._set_state(TIME_WAIT)
        w = self.wheel
        if self._t_rtx._slot is not None or self._t_rtx._parked is not None:   # (see _finish)
            w.cancel(self._t_rtx)
        self.probe_mode = False
        w.arm(self._t_tw, now + self.config.time_wait)   # (the keepalive timer: re-armed in place)
        if self.closed_by_app or not self.eof_pending:
            self._notify(None)

    def time_wait_sock(self, output: Callable, release: Callable) -> "TimeWaitSock | None":
        """Linux ``tcp_time_wait``: a :class:`~aiotcpstack.tcp.timewait.TimeWaitSock` to take this
        connection's place in the demux table for the rest of TIME_WAIT (same deadline, same
        answers), or None while the connection still has something to do: its handler not told,
        data or EOF not handed over, an ACK pending.  On success this connection is done: its
        timers stop, it never calls ``release`` (the record does) and it reads CLOSED, as the
        full socket after ``tcp_time_wait`` -> ``tcp_done``."""
        t_tw = self._t_tw
        if (self.state != TIME_WAIT or not self._notified or self._released or self.ack_pending
                or self.dsack is not None or self.ofo.segs or not t_tw.pending
                or (not self.closed_by_app and (self.rx_unread or self.rx or self.eof_pending))):
            # (after close() nothing is handed over any more: an EOF still "pending" never will be)
            return None
        tw = TimeWaitSock(self, output, release)
        w = self.wheel
        for t in (self._t_rtx, self._t_dack):
            if t._slot is not None or t._parked is not None:  # (pending, or detached and linked)
                w.cancel(t)
        w.replace(t_tw, tw)                           # same deadline, same place in the wheel
        self._released = True
        self.state = CLOSED
        # no reference cycles left (timer <-> connection <-> handler): the connection and its
        # transport are freed by reference counting once the application lets go, not by the GC
        self.handler = None
        for t in (self._t_rtx, self._t_dack, self._t_ka):
            t.conn = _DETACHED
        return tw

    def _finish(self, exc: BaseException | None) -> None:
        """Enter CLOSED for good: stop timers, tell the handler once, release once."""
        if self.soft_err and isinstance(exc, TimeoutError) and self.soft_err_una == self.snd_una:
            # (PMTUD/ICMP issue) Linux tcp_write_err: sk_err = sk_err_soft ? : ETIMEDOUT
            exc = OSError(self.soft_err, os.strerror(self.soft_err))
        self._set_state(CLOSED)
        w = self.wheel
        for t in (self._t_rtx, self._t_dack, self._t_ka):     # (_t_tw is _t_ka)
            if t._slot is not None or t._parked is not None:  # (pending, or detached and linked)
                w.cancel(t)
        self.ack_pending = 0
        self.probe_mode = False
        if exc is not None and self.rx and not self._notified:
            # data that arrived before the reset/timeout is still the application's (like a
            # read() before the error on Linux): hand it over first, never after tcp_closed
            self._deliver(None)
            self.state = CLOSED
        self.rx.clear()
        self.rx_unread = 0
        self.eof_pending = False
        self._notify(exc)
        self._do_release()

    def _notify(self, exc: BaseException | None) -> None:
        if self._notified:
            return
        self._notified = True
        h = self.handler
        if h is not None:
            h.tcp_closed(exc)

    def _do_release(self) -> None:
        if self._released:
            return
        self._released = True
        r = self.release
        if r is not None:
            r(self)

    def __repr__(self) -> str:
        return (f"<TcpConnection {self.lport}->{self.rport} {self.state} una={self.snd_una} "
                f"nxt={self.snd_nxt} rcv_nxt={self.rcv_nxt}>")
