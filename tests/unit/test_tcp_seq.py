"""Sequence-number arithmetic across the 2**32 wrap (RFC 9293 3.4)."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aiotcpstack.tcp.seq import (
    SEQ_MOD,
    seq_add,
    seq_ge,
    seq_gt,
    seq_in_window,
    seq_le,
    seq_lt,
    seq_max,
    seq_min,
    seq_sub,
)

seqs = st.integers(0, SEQ_MOD - 1)
# Values clustered around the wrap point, where plain-int comparisons go wrong.
near_wrap = st.one_of(st.integers(SEQ_MOD - 70000, SEQ_MOD - 1), st.integers(0, 70000), seqs)
deltas = st.integers(-(2**31) + 1, 2**31 - 1)


def test_wraparound_examples() -> None:
    top = SEQ_MOD - 1
    assert seq_add(top, 1) == 0
    assert seq_add(top, 10) == 9
    assert seq_add(5, -10) == SEQ_MOD - 5
    assert seq_lt(top, 0)
    assert seq_gt(0, top)
    assert seq_le(top, top) and seq_ge(top, top)
    assert not seq_lt(top, top) and not seq_gt(top, top)
    assert seq_sub(5, SEQ_MOD - 3) == 8
    assert seq_sub(SEQ_MOD - 3, 5) == -8
    assert seq_max(top, 3) == 3 and seq_min(top, 3) == top
    assert seq_in_window(2, SEQ_MOD - 2, 10)
    assert seq_in_window(SEQ_MOD - 2, SEQ_MOD - 2, 10)
    assert not seq_in_window(8, SEQ_MOD - 2, 10)  # left + size is outside
    assert not seq_in_window(SEQ_MOD - 3, SEQ_MOD - 2, 10)
    assert not seq_in_window(0, 0, 0)  # zero window holds nothing
    # Inputs outside [0, 2**32) are reduced: callers may pass seq + len unmasked.
    assert seq_lt(top, top + 5) and seq_sub(top + 5, top) == 5


@given(near_wrap, deltas)
def test_add_sub_inverse(a: int, d: int) -> None:
    b = seq_add(a, d)
    assert 0 <= b < SEQ_MOD
    assert seq_sub(b, a) == d
    assert seq_add(b, -d) == a


@given(near_wrap, deltas)
def test_ordering_matches_signed_distance(a: int, d: int) -> None:
    b = seq_add(a, d)
    assert seq_lt(a, b) == (d > 0) == seq_gt(b, a)
    assert seq_le(a, b) == (d >= 0) == seq_ge(b, a)
    assert seq_gt(a, b) == (d < 0)
    assert seq_ge(a, b) == (d <= 0)
    assert seq_max(a, b) == (b if d > 0 else a)
    assert seq_min(a, b) == (a if d > 0 else b)


@given(near_wrap, st.integers(0, 2**30), st.integers(-(2**30), 2**30))
def test_in_window_matches_unwrapped_model(left: int, size: int, off: int) -> None:
    x = seq_add(left, off)
    assert seq_in_window(x, left, size) == (0 <= off < size)


@given(near_wrap, near_wrap, near_wrap)
def test_transitive_in_a_half_space(a: int, b: int, c: int) -> None:
    # Within a span below 2**31 the circle order is a total order, like ints.
    if seq_sub(b, a) >= 0 and seq_sub(c, b) >= 0 and seq_sub(c, a) >= 0 and seq_sub(c, a) == seq_sub(c, b) + seq_sub(b, a):
        assert seq_le(a, b) and seq_le(b, c) and seq_le(a, c)
