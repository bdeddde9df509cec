"""IPv4 options in the network core (RFC 9293 3.9.2.1 MUST-51/52/53, RFC 1122 3.2.1.8 / 4.2.3.8):
a host drops source-routed datagrams unless ``accept_source_route`` (``IpInSrcRouteDrops``); an
accepted SYN's route is reversed for the SYN-ACK and the whole connection (request sock ->
child), and for RSTs; the application's IP_OPTIONS replace it (pseudo-socket, listener too);
the MSS leaves room for the options; malformed options -> ``IpInHdrErrors`` and an ICMP parameter
problem; ICMP echo replies echo Record Route with our address added; the TCP checksum covers the
final destination; option-less (IHL 5) frames never reach the options code."""
from __future__ import annotations

import errno
import socket

import pytest
from scapy.layers.inet import IP, ICMP, IPOption_LSRR, IPOption_NOP, IPOption_RR, IPOption_SSRR, TCP

from aiotcpstack.aio.pseudosocket import PseudoSocket
from aiotcpstack.ip.core import NetworkCore, Route, _OptionsRoute
from aiotcpstack.mib import Counters
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.timer_wheel import TimerWheel
from aiotcpstack.wire import icmp as wicmp
from aiotcpstack.wire.ethernet import ETH_P_IP, build_ethernet, parse_ethernet
from aiotcpstack.wire.ipv4 import parse_ipv4
from aiotcpstack.wire.tcp import ACK, PSH, RST, SYN, TcpHeader, TcpOptions, build_tcp, parse_tcp, verify_tcp_checksum

from tcp_harness import FrameTx as Tx

MY_MAC = bytes.fromhex("02aa00000001")
PEER_MAC = bytes.fromhex("02bb00000002")
R2_MAC = bytes.fromhex("02cc00000003")
ME, PEER, R1, R2 = "198.18.0.1", "198.18.0.2", "198.18.0.9", "198.18.0.10"


def a(s: str) -> bytes:
    return socket.inet_aton(s)


def make_core(**cfg):
    tx = Tx()
    counters = Counters()
    core = NetworkCore(MY_MAC, 1500, [(a(ME), 24)], counters, TcpConfig(**cfg), TimerWheel(), tx, None,
                       dedicated=True, strict=True, secret=b"k" * 32)
    core.neigh.update(a(PEER), PEER_MAC, 0.0)
    core.neigh.update(a(R2), R2_MAC, 0.0)
    return core, tx, counters


def frame(hdr: TcpHeader, payload: bytes = b"", options=(), ip_dst: str = ME) -> tuple[bytes, bool]:
    """A TCP segment from PEER with IPv4 ``options`` (scapy builds the IP header); the TCP
    checksum over the final destination (ME)."""
    seg = build_tcp(hdr, payload, a(PEER), a(ME))
    ip = bytes(IP(src=PEER, dst=ip_dst, proto=6, flags="DF", options=list(options)) / seg)
    return build_ethernet(MY_MAC, PEER_MAC, ETH_P_IP) + ip, False


def sent(tx):
    """[(dst MAC, IP header, TCP header, payload)] of the TCP frames sent."""
    res = []
    for f in tx:
        dmac, _, et, p = parse_ethernet(f)
        if et != ETH_P_IP:
            continue
        ip, seg = parse_ipv4(p)
        if ip.proto != 6:
            continue
        hdr, data = parse_tcp(seg)
        res.append((dmac, ip, hdr, bytes(data), bytes(seg)))
    return res


LSRR_DONE = IPOption_LSRR(routers=[R1, R2], pointer=12)     # PEER -> R1 -> R2 -> us, traversed


def test_source_routed_syn_dropped_by_default() -> None:
    core, tx, c = make_core()
    core.listen(None, 8080, 10)
    core.receive([frame(TcpHeader(40000, 8080, 1000, 0, SYN, 65535, TcpOptions(mss=1460)), options=[LSRR_DONE])],
                 0.0)
    assert tx == [] and c["IpInSrcRouteDrops"] == 1 and c["InSegs"] == 0
    # a strict one too, and one whose next hop is not ours even when accepted (a host does not forward)
    core.receive([frame(TcpHeader(40000, 8080, 1000, 0, SYN, 65535), options=[IPOption_SSRR(routers=[R1], pointer=4)])],
                 0.1)
    assert c["IpInSrcRouteDrops"] == 2
    core.accept_source_route = True
    core.receive([frame(TcpHeader(40000, 8080, 1000, 0, SYN, 65535), options=[IPOption_LSRR(routers=[R1], pointer=4)])],
                 0.2)
    assert c["IpInSrcRouteDrops"] == 3 and tx == []


