"""RFC 9293 Appendix B conformance proofs that no other test file gives (see docs/conformance.md).

Each test's docstring names the requirement id(s) it proves.  Segment-level tests use the
virtual-time harness (``tcp_harness.Harness``); the few requirements that live below TCP
(address checks, ICMP, source address selection, MSS from the MTU) drive a real
``TcpConnection`` through ``ip.core.NetworkCore`` at frame level.  Tests marked
``xfail(strict=True)`` document a requirement the code violates today (the reason says how):
they turn into failures (XPASS) the day the behaviour is fixed, so the table can be updated.
"""
from __future__ import annotations

import errno

import pytest

from aiotcpstack.ip.core import NetworkCore
from aiotcpstack.ip.neighbour import REACHABLE
from aiotcpstack.mib import Counters
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.timer_wheel import TimerWheel
from aiotcpstack.wire import icmp as wicmp
from aiotcpstack.wire.arp import ARP_REQUEST, arp_reply_to, build_arp, parse_arp
from aiotcpstack.wire.ethernet import BROADCAST, ETH_P_ARP, ETH_P_IP, build_ethernet, parse_ethernet
from aiotcpstack.wire.ipv4 import build_ipv4_header, parse_ipv4
from aiotcpstack.wire.tcp import (
    ACK, NO_OPTIONS, SYN, TcpHeader, TcpOptions, build_tcp, encode_options, parse_tcp, verify_tcp_checksum,
)

from tcp_harness import FrameTx as Tx, Harness, Recorder

PLAIN = TcpConfig(timestamps=False, sack=False, window_scaling=False)
MSS = 1460


def est(cfg=PLAIN, *, window=65535, rtt=0.01, peer_opts=None, iss=1000, **kw):
    h = Harness(cfg, iss=iss, **kw)
    h.establish_active(5000, rtt=rtt, window=window,
                       peer_opts=peer_opts if peer_opts is not None else TcpOptions(mss=1460))
    return h


def seg_seq(i):
    return 1001 + i * MSS


# ============================================================================ PUSH flag

def test_psh_set_on_last_segment_of_the_buffered_data_only():
    """MUST-61 (PSH on the last buffered segment), SHLD-28 (full-sized segments when possible)."""
    h = est()
    h.conn.send(b"p" * (3 * MSS + 100), 0.1)
    out = h.take()
    assert [len(s.payload) for s in out] == [MSS, MSS, MSS, 100]
    assert [s.flags for s in out] == [".", ".", ".", "P."]


def test_corked_or_nagled_data_is_not_buffered_indefinitely():
    """MUST-60: the sender MUST NOT buffer data indefinitely.  Nagle: the held tail leaves with
    the ACK of the outstanding data, without another send() call.  TCP_CORK (config.cork): a
    corked partial segment with nothing in flight is pushed by the persist timer after one RTO
    (Linux caps corking at 200 ms)."""
    h = est()
    h.conn.send(b"a", 0.1)
    h.conn.send(b"b" * 10, 0.1)
    assert [s.payload for s in h.take()] == [b"a"]
    out = h.feed(0.2, ".", 5001, 1002)
    assert [(s.payload, s.flags) for s in out] == [(b"b" * 10, "P.")]
    k = est(TcpConfig(timestamps=False, sack=False, window_scaling=False, cork=True))
    k.conn.send(b"c" * 100, 0.1)
    assert k.take() == []
    out = k.run_until(0.1 + k.conn.rtt.rto + 1e-6)
    assert [(s.seq, s.payload) for s in out] == [(1001, b"c" * 100)]


# ============================================================================ Window

def test_window_field_is_unsigned():
    """MUST-1: a window field >= 0x8000 is a large positive window, not a negative one."""
    h = est(window=40000)
    assert h.conn.snd_wnd == 40000
    h.conn.send(b"u" * 20 * MSS, 0.1)
    assert len(h.take()) == 10                         # limited by cwnd (IW10), not by the window
    h.feed(0.2, ".", 5001, seg_seq(2), window=0xFFFF)
    assert h.conn.snd_wnd == 0xFFFF
    h.take()


def test_scaled_send_window_beyond_16_bits():
    """REC-1: the send window is handled as a 32-bit number (RFC 7323 scale 14)."""
    h = Harness(TcpConfig(timestamps=False, sack=False), iss=1000)
    h.establish_active(5000, peer_opts=TcpOptions(mss=1460, wscale=14))
    h.feed(0.1, ".", 5001, 1001, window=0xFFFF)
    assert h.conn.snd_wnd == 0xFFFF << 14 and h.conn.snd_wnd > 2 ** 29


def test_receiver_never_moves_right_edge_left():
    """SHLD-14: the advertised right edge (ACK + window) never moves left while the buffer fills."""
    cfg = TcpConfig(timestamps=False, sack=False, window_scaling=False, rcvbuf=8000, moderate_rcvbuf=False)
    h = est(cfg)
    h.conn.set_reading(False, 0.1)
    edges = []
    seq = 5001
    for i in range(14):
        out = h.feed(0.1 + i * 0.01, ".", seq, 1001, payload=b"e" * 700)
        seq += 700
        edges += [s.ack + s.window for s in out]
    assert len(edges) >= 10
    assert all(b >= a for a, b in zip(edges, edges[1:])), edges
    assert edges[-1] == 5001 + 8000                  # the buffer is full: window 0 at the old edge
    assert h.conn.unread_bytes == 8000


