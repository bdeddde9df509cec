"""Fuzzing harness shared by tests/unit/test_fuzz_stack.py (hypothesis), tests/sim/test_sim_robust.py
and fuzz/run_fuzz.py (atheris / long hypothesis-free runs).

A :class:`FuzzWorld` is two complete ``NetworkCore`` s (A = client, B = server, IPv4 + IPv6, dedicated
mode) over the simulated link on virtual time, with LIVE state in the target B:

* a listener on ``B:5000`` (v4 and v6) and established connections running a bidirectional transfer
  (A -> B ``up`` bytes, B -> A ``down`` bytes);
* a corpus of real frames captured from the wire (A's SYN with options, data segments with
  timestamps/SACK, pure ACKs, ARP request/reply, ICMP errors quoting the live 4-tuple, IPv6 SYN,
  NDP NS), which the fuzzer mutates and feeds into ``B.core.receive`` one frame per batch.

Mutated frames that still parse as TCP for a LIVE 4-tuple are made *blind* before injection (an
off-path attacker does not know the stream; RFC 5961 is about exactly that): the payload is
replaced by the true stream bytes at that sequence number (so an accepted segment is a harmless
retransmission), FIN is cleared, a RST never carries exactly RCV.NXT, and TSval is pinned to
TS.Recent; then checksums are recomputed (or, for a fraction, deliberately broken).  Everything
else (IP header fields, option bytes, lengths, flags, seq/ack, window, ARP, ICMP, IPv6 extension
headers) is fuzzed raw.

Invariants checked per frame (:meth:`FuzzWorld.feed`):

1. no exception escapes ``NetworkCore.receive`` and ``StackErrors`` stays 0 (the core runs with
   ``strict=True``: an internal error would raise);
2. accounting: every frame either moves at least one *terminal* counter (a drop counter or an
   accept counter, :data:`TERMINAL`) or belongs to a class the oracle :func:`silent_class` predicts
   is ignored by design (not our MAC, our own MAC, unknown ethertype, unknown ARP op, ...);
3. afterwards (:meth:`FuzzWorld.finish`) the transfer completes byte-exact in both directions.
"""
from __future__ import annotations

import random
import struct
from typing import Any

from aiotcpstack.ip.core import NetworkCore
from aiotcpstack.link.sim import SimClock, SimNetwork
from aiotcpstack.mib import Counters
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.timer_wheel import TimerWheel
from aiotcpstack.wire import arp as _arp
from aiotcpstack.wire import icmp as _icmp
from aiotcpstack.wire.errors import ParseError
from aiotcpstack.wire.ethernet import ETH_P_ARP, ETH_P_IP, ETH_P_IPV6
from aiotcpstack.wire.ipv4 import build_ipv4_header, parse_ipv4
from aiotcpstack.wire.ipv6 import build_ipv6_header, parse_ipv6
from aiotcpstack.wire.tcp import ACK, FIN, RST, SYN, TcpHeader, TcpOptions, build_tcp, parse_tcp

from .harness import IP_A, IP_B, MAC_A, MAC_B, Peer, SimHost

IP6_A = bytes.fromhex("20010002000000000000000000000001")
IP6_B = bytes.fromhex("20010002000000000000000000000002")
PORT = 5000

#: counters of which (at least) one moves for every frame that is not silently ignored by design:
#: drops (link, IP header, address, reassembly, checksum, TCP header, ICMP) and accepts (a TCP
#: segment demuxed to a connection / listener / answered with RST, ICMP delivered, ARP processed)
TERMINAL = ("LinkInDrops", "IpInHdrErrors", "IpInAddrErrors", "IpReasmReqds", "Ip6ReasmReqds", "IpReasmFails", "InErrs", "InCsumErrors",
            "InSegs", "IpInDelivers", "IpInUnknownProtos", "ArpInRequests", "ArpInReplies",
            "Ip6InHdrErrors", "Ip6InUnknownProtos", "Icmp6InErrors", "IcmpInErrors", "IcmpInMsgs", "Icmp6InMsgs",
            "IcmpInDestUnreachs", "IcmpInEchos")


