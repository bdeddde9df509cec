"""ICMP errors delivered to TCP (ip/icmp_errors.py), the path-MTU cache (ip/pmtu.py) and the IP
details around them (DF, TTL / hop limit, IPv4 options, fragments), at frame level: a real
NetworkCore with real TcpConnections, frames in and out, virtual time."""
from __future__ import annotations

import errno
import struct

import pytest

from aiotcpstack.ip.core import NetworkCore
from aiotcpstack.ip.pmtu import PmtuCache, plateau_below
from aiotcpstack.mib import Counters
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.timer_wheel import TimerWheel
from aiotcpstack.wire import icmp as wicmp
from aiotcpstack.wire.checksum import internet_checksum
from aiotcpstack.wire.ethernet import ETH_P_IP, ETH_P_IPV6, build_ethernet, parse_ethernet
from aiotcpstack.wire.ipv4 import build_ipv4_header, parse_ipv4
from aiotcpstack.wire.ipv6 import build_ipv6_header, parse_ipv6
from aiotcpstack.wire.tcp import ACK, SYN, TcpHeader, TcpOptions, build_tcp, parse_tcp

MY_MAC = bytes.fromhex("02aa00000001")
PEER_MAC = bytes.fromhex("02bb00000002")
MY_IP = bytes([198, 18, 0, 1])
PEER_IP = bytes([198, 18, 0, 2])
ROUTER_IP = bytes([198, 18, 0, 254])
MY_IP6 = bytes.fromhex("20010002000000000000000000000001")
PEER_IP6 = bytes.fromhex("20010002000000000000000000000002")
ROUTER_IP6 = bytes.fromhex("200100020000000000000000000000fe")


class Rec:
    def __init__(self):
        self.events = []
        self.data = bytearray()

    def tcp_established(self):
        self.events.append("established")

    def tcp_data(self, data):
        self.data += data

    def tcp_eof(self):
        self.events.append("eof")

    def tcp_send_space(self):
        pass

    def tcp_closed(self, exc):
        self.events.append(("closed", exc))

    @property
    def closed(self):
        return [e[1] for e in self.events if isinstance(e, tuple)]


class Tx(list):
    def __call__(self, frame, gso_type=0, gso_size=0, csum_start=0, csum_offset=0):
        self.append(bytes(frame))


class Env:
    def __init__(self, dedicated=True, **cfg):
        self.tx = Tx()
        self.counters = Counters()
        self.wheel = TimerWheel(0.0)
        self.now = 0.0
        self.core = NetworkCore(MY_MAC, 1500, [(MY_IP, 24), (MY_IP6, 64)], self.counters, TcpConfig(**cfg),
                                self.wheel, self.tx, lambda: self.now, dedicated=dedicated, strict=True)
        for ip in (PEER_IP, PEER_IP6):
            self.core.neigh.update(ip, PEER_MAC, 0.0)

    def at(self, t):
        while True:
            ne = self.wheel.next_expiry()
            if ne is None or ne > t:
                break
            self.now = max(self.now, ne)
            self.wheel.advance(ne)
        self.now = t
        self.wheel.advance(t)
        for ip in (PEER_IP, PEER_IP6):       # keep the neighbour fresh
            self.core.neigh.update(ip, PEER_MAC, t)

    def take(self):
        out, self.tx[:] = list(self.tx), []
        return out

    def rx(self, frame):
        self.core.receive([(frame, False)], self.now)

    def connect(self, v6=False, rport=80, handler=None):
        rip = PEER_IP6 if v6 else PEER_IP
        h = handler or Rec()
        conn = self.core.connect(rip, rport, h, self.now)
        return conn, h

    def establish(self, v6=False, peer_mss=1460):
        self.take()                                  # whatever other connections sent
        conn, h = self.connect(v6)
        (syn,) = self.take()
        _, ip, hdr, _ = parse_frame(syn)
        self.at(self.now + 0.01)
        sa = TcpHeader(hdr.dst_port, hdr.src_port, 7000, hdr.seq + 1, SYN | ACK, 65535,
                       TcpOptions(mss=peer_mss, wscale=7, sack_permitted=True, timestamp=(5, hdr.options.timestamp[0])))
        self.rx(tcp_frame(sa, src=ip.dst, dst=ip.src))
        self.take()
        assert conn.state == "ESTABLISHED"
        return conn, h


