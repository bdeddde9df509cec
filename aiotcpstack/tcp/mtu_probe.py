"""Packetization-layer path MTU discovery: black-hole detection (RFC 4821 / RFC 8899 style, like
Linux ``net.ipv4.tcp_mtu_probing = 1``).

Classic PMTUD (RFC 1191 / 8201, :mod:`aiotcpstack.ip.icmp_errors`) needs the ICMP
"fragmentation needed" / "packet too big" to come back.  When a firewall filters it, full-sized
segments vanish without a trace (a PMTU black hole) and the connection would retransmit them until
it times out.  Linux's answer, copied here (``tcp_write_timeout`` -> ``tcp_mtu_probing``):

* after ``retries1`` (3, ``net.ipv4.tcp_retries1``) retransmission timeouts in a row without
  progress, the connection assumes a black hole;
* the first time, the search floor ``search_low`` becomes ``base_mss`` (1024,
  ``net.ipv4.tcp_base_mss``) and the MSS is clamped to it; each further detection halves it
  (``tcp_mtu_to_mss(search_low) >> 1``), never below ``mtu_probe_floor`` (48,
  ``net.ipv4.tcp_mtu_probe_floor``);
* the RTO then retransmits the head segment at the new size, so the transfer continues.

Sans-IO: ``on_rto(conn, now)`` is called by ``TcpConnection._on_rtx_timer`` before it retransmits.
Linux then probes upward again (``tcp_mtu_probe``: one probe segment between search_low and
search_high every ``tcp_probe_interval``, 600 s); that upward search is not implemented: after a
black-hole detection the connection keeps the lowered MSS (new connections start from the link MTU
/ the cached PMTU again), which is what RFC 4821 calls the "black hole" fallback only.

Counted: ``TCPMTUPBlackhole`` (our name) each time the MSS is lowered this way.
"""
from __future__ import annotations

MASK = 0xFFFFFFFF

#: Linux defaults
RETRIES1 = 3
BASE_MSS = 1024
PROBE_FLOOR = 48


class MtuProbe:
    """Per-connection state (Linux ``icsk_mtup``): ``enabled`` once a black hole was suspected,
    ``search_low`` the MTU now believed to work, ``events`` how many times the MSS was lowered."""

    __slots__ = ("enabled", "search_low", "events", "last")

    def __init__(self) -> None:
        self.enabled = False
        self.search_low = 0
        self.events = 0
        self.last = 0.0


def header_len(conn) -> int:
    """IP + TCP base header bytes (what ``update_mss`` expects subtracted from an MTU)."""
    return 60 if len(conn.remote[0]) == 16 else 40


def on_rto(conn, now: float) -> bool:
    """A retransmission timeout in a synchronized state, before the head is retransmitted.
    Returns True when the MSS was lowered (the retransmission then uses the new size)."""
    cfg = conn.config
    if not getattr(cfg, "mtu_probing", 1):
        return False
    if conn.n_rtx < getattr(cfg, "retries1", RETRIES1):
        return False
    outstanding = (conn.snd_nxt - conn.snd_una) & MASK
    if outstanding == 0 or outstanding >= 0x80000000:
        return False
    st = conn.mtu_probe
    if st is None:
        st = conn.mtu_probe = MtuProbe()
    hdr = header_len(conn)
    base = getattr(cfg, "base_mss", BASE_MSS)
    floor = getattr(cfg, "mtu_probe_floor", PROBE_FLOOR)
    if not st.enabled:
        st.enabled = True
        mss = base
    else:
        mss = (st.search_low - hdr) >> 1
        if mss > base:
            mss = base
    if mss < floor:
        mss = floor
    st.search_low = mss + hdr
    ts = 12 if conn.ts_ok else 0
    if conn.mss <= max(mss - ts, 48):
        return False             # already that small: lowering again would not help
    st.events += 1
    st.last = now
    conn.counters["TCPMTUPBlackhole"] += 1
    conn.update_mss(mss, now, retransmit=False)
    return True
