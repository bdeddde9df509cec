"""The urgent mechanism's arithmetic (RFC 9293 3.8.5 and 3.10.7.4 sixth step, RFC 6093).

The urgent pointer marks the *first non-urgent octet* (RFC 9293 MUST-62 as clarified by RFC
6093 section 4: ``SEG.SEQ + SEG.UP`` is the sequence number after the urgent data; Linux
computes the same with its default ``tcp_stdurg = 0``).  The urgent data stays in line: the
application gets every byte in order through ``tcp_data`` and is told, separately, how many of
the bytes it has not been handed yet are urgent (RFC 6093 section 6 recommends exactly this,
``SO_OOBINLINE``; see docs/architecture.md "Urgent data" for how it differs from Linux's
default of pulling one byte out of band).

Only pure functions here: ``TcpConnection`` keeps the state (``rcv_up``/``rcv_urg``,
``snd_up``/``snd_urg``) and calls these at the points RFC 9293 names.
"""
from __future__ import annotations

__all__ = ["NO_URG", "URG_MAX_PTR", "receive_mark", "urgent_bytes", "send_pointer"]

MASK = 0xFFFFFFFF
HALF = 0x80000000

#: ``send_pointer``'s answer for a segment that must not carry URG
NO_URG = -1
#: the largest pointer the 16-bit field holds: sent while the mark is further away than this
#: (Linux ``tcp_options_write`` caller ``__tcp_transmit_skb``: "urg_ptr = 0xFFFF")
URG_MAX_PTR = 0xFFFF


def receive_mark(seg_seq: int, seg_up: int) -> int:
    """The sequence number of the first non-urgent octet a URG segment announces (RFC 6093 4:
    ``SEG.SEQ + SEG.UP``; a SYN's own sequence number counts like Linux's ``th->seq``)."""
    return (seg_seq + seg_up) & MASK


def urgent_bytes(rcv_up: int, consumed: int) -> int:
    """How many octets from ``consumed`` (the next octet the application will be handed) up to
    the mark ``rcv_up`` are urgent; 0 when the mark is not ahead of it (RFC 9293 MUST-33: the
    application can learn how much urgent data is queued -- some of it may not have arrived
    yet: the pointer may lie beyond the data received so far)."""
    n = (rcv_up - consumed) & MASK
    return n if n < HALF else 0


def send_pointer(seg_seq: int, snd_up: int, snd_nxt: int) -> int:
    """The urgent pointer for a segment starting at ``seg_seq`` while SND.UP is ``snd_up``, or
    :data:`NO_URG` (RFC 9293 3.8.5: every segment sent while SND.UP is after SEG.SEQ carries URG
    and the pointer; MUST-30/MUST-31: urgent data of any length).

    The field has 16 bits: while the mark is 64 KiB or more ahead, the pointer is 0xFFFF (the
    receiver learns that urgent data is coming and where it is at least), as Linux's
    ``__tcp_transmit_skb`` does -- and, also as Linux, only if that pointer does not fall at or
    before SND.NXT (``snd_nxt``: the send sequence before this segment), so an old
    retransmission far behind the mark carries no URG."""
    up = (snd_up - seg_seq) & MASK
    if up == 0 or up >= HALF:
        return NO_URG
    if up <= URG_MAX_PTR:
        return up
    if 0 < ((seg_seq + URG_MAX_PTR - snd_nxt) & MASK) < HALF:
        return URG_MAX_PTR
    return NO_URG
