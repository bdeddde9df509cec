"""IPv4 / IPv6 reassembly (ip/reassembly.py) at fragment level: orders, duplicates, overlaps
(RFC 5722 and Linux's IPv4 rule), timeout, memory limits, atomic fragments (RFC 6946), tiny first
fragments, bad lengths.  scapy's ``fragment`` / ``fragment6`` make the fragments (an independent
oracle); our wire parsers read them as the core does."""
from __future__ import annotations

import random
import struct

import pytest
from scapy.layers.inet import IP, TCP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6

from aiotcpstack.ip.reassembly import FRAG_OVERHEAD, Reassembler
from aiotcpstack.mib import Counters
from aiotcpstack.wire.ipv4 import parse_ipv4
from aiotcpstack.wire.ipv6 import parse_ipv6

SRC4, DST4 = "198.18.0.2", "198.18.0.1"
SRC6, DST6 = "2001:2::2", "2001:2::1"


def dgram4(size=3000, ident=7, seed=0):
    data = random.Random(seed).randbytes(size)
    return IP(src=SRC4, dst=DST4, id=ident) / TCP(sport=1, dport=2) / data


def frags4(size=3000, fragsize=1000, ident=7, seed=0):
    pkt = dgram4(size, ident, seed)
    return bytes(pkt[IP].payload), [bytes(f) for f in fragment(pkt, fragsize=fragsize)]


def frags6(size=3000, mtu=1280, ident=5, seed=0):
    data = random.Random(seed).randbytes(size)
    pkt = IPv6(src=SRC6, dst=DST6) / IPv6ExtHdrFragment(id=ident) / TCP(sport=1, dport=2) / data
    return bytes(pkt)[48:], [bytes(f) for f in fragment6(pkt, mtu)]


def feed4(r, raw, now=0.0):
    ip, payload = parse_ipv4(raw)
    return r.add_v4(ip.src, ip.dst, ip.ident, ip.proto, ip.frag_offset << 3, ip.mf, payload, (ip.ttl, ip.tos), now)


def feed6(r, raw, now=0.0):
    ip, payload = parse_ipv6(raw)
    assert ip.fragment
    _nh, _r, offm, ident = struct.unpack_from("!BBHI", raw, 40)       # scapy: Fragment header first
    return r.add_v6(ip.src, ip.dst, ident, offm & 0xFFF8, bool(offm & 1), ip.next_header, payload,
                    ip.hop_limit, now)


def run(r, feed, frags, now=0.0):
    """Feed every fragment; return what the last call returned (None before)."""
    out = [feed(r, f, now) for f in frags]
    assert all(o is None for o in out[:-1])
    return out[-1]


def new():
    c = Counters()
    return Reassembler(c), c


# ---------------------------------------------------------------------------------------- orders
@pytest.mark.parametrize("order", ["in", "reversed", "shuffled"])
def test_v4_any_order(order):
    r, c = new()
    want, fs = frags4()
    assert len(fs) == 4
    if order == "reversed":
        fs.reverse()
    elif order == "shuffled":
        random.Random(3).shuffle(fs)
    meta, data = run(r, feed4, fs)
    assert data == want and meta == (64, 0)
    assert (c["IpReasmReqds"], c["IpReasmOKs"], c["IpReasmFails"]) == (4, 1, 0)
    assert r.queues == {} and r.mem == 0


@pytest.mark.parametrize("seed", range(20))
def test_v4_v6_random_permutations_and_sizes(seed):
    rng = random.Random(seed)
    size = rng.randrange(100, 20000)
    want, fs = frags4(size, fragsize=8 * rng.randrange(1, 180), seed=seed)
    rng.shuffle(fs)
    r, c = new()
    assert run(r, feed4, fs)[1] == want
    want6, fs6 = frags6(size, mtu=rng.randrange(1280, 9000), seed=seed)
    rng.shuffle(fs6)
    got = run(r, feed6, fs6)
    assert got[1] == 6 and got[2] == want6 and got[0] == 64
    assert c["IpReasmOKs"] == 1 and c["Ip6ReasmOKs"] == 1 and r.mem == 0


def test_v6_in_order():
    r, c = new()
    want, fs = frags6()
    assert len(fs) == 3
    assert run(r, feed6, fs) == (64, 6, want)
    assert (c["Ip6ReasmReqds"], c["Ip6ReasmOKs"], c["Ip6ReasmFails"]) == (3, 1, 0)