def test_shrunk_window_no_new_data_old_data_retransmitted_then_recovers():
    """SHLD-15 (no new data past a shrunk right edge), SHLD-16 (retransmit old unacked data),
    MUST-34 (robust against a shrinking window), MAY-7 (retransmit beyond SND.UNA+SND.WND)."""
    h = est(window=8 * MSS)
    c = h.conn
    c.send(b"s" * 20 * MSS, 0.1)
    out = h.take()
    assert [s.seq for s in out] == [seg_seq(i) for i in range(8)]
    # the peer acknowledges two segments and shrinks its window to 1 MSS: right edge seg 3 < SND.NXT
    out = h.feed(0.12, ".", 5001, seg_seq(2), window=MSS)
    assert out == [] and c.snd_nxt == seg_seq(8)
    c.send(b"t" * MSS, 0.13)
    assert h.take() == []                             # SHLD-15: nothing new
    out = h.run_until(h.wheel.next_expiry())
    assert [(s.seq, len(s.payload)) for s in out] == [(seg_seq(2), MSS)]   # SHLD-16: RTO resends the head
    # window 0: the head is still retransmitted, beyond SND.UNA + SND.WND (MAY-7)
    h.feed(h.now + 0.01, ".", 5001, seg_seq(3), window=0)
    h.take()
    out = h.run_until(h.wheel.next_expiry())
    assert [(s.seq, len(s.payload)) for s in out] == [(seg_seq(3), MSS)]
    assert h.conn.snd_wnd == 0
    # MUST-34: the window opens again and the transfer completes
    t = h.now + 0.01
    h.take()
    h.feed(t, ".", 5001, seg_seq(8), window=65535)
    while c.send_buffer_size:
        t += 0.02
        h.feed(t, ".", 5001, c.snd_nxt, window=65535)
    assert c.snd_una == seg_seq(21) and c.state == "ESTABLISHED"


def test_zero_window_with_outstanding_data_does_not_time_out_while_peer_answers():
    """SHLD-17 (do not time out data past the right edge), MUST-37 (window may stay zero
    indefinitely as long as the peer answers)."""
    h = est(TcpConfig(timestamps=False, sack=False, window_scaling=False, retries2=3))
    c = h.conn
    c.send(b"z" * 2 * MSS, 0.1)
    h.take()
    h.feed(0.11, ".", 5001, 1001, window=0)           # nothing acked, window shrinks to zero
    for _ in range(8):
        while True:
            ne = h.wheel.next_expiry()
            if ne is None:
                break
            out = h.run_until(ne)
            if out:
                break
        if c.state != "ESTABLISHED":
            break
        h.feed(h.now + 0.01, ".", 5001, 1001, window=0)   # the peer is alive: still zero
    assert c.state == "ESTABLISHED" and h.rec.closed == []


def test_first_zero_window_probe_after_one_rto_then_exponential_backoff():
    """MUST-35 (standard probing), MUST-36 (probe a zero window), SHLD-29 (first probe after one
    RTO), SHLD-30 (exponential backoff of the probe interval)."""
    h = est(window=0)
    rto = h.conn.rtt.rto
    h.conn.send(b"data", 0.1)
    assert h.take() == []
    out = h.run_until(0.1 + 15 * rto + 1e-6)
    assert [round(s.t - 0.1, 6) for s in out] == pytest.approx([rto, 3 * rto, 7 * rto, 15 * rto])
    assert all(s.payload == b"" and s.seq == 1000 for s in out)


def test_rst_processed_with_zero_receive_window():
    """MUST-66 (RST part): a RST at RCV.NXT is processed although the receive window is zero."""
    cfg = TcpConfig(timestamps=False, sack=False, window_scaling=False, rcvbuf=2000, moderate_rcvbuf=False)
    h = est(cfg)
    h.conn.set_reading(False, 0.1)
    h.feed(0.1, ".", 5001, 1001, payload=b"f" * 2000)
    h.take()
    assert h.conn.rcv_adv == h.conn.rcv_nxt            # zero window
    h.feed(0.2, "R", 7001, 0)
    assert h.conn.state == "CLOSED" and isinstance(h.rec.closed[0], ConnectionResetError)


# ============================================================================ TCP options / MSS

def test_mss_option_only_on_syn_segments():
    """MUST-65 (no MSS option on non-SYN segments), MUST-14 (send MSS)."""
    h = Harness(TcpConfig(), iss=1000)
    syn = h.establish_active(5000)
    assert syn.opts.mss == 1460
    h.conn.send(b"m" * 3 * MSS, 0.1)
    h.feed(0.11, "P.", 5001, 1001, payload=b"reply", opts=TcpOptions(timestamp=(200, 0)))
    h.conn.close(0.2)
    h.run_until(2.0)
    later = h.take()
    assert len(later) >= 4 and all(s.opts.mss is None for s in later)
    # passive side: the SYN-ACK carries it, nothing after it does
    p = Harness(TcpConfig(), iss=1)
    synack = p.establish_passive(7000)
    assert synack.flags == "S." and synack.opts.mss == 1460
    p.conn.send(b"x" * 10, 0.1)
    assert all(s.opts.mss is None for s in p.take())


