"""Congestion control: Reno (RFC 5681 + RFC 3465), CUBIC (RFC 9438) and HyStart, on virtual time."""
from __future__ import annotations

import pytest

from aiotcpstack.tcp.congestion import (
    INFINITE_SSTHRESH,
    CongestionControl,
    Cubic,
    Reno,
    available,
    create,
    get,
    initial_window,
)
from aiotcpstack.tcp.congestion.cubic import ALPHA_CUBIC, BETA_CUBIC, C_CUBIC

MSS = 1000


def one_rtt(cc: CongestionControl, now: float, rtt: float, per_ack: int = MSS, cwnd_limited: bool = True) -> None:
    """ACK one full window, ``per_ack`` bytes per ACK, spread over one RTT ending at ``now + rtt``."""
    window = cc.cwnd
    sizes = [per_ack] * (window // per_ack) + ([window % per_ack] if window % per_ack else [])
    for i, size in enumerate(sizes):
        cc.on_ack(size, rtt, now + rtt * (i + 1) / len(sizes), window if cwnd_limited else 0)


# ------------------------------------------------------------------ common / registry


def test_registry() -> None:
    assert get("reno") is Reno and get("cubic") is Cubic and get("CUBIC") is Cubic
    assert available() == ["cubic", "reno"]
    with pytest.raises(KeyError, match="available"):
        get("bbr")
    cc = create("reno", mss=536)
    assert isinstance(cc, Reno) and cc.mss == 536


def test_initial_window_rfc6928() -> None:
    assert initial_window(1460) == 14600
    assert initial_window(536) == 5360
    assert initial_window(9000) == 18000          # max(2*MSS, 14600): 2 segments for jumbo frames
    assert initial_window(1460, 4) == 5840
    for cls in (Reno, Cubic):
        cc = cls(mss=1460)
        assert cc.cwnd == 14600 and cc.ssthresh == INFINITE_SSTHRESH and cc.in_slow_start


def test_set_mss_keeps_segments() -> None:
    cc = Reno(mss=1460)
    cc.set_mss(1000)                              # before any ACK: a fresh RFC 6928 IW
    assert cc.cwnd == 10_000
    cc.on_ack(1000, 0.1, 0.1)
    cc.ssthresh = 40_000
    cc.set_mss(500)
    assert cc.cwnd == 5_500 and cc.ssthresh == 20_000


# ------------------------------------------------------------------ Reno


def test_reno_slow_start_doubles_per_rtt() -> None:
    cc = Reno(mss=MSS)
    now = 0.0
    for expected in (20, 40, 80, 160):
        one_rtt(cc, now, 0.1)                     # one ACK per segment
        now += 0.1
        assert cc.cwnd == expected * MSS
    cc2 = Reno(mss=MSS)
    for expected in (20, 40, 80):
        one_rtt(cc2, 0.0, 0.1, per_ack=2 * MSS)   # delayed ACKs: L = 2 keeps the doubling
        assert cc2.cwnd == expected * MSS


def test_reno_abc_limit_l2_on_stretch_acks() -> None:
    cc = Reno(mss=MSS)
    cc.on_ack(10 * MSS, 0.1, 0.1)                 # one stretch ACK for the whole IW
    assert cc.cwnd == 12 * MSS                    # RFC 3465: at most L*SMSS = 2 SMSS per ACK


def test_reno_congestion_avoidance_one_mss_per_rtt() -> None:
    cc = Reno(mss=MSS)
    cc.ssthresh = 20 * MSS
    cc.cwnd = 20 * MSS
    assert not cc.in_slow_start
    now = 0.0
    for expected in (21, 22, 23, 24):
        one_rtt(cc, now, 0.1)
        now += 0.1
        assert cc.cwnd == expected * MSS
    # byte counting: one window in small ACKs gives exactly the same +1 SMSS
    before = cc.cwnd
    for _ in range(before // 100):
        cc.on_ack(100, None, now, before)
    assert cc.cwnd == before + MSS


def test_reno_slow_start_hands_leftover_to_avoidance() -> None:
    cc = Reno(mss=MSS)
    cc.ssthresh = 11 * MSS + 500
    cc.on_ack(2 * MSS, None, 0.0)
    assert cc.cwnd == 11 * MSS + 500 and not cc.in_slow_start
    assert cc.bytes_acked == 500                  # 2000 acked - 1500 used to reach ssthresh


def test_reno_not_cwnd_limited_does_not_grow() -> None:
    cc = Reno(mss=MSS)
    cc.on_ack(MSS, 0.1, 0.1, in_flight=2 * MSS)   # application-limited: 2 of 10 segments used
    assert cc.cwnd == 10 * MSS
    cc.on_ack(MSS, 0.1, 0.1, in_flight=6 * MSS)   # slow start grows while cwnd < 2 * in_flight
    assert cc.cwnd == 11 * MSS


def test_reno_fast_recovery_sequence() -> None:
    cc = Reno(mss=MSS)
    cc.cwnd = 40 * MSS
    cc.ssthresh = 30 * MSS
    cc.on_congestion_event(1.0, in_flight=40 * MSS)
    # RFC 5681 eq. 4: ssthresh = max(FlightSize / 2, 2*SMSS); cwnd = ssthresh (RFC 6675)
    assert cc.ssthresh == 20 * MSS and cc.cwnd == 20 * MSS and cc.in_recovery
    cc.on_congestion_event(1.01, in_flight=20 * MSS)    # same window of data: no second reduction
    assert cc.ssthresh == 20 * MSS
    cc.on_ack(MSS, 0.1, 1.05, 20 * MSS)           # no growth during recovery
    assert cc.cwnd == 20 * MSS
    # NewReno inflation helpers (RFC 5681 3.2 / RFC 6582 3.2)
    cc.inflate(3)
    assert cc.cwnd == 23 * MSS
    cc.deflate(5 * MSS)
    assert cc.cwnd == 19 * MSS
    cc.on_recovery_exit(1.2)
    assert cc.cwnd == 20 * MSS and cc.ca_state == "open" and not cc.in_slow_start
    cc.on_congestion_event(2.0, in_flight=20 * MSS)
    cc.on_recovery_exit(2.2, in_flight=3 * MSS)         # RFC 6582 step 6 option 1: no burst
    assert cc.cwnd == 4 * MSS


def test_reno_rto_loss_window() -> None:
    cc = Reno(mss=MSS)
    cc.cwnd = 40 * MSS
    cc.on_rto(1.0, in_flight=30 * MSS)
    assert cc.cwnd == MSS and cc.ssthresh == 15 * MSS and cc.ca_state == "loss"
    cc.on_rto(3.0, in_flight=30 * MSS)            # the same data times out again: ssthresh held
    assert cc.ssthresh == 15 * MSS and cc.cwnd == MSS
    cc.on_ack(MSS, None, 3.5, MSS)                 # slow start again from the loss window
    assert cc.cwnd == 2 * MSS
    cc.on_recovery_exit(4.0)
    assert cc.ca_state == "open" and cc.cwnd == 2 * MSS
    small = Reno(mss=MSS)
    small.on_rto(0.0, in_flight=MSS)
    assert small.ssthresh == 2 * MSS              # floor of 2 SMSS


def test_undo_and_idle_restart() -> None:
    cc = Reno(mss=MSS)
    cc.cwnd = 40 * MSS
    cc.ssthresh = 50 * MSS
    cc.on_rto(1.0, in_flight=40 * MSS)
    cc.undo(1.1)                                  # spurious timeout (F-RTO / Eifel)
    assert cc.cwnd == 40 * MSS and cc.ssthresh == 50 * MSS and cc.ca_state == "open"
    cc.restart_after_idle(10.0, rto=1.0)          # RFC 5681 4.1
    assert cc.cwnd == 10 * MSS


def test_contract_aliases() -> None:
    cc = Reno(mss=MSS)
    cc.on_loss_recovery_enter(0.0)
    assert cc.in_recovery and cc.ssthresh == 5 * MSS
    cc.init(None)
    assert cc.cwnd == 10 * MSS and cc.ssthresh == INFINITE_SSTHRESH and cc.ca_state == "open"
    assert cc.recalc_ssthresh(12 * MSS) == 6 * MSS


# ------------------------------------------------------------------ CUBIC


def test_cubic_multiplicative_decrease_and_k() -> None:
    cc = Cubic(mss=MSS)
    cc.cwnd = 100 * MSS
    cc.ssthresh = 50 * MSS
    cc.on_congestion_event(1.0, in_flight=100 * MSS)
    assert cc.ssthresh == 70 * MSS and cc.cwnd == 70 * MSS       # beta_cubic = 0.7
    assert cc.w_max == 100 and cc.cwnd_prior == 100
    cc.on_recovery_exit(1.1)
    cc.on_ack(MSS, 0.1, 1.2, 70 * MSS)            # first CA ACK starts the epoch
    assert cc.k == pytest.approx((100 * (1 - BETA_CUBIC) / C_CUBIC) ** (1 / 3))   # RFC 9438 eq. 2
    assert cc.t_epoch == 1.2
    # With in_flight unknown the reduction uses cwnd (Linux).
    cc2 = Cubic(mss=MSS)
    cc2.cwnd = 50 * MSS
    cc2.on_congestion_event(0.0)
    assert cc2.ssthresh == 35 * MSS


def test_cubic_fast_convergence() -> None:
    cc = Cubic(mss=MSS)
    cc.cwnd = 100 * MSS
    cc.on_congestion_event(0.0, 100 * MSS)
    cc.on_recovery_exit(0.1)
    assert cc.w_max == 100
    cc.cwnd = 90 * MSS                            # next loss below the previous W_max
    cc.on_congestion_event(1.0, 90 * MSS)
    assert cc.w_max == pytest.approx(90 * (1 + BETA_CUBIC) / 2)   # RFC 9438 4.7: 76.5
    assert cc.cwnd == 63 * MSS
    no_fc = Cubic(mss=MSS)
    no_fc.fast_convergence = False
    no_fc.cwnd = 100 * MSS
    no_fc.on_congestion_event(0.0, 100 * MSS)
    no_fc.on_recovery_exit(0.1)
    no_fc.cwnd = 90 * MSS
    no_fc.on_congestion_event(1.0, 90 * MSS)
    assert no_fc.w_max == 90


def test_cubic_growth_follows_rfc_curve() -> None:
    """After a loss at W_max = 1000 segments, cwnd(t) tracks W_cubic(t) = C (t - K)^3 + W_max."""
    w_max = 1000
    rtt = 0.1
    cc = Cubic(mss=MSS)
    cc.cwnd = w_max * MSS
    cc.on_congestion_event(0.0, w_max * MSS)
    cc.on_recovery_exit(0.0)
    k = (w_max * (1 - BETA_CUBIC) / C_CUBIC) ** (1 / 3)          # ~9.09 s

    def w_cubic(t: float) -> float:
        return C_CUBIC * (t - k) ** 3 + w_max

    # A steady ACK clock: every 1 ms, 1/100 of the window (RTT = 100 ms), always cwnd-limited.
    now = 0.0
    checks = {round(x * k, 3): None for x in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)}
    step = 0.001
    while now < 1.5 * k + step:
        now = round(now + step, 6)
        cc.on_ack(max(1, cc.cwnd // 100), rtt, now, cc.cwnd)
        if now in checks:
            checks[now] = cc.cwnd / MSS
    for t, cwnd in checks.items():
        # cwnd aims at W_cubic(t + RTT) and lags by about an RTT of ACKs: compare with the curve
        # within a couple of segments over a ~1000-segment window.
        assert cwnd is not None
        assert w_cubic(t) - 2.0 <= cwnd <= w_cubic(t + rtt) + 2.0, (t, cwnd, w_cubic(t))
    assert checks[round(k, 3)] == pytest.approx(w_max, abs=2.0)  # plateau at W_max when t = K
    assert cc.w_est < w_cubic(1.5 * k)            # Reno-friendly estimate stayed below the curve


def test_cubic_reno_friendly_region_on_short_rtt() -> None:
    """On a short-RTT, small-window path Reno's estimate beats the cubic curve: cwnd follows W_est."""
    cc = Cubic(mss=MSS)
    cc.cwnd = 20 * MSS
    cc.on_congestion_event(0.0, 20 * MSS)         # W_max = 20, cwnd = 14, K = cbrt(15) ~ 2.47 s
    cc.on_recovery_exit(0.0)
    now = 0.0
    rtt = 0.001
    for _ in range(200):                          # 200 RTTs = 0.2 s: the cubic curve barely moves
        one_rtt(cc, now, rtt)
        now += rtt
    w_est = cc.w_est
    assert cc.cwnd / MSS == pytest.approx(w_est, abs=0.002)   # int bytes of the float window
    assert cc.w_cubic(now) < w_est
    # alpha_cubic = 0.529 per RTT until W_est reaches cwnd_prior (20), then 1 per RTT.
    rtts_to_prior = (20 - 14) / ALPHA_CUBIC
    expected = 20 + (200 - rtts_to_prior) * 1.0
    assert w_est == pytest.approx(expected, abs=2.0)


def test_cubic_growth_capped_at_1_5x_per_rtt() -> None:
    cc = Cubic(mss=MSS)
    cc.cwnd = 10 * MSS
    cc.ssthresh = 10 * MSS
    cc.w_max = 10.0
    cc.on_ack(MSS, 1.0, 0.0, cc.cwnd)             # epoch starts, K = 0
    now = 0.0
    prev = cc.cwnd
    for _ in range(5):
        one_rtt(cc, now, 1.0)
        now += 1.0
        assert cc.cwnd <= 1.5 * prev + MSS
        prev = cc.cwnd


def test_cubic_rto_resets_curve() -> None:
    cc = Cubic(mss=MSS)
    cc.cwnd = 100 * MSS
    cc.on_rto(1.0, 100 * MSS)
    assert cc.cwnd == MSS and cc.ssthresh == 70 * MSS and cc.w_max == 0.0
    cc.on_rto(2.0, 100 * MSS)                     # repeated timeout: ssthresh held
    assert cc.ssthresh == 70 * MSS
    cc.on_recovery_exit(2.5)
    cc.cwnd = 70 * MSS                            # pretend slow start got back to ssthresh
    cc.on_ack(MSS, 0.1, 3.0, 70 * MSS)
    assert cc.k == 0.0 and cc.w_max == pytest.approx(70)       # RFC 9438 4.8


# ------------------------------------------------------------------ HyStart


def run_slow_start(cc: Cubic, rtt_of_round, ack_spacing: float, max_rounds: int = 30) -> int:
    """Slow start with one ACK per segment spread over ``ack_spacing`` each; returns rounds run."""
    now = 0.0
    for rnd in range(max_rounds):
        window = cc.cwnd
        acks = window // MSS
        rtt = rtt_of_round(rnd)
        for i in range(acks):
            now += ack_spacing
            cc.on_ack(MSS, rtt, now, window + i * MSS)   # each ACK releases two new segments
            if not cc.in_slow_start:
                return rnd
        now += rtt
    return max_rounds


def test_hystart_delay_exits_slow_start_when_rtt_rises() -> None:
    cc = Cubic(mss=MSS)
    cc.hystart_ack_train = False
    # 50 ms base RTT for 3 rounds (cwnd 10 -> 80), then queues build: +20 ms.
    rounds = run_slow_start(cc, lambda r: 0.05 if r < 3 else 0.07, ack_spacing=0.0001)
    assert cc.hystart_exit == "delay" and cc.hystart_found
    assert rounds == 3
    # ssthresh = cwnd at the exit; the same ACK then counts in congestion avoidance (as in Linux)
    assert not cc.in_slow_start and cc.ssthresh == 88 * MSS and cc.cwnd - cc.ssthresh < MSS
    assert cc.cwnd < 200 * MSS                    # left well before a loss-induced exit


def test_hystart_delay_threshold_is_clamped() -> None:
    cc = Cubic(mss=MSS)
    cc.hystart_ack_train = False
    # +3 ms on a 50 ms path is below the 4 ms floor (delay_min / 8 = 6.25 ms here): stays in slow start.
    run_slow_start(cc, lambda r: 0.05 if r < 3 else 0.053, ack_spacing=0.0001, max_rounds=6)
    assert cc.in_slow_start and cc.hystart_exit is None


def test_hystart_ack_train_exits_slow_start() -> None:
    cc = Cubic(mss=MSS)
    cc.hystart_delay = False
    # ACKs 1 ms apart on a 40 ms path: once a round's train spans > delay_min / 2 = 20 ms, exit.
    rounds = run_slow_start(cc, lambda r: 0.04, ack_spacing=0.001)
    assert cc.hystart_exit == "train"
    assert not cc.in_slow_start
    assert 16 * MSS <= cc.cwnd <= 64 * MSS
    assert rounds <= 3


def test_hystart_quiet_below_low_window_and_with_stable_rtt() -> None:
    cc = Cubic(mss=MSS)
    run_slow_start(cc, lambda r: 0.05, ack_spacing=0.00001, max_rounds=6)   # tight bursts, stable RTT
    assert cc.in_slow_start and cc.hystart_exit is None
    assert cc.cwnd == 10 * MSS * 2**6
    off = Cubic(mss=MSS)
    off.hystart = False
    run_slow_start(off, lambda r: 0.05 if r < 3 else 0.2, ack_spacing=0.0001, max_rounds=6)
    assert off.in_slow_start


def test_hystart_rearms_after_rto() -> None:
    cc = Cubic(mss=MSS)
    cc.hystart_ack_train = False
    run_slow_start(cc, lambda r: 0.05 if r < 3 else 0.07, ack_spacing=0.0001)
    assert cc.hystart_found
    cc.on_rto(10.0, cc.cwnd)
    assert not cc.hystart_found and cc.hystart_exit is None
