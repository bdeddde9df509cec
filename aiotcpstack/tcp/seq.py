"""Sequence-number arithmetic modulo 2**32 (RFC 9293 section 3.4).

TCP sequence numbers live on a circle of 2**32 points, so ``a < b`` on plain ints is wrong as
soon as a connection's sequence space wraps (every 4 GiB, i.e. every few seconds at 10 Gbit/s).
Like the kernel's ``before()``/``after()`` (include/net/tcp.h) we compare by the sign of the
32-bit difference: ``a`` is "before" ``b`` when ``(a - b) mod 2**32`` is in the upper half.
That is only meaningful when the two numbers are less than 2**31 apart, which TCP guarantees
because windows are at most 2**30 bytes (RFC 7323 section 2.3).

All functions take and return plain ``int`` in ``[0, 2**32)`` (inputs outside that range are
reduced modulo 2**32, so callers may pass ``seq + len`` without masking first).
"""
from __future__ import annotations

__all__ = [
    "SEQ_MOD",
    "SEQ_MASK",
    "seq_add",
    "seq_sub",
    "seq_lt",
    "seq_le",
    "seq_gt",
    "seq_ge",
    "seq_in_window",
    "seq_max",
    "seq_min",
]

SEQ_MOD = 1 << 32
SEQ_MASK = SEQ_MOD - 1
_HALF = 1 << 31


def seq_add(a: int, n: int) -> int:
    """``a + n`` on the sequence circle (``n`` may be negative)."""
    return (a + n) & SEQ_MASK


def seq_sub(a: int, b: int) -> int:
    """Signed distance ``a - b`` in ``[-2**31, 2**31)``: how far ``a`` is after ``b``.

    This is the kernel's ``(s32)(a - b)``; e.g. ``seq_sub(5, 2**32 - 3) == 8``.
    """
    d = (a - b) & SEQ_MASK
    return d - SEQ_MOD if d >= _HALF else d


def seq_lt(a: int, b: int) -> bool:
    """``a`` strictly before ``b`` (kernel ``before(a, b)``)."""
    return ((a - b) & SEQ_MASK) >= _HALF


def seq_le(a: int, b: int) -> bool:
    """``a`` before or equal to ``b``."""
    return ((b - a) & SEQ_MASK) < _HALF


def seq_gt(a: int, b: int) -> bool:
    """``a`` strictly after ``b`` (kernel ``after(a, b)``)."""
    return ((b - a) & SEQ_MASK) >= _HALF


def seq_ge(a: int, b: int) -> bool:
    """``a`` after or equal to ``b``."""
    return ((a - b) & SEQ_MASK) < _HALF


def seq_in_window(x: int, left: int, size: int) -> bool:
    """``left <= x < left + size`` on the circle (RFC 9293 3.10.7.4 acceptability tests).

    A zero-size window contains nothing; callers implementing the RFC's "RCV.WND = 0"
    special cases (a zero-length segment with ``SEG.SEQ = RCV.NXT`` is acceptable) must test
    that separately. ``size`` must be in ``[0, 2**31]``.
    """
    return ((x - left) & SEQ_MASK) < size


def seq_max(a: int, b: int) -> int:
    """The later of ``a`` and ``b`` on the circle."""
    return (b & SEQ_MASK) if seq_lt(a, b) else (a & SEQ_MASK)


def seq_min(a: int, b: int) -> int:
    """The earlier of ``a`` and ``b`` on the circle."""
    return (a & SEQ_MASK) if seq_lt(a, b) else (b & SEQ_MASK)
