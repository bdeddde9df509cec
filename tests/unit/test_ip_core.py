"""NetworkCore at frame level: ARP, ICMP echo, drop accounting, demux, RST for no socket, output
(software segmentation and GSO), neighbour queueing, ephemeral ports, the simple listener."""
from __future__ import annotations

import struct

import pytest

from aiotcpstack.ip.core import NetworkCore
from aiotcpstack.ip.demux import ANY
from aiotcpstack.mib import Counters
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.timer_wheel import TimerWheel
from aiotcpstack.wire import arp as warp
from aiotcpstack.wire import icmp as wicmp
from aiotcpstack.wire.ethernet import BROADCAST, ETH_P_ARP, ETH_P_IP, build_ethernet, parse_ethernet
from aiotcpstack.wire.ipv4 import build_ipv4_header, parse_ipv4
from aiotcpstack.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpHeader, TcpOptions, build_tcp, parse_tcp, \
    verify_tcp_checksum

MY_MAC = bytes.fromhex("02aa00000001")
PEER_MAC = bytes.fromhex("02bb00000002")
MY_IP = bytes([198, 18, 0, 1])
PEER_IP = bytes([198, 18, 0, 2])
GW_IP = bytes([198, 18, 0, 254])
FAR_IP = bytes([198, 19, 5, 5])


class FakeIsn:
    def isn(self, *a):
        return 1000


class FakeConn:
    instances: list["FakeConn"] = []

    def __init__(self, *, config, wheel, counters, local, remote, iss, output, handler=None, release=None,
                 ts_offset=0, now=0.0):
        self.config = config
        self.local = local
        self.remote = remote
        self.iss = iss
        self.output = output
        self.handler = handler
        self.release = release
        self.state = "CLOSED"
        self.segs = []
        self.batches = 0
        self.send_buffer_size = 0
        FakeConn.instances.append(self)

    def connect(self, now):
        self.state = "SYN_SENT"
        self.output(TcpHeader(self.local[1], self.remote[1], self.iss, 0, SYN, 65535,
                              TcpOptions(mss=self.config.mss)), b"")

    def accept_syn(self, syn, now):
        self.state = "SYN_RECEIVED"
        self.output(TcpHeader(self.local[1], self.remote[1], self.iss, syn.seq + 1, SYN | ACK, 65535), b"")

    def on_segment(self, hdr, payload, now):
        self.segs.append((hdr, bytes(payload)))
        if self.state == "SYN_RECEIVED" and hdr.flags & ACK:
            self.state = "ESTABLISHED"
            self.handler.tcp_established()

    def end_batch(self, now):
        self.batches += 1

    def abort(self, now):
        self.state = "CLOSED"
        self.release(self)


class Tx(list):
    def __call__(self, frame, gso_type=0, gso_size=0, csum_start=0, csum_offset=0):
        self.append((bytes(frame), gso_type, gso_size, csum_start, csum_offset))


def make_core(dedicated=True, vnet=False, mtu=1500, **kw):
    tx = Tx()
    counters = Counters()
    core = NetworkCore(MY_MAC, mtu, [(MY_IP, 24)], counters, TcpConfig(), TimerWheel(), tx, None,
                       vnet=vnet, dedicated=dedicated, routes=[(b"\0\0\0\0", 0, GW_IP)],
                       connection_factory=FakeConn, strict=True, **kw)
    core._isn = FakeIsn()
    return core, tx, counters


def tcp_frame(hdr, payload=b"", src=PEER_IP, dst=MY_IP, bad_csum=False, frag=False):
    seg = bytearray(build_tcp(hdr, payload, src, dst))
    if bad_csum:
        seg[16] ^= 0xFF
    ip = bytearray(build_ipv4_header(src, dst, 6, len(seg)))
    if frag:
        ip[6] |= 0x20     # MF
        ip[10:12] = b"\0\0"
        from aiotcpstack.wire.checksum import internet_checksum
        ip[10:12] = struct.pack("!H", internet_checksum(bytes(ip)))
    return build_ethernet(MY_MAC, PEER_MAC, ETH_P_IP) + bytes(ip) + bytes(seg)