def parse_frame(frame):
    _, _, et, payload = parse_ethernet(frame)
    if et == ETH_P_IP:
        ip, seg = parse_ipv4(payload)
    else:
        ip, seg = parse_ipv6(payload)
    hdr, data = parse_tcp(seg)
    return et, ip, hdr, bytes(data)


def tcp_frame(hdr, payload=b"", src=PEER_IP, dst=MY_IP):
    seg = build_tcp(hdr, payload, src, dst)
    if len(src) == 16:
        return build_ethernet(MY_MAC, PEER_MAC, ETH_P_IPV6) + build_ipv6_header(src, dst, 6, len(seg)) + seg
    return build_ethernet(MY_MAC, PEER_MAC, ETH_P_IP) + build_ipv4_header(src, dst, 6, len(seg)) + seg


def icmp4_frame(msg, src=ROUTER_IP, dst=MY_IP):
    return build_ethernet(MY_MAC, PEER_MAC, ETH_P_IP) + build_ipv4_header(src, dst, 1, len(msg), df=False) + msg


def icmp6_frame(msg, src=ROUTER_IP6, dst=MY_IP6):
    return build_ethernet(MY_MAC, PEER_MAC, ETH_P_IPV6) + build_ipv6_header(src, dst, 58, len(msg)) + msg


def l3(frame):
    return frame[14:]


def with_seq(frame, seq):
    """A copy of our TCP frame with another sequence number (what a spoofer would quote)."""
    b = bytearray(frame)
    off = 14 + (40 if b[12:14] == b"\x86\xdd" else 20)
    b[off + 4:off + 8] = struct.pack("!I", seq & 0xFFFFFFFF)
    return bytes(b)


def data_frames(env, conn, n=20000):
    conn.send(b"x" * n, env.now)
    out = env.take()
    assert out
    return out


# ------------------------------------------------------------------------------ PMTUD (RFC 1191)
def test_frag_needed_lowers_mss_and_retransmits_at_once():
    env = Env()
    conn, h = env.establish()
    assert conn.mss == 1448
    frames = data_frames(env, conn)
    assert max(len(f) for f in frames) == 14 + 1500
    env.rx(icmp4_frame(wicmp.build_icmpv4_frag_needed(l3(frames[0]), 1300)))
    assert env.counters["TCPPMTUDUpdates"] == 1
    assert env.core.pmtu.get(PEER_IP, env.now) == 1300
    assert conn.mss == 1300 - 40 - 12
    out = env.take()
    assert out, "tcp_simple_retransmit: what was in flight goes again right away"
    assert all(len(f) - 14 <= 1300 for f in out)
    _, ip, hdr, data = parse_frame(out[0])
    assert hdr.seq == conn.snd_una and len(data) == conn.mss and ip.df
    # a later, new connection to the same destination starts at the learned MTU
    conn2, _ = env.establish()
    assert conn2.mss <= 1300 - 40 - 12


def test_frag_needed_with_spoofed_sequence_is_ignored():
    env = Env()
    conn, h = env.establish()
    frames = data_frames(env, conn)
    for bogus in (conn.snd_una - 100000, conn.snd_nxt + 1, conn.snd_nxt + 0x40000000):
        env.rx(icmp4_frame(wicmp.build_icmpv4_frag_needed(l3(with_seq(frames[0], bogus)), 576)))
        env.rx(icmp4_frame(wicmp.build_icmpv4_dest_unreach(wicmp.ICMP_HOST_UNREACH, l3(with_seq(frames[0], bogus)))))
    assert env.counters["OutOfWindowIcmps"] == 6
    assert conn.mss == 1448 and conn.soft_err == 0 and conn.state == "ESTABLISHED"
    assert env.core.pmtu.entries == {}
    assert env.take() == []


