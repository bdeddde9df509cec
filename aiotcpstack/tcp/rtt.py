"""Round-trip time estimation and the retransmission timeout (RFC 6298, bounded the Linux way).

Smoothing is RFC 6298 section 2 exactly (alpha = 1/8, beta = 1/4, K = 4). The timeout differs
from the RFC where Linux does (``tcp_rtt_estimator`` / ``__tcp_set_rto`` / ``tcp_bound_rto`` in
net/ipv4/tcp_input.c), because the RFC's values are tuned for the 1990s Internet and a 1 s floor
makes every loss on a LAN cost a second:

* RFC 6298 (2.3): ``RTO = SRTT + max(G, K*RTTVAR)`` and (2.4) ``RTO >= 1 s``.
  Linux: ``RTO = SRTT + max(K*RTTVAR, rto_min)`` (its ``rttvar_us`` is ``4*mdev`` floored at
  ``tcp_rto_min``, 200 ms), i.e. the floor applies to the *variance term*, not the whole RTO:
  a 100 ms path with no jitter gets 300 ms, not 200 ms. We implement Linux's formula (with
  ``G`` kept inside the max for ``rto_min = 0``); ``rto_min=1.0`` gives the RFC's conservative floor
  on the variance term.
* RFC 6298 (2.5) allows a maximum of at least 60 s; Linux uses ``TCP_RTO_MAX`` = 120 s. So do we.
* Linux additionally tracks ``mdev_max`` per flight of data (``rtt_seq``) and uses a finer gain
  for ``mdev`` when the RTT *decreases* (an Eifel-like tweak). That needs sequence numbers this
  sans-state helper does not see; we keep RFC 6298's plain EWMA, which only differs in how
  quickly the variance term decays.

Karn's algorithm (RFC 6298 section 3) is the caller's job: do not call :meth:`sample` with the
RTT of a segment that was retransmitted, unless the measurement comes from an echoed timestamp
(RFC 7323 section 4) which identifies the transmission unambiguously. After a timeout the caller
calls :meth:`backoff` (RFC 6298 5.5) and keeps the backed-off RTO until a new valid sample
arrives: :meth:`sample` resets the backoff (Linux: ``icsk_backoff = 0`` on an ACK carrying a
valid RTT sample, RFC 6298 5.7's "recompute after a new measurement").

Times are float seconds. Before the first sample ``srtt`` and ``rttvar`` are 0.0 (as Linux's
``tcpi_rtt``) and ``rto`` is ``rto_initial`` (RFC 6298 2.1: 1 s).
"""
from __future__ import annotations

__all__ = ["RttEstimator", "ALPHA", "BETA", "K"]

ALPHA = 0.125       # RFC 6298 2.3: SRTT gain
BETA = 0.25         # RFC 6298 2.3: RTTVAR gain
K = 4               # RFC 6298 2.3