def test_interleaved_datagrams_are_kept_apart_by_key():
    r, c = new()
    a, fa = frags4(ident=1, seed=1)
    b, fb = frags4(ident=2, seed=2)
    out = [feed4(r, f) for pair in zip(fa, fb) for f in pair]
    assert [o[1] for o in out if o] == [a, b]
    # the protocol is part of the IPv4 key: the same id with another protocol is another datagram
    fx = bytearray(fa[0])
    fx[9] = 17
    fx[10:12] = b"\0\0"
    fx[10:12] = struct.pack("!H", 0xFFFF - (sum(struct.unpack("!10H", bytes(fx[:20]))) % 0xFFFF))
    for f in fa[1:]:
        feed4(r, f)
    assert feed4(r, bytes(fx)) is None and len(r.queues) == 2      # (without proto: complete)


# ------------------------------------------------------------------------- duplicates, overlaps
def test_duplicates_are_dropped_and_the_datagram_still_completes():
    r, c = new()
    want, fs = frags4()
    for f in (fs[0], fs[0], fs[1], fs[1], fs[3]):
        assert feed4(r, f) is None
    assert feed4(r, fs[2])[1] == want
    assert c["IpReasmFails"] == 0 and c["IpReasmOKs"] == 1
    r6, c6 = new()
    want6, fs6 = frags6()
    for f in (fs6[1], fs6[1], fs6[0]):
        assert feed6(r6, f) is None
    assert feed6(r6, fs6[2])[2] == want6 and c6["Ip6ReasmFails"] == 0


def raw4(payload, offset, more, ident=9, proto=6):
    """An IPv4 fragment with ``payload`` at byte ``offset`` (scapy fills length and checksum)."""
    return bytes(IP(src=SRC4, dst=DST4, id=ident, proto=proto, flags="MF" if more else 0, frag=offset >> 3)
                 / payload)


def raw6(payload, offset, more, ident=9, nh=6):
    return bytes(IPv6(src=SRC6, dst=DST6) / IPv6ExtHdrFragment(nh=nh, offset=offset >> 3, m=int(more), id=ident)
                 / payload)


@pytest.mark.parametrize("v6", [False, True])
def test_overlap_discards_the_whole_datagram(v6):
    """RFC 5722 (IPv6) and Linux since 2018 (IPv4): a partial overlap -- e.g. the RFC 1858 attack
    rewriting the TCP flags with a second fragment at offset 8 -- discards every fragment."""
    r, c = new()
    raw, feed, p = (raw6, feed6, "Ip6") if v6 else (raw4, feed4, "Ip")
    assert feed(r, raw(b"a" * 24, 0, True)) is None
    assert feed(r, raw(b"b" * 16, 16, True)) is None          # overlaps bytes 16..23
    assert r.queues == {} and r.mem == 0
    assert c[p + "ReasmFails"] == 1 and c[p + "ReasmOverlaps"] == 1
    # what was held is gone: the rest of the original datagram does not complete it
    assert feed(r, raw(b"c" * 8, 24, False)) is None and len(r.queues) == 1


@pytest.mark.parametrize("v6", [False, True])
def test_overlap_with_the_next_fragment_too(v6):
    r, c = new()
    raw, feed, p = (raw6, feed6, "Ip6") if v6 else (raw4, feed4, "Ip")
    feed(r, raw(b"x" * 16, 16, True))
    feed(r, raw(b"y" * 24, 0, True))                          # runs into [16, 32)
    assert r.queues == {} and c[p + "ReasmOverlaps"] == 1


# ------------------------------------------------------------------------------ lengths, limits
def test_inconsistent_last_fragments_v4_dropped_queue_kept():
    """Linux ip_frag_queue: a last fragment ending before data held, a second last fragment that
    disagrees, data beyond the end: the fragment is dropped, the IPv4 queue kept."""
    r, c = new()
    feed4(r, raw4(b"a" * 16, 16, True))
    assert feed4(r, raw4(b"b" * 8, 0, False)) is None         # ends at 8, data held up to 32
    assert c["IpReasmFails"] == 1 and len(r.queues) == 1
    assert feed4(r, raw4(b"c" * 8, 32, False)) is None        # the real last fragment
    assert feed4(r, raw4(b"d" * 8, 32, False)) is None        # a duplicate
    assert feed4(r, raw4(b"e" * 8, 40, False)) is None        # a second, different last fragment
    assert feed4(r, raw4(b"f" * 8, 40, True)) is None         # beyond the end the last one fixed
    assert c["IpReasmFails"] == 3 and len(r.queues) == 1
    assert feed4(r, raw4(b"g" * 16, 0, True))[1] == b"g" * 16 + b"a" * 16 + b"c" * 8


