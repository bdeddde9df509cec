"""Configurable TTL / hop limit and DiffServ field (RFC 9293 3.9.1.1 MUST-49, 3.9.1.9 MUST-48,
SHLD-21, SHLD-22; RFC 1122 4.2.2.19; RFC 2474): the stack defaults (``ip_default_ttl``,
``ipv6_hop_limit``) and their validation; the per-route header templates (``Route.set_ip``) give
byte for byte the frames of the general path for random TTL / TOS values, v4 and v6, and carry the
values; the pseudo-socket's IP_TTL / IP_TOS / IPV6_UNICAST_HOPS / IPV6_TCLASS with Linux's
semantics (the expected values were read from the kernel's own TCP sockets); a listener's values
reach its SYN-ACK and the connections it accepts; a connection's change applies to its next
segment, a retransmission included; TIME_WAIT ACKs keep the TOS; ICMP echo replies use the
default TTL / hop limit."""
from __future__ import annotations

import asyncio
import errno
import random
import socket

import pytest

from aiotcpstack import Stack
from aiotcpstack.aio.pseudosocket import PseudoSocket
from aiotcpstack.ip.core import NetworkCore, Route
from aiotcpstack.mib import Counters
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.timer_wheel import TimerWheel
from aiotcpstack.wire import icmp as wicmp
from aiotcpstack.wire.ethernet import ETH_P_IP, ETH_P_IPV6, build_ethernet, parse_ethernet
from aiotcpstack.wire.ipv4 import build_ipv4_header, parse_ipv4
from aiotcpstack.wire.ipv6 import parse_ipv6
from aiotcpstack.wire.tcp import ACK, TcpHeader, TcpOptions

from test_ip_aio_loopback import A, B, pair  # noqa: E402
from test_ip_output_ts import PEER_MAC, make  # noqa: E402


def ip_of(frame: bytes):
    """(ttl / hop limit, tos / traffic class) of an Ethernet frame's IP header."""
    _, _, et, payload = parse_ethernet(frame)
    if et == ETH_P_IP:
        ip, _ = parse_ipv4(payload)        # (the header checksum verified)
        return ip.ttl, ip.tos
    assert et == ETH_P_IPV6
    ip, _ = parse_ipv6(payload)
    return ip.hop_limit, ip.traffic_class


# ------------------------------------------------------------------------------ the defaults
def test_defaults_and_validation() -> None:
    cfg = TcpConfig()
    assert (cfg.ip_default_ttl, cfg.ipv6_hop_limit, cfg.ip_ttl, cfg.ip_tos, cfg.ipv6_unicast_hops,
            cfg.ipv6_tclass) == (64, 64, -1, 0, -1, 0)
    assert cfg.ip_fields(False, 64, 64) == (64, 0) and cfg.ip_fields(True, 64, 99) == (99, 0)
    TcpConfig(ip_default_ttl=1, ipv6_hop_limit=255, ip_ttl=255, ipv6_unicast_hops=0, ip_tos=0xB8,
              ipv6_tclass=0xFC)
    for bad in ({"ip_default_ttl": 0}, {"ip_default_ttl": 256}, {"ipv6_hop_limit": 0},
                {"ipv6_hop_limit": "64"}, {"ip_ttl": 0}, {"ip_ttl": -2}, {"ipv6_unicast_hops": 256},
                {"ip_tos": 0x101}, {"ip_tos": 0xB9}, {"ipv6_tclass": 2}, {"ipv6_tclass": -1}):
        name = next(iter(bad))
        with pytest.raises(ValueError, match=name):
            TcpConfig(**bad)
        with pytest.raises(ValueError, match=name):
            cfg.with_options(**bad)
    with pytest.raises(ValueError, match="ip_default_ttl must be an int in 1..255"):
        Stack("la", address=f"{A}/24", ip_default_ttl=300)


