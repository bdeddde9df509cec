"""host/addr_monitor.py without root: the netlink parser cross-checked against pyroute2's
``ifaddrmsg`` encoder, and the monitor's event / dump-resync bookkeeping on crafted datagrams
(the live tier drives it through real ``ip addr`` changes: tests/live/test_address_removed_live.py)."""
from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

from aiotcpstack.host import addr_monitor as am


def encode(typ: int, family: int, plen: int, index: int, attrs: list, flags: int = 0, seq: int = 0,
           pid: int = 0) -> bytes:
    m = ifaddrmsg()
    m["family"] = family
    m["prefixlen"] = plen
    m["index"] = index
    m["flags"] = flags
    m["attrs"] = attrs
    m["header"]["type"] = typ
    m["header"]["sequence_number"] = seq
    m["header"]["pid"] = pid
    m.encode()
    return bytes(m.data)


def nl_done(seq: int, pid: int) -> bytes:
    return struct.pack("=IHHII", 20, am.NLMSG_DONE, 2, seq, pid) + struct.pack("=i", 0)


def ip(s: str) -> bytes:
    return ipaddress.ip_address(s).packed


def test_parse_against_pyroute2_encoder() -> None:
    v4_del = encode(am.RTM_DELADDR, socket.AF_INET, 24, 7,
                    [("IFA_ADDRESS", "198.18.0.1"), ("IFA_LOCAL", "198.18.0.1"), ("IFA_LABEL", "eth0"),
                     ("IFA_FLAGS", 0x80)], flags=0x80)
    # point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL ours
    v4_p2p = encode(am.RTM_NEWADDR, socket.AF_INET, 32, 7,
                    [("IFA_ADDRESS", "198.18.9.9"), ("IFA_LOCAL", "198.18.0.5")])
    v6_new = encode(am.RTM_NEWADDR, socket.AF_INET6, 64, 9,
                    [("IFA_ADDRESS", "2001:2::1"),
                     ("IFA_CACHEINFO", {"ifa_preferred": 1, "ifa_valid": 2, "cstamp": 3, "tstamp": 4})])
    # the 8-bit ifa_flags cannot hold every flag: IFA_FLAGS (32 bits) wins when present
    v6_tentative = encode(am.RTM_NEWADDR, socket.AF_INET6, 64, 9,
                          [("IFA_ADDRESS", "2001:2::2"), ("IFA_FLAGS", am.IFA_F_TENTATIVE)])
    msgs = am.parse_messages(v4_del + v4_p2p + v6_new + v6_tentative + nl_done(5, 99))
    assert [m[0] for m in msgs] == [am.RTM_DELADDR, am.RTM_NEWADDR, am.RTM_NEWADDR, am.RTM_NEWADDR,
                                    am.NLMSG_DONE]
    ev = msgs[0][3]
    assert (ev.added, ev.ifindex, ev.address, ev.prefixlen, ev.flags) == (False, 7, ip("198.18.0.1"), 24, 0x80)
    assert msgs[1][3].address == ip("198.18.0.5") and msgs[1][3].added
    assert msgs[2][3].address == ip("2001:2::1") and msgs[2][3].prefixlen == 64 and msgs[2][3].usable
    assert msgs[3][3].address == ip("2001:2::2") and not msgs[3][3].usable
    assert msgs[4][1:3] == (5, 99)


def test_parse_stops_at_truncated_or_malformed_input() -> None:
    good = encode(am.RTM_DELADDR, socket.AF_INET, 24, 7, [("IFA_LOCAL", "198.18.0.1")])
    assert am.parse_messages(good[:-3]) == []                      # truncated
    assert am.parse_messages(b"\x00" * 7) == []
    bad_len = struct.pack("=I", 8) + good[4:]                      # nlmsg_len < header
    assert am.parse_messages(bad_len + good) == []
    # an attribute running past the message: ignored, the message has no address -> skipped
    hdr = struct.pack("=BBBBI", socket.AF_INET, 24, 0, 0, 7) + struct.pack("=HH", 40, am.IFA_LOCAL) + ip("198.18.0.1")
    msg = struct.pack("=IHHII", 16 + len(hdr), am.RTM_DELADDR, 0, 0, 0) + hdr
    assert am.parse_messages(msg + good)[0][3].address == ip("198.18.0.1")
    assert len(am.parse_messages(msg + good)) == 1
    # an unknown family is skipped
    other = encode(am.RTM_NEWADDR, socket.AF_PACKET, 0, 7, [])
    assert am.parse_messages(other) == []


