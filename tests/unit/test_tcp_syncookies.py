"""SYN cookies (Linux net/ipv4/syncookies.c scheme) and option encoding in the timestamp."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiotcpstack.tcp import syncookies as sc

SECRET = b"\x01" * 16 + b"\x02" * 16
PEER, US = bytes([198, 18, 0, 2]), bytes([198, 18, 0, 1])
PEER6, US6 = bytes.fromhex("20010002" + "00" * 11 + "02"), bytes.fromhex("20010002" + "00" * 11 + "01")


def roundtrip(mss: int, now: float, later: float, peer_isn: int = 1000, **kw) -> int | None:
    cookie, used = sc.encode(PEER, US, 40000, 80, peer_isn, mss, now, SECRET)
    args = dict(saddr=PEER, daddr=US, sport=40000, dport=80, peer_isn=peer_isn, cookie=cookie,
                now=later, secret=SECRET)
    args.update(kw)
    return sc.validate(**args)


@pytest.mark.parametrize("mss,expected", [(1460, 1460), (9000, 1460), (1452, 1440), (1400, 1300), (1299, 536), (100, 536)])
def test_mss_table_v4(mss: int, expected: int) -> None:
    cookie, used = sc.encode(PEER, US, 40000, 80, 5, mss, 100.0, SECRET)
    assert used == expected
    assert sc.validate(PEER, US, 40000, 80, 5, cookie, 100.0, SECRET) == expected


def test_mss_table_v6() -> None:
    assert sc.MSS_TABLE_V6 == (1220, 1420, 1440, 8940)
    for mss, expected in [(1440, 1440), (9000, 8940), (1300, 1220), (1500, 1440)]:
        cookie, used = sc.encode(PEER6, US6, 40000, 443, 77, mss, 5.0, SECRET)
        assert used == expected
        assert sc.validate(PEER6, US6, 40000, 443, 77, cookie, 5.0, SECRET) == expected


@given(st.integers(0, 2**32 - 1), st.floats(0, 1e9), st.floats(0, 119.0), st.sampled_from([536, 1300, 1440, 1460]))
def test_roundtrip_any_isn_and_time(peer_isn: int, now: float, age: float, mss: int) -> None:
    cookie, used = sc.encode(PEER, US, 40000, 80, peer_isn, mss, now, SECRET)
    assert 0 <= cookie < 2**32 and used == mss
    later = now + age
    ok = sc.cookie_time(later) - sc.cookie_time(now) < sc.MAX_SYNCOOKIE_AGE
    assert sc.validate(PEER, US, 40000, 80, peer_isn, cookie, later, SECRET) == (mss if ok else None)


def test_wrong_tuple_isn_or_secret_rejected() -> None:
    cookie, _ = sc.encode(PEER, US, 40000, 80, 1000, 1460, 10.0, SECRET)
    assert sc.validate(PEER, US, 40000, 80, 1000, cookie, 10.0, SECRET) == 1460
    bad = [
        sc.validate(US, PEER, 40000, 80, 1000, cookie, 10.0, SECRET),         # addresses swapped
        sc.validate(bytes([198, 18, 0, 3]), US, 40000, 80, 1000, cookie, 10.0, SECRET),
        sc.validate(PEER, US, 40001, 80, 1000, cookie, 10.0, SECRET),         # other port
        sc.validate(PEER, US, 40000, 8080, 1000, cookie, 10.0, SECRET),
        sc.validate(PEER, US, 40000, 80, 1000 + 4096, cookie, 10.0, SECRET),  # other peer ISN
        sc.validate(PEER, US, 40000, 80, 1000, cookie, 10.0, b"\x03" * 32),   # other secret
    ]
    assert bad == [None] * len(bad)


def test_tampered_cookies_rejected() -> None:
    cookie, _ = sc.encode(PEER, US, 40000, 80, 1000, 1460, 10.0, SECRET)
    # As in Linux the MSS index is *added* to the low bits, so a change of the lowest two bits
    # (or of the peer ISN by 1-3) can only select another MSS table entry; any other change is
    # rejected. (Forging one needs the cookie, i.e. an on-path attacker, who can ACK anyway.)
    for bit in range(2, 32):
        assert sc.validate(PEER, US, 40000, 80, 1000, cookie ^ (1 << bit), 10.0, SECRET) is None, bit
    # random guesses pass with probability ~ 4 / 2**24 per guess (Linux's strength)
    forged = sum(
        sc.validate(PEER, US, 40000, 80, 1000, (cookie + 7919 * i) & 0xFFFFFFFF, 10.0, SECRET) is not None
        for i in range(1, 3000)
    )
    assert forged == 0


def test_expiry_and_counter_boundary() -> None:
    period = sc.COOKIE_PERIOD
    # Made in the last instant of a period: valid through the whole next period, not after.
    t0 = 10 * period - 1e-6
    assert roundtrip(1460, t0, t0) == 1460
    assert roundtrip(1460, t0, 10 * period) == 1460                    # counter just ticked: age 1
    assert roundtrip(1460, t0, 11 * period - 1e-6) == 1460
    assert roundtrip(1460, t0, 11 * period) is None                    # age 2 = MAX_SYNCOOKIE_AGE
    # Made at the start of a period: valid for almost two periods.
    t1 = 20 * period
    assert roundtrip(1460, t1, t1 + 2 * period - 1e-6) == 1460
    assert roundtrip(1460, t1, t1 + 2 * period) is None
    # A cookie "from the future" (clock went backwards / forged count) is rejected.
    assert roundtrip(1460, t1, t1 - 1.0) is None
    # The 8-bit counter wraps: still fine across the wrap.
    t2 = 255 * period + 1.0
    assert sc.cookie_time(t2) & 0xFF == 255
    assert roundtrip(1440, t2, t2 + period) == 1440


@pytest.mark.parametrize("wscale", [None, 0, 7, 14])
@pytest.mark.parametrize("sack", [False, True])
@pytest.mark.parametrize("ecn", [False, True])
def test_options_in_timestamp(wscale: int | None, sack: bool, ecn: bool) -> None:
    for tsval in (0x12345678, 0x40, 0x3F, 0xFFFFFFFF, 1000):
        ts = sc.encode_ts_options(tsval, wscale, sack, ecn)
        assert 0 <= ts < 2**32
        assert (tsval - ts) % 2**32 < 64                               # never ahead, at most 63 behind
        assert sc.decode_ts_options(ts) == (wscale, sack, ecn)


def test_ts_option_policy() -> None:
    ts = sc.encode_ts_options(5000, 7, True, True)
    assert sc.decode_ts_options(ts, sack_enabled=False) is None         # SACK echoed but disabled
    assert sc.decode_ts_options(ts, wscale_enabled=False) is None
    assert sc.decode_ts_options(ts, ecn_enabled=False) == (7, True, False)
    no_ws = sc.encode_ts_options(5000, None, False, False)
    assert sc.decode_ts_options(no_ws, wscale_enabled=False) == (None, False, False)
    with pytest.raises(ValueError):
        sc.encode_ts_options(5000, 15, False, False)
