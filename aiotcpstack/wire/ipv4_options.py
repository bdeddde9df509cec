"""IPv4 options: validation, the answer's options, and the options written into our headers
(RFC 791 3.1 "Options"; RFC 1122 3.2.1.8; RFC 9293 3.9.2.1).

The behaviour is Linux's (``net/ipv4/ip_options.c``), read and re-expressed here:

* :func:`compile_options` is ``__ip_options_compile``: it walks EOL / NOP / the TLV options,
  rejects what Linux rejects (a length below 2 or past the area, a pointer below its minimum or
  pointing into the middle of a slot, a second source route, record route or timestamp, a
  timestamp overflow count wrapping past 15) with :class:`IpOptionError` whose ``pointer`` is the
  octet ICMP parameter problem reports (offset from the start of the IP header), and records
  where each option sits.  For a *received* header (``received=True``) it also does what Linux
  does there as a host: the next Record Route slot gets our address (the address the datagram
  was sent to) and the pointer moves on, a Timestamp option gets our timestamp (flag 0), our
  address and timestamp (flag 1) or, for flag 3, a timestamp when the pre-specified address is
  one of ours (Linux's test is ``inet_addr_type(addr) != RTN_UNICAST``: a local address, and also
  a non-unicast one, gets the timestamp; another host's unicast address does not); a full
  Timestamp option counts one more overflow.  For options given by the *application* (``received=False``, ``setsockopt
  (IP_OPTIONS)``: ``ip_options_get``) a source route must start with pointer 4 and hold whole
  addresses; its first address is taken out as the first hop (``faddr``) and the rest move up.
* :func:`echo_options` is ``__ip_options_echo``: the options of a reply -- Record Route and
  Timestamp copied with room for one more entry (filled when the reply is built), a received
  source route reversed (RFC 1122 3.2.1.8 / 4.2.3.8, RFC 9293 MUST-53: the recorded hops in
  reverse order, the original source as the final destination, the last recorded hop -- the one
  next to us -- as the first hop), other options dropped.
* :func:`build_options` is ``ip_options_build`` for a datagram we originate: the final
  destination goes into the source route's last slot, our address and timestamp into the Record
  Route / Timestamp slots reserved for them.
* :func:`srr_next_hops` is the host part of ``ip_options_rcv_srr``: addresses of ours still
  ahead in a received source route are consumed ("superfast loopback forward"); the datagram
  is for us only if nothing else remains (a host does not forward).

Router Alert is recognised (offset kept) and otherwise passed over, as are the security options;
unknown option types are skipped by their length.  Pure functions on bytes: no clock (the
timestamp is the caller's), no sockets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import ParseError

IPOPT_END = 0
IPOPT_NOP = 1
IPOPT_RR = 7
IPOPT_TS = 68
IPOPT_SEC = 130
IPOPT_LSRR = 131
IPOPT_SID = 136
IPOPT_SSRR = 137
IPOPT_RA = 148

#: Timestamp option flags (RFC 791): timestamps only, address + timestamp, pre-specified addresses
TS_ONLY = 0
TS_ADDR = 1
TS_PRESPEC = 3

#: largest option area (IHL 15: 60 - 20 octets)
MAX_OPTLEN = 40
_IPH = 20                       # option offsets below count from the IP header's first octet


class IpOptionError(ParseError):
    """Malformed IPv4 options; ``pointer`` is the offending octet's offset from the start of the
    IP header (the ICMP parameter problem pointer, RFC 792)."""

    def __init__(self, message: str, pointer: int) -> None:
        super().__init__(message)
        self.pointer = pointer


@dataclass
class IpOptions:
    """Compiled options (Linux ``struct ip_options``).

    ``data`` is the option area (a multiple of 4 octets once padded); ``srr`` / ``rr`` / ``ts`` /
    ``router_alert`` are the offsets of those options in ``data`` (-1: absent).  ``faddr`` is the
    first hop of a source route we send (the IP destination; the final destination goes into the
    route's last slot when a header is built).  ``rr_needaddr`` / ``ts_needaddr`` /
    ``ts_needtime``: the option has a slot for our address / timestamp."""

    data: bytearray
    srr: int = -1
    rr: int = -1
    ts: int = -1
    router_alert: int = -1
    is_strictroute: bool = False
    rr_needaddr: bool = False
    ts_needaddr: bool = False
    ts_needtime: bool = False
    faddr: bytes | None = None

    @property
    def optlen(self) -> int:
        """Octets the options add to the IP header (Linux ``icsk_ext_hdr_len``)."""
        return len(self.data)


def _pad(data: bytearray) -> bytearray:
    while len(data) & 3:
        data.append(IPOPT_END)
    return data


def compile_options(raw: bytes | bytearray | memoryview, *, received: bool, our_addr: bytes = b"\0\0\0\0",
                    timestamp: int = 0, is_local: Callable[[bytes], bool] | None = None) -> IpOptions:
    """Validate and locate the options in ``raw`` (``__ip_options_compile``); see the module
    docstring.  ``received``: the options of a datagram that came in (``our_addr`` -- where it was
    sent -- and ``timestamp`` are recorded into Record Route / Timestamp as Linux does); else the
    application's ``IP_OPTIONS`` (padded to a multiple of 4 with EOL, a source route's first hop
    moved to ``faddr``).  ``is_local(addr)``: is ``addr`` one of ours (Timestamp flag 3).
    Raises :class:`IpOptionError`."""
    data = bytearray(raw)
    if not received:
        _pad(data)
    if len(data) > MAX_OPTLEN:
        raise IpOptionError(f"{len(data)} octets of IPv4 options (at most {MAX_OPTLEN})", _IPH)
    opt = IpOptions(data)
    n = len(data)
    i = 0
    while i < n:
        t = data[i]
        if t == IPOPT_END:
            for j in range(i + 1, n):        # what follows EOL is padding: zeroed, as Linux
                data[j] = IPOPT_END
            break
        if t == IPOPT_NOP:
            i += 1
            continue
        if n - i < 2:
            raise IpOptionError("IPv4 option without a length octet", _IPH + i)
        optlen = data[i + 1]
        if optlen < 2 or optlen > n - i:
            raise IpOptionError(f"IPv4 option length {optlen} out of range", _IPH + i)
        if t == IPOPT_LSRR or t == IPOPT_SSRR:
            _compile_srr(opt, data, i, optlen, received)
        elif t == IPOPT_RR:
            _compile_rr(opt, data, i, optlen, received, our_addr)
        elif t == IPOPT_TS:
            _compile_ts(opt, data, i, optlen, received, our_addr, timestamp, is_local)
        elif t == IPOPT_RA:
            if optlen < 4:
                raise IpOptionError("Router Alert shorter than 4 octets", _IPH + i + 1)
            if data[i + 2] == 0 and data[i + 3] == 0:
                opt.router_alert = i
        i += optlen
    return opt


def _compile_srr(opt: IpOptions, data: bytearray, i: int, optlen: int, received: bool) -> None:
    if optlen < 3:
        raise IpOptionError("source route shorter than 3 octets", _IPH + i + 1)
    if data[i + 2] < 4:
        raise IpOptionError(f"source route pointer {data[i + 2]} < 4", _IPH + i + 2)
    if opt.srr >= 0:                    # RFC 1812 5.2.4.1: at most one source route
        raise IpOptionError("a second source route option", _IPH + i)
    if not received:
        if data[i + 2] != 4 or optlen < 7 or (optlen - 3) & 3:
            raise IpOptionError("source route to send: pointer must be 4, whole addresses", _IPH + i + 1)
        opt.faddr = bytes(data[i + 3:i + 7])
        data[i + 3:i + optlen - 4] = data[i + 7:i + optlen]      # the rest move up one slot
    opt.is_strictroute = data[i] == IPOPT_SSRR
    opt.srr = i


def _slot_pointer(what: str, seen: int, data: bytearray, i: int, optlen: int, min_len: int) -> int:
    """The checks Record Route and Timestamp share (in Linux's order): one of each, a minimum
    length, a pointer at least ``min_len + 1`` and, while not past the end, at a whole slot.
    Returns the pointer."""
    if seen >= 0:
        raise IpOptionError(f"a second {what} option", _IPH + i)
    if optlen < min_len:
        raise IpOptionError(f"{what} option shorter than {min_len} octets", _IPH + i + 1)
    ptr = data[i + 2]
    if ptr <= min_len:
        raise IpOptionError(f"{what} pointer {ptr} < {min_len + 1}", _IPH + i + 2)
    if ptr <= optlen and ptr + 3 > optlen:
        raise IpOptionError(f"{what} pointer into a partial slot", _IPH + i + 2)
    return ptr


def _compile_rr(opt: IpOptions, data: bytearray, i: int, optlen: int, received: bool, our_addr: bytes) -> None:
    ptr = _slot_pointer("record route", opt.rr, data, i, optlen, 3)
    if ptr <= optlen:
        if received:
            data[i + ptr - 1:i + ptr + 3] = our_addr
        data[i + 2] = ptr + 4
        opt.rr_needaddr = True
    opt.rr = i


def _compile_ts(opt: IpOptions, data: bytearray, i: int, optlen: int, received: bool, our_addr: bytes,
                timestamp: int, is_local: Callable[[bytes], bool] | None) -> None:
    ptr = _slot_pointer("timestamp", opt.ts, data, i, optlen, 4)
    flag = data[i + 3] & 0x0F
    if ptr <= optlen:
        at = -1                          # where our timestamp goes (received datagrams only)
        if flag == TS_ONLY:
            at = i + ptr - 1
            opt.ts_needtime = True
            data[i + 2] = ptr + 4
        elif flag == TS_ADDR or flag == TS_PRESPEC:
            if ptr + 7 > optlen:
                raise IpOptionError("timestamp pointer into a partial slot", _IPH + i + 2)
            if flag == TS_ADDR:
                if received:
                    data[i + ptr - 1:i + ptr + 3] = our_addr
                at = i + ptr + 3
                opt.ts_needaddr = opt.ts_needtime = True
                data[i + 2] = ptr + 8
            else:
                # Linux: another host's unicast address is left for that host; ours (RTN_LOCAL)
                # or a non-unicast one gets our timestamp (inet_addr_type != RTN_UNICAST)
                addr = bytes(data[i + ptr - 1:i + ptr + 3])
                if not _is_unicast(addr, is_local):
                    at = i + ptr + 3
                    opt.ts_needtime = True
                    data[i + 2] = ptr + 8
        if received and at >= 0:
            data[at:at + 4] = (timestamp & 0xFFFFFFFF).to_bytes(4, "big")
    elif flag != TS_PRESPEC:
        overflow = data[i + 3] >> 4
        if overflow == 15:
            raise IpOptionError("timestamp overflow count past 15", _IPH + i + 3)
        if received:
            data[i + 3] = flag | ((overflow + 1) << 4)
    opt.ts = i


def _is_unicast(addr: bytes, is_local: Callable[[bytes], bool] | None) -> bool:
    """Linux ``inet_addr_type(addr) == RTN_UNICAST`` as far as a host without the routing table
    can tell: not 0.0.0.0, loopback, multicast or limited broadcast, and not an address of ours
    (that is RTN_LOCAL)."""
    if addr == b"\0\0\0\0" or addr == b"\xff\xff\xff\xff" or addr[0] == 127 or 224 <= addr[0] <= 239:
        return False
    return not (is_local is not None and is_local(addr))


def echo_options(opt: IpOptions, saddr: bytes, is_local: Callable[[bytes], bool] | None = None) -> IpOptions | None:
    """The options of our answer to a datagram whose compiled received options are ``opt`` and
    whose source is ``saddr`` (Linux ``__ip_options_echo``), or None where Linux gives up
    (``-EINVAL``: a pointer at a partial slot).  An empty result has ``optlen`` 0."""
    src = opt.data
    out = bytearray()
    dopt = IpOptions(out)
    if opt.rr >= 0:
        r = opt.rr
        optlen = src[r + 1]
        soffset = src[r + 2]
        dopt.rr = len(out)
        out += src[r:r + optlen]
        if opt.rr_needaddr and soffset <= optlen:
            if soffset + 3 > optlen:
                return None
            out[dopt.rr + 2] = soffset + 4
            dopt.rr_needaddr = True
    if opt.ts >= 0:
        t = opt.ts
        optlen = src[t + 1]
        soffset = src[t + 2]
        d = dopt.ts = len(out)
        out += src[t:t + optlen]
        if soffset <= optlen:
            if opt.ts_needaddr:
                if soffset + 3 > optlen:
                    return None
                dopt.ts_needaddr = True
                soffset += 4
            if opt.ts_needtime:
                if soffset + 3 > optlen:
                    return None
                if out[d + 3] & 0x0F != TS_PRESPEC:
                    dopt.ts_needtime = True
                    soffset += 4
                elif soffset + 7 <= optlen:
                    addr = bytes(out[d + soffset - 1:d + soffset + 3])
                    if not _is_unicast(addr, is_local):
                        dopt.ts_needtime = True
                        soffset += 8
            out[d + 2] = soffset
    if opt.srr >= 0:
        s = opt.srr
        optlen = src[s + 1]
        soffset = src[s + 2]
        if soffset > optlen:
            soffset = optlen + 1
        soffset -= 4                     # the slot before the pointer: the last hop recorded
        hops: list[bytes] = []
        if soffset > 3:
            faddr = bytes(src[s + soffset - 1:s + soffset + 3])
            soffset -= 4
            while soffset > 3:           # the earlier hops, newest first
                hops.append(bytes(src[s + soffset - 1:s + soffset + 3]))
                soffset -= 4
            # RFC 1812: a route whose first entry is the source itself is illegal; fixed by
            # dropping that entry (Linux compares the source with the slot at offset 3)
            n_slots = len(hops) + 1
            if bytes(src[s + 3:s + 7]) == saddr:
                n_slots -= 1
            if n_slots:
                dopt.faddr = faddr
                dopt.srr = len(out)
                dopt.is_strictroute = opt.is_strictroute
                # n_slots address slots: the reversed hops, then the final destination's slot
                # (filled by build_options); Linux copies as many hops as fit in that length
                body = b"".join(hops)[:4 * (n_slots - 1)]
                out += bytes((src[s], 3 + 4 * n_slots, 4)) + body + b"\0" * (4 * n_slots - len(body))
    _pad(out)
    return dopt


def build_options(opt: IpOptions, daddr: bytes, saddr: bytes, timestamp: int) -> bytes:
    """The option area of a datagram we originate (``ip_options_build``, not a fragment):
    ``daddr`` -- the final destination -- into a source route's last slot, ``saddr`` and
    ``timestamp`` into the Record Route / Timestamp slots reserved for us."""
    data = bytearray(opt.data)
    if opt.srr >= 0:
        end = opt.srr + data[opt.srr + 1]
        data[end - 4:end] = daddr
    if opt.rr_needaddr:
        p = opt.rr + data[opt.rr + 2] - 5
        data[p:p + 4] = saddr
    if opt.ts >= 0:
        t = opt.ts
        if opt.ts_needaddr:
            p = t + data[t + 2] - 9
            data[p:p + 4] = saddr
        if opt.ts_needtime:
            p = t + data[t + 2] - 5
            data[p:p + 4] = (timestamp & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(data)


def srr_next_hops(opt: IpOptions, is_local: Callable[[bytes], bool]) -> tuple[bytes | None, bool]:
    """A received source route at a host (``ip_options_rcv_srr`` without forwarding): walk the
    addresses from the pointer; those of ours are consumed ("loopback forward").  Returns
    ``(final, for_us)``: ``final`` the last local address consumed (the datagram's destination
    from now on; None if none was), ``for_us`` False when a hop that is not ours remains (a host
    does not forward: drop).  Raises :class:`IpOptionError` for a pointer into a partial slot."""
    data = opt.data
    s = opt.srr
    space = data[s + 1]
    ptr = data[s + 2]
    final = None
    while ptr <= space:
        if ptr + 3 > space:
            raise IpOptionError("source route pointer into a partial slot", _IPH + s + 2)
        hop = bytes(data[s + ptr - 1:s + ptr + 3])
        if not is_local(hop):
            return final, False
        final = hop
        ptr += 4
    return final, True


def undo_options(opt: IpOptions) -> bytes:
    """The options as an application gives them (Linux ``ip_options_undo``, what ``getsockopt
    (IP_OPTIONS)`` returns): a source route's first hop back in its first slot, the slots reserved
    for our Record Route / Timestamp entries given back (pointer moved back, slot zeroed)."""
    data = bytearray(opt.data)
    if opt.srr >= 0 and opt.faddr:
        s = opt.srr
        optlen = data[s + 1]
        data[s + 7:s + optlen] = data[s + 3:s + optlen - 4]
        data[s + 3:s + 7] = opt.faddr
    if opt.rr_needaddr:
        r = opt.rr
        data[r + 2] -= 4
        p = r + data[r + 2] - 1
        data[p:p + 4] = bytes(4)
    if opt.ts >= 0:
        t = opt.ts
        if opt.ts_needtime:
            data[t + 2] -= 4
            p = t + data[t + 2] - 1
            data[p:p + 4] = bytes(4)
            if data[t + 3] & 0x0F == TS_PRESPEC:
                data[t + 2] -= 4
        if opt.ts_needaddr:
            data[t + 2] -= 4
            p = t + data[t + 2] - 1
            data[p:p + 4] = bytes(4)
    return bytes(data)