def test_mss_option_sent_on_ipv6_and_even_when_it_is_the_default():
    """SHLD-5 (IPv4 and IPv6: send the MSS option unless it is the default) and MAY-3 (always
    send it): the option is in every SYN and SYN-ACK, including when it equals 536 / 1220."""
    v6 = Harness(TcpConfig(mss=1440), iss=1, local=(bytes(15) + b"\x01", 40000), remote=(bytes(15) + b"\x02", 80))
    v6.conn.connect(0.0)
    assert v6.take_one().opts.mss == 1440
    v6d = Harness(TcpConfig(mss=1220), iss=1, local=(bytes(15) + b"\x01", 40000), remote=(bytes(15) + b"\x02", 80))
    v6d.conn.connect(0.0)
    assert v6d.take_one().opts.mss == 1220
    v4d = Harness(TcpConfig(mss=536), iss=1)
    v4d.conn.accept_syn(v4d.segment("S", 7000, 0, 65535, TcpOptions(mss=1460)), 0.0)
    assert v4d.take_one().opts.mss == 536


def test_options_parsed_regardless_of_word_alignment():
    """MUST-64: options are found at any offset (MSS after one NOP, SACK-permitted and window
    scale misaligned, timestamps at an odd offset)."""
    opts = bytes.fromhex("01" "020405b4" "0402" "030307" "080a0000000b0000000c" "01" "000000")
    assert len(opts) % 4 == 0
    raw = TcpHeader(1, 2, 3, 4, SYN, 5)
    seg = bytearray(build_tcp(raw, b"", b"\x0a\0\0\x01", b"\x0a\0\0\x02"))
    seg[12] = ((20 + len(opts)) // 4) << 4
    seg[20:20] = opts
    hdr, _ = parse_tcp(bytes(seg))
    assert hdr.options == TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(11, 12))


def test_encoded_options_need_no_padding_and_every_option_has_a_length():
    """MUST-69 (header padding is zeros: the Linux layout aligns with NOPs so no trailing
    padding byte is ever needed) and MUST-68 (every option but EOL/NOP carries a length)."""
    for opts in (TcpOptions(mss=1460), TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(1, 2)),
                 TcpOptions(sack_permitted=True), TcpOptions(wscale=0), TcpOptions(timestamp=(5, 6)),
                 TcpOptions(timestamp=(5, 6), sack_blocks=((1, 2), (3, 4), (5, 6)))):
        raw = encode_options(opts)
        assert len(raw) % 4 == 0
        i = 0
        while i < len(raw):
            kind = raw[i]
            assert kind != 0                            # no EOL/zero padding needed
            if kind == 1:
                i += 1
                continue
            length = raw[i + 1]
            assert length >= 2 and i + length <= len(raw)
            i += length
        assert i == len(raw)


# ============================================================================ Opening / closing

def test_rst_in_syn_received_from_simultaneous_open_is_connection_refused():
    """MUST-11: SYN-RECEIVED remembers how it was reached: entered from SYN-SENT (active open),
    a RST means "connection refused" and the connection is closed."""
    h = Harness(PLAIN, iss=1000)
    h.conn.connect(0.0)
    h.take()
    h.feed(0.01, "S", 5000, 0, opts=TcpOptions(mss=1460))
    assert h.conn.state == "SYN_RECEIVED"
    h.take()
    h.feed(0.02, "R", 5001, 0)
    assert h.conn.state == "CLOSED" and isinstance(h.rec.closed[0], ConnectionRefusedError)


def test_rst_carrying_data_resets_the_connection():
    """SHLD-2: a received RST may contain data (it is still a valid reset)."""
    h = est()
    h.feed(0.1, "R", 5001, 0, payload=b"diagnostic: going away")
    assert h.conn.state == "CLOSED" and isinstance(h.rec.closed[0], ConnectionResetError)
    assert h.rec.data == b""


def _time_wait_with_timestamps():
    h = Harness(TcpConfig(sack=False, window_scaling=False), iss=1000)
    h.establish_active(5000, peer_opts=TcpOptions(mss=1460, timestamp=(100, 0)))
    h.conn.close(0.1)
    h.take()
    h.feed(0.2, "F.", 5001, 1002, opts=TcpOptions(timestamp=(300, 0)))
    h.take()
    assert h.conn.state == "TIME_WAIT"
    return h