class FakeSock:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, b: bytes) -> int:
        self.sent.append(b)
        return len(b)


def make_monitor(ifindex: int = 7):
    events: list = []
    resyncs: list = []
    mon = am.AddressMonitor.__new__(am.AddressMonitor)     # no netlink socket needed here
    mon.netns = None
    mon.ifindex = ifindex
    mon.on_event = events.append
    mon.on_resync = resyncs.append
    mon.overflows = mon.resyncs = 0
    mon._loop = None
    mon._dump_seq = None
    mon._dump = []
    mon._dump_again = False
    mon._watchdog = None
    mon._seq = 0
    mon._portid = 4242
    mon.sock = FakeSock()
    return mon, events, resyncs


def test_monitor_reports_only_its_interface_and_usable_additions() -> None:
    mon, events, _ = make_monitor(7)
    mon._handle(encode(am.RTM_DELADDR, socket.AF_INET, 24, 8, [("IFA_LOCAL", "198.18.1.1")]))   # other if
    mon._handle(encode(am.RTM_NEWADDR, socket.AF_INET6, 64, 7,
                       [("IFA_ADDRESS", "2001:2::5"), ("IFA_FLAGS", am.IFA_F_TENTATIVE)]))       # DAD running
    mon._handle(encode(am.RTM_DELADDR, socket.AF_INET, 24, 7, [("IFA_LOCAL", "198.18.0.1")], seq=77, pid=1234))
    mon._handle(encode(am.RTM_NEWADDR, socket.AF_INET6, 64, 7, [("IFA_ADDRESS", "2001:2::5")]))  # DAD done
    assert [(e.added, e.address) for e in events] == [(False, ip("198.18.0.1")), (True, ip("2001:2::5"))]


def test_dump_after_overflow_resyncs_and_keeps_notifications_apart() -> None:
    mon, events, resyncs = make_monitor(7)
    mon.request_dump()
    (req,) = mon.sock.sent
    ln, typ, flags, seq, _pid = struct.unpack_from("=IHHII", req)
    assert typ == am.RTM_GETADDR and flags == am.NLM_F_REQUEST | am.NLM_F_DUMP and ln == len(req)
    # the dump's answers (our seq, our port id), interleaved with a notification that happens to
    # carry the same sequence number from another socket (ip addr del uses its own counter)
    mon._handle(encode(am.RTM_NEWADDR, socket.AF_INET, 24, 7, [("IFA_LOCAL", "198.18.0.1")], seq=seq, pid=4242)
                + encode(am.RTM_NEWADDR, socket.AF_INET, 24, 8, [("IFA_LOCAL", "198.18.5.1")], seq=seq, pid=4242))
    mon._handle(encode(am.RTM_DELADDR, socket.AF_INET, 24, 7, [("IFA_LOCAL", "198.18.0.7")], seq=seq, pid=555))
    mon._handle(encode(am.RTM_NEWADDR, socket.AF_INET6, 64, 7, [("IFA_ADDRESS", "2001:2::1")], seq=seq, pid=4242)
                + nl_done(seq, 4242))
    assert [(e.added, e.address) for e in events] == [(False, ip("198.18.0.7"))]
    assert resyncs == [[(ip("198.18.0.1"), 24), (ip("2001:2::1"), 64)]]
    assert mon._dump_seq is None and mon.resyncs == 1
    # late answers of a finished or abandoned dump (our port id, an old sequence number) are not
    # changes; a notification with that number from someone else is
    mon._handle(encode(am.RTM_NEWADDR, socket.AF_INET, 24, 7, [("IFA_LOCAL", "198.18.0.8")], seq=seq, pid=4242))
    assert len(events) == 1
    mon._handle(encode(am.RTM_NEWADDR, socket.AF_INET, 24, 7, [("IFA_LOCAL", "198.18.0.8")], seq=seq, pid=0))
    assert events[-1].address == ip("198.18.0.8") and events[-1].added