def test_accepted_source_route_reversed_for_synack_and_connection() -> None:
    """MUST-53: the SYN's completed route, reversed, on the SYN-ACK and on every segment of the
    child (Linux ireq_opt -> inet_opt); the frames go to the first hop R2; the TCP checksum is
    over the final destination PEER; the MSS leaves room for the 12 octets of options (an 11-octet LSRR, padded)."""
    core, tx, c = make_core(accept_source_route=True)
    core.listen(None, 8080, 10)
    core.receive([frame(TcpHeader(40000, 8080, 1000, 0, SYN, 65535, TcpOptions(mss=1460)), options=[LSRR_DONE])],
                 0.0)
    (dmac, ip, synack, _, seg), = sent(tx)
    assert synack.flags == SYN | ACK and dmac == R2_MAC and ip.dst == a(R2) and ip.ihl == 8
    opts = IP(bytes(tx[0][14:14 + 32])).options
    assert opts[0].option == 3 and opts[0].routers == [R1, PEER] and opts[0].pointer == 4
    assert verify_tcp_checksum(seg, a(ME), a(PEER))
    tx.clear()
    # the final ACK without options: the child keeps the SYN's route
    core.receive([frame(TcpHeader(40000, 8080, 1001, synack.seq + 1, ACK, 65535))], 0.1)
    (child,) = core.demux.conns.values()
    route = core.routes[child]
    assert type(route) is _OptionsRoute and route.ext_len == 12
    assert child.mss == 1460 - 12
    core.receive([frame(TcpHeader(40000, 8080, 1001, synack.seq + 1, ACK | PSH, 65535), b"x" * 10)], 0.2)
    (dmac, ip, ack, _, _), = sent(tx)
    assert dmac == R2_MAC and ip.dst == a(R2) and IP(bytes(tx[-1][14:14 + 32])).options[0].routers == [R1, PEER]
    # a large write is cut at the smaller MSS, and every frame fits the MTU with the options
    tx.clear()
    child.send(b"y" * 5000, 0.3)
    frames = sent(tx)
    assert frames and all(len(f[3]) <= child.mss for f in frames)      # (no TCP timestamps here)
    assert all(f[1].total_length <= 1500 for f in frames)


def test_application_options_override_the_received_route() -> None:
    """MUST-52: IP_OPTIONS given by the application (here on the listener's config) replace
    the received source route on the SYN-ACK and the child."""
    core, tx, c = make_core(accept_source_route=True)
    given = bytes(IPOption_RR(routers=["0.0.0.0"] * 2, pointer=4)) + bytes(IPOption_NOP())
    core.listen(None, 8080, 10, config=core.config.with_options(ip_options=given))
    core.receive([frame(TcpHeader(40000, 8080, 1000, 0, SYN, 65535, TcpOptions(mss=1460)), options=[LSRR_DONE])],
                 0.0)
    (dmac, ip, synack, _, _), = sent(tx)
    assert dmac == PEER_MAC and ip.dst == a(PEER)
    rr = IP(bytes(tx[0][14:14 + 32])).options[0]
    assert rr.option == 7 and rr.routers == [ME, "0.0.0.0"]


def test_rst_for_a_closed_port_answers_with_the_reversed_route() -> None:
    core, tx, c = make_core(accept_source_route=True)
    core.receive([frame(TcpHeader(40000, 9, 1000, 0, SYN, 65535), options=[LSRR_DONE])], 0.0)
    (dmac, ip, rst, _, seg), = sent(tx)
    assert rst.flags & RST and dmac == R2_MAC and ip.dst == a(R2)
    assert verify_tcp_checksum(seg, a(ME), a(PEER))
    # without options the RST goes straight back (the core forgets the previous segment's)
    tx.clear()
    core.receive([frame(TcpHeader(40001, 9, 1000, 0, SYN, 65535))], 0.1)
    (dmac, ip, rst, _, _), = sent(tx)
    assert dmac == PEER_MAC and ip.ihl == 5