def test_time_wait_reopened_by_syn_with_newer_timestamp_only():
    """SHLD-4 (timestamps shorten TIME-WAIT, RFC 6191), MAY-2 (accept a SYN in TIME-WAIT): a SYN
    whose ISN is *not* above RCV.NXT is accepted if its timestamp is newer, refused if older."""
    old = _time_wait_with_timestamps()
    out = old.feed(5.0, "S", 4000, 0, opts=TcpOptions(mss=1460, timestamp=(250, 0)))
    assert old.conn.state == "TIME_WAIT" and [s.flags for s in out] == ["."]
    new = _time_wait_with_timestamps()
    out = new.feed(5.0, "S", 4000, 0, opts=TcpOptions(mss=1460, timestamp=(5300, 0)))
    assert out == [] and new.conn.state == "CLOSED" and new.released == [new.conn]


# ============================================================================ ACK generation

def test_delayed_ack_is_sent_within_half_a_second_on_a_slow_path():
    """MUST-40: the ACK delay is below 0.5 s, also with a 1 s RTT and lone segments."""
    h = est(rtt=1.0)
    for i in range(16):                                  # leave quickack mode
        h.feed(1.1, ".", 5001 + i, 1001, payload=b"q")
    h.take()
    seq = 5017
    t = 1.2
    for i in range(10):
        out = h.feed(t, ".", seq, 1001, payload=b"L" * 100)
        seq += 100
        later = out + h.run_until(t + 0.5)
        acks = [s for s in later if s.ack == seq]
        assert acks and acks[0].t - t < 0.5, (i, later)
        t += 0.7 + 0.05 * i


def test_receiver_sws_avoidance_right_edge_moves_by_at_least_one_mss():
    """MUST-39 (receiver SWS avoidance, RFC 1122 4.2.3.3): the right edge is not advanced by less
    than min(RCV.BUFF/2, MSS) even though the application reads everything at once."""
    cfg = TcpConfig(timestamps=False, sack=False, window_scaling=False, rcvbuf=8000, moderate_rcvbuf=False)
    h = est(cfg)
    seq = 5001
    edges = []
    for i in range(12):
        out = h.feed(0.1 + i * 0.001, ".", seq, 1001, payload=b"w" * 100)
        seq += 100
        edges += [s.ack + s.window for s in out]
    assert bytes(h.rec.data) == b"w" * 1200            # everything was read at once
    moves = [b - a for a, b in zip(edges, edges[1:]) if b != a]
    assert moves and all(m >= 536 for m in moves), (edges, moves)
    assert edges[0] == 5001 + 8000                      # the first 100 bytes did not move the edge


# ============================================================================ Connection failures

def test_default_r2_gives_more_than_100_seconds():
    """SHLD-11 (R2 >= 100 s) and MUST-20 (close after R2): with the defaults the connection keeps
    retransmitting past 100 s and is then closed with a timeout."""
    h = est(TcpConfig(timestamps=False, sack=False, window_scaling=False))
    h.conn.send(b"r" * 100, 0.1)
    h.take()
    out = h.run_until(100.0)
    assert h.conn.state == "ESTABLISHED" and len(out) >= 5
    h.run_until(3600.0)
    assert h.conn.state == "CLOSED" and isinstance(h.rec.closed[0], TimeoutError)


def test_negative_advice_from_the_r1_th_timeout_on_but_not_for_zero_window_probes():
    """MUST-20 (negative advice to IP at R1 retransmissions) and SHLD-10 (R1 is at least 3
    retransmissions): TCP advises IP at the timeout after the third unanswered retransmission
    and at every timeout after it, for data and for a SYN; window probes to a peer that keeps
    answering with a zero window give no advice (the path works).  The probe IP sends is
    proved below, at frame level."""
    h = est(TcpConfig(timestamps=False, sack=False, window_scaling=False))
    c = h.conn
    c.send(b"r" * 100, 0.1)
    h.take()
    advice = []
    while c.retransmits < 6:
        h.run_until(h.wheel.next_expiry())
        advice.append((c.retransmits, h.counters["TCPNegativeAdvice"]))
    assert advice == [(1, 0), (2, 0), (3, 0), (4, 1), (5, 2), (6, 3)]

    h = Harness(TcpConfig(), iss=1000)
    h.conn.connect(0.0)
    h.take()
    h.run_until(1.0 + 2 + 4 + 0.5)                       # three SYN retransmissions
    assert h.conn.retransmits == 3 and h.counters["TCPNegativeAdvice"] == 0
    h.run_until(1.0 + 2 + 4 + 8 + 0.5)                   # the fourth
    assert h.conn.retransmits == 4 and h.counters["TCPNegativeAdvice"] == 1

    h = est(TcpConfig(timestamps=False, sack=False, window_scaling=False))
    h.conn.send(b"z" * 2 * MSS, 0.1)
    h.take()
    h.feed(0.11, ".", 5001, 1001, window=0)
    for _ in range(8):
        h.run_until(h.wheel.next_expiry())
        h.feed(h.now + 0.01, ".", 5001, 1001, window=0)   # the peer answers: still zero
    assert h.conn.retransmits >= 6 and h.counters["TCPNegativeAdvice"] == 0


@pytest.mark.xfail(strict=True, reason="MUST-23: with the default syn_retries=6 (Linux) an unanswered SYN "
                   "gives up after 127 s; RFC 9293 requires at least 3 minutes of SYN retransmission")
