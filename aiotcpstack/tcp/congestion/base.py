"""The pluggable congestion-control interface, the analogue of the kernel's ``tcp_congestion_ops``.

Units: ``cwnd`` and ``ssthresh`` are in **bytes** (ints), because the sender compares them with
bytes in flight and byte-granular windows; algorithms that think in segments (CUBIC's formula is
in MSS units) convert internally with ``mss``. ``ssthresh`` starts "infinite"
(:data:`INFINITE_SSTHRESH`, Linux ``TCP_INFINITE_SSTHRESH``).

How a connection drives it (the kernel's ``tcp_ack`` / ``tcp_fastretrans_alert`` /
``tcp_enter_loss`` call sites in brackets):

* ``on_ack(acked_bytes, rtt, now, in_flight)`` for every ACK that advances SND.UNA
  [``cong_avoid`` + ``pkts_acked``]. ``rtt`` is this ACK's RTT sample or None (Karn);
  ``in_flight`` is the bytes in flight *before* this ACK (Linux ``prior_in_flight``), used to
  skip growth when the sender was not cwnd-limited (RFC 7661 / Linux ``tcp_is_cwnd_limited``);
  pass None to always grow. Growth is suspended during recovery.
* ``on_congestion_event(now, in_flight)`` on entering fast retransmit / fast recovery
  (3 duplicate ACKs or SACK loss detection) [``tcp_enter_recovery``] and on ECN-CE
  [``tcp_enter_cwr``]: ``ssthresh`` = the algorithm's reduction (RFC 5681 3.2 step 2 /
  RFC 6582 3.2 step 2; RFC 9438 4.6 for CUBIC) and ``cwnd = ssthresh``, i.e. the window the
  RFC 6675 pipe algorithm fills during recovery (PRR, RFC 9937, then sets cwnd per ACK:
  tcp/congestion/prr.py). Senders that implement
  RFC 5681/6582 NewReno window inflation instead call ``inflate()`` per duplicate ACK (and
  ``inflate(3)`` right after entry) and ``deflate(acked)`` on partial ACKs.
* ``on_recovery_exit(now)`` when SND.UNA passes the recovery point (RFC 6582 3.2 step 6, full
  acknowledgment): leaves fast recovery with ``cwnd = ssthresh``; after an RTO it just ends the
  loss state (the window keeps growing from 1 MSS in slow start).
* ``on_rto(now, in_flight)`` when the retransmission timer fires [``tcp_enter_loss``]:
  RFC 5681 3.1 eq. 4 ``ssthresh = max(FlightSize / 2, 2*SMSS)`` (CUBIC: its beta reduction),
  ``cwnd = 1 SMSS`` (the loss window). A repeated timeout of the same data (already in the loss
  state) keeps ``ssthresh`` (RFC 5681 3.1: "when a segment is retransmitted more than once, ...
  ssthresh is held constant"); so does an RTO during fast recovery, whose reduction already
  happened (Linux does the same).
* ``undo(now)`` when a reduction turned out to be spurious (DSACK, Eifel, F-RTO; RFC 3522 /
  RFC 5682): restores the pre-reduction window [``undo_cwnd``].
* ``restart_after_idle(now, rto)`` before sending after an idle period longer than the RTO:
  RFC 5681 4.1 restart window ``min(IW, cwnd)`` [``tcp_cwnd_restart``].
* ``set_mss(mss)`` whenever the effective send MSS changes (peer's MSS option, PMTU): windows
  keep their size in segments, like Linux's packet-counted ``snd_cwnd``.

The contracts.md names ``on_loss_recovery_enter(now)`` and ``init(conn)`` are kept as aliases.
"""
from __future__ import annotations

from typing import Any

__all__ = ["CongestionControl", "INFINITE_SSTHRESH", "initial_window"]

INFINITE_SSTHRESH = 0x7FFFFFFF   # Linux TCP_INFINITE_SSTHRESH; RFC 5681 3.1: "arbitrarily high"


def initial_window(mss: int, segments: int = 10) -> int:
    """RFC 6928 section 2 initial window: ``min(10*MSS, max(2*MSS, 14600))`` bytes.

    Generalised to ``segments`` (``TcpConfig.initial_cwnd``) as ``min(n*MSS, max(2*MSS, n*1460))``.
    Linux uses plain ``10 * MSS`` (TCP_INIT_CWND packets), which only differs for MSS > 1460
    (jumbo frames, loopback); we follow the RFC there, as DESIGN.md asks.
    """
    return min(segments * mss, max(2 * mss, segments * 1460))


