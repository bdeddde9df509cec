"""ICMP echo (ping) answering for a dedicated address (RFC 792; RFC 1122 3.2.2.6: the reply
carries the request's identifier, sequence number and data unchanged)."""
from __future__ import annotations

from ..wire import icmp as _icmp
from ..wire.errors import ParseError

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129


def echo_reply_v4(buf, counters: dict[str, int]) -> bytes | None:
    """The ICMPv4 message answering ``buf`` (an ICMP message), or None when none is due."""
    counters["IcmpInMsgs"] += 1
    try:
        msg = _icmp.parse_icmpv4(buf)
    except ParseError:
        counters["IcmpInErrors"] += 1
        return None
    if msg.type == ICMP_ECHO_REQUEST and msg.code == 0:
        counters["IcmpInEchos"] += 1
        counters["IcmpOutMsgs"] += 1
        counters["IcmpOutEchoReps"] += 1
        return _icmp.build_icmpv4(ICMP_ECHO_REPLY, 0, msg.rest, msg.body)
    if msg.type == 3:
        counters["IcmpInDestUnreachs"] += 1
    return None


def echo_reply_v6(buf, src: bytes, dst: bytes, counters: dict[str, int]) -> bytes | None:
    """The ICMPv6 echo reply for ``buf`` sent from ``src`` to ``dst`` (our address), or None."""
    counters["Icmp6InMsgs"] += 1
    try:
        msg = _icmp.parse_icmpv6(buf, src, dst)
    except ParseError:
        counters["Icmp6InErrors"] += 1
        return None
    if msg.type == ICMPV6_ECHO_REQUEST and msg.code == 0:
        counters["Icmp6OutMsgs"] += 1
        return _icmp.build_icmpv6(dst, src, ICMPV6_ECHO_REPLY, 0, msg.rest, msg.body)
    return None
