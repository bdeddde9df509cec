"""Explicit Congestion Notification for TCP (RFC 3168 section 6.1; RFC 9293 3.8.2 SHLD-8), as Linux
does it (net/ipv4/tcp_input.c ``tcp_ecn_*``, tcp_output.c ``tcp_ecn_send*``), sans-IO.

Why: a router that marks instead of dropping (AQM with ECN, RFC 3168 5) tells the sender about
congestion without a loss, so the sender reduces its window without a retransmission.

* Negotiation (6.1.1), ``TcpConfig.ecn`` = sysctl ``net.ipv4.tcp_ecn``: 0 off; 1 our SYN carries
  ECE|CWR (an "ECN-setup SYN"), and an incoming one is accepted; 2 (the default) accept only.
  The SYN-ACK of an accepted request carries ECE alone ("ECN-setup SYN-ACK"); the active side
  takes ECN when its SYN asked and the SYN-ACK has ECE without CWR (Linux ``tcp_ecn_rcv_synack``).
  A retransmitted SYN goes without ECE|CWR (Linux ``tcp_ecn_clear_syn``, tcp_ecn_fallback=1: a
  middlebox may drop ECN-setup SYNs), but a later ECN-setup SYN-ACK is still taken.  Simultaneous
  open needs ECE|CWR on both SYNs (``tcp_ecn_rcv_syn``).  SYN cookies keep the outcome in the
  TSval's option bits (``tcp/syncookies.py``); without timestamps a cookie cannot, so the
  SYN-ACK does not offer ECN then (Linux still sets ECE and forgets it at the ACK).
* Sender (6.1.2, 6.1.5): new data segments -- not pure ACKs, not retransmissions, not window
  probes without data -- go out with ECT(0) in the IP header (Linux ``INET_ECN_xmit`` /
  ``INET_ECN_dontxmit`` toggle the socket's TOS; here ``Route.set_ecn``, the two ECN bits of the
  route's header templates, changed only when the kind of segment changes, so a connection
  without ECN pays nothing).  "New" is judged against the highest sequence number sent so far
  (``ecn_high``), since a burst advances SND.NXT before its frames are built.  An ACK with ECE
  (not a SYN) reduces the window once per window of data (6.1.2; Linux ``tcp_enter_cwr``): only
  from the open state (recovery and RTO reduce by themselves), decided before the ACK is
  cleaned (the ACK carrying ECE does not grow the window first), ``ssthresh`` from the
  congestion control (``CongestionControl.on_congestion_event``), then PRR (RFC 9937, as
  Linux's ``TCP_CA_CWR`` state: ``tcp_init_cwnd_reduction``, ``tcp_cwnd_reduction`` per ACK,
  :func:`on_ack`) brings cwnd down to it over the next round trip instead of at once, and the
  reduction ends with ``cwnd = ssthresh`` when SND.UNA passes the SND.NXT of that moment (Linux
  ``tcp_end_cwnd_reduction``: ``TCP_CA_CWR`` ends when ``snd_una`` is above ``high_seq``).
  Not undoable (Linux ``prior_ssthresh = 0``).  A loss during it enters fast recovery without
  a second reduction, PRR going on (Linux ``tcp_enter_recovery`` in CWR); an RTO ends it.  The
  next new data segment carries CWR.
* Receiver (6.1.3): a data segment whose IP header is CE (``NetworkCore`` hands the mark to
  :func:`ce_received` after the segment) makes every ACK carry ECE until a segment with CWR
  arrives; the first CE of such a period is ACKed at once, and quick ACKs follow (Linux
  ``tcp_enter_quickack_mode(sk, 2)``: the sender's window may be tiny).  A data segment with CWR
  is ACKed at once too (``tcp_ecn_accept_cwr``).

Differences from Linux, all small: CE is honoured on any data segment of the connection (Linux:
only on data it queues, i.e. in-window); Linux's extra quick ACK for a Not-ECT segment after ECT
ones (a likely retransmission) and its refusal of an ECT-marked SYN are not done (the listener does
not see the IP header); ``getsockopt(IP_TOS)`` does not show the ECT bit.  A GSO super-frame with
CWR keeps it on its first segment only when split (the kernel's ``tcp_gso_segment``; our software
split in ``NetworkCore._tcp_output`` likewise).

Counters: Linux has no MIB entries for these events (no ``TCPECN*`` in /proc/net/netstat);
ours are ``TcpEcnCeRecv`` (CE marks received that started an ECE period) and ``TcpEcnCwr``
(window reductions on ECE).
"""
from __future__ import annotations