def test_route_takes_the_stack_default_and_the_connection_config() -> None:
    core = NetworkCore(PEER_MAC, 1500, [(bytes([198, 18, 0, 1]), 24), (bytes.fromhex("20010002" + "00" * 11 + "01"), 64)],
                       Counters(), TcpConfig(ip_default_ttl=100, ipv6_hop_limit=7), TimerWheel(), None, None)
    r4 = Route(core, bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2]), core.neigh.entry(bytes([198, 18, 0, 2])))
    r6 = Route(core, bytes.fromhex("20010002" + "00" * 11 + "01"), bytes.fromhex("20010002" + "00" * 11 + "02"),
               core.neigh.entry(bytes.fromhex("20010002" + "00" * 11 + "02")))
    assert (r4.ttl, r4.tos, r6.ttl, r6.tos) == (100, 0, 7, 0)
    cfg = TcpConfig(ip_ttl=5, ip_tos=0x28, ipv6_unicast_hops=0, ipv6_tclass=0xB8)
    r4.apply_config(cfg)
    r6.apply_config(cfg)
    assert (r4.ttl, r4.tos, r6.ttl, r6.tos) == (5, 0x28, 0, 0xB8)
    r4.apply_config(TcpConfig())                 # -1: back to the stack's default
    assert (r4.ttl, r4.tos) == (100, 0)
    with pytest.raises(ValueError):
        r4.set_ip(256, 0)


def test_icmp_echo_reply_uses_the_default_ttl() -> None:
    my, peer = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
    sent: list = []
    core = NetworkCore(PEER_MAC, 1500, [(my, 24)], Counters(), TcpConfig(ip_default_ttl=33), TimerWheel(),
                       lambda frame, *a: sent.append(bytes(frame)), None, dedicated=True, strict=True)
    req = wicmp.build_icmpv4_echo(7, 3, b"hello")
    core.receive([(build_ethernet(PEER_MAC, bytes(6), ETH_P_IP) + build_ipv4_header(peer, my, 1, len(req)) + req,
                   False)], 0.0)
    assert len(sent) == 1 and ip_of(sent[0]) == (33, 0)


# --------------------------------------------------------------- templates = general path
@pytest.mark.parametrize("v6", [False, True])
def test_fast_paths_same_bytes_as_the_general_path_for_any_ttl_tos(v6: bool) -> None:
    """output_ts, output_syn and output_ts_burst against _tcp_output -> _emit, after set_ip with
    random values (the per-route constant sums of the IPv4 checksum change with them)."""
    rng = random.Random(11 + v6)
    for _ in range(300):
        core, route, sent = make(v6, rng)
        ttl, tos = rng.randrange(0 if v6 else 1, 256), rng.randrange(0, 64) << 2
        route.set_ip(ttl, tos)
        sport, dport = rng.randrange(1, 65536), rng.randrange(1, 65536)
        seq, ack = rng.getrandbits(32), rng.getrandbits(32)
        win = rng.randrange(0, 65536)
        tsval, tsecr = rng.getrandbits(32), rng.getrandbits(32)
        n = rng.choice([0, 1, 100, route.conn.mss, 5000])
        payload = rng.randbytes(n)
        opts = TcpOptions(None, None, False, (), (tsval, tsecr))
        core._ident = ident0 = rng.randrange(0, 65536)
        assert route.output_ts(sport, dport, seq, ack, 0x18, win, tsval, tsecr, payload)
        fast = sent.pop()
        assert ip_of(fast[0] + fast[1] + fast[2]) == (ttl, tos)
        core._ident = ident0
        route.output(TcpHeader(sport, dport, seq, ack, 0x18, win, opts), payload)
        assert sent.pop() == fast
        # the SYN
        core._ident = ident0
        wscale, mss = rng.randrange(0, 15), rng.randrange(536, 9000)
        assert route.output_syn(sport, dport, seq, win, mss, wscale, tsval)
        fast = sent.pop()
        assert ip_of(fast[0] + fast[1] + fast[2]) == (ttl, tos)
        core._ident = ident0
        route.output(TcpHeader(sport, dport, seq, 0, 0x02, win, TcpOptions(mss, wscale, True, (), (tsval, 0))), b"")
        assert sent.pop() == fast