def test_frag_needed_for_unknown_connection_is_dropped():
    env = Env()
    conn, _ = env.establish()
    frames = data_frames(env, conn)
    b = bytearray(l3(frames[0]))
    b[20:22] = struct.pack("!H", 1)                 # another source port: no such connection
    env.rx(icmp4_frame(wicmp.build_icmpv4_frag_needed(bytes(b), 1000)))
    assert conn.mss == 1448 and env.counters["IcmpInErrors"] == 1


def test_pmtu_floor_and_plateau():
    env = Env()
    conn, _ = env.establish()
    frames = data_frames(env, conn)
    env.rx(icmp4_frame(wicmp.build_icmpv4_frag_needed(l3(frames[0]), 100)))
    assert env.core.pmtu.get(PEER_IP, env.now) == 552          # Linux min_pmtu
    assert conn.mss == 552 - 40 - 12
    c = PmtuCache(1500)
    assert c.update(PEER_IP, 0, 0.0, quoted_len=1500) == 1492          # RFC 1191 7.1 plateau
    assert plateau_below(1006) == 508
    assert c.update(PEER_IP, 1492, 1.0) is None                      # not lower: ignored
    assert c.update(PEER_IP, 1600, 1.0) is None                      # never raised by ICMP
    assert c.update(PEER_IP6, 1000, 1.0) == 1280                     # IPv6 minimum MTU
    assert c.get(PEER_IP, 599.0) == 1492 and c.get(PEER_IP, 600.0) == 1500   # mtu_expires


def test_pmtu_cache_expiry_restores_full_mss_for_new_connections():
    env = Env()
    conn, _ = env.establish()
    frames = data_frames(env, conn)
    env.rx(icmp4_frame(wicmp.build_icmpv4_frag_needed(l3(frames[0]), 1280)))
    env.at(601.0)
    conn2, _ = env.establish()
    assert conn2.mss == 1448


def test_packet_too_big_v6():
    env = Env()
    conn, h = env.establish(v6=True)
    assert conn.mss == 1500 - 60 - 12
    frames = data_frames(env, conn)
    assert max(len(f) for f in frames) == 14 + 1500
    env.rx(icmp6_frame(wicmp.build_icmpv6_packet_too_big(ROUTER_IP6, MY_IP6, 1280, l3(frames[0]))))
    assert conn.mss == 1280 - 60 - 12
    out = env.take()
    assert out and all(len(f) - 14 <= 1280 for f in out)
    # below the IPv6 minimum: clamped to 1280 (nothing changes), spoofed seq: counted and ignored
    env.rx(icmp6_frame(wicmp.build_icmpv6_packet_too_big(ROUTER_IP6, MY_IP6, 600, l3(frames[1]))))
    assert conn.mss == 1280 - 60 - 12
    env.rx(icmp6_frame(wicmp.build_icmpv6_packet_too_big(ROUTER_IP6, MY_IP6, 1280,
                                                         l3(with_seq(frames[1], conn.snd_nxt + 5000)))))
    assert env.counters["OutOfWindowIcmps"] == 1
    assert env.counters["Icmp6InPktTooBigs"] == 3


# ------------------------------------------------------------------- hard and soft errors
@pytest.mark.parametrize("code,exc_type,err", [
    (wicmp.ICMP_PORT_UNREACH, ConnectionRefusedError, errno.ECONNREFUSED),
    (wicmp.ICMP_PROT_UNREACH, OSError, errno.ENOPROTOOPT),
    (wicmp.ICMP_HOST_UNREACH, OSError, errno.EHOSTUNREACH),
    (wicmp.ICMP_NET_UNREACH, OSError, errno.ENETUNREACH),
    (wicmp.ICMP_ADMIN_PROHIBITED, OSError, errno.EHOSTUNREACH),
])
def test_dest_unreachable_in_syn_sent_is_hard(code, exc_type, err):
    env = Env()
    conn, h = env.connect()
    (syn,) = env.take()
    env.rx(icmp4_frame(wicmp.build_icmpv4_dest_unreach(code, l3(syn))))
    assert conn.state == "CLOSED"
    (exc,) = h.closed
    assert isinstance(exc, exc_type) and exc.errno == err
    assert env.counters["AttemptFails"] == 1 and env.counters["TCPIcmpHardErrors"] == 1
    assert not env.core.demux.conns


