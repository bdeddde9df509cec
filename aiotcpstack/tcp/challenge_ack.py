"""RFC 5961 challenge-ACK rate limit, shared by a connection and its TIME_WAIT record.

RFC 5961 10 (and Linux ``tcp_send_challenge_ack``): at most ``config.challenge_ack_limit``
challenge ACKs per second, so a blind attacker cannot turn us into an ACK amplifier.  Kept per
connection here (Linux also keeps a per-namespace limit).  The caller owns ``chal_window`` (start
of the current one-second window) and ``chal_count``.
"""
from __future__ import annotations

from typing import Any


def challenge_ack_allowed(sk: Any, now: float) -> bool:
    """Take one challenge ACK from ``sk``'s budget (counting ``TCPChallengeACK``); False when the
    budget of this second is spent."""
    if now - sk.chal_window >= 1.0:
        sk.chal_window = now
        sk.chal_count = 0
    if sk.chal_count >= sk.config.challenge_ack_limit:
        return False
    sk.chal_count += 1
    sk.counters["TCPChallengeACK"] += 1
    return True
