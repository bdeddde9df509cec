"""CUBIC (RFC 9438) with HyStart slow-start exit (as Linux's net/ipv4/tcp_cubic.c).

Window arithmetic follows the RFC in floating point and in *segments* (C = 0.4 is defined in
segments per second cubed); ``cwnd``/``ssthresh`` stay in bytes as for every algorithm here, with a
float shadow of cwnd so sub-byte per-ACK increments are not lost to rounding.

* RFC 9438 4.2: ``W_cubic(t) = C*(t - K)**3 + W_max``, ``K = cbrt((W_max - cwnd_epoch)/C)``;
  each ACK in congestion avoidance moves cwnd towards ``target = W_cubic(t + RTT)`` clamped to
  ``[cwnd, 1.5*cwnd]`` by ``(target - cwnd)/cwnd`` per segment ACKed (4.4 concave, 4.5 convex).
  RTT is the smoothed RTT of this algorithm's samples (Linux uses ``delay_min``; we follow the RFC).
* 4.3 Reno-friendly region: ``W_est`` starts at ``cwnd_epoch`` and grows by
  ``alpha_cubic * segments_acked / cwnd`` with ``alpha_cubic = 3(1 - beta)/(1 + beta)`` until it
  reaches ``cwnd_prior``, then 1; when ``W_cubic(t) < W_est``, cwnd follows ``W_est``.
* 4.6 multiplicative decrease: ``ssthresh = max(flight_size * 0.7, 2 SMSS)``, ``cwnd = ssthresh``,
  ``cwnd_prior = cwnd``. The RFC uses FlightSize (the ``in_flight`` the caller passes); Linux
  uses cwnd, which is what we use when ``in_flight`` is not given. Using FlightSize is only safe
  with cwnd validation, which :meth:`CongestionControl.is_cwnd_limited` provides.
* 4.7 fast convergence: ``W_max = cwnd * (1 + beta)/2`` if the loss came below the previous W_max.
* 4.8 timeout: ssthresh as in 4.6, cwnd = 1 SMSS; the first congestion-avoidance epoch after it
  uses ``K = 0`` and ``W_max = cwnd_epoch`` (Linux: ``bictcp_reset`` on TCP_CA_Loss).
* 4.10: leaving slow start without loss (HyStart) sets ``cwnd_prior = cwnd``, ``K = 0``,
  ``W_max = cwnd_epoch``.

HyStart (Ha & Rhee 2011, Linux ``hystart_update``): from cwnd >= 16 segments in slow start it
ends slow start (``ssthresh = cwnd``) when either
* ACK train: ACKs keep arriving at most 2 ms apart for longer than ``delay_min / 2`` since the
  start of the round (the train already spans the path's BDP), or
* delay increase: the minimum RTT of the first 8 samples of a round exceeds
  ``delay_min + clamp(delay_min/8, 4 ms, 16 ms)`` (queues are building).
Rounds are tracked as in Linux (``end_seq = snd_nxt``): a round ends once the bytes that were in
flight when it began have been ACKed (from the ``in_flight`` the caller passes, else cwnd).
``hystart_exit`` says which detector fired ("train" / "delay") for the MIB counters
``TCPHystartTrainDetect`` / ``TCPHystartDelayDetect``.
"""
from __future__ import annotations

import math
from typing import Any

from .base import CongestionControl

__all__ = ["Cubic", "BETA_CUBIC", "C_CUBIC", "ALPHA_CUBIC"]

BETA_CUBIC = 0.7                                        # RFC 9438 4.6
C_CUBIC = 0.4                                           # RFC 9438 5 (segments / s**3)
ALPHA_CUBIC = 3 * (1 - BETA_CUBIC) / (1 + BETA_CUBIC)   # RFC 9438 4.3 (~0.529)

HYSTART_LOW_WINDOW = 16          # Linux hystart_low_window (segments)
HYSTART_MIN_SAMPLES = 8          # Linux HYSTART_MIN_SAMPLES
HYSTART_ACK_DELTA = 0.002        # Linux hystart_ack_delta_us (2 ms)
HYSTART_DELAY_MIN = 0.004        # Linux HYSTART_DELAY_MIN (4 ms)
HYSTART_DELAY_MAX = 0.016        # Linux HYSTART_DELAY_MAX (16 ms)