from ..wire.tcp import ACK, CWR, ECE, SYN

__all__ = ["ECN_OK", "ECN_QUEUE_CWR", "ECN_DEMAND_CWR", "ECN_IN_CWR", "ECT0", "syn_flags",
           "syn_negotiated", "out_flags", "burst_flags", "on_segment", "on_ack", "ece_received",
           "enter_cwr",
           "cwr_check", "ce_received"]

# per-connection state bits (``TcpConnection.ecn``, Linux ``tp->ecn_flags``)
ECN_OK = 1              # negotiated (TCP_ECN_OK)
ECN_QUEUE_CWR = 2       # put CWR on the next new data segment (TCP_ECN_QUEUE_CWR)
ECN_DEMAND_CWR = 4      # a CE came: ECE on every ACK until CWR (TCP_ECN_DEMAND_CWR)
ECN_IN_CWR = 8          # the window was reduced on ECE, until SND.UNA passes ecn_cwr_high (CA_CWR)

ECT0 = 2                # the IP ECN field's ECT(0) codepoint (RFC 3168 5)
CE = 3                  # the IP ECN field's CE codepoint

_MASK = 0xFFFFFFFF
_HALF = 0x80000000


def syn_flags(config, retransmission: bool) -> int:
    """ECE|CWR for our SYN when ``ecn`` is 1 and it is the first one (Linux ``tcp_ecn_send_syn``
    and ``tcp_ecn_clear_syn``), else 0."""
    return ECE | CWR if config.ecn == 1 and not retransmission else 0


def syn_negotiated(config, flags: int, passive: bool) -> bool:
    """Whether the SYN (``passive``: the peer's SYN to us) or the SYN-ACK (active open) with
    ``flags`` completes ECN negotiation under ``config`` (RFC 3168 6.1.1)."""
    if passive:
        # an ECN-setup SYN, and we accept (ecn 1 or 2): Linux tcp_ecn_create_request
        return bool(config.ecn) and flags & (ECE | CWR) == ECE | CWR
    if config.ecn != 1:
        return False                          # we did not ask
    if flags & ACK:
        return flags & (ECE | CWR) == ECE     # ECN-setup SYN-ACK (tcp_ecn_rcv_synack)
    return flags & (ECE | CWR) == ECE | CWR   # simultaneous open (tcp_ecn_rcv_syn)


def _set_ect(conn, ect: bool) -> None:
    """The IP ECN field of the connection's next segments: ECT(0) or Not-ECT."""
    conn._ect = ect
    r = conn._fast_out
    if r is not None:
        r.set_ecn(ECT0 if ect else 0)


def out_flags(conn, seq: int, n: int, flags: int) -> int:
    """The TCP flags of a segment about to go out on an ECN connection (Linux ``tcp_ecn_send``):
    ECT(0) and a queued CWR for new data, Not-ECT otherwise, ECE while the peer's CE is owed."""
    e = conn.ecn
    if n and ((seq - conn.ecn_high) & _MASK) < _HALF:       # new data: seq >= highest sent
        conn.ecn_high = (seq + n) & _MASK
        if not conn._ect:
            _set_ect(conn, True)
        if e & ECN_QUEUE_CWR:
            e &= ~ECN_QUEUE_CWR
            conn.ecn = e
            flags |= CWR
    elif conn._ect:
        _set_ect(conn, False)
    if e & ECN_DEMAND_CWR:
        flags |= ECE
    return flags


def burst_flags(conn, segs: list) -> list:
    """:func:`out_flags` for the segments of one burst (all new data, in order): the list with
    the flags changed where they change."""
    out = []
    for seq, flags, parts, n in segs:
        f = out_flags(conn, seq, n, flags)
        out.append((seq, f, parts, n) if f != flags else (seq, flags, parts, n))
    return out