class CongestionControl:
    """Base class: RFC 5681 slow start with RFC 3465 byte counting, no congestion avoidance growth.

    Subclasses implement :meth:`_cong_avoid` and :meth:`recalc_ssthresh` (and may hook
    :meth:`_on_rtt_sample` and :meth:`_on_reduction`).
    """

    name = "base"
    #: RFC 3465 limit L on the slow-start increase per ACK, in segments (0: no limit, Linux-like).
    abc_limit = 2

    def __init__(self, mss: int = 1460, initial_cwnd: int = 10, now: float = 0.0) -> None:
        if mss <= 0:
            raise ValueError("mss must be positive")
        self.mss = mss
        self.initial_cwnd = initial_cwnd      # segments (TcpConfig.initial_cwnd)
        self.cwnd = initial_window(mss, initial_cwnd)
        self.ssthresh = INFINITE_SSTHRESH
        self.ca_state = "open"                # Linux icsk_ca_state: "open", "recovery", "loss"
        self.prior_cwnd = self.cwnd           # for undo (Linux tp->prior_cwnd)
        self.prior_ssthresh = 0               # for undo (Linux tp->prior_ssthresh)
        self.bytes_acked = 0                  # RFC 3465 congestion-avoidance byte counter
        self.congestion_events = 0
        self.rto_events = 0
        self._acked_any = False

    # ------------------------------------------------------------------ tcp_congestion_ops

    def init(self, conn: Any = None, now: float = 0.0) -> None:
        """Reset to the initial state (kernel ``.init``); ``conn`` is accepted for the contract and unused."""
        CongestionControl.__init__(self, self.mss, self.initial_cwnd, now)
        self._reset_algorithm(now)

    @property
    def in_slow_start(self) -> bool:
        """RFC 5681 3.1: slow start while ``cwnd < ssthresh``."""
        return self.cwnd < self.ssthresh

    @property
    def in_recovery(self) -> bool:
        return self.ca_state == "recovery"

    def set_mss(self, mss: int) -> None:
        """Change the sender MSS, keeping the windows' size in segments (and the RFC 6928 IW before any ACK)."""
        if mss <= 0:
            raise ValueError("mss must be positive")
        old = self.mss
        if mss == old:
            return
        if not self._acked_any and self.ca_state == "open" and self.ssthresh == INFINITE_SSTHRESH:
            self.cwnd = initial_window(mss, self.initial_cwnd)
        else:
            self.cwnd = max(mss, self.cwnd * mss // old)
            if self.ssthresh != INFINITE_SSTHRESH:
                self.ssthresh = max(2 * mss, self.ssthresh * mss // old)
        self.bytes_acked = self.bytes_acked * mss // old
        self.mss = mss

    def is_cwnd_limited(self, in_flight: int | None) -> bool:
        """Was the sender using its window? (RFC 7661; Linux ``tcp_is_cwnd_limited``.)

        Slow start grows while ``cwnd < 2 * in_flight`` (so a sender that is half-using its
        window still doubles, as Linux does); congestion avoidance only when less than one MSS
        of the window was left unused.
        """
        if in_flight is None:
            return True
        if self.in_slow_start:
            return self.cwnd < 2 * in_flight
        return in_flight + self.mss > self.cwnd

    def on_ack(self, acked_bytes: int, rtt: float | None = None, now: float = 0.0, in_flight: int | None = None,
               acks: int = 1) -> None:
        """An ACK advanced SND.UNA by ``acked_bytes`` (see the module docstring); ``acks`` > 1: it
        stands for that many ACKs that arrived together and were merged (ip/gro.py), each of
        which RFC 3465's slow-start limit L applies to."""
        if acked_bytes <= 0:
            return
        self._acked_any = True
        if rtt is not None and rtt >= 0:
            self._on_rtt_sample(rtt, now, acked_bytes, in_flight)
        if self.ca_state == "recovery":
            return          # RFC 6675/PRR govern the window during recovery; no growth
        # (is_cwnd_limited and in_slow_start inline: once per ACK)
        slow_start = self.cwnd < self.ssthresh
        if in_flight is not None and not (self.cwnd < 2 * in_flight if slow_start
                                          else in_flight + self.mss > self.cwnd):
            return
        if slow_start:
            acked_bytes = self._slow_start(acked_bytes, acks)
            if acked_bytes <= 0:
                return
        self._cong_avoid(acked_bytes, now)

    def recalc_ssthresh(self, in_flight: int | None = None) -> int:
        """The slow start threshold after a congestion signal (kernel ``.ssthresh``), in bytes."""
        flight = self.cwnd if in_flight is None else in_flight
        return max(flight // 2, 2 * self.mss)

    def on_congestion_event(self, now: float = 0.0, in_flight: int | None = None) -> None:
        """Enter fast recovery (RFC 5681 3.2 / RFC 6582 3.2 step 2): reduce ``ssthresh`` and ``cwnd``."""
        if self.ca_state == "recovery":
            return          # one reduction per window of data (RFC 6582: until the recovery point)
        self._save_for_undo()
        self.ssthresh = self.recalc_ssthresh(in_flight)
        self._on_reduction(now, "recovery")
        self.cwnd = self.ssthresh
        self.bytes_acked = 0
        self.ca_state = "recovery"
        self.congestion_events += 1

    def on_loss_recovery_enter(self, now: float = 0.0, in_flight: int | None = None) -> None:
        """contracts.md name for :meth:`on_congestion_event`."""
        self.on_congestion_event(now, in_flight)

    def on_recovery_exit(self, now: float = 0.0, in_flight: int | None = None) -> None:
        """SND.UNA passed the recovery point: full acknowledgment (RFC 6582 3.2 step 6).

        From fast recovery: ``cwnd = ssthresh`` (option 2 of step 6, Linux
        ``tcp_end_cwnd_reduction``), or with ``in_flight`` option 1:
        ``min(ssthresh, max(FlightSize, SMSS) + SMSS)``, which avoids a burst.
        From the loss state (after an RTO): only the state changes.
        """
        if self.ca_state == "recovery" and self.ssthresh != INFINITE_SSTHRESH:
            if in_flight is None:
                self.cwnd = self.ssthresh
            else:
                self.cwnd = min(self.ssthresh, max(in_flight, self.mss) + self.mss)
        self.ca_state = "open"

    def on_rto(self, now: float = 0.0, in_flight: int | None = None) -> None:
        """Retransmission timeout: RFC 5681 3.1 eq. 4 and the 1-SMSS loss window."""
        if self.ca_state == "open":
            self._save_for_undo()
            self.ssthresh = self.recalc_ssthresh(in_flight)
        self._on_reduction(now, "loss")
        self.cwnd = self.mss          # RFC 5681 3.1: LW = 1 SMSS
        self.bytes_acked = 0
        self.ca_state = "loss"
        self.rto_events += 1

    def undo(self, now: float = 0.0) -> None:
        """The last reduction was spurious: restore the window (Linux ``tcp_undo_cwnd_reduction``)."""
        if self.prior_ssthresh:
            self.cwnd = max(self.cwnd, self.prior_cwnd)
            self.ssthresh = max(self.ssthresh, self.prior_ssthresh)
            self.prior_ssthresh = 0
        self.ca_state = "open"

    def restart_after_idle(self, now: float, rto: float) -> None:
        """RFC 5681 4.1: after an idle period > RTO, ``cwnd = min(RW, cwnd)`` with RW = IW."""
        self.cwnd = min(self.cwnd, initial_window(self.mss, self.initial_cwnd))
        self._on_idle_restart(now)

    # ------------------------------------------------------------------ helpers for NewReno senders

    def inflate(self, segments: int = 1) -> None:
        """RFC 5681 3.2 steps 3-4: artificially inflate cwnd by SMSS per duplicate ACK during recovery."""
        self.cwnd += segments * self.mss

    def deflate(self, acked_bytes: int) -> None:
        """RFC 6582 3.2 step 5 (partial ACK): deflate by the amount acked, add back SMSS if >= SMSS."""
        self.cwnd -= acked_bytes
        if acked_bytes >= self.mss:
            self.cwnd += self.mss
        if self.cwnd < self.mss:
            self.cwnd = self.mss

    def snapshot(self) -> dict[str, Any]:
        """State for ``TcpConnection.snapshot()`` / ``tcp_info``."""
        return {
            "congestion_control": self.name,
            "cwnd": self.cwnd,
            "ssthresh": self.ssthresh,
            "ca_state": self.ca_state,
            "mss": self.mss,
        }

    # ------------------------------------------------------------------ algorithm hooks

    def _slow_start(self, acked_bytes: int, acks: int = 1) -> int:
        """RFC 5681 3.1 + RFC 3465 (L = ``abc_limit``): grow by min(acked, L*SMSS), capped at ssthresh.

        Returns the acked bytes left over once cwnd reached ssthresh (Linux ``tcp_slow_start``
        hands them to congestion avoidance).
        """
        inc = acked_bytes
        if self.abc_limit:
            inc = min(inc, self.abc_limit * self.mss * acks)
        room = self.ssthresh - self.cwnd
        if inc <= room:
            self.cwnd += inc
            return 0
        self.cwnd = self.ssthresh
        self._on_slow_start_exit()
        return min(acked_bytes, inc) - room

    def _cong_avoid(self, acked_bytes: int, now: float) -> None:
        """Congestion-avoidance growth (kernel ``.cong_avoid``); the base class does not grow."""

    def _on_rtt_sample(self, rtt: float, now: float, acked_bytes: int, in_flight: int | None) -> None:
        """An RTT sample (kernel ``.pkts_acked``)."""

    def _on_reduction(self, now: float, kind: str) -> None:
        """Called before cwnd is reduced (after ssthresh was recomputed) on "recovery" or "loss"."""

    def _on_slow_start_exit(self) -> None:
        """cwnd reached ssthresh in slow start."""

    def _on_idle_restart(self, now: float) -> None:
        """Sending restarts after idle (kernel ``CA_EVENT_TX_START``)."""

    def _reset_algorithm(self, now: float) -> None:
        """Reset algorithm-specific state (from :meth:`init`)."""

    def _save_for_undo(self) -> None:
        self.prior_cwnd = self.cwnd
        self.prior_ssthresh = self.ssthresh

    def __repr__(self) -> str:
        ss = "inf" if self.ssthresh == INFINITE_SSTHRESH else self.ssthresh
        return f"<{type(self).__name__} cwnd={self.cwnd} ssthresh={ss} {self.ca_state}>"
