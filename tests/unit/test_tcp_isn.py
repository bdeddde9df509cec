"""RFC 6528 ISNs and per-host-pair timestamp offsets."""
from __future__ import annotations

import pytest

from aiotcpstack.tcp.isn import ISN_TICK, IsnGenerator

SECRET = bytes(range(32))
A4, B4 = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
A6, B6 = bytes.fromhex("20010002" + "00" * 11 + "01"), bytes.fromhex("20010002" + "00" * 11 + "02")


def test_timer_component_ticks_every_4us() -> None:
    g = IsnGenerator(SECRET)
    base = g.isn(A4, 40000, B4, 80, 10.0)
    assert g.isn(A4, 40000, B4, 80, 10.0) == base                  # deterministic
    assert (g.isn(A4, 40000, B4, 80, 10.0 + 1.0) - base) % 2**32 == 250_000
    assert (g.isn(A4, 40000, B4, 80, 10.0 + 100 * ISN_TICK + 1e-9) - base) % 2**32 == 100
    # M wraps modulo 2**32 (every ~4.77 hours) and the ISN stays a 32-bit value
    t_wrap = 2**32 * ISN_TICK
    assert 0 <= g.isn(A4, 40000, B4, 80, t_wrap + 5.0) < 2**32


def test_hash_component_depends_on_tuple_and_secret() -> None:
    g = IsnGenerator(SECRET)
    now = 123.456
    isns = {
        g.isn(A4, 40000, B4, 80, now),
        g.isn(A4, 40001, B4, 80, now),
        g.isn(A4, 40000, B4, 81, now),
        g.isn(B4, 40000, A4, 80, now),
        g.isn(A6, 40000, B6, 80, now),
        IsnGenerator(bytes(32)).isn(A4, 40000, B4, 80, now),
    }
    assert len(isns) == 6
    many = {g.isn(A4, p, B4, 80, now) for p in range(1024, 3072)}
    assert len(many) > 2040                                           # no structure in F


def test_ts_offset_per_address_pair() -> None:
    g = IsnGenerator(SECRET)
    off = g.ts_offset(A4, B4)
    assert 0 <= off < 2**32
    assert g.ts_offset(A4, B4) == off                                # ports do not matter: one clock per host pair
    assert g.ts_offset(B4, A4) != off and g.ts_offset(A6, B6) != off
    assert IsnGenerator(b"x" * 40).ts_offset(A4, B4) != off          # long secrets are accepted


def test_secret_of_any_length_is_deterministic() -> None:
    # short fixed secrets are fine for deterministic simulations; production passes os.urandom(32)
    assert IsnGenerator(b"a0").isn(A4, 1, B4, 2, 0.0) == IsnGenerator(b"a0").isn(A4, 1, B4, 2, 0.0)
    assert IsnGenerator(b"a0").isn(A4, 1, B4, 2, 0.0) != IsnGenerator(b"a1").isn(A4, 1, B4, 2, 0.0)
    with pytest.raises(TypeError):
        IsnGenerator("not bytes")  # type: ignore[arg-type]


def test_isn_is_the_keyed_hash_of_the_four_tuple_plus_the_clock() -> None:
    """The per-stack copied hash state gives exactly RFC 6528's M + F(4-tuple, key)."""
    import struct
    from aiotcpstack.tcp.isn import ISN_TICK, IsnGenerator
    gen = IsnGenerator(b"s" * 40)
    for i in range(50):
        lip, rip = bytes([10, 0, 0, i]), bytes([10, 0, 1, 255 - i])
        now = 1.5 + i * 0.37
        f = gen._hash32(b"ats-isn", lip + rip + struct.pack("!HH", 1000 + i, 80))
        assert gen.isn(lip, 1000 + i, rip, 80, now) == (int(now / ISN_TICK) + f) & 0xFFFFFFFF