def parse_out(frame):
    dst, src, et, payload = parse_ethernet(frame)
    assert et == ETH_P_IP
    ip, seg = parse_ipv4(payload)
    assert verify_tcp_checksum(seg, ip.src, ip.dst)
    hdr, data = parse_tcp(seg)
    return dst, ip, hdr, bytes(data)


def learn_peer(core):
    core.neigh.update(PEER_IP, PEER_MAC, 0.0)


# --------------------------------------------------------------------------------------- ARP
def test_arp_request_for_us_is_answered_and_sender_learned():
    core, tx, c = make_core()
    req = warp.build_arp(warp.arp_request(PEER_MAC, PEER_IP, MY_IP))
    core.receive([(build_ethernet(BROADCAST, PEER_MAC, ETH_P_ARP) + req, False)], 1.0)
    assert len(tx) == 1
    dst, src, et, payload = parse_ethernet(tx[0][0])
    assert (dst, src, et) == (PEER_MAC, MY_MAC, ETH_P_ARP)
    rep = warp.parse_arp(payload)
    assert rep.op == warp.ARP_REPLY and rep.sha == MY_MAC and rep.spa == MY_IP and rep.tpa == PEER_IP
    assert core.neigh.lookup(PEER_IP) == PEER_MAC
    assert c["ArpInRequests"] == 1 and c["ArpOutReplies"] == 1


def test_arp_for_other_address_ignored_and_shared_mode_never_answers():
    core, tx, _ = make_core()
    req = warp.build_arp(warp.arp_request(PEER_MAC, PEER_IP, bytes([198, 18, 0, 9])))
    core.receive([(build_ethernet(BROADCAST, PEER_MAC, ETH_P_ARP) + req, False)], 1.0)
    assert tx == [] and core.neigh.lookup(PEER_IP) is None
    core, tx, _ = make_core(dedicated=False)
    req = warp.build_arp(warp.arp_request(PEER_MAC, PEER_IP, MY_IP))
    core.receive([(build_ethernet(BROADCAST, PEER_MAC, ETH_P_ARP) + req, False)], 1.0)
    assert tx == []
    assert core.neigh.lookup(PEER_IP) == PEER_MAC      # but it snoops the mapping


def test_icmp_echo_answered_in_dedicated_mode_only():
    req = wicmp.build_icmpv4_echo(7, 3, b"hello")
    frame = build_ethernet(MY_MAC, PEER_MAC, ETH_P_IP) + build_ipv4_header(PEER_IP, MY_IP, 1, len(req)) + req
    core, tx, c = make_core()
    core.receive([(frame, False)], 0.0)
    assert len(tx) == 1
    dst, _, _, payload = parse_ethernet(tx[0][0])
    ip, body = parse_ipv4(payload)
    assert dst == PEER_MAC and ip.src == MY_IP and ip.dst == PEER_IP
    msg = wicmp.parse_icmpv4(body)
    assert msg.type == 0 and wicmp.echo_fields(msg) == (7, 3) and bytes(msg.body) == b"hello"
    assert c["IcmpInEchos"] == 1 and c["IcmpOutEchoReps"] == 1
    core, tx, _ = make_core(dedicated=False)
    core.receive([(frame, False)], 0.0)
    assert tx == []


# --------------------------------------------------------------------------------------- drops
def test_malformed_and_fragments_are_counted():
    core, tx, c = make_core()
    syn = TcpHeader(40000, 80, 5, 0, SYN, 1000)
    core.receive([
        (b"\x01\x02", False),                                                     # runt
        (build_ethernet(MY_MAC, PEER_MAC, ETH_P_IP) + b"\x45\x00\x00", False),    # truncated IP
        (tcp_frame(syn, bad_csum=True), False),                                   # bad TCP checksum
        (tcp_frame(syn, frag=True), False),                                       # fragment
    ], 0.0)
    assert c["LinkInDrops"] == 1
    assert c["IpInHdrErrors"] == 1
    assert c["InCsumErrors"] == 1 and c["InErrs"] == 1
    assert c["IpReasmReqds"] == 1 and c["IpReasmFails"] == 0     # queued, waiting for the rest
    assert c["InSegs"] == 0 and tx == []