def test_syn_retransmitted_for_at_least_three_minutes_by_default():
    """MUST-23: R2 for a SYN is at least 3 minutes (default configuration)."""
    h = Harness(TcpConfig(), iss=1000)
    h.conn.connect(0.0)
    h.take()
    h.run_until(180.0)
    assert h.conn.state == "SYN_SENT"


# ============================================================================ Keep-alive

def test_keepalive_off_by_default():
    """MUST-25: keep-alives are off unless the application asks for them."""
    h = est(TcpConfig(timestamps=False, sack=False, window_scaling=False))
    assert h.run_until(4 * 3600.0) == [] and h.conn.state == "ESTABLISHED"
    assert h.counters["TCPKeepAlive"] == 0


def test_keepalive_default_interval_is_two_hours_and_probe_has_no_data():
    """MUST-28 (default interval >= 2 h), SHLD-12 (probe without data), MUST-24 (the
    application requests keep-alive: config.keepalive)."""
    h = est(TcpConfig(timestamps=False, sack=False, window_scaling=False, keepalive=True))
    assert h.run_until(7199.0) == []
    out = h.run_until(7201.0)
    assert len(out) == 1 and out[0].payload == b"" and out[0].seq == 1000 and out[0].flags == "."
    assert out[0].t >= 7200.0


# ============================================================================ below TCP: NetworkCore

MY_MAC = bytes.fromhex("02aa00000001")
PEER_MAC = bytes.fromhex("02bb00000002")
PEER_MAC2 = bytes.fromhex("02bb00000003")
MY_IP = bytes([198, 18, 0, 1])
MY_IP2 = bytes([198, 18, 0, 7])
PEER_IP = bytes([198, 18, 0, 2])
GW_IP = bytes([198, 18, 0, 254])


def make_core(mtu=1500, addresses=((MY_IP, 24),)):
    """A dedicated-mode core with the real TcpConnection and a known peer MAC."""
    tx = Tx()
    core = NetworkCore(MY_MAC, mtu, list(addresses), Counters(), TcpConfig(timestamps=False, sack=False),
                       TimerWheel(), tx, None, dedicated=True, routes=[(b"\0\0\0\0", 0, GW_IP)], strict=True)
    core.neigh.update(PEER_IP, PEER_MAC, 0.0)
    core.neigh.update(GW_IP, PEER_MAC, 0.0)
    return core, tx


def ip_frame(l4, proto=6, src=PEER_IP, dst=MY_IP, dst_mac=MY_MAC):
    return build_ethernet(dst_mac, PEER_MAC, ETH_P_IP) + build_ipv4_header(src, dst, proto, len(l4)) + l4


def tcp_frame(hdr, payload=b"", src=PEER_IP, dst=MY_IP, dst_mac=MY_MAC):
    return ip_frame(build_tcp(hdr, payload, src, dst), 6, src, dst, dst_mac)


def parse_out(frame):
    _, _, et, payload = parse_ethernet(frame)
    assert et == ETH_P_IP
    ip, seg = parse_ipv4(payload)
    if ip.proto != 6:
        return ip, None
    assert verify_tcp_checksum(seg, ip.src, ip.dst)
    return ip, parse_tcp(seg)[0]


def tcp_out(tx):
    return [p for p in (parse_out(f) for f in tx if parse_ethernet(f)[2] == ETH_P_IP) if p[1] is not None]


def test_advertised_mss_follows_the_link_mtu():
    """MUST-67 (the MSS sent is based on MMS_R: MTU - 40 for IPv4) and MUST-16 (segments sent
    never exceed the effective MSS)."""
    for mtu in (1280, 1500, 9000):
        core, tx = make_core(mtu=mtu)
        rec = Recorder()
        conn = core.connect(PEER_IP, 80, rec, 0.0)
        (ip, syn), = tcp_out(tx)
        assert syn.flags == SYN and syn.options.mss == mtu - 40
        tx.clear()
        lport = conn.local[1]
        core.receive([(tcp_frame(TcpHeader(80, lport, 5000, syn.seq + 1, SYN | ACK, 65535,
                                           TcpOptions(mss=8960))), False)], 0.01)
        conn.send(b"x" * 20000, 0.02)
        sizes = [len(parse_ipv4(parse_ethernet(f)[3])[1]) - 20 for f in tx if parse_ethernet(f)[2] == ETH_P_IP]
        assert max(sizes) == min(mtu - 40, 8960) and rec.names() == ["established"]


def _established_core():
    core, tx = make_core()
    rec = Recorder()
    conn = core.connect(PEER_IP, 80, rec, 0.0)
    (_, syn), = tcp_out(tx)
    core.receive([(tcp_frame(TcpHeader(80, conn.local[1], 5000, syn.seq + 1, SYN | ACK, 65535,
                                       TcpOptions(mss=1460))), False)], 0.01)
    assert conn.state == "ESTABLISHED"
    tx.clear()
    return core, tx, rec, conn, syn


