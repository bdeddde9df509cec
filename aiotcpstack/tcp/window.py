"""The receive window to advertise (Linux ``__tcp_select_window`` / ``tcp_select_window``).

RFC 1122 4.2.3.3 receiver SWS avoidance: the right edge moves only when the window would open by
at least min(MSS, rcvbuf/2); RFC 9293 SHLD-14 / RFC 7323 2.4: never shrink the right edge already
advertised (the current window, rounded up to the scale, is kept).  Shared by a connection and its
TIME_WAIT record (tcp/timewait.py), which advertise by the same rule.
"""
from __future__ import annotations

MASK = 0xFFFFFFFF
HALF = 0x80000000


def select_window(free: int, rcv_adv: int, rcv_nxt: int, rcv_wscale: int, rcvbuf: int,
                  rcv_mss: int) -> tuple[int, int]:
    """``(window field, new RCV.ADV)`` for ``free`` bytes of receive space."""
    if free < 0:
        free = 0
    cur = (rcv_adv - rcv_nxt) & MASK
    if cur >= HALF:
        cur = 0
    thresh = rcvbuf >> 1
    if rcv_mss < thresh:
        thresh = rcv_mss
    if free > cur and free - cur >= thresh:
        field = free >> rcv_wscale
    else:
        field = (cur + (1 << rcv_wscale) - 1) >> rcv_wscale
    if field > 65535:
        field = 65535
    return field, (rcv_nxt + (field << rcv_wscale)) & MASK