@pytest.mark.parametrize("v6", [False, True])
def test_burst_carries_the_values_and_matches_one_by_one(v6: bool) -> None:
    rng = random.Random(5 + v6)
    for _ in range(50):
        core, route, sent = make(v6, rng)
        ttl, tos = rng.randrange(1, 256), rng.randrange(0, 64) << 2
        route.set_ip(ttl, tos)
        burst: list = []
        core.transmit_tcp_burst = lambda cs, hl, gt, frames: burst.extend(frames)
        segs = [(rng.getrandbits(32), 0x10, [rng.randbytes(n)], n) for n in (1448, 1448, rng.randrange(0, 1448))]
        core._ident = ident0 = rng.randrange(0, 65536)
        assert route.output_ts_burst(1, 2, 3, 4, 5, 6, segs)
        core._ident = ident0
        for seq, flags, parts, n in segs:
            assert route.output_ts(1, 2, seq, 3, flags, 4, 5, 6, parts[0])
        assert len(burst) == len(sent) == 3
        for (hdrs, parts, gso), (l2l3, th, payload, _gt, gs) in zip(burst, sent):
            assert bytes(hdrs) == l2l3 + th and gso == gs
            assert ip_of(bytes(hdrs) + b"".join(bytes(p) for p in parts)) == (ttl, tos)


# ------------------------------------------------------------------------- pseudo-socket
def pseudo(family: int, cfg: TcpConfig | None = None) -> tuple[PseudoSocket, list]:
    box = [cfg or TcpConfig()]

    def set_config(c: TcpConfig) -> None:
        box[0] = c
    return PseudoSocket(family, ("x", 1), get_config=lambda: box[0], set_config=set_config), box


def check_option(ps: PseudoSocket, level: int, opt: int, stored: tuple, einval: tuple) -> None:
    """``setsockopt(value)`` then ``getsockopt`` gives ``expect`` for each ``(value, expect)`` of
    ``stored``; each value of ``einval`` is refused with EINVAL."""
    for value, expect in stored:
        ps.setsockopt(level, opt, value)
        assert ps.getsockopt(level, opt) == expect, (opt, value)
    for value in einval:
        with pytest.raises(OSError) as ei:
            ps.setsockopt(level, opt, value)
        assert ei.value.errno == errno.EINVAL


def test_pseudo_socket_ip_options_follow_linux() -> None:
    """The expected values are what Linux 6.18's TCP sockets answered for the same calls."""
    IP, IP6 = socket.IPPROTO_IP, socket.IPPROTO_IPV6
    ps, box = pseudo(socket.AF_INET, TcpConfig(ip_default_ttl=70))
    assert ps.getsockopt(IP, socket.IP_TTL) == 70 and ps.getsockopt(IP, socket.IP_TOS) == 0
    check_option(ps, IP, socket.IP_TTL, ((1, 1), (255, 255), (-1, 70)), (0, 256, -2))
    assert box[0].ip_ttl == -1
    # IP_TOS: the low byte, ECN bits cleared; never EINVAL
    check_option(ps, IP, socket.IP_TOS, ((0xFF, 0xFC), (0x1FF, 0xFC), (-1, 0xFC), (3, 0), (0xB9, 0xB8), (0x100, 0)),
                 ())
    ps.setsockopt(IP, socket.IP_TOS, b"\x28")                 # a one-byte optval
    assert ps.getsockopt(IP, socket.IP_TOS) == 0x28 and ps.getsockopt(IP, socket.IP_TOS, 1) == b"\x28"
    # IPv6-level options on an AF_INET socket
    with pytest.raises(OSError) as ei:
        ps.setsockopt(IP6, socket.IPV6_TCLASS, 4)
    assert ei.value.errno == errno.ENOPROTOOPT
    with pytest.raises(OSError) as ei:
        ps.getsockopt(IP6, socket.IPV6_UNICAST_HOPS)
    assert ei.value.errno == errno.EOPNOTSUPP
    # IP_RECVTOS: not offered (MAY-9, docs/conformance.md): a clear error
    with pytest.raises(OSError) as ei:
        ps.setsockopt(IP, socket.IP_RECVTOS, 1)
    assert ei.value.errno == errno.ENOPROTOOPT

    ps6, box6 = pseudo(socket.AF_INET6, TcpConfig(ipv6_hop_limit=50))
    assert ps6.getsockopt(IP6, socket.IPV6_UNICAST_HOPS) == 50 and ps6.getsockopt(IP6, socket.IPV6_TCLASS) == 0
    check_option(ps6, IP6, socket.IPV6_UNICAST_HOPS, ((0, 0), (1, 1), (255, 255), (-1, 50)), (256, -2))
    check_option(ps6, IP6, socket.IPV6_TCLASS, ((0xFF, 0xFC), (-1, 0), (3, 0), (0xB9, 0xB8)), (256, -2))
    # IPv4 options on an AF_INET6 socket: kept (Linux: for v4-mapped peers), not the v6 fields
    ps6.setsockopt(IP, socket.IP_TOS, 0x20)
    assert ps6.getsockopt(IP, socket.IP_TOS) == 0x20 and ps6.getsockopt(IP6, socket.IPV6_TCLASS) == 0xB8
    assert box6[0].ip_fields(True, 64, 50) == (50, 0xB8)