@pytest.mark.parametrize("icmp_type, code", [(3, 0), (3, 1), (3, 5), (11, 0), (11, 1), (12, 0), (4, 0)])
def test_icmp_soft_errors_and_source_quench_do_not_abort(icmp_type, code):
    """MUST-56 (no abort on Destination Unreachable codes 0, 1, 5; on Time Exceeded; on Parameter
    Problem) and MUST-55 (Source Quench is silently discarded): the error does reach the
    connection (MUST-54, ``ip/icmp_errors.py``) and is kept as its soft error; a source quench
    is not even that."""
    core, tx, rec, conn, syn = _established_core()
    conn.send(b"hello", 0.02)
    (ip, data_hdr), = tcp_out(tx)
    tx.clear()
    quoted = (build_ipv4_header(MY_IP, PEER_IP, 6, 25)
              + build_tcp(data_hdr, b"hello", MY_IP, PEER_IP)[:8])
    if icmp_type == 3:
        msg = wicmp.build_icmpv4_dest_unreach(code, quoted)
    else:
        msg = wicmp.build_icmpv4(icmp_type, code, bytes(4), quoted)
    core.receive([(ip_frame(msg, proto=1), False)], 0.03)
    c = core.counters
    assert c["IcmpInMsgs"] == 1 and c["IcmpInErrors"] == 0          # it reached the ICMP input path
    assert c["IcmpInDestUnreachs"] == (1 if icmp_type == 3 else 0)
    assert conn.state == "ESTABLISHED" and rec.closed == [] and tx == []
    assert core.demux.conns                                  # still demultiplexed
    if icmp_type == 4:
        assert conn.soft_err == 0 and c["TCPIcmpSoftErrors"] == 0
    else:
        assert conn.soft_err != 0 and c["TCPIcmpSoftErrors"] == 1


def test_segments_to_broadcast_or_multicast_addresses_are_silently_discarded():
    """MUST-57 (silently discard a segment / SYN addressed to a broadcast or multicast address)."""
    core, tx = make_core()
    core.listen(None, 80, 10, lambda conn: Recorder())
    syn = TcpHeader(40000, 80, 77, 0, SYN, 1000, TcpOptions(mss=1460))
    frames = [
        tcp_frame(syn, dst=b"\xff\xff\xff\xff"),                                   # limited broadcast
        tcp_frame(syn, dst=bytes([198, 18, 0, 255]), dst_mac=b"\xff" * 6),         # subnet broadcast
        tcp_frame(syn, dst=bytes([224, 0, 0, 1]), dst_mac=bytes.fromhex("01005e000001")),  # multicast
        tcp_frame(syn, dst=bytes([198, 18, 0, 255])),                              # unicast MAC, bcast IP
    ]
    core.receive([(f, False) for f in frames], 0.0)
    assert tx == [] and core.demux.conns == {}
    core.receive([(tcp_frame(syn), False)], 0.1)                # control: to our address
    assert [h.flags for _, h in tcp_out(tx)] == [SYN | ACK]


@pytest.mark.parametrize("src", [b"\xff\xff\xff\xff", bytes([224, 0, 0, 9]), bytes([198, 18, 0, 255])])
def test_syn_from_broadcast_or_multicast_source_is_rejected(src):
    """MUST-63: reject a SYN from an invalid (broadcast/multicast) source address."""
    core, tx = make_core()
    core.listen(None, 80, 10, lambda conn: Recorder())
    core.receive([(tcp_frame(TcpHeader(40000, 80, 77, 0, SYN, 1000, TcpOptions(mss=1460)), src=src), False)], 0.0)
    assert core.demux.conns == {} and tcp_out(tx) == []


@pytest.mark.parametrize("dst", [b"\xff\xff\xff\xff", bytes([224, 0, 0, 9]), bytes([198, 18, 0, 255])])
def test_open_to_broadcast_or_multicast_is_rejected(dst):
    """MUST-46: an OPEN to a broadcast/multicast address is rejected."""
    core, tx = make_core()
    with pytest.raises(OSError):
        core.connect(dst, 80, Recorder(), 0.0)
    assert tcp_out(tx) == []


def test_open_local_address_parameter_and_source_selection():
    """MUST-43 (optional local IP address in OPEN), MUST-44 (ask IP for the source address when
    none is given), MUST-45 (otherwise use the connection's local address: also for the
    SYN-ACK of a passive open, which uses the address the SYN was sent to)."""
    core, tx = make_core(addresses=((MY_IP, 24), (MY_IP2, 24)))
    c1 = core.connect(PEER_IP, 80, Recorder(), 0.0, lip=MY_IP2)
    c2 = core.connect(PEER_IP, 80, Recorder(), 0.0)
    (ip1, s1), (ip2, s2) = tcp_out(tx)
    assert c1.local[0] == MY_IP2 and ip1.src == MY_IP2 and s1.flags == SYN
    assert c2.local[0] == core.routing.source_for(PEER_IP) == MY_IP and ip2.src == MY_IP
    with pytest.raises(OSError):
        core.connect(PEER_IP, 80, Recorder(), 0.0, lip=bytes([198, 18, 0, 99]))   # not ours
    tx.clear()
    core.listen(None, 8080, 10, lambda conn: Recorder())
    core.receive([(tcp_frame(TcpHeader(40000, 8080, 77, 0, SYN, 1000), dst=MY_IP2), False)], 0.1)
    (ip3, sa), = tcp_out(tx)
    assert sa.flags == SYN | ACK and ip3.src == MY_IP2


