"""ICMP / ICMPv6 errors delivered to TCP (Linux ``tcp_v4_err`` / ``tcp_v6_err``; RFC 1122
4.2.3.9, RFC 5927, RFC 1191, RFC 8201, RFC 4443).

Sans-IO, called by :class:`~aiotcpstack.ip.core.NetworkCore` for every ICMP error addressed to one
of our addresses, in dedicated *and* shared mode (in shared mode the kernel sees the message too;
it finds no socket of its own for the quoted 4-tuple and ignores it -- except that it also learns
the path MTU for its own later connections, which is right).

What happens, step by step (as ``tcp_v4_err``):

1. The quoted header (``wire.icmp.parse_quoted_ipv4/6``) must be TCP from one of our addresses;
   the 4-tuple is looked up in the established table.  No connection: a request sock in a
   listener's SYN queue (``tcp_req_err``: the quoted sequence number must be its ISN; net/host
   unreachable, time exceeded and parameter problem drop it, ``ListenDrops``), else the message is
   counted (``IcmpInErrors`` / ``Icmp6InErrors``) and dropped.
2. RFC 5927 4.1 (and Linux): the quoted sequence number must lie in ``SND.UNA .. SND.NXT``; an
   error quoting anything else cannot be about a segment we have in flight, so it is a spoof or a
   very old duplicate: dropped and counted ``OutOfWindowIcmps`` (the Linux MIB name).
3. Fragmentation needed (v4 type 3 code 4) / packet too big (v6 type 2): the path MTU cache
   (:mod:`aiotcpstack.ip.pmtu`) learns the new MTU and every connection to that destination
   shrinks its MSS; the ones with data in flight retransmit it at once, cut to the new size (Linux
   ``tcp_v4_mtu_reduced`` -> ``tcp_sync_mss`` + ``tcp_simple_retransmit``).  ``TCPPMTUDUpdates``
   (our name) counts reductions.
4. Any other destination unreachable, time exceeded or parameter problem: the errno from Linux's
   ``icmp_err_convert`` / ``icmpv6_err_convert``.  In SYN-SENT (and SYN-RECEIVED of a
   simultaneous open) it is a hard error: the connection fails with that errno at once
   (``EHOSTUNREACH``, ``ECONNREFUSED`` for port unreachable, ...), as Linux does.  In a
   synchronized state it is a soft error (RFC 1122 4.2.3.9 and RFC 5927 4.2 say so for codes
   0, 1, 5; RFC 5927 recommends the same for the "hard" codes 2-4 in synchronized states, and
   Linux without IP_RECVERR agrees): it is recorded on the connection (``sk_err_soft``) and
   reported instead of ETIMEDOUT if the connection later times out.  While the application owns
   the connection a hard error is recorded as soft too (Linux: ``sock_owned_by_user``).
"""
from __future__ import annotations

import errno
from typing import Any

from ..tcp.seq import seq_le
from ..wire import icmp as _icmp
from ..wire.errors import ChecksumError, ParseError

IPPROTO_TCP = 6

# RFC 792 / RFC 4443 error types that quote the offending packet
ICMP_ERROR_TYPES = frozenset((3, 4, 5, 11, 12))          # 4 source quench, 5 redirect: ignored
ICMPV6_ERROR_TYPES = frozenset((1, 2, 3, 4))

#: Linux net/ipv4/icmp.c icmp_err_convert: dest-unreachable code -> (errno, fatal)
ICMP_UNREACH_ERRNO = {
    0: (errno.ENETUNREACH, False),    # net unreachable
    1: (errno.EHOSTUNREACH, False),   # host unreachable
    2: (errno.ENOPROTOOPT, True),     # protocol unreachable
    3: (errno.ECONNREFUSED, True),    # port unreachable
    4: (errno.EMSGSIZE, False),       # fragmentation needed (handled as PMTUD)
    5: (errno.EOPNOTSUPP, False),     # source route failed
    6: (errno.ENETUNREACH, True),     # destination net unknown
    7: (errno.EHOSTDOWN, True),       # destination host unknown
    8: (errno.ENONET, True),          # source host isolated
    9: (errno.ENETUNREACH, True),     # net administratively prohibited
    10: (errno.EHOSTUNREACH, True),   # host administratively prohibited
    11: (errno.ENETUNREACH, False),   # net unreachable for TOS
    12: (errno.EHOSTUNREACH, False),  # host unreachable for TOS
    13: (errno.EHOSTUNREACH, True),   # communication administratively prohibited
    14: (errno.EHOSTUNREACH, True),   # host precedence violation
    15: (errno.EHOSTUNREACH, True),   # precedence cutoff in effect
}
#: Linux net/ipv6/icmp.c icmpv6_err_convert (tab_unreach)
ICMPV6_UNREACH_ERRNO = {
    0: (errno.EHOSTUNREACH, False),   # no route
    1: (errno.EACCES, True),          # administratively prohibited
    2: (errno.EHOSTUNREACH, False),   # beyond scope of source address
    3: (errno.EHOSTUNREACH, False),   # address unreachable
    4: (errno.ECONNREFUSED, True),    # port unreachable
    5: (errno.EACCES, True),          # source address failed ingress/egress policy
    6: (errno.EACCES, True),          # reject route
}

_SYN_STATES = ("SYN_SENT", "SYN_RECEIVED")
_DEAD_STATES = ("CLOSED", "TIME_WAIT", "LISTEN")


