"""SYN cookies, as Linux computes them (net/ipv4/syncookies.c, net/ipv6/syncookies.c).

When the SYN queue overflows (or ``tcp_syncookies = 2``) the listener answers a SYN without
keeping any state: the SYN-ACK's sequence number encodes what it needs to rebuild the request
sock when the final ACK comes back (its acknowledgment number is ``cookie + 1``):

    cookie = H0(saddr, daddr, sport, dport) + ISN_peer + (count << 24)
             + ((H1(saddr, daddr, sport, dport, count) + mssind) mod 2**24)       (mod 2**32)

``count`` is a counter of minutes (``COOKIE_PERIOD`` = 60 s, Linux ``TCP_SYNCOOKIE_PERIOD``;
older kernels used 64 s) derived from ``now``; ``mssind`` indexes a small table of common MSS
values (the cookie carries 2 bits of MSS, the SYN-ACK advertises the table value at or below the
peer's MSS). A cookie validates for ``MAX_SYNCOOKIE_AGE`` (2) counter values: the minute it was
made and the next one. Linux uses SipHash with two secrets; we use BLAKE2s keyed with the
caller's secret and two personalisations, which plays the same role.

TCP options that do not fit in the cookie travel in the timestamp (Linux
``cookie_init_timestamp`` / ``cookie_timestamp_decode``): the low 6 bits of our TSval carry the
peer's window scale (4 bits, 15 meaning "no window scaling"), SACK-permitted (bit 4) and ECN
(bit 5); the peer echoes them in TSecr. Without timestamps, a cookie connection has no
window scaling and no SACK (as in Linux).

Addresses and ports are given *as seen in the peer's segments*: ``saddr``/``sport`` are the
peer's, ``daddr``/``dport`` ours, both for :func:`encode` (from the SYN) and :func:`validate`
(from the ACK). Addresses are 4-byte (IPv4 table) or 16-byte (IPv6 table) ``bytes``.
"""
from __future__ import annotations

import hashlib
import struct

__all__ = [
    "COOKIE_PERIOD",
    "COOKIEBITS",
    "MAX_SYNCOOKIE_AGE",
    "MSS_TABLE_V4",
    "MSS_TABLE_V6",
    "TSBITS",
    "cookie_time",
    "decode_ts_options",
    "encode",
    "encode_ts_options",
    "validate",
]

COOKIEBITS = 24                       # upper 8 bits carry the minute counter
COOKIEMASK = (1 << COOKIEBITS) - 1
COOKIE_PERIOD = 60.0                  # Linux TCP_SYNCOOKIE_PERIOD (60 * HZ)
MAX_SYNCOOKIE_AGE = 2                 # Linux MAX_SYNCOOKIE_AGE
MSS_TABLE_V4 = (536, 1300, 1440, 1460)                     # net/ipv4/syncookies.c msstab
MSS_TABLE_V6 = (1280 - 60, 1480 - 60, 1500 - 60, 9000 - 60)  # net/ipv6/syncookies.c msstab

TSBITS = 6                            # low TSval bits used for options
TS_OPT_WSCALE_MASK = 0xF
TS_OPT_SACK = 1 << 4
TS_OPT_ECN = 1 << 5
_MASK32 = 0xFFFFFFFF
_TAIL = struct.Struct("!HHI")


