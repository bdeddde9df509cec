"""ECN in the network core (RFC 3168 5 / 6.1; ip/core.py, tcp/ecn.py): an ECN connection's new
data leaves with ECT(0) in the IP header and its ACKs with Not-ECT, on the general path, the
one-pack path (output_ts) and the burst path alike, the DSCP bits (IP_TOS) kept (the ECN-setup
SYN's one-pack frame: tests/unit/test_ip_output_ts.py); a received CE mark reaches TCP -- never merged by
software GRO with the unmarked segments of its batch, which are merged as before -- and the next
ACK carries ECE, with GRO on and off alike; CE on a connection without ECN changes nothing."""
from __future__ import annotations

import random

import pytest

from aiotcpstack.ip.core import NetworkCore
from aiotcpstack.mib import Counters
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.timer_wheel import TimerWheel
from aiotcpstack.wire.ethernet import ETH_P_IP, ETH_P_IPV6, build_ethernet, parse_ethernet
from aiotcpstack.wire.ipv4 import build_ipv4_header, parse_ipv4
from aiotcpstack.wire.ipv6 import build_ipv6_header, parse_ipv6
from aiotcpstack.wire.tcp import ACK, CWR, ECE, PSH, SYN, TcpHeader, TcpOptions, build_tcp, parse_tcp

from tcp_harness import FrameTx
from test_ip_gro import Sink
from test_ip_output_ts import make

MY_MAC = bytes.fromhex("02aa00000001")
PEER_MAC = bytes.fromhex("02bb00000002")
MASK = 0xFFFFFFFF


class EcnConn:
    """Our active open (``ecn``, v4 or v6) to PEER:80, established by a crafted SYN-ACK
    (``synack_ece``: an ECN-setup SYN-ACK); frames out are recorded as (tos, TcpHeader, payload
    length)."""

    IRS = 5000

    def __init__(self, *, ecn: int = 1, synack_ece: bool = True, gro: bool = True, v6: bool = False,
                 fast: bool = False, ip_tos: int = 0) -> None:
        self.v6 = v6
        self.my_ip = bytes.fromhex("20010002000000000000000000000001") if v6 else bytes([198, 18, 0, 1])
        self.peer_ip = bytes.fromhex("20010002000000000000000000000002") if v6 else bytes([198, 18, 0, 2])
        self.tx = FrameTx()
        self.counters = Counters()
        cfg = TcpConfig(ecn=ecn, rcvbuf=1 << 20, moderate_rcvbuf=False, ip_tos=ip_tos, ipv6_tclass=ip_tos)
        self.core = NetworkCore(MY_MAC, 1500, [(self.my_ip, 64 if v6 else 24)], self.counters, cfg,
                                TimerWheel(), self.tx, None, vnet=fast, dedicated=True, strict=True,
                                secret=b"ecn")
        if fast:
            self.core.transmit_tcp = self._tx_tcp
            self.core.transmit_tcp_burst = self._tx_burst
        self.core.gro = gro
        self.core.neigh.update(self.peer_ip, PEER_MAC, 0.0)
        self.sink = Sink()
        self.conn = self.core.connect(self.peer_ip, 80, self.sink, 0.0)
        tos, syn, _ = self.out()[-1]
        assert syn.flags & SYN and tos & 3 == 0
        assert syn.flags & (ECE | CWR) == (ECE | CWR if ecn == 1 else 0)
        self.lport = syn.src_port
        self.iss = syn.seq
        self.ts = 777
        synack = TcpHeader(80, self.lport, self.IRS, (self.iss + 1) & MASK, SYN | ACK | (ECE if synack_ece else 0),
                           65535, TcpOptions(mss=1440, wscale=7, sack_permitted=True,
                                             timestamp=(self.ts, syn.options.timestamp[0])))
        self.seq = (self.IRS + 1) & MASK
        self.core.receive([(self.frame(synack), False)], 0.01)
        assert self.conn.state == "ESTABLISHED"
        self.core.receive([(self.data(b"", flags=ACK), False)], 0.011)
        self.out()

    # -------------------------------------------------------------- frames
    def _tx_tcp(self, l2l3, th, payload, gso_type, gso_size) -> None:
        self.tx.append(bytes(l2l3) + bytes(th) + bytes(payload))

    def _tx_burst(self, csum_start, hdr_len, gso_type, frames) -> None:
        for hdrs, parts, _gso in frames:
            self.tx.append(bytes(hdrs) + b"".join(bytes(p) for p in parts))

    def out(self) -> list:
        """(tos, TcpHeader, payload length) of the frames sent since the last call."""
        res = []
        for f in self.tx:
            _d, _s, et, l3 = parse_ethernet(f)
            if et == ETH_P_IPV6:
                ip, seg = parse_ipv6(l3)
                tos = ip.traffic_class
            elif et == ETH_P_IP:
                ip, seg = parse_ipv4(l3)
                tos = ip.tos
            else:
                continue
            hdr, payload = parse_tcp(seg)
            res.append((tos, hdr, len(payload)))
        self.tx.clear()
        return res

    def frame(self, hdr: TcpHeader, payload: bytes = b"", tos: int = 0) -> bytes:
        seg = build_tcp(hdr, payload, self.peer_ip, self.my_ip)
        if self.v6:
            ip = build_ipv6_header(self.peer_ip, self.my_ip, 6, len(seg), 64, tos)
            return build_ethernet(MY_MAC, PEER_MAC, ETH_P_IPV6) + ip + seg
        ip = build_ipv4_header(self.peer_ip, self.my_ip, 6, len(seg), tos=tos)
        return build_ethernet(MY_MAC, PEER_MAC, ETH_P_IP) + ip + seg

    def data(self, payload: bytes, flags: int = ACK | PSH, tos: int = 0) -> bytes:
        hdr = TcpHeader(80, self.lport, self.seq, self.conn.snd_nxt, flags, 512,
                        TcpOptions(timestamp=(self.ts, 1)))
        self.seq = (self.seq + len(payload)) & MASK
        return self.frame(hdr, payload, tos)


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("v6", [False, True])
def test_ect_on_new_data_not_on_acks_dscp_kept(fast: bool, v6: bool) -> None:
    c = EcnConn(fast=fast, v6=v6, ip_tos=0xB8)
    c.conn.send(b"x" * 5000, 0.02)           # a burst (fast: output_ts_burst)
    c.core.flush_loopback(0.02)
    sent = c.out()
    assert sent and all(tos == 0xBA for tos, _h, n in sent if n)       # DSCP 46 + ECT(0)
    c.core.receive([(c.data(b"y" * 100), False)], 0.03)
    acks = c.out()
    pure = [(tos, h) for tos, h, n in acks if not n]
    assert pure and all(tos == 0xB8 for tos, _h in pure)              # Not-ECT
    c.conn.send(b"z" * 300, 0.031)                                     # output_ts (one segment)
    one = c.out()
    assert one and all(tos == 0xBA for tos, _h, n in one if n)