def icmpv4_errno(type_: int, code: int) -> tuple[int, bool] | None:
    """``(errno, fatal)`` for an ICMPv4 error (None: ignored, e.g. source quench, redirect)."""
    if type_ == 3:
        return ICMP_UNREACH_ERRNO.get(code, (errno.EHOSTUNREACH, False))
    if type_ == 11:
        return errno.EHOSTUNREACH, False
    if type_ == 12:
        return errno.EPROTO, True
    return None


def icmpv6_errno(type_: int, code: int) -> tuple[int, bool] | None:
    if type_ == 1:
        return ICMPV6_UNREACH_ERRNO.get(code, (errno.EPROTO, True))
    if type_ == 2:
        return errno.EMSGSIZE, False
    if type_ == 3:
        return errno.EHOSTUNREACH, False
    if type_ == 4:
        return errno.EPROTO, True
    return None


def rx_icmpv4_error(core: Any, src: bytes, payload: Any, now: float) -> None:
    """An ICMPv4 message of an error type arrived for one of our addresses (from ``src``)."""
    counters = core.counters
    counters["IcmpInMsgs"] += 1
    try:
        msg = _icmp.parse_icmpv4(payload)
    except ParseError as exc:
        counters["IcmpInErrors"] += 1
        if isinstance(exc, ChecksumError):
            counters["IcmpInCsumErrors"] += 1
        return
    t = msg.type
    if t == 3:
        counters["IcmpInDestUnreachs"] += 1
    elif t == 11:
        counters["IcmpInTimeExcds"] += 1
    elif t == 12:
        counters["IcmpInParmProbs"] += 1
    elif t == 4:
        counters["IcmpInSrcQuenchs"] += 1
        return                                    # RFC 6633: ignored
    else:
        return                                    # redirects: not for a host stack's TCP
    try:
        q = _icmp.parse_quoted_ipv4(msg.body)
    except ParseError:
        counters["IcmpInErrors"] += 1
        return
    if q.proto != IPPROTO_TCP or q.src not in core.local_v4:
        return
    body = msg.body
    quoted_len = (body[2] << 8) | body[3] if len(body) >= 4 else 0
    if t == 3 and msg.code == 4:
        _deliver(core, q, None, True, _icmp.icmpv4_mtu(msg) or 0, quoted_len, now)
        return
    conv = icmpv4_errno(t, msg.code)
    if conv is not None:
        _deliver(core, q, conv, False, 0, 0, now, abort_req=(t == 11 or t == 12 or
                                                              (t == 3 and msg.code in (0, 1))))


def rx_icmpv6_error(core: Any, msg: Any, now: float) -> None:
    """A parsed ICMPv6 error (types 1-4) for one of our addresses."""
    counters = core.counters
    t = msg.type
    counters["Icmp6InMsgs"] += 1
    counters[("Icmp6InDestUnreachs", "Icmp6InPktTooBigs", "Icmp6InTimeExcds", "Icmp6InParmProblems")[t - 1]] += 1
    try:
        q = _icmp.parse_quoted_ipv6(msg.body)
    except ParseError:
        counters["Icmp6InErrors"] += 1
        return
    if q.proto != IPPROTO_TCP or q.src not in core.local_v6:
        return
    if t == 2:
        _deliver(core, q, None, True, _icmp.icmpv6_mtu(msg) or 0, 0, now)
        return
    conv = icmpv6_errno(t, msg.code)
    if conv is not None:
        _deliver(core, q, conv, False, 0, 0, now,
                 abort_req=(t == 3 or t == 4 or (t == 1 and msg.code in (0, 3))))


def _deliver(core: Any, q: Any, conv: tuple[int, bool] | None, pmtu: bool, mtu: int, quoted_len: int,
             now: float, abort_req: bool = False) -> None:
    counters = core.counters
    key = (q.src, q.src_port, q.dst, q.dst_port)
    conn = core.demux.conns.get(key)
    if conn is None:
        _request_sock_err(core, key, q.seq, abort_req and not pmtu)
        return
    state = conn.state
    if state in _DEAD_STATES:
        return
    # RFC 5927 4.1 / Linux tcp_v4_err: the quoted segment must be one we have in flight
    if not (seq_le(conn.snd_una, q.seq) and seq_le(q.seq, conn.snd_nxt)):
        counters["OutOfWindowIcmps"] += 1
        return
    if pmtu:
        new = core.pmtu.update(q.dst, mtu, now, quoted_len)
        if new is not None:
            counters["TCPPMTUDUpdates"] += 1
        core.apply_pmtu(q.dst, now)
        return
    err, _fatal = conv
    owned = core.is_owned(conn)
    if state in _SYN_STATES and not owned:
        counters["TCPIcmpHardErrors"] += 1
        conn.icmp_error(err, True, now)
    else:
        counters["TCPIcmpSoftErrors"] += 1
        conn.icmp_error(err, False, now)


def _request_sock_err(core: Any, key: tuple, seq: int, abort: bool) -> None:
    """Linux ``tcp_req_err``: an error about our SYN-ACK to a half-open connection."""
    counters = core.counters
    listener = core.demux.listener_for(key[0], key[1])
    req = listener.synq.get(key) if listener is not None and hasattr(listener, "synq") else None
    if req is None:
        counters["Icmp6InErrors" if len(key[0]) == 16 else "IcmpInErrors"] += 1   # no socket
        return
    if seq != req.iss:
        counters["OutOfWindowIcmps"] += 1
    elif abort:
        listener._unlink(req)
        counters["ListenDrops"] += 1