class FakeLoop:
    def __init__(self) -> None:
        self.timers: list = []

    def call_later(self, delay, fn, *args):
        h = FakeHandle(delay, fn, args)
        self.timers.append(h)
        return h


class FakeHandle:
    def __init__(self, delay, fn, args) -> None:
        self.delay, self.fn, self.args, self.cancelled = delay, fn, args, False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        if not self.cancelled:
            self.fn(*self.args)


def test_overflow_during_a_dump_dumps_again_and_lost_answers_are_retried() -> None:
    mon, events, resyncs = make_monitor(7)
    mon._loop = FakeLoop()
    mon._overflowed()
    assert len(mon.sock.sent) == 1 and mon.overflows == 1
    seq1 = mon._dump_seq
    mon._overflowed()                              # while that dump runs: no second request now
    assert len(mon.sock.sent) == 1
    mon._handle(encode(am.RTM_NEWADDR, socket.AF_INET, 24, 7, [("IFA_LOCAL", "198.18.0.1")], seq=seq1, pid=4242)
                + nl_done(seq1, 4242))
    assert resyncs == [] and len(mon.sock.sent) == 2   # its result may be stale: dumped again
    seq2 = mon._dump_seq
    assert seq2 == seq1 + 1
    # the request is refused (EBUSY: the kernel still runs an abandoned dump) -> retried shortly
    err = struct.pack("=IHHII", 36, am.NLMSG_ERROR, 0, seq2, 4242) + struct.pack("=i", -16) + bytes(16)
    mon._handle(err)
    assert mon._dump_seq is None
    retry = mon._loop.timers[-1]
    assert retry.delay < 0.5
    retry.fire()
    seq3 = mon._dump_seq
    assert seq3 == seq2 + 1 and len(mon.sock.sent) == 3
    # no answer at all (lost to a full buffer): the watchdog asks again
    watchdog = mon._loop.timers[-1]
    assert watchdog.delay == mon.DUMP_TIMEOUT
    watchdog.fire()
    seq4 = mon._dump_seq
    assert seq4 == seq3 + 1
    mon._handle(encode(am.RTM_NEWADDR, socket.AF_INET, 24, 7, [("IFA_LOCAL", "198.18.0.3")], seq=seq3, pid=4242)
                + encode(am.RTM_NEWADDR, socket.AF_INET, 24, 7, [("IFA_LOCAL", "198.18.0.4")], seq=seq4, pid=4242)
                + nl_done(seq4, 4242))
    assert resyncs == [[(ip("198.18.0.4"), 24)]] and events == []
    assert all(t.cancelled for t in mon._loop.timers if t.fn == mon._dump_timeout and t is not watchdog)


def test_a_failing_callback_does_not_stop_the_monitor(caplog: pytest.LogCaptureFixture) -> None:
    mon, events, _ = make_monitor(7)

    def boom(ev):
        raise RuntimeError("consumer bug")
    mon.on_event = boom
    mon._handle(encode(am.RTM_DELADDR, socket.AF_INET, 24, 7, [("IFA_LOCAL", "198.18.0.1")]))
    assert "consumer bug" in caplog.text
    mon.on_event = events.append
    mon._handle(encode(am.RTM_DELADDR, socket.AF_INET, 24, 7, [("IFA_LOCAL", "198.18.0.2")]))
    assert len(events) == 1


def test_monitor_opens_a_subscribed_netlink_socket() -> None:
    # NETLINK_ROUTE multicast groups need no privileges
    mon = am.AddressMonitor(None, lambda ev: None)
    try:
        assert mon.fileno() >= 0
        assert mon.sock.getsockname()[1] == am.RTMGRP_IPV4_IFADDR | am.RTMGRP_IPV6_IFADDR
        assert mon.sock.getblocking() is False
    finally:
        mon.close()
    assert mon.sock is None and mon.fileno() == -1
    mon.close()                                                   # twice: fine