def test_dest_unreachable_v6_in_syn_sent_is_hard():
    env = Env()
    conn, h = env.connect(v6=True)
    (syn,) = env.take()
    env.rx(icmp6_frame(wicmp.build_icmpv6_dest_unreach(ROUTER_IP6, MY_IP6, wicmp.ICMPV6_PORT_UNREACH, l3(syn))))
    (exc,) = h.closed
    assert isinstance(exc, ConnectionRefusedError)
    conn, h = env.connect(v6=True)
    (syn,) = env.take()
    env.rx(icmp6_frame(wicmp.build_icmpv6_dest_unreach(ROUTER_IP6, MY_IP6, wicmp.ICMPV6_ADDR_UNREACH, l3(syn))))
    (exc,) = h.closed
    assert exc.errno == errno.EHOSTUNREACH


def test_syn_sent_error_with_wrong_seq_is_ignored():
    env = Env()
    conn, h = env.connect()
    (syn,) = env.take()
    env.rx(icmp4_frame(wicmp.build_icmpv4_dest_unreach(wicmp.ICMP_PORT_UNREACH, l3(with_seq(syn, 12345)))))
    assert conn.state == "SYN_SENT" and not h.closed
    assert env.counters["OutOfWindowIcmps"] == 1


def test_dest_unreachable_when_established_is_soft_and_reported_on_timeout():
    env = Env(retries2=3)
    conn, h = env.establish()
    frames = data_frames(env, conn, 3000)
    env.rx(icmp4_frame(wicmp.build_icmpv4_dest_unreach(wicmp.ICMP_HOST_UNREACH, l3(frames[0]))))
    assert conn.state == "ESTABLISHED" and not h.closed
    assert conn.soft_err == errno.EHOSTUNREACH and env.counters["TCPIcmpSoftErrors"] == 1
    env.at(60.0)                                   # no ACK ever comes: retries2 RTOs
    (exc,) = h.closed
    assert isinstance(exc, OSError) and exc.errno == errno.EHOSTUNREACH   # not ETIMEDOUT


def test_soft_error_is_forgotten_after_progress():
    env = Env(retries2=3)
    conn, h = env.establish()
    frames = data_frames(env, conn, 3000)
    env.rx(icmp4_frame(wicmp.build_icmpv4_dest_unreach(wicmp.ICMP_HOST_UNREACH, l3(frames[0]))))
    _, ip, hdr, data = parse_frame(frames[0])
    ack = TcpHeader(hdr.dst_port, hdr.src_port, hdr.ack, hdr.seq + len(data), ACK, 65535,
                    TcpOptions(timestamp=(6, hdr.options.timestamp[0])))
    env.rx(tcp_frame(ack))
    env.at(60.0)
    (exc,) = h.closed
    assert isinstance(exc, TimeoutError)


def test_port_unreachable_when_established_is_soft():
    env = Env()
    conn, h = env.establish()
    frames = data_frames(env, conn, 3000)
    env.rx(icmp4_frame(wicmp.build_icmpv4_dest_unreach(wicmp.ICMP_PORT_UNREACH, l3(frames[0]))))
    assert conn.state == "ESTABLISHED" and conn.soft_err == errno.ECONNREFUSED


def test_icmp_errors_are_handled_in_shared_mode_too():
    env = Env(dedicated=False)
    conn, h = env.connect()
    (syn,) = env.take()
    env.rx(icmp4_frame(wicmp.build_icmpv4_dest_unreach(wicmp.ICMP_PORT_UNREACH, l3(syn))))
    assert isinstance(h.closed[0], ConnectionRefusedError)


def test_icmp_error_with_bad_checksum_is_counted():
    env = Env()
    conn, h = env.connect()
    (syn,) = env.take()
    msg = bytearray(wicmp.build_icmpv4_dest_unreach(wicmp.ICMP_PORT_UNREACH, l3(syn)))
    msg[2] ^= 0xFF
    env.rx(icmp4_frame(bytes(msg)))
    assert conn.state == "SYN_SENT"
    assert env.counters["IcmpInCsumErrors"] == 1