def cookie_time(now: float) -> int:
    """The minute counter (Linux ``tcp_cookie_time``) for ``now`` (seconds)."""
    return int(now // COOKIE_PERIOD) & _MASK32


def _key(secret: bytes) -> bytes:
    """The BLAKE2s key for ``secret``: 32 random bytes in production (``aio`` uses os.urandom(32)).

    Any length is accepted so that simulations can use short fixed secrets for determinism;
    keys longer than BLAKE2s's 32 bytes are compressed first.
    """
    if not isinstance(secret, (bytes, bytearray, memoryview)):
        raise TypeError("secret must be bytes")
    secret = bytes(secret)
    return secret if len(secret) <= 32 else hashlib.blake2s(secret).digest()


def _cookie_hash(saddr: bytes, daddr: bytes, sport: int, dport: int, count: int, c: int, key: bytes) -> int:
    """Linux ``cookie_hash``: keyed 32-bit hash; ``c`` selects one of two independent keys."""
    data = bytes(saddr) + bytes(daddr) + _TAIL.pack(sport, dport, count & _MASK32)
    h = hashlib.blake2s(data, digest_size=4, key=key, person=b"ats-ck0" if c == 0 else b"ats-ck1")
    return int.from_bytes(h.digest(), "big")


def _table(addr: bytes) -> tuple[int, ...]:
    return MSS_TABLE_V6 if len(addr) == 16 else MSS_TABLE_V4


def encode(saddr: bytes, daddr: bytes, sport: int, dport: int, peer_isn: int, mss: int,
           now: float, secret: bytes) -> tuple[int, int]:
    """Our ISN for the SYN-ACK and the MSS it encodes: ``(cookie_isn, mss_used)``.

    ``peer_isn`` is the SYN's sequence number; ``mss`` the peer's MSS option (536 if absent,
    RFC 9293 3.7.1). ``mss_used`` is the largest table entry <= ``mss`` (the smallest entry if
    ``mss`` is below all of them, as Linux does): advertise/use that, since it is all the ACK
    will give back (Linux ``__cookie_v4_init_sequence``).
    """
    key = _key(secret)
    table = _table(saddr)
    mssind = len(table) - 1
    while mssind and mss < table[mssind]:
        mssind -= 1
    count = cookie_time(now)
    cookie = (
        _cookie_hash(saddr, daddr, sport, dport, 0, 0, key)
        + peer_isn
        + (count << COOKIEBITS)
        + ((_cookie_hash(saddr, daddr, sport, dport, count, 1, key) + mssind) & COOKIEMASK)
    ) & _MASK32
    return cookie, table[mssind]


def validate(saddr: bytes, daddr: bytes, sport: int, dport: int, peer_isn: int, cookie: int,
             now: float, secret: bytes) -> int | None:
    """The MSS encoded in a returning cookie, or None if it is forged, for another 4-tuple or too old.

    From the peer's ACK: ``peer_isn = SEG.SEQ - 1`` and ``cookie = SEG.ACK - 1`` (mod 2**32)
    (Linux ``__cookie_v4_check``). Accepts cookies made in the current counter period or the
    previous one (``MAX_SYNCOOKIE_AGE``).
    """
    key = _key(secret)
    table = _table(saddr)
    count = cookie_time(now)
    # Strip away the layers from the cookie (Linux check_tcp_syn_cookie).
    rest = (cookie - _cookie_hash(saddr, daddr, sport, dport, 0, 0, key) - peer_isn) & _MASK32
    diff = (count - (rest >> COOKIEBITS)) & (_MASK32 >> COOKIEBITS)
    if diff >= MAX_SYNCOOKIE_AGE:
        return None
    mssind = (rest - _cookie_hash(saddr, daddr, sport, dport, count - diff, 1, key)) & COOKIEMASK
    if mssind >= len(table):
        return None
    return table[mssind]


def encode_ts_options(tsval: int, wscale: int | None, sack: bool, ecn: bool) -> int:
    """Hide the SYN's options in the low 6 bits of our SYN-ACK TSval (Linux ``cookie_init_timestamp``).

    ``wscale`` is the *peer's* window scale (its SYN's WS option; None if it sent none).
    The result is never later than ``tsval`` (at most 63 ticks earlier), so our timestamp clock
    does not run ahead. Apply this to the TSval *before* adding the connection's ``ts_off``, and
    subtract ``ts_off`` from the echoed TSecr before :func:`decode_ts_options` (Linux does both).
    """
    if wscale is None:
        options = TS_OPT_WSCALE_MASK
    else:
        if not 0 <= wscale <= 14:                      # RFC 7323 2.3: shift.cnt <= 14
            raise ValueError("window scale must be in 0..14")
        options = wscale
    if sack:
        options |= TS_OPT_SACK
    if ecn:
        options |= TS_OPT_ECN
    tsval &= _MASK32
    ts = ((tsval >> TSBITS) << TSBITS) | options
    if ts > tsval:
        ts -= 1 << TSBITS
    return ts & _MASK32


def decode_ts_options(tsecr: int, *, sack_enabled: bool = True, wscale_enabled: bool = True,
                      ecn_enabled: bool = True) -> tuple[int | None, bool, bool] | None:
    """``(wscale, sack, ecn)`` from the TSecr of a cookie ACK (Linux ``cookie_timestamp_decode``).

    ``wscale`` is None when the peer did not offer window scaling. Returns None when the echoed
    options could not have come from us under the given settings (e.g. SACK when it is
    disabled): the ACK must then be rejected, as Linux does. ``ecn`` is reported only when
    ``ecn_enabled`` (Linux ``cookie_ecn_ok``).
    """
    options = tsecr & ((1 << TSBITS) - 1)
    sack = bool(options & TS_OPT_SACK)
    if sack and not sack_enabled:
        return None
    ecn = bool(options & TS_OPT_ECN) and ecn_enabled
    ws = options & TS_OPT_WSCALE_MASK
    if ws == TS_OPT_WSCALE_MASK:
        return None, sack, ecn                      # no window scaling
    if not wscale_enabled:
        return None
    return ws, sack, ecn