def test_a_route_ending_at_us_is_accepted_and_not_reversed() -> None:
    """What a Linux sender's IP_OPTIONS LSRR [us] puts on the wire (pointer 4, our address):
    our address is consumed, the segment is ours; nothing was traversed, so the answer has no
    route (Linux does not advance the pointer for its own addresses)."""
    core, tx, c = make_core(accept_source_route=True)
    core.listen(None, 8080, 10)
    core.receive([frame(TcpHeader(40000, 8080, 1000, 0, SYN, 65535, TcpOptions(mss=1460)),
                        options=[IPOption_LSRR(routers=[ME], pointer=4)])], 0.0)
    (dmac, ip, synack, _, _), = sent(tx)
    assert synack.flags == SYN | ACK and ip.ihl == 5 and dmac == PEER_MAC


def test_record_route_on_a_syn_is_echoed_with_our_address() -> None:
    """No source route: nothing to accept or drop; Linux echoes the RR of the SYN with our
    address recorded on input and again on output."""
    core, tx, c = make_core()
    core.listen(None, 8080, 10)
    core.receive([frame(TcpHeader(40000, 8080, 1000, 0, SYN, 65535, TcpOptions(mss=1460)),
                        options=[IPOption_RR(routers=["0.0.0.0"] * 3, pointer=4)])], 0.0)
    (dmac, ip, synack, _, _), = sent(tx)
    rr = IP(bytes(tx[0][14:14 + ip.ihl * 4])).options[0]
    assert rr.routers == [ME, ME, "0.0.0.0"] and rr.pointer == 12


def test_malformed_options_parameter_problem() -> None:
    core, tx, c = make_core()
    core.listen(None, 8080, 10)
    f = bytearray(frame(TcpHeader(40000, 8080, 1000, 0, SYN, 65535),
                        options=[IPOption_RR(routers=["0.0.0.0"], pointer=4)])[0])
    f[14 + 22] = 2                         # RR pointer 2 (< 4): octet 22 of the IP header
    f[14 + 10:14 + 12] = _csum(bytes(f[14:14 + 28]))
    core.receive([(bytes(f), False)], 0.0)
    assert c["IpInHdrErrors"] == 1 and c["InSegs"] == 0 and c["IcmpOutParmProbs"] == 1
    (msg,) = [x for x in tx if parse_ethernet(x)[2] == ETH_P_IP]
    ip, icmp = parse_ipv4(parse_ethernet(msg)[3])
    m = wicmp.parse_icmpv4(icmp)
    assert ip.proto == 1 and m.type == 12 and m.code == 0 and m.rest[0] == 22
    assert bytes(m.body[:28]) == bytes(f[14:14 + 28])
    # rate limited per source: not again within a second
    core.receive([(bytes(f), False)], 0.5)
    assert c["IpInHdrErrors"] == 2 and c["IcmpOutParmProbs"] == 1


def _csum(hdr: bytes) -> bytes:
    from aiotcpstack.wire.checksum import internet_checksum
    h = bytearray(hdr)
    h[10:12] = b"\0\0"
    return internet_checksum(bytes(h)).to_bytes(2, "big")


def test_icmp_echo_reply_echoes_record_route() -> None:
    core, tx, c = make_core()
    req = bytes(IP(src=PEER, dst=ME, options=[IPOption_RR(routers=["0.0.0.0"] * 4, pointer=4)]) /
                ICMP(type=8, id=7, seq=1) / b"hi")
    core.receive([(build_ethernet(MY_MAC, PEER_MAC, ETH_P_IP) + req, False)], 0.0)
    (reply,) = tx
    p = IP(reply[14:])
    assert p.dst == PEER and p[ICMP].type == 0 and p.options[0].routers == [ME, ME, "0.0.0.0", "0.0.0.0"]
    parse_ipv4(reply[14:])                  # (checksum verified)


def test_option_less_frames_never_reach_the_options_code(monkeypatch) -> None:
    """The fast paths test IHL once (``mv[14] == 0x45``): an IHL-5 frame is never compiled; an
    IHL-6 frame (one NOP word) is, and is then processed as usual."""
    core, tx, c = make_core()
    core.listen(None, 8080, 10)
    calls = []
    orig = NetworkCore._rx_ip_options

    def spy(self, *args):
        calls.append(args[0].ihl)
        return orig(self, *args)

    monkeypatch.setattr(NetworkCore, "_rx_ip_options", spy)
    core.receive([frame(TcpHeader(40000, 8080, 1000, 0, SYN, 65535, TcpOptions(mss=1460)))], 0.0)
    assert calls == [] and len(sent(tx)) == 1
    tx.clear()
    core.receive([frame(TcpHeader(40001, 8080, 1000, 0, SYN, 65535, TcpOptions(mss=1460)),
                        options=[IPOption_NOP()] * 4)], 0.1)
    assert calls == [6] and len(sent(tx)) == 1 and sent(tx)[0][1].ihl == 5    # (NOPs are not echoed)