# ------------------------------------------------------- over two stacks (in-memory link)
def run(main):
    la, lb = pair()
    sa = Stack("la", address=f"{A}/24", link=la)
    sb = Stack("lb", address=f"{B}/24", link=lb, ip_default_ttl=99)
    seen = {"a": [], "b": []}
    for link, key in ((la, "a"), (lb, "b")):
        send = link.send

        def spy(frame, *args, _send=send, _key=key, **kw):
            seen[_key].append(bytes(frame))
            return _send(frame, *args, **kw)
        link.send = spy
    loop = asyncio.new_event_loop()

    async def wrapper():
        await sa.start()
        await sb.start()
        try:
            return await main(sa, sb, la, seen)
        finally:
            await sa.close()
            await sb.close()

    try:
        return loop.run_until_complete(wrapper())
    finally:
        loop.close()


def tcp_frames(frames: list) -> list:
    """(ttl, tos, tcp flags, payload length) of the TCP frames among ``frames``."""
    out = []
    for f in frames:
        _, _, et, payload = parse_ethernet(f)
        if et != ETH_P_IP:
            continue
        ip, seg = parse_ipv4(payload)
        if ip.proto == 6:
            out.append((ip.ttl, ip.tos, seg[13], len(seg) - (seg[12] >> 4) * 4))
    return out


def test_listener_values_reach_syn_ack_and_child_and_a_change_reaches_the_retransmission() -> None:
    async def main(sa, sb, la, seen):
        srv = await sb.create_server(asyncio.Protocol, B, 7400)
        (ls,) = srv.sockets
        ls.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 17)
        ls.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x2E << 2)      # DSCP EF
        tr, _ = await sa.create_connection(asyncio.Protocol, B, 7400)
        for _ in range(100):
            if srv._active:
                break
            await asyncio.sleep(0.01)
        (child,) = srv._active
        # the SYN-ACK and everything the child sends: the listener's values
        b_frames = tcp_frames(seen["b"])
        assert b_frames and b_frames[0][2] & 0x12 == 0x12
        assert {(t, s) for t, s, _, _ in b_frames} == {(17, 0xB8)}
        cs = child.get_extra_info("socket")
        assert cs.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 17
        child.write(b"x" * 100)
        await asyncio.sleep(0.05)
        assert tcp_frames(seen["b"])[-1][:2] == (17, 0xB8)
        # the client: the defaults of its stack (64, 0), then a change from the next segment
        a_frames = tcp_frames(seen["a"])
        assert {(t, s) for t, s, _, _ in a_frames} == {(64, 0)}
        s = tr.get_extra_info("socket")
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 3)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x0A << 2)         # AF11
        n = len(seen["a"])
        la.drop_next = 1                 # the data segment is lost: the retransmission...
        tr.write(b"y" * 50)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 200)               # ... after this change
        for _ in range(200):
            if sum(1 for f in tcp_frames(seen["a"][n:]) if f[3] == 50) >= 2:
                break
            await asyncio.sleep(0.01)
        data = [f for f in tcp_frames(seen["a"][n:]) if f[3] == 50]
        assert data[0][:2] == (3, 0x28) and data[1][:2] == (200, 0x28)
        # the stack's default stays: a new connection from sa has 64 / 0, from sb's listener 17
        assert sb.core.default_ttl == 99 and sa.core.default_ttl == 64
        tr.close()
        child.close()
        srv.close()
        await srv.wait_closed()

    run(main)


def test_time_wait_ack_keeps_the_tos() -> None:
    rng = random.Random(1)
    core, route, sent = make(False, rng)
    out: list = []
    core.transmit_tcp = None
    core.transmit = lambda frame, *a: out.append(bytes(frame))
    core.vnet = False

    class Tw:
        local = (route.lip, 80)
        remote = (route.rip, 4000)
        config = TcpConfig(ip_ttl=9, ip_tos=0x48)
    core._tw_output(Tw(), TcpHeader(80, 4000, 1, 2, ACK, 100))
    assert len(out) == 1 and ip_of(out[0]) == (64, 0x48)

