"""Initial sequence numbers (RFC 6528) and per-connection timestamp offsets (Linux ``ts_off``).

RFC 6528 section 3: ``ISN = M + F(localip, localport, remoteip, remoteport, secretkey)`` where
``M`` is a timer ticking every 4 microseconds and ``F`` a keyed hash. The timer keeps ISNs of
successive incarnations of the same 4-tuple increasing (so old duplicates are not accepted,
RFC 9293 3.4.1), and the hash keeps them unpredictable to off-path attackers who do not know the
secret. Linux (``secure_tcp_seq``) uses SipHash and a 64 ns clock; we use the RFC's 4 us tick and
BLAKE2s keyed with the per-stack secret (hashlib, no extra dependency).

The timestamp offset (RFC 7323 section 5.4 recommends randomising the TSval start per
connection so TSval does not leak uptime) follows Linux ``secure_tcp_ts_off``: a keyed hash of
the *address pair only* (not the ports), so all connections between two hosts share one clock,
which keeps PAWS and TIME_WAIT reuse working across connections.

The secret comes from the caller (``ip.core.NetworkCore`` draws ``os.urandom(32)`` per core
unless it is given one, RFC 9293 MUST-9): this module has no entropy source and no clock of its
own (sans-IO).
"""
from __future__ import annotations

import hashlib
import struct

__all__ = ["IsnGenerator", "ISN_TICK"]

ISN_TICK = 4e-6            # RFC 6528 section 3: M is incremented every 4 microseconds
_MASK32 = 0xFFFFFFFF
_PORTS = struct.Struct("!HH")


def _key(secret: bytes) -> bytes:
    """The BLAKE2s key for ``secret``: 32 random bytes in production (``aio`` uses os.urandom(32)).

    Any length is accepted so that simulations can use short fixed secrets for determinism;
    keys longer than BLAKE2s's 32 bytes are compressed first.
    """
    if not isinstance(secret, (bytes, bytearray, memoryview)):
        raise TypeError("secret must be bytes")
    secret = bytes(secret)
    return secret if len(secret) <= 32 else hashlib.blake2s(secret).digest()


class IsnGenerator:
    """RFC 6528 ISN source for one stack (one secret)."""

    __slots__ = ("_key", "_isn_base")

    def __init__(self, secret: bytes) -> None:
        self._key = _key(secret)
        # the keyed ISN hash state before any data, copied per connection: the key block is
        # compressed once per stack instead of once per SYN (~0.6 us each)
        self._isn_base = hashlib.blake2s(digest_size=4, key=self._key, person=b"ats-isn")

    def _hash32(self, person: bytes, data: bytes) -> int:
        h = hashlib.blake2s(data, digest_size=4, key=self._key, person=person)
        return int.from_bytes(h.digest(), "big")

    def isn(self, local: bytes, lport: int, remote: bytes, rport: int, now: float) -> int:
        """``M + F(localip, localport, remoteip, remoteport, secretkey)`` mod 2**32 (RFC 6528 3)."""
        m = int(now / ISN_TICK) & _MASK32
        h = self._isn_base.copy()          # (= _hash32(b"ats-isn", ...))
        h.update(bytes(local) + bytes(remote) + _PORTS.pack(lport, rport))
        return (m + int.from_bytes(h.digest(), "big")) & _MASK32

    def ts_offset(self, local: bytes, remote: bytes) -> int:
        """Per-address-pair TSval offset (Linux ``secure_tcp_ts_off``), 32 bits."""
        return self._hash32(b"ats-tsof", bytes(local) + bytes(remote))