def test_listen_on_a_port_with_a_connection_in_syn_sent_and_listens_do_not_interfere():
    """MUST-42 (LISTEN on a port while a connection with the same local port is in SYN-SENT /
    SYN-RECEIVED) and MUST-41 (a passive OPEN does not affect existing connection records)."""
    core, tx = make_core()
    rec = Recorder()
    active = core.connect(PEER_IP, 80, rec, 0.0, lport=5555)
    assert active.state == "SYN_SENT"
    core.listen(None, 5555, 10, lambda conn: Recorder())
    with pytest.raises(OSError):
        core.listen(MY_IP, 5555, 10, lambda conn: Recorder())      # second passive OPEN: an error
    tx.clear()
    frames = [(tcp_frame(TcpHeader(41000 + i, 5555, 100 * i, 0, SYN, 1000)), False) for i in range(3)]
    core.receive(frames, 0.1)
    assert [h.flags for _, h in tcp_out(tx)] == [SYN | ACK] * 3
    assert active.state == "SYN_SENT" and rec.events == []
    # the three passive opens wait as request socks in the SYN queue (Linux), not as connections
    assert len(core.demux.conns) == 1
    assert core.demux.listener_for(MY_IP, 5555).syn_queue_len == 3


def _ipv4_with_options(l4, options, src=PEER_IP, dst=MY_IP):
    """An IPv4 datagram whose header carries ``options`` (a multiple of 4 bytes)."""
    import struct
    from aiotcpstack.wire.checksum import internet_checksum
    ihl = 5 + len(options) // 4
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(l4), 1, 0x4000, 64, 6, 0, src, dst)
                    + options)
    hdr[10:12] = struct.pack("!H", internet_checksum(bytes(hdr)))
    return build_ethernet(MY_MAC, PEER_MAC, ETH_P_IP) + bytes(hdr) + l4


def test_ip_options_tcp_does_not_understand_are_ignored():
    """MUST-50: IP options (here NOPs and a Record Route option) do not stop the TCP segment from
    being processed: the SYN is answered and data on the connection is delivered."""
    core, tx = make_core()
    accepted = []

    def on_accept(conn):
        accepted.append(Recorder())
        return accepted[-1]

    core.listen(None, 80, 10, on_accept)
    rr = bytes((7, 11, 4)) + bytes(8) + b"\x00"                 # Record Route (2 slots) + EOL
    syn = build_tcp(TcpHeader(40000, 80, 77, 0, SYN, 65535, TcpOptions(mss=1460)), b"", PEER_IP, MY_IP)
    core.receive([(_ipv4_with_options(syn, rr), False)], 0.0)
    (_, sa), = tcp_out(tx)
    assert sa.flags == SYN | ACK and sa.ack == 78
    data = build_tcp(TcpHeader(40000, 80, 78, sa.seq + 1, ACK, 65535), b"opts ok", PEER_IP, MY_IP)
    core.receive([(_ipv4_with_options(data, b"\x01\x01\x01\x00"), False)], 0.1)
    assert len(accepted) == 1 and bytes(accepted[0].data) == b"opts ok"


def _arps(tx):
    """(destination MAC, ARP packet) of the ARP frames in ``tx``."""
    out = []
    for f in tx:
        dst, _, et, payload = parse_ethernet(f)
        if et == ETH_P_ARP:
            out.append((dst, parse_arp(payload)))
    return out


def test_negative_advice_makes_ip_reconfirm_the_next_hop():
    """MUST-20 (negative advice to IP after R1 retransmissions; RFC 1122 3.3.1.4 dead-gateway
    detection): at the fourth retransmission timeout of a segment the neighbour -- still
    REACHABLE by age -- is probed at once with a unicast ARP request; an answer confirms it,
    silence makes the table forget the MAC, so the next retransmission resolves afresh
    (broadcast)."""
    core, tx = make_core()
    wheel = core.wheel
    core.now_fn = lambda: wheel.now                        # the core's clock follows the timers
    c = core.counters
    conn = core.connect(PEER_IP, 80, Recorder(), 0.0)
    (_, syn), = tcp_out(tx)
    core.receive([(tcp_frame(TcpHeader(80, conn.local[1], 5000, syn.seq + 1, SYN | ACK, 65535,
                                       TcpOptions(mss=1460))), False)], 0.01)
    conn.send(b"r" * 100, 0.02)
    tx.clear()
    while conn.retransmits < 3:
        wheel.advance(wheel.next_expiry())
    assert _arps(tx) == [] and c["TCPNegativeAdvice"] == 0
    assert core.neigh.entries[PEER_IP].state == REACHABLE
    tx.clear()
    wheel.advance(wheel.next_expiry())                    # the fourth timeout: advice
    assert conn.retransmits == 4 and c["TCPNegativeAdvice"] == 1
    (dst, arp), = _arps(tx)
    assert dst == PEER_MAC and arp.op == ARP_REQUEST and arp.tpa == PEER_IP and arp.spa == MY_IP
    assert [h.seq for _, h in tcp_out(tx)] == [syn.seq + 1]          # and the retransmission
    t = wheel.now
    reply = arp_reply_to(arp, PEER_MAC)
    core.receive([(build_ethernet(MY_MAC, PEER_MAC, ETH_P_ARP) + build_arp(reply), False)], t + 0.001)
    assert core.neigh.entries[PEER_IP].state == REACHABLE and core.neigh.entries[PEER_IP].confirmed > t
    # the next timeouts advise again; now nobody answers the probes: the MAC is forgotten and
    # the retransmission after that is held for a broadcast resolution
    tx.clear()
    while core.neigh.entries[PEER_IP].mac is not None:
        wheel.advance(wheel.next_expiry())
    assert c["TCPNegativeAdvice"] >= 2
    assert {dst for dst, a in _arps(tx)} == {PEER_MAC}          # unicast probes only, so far
    tx.clear()
    n = conn.retransmits
    while conn.retransmits == n:
        wheel.advance(wheel.next_expiry())
    assert tcp_out(tx) == [] and [dst for dst, _ in _arps(tx)] == [BROADCAST]