def test_inconsistent_last_fragments_v6_discard():
    """Linux ip6_frag_queue: the same cases discard the IPv6 datagram."""
    r, c = new()
    for first, bad in (((16, True), (8, False)), ((8, False), (16, False)), ((8, False), (16, True))):
        feed6(r, raw6(b"a" * (8 if first[1] is False else 16), first[0], first[1]))
        assert len(r.queues) == 1
        feed6(r, raw6(b"b" * 8, bad[0], bad[1]))
        assert r.queues == {}
    assert c["Ip6ReasmFails"] == 3


def test_v4_non_last_fragment_is_trimmed_to_8_bytes_like_linux():
    r, c = new()
    assert feed4(r, raw4(b"a" * 8 + b"junk", 0, True)) is None
    assert feed4(r, raw4(b"b" * 3, 8, False))[1] == b"a" * 8 + b"bbb"


def test_v6_non_last_fragment_not_multiple_of_8_discards():
    r, c = new()
    feed6(r, raw6(b"z" * 24, 16, False))
    assert feed6(r, raw6(b"a" * 20, 0, True)) is None
    assert r.queues == {} and c["Ip6ReasmFails"] == 1


@pytest.mark.parametrize("v6", [False, True])
def test_datagram_over_65535_bytes_is_rejected(v6):
    r, c = new()
    raw, feed, p = (raw6, feed6, "Ip6") if v6 else (raw4, feed4, "Ip")
    feed(r, raw(b"a" * 1024, 0, True))
    # IPv4: 20 header bytes + 65512 + 8 > 65535; IPv6: payload 65512 + 32 > 65535
    assert feed(r, raw(b"b" * 32 if v6 else b"b" * 8, 65512, False)) is None
    assert r.queues == {} and c[p + "ReasmFails"] == 1
    # the largest legal one completes (IPv4: total length 65535 with the 20-byte header)
    r, c = new()
    size = 65535 if v6 else 65515
    chunk = 8 * 1000
    pieces = [(o, min(chunk, size - o)) for o in range(0, size, chunk)]
    out = [feed(r, raw(b"q" * n, o, o + n < size)) for o, n in pieces]
    assert out[-1] is not None and len(out[-1][-1]) == size


@pytest.mark.parametrize("v6", [False, True])
def test_empty_fragment_is_a_failure(v6):
    r, c = new()
    raw, feed, p = (raw6, feed6, "Ip6") if v6 else (raw4, feed4, "Ip")
    feed(r, raw(b"a" * 8, 0, True))
    feed(r, raw(b"", 8, True))
    assert c[p + "ReasmFails"] == 1
    assert len(r.queues) == (0 if v6 else 1)       # Linux: IPv6 discards the datagram, IPv4 the fragment


def test_timeout_v4_30s_v6_60s_checked_on_receive():
    r, c = new()
    _, fs = frags4()
    _, fs6 = frags6()
    feed4(r, fs[0], 0.0)
    feed6(r, fs6[0], 0.0)
    r.expire(29.9)
    assert len(r.queues) == 2
    feed4(r, frags4(ident=99)[1][0], 30.0)          # any fragment runs the expiry first
    assert c["IpReasmTimeout"] == 1 and c["IpReasmFails"] == 1 and len(r.queues) == 2
    # the late rest of the expired datagram does not complete it
    assert all(feed4(r, f, 30.0) is None for f in fs[1:])
    r.expire(60.0)
    assert c["Ip6ReasmTimeout"] == 1 and c["Ip6ReasmFails"] == 1
    assert all(not q.v6 for q in r.queues.values())
    r.expire(1000.0)
    assert r.queues == {} and r.mem == 0


def test_over_the_memory_limit_every_fragment_is_refused_none_evicted():
    """Linux >= 4.17 (``inet_frag_find``): while the memory held is above ``ipfrag_high_thresh``
    no queue is found or made -- a new datagram's fragment and an old one's alike are refused
    (``IpReasmFails``); nothing queued is evicted.  The check precedes the charge, so the memory
    passes the threshold by one fragment (4 x 1,256 B = 5,024 B <= 5,100 B; the 5th goes over)."""
    c = Counters()
    r = Reassembler(c, high_thresh=4 * (1000 + FRAG_OVERHEAD) + 76)
    firsts = [frags4(ident=i, seed=i)[1] for i in range(7)]
    for fs in firsts[:5]:
        assert feed4(r, fs[0]) is None        # 1000 bytes each: all 5 queued, the 5th goes over
    assert [k[2] for k in r.queues] == [0, 1, 2, 3, 4] and c["IpReasmFails"] == 0
    assert r.mem == 5 * (1000 + FRAG_OVERHEAD) > r.high_thresh
    # over the limit: a new datagram is refused, and so is the rest of a queued one
    assert feed4(r, firsts[5][0]) is None and feed4(r, firsts[0][1]) is None
    assert c["IpReasmFails"] == 2 and [k[2] for k in r.queues] == [0, 1, 2, 3, 4]
    assert all(len(q.frags) == 1 for q in r.queues.values()) and r.mem == 5 * (1000 + FRAG_OVERHEAD)
    # IPv6 shares the limit (one fqdir per family in Linux, one memory pool here)
    assert feed6(r, frags6(ident=9)[1][0]) is None and c["Ip6ReasmFails"] == 1
    # the timeout frees the memory; then a datagram is reassembled again
    r.expire(30.0)
    assert r.queues == {} and r.mem == 0 and c["IpReasmTimeout"] == 5
    want = bytes(dgram4(ident=6, seed=6)[IP].payload)
    assert run(r, feed4, firsts[6], 30.0)[1] == want and c["IpReasmOKs"] == 1


