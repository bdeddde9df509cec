"""host/ pieces that need neither root nor namespaces."""
from __future__ import annotations

import asyncio
import errno
import struct

import pytest

from aiotcpstack.host import errors, firewall, impair, netns


def test_error_messages_say_what_is_needed():
    e = errors.PermissionsError("opening AF_PACKET on eth0", "CAP_NET_RAW")
    assert "CAP_NET_RAW" in str(e) and "root" in str(e) and e.errno == errno.EPERM
    assert isinstance(e, PermissionError)
    e = errors.NoSuchInterfaceError("veth9", "labns")
    assert "veth9" in str(e) and "labns" in str(e) and e.errno == errno.ENODEV
    e = errors.NoSuchNamespaceError("nope")
    assert "/run/netns/nope" in str(e) and isinstance(e, FileNotFoundError)
    e = errors.ToolMissingError("nft", "RST suppression")
    assert "apt-get install nftables" in str(e)
    assert "apt-get install iptables" in str(errors.ToolMissingError("iptables"))
    e = errors.AddressNotOnInterfaceError("198.18.0.9", "ats-a0", "ns1")
    assert "198.18.0.9" in str(e) and "ats-a0" in str(e) and e.errno == errno.EADDRNOTAVAIL


def test_in_netns_missing_namespace():
    with pytest.raises(errors.NoSuchNamespaceError) as ei:
        with netns.in_netns("ats-definitely-not-there"):
            pass
    assert "ats-definitely-not-there" in str(ei.value)
    with pytest.raises(errors.NoSuchNamespaceError):
        netns.run_in_netns("ats-definitely-not-there", lambda: None)
    with pytest.raises(errors.NoSuchNamespaceError):
        netns.nsenter_argv("ats-definitely-not-there", ["true"])


def test_in_netns_none_and_run_in_netns_reraises():
    with netns.in_netns(None):
        pass
    assert netns.run_in_netns(None, lambda a, b: a + b, 1, 2) == 3
    with pytest.raises(KeyError):
        netns.run_in_netns("/proc/self/ns/net", lambda: {}["x"])


def test_off_loop_uses_thread_inside_a_running_loop():
    import threading
    main = threading.get_ident()
    assert netns.off_loop(threading.get_ident) == main

    async def coro():
        return netns.off_loop(threading.get_ident)
    assert asyncio.run(coro()) != main


def test_missing_nft_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(firewall.shutil, "which", lambda name: None)
    with pytest.raises(errors.ToolMissingError) as ei:
        firewall.RstGuard()
    assert "apt-get install nftables" in str(ei.value)


def test_setelem_batch_encoding():
    nla = firewall._nla(1, b"abc")
    assert nla == struct.pack("=HH", 7, 1) + b"abc\0"          # padded to 4
    msg = firewall._nlmsg(0x0A0C, 0x405, 7, 1, 0, b"")
    ln, t, fl, seq, pid = struct.unpack_from("=IHHII", msg)
    assert (ln, t, fl, seq, pid) == (20, 0x0A0C, 0x405, 7, 0) and msg[16:20] == b"\x01\x00\x00\x00"
    begin = firewall._nlmsg(16, 1, 1, 0, firewall.NFNL_SUBSYS_NFTABLES, b"")
    assert begin[18:20] == b"\x00\x0a"                          # res_id big-endian subsystem


class _FakeWire(impair.Wire):
    def __init__(self, **kw):
        super().__init__("x", "y", open_sockets=False, **kw)
        self.sent: list[tuple[int, bytes]] = []

    def _send(self, d, frame):
        self.sent.append((d, frame))


def _run(w, frames, t0=0.0, step=0.001):
    for i, f in enumerate(frames):
        w._schedule(0, f, t0 + i * step)
    while w.heap:
        import heapq
        _, _, d, f = heapq.heappop(w.heap)
        w._send(d, f)
    return [f for _, f in w.sent]


def test_wire_is_deterministic_per_seed():
    frames = [bytes([i]) * 60 for i in range(200)]
    a = _run(_FakeWire(loss=0.1, dup=0.05, reorder=0.1, delay=0.002, seed=5), frames)
    b = _run(_FakeWire(loss=0.1, dup=0.05, reorder=0.1, delay=0.002, seed=5), frames)
    c = _run(_FakeWire(loss=0.1, dup=0.05, reorder=0.1, delay=0.002, seed=6), frames)
    assert a == b and a != c
    assert len(set(a)) < 200                       # some lost
    assert len(a) != len(set(a))                   # some duplicated
    order = [f[0] for f in a]
    assert order != sorted(order)                  # some reordered


def test_wire_without_impairments_keeps_order():
    frames = [bytes([i]) * 60 for i in range(100)]
    assert _run(_FakeWire(delay=0.005), frames) == frames


@pytest.mark.parametrize("subnet", [0, 1, 0xa, 0xff, 0x100, 0x1ff])
def test_lab_addr6_is_canonical_for_every_subnet(subnet):
    """The stack reports addresses as inet_ntop writes them; a lab address spelled otherwise
    (``2001:2:0:0::1`` for subnet 0) never compared equal in the address-removal live test."""
    import ipaddress
    import socket
    from aiotcpstack.host.lab import lab_addr6
    a = lab_addr6(subnet, 1)
    assert a == socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, a))
    assert ipaddress.IPv6Address(a) in ipaddress.ip_network(f"2001:2:0:{subnet:x}::/64")
    assert ipaddress.IPv6Address(a).packed[-1] == 1
