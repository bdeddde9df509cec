"""The urgent mechanism through a NetworkCore at frame level: URG segments crafted with scapy
(odd pointers, in the middle of a GRO run) must leave the raw-field fast paths (header
prediction, GRO) for the full state machine, and urgent data we send must go out through the
route's general path -- URG and a pointer per MSS-sized frame, no GSO super-frame (whose pieces
would all copy one pointer) -- and give the one-pack fast paths back once SND.UP is
acknowledged."""
from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from aiotcpstack.wire.tcp import URG, parse_tcp

from test_tcp_transmit_burst import MY_IP, MY_MAC, PEER_IP, PEER_MAC, Side


def mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def crafted(s: Side, seq: int, payload: bytes, flags: str = "PA", urgptr: int = 0, now: float = 0.1) -> bytes:
    c = s.conn
    tsval = int(now * 1000) + 200
    tsecr = int(now * 1000) + c.ts_offset
    pkt = (Ether(dst=mac(MY_MAC), src=mac(PEER_MAC))
           / IP(src=".".join(map(str, PEER_IP)), dst=".".join(map(str, MY_IP)), flags="DF")
           / TCP(sport=40000, dport=80, seq=seq & 0xFFFFFFFF, ack=c.snd_nxt, flags=flags, window=20000,
                 urgptr=urgptr, options=[("NOP", None), ("NOP", None), ("Timestamp", (tsval, tsecr))])
           / Raw(payload))
    return bytes(pkt)


def test_urg_in_the_middle_of_a_gro_run_is_seen():
    s = Side(True)
    s.core.gro = True
    c = s.conn
    base = c.rcv_nxt
    frames = [crafted(s, base, b"a" * 100), crafted(s, base + 100, b"b" * 100, "PAU", 250),
              crafted(s, base + 200, b"c" * 100)]
    s.core.receive([(f, False) for f in frames], 0.1)
    assert bytes(s.rec.data) == b"a" * 100 + b"b" * 100 + b"c" * 100          # in line, in order
    # mark = base + 100 + 250: told before the batch's data, counted from its first octet
    urg = [e for e in s.rec.events if e[0] == "urgent"]
    assert urg == [("urgent", 350)]
    assert c.urgent_pending == 50                                            # 50 still to come


def test_odd_pointers_crafted_with_scapy():
    s = Side(True)
    s.core.gro = True
    c = s.conn
    base = c.rcv_nxt
    # the pointer field set without URG means nothing (RFC 9293 3.1)
    s.core.receive([(crafted(s, base, b"x" * 10, "PA", 5), False)], 0.1)
    assert c.urgent_pending == 0 and c.rcv_urg == 0
    # URG with the largest pointer: the mark is 0xFFFF octets after SEG.SEQ
    s.core.receive([(crafted(s, base + 10, b"y" * 10, "PAU", 0xFFFF, 0.2), False)], 0.2)
    assert c.urgent_pending == 0xFFFF - 10
    # a pure ACK with URG moving the mark on (no signal: the same run)
    s.core.receive([(crafted(s, base + 20, b"", "AU", 0xFFFF, 0.3), False)], 0.3)
    assert c.urgent_pending == 0xFFFF
    assert [e for e in s.rec.events if e[0] == "urgent"] == [("urgent", 0xFFFF)]


def test_urgent_send_through_the_route_and_back_to_the_fast_paths():
    s = Side(True, tso_segs=20, iw=100)
    c = s.conn
    s.ack(0.02, c.snd_nxt, window=20000)                                     # 2.5 MB window (scale 7)
    s.sent.clear()
    mss = c.mss
    iss1 = c.snd_nxt
    n = 80_000
    c.send_urgent(b"u" * n, 0.05)
    frames = [parse_tcp(raw[34:]) for _vnet, raw in s.sent]
    vnets = [v for v, _raw in s.sent]
    assert all(v[1] == 0 for v in vnets)                                     # no GSO super-frame
    assert sum(len(p) for _h, p in frames) == n
    up = iss1 + n
    for h, p in frames:
        assert len(p) <= mss and h.flags & URG and h.urgent == min(up - h.seq, 0xFFFF)
    assert s.bursts == 0
    # the peer acknowledges everything: urgent mode ends, bulk sends are bursts again
    s.ack(0.1, c.snd_nxt, window=20000)
    s.sent.clear()
    c.send(b"v" * (50 * mss), 0.11)
    frames = [parse_tcp(raw[34:])[0] for _vnet, raw in s.sent]
    assert frames and not any(h.flags & URG for h in frames)
    assert not c.snd_urg and c._fast_out is not None
    assert s.bursts == 1 and s.sent[0][0][1] == mss                         # TSO frames, one burst