def test_time_exceeded_quoting_a_non_tcp_packet_is_ignored():
    env = Env()
    conn, h = env.connect()
    (syn,) = env.take()
    b = bytearray(l3(syn))
    b[9] = 17                                     # UDP
    env.rx(icmp4_frame(wicmp.build_icmpv4(11, 0, b"\0" * 4, bytes(b[:28]))))
    assert conn.state == "SYN_SENT"
    assert env.counters["IcmpInTimeExcds"] == 1


def test_icmp_error_kills_request_sock_of_listener():
    env = Env()
    listener = env.core.listen(None, 8080, 16)
    syn = TcpHeader(5555, 8080, 900, 0, SYN, 65535, TcpOptions(mss=1460))
    env.rx(tcp_frame(syn))
    (synack,) = env.take()
    assert listener.syn_queue_len == 1
    b = l3(synack)
    env.rx(icmp4_frame(wicmp.build_icmpv4_dest_unreach(wicmp.ICMP_HOST_UNREACH, l3(with_seq(synack, 1)))))
    assert listener.syn_queue_len == 1 and env.counters["OutOfWindowIcmps"] == 1
    env.rx(icmp4_frame(wicmp.build_icmpv4_dest_unreach(wicmp.ICMP_HOST_UNREACH, b)))
    assert listener.syn_queue_len == 0


# ------------------------------------------------------------------------------- IP details
def test_df_ttl_and_hop_limit_on_output():
    env = Env()
    conn, _ = env.establish()
    for f in data_frames(env, conn, 3000):
        _, ip, _, _ = parse_frame(f)
        assert ip.df and ip.ttl == 64
    conn6, _ = env.establish(v6=True)
    for f in data_frames(env, conn6, 3000):
        _, ip, _, _ = parse_frame(f)
        assert ip.hop_limit == 64


def test_ipv4_options_are_skipped_on_receive():
    env = Env()
    conn, h = env.establish()
    hdr = TcpHeader(80, conn.lport, conn.rcv_nxt, conn.snd_nxt, ACK, 65535,
                    TcpOptions(timestamp=(7, 0)))
    seg = build_tcp(hdr, b"hello", PEER_IP, MY_IP)
    opts = b"\x01\x01\x01\x00"                    # NOP NOP NOP EOL: IHL 6
    iph = bytearray(build_ipv4_header(PEER_IP, MY_IP, 6, len(seg) + 4))
    iph[0] = 0x46
    iph = iph + opts
    iph[10:12] = b"\0\0"
    iph[10:12] = struct.pack("!H", internet_checksum(bytes(iph)))
    env.rx(build_ethernet(MY_MAC, PEER_MAC, ETH_P_IP) + bytes(iph) + seg)
    assert bytes(h.data) == b"hello"