def test_route_set_ip_options_switches_class_and_next_hop() -> None:
    core, tx, c = make_core()
    r = Route(core, a(ME), a(PEER), core.neigh.entry(a(PEER)))
    r.local = False
    r.apply_config(TcpConfig(ip_options=bytes(IPOption_LSRR(routers=[R2], pointer=4))))
    assert type(r) is _OptionsRoute and r.neigh.ip == a(R2) and r.ext_len == 8 and r.limit() == 1460 - 8
    assert not r.output_ts(1, 2, 3, 4, ACK, 5, 6, 7, b"") and not r.output_syn(1, 2, 3, 4, 5, 6, 7)
    r.output(TcpHeader(1, 2, 3, 4, ACK, 5))
    (dmac, ip, hdr, _, seg), = sent(tx)
    assert dmac == R2_MAC and ip.dst == a(R2) and IP(tx[0][14:14 + 28]).options[0].routers == [PEER]
    assert verify_tcp_checksum(seg, a(ME), a(PEER))
    r.apply_config(TcpConfig())                  # removed: straight to the peer again
    assert type(r) is Route and r.neigh.ip == a(PEER) and r.ext_len == 0


def test_pseudo_socket_ip_options() -> None:
    cfg = [TcpConfig()]
    ps = PseudoSocket(socket.AF_INET, ("198.18.0.1", 1), get_config=lambda: cfg[0],
                      set_config=lambda c: cfg.__setitem__(0, c))
    given = bytes(IPOption_LSRR(routers=[R1, R2], pointer=4))            # 11 octets
    ps.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, given)
    assert cfg[0].ip_options == given + b"\0"
    assert ps.getsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, 40) == given + b"\0"
    for bad in (bytes(IPOption_LSRR(routers=[R1], pointer=8)), b"\x01" * 41, bytes((7, 1))):
        with pytest.raises(OSError) as e:
            ps.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, bad)
        assert e.value.errno == errno.EINVAL
    ps.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, b"")
    assert cfg[0].ip_options == b"" and ps.getsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, 40) == b""
    with pytest.raises(ValueError):
        TcpConfig(ip_options=b"\x83\x03\x05")


def test_a_later_source_route_overrides_the_received_one() -> None:
    """SHLD-24: the connection uses the SYN's reversed route; a different completed route on a
    later accepted segment replaces it (not on a segment that is not accepted)."""
    core, tx, c = make_core(accept_source_route=True)
    core.neigh.update(a(R1), PEER_MAC, 0.0)
    core.listen(None, 8080, 10)
    core.receive([frame(TcpHeader(40000, 8080, 1000, 0, SYN, 65535, TcpOptions(mss=1460)), options=[LSRR_DONE])],
                 0.0)
    (_, _, synack, _, _), = sent(tx)
    core.receive([frame(TcpHeader(40000, 8080, 1001, synack.seq + 1, ACK, 65535))], 0.1)
    (child,) = core.demux.conns.values()
    route = core.routes[child]
    assert route.ipopt.faddr == a(R2)
    other = IPOption_LSRR(routers=[R2, R1], pointer=12)          # now through R2 then R1
    # out of window: dropped (an ACK is sent back), the route stays
    core.receive([frame(TcpHeader(40000, 8080, 999_999, synack.seq + 1, ACK | PSH, 65535), b"z", options=[other])],
                 0.2)
    assert route.ipopt.faddr == a(R2)
    core.receive([frame(TcpHeader(40000, 8080, 1001, synack.seq + 1, ACK | PSH, 65535), b"z", options=[other])],
                 0.3)
    assert route.ipopt.faddr == a(R1) and child.rcv_nxt == 1002
    # the application's IP_OPTIONS are never replaced (MUST-52)
    route.apply_config(child.config.with_options(ip_options=bytes(IPOption_RR(routers=["0.0.0.0"], pointer=4))))
    core.receive([frame(TcpHeader(40000, 8080, 1002, synack.seq + 1, ACK | PSH, 65535), b"w", options=[LSRR_DONE])],
                 0.4)
    assert route.ipopt.srr < 0 and route.ipopt.rr == 0 and child.rcv_nxt == 1003
