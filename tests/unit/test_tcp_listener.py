"""Listener (tcp/listener.py): SYN queue of request socks, SYN-ACK retransmission, accept queue,
overflow as Linux, SYN cookies, close(). Segment level on virtual time: feed a segment at T and
assert exactly what goes out and when."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from aiotcpstack.mib import Counters
from aiotcpstack.tcp import syncookies
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.isn import IsnGenerator
from aiotcpstack.tcp.listener import Listener
from aiotcpstack.tcp.timer_wheel import TimerWheel
from aiotcpstack.wire.tcp import NO_OPTIONS, TcpHeader, TcpOptions

from tcp_harness import Recorder, flags_str, parse_flags

MASK = 0xFFFFFFFF
LIP = bytes([10, 0, 0, 1])
RIP = bytes([10, 0, 0, 2])
LIP6 = bytes.fromhex("20010002000000000000000000000001")
RIP6 = bytes.fromhex("20010002000000000000000000000002")
LPORT = 80
ISN_SECRET = b"isn-secret"
COOKIE_SECRET = b"cookie-secret"
FULL_OPTS = TcpOptions(mss=1400, wscale=5, sack_permitted=True, timestamp=(5000, 0))


@dataclass
class Out:
    t: float
    lip: bytes
    rip: bytes
    hdr: TcpHeader
    payload: bytes

    @property
    def flags(self) -> str:
        return flags_str(self.hdr.flags)

    @property
    def seq(self) -> int:
        return self.hdr.seq

    @property
    def ack(self) -> int:
        return self.hdr.ack

    @property
    def opts(self) -> TcpOptions:
        return self.hdr.options

    @property
    def tsval(self) -> int:
        return self.hdr.options.timestamp[0]


class LHarness:
    def __init__(self, config: TcpConfig | None = None, *, backlog: int = 8, young_check: bool = True,
                 lip: bytes = LIP) -> None:
        self.config = config or TcpConfig()
        self.wheel = TimerWheel(0.0)
        self.counters = Counters()
        self.now = 0.0
        self.out: list[Out] = []
        self.acceptable = 0
        self.isn = IsnGenerator(ISN_SECRET)
        self.lip = lip
        self.listener = Listener(config=self.config, wheel=self.wheel, counters=self.counters,
                                 local=(lip, LPORT), backlog=backlog, isn=self.isn,
                                 secret=COOKIE_SECRET, send=self._send,
                                 on_acceptable=self._on_acceptable, young_check=young_check)

    def _send(self, lip, rip, hdr, payload) -> None:
        self.out.append(Out(self.now, lip, rip, hdr, bytes(payload)))

    def _on_acceptable(self) -> None:
        self.acceptable += 1

    def at(self, t: float) -> None:
        while True:
            ne = self.wheel.next_expiry()
            if ne is None or ne > t + 1e-12:
                break
            self.now = max(self.now, ne)
            self.wheel.advance(ne)
        self.now = t
        self.wheel.advance(t)

    def run_until(self, t: float) -> list[Out]:
        mark = len(self.out)
        self.at(t)
        return self.out[mark:]

    def feed(self, t: float, flags: str, seq: int, ack: int = 0, *, rport: int = 40000,
             window: int = 65535, payload: bytes = b"", opts: TcpOptions = NO_OPTIONS,
             rip: bytes = RIP):
        """Segment from (rip, rport) at ``t``: returns (child or None, segments sent)."""
        self.at(t)
        mark = len(self.out)
        hdr = TcpHeader(rport, LPORT, seq & MASK, ack & MASK, parse_flags(flags), window, opts)
        child = self.listener.on_segment(self.lip, rip, hdr, payload, t)
        if child is not None:
            child.end_batch(t)
        return child, self.out[mark:]

    def syn(self, t: float, *, seq: int = 5000, rport: int = 40000, opts: TcpOptions = FULL_OPTS,
            rip: bytes = RIP) -> list[Out]:
        return self.feed(t, "S", seq, rport=rport, opts=opts, rip=rip)[1]

    def handshake(self, t: float, *, seq: int = 5000, rport: int = 40000, rtt: float = 0.01,
                  opts: TcpOptions = FULL_OPTS, payload: bytes = b""):
        """SYN at t, final ACK at t + rtt; returns (child, synack)."""
        out = self.syn(t, seq=seq, rport=rport, opts=opts)
        assert [o.flags for o in out] == ["S."], out
        synack = out[0]
        ack_opts = NO_OPTIONS
        if synack.opts.timestamp is not None:
            ack_opts = TcpOptions(timestamp=(opts.timestamp[0] + 1, synack.tsval))
        child, _ = self.feed(t + rtt, ".", seq + 1, synack.seq + 1, rport=rport, opts=ack_opts,
                             payload=payload)
        return child, synack

    def take(self) -> list[Out]:
        out, self.out = self.out, []
        return out


def expected_isn(h: LHarness, rport: int, t: float, rip: bytes = RIP) -> int:
    return h.isn.isn(h.lip, LPORT, rip, rport, t)


# ---------------------------------------------------------------------------------------- handshake

def test_full_handshake_into_accept_queue():
    h = LHarness()
    out = h.syn(0.0)
    assert len(out) == 1
    sa = out[0]
    off = h.isn.ts_offset(LIP, RIP)
    assert sa.flags == "S." and sa.lip == LIP and sa.rip == RIP
    assert sa.hdr.src_port == LPORT and sa.hdr.dst_port == 40000
    assert sa.seq == expected_isn(h, 40000, 0.0) and sa.ack == 5001
    assert sa.hdr.window == 65535                                      # never scaled in a SYN
    assert sa.opts.mss == 1460 and sa.opts.wscale == 7 and sa.opts.sack_permitted
    assert sa.opts.timestamp == (off & MASK, 5000)
    lst = h.listener
    assert lst.syn_queue_len == 1 and lst.accept_queue_len == 0 and h.wheel.next_expiry() == 1.0
    assert h.counters["OutSegs"] == 1 and h.counters["PassiveOpens"] == 0

    child, out = h.feed(0.01, ".", 5001, sa.seq + 1, window=1000,
                        opts=TcpOptions(timestamp=(5001, sa.tsval)))
    assert out == []                                                   # nothing to say yet
    assert child is not None and child.state == "ESTABLISHED"
    assert lst.syn_queue_len == 0 and lst.accept_queue_len == 1 and h.acceptable == 1
    assert h.counters["PassiveOpens"] == 1 and h.counters["CurrEstab"] == 1
    assert h.wheel.next_expiry() is None                               # request timer gone
    # the negotiated options reached the child
    assert child.iss == sa.seq and child.irs == 5000 and child.rcv_nxt == 5001
    assert child.local == (LIP, LPORT) and child.remote == (RIP, 40000)
    assert child.peer_mss == 1400 and child.mss == 1400 - 12
    assert child.ws_ok and child.snd_wscale == 5 and child.rcv_wscale == 7
    assert child.snd_wnd == 1000 << 5
    assert child.sack_ok and child.ts_ok and child.ts_recent == 5001 and child.ts_offset == off
    assert child.rtt.srtt == pytest.approx(0.01)
    assert lst.accept() is child and lst.accept() is None and lst.accept_queue_len == 0
    # the child speaks with the same timestamp clock as the SYN-ACK
    child.send(b"x", 0.02)
    seg = h.take()[-1]
    assert seg.flags == "P." and seg.seq == sa.seq + 1 and seg.tsval == (20 + off) & MASK


def test_plain_peer_negotiates_nothing():
    h = LHarness()
    out = h.syn(0.0, opts=NO_OPTIONS)
    sa = out[0]
    assert sa.opts.mss == 1460 and sa.opts.wscale is None and not sa.opts.sack_permitted
    assert sa.opts.timestamp is None
    child, out = h.feed(0.01, ".", 5001, sa.seq + 1, window=1000)
    assert child.state == "ESTABLISHED" and child.peer_mss == 536 and child.mss == 536
    assert not child.ws_ok and not child.sack_ok and not child.ts_ok and child.snd_wnd == 1000


def test_data_and_fin_on_third_ack_reach_the_child():
    h = LHarness()
    sa = h.syn(0.0)[0]
    child, out = h.feed(0.01, "FP.", 5001, sa.seq + 1, payload=b"hello",
                        opts=TcpOptions(timestamp=(5001, sa.tsval)))
    assert child.state == "CLOSE_WAIT"
    assert [o.flags for o in out] == ["."] and out[0].ack == 5001 + 5 + 1
    rec = Recorder()
    assert h.listener.accept() is child
    child.handler = rec                                                # what aio's Server does
    child.end_batch(0.02)
    assert rec.events == [("data", b"hello"), ("eof",)]


# ---------------------------------------------------------------------------------------- SYN-ACK timer

def test_synack_retransmission_timing_and_expiry():
    h = LHarness()
    first = h.syn(0.0)[0]
    out = h.run_until(62.9)
    assert [o.t for o in out] == [1.0, 3.0, 7.0, 15.0, 31.0]           # 1, 2, 4, 8, 16 s apart
    assert all(o.flags == "S." and o.seq == first.seq and o.ack == 5001 for o in out)
    assert [o.tsval - first.tsval for o in out] == [1000, 3000, 7000, 15000, 31000]
    assert h.counters["RetransSegs"] == 5 and h.counters["TCPSynRetrans"] == 5
    assert h.listener.syn_queue_len == 1 and h.listener.young == 0
    assert h.run_until(63.0) == [] and h.listener.syn_queue_len == 0    # expired after 5 retries
    assert h.wheel.next_expiry() is None
    # its late ACK now meets the bare listener: RST
    _, out = h.feed(64.0, ".", 5001, first.seq + 1)
    assert [o.flags for o in out] == ["R"] and out[0].seq == first.seq + 1


def test_synack_retries_setting_and_rto_max():
    h = LHarness(TcpConfig(synack_retries=2))
    h.syn(0.0)
    assert [o.t for o in h.run_until(100.0)] == [1.0, 3.0]
    assert h.listener.syn_queue_len == 0
    h = LHarness(TcpConfig(synack_retries=3, rto_max=3.0))
    h.syn(0.0)
    assert [o.t for o in h.run_until(100.0)] == [1.0, 3.0, 6.0]          # capped at rto_max
    assert h.listener.syn_queue_len == 0


def test_old_request_socks_are_pruned_when_queue_half_full():
    h = LHarness(backlog=16)
    for i in range(10):
        h.syn(0.0, rport=41000 + i)
    out = h.run_until(7.0)
    # more than half of max(backlog, 8) in use and none young any more: retries are cut to 2
    # (reqsk_timer_handler) -- until the queue is back to half full (8 entries)
    assert [sum(1 for o in out if o.t == t) for t in (1.0, 3.0, 7.0)] == [10, 10, 8]
    assert h.listener.syn_queue_len == 8
    out = h.run_until(100.0)
    assert [o.t for o in out] == [15.0] * 8 + [31.0] * 8
    assert h.listener.syn_queue_len == 0


def test_duplicate_syn_retransmits_synack_rate_limited():
    h = LHarness()
    first = h.syn(0.0)[0]
    out = h.syn(0.5)
    assert len(out) == 1 and out[0].flags == "S." and out[0].seq == first.seq
    assert h.listener.syn_queue_len == 1 and h.counters["TCPSynRetrans"] == 1
    assert h.syn(0.7) == [] and h.counters["TCPACKSkippedSynRecv"] == 1    # within 0.5 s
    # the timer was re-armed to now + 1 s by the first duplicate
    assert [o.t for o in h.run_until(4.0)] == [1.5, 3.5]
    assert h.listener.syn_queue_len == 1


# ---------------------------------------------------------------------------------------- request sock segments

def test_rst_removes_request_sock():
    h = LHarness()
    sa = h.syn(0.0)[0]
    _, out = h.feed(0.1, "R", 5001 + 70000)                              # out of window: ignored
    assert out == [] and h.listener.syn_queue_len == 1
    _, out = h.feed(0.2, "R", 5001)
    assert out == [] and h.listener.syn_queue_len == 0 and h.listener.young == 0
    assert h.counters["AttemptFails"] == 1 and h.counters["EmbryonicRsts"] == 1
    assert h.wheel.next_expiry() is None
    _, out = h.feed(0.3, ".", 5001, sa.seq + 1)
    assert [o.flags for o in out] == ["R"] and out[0].seq == sa.seq + 1


def test_bad_ack_number_gets_rst_and_request_stays():
    h = LHarness()
    sa = h.syn(0.0)[0]
    child, out = h.feed(0.01, ".", 5001, sa.seq + 7, opts=TcpOptions(timestamp=(5001, sa.tsval)))
    assert child is None and [o.flags for o in out] == ["R"] and out[0].seq == sa.seq + 7
    assert h.listener.syn_queue_len == 1
    child, _ = h.feed(0.02, ".", 5001, sa.seq + 1, opts=TcpOptions(timestamp=(5001, sa.tsval)))
    assert child.state == "ESTABLISHED"


def test_out_of_window_and_paws_get_an_ack():
    h = LHarness()
    sa = h.syn(0.0)[0]
    _, out = h.feed(0.01, ".", 5001 + 100000, sa.seq + 1, opts=TcpOptions(timestamp=(5001, sa.tsval)))
    assert [o.flags for o in out] == ["."] and out[0].seq == sa.seq + 1 and out[0].ack == 5001
    assert out[0].hdr.window == 65535 >> 7 and out[0].opts.timestamp[1] == 5000
    _, out = h.feed(0.02, ".", 5001 + 100000, sa.seq + 1, opts=TcpOptions(timestamp=(5001, sa.tsval)))
    assert out == []                                                     # rate limited
    child, out = h.feed(0.6, ".", 5001, sa.seq + 1, opts=TcpOptions(timestamp=(4000, sa.tsval)))
    assert child is None and [o.flags for o in out] == ["."] and h.counters["PAWSEstab"] == 1
    assert h.listener.syn_queue_len == 1


def test_in_window_syn_resets_request():
    h = LHarness()
    h.syn(0.0)
    _, out = h.feed(0.1, "S", 5001, opts=FULL_OPTS)
    assert [o.flags for o in out] == ["R."] and h.listener.syn_queue_len == 0


def test_listener_segments_without_request_sock():
    h = LHarness()
    _, out = h.feed(0.0, ".", 100, 200)
    assert [o.flags for o in out] == ["R"] and out[0].seq == 200 and h.counters["OutRsts"] == 1
    assert h.feed(0.0, "R", 100)[1] == []
    assert h.feed(0.0, "R.", 100, 200)[1] == []
    assert h.feed(0.0, "SF", 100, opts=FULL_OPTS)[1] == []
    assert h.feed(0.0, "P", 100, payload=b"x")[1] == []
    assert h.feed(0.0, "F", 100)[1] == []
    assert h.listener.syn_queue_len == 0


# ---------------------------------------------------------------------------------------- accept queue overflow

def test_accept_queue_overflow_drops_final_ack_until_room():
    h = LHarness(backlog=1)
    c1, _ = h.handshake(0.0, rport=40001)
    c2, _ = h.handshake(0.0, rport=40002)
    lst = h.listener
    assert lst.accept_queue_len == 2 and lst.accept_queue_full           # backlog + 1, as Linux
    h.take()
    sa = h.syn(1.0, rport=40003)[0]                                      # young <= 1: still answered
    child, out = h.feed(1.01, ".", 5001, sa.seq + 1, rport=40003,
                        opts=TcpOptions(timestamp=(5001, sa.tsval)))
    assert child is None and out == []
    assert h.counters["ListenOverflows"] == 1 and h.counters["ListenDrops"] == 1
    assert lst.syn_queue_len == 1 and lst.synq[(LIP, LPORT, RIP, 40003)].acked
    assert lst.accept() is c1
    # the client's retransmitted ACK (with data) completes it now
    child, out = h.feed(1.5, "P.", 5001, sa.seq + 1, rport=40003, payload=b"GET",
                        opts=TcpOptions(timestamp=(5002, sa.tsval)))
    assert child is not None and child.state == "ESTABLISHED" and child.rcv_nxt == 5004
    assert [o.flags for o in out] == ["."] and out[0].ack == 5004
    assert lst.accept_queue_len == 2 and lst.syn_queue_len == 0
    assert lst.accept() is c2 and lst.accept() is child
    assert h.counters["ListenOverflows"] == 1 and h.counters["PassiveOpens"] == 3


def test_accept_queue_overflow_completed_by_synack_retransmission():
    h2 = LHarness(TcpConfig(syncookies=0), backlog=1)
    c1, _ = h2.handshake(0.0, rport=40001)
    c2, _ = h2.handshake(0.0, rport=40002)
    h2.take()
    sa = h2.syn(0.0, rport=40003)[0]
    assert h2.feed(0.01, ".", 5001, sa.seq + 1, rport=40003)[0] is None  # overflow, dropped
    out = h2.run_until(1.0)
    assert [(o.t, o.flags) for o in out] == [(1.0, "S.")]                # SYN-ACK retransmitted
    assert h2.listener.accept() is c1
    child, _ = h2.feed(1.01, ".", 5001, out[0].seq + 1, rport=40003,     # the client ACKs it again
                       opts=TcpOptions(timestamp=(5002, out[0].tsval)))
    assert child is not None and child.state == "ESTABLISHED"
    # Karn: the SYN-ACK was retransmitted, the RTT sample comes from the timestamp echo
    assert child.rtt.srtt == pytest.approx(0.01)
    assert h2.run_until(100.0) == []


def test_syn_dropped_when_accept_queue_full_and_young_requests():
    h = LHarness(backlog=4)
    for i in range(5):
        h.handshake(0.0, rport=40000 + i)
    assert h.listener.accept_queue_full
    h.take()
    assert len(h.syn(1.0, rport=41000)) == 1                             # young 0 -> answered
    assert len(h.syn(1.0, rport=41001)) == 1                             # young 1 -> answered
    assert h.syn(1.0, rport=41002) == []                                 # young 2 > 1 -> dropped
    assert h.counters["ListenOverflows"] == 1 and h.counters["ListenDrops"] == 1
    assert h.listener.syn_queue_len == 2
    # after their first SYN-ACK timeout they are no longer young: SYNs are answered again
    h.run_until(2.0)
    assert len(h.syn(2.0, rport=41002)) == 1


def test_modern_linux_drops_every_syn_when_accept_queue_full():
    h = LHarness(backlog=0, young_check=False, config=TcpConfig(syncookies=2))
    child, _ = h.handshake(0.0)                                          # cookie connection
    assert child is not None and h.listener.accept_queue_full
    h.take()
    assert h.syn(1.0, rport=41000) == []
    assert h.counters["ListenOverflows"] == 1 and h.counters["ListenDrops"] == 1


# ---------------------------------------------------------------------------------------- SYN queue full / cookies

def test_syn_queue_full_without_cookies_drops():
    h = LHarness(TcpConfig(syncookies=0), backlog=2)
    h.syn(0.0, rport=40001)
    h.syn(0.0, rport=40002)
    assert h.syn(0.0, rport=40003) == []
    assert h.counters["TCPReqQFullDrop"] == 1 and h.counters["ListenDrops"] == 1
    assert h.counters["SyncookiesSent"] == 0 and h.listener.syn_queue_len == 2


def test_syn_queue_bounded_by_max_syn_backlog():
    h = LHarness(TcpConfig(syncookies=0, max_syn_backlog=3), backlog=100)
    for i in range(3):
        assert len(h.syn(0.0, rport=40001 + i)) == 1
    assert h.syn(0.0, rport=40009) == [] and h.counters["TCPReqQFullDrop"] == 1


def test_syn_queue_full_with_cookies_sends_cookie_keeps_no_state():
    h = LHarness(TcpConfig(syncookies=1), backlog=2)
    h.syn(0.0, rport=40001)
    h.syn(0.0, rport=40002)
    out = h.syn(0.0, rport=40003)
    assert len(out) == 1 and out[0].flags == "S." and out[0].ack == 5001
    cookie, _ = syncookies.encode(RIP, LIP, 40003, LPORT, 5000, 1400, 0.0, COOKIE_SECRET)
    assert out[0].seq == cookie
    assert h.counters["SyncookiesSent"] == 1 and h.counters["TCPReqQFullDoCookies"] == 1
    assert h.counters["ListenDrops"] == 0 and h.listener.syn_queue_len == 2
    assert len(h.wheel) == 2                                             # no timer for the cookie
    # no retransmission of a cookie SYN-ACK
    assert sorted(o.hdr.dst_port for o in h.run_until(1.0)) == [40001, 40002]


def test_syncookies_2_always_cookies():
    h = LHarness(TcpConfig(syncookies=2))
    out = h.syn(0.0)
    assert len(out) == 1 and h.listener.syn_queue_len == 0
    assert h.counters["SyncookiesSent"] == 1 and h.counters["TCPReqQFullDoCookies"] == 1
    assert out[0].seq == syncookies.encode(RIP, LIP, 40000, LPORT, 5000, 1400, 0.0, COOKIE_SECRET)[0]


def test_cookie_ack_creates_child_with_decoded_options():
    h = LHarness(TcpConfig(syncookies=2))
    sa = h.syn(10.0, opts=TcpOptions(mss=1400, wscale=5, sack_permitted=True, timestamp=(5000, 0)))[0]
    off = h.isn.ts_offset(LIP, RIP)
    assert sa.opts.mss == 1460 and sa.opts.wscale == 7 and sa.opts.sack_permitted
    raw = (sa.tsval - off) & MASK
    assert raw & 0x3F == 5 | 0x10 and raw <= 10000 and 10000 - raw < 64    # wscale 5 + SACK bit
    child, out = h.feed(10.05, "P.", 5001, sa.seq + 1, window=2000, payload=b"hi",
                        opts=TcpOptions(timestamp=(5001, sa.tsval)))
    assert child is not None and child.state == "ESTABLISHED"
    assert h.counters["SyncookiesRecv"] == 1 and h.counters["PassiveOpens"] == 1
    assert child.iss == sa.seq and child.irs == 5000 and child.rcv_nxt == 5003
    assert child.peer_mss == 1300 and child.mss == 1300 - 12                # MSS table value <= 1400
    assert child.ws_ok and child.snd_wscale == 5 and child.snd_wnd == 2000 << 5
    assert child.sack_ok and child.ts_ok and child.ts_recent == 5001
    assert [o.flags for o in out] == ["."] and out[0].ack == 5003
    assert h.listener.accept() is child


def test_cookie_without_timestamps_has_only_mss():
    h = LHarness(TcpConfig(syncookies=2))
    sa = h.syn(0.0, opts=TcpOptions(mss=1460, wscale=5, sack_permitted=True))[0]
    assert sa.opts.mss == 1460 and sa.opts.wscale is None and not sa.opts.sack_permitted
    assert sa.opts.timestamp is None
    child, _ = h.feed(0.05, ".", 5001, sa.seq + 1, window=2000)
    assert child.state == "ESTABLISHED" and child.peer_mss == 1460 and child.mss == 1460
    assert not child.ws_ok and not child.sack_ok and not child.ts_ok and child.snd_wnd == 2000
    assert child.rtt.rto == pytest.approx(3.0)                            # no RTT sample (RFC 6298 5.7)


def test_cookie_ipv6():
    h = LHarness(TcpConfig(syncookies=2, mss=1440), lip=LIP6)
    sa = h.syn(0.0, rip=RIP6, opts=TcpOptions(mss=1440, timestamp=(1, 0)))[0]
    child, _ = h.feed(0.01, ".", 5001, sa.seq + 1, rip=RIP6, opts=TcpOptions(timestamp=(2, sa.tsval)))
    assert child is not None and child.peer_mss == 1440 and not child.ws_ok and not child.sack_ok


def test_tampered_cookie_fails_with_rst():
    h = LHarness(TcpConfig(syncookies=2))
    sa = h.syn(0.0)[0]
    child, out = h.feed(0.01, ".", 5001, (sa.seq ^ 0x100) + 1, opts=TcpOptions(timestamp=(5001, sa.tsval)))
    assert child is None and h.counters["SyncookiesFailed"] == 1
    assert [o.flags for o in out] == ["R"] and out[0].seq == (sa.seq ^ 0x100) + 1
    # a different peer ISN (seq) invalidates it too
    child, out = h.feed(0.01, ".", 6001, sa.seq + 1, opts=TcpOptions(timestamp=(5001, sa.tsval)))
    assert child is None and h.counters["SyncookiesFailed"] == 2 and out[0].flags == "R"
    # echoed options the SYN-ACK could not have carried (SACK while disabled) -> RST
    h2 = LHarness(TcpConfig(syncookies=2, sack=False))
    sa = h2.syn(0.0, opts=TcpOptions(mss=1460, timestamp=(5000, 0)))[0]
    bad_tsecr = sa.tsval | 0x10
    child, out = h2.feed(0.01, ".", 5001, sa.seq + 1, opts=TcpOptions(timestamp=(5001, bad_tsecr)))
    assert child is None and [o.flags for o in out] == ["R"]
    assert h2.counters["SyncookiesRecv"] == 1 and h2.counters["SyncookiesFailed"] == 0


def test_expired_cookie_fails():
    h = LHarness(TcpConfig(syncookies=2))
    sa = h.syn(0.0)[0]
    h.syn(100.0, rport=40100)                                            # cookies still being sent
    child, out = h.feed(125.0, ".", 5001, sa.seq + 1, opts=TcpOptions(timestamp=(5001, sa.tsval)))
    assert child is None and h.counters["SyncookiesFailed"] == 1 and out[0].flags == "R"
    # the minute after it was made is still fine
    h = LHarness(TcpConfig(syncookies=2))
    sa = h.syn(0.0)[0]
    child, _ = h.feed(119.0, ".", 5001, sa.seq + 1, opts=TcpOptions(timestamp=(5001, sa.tsval)))
    assert child is not None and h.counters["SyncookiesRecv"] == 1


def test_ack_not_checked_as_cookie_without_recent_cookies():
    h = LHarness(TcpConfig(syncookies=1))
    cookie, _ = syncookies.encode(RIP, LIP, 40000, LPORT, 5000, 1460, 0.0, COOKIE_SECRET)
    child, out = h.feed(0.01, ".", 5001, cookie + 1)                     # valid, but none sent
    assert child is None and [o.flags for o in out] == ["R"]
    assert h.counters["SyncookiesFailed"] == 0 and h.counters["SyncookiesRecv"] == 0
    h = LHarness(TcpConfig(syncookies=2))
    sa = h.syn(0.0)[0]
    child, out = h.feed(121.0, ".", 5001, sa.seq + 1)                    # > 2 min since last cookie
    assert child is None and out[0].flags == "R" and h.counters["SyncookiesFailed"] == 0


def test_cookie_ack_with_accept_queue_full_is_dropped_silently():
    h = LHarness(TcpConfig(syncookies=2), backlog=0)
    c1, _ = h.handshake(0.0, rport=40001)
    assert c1 is not None and h.listener.accept_queue_len == 1 and h.listener.accept_queue_full
    h.take()
    # a SYN-ACK answered before the queue filled (made by hand here)
    cookie, _ = syncookies.encode(RIP, LIP, 40002, LPORT, 5000, 1460, 0.0, COOKIE_SECRET)
    child, out = h.feed(0.02, ".", 5001, cookie + 1, rport=40002)
    assert child is None and out == []
    assert h.counters["SyncookiesRecv"] == 2 and h.counters["ListenOverflows"] == 1
    assert h.counters["ListenDrops"] == 1
    assert h.listener.accept() is c1
    child, _ = h.feed(0.5, "P.", 5001, cookie + 1, rport=40002, payload=b"x")   # its data retransmitted
    assert child is not None and child.state == "ESTABLISHED" and child.rcv_nxt == 5002


def test_backlog_zero_uses_cookies():
    h = LHarness(backlog=0)
    out = h.syn(0.0)
    assert len(out) == 1 and h.listener.syn_queue_len == 0 and h.counters["SyncookiesSent"] == 1


# ---------------------------------------------------------------------------------------- close / accept

def test_close_resets_children_and_drops_requests():
    h = LHarness()
    c1, _ = h.handshake(0.0, rport=40001)
    c2, _ = h.handshake(0.0, rport=40002)
    h.syn(0.1, rport=40003)
    h.syn(0.1, rport=40004)
    h.take()
    h.at(0.2)
    h.listener.close(0.2)
    out = h.take()
    assert sorted((o.flags, o.hdr.dst_port) for o in out) == [("R.", 40001), ("R.", 40002)]
    assert {o.seq for o in out} == {c1.snd_nxt, c2.snd_nxt}
    assert c1.state == "CLOSED" and c2.state == "CLOSED"
    lst = h.listener
    assert lst.syn_queue_len == 0 and lst.accept_queue_len == 0 and lst.accept() is None
    assert h.wheel.next_expiry() is None and len(h.wheel) == 0
    _, out = h.feed(0.3, ".", 5001, 12345, rport=40003)                  # no listener any more
    assert [o.flags for o in out] == ["R"]
    assert h.run_until(100.0) == []
    closed = []
    lst.on_close = closed.append
    lst.close(1.0)                                                       # idempotent
    assert closed == []
    h2 = LHarness()
    h2.listener.on_close = closed.append
    h2.listener.close(0.0)
    assert closed == [h2.listener]


def test_accept_skips_children_closed_while_queued():
    h = LHarness()
    c1, _ = h.handshake(0.0, rport=40001)
    c2, _ = h.handshake(0.0, rport=40002)
    c1.on_segment(TcpHeader(40001, LPORT, c1.rcv_nxt, 0, parse_flags("R")), b"", 0.5)
    assert c1.state == "CLOSED" and h.listener.accept_queue_len == 2
    assert h.listener.accept() is c2 and h.listener.accept() is None


def test_custom_make_child_and_config_for():
    made = []
    wheel = TimerWheel(0.0)
    counters = Counters()
    sent = []
    cfg6 = TcpConfig(mss=1440)

    def make_child(**kw):
        from aiotcpstack.tcp.connection import TcpConnection
        made.append(kw)
        return TcpConnection.from_request(wheel=wheel, counters=counters,
                                          output=lambda hdr, p: sent.append(hdr), **kw)

    lst = Listener(config=TcpConfig(), wheel=wheel, counters=counters, local=(b"", LPORT), backlog=4,
                   isn=IsnGenerator(ISN_SECRET), secret=COOKIE_SECRET,
                   send=lambda lip, rip, hdr, p: sent.append((lip, rip, hdr)), make_child=make_child,
                   config_for=lambda rip: cfg6 if len(rip) == 16 else TcpConfig())
    syn = TcpHeader(40000, LPORT, 5000, 0, parse_flags("S"), 65535, TcpOptions(mss=1440))
    assert lst.on_segment(LIP6, RIP6, syn, b"", 0.0) is None
    lip, rip, sa = sent[-1]
    assert lip == LIP6 and rip == RIP6 and sa.options.mss == 1440
    ack = TcpHeader(40000, LPORT, 5001, sa.seq + 1, parse_flags("."), 65535)
    child = lst.on_segment(LIP6, RIP6, ack, b"", 0.1)
    assert child is not None and child.local == (LIP6, LPORT) and child.config is cfg6
    kw = made[0]
    assert set(kw) == {"config", "local", "remote", "iss", "syn", "ts_offset", "syn_time",
                       "synack_retransmitted", "now"}
    assert kw["syn_time"] == 0.0 and kw["iss"] == sa.seq and not kw["synack_retransmitted"]

    def refuse(**kw):
        raise OSError(98, "in use")

    lst.make_child = refuse
    syn2 = TcpHeader(40001, LPORT, 7000, 0, parse_flags("S"), 65535)
    lst.on_segment(LIP, RIP, syn2, b"", 0.2)
    sa2 = sent[-1][2]
    assert lst.on_segment(LIP, RIP, TcpHeader(40001, LPORT, 7001, sa2.seq + 1, parse_flags(".")), b"",
                          0.3) is None
    assert counters["ListenDrops"] == 1 and lst.syn_queue_len == 1


def test_request_sock_is_small():
    from aiotcpstack.tcp.listener import RequestSock
    h = LHarness()
    h.syn(0.0)
    req = next(iter(h.listener.synq.values()))
    assert isinstance(req, RequestSock) and not hasattr(req, "__dict__")
    t = req.timer
    h.run_until(1.0)
    assert req.timer is t and t.pending                                  # re-armed in place