def frag_frames(ip_pkt, size=None):
    """scapy fragments of an IPv4 / IPv6 packet (our wire builders' bytes), as Ethernet frames."""
    from scapy.layers.inet import IP, fragment
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
    if ip_pkt[0] >> 4 == 4:
        frags, et = fragment(IP(ip_pkt), fragsize=size or 64), ETH_P_IP
    else:
        p = IPv6(ip_pkt)
        whole = IPv6(src=p.src, dst=p.dst, hlim=p.hlim) / IPv6ExtHdrFragment(nh=p.nh, id=77) / bytes(p.payload)
        frags, et = fragment6(whole, size or 1280), ETH_P_IPV6
    return [build_ethernet(MY_MAC, PEER_MAC, et) + bytes(f) for f in frags]


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("batch", [False, True])
def test_fragmented_segment_reaches_the_connection(v6, batch):
    """RFC 1122 3.3.2: a TCP segment in fragments (delivered out of order, one by one -- the lone
    frame path -- or in one batch with a whole segment of the same flow before it) reaches the
    connection once complete, in sequence with the rest of the stream."""
    env = Env()
    conn, h = env.establish(v6)
    lip, rip = (MY_IP6, PEER_IP6) if v6 else (MY_IP, PEER_IP)
    first = tcp_frame(TcpHeader(80, conn.lport, conn.rcv_nxt, conn.snd_nxt, ACK, 65535), b"head/",
                      src=rip, dst=lip)
    body = bytes(range(256)) * 12
    hdr = TcpHeader(80, conn.lport, conn.rcv_nxt + 5, conn.snd_nxt, ACK, 65535)
    frames = frag_frames(l3(tcp_frame(hdr, body, src=rip, dst=lip)), None if v6 else 1024)
    assert len(frames) >= 3
    frames = frames[1:] + frames[:1]                  # the first fragment last
    if batch:
        env.core.receive([(first, False)] + [(f, False) for f in frames], env.now)
    else:
        env.rx(first)
        for f in frames:
            env.rx(f)
    assert bytes(h.data) == b"head/" + body
    p = "Ip6" if v6 else "Ip"
    assert env.counters[p + "ReasmOKs"] == 1 and env.counters[p + "ReasmReqds"] == len(frames)
    assert env.counters[p + "ReasmFails"] == 0 and env.core.reasm.queues == {}


@pytest.mark.parametrize("v6", [False, True])
def test_reassembled_segment_checksum_is_verified_even_when_frames_are_trusted(v6):
    """A frame's trusted checksum (vnet DATA_VALID) says nothing about the datagram the fragments
    make: the TCP checksum of a reassembled segment is always verified."""
    env = Env()
    conn, h = env.establish(v6)
    lip, rip = (MY_IP6, PEER_IP6) if v6 else (MY_IP, PEER_IP)
    seg = bytearray(l3(tcp_frame(TcpHeader(80, conn.lport, conn.rcv_nxt, conn.snd_nxt, ACK, 65535),
                                 b"x" * 3000, src=rip, dst=lip)))
    seg[-1] ^= 0xFF                                   # corrupt the data, not the IP header
    env.core.receive([(f, True) for f in frag_frames(bytes(seg), None if v6 else 1024)], env.now)
    assert bytes(h.data) == b"" and env.counters["InCsumErrors"] == 1


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("size", [1200, 3000])
def test_fragmented_echo_request_is_answered(v6, size):
    """A fragmented echo request is reassembled and answered; a reply larger than the MTU goes
    out in fragments (as Linux's, so ``ping -s 3000`` works), reassembled here by scapy."""
    from scapy.layers.inet import IP, defragment
    from scapy.layers.inet6 import IPv6, defragment6
    env = Env()
    lip, rip = (MY_IP6, PEER_IP6) if v6 else (MY_IP, PEER_IP)
    data = bytes(range(200)) * (size // 200)
    if v6:
        req = wicmp.build_icmpv6(rip, lip, 128, 0, struct.pack("!HH", 9, 1), data)
        pkt = build_ipv6_header(rip, lip, 58, len(req)) + req
    else:
        req = wicmp.build_icmpv4(8, 0, struct.pack("!HH", 9, 1), data)
        pkt = build_ipv4_header(rip, lip, 1, len(req), df=False) + req
    frames = frag_frames(pkt, 600 if v6 else 512)
    assert len(frames) >= 2
    for f in frames:
        env.rx(f)
    replies = env.take()
    assert all(len(r) <= 14 + 1500 for r in replies)
    assert len(replies) == (1 if size < 1400 else 3)
    if len(replies) == 1:
        l3p = l3(replies[0])
    elif v6:
        l3p = bytes(defragment6([IPv6(l3(r)) for r in replies]))
    else:
        (whole,) = defragment([IP(l3(r)) for r in replies])
        l3p = bytes(whole)
    ip, body = (parse_ipv6 if v6 else parse_ipv4)(l3p)
    msg = wicmp.parse_icmpv6(body, lip, rip) if v6 else wicmp.parse_icmpv4(body)
    assert msg.type == (129 if v6 else 0) and bytes(msg.body) == data
