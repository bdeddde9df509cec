"""Routing table and neighbour cache on their own."""
from __future__ import annotations

import ipaddress

import pytest

from aiotcpstack.ip.neighbour import FAILED, INCOMPLETE, REACHABLE, STALE, NeighbourTable
from aiotcpstack.ip.routing import RoutingTable
from aiotcpstack.mib import Counters


def ip(s: str) -> bytes:
    return ipaddress.ip_address(s).packed


def test_routing_onlink_gateway_longest_prefix_and_source() -> None:
    rt = RoutingTable([(ip("198.18.1.5"), 24), (ip("2001:2::5"), 64), (ip("fe80::1"), 64)],
                      [(ip("0.0.0.0"), 0, ip("198.18.1.1")), (ip("198.19.0.0"), 16, ip("198.18.1.2"))])
    assert rt.next_hop(ip("198.18.1.77")) == ip("198.18.1.77")
    assert rt.next_hop(ip("198.19.3.3")) == ip("198.18.1.2")
    assert rt.next_hop(ip("198.20.0.1")) == ip("198.18.1.1")
    assert rt.is_onlink(ip("198.18.1.9")) and not rt.is_onlink(ip("198.19.3.3"))
    assert rt.source_for(ip("198.19.3.3")) == ip("198.18.1.5")
    assert rt.source_for(ip("2001:2::9")) == ip("2001:2::5")
    assert rt.source_for(ip("2001:2:1::9")) == ip("2001:2::5")       # global preferred over fe80::
    with pytest.raises(OSError) as ei:
        rt.next_hop(ip("2001:3::1"))
    assert ei.value.errno == 101
    assert rt.is_local(ip("198.18.1.5")) and not rt.is_local(ip("198.18.1.6"))


def test_neighbour_queue_retry_fail_and_aging() -> None:
    asked = []
    t = NeighbourTable(Counters(), lambda ip_, mac: asked.append((ip_, mac)), reachable_time=30,
                       retrans_time=1, max_probes=3, queue_len=2)
    e = t.entry(b"\1\2\3\4")
    assert t.resolve(e, 0.0, "p1") is None and e.state == INCOMPLETE
    assert t.resolve(e, 0.1, "p2") is None
    assert t.resolve(e, 0.2, "p3") is None            # queue_len 2: p1 dropped
    assert asked == [(b"\1\2\3\4", None)]             # one solicitation in flight
    assert t.next_deadline() == 1.0
    t.on_timer(1.0)
    t.on_timer(2.0)
    assert len(asked) == 3
    t.on_timer(3.0)
    assert e.state == FAILED and e.queue == [] and t.counters["NeighUnresolvedDiscards"] == 3
    # next use starts over; an answer flushes the queue
    assert t.resolve(e, 4.0, "p4") is None
    assert t.update(b"\1\2\3\4", b"\xaa" * 6, 4.1) == ["p4"]
    assert e.state == REACHABLE and t.resolve(e, 5.0) == b"\xaa" * 6
    # after reachable_time: still used (STALE) but a unicast refresh goes out
    asked.clear()
    assert t.resolve(e, 40.0) == b"\xaa" * 6 and e.state == STALE
    assert asked == [(b"\1\2\3\4", b"\xaa" * 6)]
    # no answer to 3 refreshes: forgotten
    t.on_timer(41.0)
    t.on_timer(42.0)
    t.on_timer(43.0)
    assert e.mac is None and e.state == FAILED


@pytest.mark.parametrize("addr", ["198.18.1.9", "2001:2::9"])
def test_neighbour_reconfirm_on_negative_advice(addr: str) -> None:
    """Negative advice (TCP after R1 retransmissions, RFC 1122 3.3.1.4): a REACHABLE entry, young
    as it is, becomes STALE and is probed at once -- unicast, to the MAC we know -- and stays in
    use meanwhile; a second advice while the probe runs sends nothing more; an entry without a
    MAC is not probed (resolution starts with the next packet, as before)."""
    asked = []
    t = NeighbourTable(Counters(), lambda ip_, mac: asked.append((ip_, mac)), reachable_time=30,
                       retrans_time=1, max_probes=3)
    mac = b"\xaa" * 6
    t.update(ip(addr), mac, 10.0)
    e = t.entries[ip(addr)]
    assert t.reconfirm(e, 10.5) is True
    assert e.state == STALE and asked == [(ip(addr), mac)] and t.resolve(e, 10.6) == mac
    assert t.reconfirm(e, 10.7) is False and len(asked) == 1
    t.update(ip(addr), mac, 10.8)                        # the answer
    assert e.state == REACHABLE and e.next_probe is None
    # evicted from the table meanwhile (a forced GC): the advice brings it back and probes it
    del t.entries[ip(addr)]
    assert t.reconfirm(e, 11.0) is True and t.entries[ip(addr)] is e and len(asked) == 2
    unresolved = t.entry(ip("198.18.1.10"))
    assert t.reconfirm(unresolved, 11.0) is False and len(asked) == 2