class Cubic(CongestionControl):
    """RFC 9438 CUBIC + HyStart (Linux's default congestion control)."""

    name = "cubic"
    fast_convergence = True      # RFC 9438 4.7 (Linux tcp_cubic fast_convergence=1)
    hystart = True               # Linux tcp_cubic hystart=1
    hystart_ack_train = True     # HYSTART_ACK_TRAIN detector
    hystart_delay = True         # HYSTART_DELAY detector

    def __init__(self, mss: int = 1460, initial_cwnd: int = 10, now: float = 0.0) -> None:
        super().__init__(mss, initial_cwnd, now)
        self._reset_algorithm(now)

    def _reset_algorithm(self, now: float) -> None:
        self.w_max = 0.0              # segments; 0: undefined (no congestion event yet)
        self.cwnd_prior = 0.0         # segments
        self.k = 0.0                  # seconds
        self.t_epoch: float | None = None
        self.cwnd_epoch = 0.0
        self.w_est = 0.0
        self._origin = 0.0            # W_max of the current epoch (max(W_max, cwnd_epoch))
        self._cwnd_f = float(self.cwnd)
        self.srtt: float | None = None
        self.delay_min: float | None = None
        # HyStart
        self.hystart_found = False
        self.hystart_exit: str | None = None
        self._round_start = now
        self._last_ack = now
        self._round_left = 0          # bytes still to be ACKed in this round (<= 0: round over)
        self._curr_rtt = math.inf
        self._sample_cnt = 0

    # ------------------------------------------------------------------ RFC 9438 formulas

    def w_cubic(self, t: float) -> float:
        """RFC 9438 eq. 1 for the current epoch, in segments: ``C*(t - K)**3 + W_max``."""
        return C_CUBIC * (t - self.k) ** 3 + self._origin

    @staticmethod
    def compute_k(w_max: float, cwnd_epoch: float) -> float:
        """RFC 9438 eq. 2: ``K = cbrt((W_max - cwnd_epoch) / C)`` (0 when cwnd_epoch >= W_max)."""
        if w_max <= cwnd_epoch:
            return 0.0
        return ((w_max - cwnd_epoch) / C_CUBIC) ** (1.0 / 3.0)

    # ------------------------------------------------------------------ tcp_congestion_ops

    def recalc_ssthresh(self, in_flight: int | None = None) -> int:
        """RFC 9438 4.6: ``max(flight_size * beta_cubic, 2*SMSS)`` (cwnd when in_flight is unknown)."""
        flight = self.cwnd if in_flight is None else in_flight
        return max(round(flight * BETA_CUBIC), 2 * self.mss)

    def _on_reduction(self, now: float, kind: str) -> None:
        cwnd_seg = self.cwnd / self.mss
        self.t_epoch = None
        if kind == "loss":
            # RFC 9438 4.8: the first CA stage after a timeout uses K = 0 and W_max = cwnd_epoch
            # (Linux: bictcp_reset() and hystart reset on entering TCP_CA_Loss).
            if self.ca_state == "open":
                self.cwnd_prior = cwnd_seg
            self.w_max = 0.0
            self._hystart_reset_all(now)
            return
        # RFC 9438 4.7 fast convergence, then 4.6's cwnd_prior.
        if self.fast_convergence and cwnd_seg < self.w_max:
            self.w_max = cwnd_seg * (1 + BETA_CUBIC) / 2
        else:
            self.w_max = cwnd_seg
        self.cwnd_prior = cwnd_seg

    def _on_slow_start_exit(self) -> None:
        self.t_epoch = None

    def _on_idle_restart(self, now: float) -> None:
        # Linux CA_EVENT_TX_START shifts epoch_start by the idle time so the curve does not jump;
        # restarting the epoch from the current cwnd (W_max kept) continues the same curve.
        self.t_epoch = None

    def undo(self, now: float = 0.0) -> None:
        super().undo(now)
        self.t_epoch = None

    # ------------------------------------------------------------------ growth

    def _on_rtt_sample(self, rtt: float, now: float, acked_bytes: int, in_flight: int | None) -> None:
        self.srtt = rtt if self.srtt is None else 0.875 * self.srtt + 0.125 * rtt
        delay = rtt if rtt > 0 else 1e-6
        if self.delay_min is None or delay < self.delay_min:
            self.delay_min = delay
        if self.hystart and not self.hystart_found and self.cwnd < self.ssthresh and self.ca_state == "open":
            self._hystart_update(delay, now, acked_bytes, in_flight)

    def _cong_avoid(self, acked_bytes: int, now: float) -> None:
        mss = self.mss
        if int(self._cwnd_f) != self.cwnd:
            self._cwnd_f = float(self.cwnd)     # cwnd was changed outside (slow start, recovery, ...)
        cwnd_seg = self._cwnd_f / mss
        segs_acked = acked_bytes / mss
        if self.t_epoch is None:
            # Start of a congestion-avoidance epoch (RFC 9438 4.2; 4.8/4.10 when W_max is undefined).
            self.t_epoch = now
            self.cwnd_epoch = cwnd_seg
            if self.w_max <= 0.0:
                self.w_max = cwnd_seg
            if self.cwnd_prior <= 0.0:
                self.cwnd_prior = cwnd_seg
            self.k = self.compute_k(self.w_max, cwnd_seg)
            self._origin = max(self.w_max, cwnd_seg)
            self.w_est = cwnd_seg
        t = now - self.t_epoch
        rtt = self.srtt or 0.0
        # RFC 9438 4.3: Reno-friendly estimate.
        alpha = 1.0 if self.w_est >= self.cwnd_prior else ALPHA_CUBIC
        self.w_est += alpha * segs_acked / cwnd_seg
        if self.w_cubic(t) < self.w_est:
            new = max(cwnd_seg, self.w_est)
        else:
            # RFC 9438 4.4/4.5: concave and convex regions.
            target = self.w_cubic(t + rtt)
            if target < cwnd_seg:
                target = cwnd_seg
            elif target > 1.5 * cwnd_seg:
                target = 1.5 * cwnd_seg
            new = cwnd_seg + (target - cwnd_seg) / cwnd_seg * segs_acked
        self._cwnd_f = new * mss
        self.cwnd = int(self._cwnd_f)

    # ------------------------------------------------------------------ HyStart

    def _hystart_reset_all(self, now: float) -> None:
        self.hystart_found = False
        self.hystart_exit = None
        self._round_left = 0
        self._round_start = self._last_ack = now
        self._curr_rtt = math.inf
        self._sample_cnt = 0

    def _hystart_update(self, delay: float, now: float, acked_bytes: int, in_flight: int | None) -> None:
        """Linux ``hystart_update``; round boundaries from bytes (see the module docstring)."""
        self._round_left -= acked_bytes
        if self._round_left < 0:
            # bictcp_hystart_reset(): a new round; it ends when what is in flight now is ACKed.
            self._round_start = self._last_ack = now
            left = (in_flight - acked_bytes) if in_flight is not None else self.cwnd
            self._round_left = max(left, 0)
            self._curr_rtt = math.inf
            self._sample_cnt = 0
        if self.cwnd < HYSTART_LOW_WINDOW * self.mss:
            return
        delay_min = self.delay_min or delay
        if self.hystart_ack_train and now - self._last_ack <= HYSTART_ACK_DELTA:
            self._last_ack = now
            # Unpaced: the train only needs to span delay_min / 2 (Linux: threshold >>= 1).
            if now - self._round_start > delay_min / 2:
                self._hystart_exit_now("train")
                return
        if self.hystart_delay:
            if delay < self._curr_rtt:
                self._curr_rtt = delay
            if self._sample_cnt < HYSTART_MIN_SAMPLES:
                self._sample_cnt += 1
            else:
                thresh = min(max(delay_min / 8, HYSTART_DELAY_MIN), HYSTART_DELAY_MAX)
                if self._curr_rtt > delay_min + thresh:
                    self._hystart_exit_now("delay")

    def _hystart_exit_now(self, reason: str) -> None:
        self.hystart_found = True
        self.hystart_exit = reason
        self.ssthresh = self.cwnd          # Linux: tp->snd_ssthresh = tcp_snd_cwnd(tp)
        self.t_epoch = None                # RFC 9438 4.10: CA starts with K = 0, W_max = cwnd

    def snapshot(self) -> dict[str, Any]:
        snap = super().snapshot()
        snap.update(w_max=self.w_max, k=self.k, hystart_exit=self.hystart_exit, delay_min=self.delay_min)
        return snap
