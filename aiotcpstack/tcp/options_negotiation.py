"""Option choices made at connection set-up (RFC 9293 3.7.1 MSS, RFC 7323 window scale and
timestamps, RFC 2018 SACK-permitted), the way Linux makes them."""
from __future__ import annotations

MAX_WSCALE = 14          # RFC 7323 2.3
TS_OPTION_LEN = 12       # NOP, NOP, TS (10) as Linux aligns it
SACK_BLOCK_LEN = 8
SACK_BASE_LEN = 4        # NOP, NOP, kind, len


def choose_wscale(rcvbuf_max: int) -> int:
    """Our window scale shift: the smallest that lets a 16-bit window cover ``rcvbuf_max``
    (Linux tcp_select_initial_window)."""
    ws = 0
    space = rcvbuf_max
    while space > 65535 and ws < MAX_WSCALE:
        space >>= 1
        ws += 1
    return ws


def default_peer_mss(is_ipv6: bool) -> int:
    """Send MSS when the peer's SYN carries no MSS option: RFC 9293 3.7.1 / RFC 1122 (536 for IPv4),
    RFC 8200 (1220 for IPv6)."""
    return 1220 if is_ipv6 else 536


def sack_option_len(nblocks: int) -> int:
    return SACK_BASE_LEN + SACK_BLOCK_LEN * nblocks if nblocks else 0


def max_sack_blocks(timestamps: bool) -> int:
    """RFC 2018: 4 blocks fit in 40 option bytes, 3 alongside timestamps."""
    return 3 if timestamps else 4
