"""RFC 6298 estimator with Linux bounds, on exact numbers."""
from __future__ import annotations

import random

import pytest

from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.rtt import RttEstimator

approx = lambda x: pytest.approx(x, abs=1e-12)  # noqa: E731


def test_initial_state() -> None:
    e = RttEstimator()
    assert e.rto == 1.0                         # RFC 6298 2.1
    assert e.srtt == 0.0 and e.rttvar == 0.0 and not e.has_sample
    assert e.min_rtt is None


def test_first_sample_rfc6298_2_2() -> None:
    e = RttEstimator()
    e.sample(1.0)
    assert e.srtt == 1.0 and e.rttvar == 0.5
    assert e.rto == 3.0                         # srtt + 4 * rttvar = 3 * R
    assert e.min_rtt == 1.0


def test_subsequent_samples_rfc6298_2_3() -> None:
    e = RttEstimator()
    e.sample(0.1)
    assert e.srtt == approx(0.1) and e.rttvar == approx(0.05)
    assert e.rto == approx(0.3)                 # 0.1 + max(4 * 0.05, 0.2)
    e.sample(0.2)
    # RTTVAR = 3/4 * 0.05 + 1/4 * |0.1 - 0.2| (old SRTT), SRTT = 7/8 * 0.1 + 1/8 * 0.2
    assert e.rttvar == approx(0.0625)
    assert e.srtt == approx(0.1125)
    assert e.rto == approx(0.1125 + 0.25)
    e.sample(0.05)
    assert e.rttvar == approx(0.75 * 0.0625 + 0.25 * 0.0625)
    assert e.srtt == approx(0.875 * 0.1125 + 0.125 * 0.05)
    assert e.min_rtt == approx(0.05)


def test_linux_floor_is_on_the_variance_term() -> None:
    # A stable 100 ms path: RFC 6298 would say max(1 s, ...) ; Linux: srtt + max(4 rttvar, rto_min).
    e = RttEstimator()
    for _ in range(200):
        e.sample(0.1)
    assert e.rttvar < 1e-12
    assert e.rto == approx(0.3)                 # not 0.2: the floor applies to the variance term
    lan = RttEstimator()
    for _ in range(200):
        lan.sample(0.0002)
    assert lan.rto == approx(0.2002)


def test_rfc_style_granularity_when_no_rto_min() -> None:
    e = RttEstimator(rto_min=0.0, granularity=0.001)
    for _ in range(200):
        e.sample(0.01)
    assert e.rto == approx(0.011)               # srtt + max(G, K*RTTVAR), RFC 6298 2.3


def test_rto_max_and_backoff() -> None:
    e = RttEstimator()
    assert e.backoff() == 2.0 and e.backoff() == 4.0 and e.backoffs == 2
    e.reset_backoff()
    assert e.rto == 1.0
    e.sample(1.0)                               # base 3 s
    assert [e.backoff() for _ in range(7)] == [6.0, 12.0, 24.0, 48.0, 96.0, 120.0, 120.0]
    assert e.backoffs == 7
    e.sample(1.0)                               # a valid sample ends the backoff (RFC 6298 5.7)
    assert e.backoffs == 0 and e.rto == approx(1.0 + 4 * 0.375)
    big = RttEstimator()
    big.sample(50.0)
    assert big.rto == 120.0                     # 50 + 100 capped at TCP_RTO_MAX
    for _ in range(100):
        big.backoff()
    assert big.rto == 120.0


def test_reset_fallback_and_config() -> None:
    e = RttEstimator.from_config(TcpConfig(rto_initial=1.0, rto_min=0.2, rto_max=60.0))
    assert e.rto_max == 60.0
    e.sample(0.5)
    e.reset(3.0)                                # RFC 6298 5.7 / TCP_TIMEOUT_FALLBACK
    assert e.rto == 3.0 and not e.has_sample
    with pytest.raises(ValueError):
        e.sample(-1.0)


def test_windowed_min_rtt() -> None:
    e = RttEstimator(min_rtt_window=300.0)
    e.sample(0.05, now=0.0)
    e.sample(0.08, now=100.0)
    assert e.min_rtt == 0.05
    e.sample(0.09, now=301.0)                   # the 0.05 sample left the window
    assert e.min_rtt == 0.08
    e.sample(0.01, now=302.0)
    assert e.min_rtt == 0.01
    e.sample(0.2, now=1000.0)                   # nothing left in the window: reset
    assert e.min_rtt == 0.2


def test_rto_attribute_follows_every_change() -> None:
    """``rto`` is a plain attribute kept up to date (no property): after any sequence of samples,
    timeouts, backoff resets and resets it is the base RTO doubled per backoff, capped."""
    rng = random.Random(7)
    e = RttEstimator(rto_initial=1.0, rto_min=0.2, rto_max=60.0)
    for step in range(400):
        op = rng.random()
        if op < 0.5:
            e.sample(rng.choice([0.0001, 0.01, 0.3, 2.0, 30.0]), step * 0.01)
        elif op < 0.8:
            e.backoff()
        elif op < 0.9:
            e.reset_backoff()
        else:
            e.reset(rng.choice([None, 3.0, 100.0]))
        want = min(e.base_rto * (1 << min(e.backoffs, 62)), e.rto_max) if e.backoffs else e.base_rto
        assert e.rto == want, step