def silent_class(frame: bytes, mac: bytes, local6: set) -> str | None:
    """The oracle: why ``frame`` is ignored without a counter, or None if it must be counted.
    These are the cases where Linux does not count either (PACKET_OTHERHOST, our own frames,
    protocols we do not speak, NDP/ICMPv6 we do not need)."""
    if len(frame) < 14:
        return None
    dst, src = frame[0:6], frame[6:12]
    et = struct.unpack_from("!H", frame, 12)[0]
    if src == mac:
        return "own-frame"
    if et == ETH_P_IP:
        return "other-host" if dst != mac else None
    if et == ETH_P_ARP:
        if len(frame) >= 22 and frame[20:22] not in (b"\x00\x01", b"\x00\x02"):
            return "arp-op"            # parse may still fail first: then LinkInDrops moves (fine)
        return None
    if et == ETH_P_IPV6:
        if dst != mac and not dst[0] & 1:
            return "other-host"
        if len(frame) >= 54:
            nh, dst6 = frame[20], frame[38:54]
            if dst6 not in local6:
                return "ipv6-not-local"
            if nh == 58 or nh in (0, 43, 60, 44):
                return "icmpv6-or-ext"     # NDP w/o hop limit 255, unknown ICMPv6: ignored (Linux too)
        return None
    return "ethertype"


class FuzzHost(SimHost):
    """A SimHost with an IPv6 address too (SimHost has only IPv4)."""

    def __init__(self, net: SimNetwork, name: str, mac: bytes, ip: bytes, ip6: bytes, config: TcpConfig,
                 secret: bytes) -> None:
        super().__init__(net, name, mac, ip, config, secret=secret)
        self.ip6 = ip6
        self.core = NetworkCore(mac, self.link.mtu, [(ip, 24), (ip6, 64)], self.counters, config, self.wheel,
                                self._send, self.clock.time, vnet=False, dedicated=True, secret=secret,
                                strict=True)
        self.core.loopback_hook = lambda: self.clock.call_soon(self._flush_loopback)
        self.captured: list[bytes] = []

    def _send(self, frame: Any, *a: Any) -> None:
        if len(self.captured) < 400:
            self.captured.append(bytes(frame))
        self.link.send(frame, *a)