def test_trusted_checksum_is_not_verified():
    core, tx, c = make_core()
    learn_peer(core)
    core.receive([(tcp_frame(TcpHeader(40000, 80, 5, 0, SYN, 1000), bad_csum=True), True)], 0.0)
    assert c["InCsumErrors"] == 0 and c["InSegs"] == 1      # answered with a RST


# --------------------------------------------------------------------------------------- RST
def test_rst_for_syn_to_closed_port():
    core, tx, c = make_core()
    learn_peer(core)
    core.receive([(tcp_frame(TcpHeader(40000, 80, 5, 0, SYN, 1000), b"abc"), False)], 0.0)
    dst, ip, hdr, data = parse_out(tx[0][0])
    assert dst == PEER_MAC and ip.dst == PEER_IP and ip.df and ip.ttl == 64
    assert hdr.flags == RST | ACK and hdr.seq == 0 and hdr.ack == 5 + 3 + 1
    assert (hdr.src_port, hdr.dst_port) == (80, 40000)
    assert c["OutRsts"] == 1


def test_rst_for_ack_to_closed_port_and_never_for_rst():
    core, tx, _ = make_core()
    learn_peer(core)
    core.receive([(tcp_frame(TcpHeader(40000, 80, 5, 777, ACK, 1000), b"x"), False),
                  (tcp_frame(TcpHeader(40000, 80, 5, 777, RST, 1000)), False)], 0.0)
    assert len(tx) == 1
    _, _, hdr, _ = parse_out(tx[0][0])
    assert hdr.flags == RST and hdr.seq == 777


def test_shared_mode_ignores_ports_it_does_not_own():
    core, tx, c = make_core(dedicated=False)
    learn_peer(core)
    core.receive([(tcp_frame(TcpHeader(40000, 22, 5, 0, SYN, 1000)), False)], 0.0)
    assert tx == [] and c["OutRsts"] == 0


# --------------------------------------------------------------------------------------- demux
def test_demux_and_one_end_batch_per_connection_per_batch():
    core, tx, c = make_core()
    learn_peer(core)
    FakeConn.instances.clear()
    conn = core.connect(PEER_IP, 80, None, 0.0)
    lport = conn.local[1]
    assert conn.local[0] == MY_IP and 32768 <= lport <= 60999
    _, _, syn, _ = parse_out(tx[-1][0])
    assert syn.flags == SYN and syn.options.mss == 1460
    segs = [(tcp_frame(TcpHeader(80, lport, 100 + i, 1001, ACK, 1000), b"d%d" % i), False) for i in range(5)]
    other = (tcp_frame(TcpHeader(81, lport, 1, 1, ACK, 1000)), False)      # no such connection
    core.receive(segs + [other], 1.0)
    assert [p for _, p in conn.segs] == [b"d%d" % i for i in range(5)]
    assert conn.batches == 1
    assert c["InSegs"] == 6
    # release drops it from the table
    conn.release(conn)
    assert core.demux.conns == {}
    assert not core.demux.port_in_use(lport)


def test_ephemeral_ports_avoid_used_tuples_and_ask_reservation():
    reserved = []
    refused = set()

    def reserve(port):
        if len(refused) < 3 and port not in reserved:
            refused.add(port)
            return False
        reserved.append(port)
        return True

    core, tx, _ = make_core(reserve_port=reserve, release_port=lambda p: reserved.remove(p))
    learn_peer(core)
    conns = [core.connect(PEER_IP, 80, None, 0.0) for _ in range(50)]
    ports = [c.local[1] for c in conns]
    assert len(set(ports)) == 50
    assert not refused & set(ports)
    assert sorted(reserved) == sorted(ports)
    for c in conns:
        c.release(c)
    assert reserved == []


