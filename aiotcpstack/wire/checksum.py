"""The Internet checksum (RFC 1071) and the TCP/UDP/ICMPv6 pseudo-header sums (RFC 9293 3.1, RFC 8200 8.1).

Why this is fast in pure Python
-------------------------------
The ones'-complement sum of 16-bit words is addition modulo 0xffff (2**16 == 1 mod 0xffff, which
is exactly the "end-around carry" of RFC 1071 section 1).  So the whole buffer read as one big
integer, ``int.from_bytes(data) % 0xffff``, is congruent to the ones'-complement sum of its words:
two C loops over the buffer instead of 32768 Python additions.

Two refinements:

* We read the buffer **little-endian**: CPython converts that ~25% faster, and an odd trailing
  byte then needs no padding (RFC 1071 pads with a zero byte *after* it, which is the most
  significant byte of the little-endian integer, i.e. adds nothing).  Little-endian reading gives
  the byte-swapped sum (RFC 1071 section 2(B), byte-order independence); multiplying by 256
  modulo 0xffff swaps it back.
* Mod 0xffff cannot tell a sum of 0 from a sum of 0xffff ("negative zero").  The real
  end-around-carry sum is 0 only when every word (and the initial value) is 0, otherwise it lies
  in [1, 0xffff]; so the folded sum is ``0`` if the total is 0, else ``(total - 1) % 0xffff + 1``.
  This matters: a header whose checksum verifies sums to 0xffff, not 0.

Measured with ``timeit`` (best of runs; CPython 3.11.7, x86-64 VM of this project, idle
machine, ``os.urandom`` data; under load numbers rose up to ~2x):

=========================================  ==============================================
``internet_checksum`` 64 KiB                ~137 us (~480 MB/s; ~68 us from_bytes + ~70-80 us mod)
``internet_checksum`` 1500 bytes            ~3.7 us (~410 MB/s); ~2.6 us folded (FOLD_BITS below)
``internet_checksum`` 20 bytes              ~0.35-0.4 us (call overhead dominates)
naive RFC 1071 word loop, 64 KiB            ~3.8 ms (~27x slower)
same trick with ``from_bytes(.., "big")``   ~150-170 us for 64 KiB (big-endian conversion is slower)
=========================================  ==============================================
(Re-measure with ``python -m aiotcpstack.wire.checksum``.)
"""
from __future__ import annotations

from typing import Union

Buffer = Union[bytes, bytearray, memoryview]

_from_bytes = int.from_bytes

#: Folding before the long division.  CPython's ``n % 0xffff`` is one hardware division per
#: 30-bit digit, each waiting for the last (~5 ns a digit here: ~1.9 us for an MTU segment, more
#: than ``int.from_bytes`` itself); a shift, a mask and an add are plain linear passes.  Since
#: 2**16 == 1 (mod 0xffff), ``hi << k | lo`` == ``hi + lo`` for any k that is a multiple of 16,
#: so ``(n >> k) + (n & (2**k - 1))`` has the same sum and about half the digits when k is half
#: of n's bits.  The k are fixed (no per-call mask): half of an MTU-sized segment, 5888 bits
#: (736 bytes), then half of that.  ``verify_tcp_checksum`` of a 1480-byte segment, CPU time
#: (``time.thread_time``), median of 30 interleaved timeit runs on CPython 3.11: 3.59 us
#: unfolded, 3.02 us folded once, 2.72 us twice, 2.66 us three times.  The software-GRO run
#: check (``NetworkCore._rx_frames``, the payload alone: the hot path with offloads off) folds
#: a third time (FOLD3_BITS): reduction of a 1448-byte payload's integer 1.24 -> 1.11 us median
#: of 15 interleaved timeit runs (PERF_LOG step 20); a fourth fold costs more than it saves.
#: Only where the fixed k remove a good part of the digits (FOLD_MIN < length <= FOLD_MAX
#: bytes: MTU-sized segments, not jumbo frames): on a 64 KiB buffer the two folds would shave
#: off 1 % of the digits and cost more than that (127 -> 178 us).
FOLD_BITS = 5888
FOLD_MASK = (1 << FOLD_BITS) - 1
FOLD2_BITS = FOLD_BITS // 2
FOLD2_MASK = (1 << FOLD2_BITS) - 1
FOLD3_BITS = FOLD2_BITS // 2
FOLD3_MASK = (1 << FOLD3_BITS) - 1
FOLD_MIN = FOLD_BITS >> 3
FOLD_MAX = 2048