def test_max_queues_refuses_new_queues_and_keeps_the_old():
    c = Counters()
    r = Reassembler(c, max_queues=8)
    for i in range(20):
        assert feed4(r, frags4(ident=i)[1][0]) is None
    assert len(r.queues) == 8 and c["IpReasmFails"] == 12
    assert sorted(k[2] for k in r.queues) == list(range(8))
    # a queued datagram still completes (its queue exists); then one new queue fits again
    want, fs = frags4(ident=3)
    assert run(r, feed4, fs[1:])[1] == want and len(r.queues) == 7
    want, fs = frags4(ident=30, seed=30)
    assert run(r, feed4, fs)[1] == want and c["IpReasmOKs"] == 2 and c["IpReasmFails"] == 12


# --------------------------------------------------------------------------- atomic, tiny, first
def test_atomic_fragment_is_processed_at_once_and_apart_from_queues():
    """RFC 6946: offset 0 and M clear -- a whole datagram, even when a queue has its id."""
    r, c = new()
    _, fs = frags6(ident=5)
    feed6(r, fs[1])
    assert feed6(r, raw6(b"T" * 20 + b"data", 0, False, ident=5)) == (64, 6, b"T" * 20 + b"data")
    assert c["Ip6ReasmOKs"] == 1 and len(r.queues) == 1 and c["Ip6ReasmFails"] == 0


def test_v6_first_fragment_without_whole_tcp_header_is_dropped():
    """RFC 8200 4.5 / RFC 7112: the first fragment must carry every header through the upper one."""
    r, c = new()
    assert feed6(r, raw6(b"t" * 16, 0, True)) is None                 # 16 < 20 bytes of TCP header
    assert c["Ip6InHdrErrors"] == 1 and r.queues == {}
    # a Destination Options header (8 bytes) before TCP, then only 8 bytes of TCP
    dst_opts = bytes([6, 0, 1, 4, 0, 0, 0, 0])
    assert feed6(r, raw6(dst_opts + b"t" * 8, 0, True, nh=60)) is None
    assert c["Ip6InHdrErrors"] == 2
    assert feed6(r, raw6(dst_opts + b"t" * 24, 0, True, nh=60)) is None and len(r.queues) == 1


def test_v4_tiny_first_fragment_is_reassembled():
    """IPv4: a first fragment with 8 bytes of the TCP header (RFC 1858's tiny fragment) is kept;
    the TCP header is checked on the whole datagram."""
    r, c = new()
    want = bytes(TCP(sport=1, dport=2, flags="A") / b"payload!")
    assert feed4(r, raw4(want[:8], 0, True)) is None
    assert feed4(r, raw4(want[8:], 8, False))[1] == want


def test_views_are_copied():
    """Fragments arrive as views into the link's buffers: what a queue holds must be its own."""
    r, c = new()
    want, fs = frags4()
    bufs = [bytearray(f) for f in fs]
    for b in bufs[:-1]:
        feed4(r, memoryview(b))
        b[:] = bytes(len(b))                  # the link reuses its buffer
    assert feed4(r, memoryview(bufs[-1]))[1] == want


def test_the_queue_bound_counts_both_families():
    c = Counters()
    r = Reassembler(c, max_queues=3)
    feed4(r, frags4(ident=1)[1][0], 0.0)
    feed6(r, frags6(ident=2)[1][0], 1.0)
    feed4(r, frags4(ident=3)[1][0], 2.0)
    feed6(r, frags6(ident=4)[1][0], 3.0)            # refused: three queues, of both families
    assert c["Ip6ReasmFails"] == 1 and c["IpReasmFails"] == 0
    feed4(r, frags4(ident=5)[1][0], 4.0)
    assert c["IpReasmFails"] == 1
    assert sorted(k[2] for k in r.queues) == [1, 2, 3]