def test_explicit_local_port_collision_is_eaddrinuse():
    core, tx, _ = make_core()
    learn_peer(core)
    core.connect(PEER_IP, 80, None, 0.0, lport=40000)
    with pytest.raises(OSError) as ei:
        core.connect(PEER_IP, 80, None, 0.0, lport=40000)
    assert ei.value.errno == 98


# --------------------------------------------------------------------------------------- output
def test_software_segmentation_adjusts_seq_and_flags():
    core, tx, c = make_core()
    learn_peer(core)
    conn = core.connect(PEER_IP, 80, None, 0.0)
    tx.clear()
    data = bytes(range(256)) * 20       # 5120 bytes -> 1460 * 3 + 740
    conn.output(TcpHeader(conn.local[1], 80, 5000, 9, ACK | PSH | FIN, 500), data)
    out = [parse_out(f[0]) for f in tx]
    assert [len(d) for *_, d in out] == [1460, 1460, 1460, 740]
    assert b"".join(d for *_, d in out) == data
    assert [h.seq for _, _, h, _ in out] == [5000, 6460, 7920, 9380]
    assert [h.flags for _, _, h, _ in out] == [ACK, ACK, ACK, ACK | PSH | FIN]
    idents = [ip.ident for _, ip, _, _ in out]
    assert len(set(idents)) == 4


def test_segmentation_respects_peer_mss_and_options():
    core, tx, _ = make_core()
    learn_peer(core)
    conn = core.connect(PEER_IP, 80, None, 0.0)
    lport = conn.local[1]
    core.receive([(tcp_frame(TcpHeader(80, lport, 1, 1001, SYN | ACK, 1000, TcpOptions(mss=1000))), False)], 0.1)
    tx.clear()
    conn.output(TcpHeader(lport, 80, 5000, 9, ACK, 500, TcpOptions(timestamp=(1, 2))), b"x" * 3000)
    sizes = [len(parse_out(f[0])[3]) for f in tx]
    assert sizes == [988, 988, 988, 36]


def test_gso_super_frame_on_vnet_link():
    core, tx, c = make_core(vnet=True)
    learn_peer(core)
    conn = core.connect(PEER_IP, 80, None, 0.0)
    tx.clear()
    data = b"z" * 10000
    conn.output(TcpHeader(conn.local[1], 80, 1, 1, ACK, 500), data)
    assert len(tx) == 1
    frame, gso_type, gso_size, cs, co = tx[0]
    assert gso_type == 1 and gso_size == 1460 and cs == 34 and co == 16
    from aiotcpstack.link.sim import segment_tcp
    segs = segment_tcp(frame, gso_type, gso_size, cs, co)
    assert b"".join(parse_out(s)[3] for s in segs) == data


# --------------------------------------------------------------------------------------- neighbours
def test_packets_wait_for_arp_and_are_flushed_on_reply():
    core, tx, c = make_core()
    conn = core.connect(PEER_IP, 80, None, 0.0)
    assert len(tx) == 1
    dst, _, et, payload = parse_ethernet(tx[0][0])
    assert dst == BROADCAST and et == ETH_P_ARP
    req = warp.parse_arp(payload)
    assert req.op == warp.ARP_REQUEST and req.tpa == PEER_IP and req.spa == MY_IP
    rep = warp.build_arp(warp.ArpPacket(warp.ARP_REPLY, PEER_MAC, PEER_IP, MY_MAC, MY_IP))
    core.receive([(build_ethernet(MY_MAC, PEER_MAC, ETH_P_ARP) + rep, False)], 0.01)
    dst, ip, hdr, _ = parse_out(tx[-1][0])
    assert dst == PEER_MAC and hdr.flags == SYN


