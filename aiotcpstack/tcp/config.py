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

    def with_options(self, **kw: object) -> "TcpConfig":
        """A copy with some fields changed (per-connection overrides)."""
        return replace(self, **kw)
