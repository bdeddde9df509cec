"""Per-stack (and per-connection override) TCP settings, defaults as Linux's sysctls.

CONTRACT: shared by ``tcp/``, ``ip/`` and ``aio/``; add fields freely, never rename.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(slots=True)
class TcpConfig:
    mss: int = 1460                 # our MSS to advertise: MTU - IP - TCP headers (set by ip/)
    tso_segs: int = 1               # max MSS-sized segments per output() call (GSO super-frames)
    rcvbuf: int = 131072            # tcp_rmem[1]: initial receive buffer
    rcvbuf_max: int = 6291456       # tcp_rmem[2]: auto-tuning ceiling
    sndbuf: int = 87040             # tcp_wmem[1]-like: send buffer (write flow control rides on it)
    sndbuf_max: int = 4194304       # tcp_wmem[2]
    window_scaling: bool = True     # tcp_window_scaling (RFC 7323)
    timestamps: bool = True         # tcp_timestamps (RFC 7323)
    sack: bool = True               # tcp_sack (RFC 2018)
    dsack: bool = True              # tcp_dsack (RFC 2883)
    congestion_control: str = "cubic"
    initial_cwnd: int = 10          # RFC 6928
    rto_initial: float = 1.0        # RFC 6298 2.1
    rto_min: float = 0.2            # Linux TCP_RTO_MIN (RFC 6298 says 1 s; Linux wins on LANs)
    rto_max: float = 120.0          # Linux TCP_RTO_MAX
    syn_retries: int = 6            # tcp_syn_retries
    synack_retries: int = 5         # tcp_synack_retries
    retries2: int = 15              # tcp_retries2
    delack_min: float = 0.04        # TCP_DELACK_MIN
    delack_max: float = 0.2         # TCP_DELACK_MAX
    nodelay: bool = False           # TCP_NODELAY (Nagle off)
    cork: bool = False              # TCP_CORK
    keepalive: bool = False         # SO_KEEPALIVE
    keepalive_time: float = 7200.0  # tcp_keepalive_time
    keepalive_intvl: float = 75.0   # tcp_keepalive_intvl
    keepalive_probes: int = 9       # tcp_keepalive_probes
    user_timeout: float = 0.0       # TCP_USER_TIMEOUT (0: off)
    time_wait: float = 60.0         # TCP_TIMEWAIT_LEN (2MSL)
    fin_timeout: float = 60.0       # tcp_fin_timeout (FIN_WAIT2 orphan timeout)
    moderate_rcvbuf: bool = True    # tcp_moderate_rcvbuf (receive-buffer auto-tuning)
    max_syn_backlog: int = 4096     # tcp_max_syn_backlog
    syncookies: int = 1             # tcp_syncookies: 0 never, 1 under pressure, 2 always
    challenge_ack_limit: int = 1000  # tcp_challenge_ack_limit (per second)
    tlp: bool = True                # tail loss probe (RFC 8985 7; Linux tcp_early_retrans=3)
    # net.ipv4.tcp_recovery: 1 (Linux's default) finds losses by time, RACK (RFC 8985,
    # tcp/rack.py) on SACK connections; 0: RFC 6675's DupThresh rules only (tcp/reordering.py)
    recovery: int = 1
    # tcp_ecn (RFC 3168 ECN, RFC 9293 3.8.2 SHLD-8): 0 off, 1 request it on outgoing connections
    # and accept it on incoming ones, 2 (Linux's default) accept it on incoming ones only
    ecn: int = 2
    ephemeral_ports: tuple[int, int] = (32768, 60999)  # ip_local_port_range
    # (robustness) cap on connections in the demux table (any state but LISTEN; 0: no cap).
    # At the cap connect() raises OSError(ENOBUFS) and a completing handshake is dropped
    # (ListenDrops + TCPMaxConnDrop; the peer retransmits its ACK or gives up).
    max_connections: int = 0

    # (PMTUD issue) path MTU: tcp_mtu_probing (0 off, 1 black-hole detection after tcp_retries1
    # RTOs; see tcp/mtu_probe.py), tcp_base_mss, tcp_mtu_probe_floor, tcp_retries1
    mtu_probing: int = 1
    base_mss: int = 1024
    mtu_probe_floor: int = 48
    retries1: int = 3

    # IP header fields of our segments (RFC 9293 3.9.1.1 MUST-49, 3.9.1.9 MUST-48/SHLD-21/SHLD-22;
    # RFC 1122 4.2.2.19; RFC 2474).  Stack-wide defaults, as the sysctls (read from the stack's
    # config only, like the per-netns sysctls): net.ipv4.ip_default_ttl, net.ipv6.conf.*.hop_limit.
    ip_default_ttl: int = 64
    ipv6_hop_limit: int = 64
    # Per socket (the pseudo-socket's IP_TTL / IP_TOS / IPV6_UNICAST_HOPS / IPV6_TCLASS): -1 means
    # the stack default (Linux inet->uc_ttl / np->hop_limit); the TOS / traffic class as set,
    # its two ECN bits always 0 here (Linux keeps those under TCP's control: ECT(0) on new data
    # when ECN was negotiated, Route.set_ecn).
    # IPv4 connections use ip_ttl / ip_tos, IPv6 ones ipv6_unicast_hops / ipv6_tclass.
    ip_ttl: int = -1
    ip_tos: int = 0
    ipv6_unicast_hops: int = -1
    ipv6_tclass: int = 0
    # IPv4 options (RFC 9293 3.9.2.1, RFC 1122 3.2.1.8 / 4.2.3.8): per socket, the pseudo-socket's
    # IP_OPTIONS as given (Linux ip_options_get: an LSRR / SSRR lists the hops, the final
    # destination is the connection's; b"": none); they replace a source route received in the
    # peer's SYN (MUST-52).  Stack-wide, net.ipv4.conf.*.accept_source_route: a host drops
    # source-routed datagrams unless this is set (Linux's default for a host: 0).
    ip_options: bytes = b""
    accept_source_route: bool = False

    def __post_init__(self) -> None:
        """Reject IP header values the wire cannot carry, with the field's name (a bad sysctl
        write fails with EINVAL; here at construction, not at the first segment)."""
        for name in ("ip_default_ttl", "ipv6_hop_limit"):
            v = getattr(self, name)
            if type(v) is not int or not 1 <= v <= 255:
                raise ValueError(f"{name} must be an int in 1..255, got {v!r}")
        for name, lo in (("ip_ttl", 1), ("ipv6_unicast_hops", 0)):
            v = getattr(self, name)
            if type(v) is not int or not (v == -1 or lo <= v <= 255):
                raise ValueError(f"{name} must be -1 (the stack default) or an int in {lo}..255, got {v!r}")
        if type(self.recovery) is not int or self.recovery not in (0, 1):
            raise ValueError(f"recovery must be 0 (DupThresh only) or 1 (RACK), got {self.recovery!r}")
        if type(self.ip_options) is not bytes:
            raise ValueError(f"ip_options must be bytes, got {self.ip_options!r}")
        if self.ip_options:
            from ..wire.ipv4_options import compile_options
            compile_options(self.ip_options, received=False)      # IpOptionError (a ValueError)
        if type(self.ecn) is not int or not 0 <= self.ecn <= 2:
            raise ValueError(f"ecn must be 0 (off), 1 (request and accept) or 2 (accept only), "
                             f"got {self.ecn!r}")
        for name in ("ip_tos", "ipv6_tclass"):
            v = getattr(self, name)
            if type(v) is not int or not 0 <= v <= 255 or v & 3:
                raise ValueError(f"{name} must be an int in 0..255 with the two ECN bits clear "
                                 f"(DSCP << 2), got {v!r}")

    def ip_fields(self, v6: bool, default_ttl: int, default_hop_limit: int) -> tuple[int, int]:
        """``(ttl or hop limit, tos or traffic class)`` of this connection's segments, the
        defaults (-1) resolved against the stack's (as Linux ``ip_select_ttl`` /
        ``ip6_dst_hoplimit``)."""
        if v6:
            h = self.ipv6_unicast_hops
            return (h if h >= 0 else default_hop_limit), self.ipv6_tclass
        t = self.ip_ttl
        return (t if t >= 0 else default_ttl), self.ip_tos

    def with_options(self, **kw: object) -> "TcpConfig":
        """A copy with some fields changed (per-connection overrides)."""
        return replace(self, **kw)