def on_segment(conn, flags: int, plen: int, now: float) -> None:
    """CWR of a segment the connection processed (slow path): the receiver side.  ECE, the
    sender side, is handled per ACK by :func:`on_ack`."""
    e = conn.ecn
    if flags & CWR and e & ECN_DEMAND_CWR:
        # the sender reduced: stop echoing (6.1.3); ACK its data at once, its cwnd may be 1
        # segment (Linux tcp_ecn_accept_cwr)
        conn.ecn = e & ~ECN_DEMAND_CWR
        if plen:
            conn.ack_pending = 2


def on_ack(conn, delivered: int, safe_ack: bool, now: float) -> None:
    """An acceptable ACK in the open state during a reduction, after the connection's ACK
    processing (Linux ``tcp_fastretrans_alert`` for CA_CWR, then ``tcp_cong_control``): the
    end of the reduction once its SND.NXT was passed (:func:`cwr_check`), else PRR's window for
    this ACK (``delivered``: its DeliveredData in bytes; ``safe_ack``: it advanced SND.UNA --
    RFC 9937's SafeACK, as no loss is marked in this state)."""
    cwr_check(conn, now)
    cc = conn.cc
    if conn.ecn & ECN_IN_CWR and cc is not None and cc.ca_state == "recovery":
        conn.cwnd_reduction(delivered, safe_ack)


def ece_received(conn, now: float) -> None:
    """An acceptable ACK with ECE (not a SYN) in the open state, before the ACK's data is
    cleaned (Linux decides the state before ``tcp_cong_control``: the ACK that carries ECE does
    not grow the window it reduces): a reduction unless one is under way."""
    cc = conn.cc
    if not conn.ecn & ECN_IN_CWR and cc is not None and cc.ca_state == "open":
        enter_cwr(conn, now)


def enter_cwr(conn, now: float) -> None:
    """ECE: reduce once per window of data (RFC 3168 6.1.2; Linux ``tcp_enter_cwr``): ssthresh
    from the congestion control (of cwnd, as Linux), PRR from here (``init_cwnd_reduction``:
    cwnd then follows PRR per ACK instead of dropping to ssthresh at once), CWR on the next new
    data, and nothing to undo -- a CE mark is not reordering (Linux ``prior_ssthresh = 0``,
    ``undo_marker = 0``)."""
    cc = conn.cc
    cc.on_congestion_event(now, None)
    cc.prior_ssthresh = 0
    if conn.undo is not None:
        conn.undo.clear()
    conn.init_cwnd_reduction()
    conn.ecn |= ECN_IN_CWR | ECN_QUEUE_CWR
    conn.ecn_cwr_high = conn.snd_nxt
    conn.counters["TcpEcnCwr"] += 1


def cwr_check(conn, now: float) -> None:
    """End the reduction once SND.UNA is above the SND.NXT it began at (Linux leaves CA_CWR when
    ``snd_una`` passed ``high_seq``: CWR has reached the receiver by then) with ``cwnd =
    ssthresh`` (Linux ``tcp_end_cwnd_reduction``)."""
    high = conn.ecn_cwr_high
    una = conn.snd_una
    if una != high and ((una - high) & _MASK) < _HALF:
        conn.ecn &= ~ECN_IN_CWR
        cc = conn.cc
        if conn.ca_state == 0 and cc is not None and cc.ca_state == "recovery":
            cc.on_recovery_exit(now)          # cwnd = ssthresh, growth resumes
        # (recovery or an RTO took over meanwhile: their exit restores the congestion control)


def ce_received(conn) -> None:
    """A data segment of ``conn`` arrived with CE in its IP header (RFC 3168 6.1.3; Linux
    ``__tcp_ecn_check_ce``): ECE on every ACK until CWR; the first such mark is ACKed at once and
    the next ACKs are quick (``tcp_enter_quickack_mode(sk, 2)``)."""
    e = conn.ecn
    if not e & ECN_OK or e & ECN_DEMAND_CWR:
        return
    conn.ecn = e | ECN_DEMAND_CWR
    if conn.quick < 2:
        conn.quick = 2
    conn.ack_pending = 2
    conn.counters["TcpEcnCeRecv"] += 1