def test_arp_retries_then_gives_up():
    core, tx, c = make_core()
    core.connect(PEER_IP, 80, None, 0.0)
    for t in (1.0, 2.0, 3.0, 4.0, 5.0):
        core.wheel.advance(t)
    assert c["ArpOutRequests"] == 3
    assert c["NeighUnresolvedDiscards"] == 1


def test_gateway_next_hop_is_resolved_not_destination():
    core, tx, _ = make_core()
    core.connect(FAR_IP, 80, None, 0.0)
    req = warp.parse_arp(parse_ethernet(tx[0][0])[3])
    assert req.tpa == GW_IP


def test_shared_mode_uses_neighbour_lookup_callback():
    asked = []
    core, tx, _ = make_core(dedicated=False, neighbour_lookup=lambda ip, done: asked.append((ip, done)))
    core.connect(PEER_IP, 80, None, 0.0)
    assert tx == [] and asked and asked[0][0] == PEER_IP
    asked[0][1](PEER_MAC)
    dst, _, hdr, _ = parse_out(tx[-1][0])
    assert dst == PEER_MAC and hdr.flags == SYN


# --------------------------------------------------------------------------------------- listener
class Handler:
    def __init__(self):
        self.events = []

    def tcp_established(self):
        self.events.append("est")

    def tcp_data(self, d):
        self.events.append(d)

    def tcp_eof(self):
        pass

    def tcp_send_space(self):
        pass

    def tcp_closed(self, exc):
        self.events.append(("closed", exc))


def test_listener_creates_connection_and_hands_it_over_when_established():
    core, tx, c = make_core()
    learn_peer(core)
    accepted = []
    h = Handler()

    def on_accept(conn):
        accepted.append(conn)
        return h

    listener = core.listen(None, 8080, 10, on_accept)
    assert (ANY, 8080) in core.demux.listeners
    core.receive([(tcp_frame(TcpHeader(40000, 8080, 77, 0, SYN, 1000, TcpOptions(mss=1200))), False)], 0.0)
    _, _, synack, _ = parse_out(tx[-1][0])
    assert synack.flags == SYN | ACK and synack.ack == 78
    # until the third ACK the peer is a request sock in the SYN queue, not a connection
    assert (MY_IP, 8080, PEER_IP, 40000) not in core.demux.conns and listener.syn_queue_len == 1
    core.receive([(tcp_frame(TcpHeader(40000, 8080, 78, synack.seq + 1, ACK, 1000)), False)], 0.1)
    conn = core.demux.conns[(MY_IP, 8080, PEER_IP, 40000)]
    assert core.routes[conn].peer_mss == 1200
    assert accepted == [conn] and conn.handler is h and h.events == ["est"]
    assert listener.syn_queue_len == 0
    with pytest.raises(OSError):
        core.listen(MY_IP, 8080, 10, on_accept)
    listener.close(1.0)
    assert (ANY, 8080) not in core.demux.listeners
    assert core.demux.port_in_use(8080)        # the accepted connection still uses it


def test_listener_backlog_limits_half_open():
    """SYN queue bounded by min(backlog, max_syn_backlog); with syncookies=0 the overflow is
    dropped (TCPReqQFullDrop, ListenDrops) and nothing else is created."""
    core, tx, c = make_core()
    learn_peer(core)
    listener = core.listen(MY_IP, 8080, 2, lambda conn: Handler(),
                           config=core.config.with_options(syncookies=0))
    frames = [(tcp_frame(TcpHeader(40000 + i, 8080, 1, 0, SYN, 1000)), False) for i in range(4)]
    core.receive(frames, 0.0)
    assert listener.syn_queue_len == 2 and len(core.demux.conns) == 0
    assert c["TCPReqQFullDrop"] == 2 and c["ListenDrops"] == 2