class RttEstimator:
    """SRTT/RTTVAR/RTO of one connection, plus the windowed minimum RTT (for HyStart/CUBIC/BBR-style users)."""

    __slots__ = (
        "rto_initial", "rto_min", "rto_max", "granularity", "min_rtt_window",
        "srtt", "_rttvar", "_base_rto", "rto", "backoffs", "_has_sample", "samples",
        # windowed min: three (time, value) estimates, best first (plain fields: no list per connection)
        "_m0t", "_m0v", "_m1t", "_m1v", "_m2t", "_m2v",
    )

    def __init__(
        self,
        rto_initial: float = 1.0,
        rto_min: float = 0.2,
        rto_max: float = 120.0,
        granularity: float = 0.001,
        min_rtt_window: float = 300.0,
    ) -> None:
        self.rto_initial = rto_initial
        self.rto_min = rto_min
        self.rto_max = rto_max
        self.granularity = granularity          # G of RFC 6298: the timer wheel's granularity
        self.min_rtt_window = min_rtt_window    # Linux sysctl tcp_min_rtt_wlen (300 s)
        self.srtt = 0.0                         # smoothed RTT, 0.0 before the first sample
        #                                         (an attribute, no property: read per round trip)
        self._rttvar = 0.0
        self._base_rto = min(rto_initial, rto_max)
        self.backoffs = 0                       # Linux icsk_backoff: consecutive timeouts
        # The retransmission timeout to arm now: the base RTO doubled per backoff, capped at
        # ``rto_max`` -- kept up to date by every method that changes either (read several
        # times per round trip; a property cost a call each).  ``backoffs`` is only written
        # here: callers use reset_backoff().
        self.rto = self._base_rto
        self._has_sample = False
        self.samples = 0
        # Windowed min (Kathleen Nichols' algorithm, Linux lib/win_minmax.c): 3 (time, value) pairs.
        self._m0t = self._m0v = self._m1t = self._m1v = self._m2t = self._m2v = 0.0

    @classmethod
    def from_config(cls, config: object, granularity: float = 0.001) -> "RttEstimator":
        """Build from a ``TcpConfig`` (``rto_initial``, ``rto_min``, ``rto_max``)."""
        return cls(
            rto_initial=getattr(config, "rto_initial"),
            rto_min=getattr(config, "rto_min"),
            rto_max=getattr(config, "rto_max"),
            granularity=granularity,
        )

    # ------------------------------------------------------------------ properties

    @property
    def rttvar(self) -> float:
        """RTT variation (0.0 before the first sample)."""
        return self._rttvar

    @property
    def has_sample(self) -> bool:
        return self._has_sample

    @property
    def base_rto(self) -> float:
        """The RTO computed from SRTT/RTTVAR, without backoff."""
        return self._base_rto

    @property
    def min_rtt(self) -> float | None:
        """Minimum RTT over the last ``min_rtt_window`` seconds (all time if samples carry no ``now``)."""
        return self._m0v if self._has_sample else None

    # ------------------------------------------------------------------ updates

    def sample(self, rtt: float, now: float | None = None) -> None:
        """Feed one valid RTT measurement (Karn's rule applied by the caller); resets the backoff."""
        if rtt < 0:
            raise ValueError("negative RTT sample")
        if not self._has_sample:
            # RFC 6298 2.2: first measurement R.
            self.srtt = rtt
            self._rttvar = rtt / 2
            self._has_sample = True
            t = 0.0 if now is None else now
            self._m0t = self._m1t = self._m2t = t
            self._m0v = self._m1v = self._m2v = rtt
        else:
            # RFC 6298 2.3: RTTVAR first, with the *old* SRTT.
            self._rttvar = (1 - BETA) * self._rttvar + BETA * abs(self.srtt - rtt)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * rtt
            self._minmax_update(rtt, now)
        self.samples += 1
        self.backoffs = 0
        # Linux __tcp_set_rto(): srtt + rttvar, where rttvar (= 4*mdev) is floored at rto_min;
        # RFC 6298 2.3 uses max(G, K*RTTVAR). tcp_bound_rto(): at most TCP_RTO_MAX.  (Inline:
        # once per ACK; no backoff now, so the RTO to arm is the base RTO.)
        var = K * self._rttvar
        if var < self.rto_min:
            var = self.rto_min
        if var < self.granularity:
            var = self.granularity
        self.rto = self._base_rto = min(self.srtt + var, self.rto_max)

    def backoff(self) -> float:
        """After a retransmission timeout: double the RTO (RFC 6298 5.5); returns the new RTO.

        ``backoffs`` counts every call (like ``icsk_backoff``) even once the RTO is capped.
        """
        self.backoffs += 1
        # RFC 6298 5.5 / Linux inet_csk_rto_backoff(): rto << backoff, bounded by TCP_RTO_MAX.
        self.rto = min(self._base_rto * (1 << min(self.backoffs, 62)), self.rto_max)
        return self.rto

    def reset_backoff(self) -> None:
        """Forget consecutive timeouts (Linux: forward progress on an ACK, ``icsk_backoff = 0``)."""
        self.backoffs = 0
        self.rto = self._base_rto

    def reset(self, rto: float | None = None) -> None:
        """Drop all RTT state, e.g. RFC 6298 5.7: after a timed-out SYN use 3 s once established
        if no sample was taken (Linux ``TCP_TIMEOUT_FALLBACK``): ``reset(3.0)``."""
        self.srtt = self._rttvar = 0.0
        self._has_sample = False
        self.samples = 0
        self.backoffs = 0
        self._base_rto = min(self.rto_initial if rto is None else rto, self.rto_max)
        self.rto = self._base_rto

    # ------------------------------------------------------------------ internals

    def _minmax_update(self, rtt: float, now: float | None) -> None:
        """Running windowed min (Linux ``minmax_running_min``); estimate i is (_m<i>t, _m<i>v)."""
        if now is None:
            if rtt <= self._m0v:
                self._m0v = self._m1v = self._m2v = rtt
            return
        win = self.min_rtt_window
        if rtt <= self._m0v or now - self._m2t > win:
            self._m0t = self._m1t = self._m2t = now     # new min, or nothing in the window: reset
            self._m0v = self._m1v = self._m2v = rtt
            return
        if rtt <= self._m1v:
            self._m1t = self._m2t = now
            self._m1v = self._m2v = rtt
        elif rtt <= self._m2v:
            self._m2t = now
            self._m2v = rtt
        # minmax_subwin_update(): age out the best estimates.
        dt = now - self._m0t
        if dt > win:
            self._m0t, self._m0v = self._m1t, self._m1v
            self._m1t, self._m1v = self._m2t, self._m2v
            self._m2t = now
            self._m2v = rtt
            if now - self._m0t > win:
                self._m0t, self._m0v = self._m1t, self._m1v
                self._m1t, self._m1v = self._m2t, self._m2v
                self._m2t = now
                self._m2v = rtt
        elif self._m1t == self._m0t and dt > win / 4:
            self._m1t = self._m2t = now
            self._m1v = self._m2v = rtt
        elif self._m2t == self._m1t and dt > win / 2:
            self._m2t = now
            self._m2v = rtt