def ones_sum(data: Buffer, initial: int = 0) -> int:
    """Folded, **uncomplemented** 16-bit ones'-complement sum of ``data`` (big-endian words, odd
    length padded with a zero byte, RFC 1071) plus ``initial``.

    ``initial`` may be any non-negative int congruent to a partial sum (e.g. another ``ones_sum``
    or ``pseudo_header_sum``) so sums over pieces chain: ``ones_sum(b, ones_sum(a))`` equals
    ``ones_sum(a + b)`` when ``len(a)`` is even.  Result is in [0, 0xffff], 0 only if everything
    summed was zero.
    """
    n = _from_bytes(data, "little")
    if n:
        if FOLD_MIN < len(data) <= FOLD_MAX:
            n = (n >> FOLD_BITS) + (n & FOLD_MASK)
            n = (n >> FOLD2_BITS) + (n & FOLD2_MASK)
        # little-endian sum, swapped back to network order by *256 (see module docstring).
        total = ((n % 0xFFFF) << 8) + initial
    elif initial:
        total = initial
    else:
        return 0
    return (total - 1) % 0xFFFF + 1


def internet_checksum(data: Buffer, initial: int = 0) -> int:
    """The Internet checksum (RFC 1071): the ones' complement of ``ones_sum(data, initial)``.

    This is the value to store in an IPv4/ICMP/TCP checksum field (computed with the field
    zeroed).  Verifying a received header: ``ones_sum(hdr) == 0xffff`` (or this function == 0).
    """
    n = _from_bytes(data, "little")
    if n:
        if FOLD_MIN < len(data) <= FOLD_MAX:
            n = (n >> FOLD_BITS) + (n & FOLD_MASK)
            n = (n >> FOLD2_BITS) + (n & FOLD2_MASK)
        total = ((n % 0xFFFF) << 8) + initial
    elif initial:
        total = initial
    else:
        return 0xFFFF
    return 0xFFFF - ((total - 1) % 0xFFFF + 1)


def pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Folded, uncomplemented sum of the pseudo-header for TCP/UDP/ICMPv6, chosen by address length.

    IPv4 (RFC 9293 3.1): src, dst, zero, protocol, TCP length (16 bit).
    IPv6 (RFC 8200 8.1): src, dst, upper-layer packet length (32 bit), 3 zero bytes, next header.
    Both reduce to ``sum(words of src+dst) + proto + length`` modulo 0xffff.
    """
    ls = len(src)
    if ls != len(dst) or (ls != 4 and ls != 16):
        raise ValueError(f"pseudo header needs two 4- or two 16-byte addresses, got {len(src)} and {len(dst)}")
    # length may exceed 16 bits only for IPv6 (32-bit field); its two halves add like words.
    total = proto + (length >> 16) + (length & 0xFFFF)
    n = _from_bytes(src, "little") + _from_bytes(dst, "little")
    if n:
        total += (n % 0xFFFF) << 8
    elif not total:
        return 0
    # Anything non-zero summed gives a result in [1, 0xffff]: a multiple of 0xffff is the
    # ones'-complement "negative zero" 0xffff (e.g. 0.0.0.0 -> 255.255.255.255), never 0.
    return (total - 1) % 0xFFFF + 1


def _naive_ones_sum(data: bytes, initial: int = 0) -> int:
    """Reference RFC 1071 loop (for benchmarks and tests only)."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    s = initial
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


if __name__ == "__main__":  # pragma: no cover - benchmark helper
    import os
    import timeit

    for size in (20, 1500, 65536):
        buf = os.urandom(size)
        reps = max(200, 2_000_000 // size)
        t = min(timeit.repeat(lambda: internet_checksum(buf), number=reps, repeat=5)) / reps
        print(f"internet_checksum({size:6d} B): {t * 1e6:8.2f} us  ({size / t / 1e6:7.1f} MB/s)")
    buf = os.urandom(65536)
    t = min(timeit.repeat(lambda: _naive_ones_sum(buf), number=5, repeat=3)) / 5
    print(f"naive loop (65536 B):        {t * 1e6:8.2f} us")