def test_ephemeral_ports_are_shared_across_4tuples_when_exhausted():
    core, tx, _ = make_core()
    core.config = core.config.with_options(ephemeral_ports=(40000, 40003))
    learn_peer(core)
    first = [core.connect(PEER_IP, 80, None, 0.0) for _ in range(4)]
    assert sorted(c.local[1] for c in first) == [40000, 40001, 40002, 40003]
    other = [core.connect(PEER_IP, 81, None, 0.0) for _ in range(4)]     # another remote port
    assert sorted(c.local[1] for c in other) == [40000, 40001, 40002, 40003]
    with pytest.raises(OSError) as ei:
        core.connect(PEER_IP, 80, None, 0.0)
    assert ei.value.errno == 99
    for c in first + other:
        c.release(c)
    assert core.demux.port_users == {}


# --------------------------------------------------------------------------------------- connect side
def test_connect_refused_by_max_connections_gives_the_port_back():
    """(robustness issue) ENOBUFS at the connection cap: the ephemeral port allocate_port took
    (and reserved in the kernel, in shared mode) is given back, not leaked."""
    reserved: list[int] = []
    core = NetworkCore(MY_MAC, 1500, [(MY_IP, 24)], Counters(), TcpConfig(max_connections=2), TimerWheel(),
                       Tx(), None, dedicated=True, connection_factory=FakeConn, strict=True,
                       reserve_port=lambda p: reserved.append(p) or True, release_port=reserved.remove)
    core._isn = FakeIsn()
    learn_peer(core)
    conns = [core.connect(PEER_IP, 80, None, 0.0) for _ in range(2)]
    users = dict(core.demux.port_users)
    for _ in range(3):
        with pytest.raises(OSError) as ei:
            core.connect(PEER_IP, 80, None, 0.0)
        assert ei.value.errno == 105          # ENOBUFS
    assert dict(core.demux.port_users) == users == {c.local[1]: 1 for c in conns}
    assert sorted(reserved) == sorted(users)
    for c in conns:
        c.release(c)
    assert core.demux.port_users == {} and reserved == []


def test_ts_offset_is_the_generators_per_address_pair():
    """The TSval offset (Linux secure_tcp_ts_off): cached per address pair, always the
    generator's answer -- and a new generator (secret) is asked again."""
    from aiotcpstack.tcp.isn import IsnGenerator
    core, _, _ = make_core()
    core._isn = gen = IsnGenerator(b"k1" * 16)
    pairs = [(MY_IP, bytes([198, 18, 0, i])) for i in range(2, 40)]
    for _ in range(2):
        for n, (lip, rip) in enumerate(pairs):
            assert core._ts_offset(lip, 40000 + n, rip, 80 + n) == gen.ts_offset(lip, rip)
    core._isn = gen2 = IsnGenerator(b"k2" * 16)
    assert [core._ts_offset(lip, 1, rip, 2) for lip, rip in pairs] == [gen2.ts_offset(lip, rip) for lip, rip in pairs]
    assert gen2.ts_offset(*pairs[0]) != gen.ts_offset(*pairs[0])


def test_route_header_sums_cached_per_address_pair():
    """Route's output_ts constants are computed once per address pair (v4 and v6): a cached
    answer equals a fresh computation (tests/unit/test_ip_output_ts.py checks the bytes)."""
    from aiotcpstack.ip import core as core_mod
    core, _, _ = make_core()
    e = core.neigh.entry(PEER_IP)
    v6a, v6b = bytes.fromhex("20010db8" + "00" * 11 + "01"), bytes.fromhex("20010db8" + "00" * 11 + "02")
    for lip, rip in ((MY_IP, PEER_IP), (v6a, v6b)):
        core_mod._ROUTE_SUMS.clear()
        fresh = core_mod.Route(core, lip, rip, e)
        assert (lip, rip) in core_mod._ROUTE_SUMS
        cached = core_mod.Route(core, bytes(lip), bytes(rip), e)
        assert (fresh._psb, fresh._ipb) == (cached._psb, cached._ipb)