def test_negative_advice_follows_a_changed_route():
    """MUST-20: the advice also looks the route up again -- a connection through a gateway that
    the routing table no longer chooses for its destination moves to the new next hop (and
    probes it)."""
    core, tx = make_core(addresses=((MY_IP, 24),))
    far = bytes([198, 19, 5, 5])                            # off-link: through GW_IP
    conn = core.connect(far, 80, Recorder(), 0.0)
    (_, syn), = tcp_out(tx)
    core.receive([(tcp_frame(TcpHeader(80, conn.local[1], 5000, syn.seq + 1, SYN | ACK, 65535,
                                       TcpOptions(mss=1460)), src=far), False)], 0.01)
    conn.send(b"r" * 100, 0.02)
    new_gw = bytes([198, 18, 0, 253])
    core.routing.add_route(bytes([198, 19, 0, 0]), 16, new_gw)      # a more specific route appears
    core.neigh.update(new_gw, PEER_MAC2, 0.0)
    tx.clear()
    while conn.retransmits < 4:
        core.wheel.advance(core.wheel.next_expiry())
    route = core.routes[conn]
    assert route.neigh.ip == new_gw
    assert [(dst, a.tpa) for dst, a in _arps(tx)] == [(PEER_MAC2, new_gw)]


def test_isn_key_is_random_per_core_unless_one_is_given():
    """MUST-9 (the ISN generator's PRF must not be computable from outside the host): a core
    built without a secret draws its own random key, so two cores choose different ISNs for the
    same 4-tuple at the same instant; a secret that is given is used as is (simulations and
    tests stay reproducible)."""
    def isn(**kw):
        tx = Tx()
        core = NetworkCore(MY_MAC, 1500, [(MY_IP, 24)], Counters(), TcpConfig(), TimerWheel(), tx, None,
                           dedicated=True, strict=True, **kw)
        core.neigh.update(PEER_IP, PEER_MAC, 0.0)
        core.connect(PEER_IP, 80, Recorder(), 1.0, lport=40000)
        (_, syn), = tcp_out(tx)
        return core.secret, syn.seq

    (key_a, isn_a), (key_b, isn_b) = isn(), isn()
    assert len(key_a) == 32 and key_a != key_b and isn_a != isn_b
    assert isn(secret=b"fixed") == isn(secret=b"fixed")


def test_icmp_soft_error_is_available_to_the_application():
    """SHLD-25 (Destination Unreachable codes 0, 1, 5: make the information available to the
    application) and MUST-47 (a mechanism to report soft errors): the connection keeps running
    and its ``tcp_info`` snapshot (``transport.get_extra_info('tcp_info')``) shows the error, as
    Linux's SO_ERROR shows sk_err_soft, until the peer acknowledges new data; a timeout would
    report it instead of ETIMEDOUT (tests/unit/test_ip_icmp_errors.py)."""
    core, tx, rec, conn, syn = _established_core()
    assert conn.snapshot()["soft_error"] == 0
    conn.send(b"hello", 0.02)
    (ip, data_hdr), = tcp_out(tx)
    quoted = build_ipv4_header(MY_IP, PEER_IP, 6, 25) + build_tcp(data_hdr, b"hello", MY_IP, PEER_IP)[:8]
    core.receive([(ip_frame(wicmp.build_icmpv4_dest_unreach(wicmp.ICMP_HOST_UNREACH, quoted), proto=1), False)], 0.03)
    assert conn.state == "ESTABLISHED" and conn.snapshot()["soft_error"] == errno.EHOSTUNREACH
    core.receive([(tcp_frame(TcpHeader(80, conn.local[1], 5001, data_hdr.seq + 5, ACK, 65535)), False)], 0.04)
    assert conn.snapshot()["soft_error"] == 0 and rec.closed == []
