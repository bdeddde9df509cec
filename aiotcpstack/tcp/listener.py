"""A listening TCP endpoint, sans-IO: SYN queue of request socks, accept queue, SYN cookies.

This is the user-space counterpart of Linux's listen path (``seeds/000_*``; net/ipv4/tcp_input.c
``tcp_conn_request``, tcp_minisocks.c ``tcp_check_req``, tcp_ipv4.c ``tcp_v4_syn_recv_sock`` /
``tcp_v4_cookie_check``, inet_connection_sock.c ``reqsk_timer_handler`` /
``inet_csk_complete_hashdance`` / ``inet_csk_listen_stop``, syncookies.c ``cookie_v4_check``).

* A SYN creates a small :class:`RequestSock` (no :class:`TcpConnection` yet) in the SYN queue, a
  dict keyed by the 4-tuple ``(lip, lport, rip, rport)``, bounded by
  ``min(backlog, config.max_syn_backlog)``, and is answered by a SYN-ACK carrying the negotiated
  options (MSS, window scale, SACK-permitted, timestamps). Each request sock owns one preallocated
  :class:`Timer` on the stack's shared wheel, re-armed in place: the SYN-ACK is retransmitted
  after 1 s, 2 s, 4 s, ... (``config.rto_initial`` doubling, capped at ``config.rto_max``) and
  the request sock expires once ``config.synack_retries`` timeouts have passed
  (``reqsk_timer_handler``; with the default 5: SYN-ACKs at T, T+1, T+3, T+7, T+15, T+31, gone
  at T+63). When the SYN queue is more than half full the retries of old entries are cut to keep
  room for young ones, as Linux does.
* The third ACK (``ack == ISS+1``, sequence in window) turns the request sock into a child
  connection (``TcpConnection.from_request``: the ``tcp_v4_syn_recv_sock`` analogue), feeds it
  the ACK with its payload (data and FIN on the third ACK reach the child) so it is ESTABLISHED,
  and appends it to the accept queue (:meth:`Listener.accept`).
* Overflow, as Linux (``tcp_abort_on_overflow = 0``):
  - final ACK while the accept queue is full: ACK dropped, ``ListenOverflows`` + ``ListenDrops``;
    the request sock stays (``acked``) and keeps retransmitting its SYN-ACK, so the peer's next
    ACK (or its data) completes it once ``accept()`` made room;
  - SYN while the accept queue is full and more than one request sock is young (no SYN-ACK
    timeout yet): dropped, ``ListenOverflows`` + ``ListenDrops`` (the check of the seed's kernel;
    since Linux 4.9 -- "tcp/dccp: drop SYN packets if accept queue is full" -- any SYN is dropped
    when the accept queue is full: ``young_check=False`` selects that);
  - SYN queue full: ``syncookies=1`` answers with a SYN cookie and keeps no state
    (``TCPReqQFullDoCookies``, ``SyncookiesSent``); ``syncookies=0`` drops the SYN
    (``TCPReqQFullDrop``, ``ListenDrops``); ``syncookies=2`` always sends cookies (Linux also
    counts ``TCPReqQFullDoCookies`` then).
* Queue bounds (as Linux): the SYN queue is full when it holds ``min(backlog, max_syn_backlog)``
  entries (``inet_csk_reqsk_queue_is_full``, ``>=``); the accept queue is full when it holds
  *more than* ``backlog`` children (``sk_acceptq_is_full`` is ``sk_ack_backlog >
  sk_max_ack_backlog``), so up to ``backlog + 1`` established connections wait for ``accept()``,
  exactly as ``listen(fd, backlog)`` allows (``ss -lnt`` Recv-Q can reach backlog + 1).
* SYN cookies (``tcp/syncookies.py``): the cookie ISN encodes the peer's MSS (table index); with
  timestamps, the low 6 bits of our TSval (before the per-address-pair ``ts_offset`` is added)
  carry the peer's window scale, SACK-permitted and ECN (RFC 3168, ``tcp/ecn.py``). Without
  timestamps a cookie SYN-ACK offers neither window scaling nor SACK (Linux ``tcp_clear_options``),
  nor ECN (Linux still sets ECE there and forgets it at the ACK: a peer would send ECT for nothing).
  An ACK that matches no request sock is checked as a cookie when ``syncookies`` is on and a
  cookie was sent in the last 2 minutes (Linux ``tcp_synq_no_recent_overflow``:
  ``TCP_SYNCOOKIE_VALID``); valid: ``SyncookiesRecv`` and the child is created with the decoded
  MSS/wscale/SACK/timestamps; invalid: ``SyncookiesFailed`` and -- like Linux, where
  ``cookie_v4_check`` then returns the listener itself and ``tcp_rcv_state_process`` (LISTEN, ACK
  set) makes ``tcp_v4_do_rcv`` call ``tcp_v4_send_reset`` -- the segment is answered with a RST
  (RFC 9293 3.10.7.2). A valid cookie ACK while the accept queue is full is dropped without a RST
  (``ListenOverflows`` + ``ListenDrops``; Linux returns NULL from ``cookie_v4_check``).
* Other segments to the listener (RFC 9293 3.10.7.2, Linux LISTEN order): ACK (incl. RST+ACK)
  with no request sock and no valid cookie -> RST (never for a RST); RST -> ignored; SYN -> as
  above (SYN+FIN dropped, as Linux); anything else dropped.
* Segments for a request sock follow ``tcp_check_req``: a pure retransmitted SYN (same ISN, flags
  exactly SYN, PAWS ok) retransmits the SYN-ACK and re-arms the timer to ``now +
  timeout(num_timeout)`` -- rate limited like Linux (``tcp_oow_rate_limited``: at most one per
  ``OOW_RATE_LIMIT`` = 0.5 s, else ``TCPACKSkippedSynRecv``); an ACK with the wrong ack number ->
  RST from the listener; PAWS failure or out of window -> bare ACK (rate limited, not for RST),
  ``PAWSEstab`` on PAWS; an in-window RST -> the request sock goes (``AttemptFails``,
  ``EmbryonicRsts``); an in-window SYN -> RST and the request sock goes; no ACK -> dropped.
* :meth:`Listener.close` (``inet_csk_listen_stop``): children still in the accept queue are
  aborted (RST from ESTABLISHED/CLOSE_WAIT: ``tcp_disconnect``); request socks are dropped without
  a segment, as Linux does (their peers' next ACK meets no listener and gets a RST from ``ip/``).

Counters: ``ListenOverflows``, ``ListenDrops``, ``SyncookiesSent``, ``SyncookiesRecv``,
``SyncookiesFailed``, ``TCPReqQFullDrop``, ``TCPReqQFullDoCookies``, ``PassiveOpens`` (counted
by ``TcpConnection.from_request`` when the child is made, like Linux
``tcp_create_openreq_child``), ``OutSegs``/``OutRsts`` for the listener's own segments,
``RetransSegs`` + ``TCPSynRetrans`` per SYN-ACK retransmission (``tcp_rtx_synack``),
``AttemptFails``/``EmbryonicRsts``, ``PAWSEstab``, ``TCPACKSkippedSynRecv``.

ECN (RFC 3168 6.1.1): an ECN-setup SYN (ECE|CWR) is accepted when ``ecn`` is 1 or 2; the SYN-ACK
then carries ECE and the child has ECN (Linux ``tcp_ecn_create_request`` /
``tcp_ecn_make_synack`` / ``tcp_ecn_openreq_child``; Linux also refuses a SYN that is itself
ECT-marked, which the listener here does not see: the IP header stays in ``ip/``).

Not done (documented differences): TCP Fast Open, TCP_DEFER_ACCEPT, the
"proven peer" heuristic of ``syncookies=0`` with ``max_syn_backlog``, per-netns rate limits.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

from ..wire.tcp import ACK, CWR, ECE, FIN, RST, SYN, TcpHeader, TcpOptions
from . import syncookies
from .ecn import syn_negotiated
from .connection import TcpConnection, rst_for
from .options_negotiation import choose_wscale, default_peer_mss
from .seq import seq_le
from .timer_wheel import Timer

__all__ = ["Listener", "RequestSock", "ANY", "OOW_RATE_LIMIT", "SYNCOOKIE_VALID"]

MASK = 0xFFFFFFFF
HALF = 0x80000000
#: The wildcard local address (``ip/demux.ANY``): the local IP of each segment is used.
ANY = b""
#: Linux ``sysctl_tcp_invalid_ratelimit`` (500 ms): out-of-window ACKs / SYN-ACKs for dup SYNs.
OOW_RATE_LIMIT = 0.5
#: Linux ``TCP_SYNCOOKIE_VALID``: ACKs are checked as cookies this long after the last cookie.
SYNCOOKIE_VALID = syncookies.MAX_SYNCOOKIE_AGE * syncookies.COOKIE_PERIOD
#: Linux ``TCP_PAWS_MSL``: a RST is not PAWS-rejected when TS.Recent may be this old.
PAWS_MSL = 60.0

SendFn = Callable[[bytes, bytes, TcpHeader, "bytes | memoryview"], None]


def _in_window(seq: int, end_seq: int, s_win: int, e_win: int) -> bool:
    """Linux ``tcp_in_window``."""
    if seq == s_win:
        return True
    if 0 < ((end_seq - s_win) & MASK) < HALF and ((seq - e_win) & MASK) >= HALF:
        return True
    return seq == e_win and seq == end_seq


class RequestSock:
    """One SYN_RECEIVED embryo (Linux ``struct tcp_request_sock``), small on purpose.

    ``wscale`` is the *peer's* negotiated window scale (None: no window scaling), ``sack`` and
    ``ts_ok`` the negotiated SACK/timestamps, ``ecn_ok`` ECN (RFC 3168 6.1.1), ``ts_recent`` the
    peer's last TSval; ``mss`` the
    peer's MSS (its option, or the RFC default). ``num_timeout`` counts SYN-ACK timer expiries
    (drives backoff and expiry), ``num_retrans`` SYN-ACK retransmissions (Karn for the child's
    first RTT sample); ``acked``: the final ACK came but the accept queue was full.
    """

    __slots__ = ("listener", "key", "irs", "iss", "mss", "wscale", "sack", "ts_ok", "ts_recent",
                 "ts_offset", "config", "num_timeout", "num_retrans", "syn_time", "last_oow",
                 "acked", "timer", "ecn_ok", "ip_opts")

    def __init__(self, listener: "Listener", key: tuple, irs: int, iss: int, mss: int,
                 wscale: int | None, sack: bool, ts_ok: bool, ts_recent: int, ts_offset: int,
                 config, now: float) -> None:
        self.listener = listener
        self.key = key                      # (lip, lport, rip, rport)
        self.irs = irs
        self.iss = iss
        self.mss = mss
        self.wscale = wscale
        self.sack = sack
        self.ts_ok = ts_ok
        self.ts_recent = ts_recent
        self.ts_offset = ts_offset
        self.config = config
        self.num_timeout = 0
        self.num_retrans = 0
        self.syn_time = now
        self.last_oow: float | None = None
        self.acked = False
        self.timer = Timer(self._expired, "synack")
        self.ecn_ok = False
        #: the IPv4 options answering the SYN's (Linux ``ireq_opt``, from ``tcp_v4_save_options``:
        #: opaque here, made by ip/): on every SYN-ACK, then the child's; None: none
        self.ip_opts = None

    def _expired(self, now: float) -> None:
        self.listener._req_timer(self, now)

    def __repr__(self) -> str:
        lip, lport, rip, rport = self.key
        return (f"<RequestSock {rip.hex()}:{rport}->{lport} irs={self.irs} iss={self.iss} "
                f"timeouts={self.num_timeout}{' acked' if self.acked else ''}>")


class Listener:
    """The listen side of one ``(ip, port)``; see the module docstring.

    Construction (all keyword arguments)::

        Listener(config=TcpConfig, wheel=TimerWheel, counters=Counters,
                 local=(ip or ANY, port), backlog=int,
                 isn=IsnGenerator,          # .isn(lip, lport, rip, rport, now), .ts_offset(lip, rip)
                 secret=bytes,              # SYN-cookie key (the stack's secret)
                 send=send,                 # send(lip, rip, hdr, payload): a segment of the listener
                                            # itself (SYN-ACK, RST, ACK); ports are in hdr; the
                                            # listener counts OutSegs/OutRsts, ``send`` must not
                 make_child=None,           # make_child(**kw) -> TcpConnection (see below)
                 on_acceptable=None,        # on_acceptable(): a child was appended to the accept queue
                 config_for=None,           # config_for(rip) -> TcpConfig (v4/v6 MSS); default: config
                 on_close=None,             # on_close(listener): close() was called (ip/ unhashes it)
                 young_check=True)          # False: drop every SYN while the accept queue is full

    ``make_child`` is called with keyword arguments ``config, local, remote, iss, syn, ts_offset,
    syn_time, synack_retransmitted, now`` (``local``/``remote`` are ``(ip, port)``, ``syn`` a
    synthetic SYN header carrying the negotiated options) and must return a connection made by
    ``TcpConnection.from_request(**those, wheel=..., counters=..., output=..., release=...)``
    *without* ``ack`` -- already registered in the demux table -- or raise ``OSError`` (the ACK is
    then dropped, ``ListenDrops``). The listener then feeds it the completing segment with
    ``child.on_segment(hdr, payload, now)``. By default the child is made here, its ``output``
    going through ``send``.
    """

    __slots__ = ("config", "wheel", "counters", "local", "ip", "port", "backlog", "max_syn_queue",
                 "isn", "secret", "send", "make_child", "on_acceptable", "config_for", "on_close",
                 "young_check", "synq", "acceptq", "young", "closed", "_last_overflow", "_wscale", "_rx_opts")

    def __init__(self, *, config, wheel, counters, local: tuple[bytes, int], backlog: int, isn,
                 secret: bytes, send: SendFn, make_child: Callable[..., TcpConnection] | None = None,
                 on_acceptable: Callable[[], None] | None = None,
                 config_for: Callable[[bytes], object] | None = None,
                 on_close: Callable[["Listener"], None] | None = None, young_check: bool = True) -> None:
        self.config = config
        self.wheel = wheel
        self.counters = counters
        self.local = (bytes(local[0]), local[1])
        self.ip, self.port = self.local
        self.backlog = max(0, int(backlog))
        self.max_syn_queue = min(self.backlog, config.max_syn_backlog)
        self.isn = isn
        self.secret = secret
        self.send = send
        self.make_child = make_child if make_child is not None else self._default_make_child
        self.on_acceptable = on_acceptable
        self.config_for = config_for
        self.on_close = on_close
        self.young_check = young_check
        self.synq: dict[tuple, RequestSock] = {}
        self.acceptq: deque[TcpConnection] = deque()
        self.young = 0                      # request socks without a SYN-ACK timeout yet
        self.closed = False
        self._last_overflow: float | None = None      # last cookie sent (tcp_synq_overflow)
        self._wscale: dict[int, int] = {}              # rcvbuf_max -> our window scale
        self._rx_opts = None           # the IPv4 options answering the segment in on_segment

    # ================================================================== public API

    @property
    def syn_queue_len(self) -> int:
        return len(self.synq)

    @property
    def accept_queue_len(self) -> int:
        return len(self.acceptq)

    @property
    def accept_queue_full(self) -> bool:
        """Linux ``sk_acceptq_is_full``: ``sk_ack_backlog > sk_max_ack_backlog``."""
        return len(self.acceptq) > self.backlog

    def accept(self) -> TcpConnection | None:
        """The oldest established child (``inet_csk_accept``), or None if the queue is empty.

        Children that were closed while queued (RST from the peer, timeout) are skipped: their
        ``handler`` was None when they closed, so nobody would hear about it (Linux would hand
        them out and the first read would fail)."""
        q = self.acceptq
        while q:
            child = q.popleft()
            if child.state != "CLOSED":
                return child
        return None

    def close(self, now: float) -> None:
        """Stop listening (``inet_csk_listen_stop``): drop every request sock (no segment, as
        Linux) and abort every child not yet accepted (RST from a synchronized state)."""
        if self.closed:
            return
        self.closed = True
        wheel = self.wheel
        for req in self.synq.values():
            if req.timer.pending:
                wheel.cancel(req.timer)
        self.synq.clear()
        self.young = 0
        q = self.acceptq
        while q:
            q.popleft().abort(now)
        cb = self.on_close
        if cb is not None:
            cb(self)

    def drop_requests(self, lip: bytes) -> int:
        """(robustness issue) Forget the request socks answered from local address ``lip`` (it
        left the interface: their SYN-ACK retransmissions must not leave from it).  Nothing is
        sent.  Returns how many were dropped."""
        gone = [req for req in self.synq.values() if req.key[0] == lip]
        for req in gone:
            self._unlink(req)
        return len(gone)

    def on_segment(self, lip: bytes, rip: bytes, hdr: TcpHeader, payload, now: float,
                   ip_opts=None) -> TcpConnection | None:
        """A segment for the listening ``(ip, port)`` that matched no connection.

        ``lip`` is the segment's destination (our) address, ``rip`` its source. Returns the child
        connection made by this segment (it is also in the accept queue), else None. The caller
        should run ``child.end_batch(now)`` after the batch like for any connection that got a
        segment (a pending ACK for data on the third ACK goes out then).  ``ip_opts``: the IPv4
        options of an answer to this segment, when its IP header had options (opaque, from
        ip/: ``ip_options_echo``); a SYN's are kept in its request sock (Linux ``ireq_opt``),
        a RST or ACK answering this segment carries them, and ``send`` gets them as a fifth
        argument (never passed when None)."""
        if ip_opts is None:
            return self._on_segment(lip, rip, hdr, payload, now)
        self._rx_opts = ip_opts
        try:
            return self._on_segment(lip, rip, hdr, payload, now)
        finally:
            self._rx_opts = None

    def _on_segment(self, lip: bytes, rip: bytes, hdr: TcpHeader, payload, now: float) -> TcpConnection | None:
        key = (lip, self.port, rip, hdr.src_port)
        req = self.synq.get(key)
        if req is not None:
            return self._check_req(req, hdr, payload, now)
        flags = hdr.flags
        if self.closed:
            self._send_reset(lip, rip, hdr, len(payload))
            return None
        if flags & ACK:
            if not flags & (SYN | RST) and self.config.syncookies and self._last_overflow is not None \
                    and now - self._last_overflow <= SYNCOOKIE_VALID:
                child = self._cookie_check(key, hdr, payload, now)
                if child is not None:
                    return child if child is not _DROPPED else None
            self._send_reset(lip, rip, hdr, len(payload))       # RFC 9293 3.10.7.2
            return None
        if flags & RST:
            return None
        if flags & SYN and not flags & FIN:
            self._conn_request(key, hdr, now)
        return None

    # ================================================================== SYN: tcp_conn_request

    def _conn_request(self, key: tuple, hdr: TcpHeader, now: float) -> None:
        cfg = self.config
        c = self.counters
        sc = cfg.syncookies
        want_cookie = False
        if sc == 2 or len(self.synq) >= self.max_syn_queue:
            if sc:                                   # tcp_syn_flood_action
                want_cookie = True
                c["TCPReqQFullDoCookies"] += 1
            else:
                c["TCPReqQFullDrop"] += 1
                c["ListenDrops"] += 1
                return
        if self.accept_queue_full and (not self.young_check or self.young > 1):
            c["ListenOverflows"] += 1
            c["ListenDrops"] += 1
            return
        lip, lport, rip, rport = key
        ccfg = self.config_for(rip) if self.config_for is not None else cfg
        opts = hdr.options
        mss = opts.mss or default_peer_mss(len(rip) == 16)
        ts_ok = bool(ccfg.timestamps and opts.timestamp is not None)
        ts_recent = opts.timestamp[0] if ts_ok else 0
        wscale = min(opts.wscale, 14) if ccfg.window_scaling and opts.wscale is not None else None
        sack = bool(ccfg.sack and opts.sack_permitted)
        ecn_ok = syn_negotiated(ccfg, hdr.flags, True)      # an ECN-setup SYN we accept
        ts_offset = self._ts_offset(lip, rip)
        if want_cookie:
            if not ts_ok:                            # nowhere to keep them: tcp_clear_options
                wscale = None
                sack = False
                ecn_ok = False
            cookie, _mss_used = syncookies.encode(rip, lip, rport, lport, hdr.seq, mss, now, self.secret)
            c["SyncookiesSent"] += 1
            self._last_overflow = now                # tcp_synq_overflow
            tsval = 0
            if ts_ok:
                raw = int(now * 1000) & MASK
                tsval = (syncookies.encode_ts_options(raw, wscale, sack, ecn_ok) + ts_offset) & MASK
            self._emit_synack(ccfg, lip, rip, lport, rport, cookie, (hdr.seq + 1) & MASK,
                              wscale, sack, ts_ok, tsval, ts_recent, ecn_ok, self._saved_opts())
            return
        iss = self.isn.isn(lip, lport, rip, rport, now)
        req = RequestSock(self, key, hdr.seq, iss, mss, wscale, sack, ts_ok, ts_recent, ts_offset,
                          ccfg, now)
        req.ecn_ok = ecn_ok
        req.ip_opts = self._saved_opts()
        self.synq[key] = req
        self.young += 1
        self._send_synack(req, now)
        self.wheel.arm(req.timer, now + ccfg.rto_initial)     # TCP_TIMEOUT_INIT

    # ================================================================== request sock segments

    def _check_req(self, req: RequestSock, hdr: TcpHeader, payload, now: float) -> TcpConnection | None:
        """Linux ``tcp_check_req`` for a segment that matched a request sock."""
        c = self.counters
        flags = hdr.flags
        flg = flags & (RST | SYN | ACK)
        seq = hdr.seq
        plen = len(payload)
        ts = hdr.options.timestamp if req.ts_ok else None
        paws_reject = False
        if ts is not None and req.ts_recent and 0 < ((req.ts_recent - ts[0]) & MASK) < HALF:
            # tcp_paws_reject with ts_recent_stamp estimated as now - reqsk_timeout
            paws_reject = not (flags & RST and self._timeout(req) >= PAWS_MSL)
        if seq == req.irs and flg == SYN and not paws_reject:
            # pure retransmitted SYN: SYN-ACK again (rate limited), timer re-armed if pending
            if not self._oow_rate_limited(req, now):
                self._send_synack(req, now, retrans=True)
                if req.timer.pending:
                    self.wheel.arm(req.timer, now + self._timeout(req))
            return None
        lip, lport, rip, rport = req.key
        if flg & ACK and hdr.ack != (req.iss + 1) & MASK:
            self._send_reset(lip, rip, hdr, plen)      # "return sk": the listener resets it
            return None
        rcv_nxt = (req.irs + 1) & MASK
        end_seq = (seq + plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)) & MASK
        if paws_reject or not _in_window(seq, end_seq, rcv_nxt, (rcv_nxt + self._rcv_wnd(req)) & MASK):
            if not flags & RST:
                # tcp_oow_rate_limited: data segments without SYN are never limited
                if (end_seq != seq and not flags & SYN) or not self._oow_rate_limited(req, now):
                    self._send_req_ack(req, now)
            if paws_reject:
                c["PAWSEstab"] += 1
            return None
        if ts is not None and seq_le(seq, rcv_nxt):                         # !after(seq, rcv_nxt)
            req.ts_recent = ts[0]
        if seq == req.irs:
            flg &= ~SYN                      # truncate the SYN: out of window at irs + 1
        if flg & (RST | SYN):
            c["AttemptFails"] += 1
            if not flg & RST:
                self._send_reset(lip, rip, hdr, plen)
            self._unlink(req)
            c["EmbryonicRsts"] += 1
            return None
        if not flg & ACK:
            return None
        # tcp_v4_syn_recv_sock: accept queue full -> listen_overflow (tcp_abort_on_overflow=0)
        if self.accept_queue_full:
            c["ListenOverflows"] += 1
            c["ListenDrops"] += 1
            req.acked = True
            return None
        if flags & SYN:                      # SYN truncated above: the data starts at irs + 1
            hdr = TcpHeader(hdr.src_port, hdr.dst_port, rcv_nxt, hdr.ack, flags & ~SYN, hdr.window,
                            hdr.options, hdr.checksum, hdr.urgent)
        syn = TcpHeader(rport, lport, req.irs, 0, SYN | (ECE | CWR if req.ecn_ok else 0), 0,
                        TcpOptions(mss=req.mss, wscale=req.wscale, sack_permitted=req.sack,
                                   timestamp=(req.ts_recent, 0) if req.ts_ok else None))
        kw = {} if req.ip_opts is None else {"ip_opts": req.ip_opts}
        try:
            child = self.make_child(config=req.config, local=(lip, lport), remote=(rip, rport),
                                    iss=req.iss, syn=syn, ts_offset=req.ts_offset,
                                    syn_time=req.syn_time, synack_retransmitted=req.num_retrans > 0,
                                    now=now, **kw)
        except OSError:
            c["ListenDrops"] += 1
            return None
        self._unlink(req)                    # inet_csk_complete_hashdance
        return self._child_ready(child, hdr, payload, now)

    def _child_ready(self, child: TcpConnection, hdr: TcpHeader, payload, now: float) -> TcpConnection:
        child.on_segment(hdr, payload, now)
        self.acceptq.append(child)
        cb = self.on_acceptable
        if cb is not None:
            cb()
        return child

    def _unlink(self, req: RequestSock) -> None:
        if self.synq.get(req.key) is req:
            del self.synq[req.key]
            if req.num_timeout == 0:
                self.young -= 1
        if req.timer.pending:
            self.wheel.cancel(req.timer)

    def _req_timer(self, req: RequestSock, now: float) -> None:
        """Linux ``reqsk_timer_handler``: retransmit the SYN-ACK or let the request sock go."""
        if self.synq.get(req.key) is not req:
            return
        max_retries = req.config.synack_retries
        qlen = len(self.synq)
        if (qlen << 1) > max(self.backlog, 8):
            # keep half of the queue for young embryos: prune old ones early
            young = self.young << 1
            while max_retries > 2:
                if young >= qlen:
                    break
                max_retries -= 1
                young <<= 1
        if req.num_timeout >= max_retries:
            self._unlink(req)
            return
        self._send_synack(req, now, retrans=True)
        if req.num_timeout == 0:
            self.young -= 1
        req.num_timeout += 1
        self.wheel.arm(req.timer, now + self._timeout(req))

    # ================================================================== SYN cookies

    def _cookie_check(self, key: tuple, hdr: TcpHeader, payload, now: float):
        """Linux ``cookie_v4_check``: the child, ``_DROPPED``, or None (not a valid cookie: RST)."""
        c = self.counters
        lip, lport, rip, rport = key
        irs = (hdr.seq - 1) & MASK
        cookie = (hdr.ack - 1) & MASK
        mss = syncookies.validate(rip, lip, rport, lport, irs, cookie, now, self.secret)
        if mss is None:
            c["SyncookiesFailed"] += 1
            return None
        c["SyncookiesRecv"] += 1
        ccfg = self.config_for(rip) if self.config_for is not None else self.config
        ts = hdr.options.timestamp
        ts_offset = self._ts_offset(lip, rip)
        if ts is None:
            wscale, sack, ecn_ok = None, False, False
        else:
            if not ccfg.timestamps:
                return None
            dec = syncookies.decode_ts_options((ts[1] - ts_offset) & MASK, sack_enabled=ccfg.sack,
                                               wscale_enabled=ccfg.window_scaling,
                                               ecn_enabled=bool(ccfg.ecn))      # cookie_ecn_ok
            if dec is None:
                return None
            wscale, sack, ecn_ok = dec
        if self.accept_queue_full:           # tcp_get_cookie_sock -> syn_recv_sock fails
            c["ListenOverflows"] += 1
            c["ListenDrops"] += 1
            return _DROPPED
        syn = TcpHeader(rport, lport, irs, 0, SYN | (ECE | CWR if ecn_ok else 0), 0,
                        TcpOptions(mss=mss, wscale=wscale, sack_permitted=sack,
                                   timestamp=(ts[0], 0) if ts is not None else None))
        # (cookie_v4_check: the options come from the completing ACK's header)
        saved = self._saved_opts()
        kw = {} if saved is None else {"ip_opts": saved}
        try:
            # No SYN-ACK send time is known: with timestamps the first RTT sample comes from
            # TSecr (as in Linux, up to 63 ms high: the low TSval bits carry options); without,
            # there is no sample and the RTO falls back to 3 s (RFC 6298 5.7, Linux).
            child = self.make_child(config=ccfg, local=(lip, lport), remote=(rip, rport),
                                    iss=cookie, syn=syn, ts_offset=ts_offset, syn_time=now,
                                    synack_retransmitted=ts is None, now=now, **kw)
        except OSError:
            c["ListenDrops"] += 1
            return _DROPPED
        return self._child_ready(child, hdr, payload, now)

    # ================================================================== output

    def _ts_offset(self, lip: bytes, rip: bytes) -> int:
        f = getattr(self.isn, "ts_offset", None)
        return f(lip, rip) & MASK if f is not None else 0

    def _our_wscale(self, cfg) -> int:
        ws = self._wscale.get(cfg.rcvbuf_max)
        if ws is None:
            ws = self._wscale[cfg.rcvbuf_max] = choose_wscale(cfg.rcvbuf_max)
        return ws

    @staticmethod
    def _rcv_wnd(req: RequestSock) -> int:
        return min(req.config.rcvbuf, 65535)

    def _timeout(self, req: RequestSock) -> float:
        """Linux ``reqsk_timeout``: initial timeout << num_timeout, capped at rto_max."""
        cfg = req.config
        return min(cfg.rto_initial * (1 << req.num_timeout), cfg.rto_max)

    def _oow_rate_limited(self, req: RequestSock, now: float) -> bool:
        last = req.last_oow
        if last is not None and 0.0 <= now - last < OOW_RATE_LIMIT:
            self.counters["TCPACKSkippedSynRecv"] += 1
            return True
        req.last_oow = now
        return False

    def _send_synack(self, req: RequestSock, now: float, retrans: bool = False) -> None:
        lip, lport, rip, rport = req.key
        tsval = (int(now * 1000) + req.ts_offset) & MASK if req.ts_ok else 0
        if retrans:
            req.num_retrans += 1
            c = self.counters
            c["RetransSegs"] += 1
            c["TCPSynRetrans"] += 1
        self._emit_synack(req.config, lip, rip, lport, rport, req.iss, (req.irs + 1) & MASK,
                          req.wscale, req.sack, req.ts_ok, tsval, req.ts_recent, req.ecn_ok, req.ip_opts)

    def _saved_opts(self):
        """``tcp_v4_save_options``: the options answering this segment's, None where there are
        none or they could not be built (False: the SYN is still answered, without options)."""
        o = self._rx_opts
        return None if o is False else o

    def _out(self, lip: bytes, rip: bytes, hdr: TcpHeader, ip_opts) -> None:
        """``send`` a segment of the listener's own, with IPv4 options answering the peer's if
        there are any (only then a fifth argument: plain ``send`` callables keep working)."""
        if ip_opts is None:
            self.send(lip, rip, hdr, b"")
        else:
            self.send(lip, rip, hdr, b"", ip_opts)

    def _emit_synack(self, cfg, lip, rip, lport, rport, iss, ack, wscale, sack, ts_ok, tsval,
                     tsecr, ecn_ok: bool = False, ip_opts=None) -> None:
        """The SYN-ACK, with the same options ``TcpConnection._send_syn`` would put on it (and ECE
        when ECN was accepted: an ECN-setup SYN-ACK, RFC 3168 6.1.1)."""
        opts = TcpOptions(mss=cfg.mss,
                          wscale=self._our_wscale(cfg) if wscale is not None else None,
                          sack_permitted=sack, timestamp=(tsval, tsecr) if ts_ok else None)
        hdr = TcpHeader(lport, rport, iss, ack, SYN | ACK | (ECE if ecn_ok else 0), min(cfg.rcvbuf, 65535), opts)
        self.counters["OutSegs"] += 1
        self._out(lip, rip, hdr, ip_opts)

    def _send_req_ack(self, req: RequestSock, now: float) -> None:
        """Linux ``tcp_v4_reqsk_send_ack``: bare ACK, SEQ = ISS + 1, window scaled."""
        lip, lport, rip, rport = req.key
        cfg = req.config
        shift = self._our_wscale(cfg) if req.wscale is not None else 0
        opts = (TcpOptions(timestamp=((int(now * 1000) + req.ts_offset) & MASK, req.ts_recent))
                if req.ts_ok else TcpOptions())
        hdr = TcpHeader(lport, rport, (req.iss + 1) & MASK, (req.irs + 1) & MASK, ACK,
                        self._rcv_wnd(req) >> shift, opts)
        self.counters["OutSegs"] += 1
        # (tcp_v4_reqsk_send_ack answers through ip_send_unicast_reply: the segment's options)
        self._out(lip, rip, hdr, self._rx_opts)

    def _send_reset(self, lip: bytes, rip: bytes, hdr: TcpHeader, plen: int) -> None:
        rst = rst_for(hdr, plen)
        if rst is None:
            return
        if self._rx_opts is False:
            return                      # options Linux cannot answer: no reply at all
        c = self.counters
        c["OutRsts"] += 1
        c["OutSegs"] += 1
        self._out(lip, rip, rst, self._rx_opts)

    def _default_make_child(self, *, config, local, remote, iss, syn, ts_offset, syn_time,
                            synack_retransmitted, now) -> TcpConnection:
        send = self.send
        lip = local[0]
        rip = remote[0]

        def output(hdr: TcpHeader, payload) -> None:
            send(lip, rip, hdr, payload)

        return TcpConnection.from_request(config=config, wheel=self.wheel, counters=self.counters,
                                          local=local, remote=remote, iss=iss, syn=syn, output=output,
                                          ts_offset=ts_offset, now=now, syn_time=syn_time,
                                          synack_retransmitted=synack_retransmitted)

    def __repr__(self) -> str:
        return (f"<Listener {self.ip.hex() or '*'}:{self.port} synq={len(self.synq)} "
                f"acceptq={len(self.acceptq)}/{self.backlog}{' closed' if self.closed else ''}>")


class _Dropped:
    __slots__ = ()


_DROPPED = _Dropped()