class FuzzWorld:
    def __init__(self, seed: int = 0, up: int = 200_000, down: int = 100_000, conns: int = 2,
                 config: TcpConfig | None = None, rate_bps: float = 4e6) -> None:
        self.rng = random.Random(seed)
        self.clock = SimClock()
        # a rate-limited wire so the transfer is still running while the fuzz frames go in
        self.net = SimNetwork(self.clock, seed=seed, rate_bps=rate_bps, delay=0.002)
        cfg = config or TcpConfig(rcvbuf=65536, sndbuf=65536)
        self.a = FuzzHost(self.net, "a", MAC_A, IP_A, IP6_A, cfg, b"fa%d" % seed)
        self.b = FuzzHost(self.net, "b", MAC_B, IP_B, IP6_B, cfg, b"fb%d" % seed)
        self.servers: list[Peer] = []
        self.clients: list[Peer] = []
        self.data_up = [self.rng.randbytes(up) for _ in range(conns)]
        self.data_down = [self.rng.randbytes(down) for _ in range(conns)]
        self.stream_of: dict[tuple, bytes] = {}    # B's view: 4-tuple -> bytes B receives
        self.fed = 0
        self.silent = 0
        self.counted = 0

        def on_accept(conn: Any) -> Peer | None:
            for i, c in enumerate(self.clients):
                if c.conn is not None and c.conn.local == conn.remote:
                    break
            else:
                return None           # a child some fuzz frame completed: refused (ListenDrops)
            p = Peer(self.b, self.data_down[i], 16384)
            p.conn = conn
            self.servers.append(p)
            self.stream_of[(conn.local[0], conn.local[1], conn.remote[0], conn.remote[1])] = self.data_up[i]
            return p

        self.b.core.listen(None, PORT, 64, on_accept)
        for i in range(conns):
            dst = IP_B if i % 2 == 0 else IP6_B
            c = Peer(self.a, self.data_up[i], 16384)
            c.conn = self.a.core.connect(dst, PORT, c, self.clock.now)
            self.clients.append(c)
        self.a.kick()
        # run until established and some data has flowed: the capture has SYNs, data, ACKs
        self.clock.run(until=self.clock.now + 0.03)
        self.corpus = self._build_corpus()

    # ------------------------------------------------------------------ corpus of real frames
    def _build_corpus(self) -> list[bytes]:
        frames = [f for f in self.a.captured]
        # ARP request / reply from A (real formats)
        frames.append(struct.pack("!6s6sH", b"\xff" * 6, MAC_A, ETH_P_ARP)
                      + _arp.build_arp(_arp.arp_request(MAC_A, IP_A, IP_B)))
        frames.append(struct.pack("!6s6sH", MAC_B, MAC_A, ETH_P_ARP)
                      + _arp.build_arp(_arp.ArpPacket(_arp.ARP_REPLY, MAC_A, IP_A, MAC_B, IP_B)))
        # ICMP errors quoting B's own segments of the live connections (as a router would send)
        for f in self.b.captured[:40]:
            et = struct.unpack_from("!H", f, 12)[0]
            if et == ETH_P_IP:
                orig = f[14:14 + 28]
                for msg in (_icmp.build_icmpv4_dest_unreach(3, orig), _icmp.build_icmpv4_frag_needed(orig, 1280)):
                    frames.append(struct.pack("!6s6sH", MAC_B, MAC_A, ETH_P_IP)
                                  + build_ipv4_header(IP_A, IP_B, 1, len(msg), df=False) + msg)
                frames.append(struct.pack("!6s6sH", MAC_B, MAC_A, ETH_P_IP) + build_ipv4_header(
                    IP_A, IP_B, 1, 0, df=False)[:20] + _icmp.build_icmpv4_echo(7, 1, b"ping"))
            elif et == ETH_P_IPV6:
                orig = f[14:14 + 48]
                msg = _icmp.build_icmpv6_packet_too_big(IP6_A, IP6_B, 1280, orig)
                frames.append(struct.pack("!6s6sH", MAC_B, MAC_A, ETH_P_IPV6)
                              + build_ipv6_header(IP6_A, IP6_B, 58, len(msg)) + msg)
                ns = _icmp.build_ndp_ns(IP6_A, IP6_B, IP6_B, MAC_A)
                frames.append(struct.pack("!6s6sH", MAC_B, MAC_A, ETH_P_IPV6)
                              + build_ipv6_header(IP6_A, IP6_B, 58, len(ns), 255) + ns)
        # a fresh SYN to the listener (v4) from a new port, with every option
        syn = TcpHeader(41000, PORT, 12345, 0, SYN, 64240,
                        TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(1, 0)))
        seg = build_tcp(syn, b"", IP_A, IP_B)
        frames.append(struct.pack("!6s6sH", MAC_B, MAC_A, ETH_P_IP) + build_ipv4_header(IP_A, IP_B, 6, len(seg)) + seg)
        return frames

    # ------------------------------------------------------------------ mutation
    def mutate(self, data: bytes, rng: random.Random) -> tuple[bytes, bool]:
        """A mutated corpus frame (``data`` selects and drives the mutation) and csum_trusted."""
        base = bytearray(self.corpus[rng.randrange(len(self.corpus))])
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(10)
            if op == 0 and base:
                i = rng.randrange(len(base))
                base[i] ^= 1 << rng.randrange(8)
            elif op == 1 and base:
                base[rng.randrange(len(base))] = rng.randrange(256)
            elif op == 2:
                del base[rng.randrange(len(base) + 1):]
            elif op == 3:
                base += rng.randbytes(rng.randrange(1, 64))
            elif op == 4 and len(base) > 34:       # IPv4/6 header field
                base[14 + rng.randrange(min(40, len(base) - 14))] = rng.randrange(256)
            elif op == 5 and len(base) > 54:       # TCP header / options region
                i = 34 + rng.randrange(min(60, len(base) - 34))
                base[i] = rng.choice((0, 1, 2, 3, 4, 5, 8, 10, 255, rng.randrange(256)))
            elif op == 6 and data:
                i = rng.randrange(len(base) + 1)
                base[i:i] = data[:64]
            else:
                pass                                # field-aware edits below
        frame = bytes(base)
        frame, live = self._blind_fixup(frame, rng)
        if live:
            # a live-tuple segment is always blind (rebuilt); 10% get a broken checksum, which
            # must then be verified (csum_trusted means "the NIC checked it": not for those)
            if rng.random() < 0.1:
                b = bytearray(frame)
                b[-1 if len(b) > 60 else len(b) - 1] ^= 0x5A
                return bytes(b), False
            return frame, rng.random() < 0.2
        # raw mutated frames are never "checksum trusted": a trusted frame whose TCP payload was
        # mutated is an attacker who knows the stream, not a blind one
        return frame, False

    def _live(self) -> dict:
        return self.b.core.demux.conns

    def _blind_fixup(self, frame: bytes, rng: random.Random) -> tuple[bytes, bool]:
        """Segments that (after mutation) are valid TCP for a LIVE 4-tuple of B are made blind
        (see the module docstring) and get valid checksums (90%); others: checksums fixed at 50%
        so the fuzz reaches past the checksum checks."""
        if len(frame) < 14:
            return frame, False
        et = struct.unpack_from("!H", frame, 12)[0]
        try:
            if et == ETH_P_IP:
                ip, seg = parse_ipv4(memoryview(frame)[14:], False)
                if ip.proto != 6 or ip.mf or ip.frag_offset:
                    return frame, False
                src, dst = ip.src, ip.dst
            elif et == ETH_P_IPV6:
                ip, seg = parse_ipv6(memoryview(frame)[14:])
                if ip.next_header != 6 or ip.fragment:
                    return frame, False
                src, dst = ip.src, ip.dst
            else:
                return frame, False
            hdr, payload = parse_tcp(seg)
        except (ParseError, ValueError, struct.error):
            return frame, False
        key = (bytes(dst), hdr.dst_port, bytes(src), hdr.src_port)
        conn = self._live().get(key)
        if conn is not None and conn.state in ("CLOSED", "LISTEN"):
            conn = None
        # the real peer (A's end of the same 4-tuple): mutations of A's captured frames carry its
        # real SEQ/ACK, so they are live even while B still holds only a request sock
        peer = self.a.core.demux.conns.get((key[2], key[3], key[0], key[1]))
        payload = bytes(payload)
        if conn is not None or peer is not None:
            if peer is not None:
                idx = next((i for i, c in enumerate(self.clients) if c.conn is peer), None)
                stream = self.data_up[idx] if idx is not None else b""
                base = (peer.iss + 1) & 0xFFFFFFFF
                sent = min(len(stream), (peer.snd_nxt - base) & 0xFFFFFFFF)
            else:
                stream = self.stream_of.get(key, b"")
                base = (conn.irs + 1) & 0xFFFFFFFF
                sent = len(stream)
            flags = hdr.flags & ~FIN
            seq = hdr.seq
            rcv_nxt = conn.rcv_nxt if conn is not None else base
            if rng.random() < 0.5:        # aim near the live window (where the state machine is)
                seq = (rcv_nxt + rng.choice((-70000, -1, 0, 1, 1460, 65535, 70000,
                                             rng.randrange(-2**20, 2**20)))) & 0xFFFFFFFF
            if flags & RST and seq == rcv_nxt:
                seq = (seq + 1) & 0xFFFFFFFF
            ack = hdr.ack
            if rng.random() < 0.3 and conn is not None:
                ack = (conn.snd_una + rng.choice((-70000, -1, 0, 1, 100000, rng.randrange(-2**20, 2**20)))) & 0xFFFFFFFF
            # never ACK what the real peer has not received (a premature ACK beyond the peer's
            # RCV.NXT would free data it still needs: that is not a blind attacker)
            if peer is not None and ((ack - peer.rcv_nxt) & 0xFFFFFFFF) < 2**31 and ack != peer.rcv_nxt:
                ack = peer.rcv_nxt
            # payload := the true stream at seq, only bytes the real peer has already sent (an
            # accepted segment is then a harmless retransmission)
            off = (seq - base) & 0xFFFFFFFF
            n = len(payload)
            payload = stream[off:min(off + n, sent)] if off < sent else b""
            opts = hdr.options
            if opts.timestamp is not None:
                if conn is not None and getattr(conn, "ts_ok", False):
                    tsv = conn.ts_recent
                elif peer is not None and hasattr(peer, "_tsval"):
                    tsv = peer._tsval(self.clock.now)
                else:
                    tsv = opts.timestamp[0]
                opts = TcpOptions(opts.mss, opts.wscale, opts.sack_permitted, opts.sack_blocks,
                                  (tsv, opts.timestamp[1]))
            hdr = TcpHeader(hdr.src_port, hdr.dst_port, seq, ack, flags, hdr.window, opts, 0, hdr.urgent)
            live = True
        else:
            live = False
            if rng.random() < 0.5:
                return frame, False
        try:
            seg2 = build_tcp(hdr, payload, bytes(src), bytes(dst))
        except Exception:  # noqa: BLE001  (an option value the builder refuses)
            if live:   # cannot make it blind: send something harmless for that tuple instead
                return frame[:14], False
            return frame, False
        if len(src) == 4:
            iph = build_ipv4_header(bytes(src), bytes(dst), 6, len(seg2), ttl=ip.ttl, ident=ip.ident, df=ip.df)
        else:
            iph = build_ipv6_header(bytes(src), bytes(dst), 6, len(seg2))
        return frame[:14] + iph + seg2, live

    # ------------------------------------------------------------------ feeding + invariants
    def feed(self, frame: bytes, trusted: bool) -> None:
        core = self.b.core
        c = self.b.counters
        before = {k: c[k] for k in TERMINAL}
        errs = c["StackErrors"]
        core.receive([(frame, trusted)], self.clock.now)      # must not raise (strict core)
        self.b.kick()
        assert c["StackErrors"] == errs, "internal error on the input path"
        moved = sum(c[k] - before[k] for k in TERMINAL)
        self.fed += 1
        if moved:
            self.counted += 1
            return
        why = silent_class(frame, MAC_B, core.local_v6)
        assert why is not None, f"frame dropped without any counter: {frame.hex()}"
        self.silent += 1

    def step(self, dt: float = 0.0005) -> None:
        """Let the real traffic advance a little (virtual time)."""
        self.clock.run(until=self.clock.now + dt)

    def finish(self, time_limit: float = 600.0) -> None:
        """Run to completion; assert both directions byte-exact on every connection."""
        def done() -> bool:
            return all(p.done for p in self.clients) and len(self.servers) >= len(self.clients) and \
                all(p.done for p in self.servers)
        self.clock.run(until=self.clock.now + time_limit, stop=done)
        assert done(), [(p.conn.state, len(p.received)) for p in self.clients + self.servers]
        for i, cl in enumerate(self.clients):
            assert cl.exc is None, cl.exc
            assert bytes(cl.received) == self.data_down[i]
        for sp in self.servers:
            assert sp.exc is None, sp.exc
            key = (sp.conn.local[0], sp.conn.local[1], sp.conn.remote[0], sp.conn.remote[1])
            assert bytes(sp.received) == self.stream_of[key]