@pytest.mark.parametrize("fast", [False, True])
def test_no_ecn_no_ect(fast: bool) -> None:
    c = EcnConn(ecn=2, synack_ece=True, fast=fast)     # ecn=2 did not ask: no ECN
    assert c.conn.ecn == 0
    c.conn.send(b"x" * 20000, 0.02)
    sent = c.out()
    assert sent and all(tos == 0 for tos, _h, _n in sent)


def test_route_ecn_bits_survive_set_ip_and_apply_config() -> None:
    core, route, sent = make(False, random.Random(1))
    route.set_ip(64, 0x20)
    route.set_ecn(2)
    assert route.tos == 0x22
    route.apply_config(TcpConfig(ip_tos=0xB8))
    assert route.tos == 0xBA and route.ecn == 2
    route.set_ecn(0)
    assert route.tos == 0xB8


def _batch(c: EcnConn, tos_list: list[int]) -> list:
    return [(c.data(bytes([65 + i]) * 1000, flags=ACK, tos=t), False) for i, t in enumerate(tos_list)]


@pytest.mark.parametrize("v6", [False, True])
def test_ce_in_a_gro_batch_is_not_merged_and_ece_follows(v6: bool) -> None:
    results = []
    for gro in (True, False):
        c = EcnConn(gro=gro, v6=v6)
        for k in list(c.counters):
            c.counters[k] = 0
        # ECT(0) data, one CE in the middle (RFC 3168 5: 3), more ECT(0)
        c.core.receive(_batch(c, [2, 2, 2, 3, 2, 2]), 0.02)
        acks = c.out()
        assert bytes(c.sink.data) == b"".join(bytes([65 + i]) * 1000 for i in range(6))
        assert acks and acks[-1][1].flags & ECE and acks[-1][1].ack == c.seq
        assert c.counters["TcpEcnCeRecv"] == 1
        if gro and not v6:
            # (IPv6 frames take the general path, which does not merge) the three before the CE merge (2 merges), the two after it (1): never the CE one
            assert c.counters["TcpGroMerged"] == 3
        # every ACK until CWR: a later batch's ACK carries ECE, the one after a CWR does not
        c.core.receive(_batch(c, [2, 2]), 0.03)
        assert all(h.flags & ECE for _t, h, _n in c.out())
        c.core.receive([(c.data(b"c" * 1000, flags=ACK | CWR, tos=2), False)], 0.04)
        later = c.out()
        assert later and not later[-1][1].flags & ECE
        results.append([(h.flags, h.ack) for _t, h, _n in acks])
    assert results[0] == results[1]                  # GRO on and off: the same ACKs


def test_lone_ce_segment_and_ce_without_ecn() -> None:
    c = EcnConn()
    c.core.receive([(c.data(b"a" * 500, tos=3), False)], 0.02)
    out = c.out()
    assert out and out[-1][1].flags & ECE
    n = EcnConn(ecn=0, synack_ece=False)
    n.core.receive(_batch(n, [3, 3, 3]), 0.02)
    out = n.out()
    assert out and not any(h.flags & ECE for _t, h, _n in out)
    assert bytes(n.sink.data) == b"A" * 1000 + b"B" * 1000 + b"C" * 1000
