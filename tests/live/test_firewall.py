"""RstGuard (nftables RST suppression) and PortReservation against the kernel, in a lab."""
from __future__ import annotations

import errno
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from aiotcpstack.host.firewall import RstGuard, list_tables
from aiotcpstack.host.netns import socket_in_netns
from aiotcpstack.host.ports import PortReservation
from live_peers import kernel_connect

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ETH_P_ALL = 0x0003


def ruleset(lab, ns=None) -> str:
    return lab.run(ns or lab.ns_a, ["nft", "list", "ruleset"]).stdout


def child(lab, code: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, **kw)


class RstCapture:
    """AF_PACKET capture in a namespace: TCP RST segments from ``src``; returns their source ports."""

    def __init__(self, lab, ns, ifname, src):
        self.sock = socket_in_netns(ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, ETH_P_ALL))
        self.sock.setblocking(False)
        self.src = socket.inet_aton(src)

    def rst_ports(self) -> list[int]:
        ports = []
        while True:
            try:
                f = self.sock.recv(65536)
            except BlockingIOError:
                return ports
            if len(f) < 34 + 20 or f[12:14] != b"\x08\x00" or f[23] != 6 or f[26:30] != self.src:
                continue
            ihl = (f[14] & 0x0F) * 4
            tcp = f[14 + ihl:]
            if tcp[13] & 0x04:
                ports.append(struct.unpack("!H", tcp[0:2])[0])

    def close(self):
        self.sock.close()


def test_guarded_port_gets_no_rst(lab):
    before = ruleset(lab)
    res = PortReservation(lab.ns_a)
    guarded = res.reserve(lab.addr_a, 0)
    unguarded = res.reserve(lab.addr_a, 0)
    cap = RstCapture(lab, lab.ns_b, lab.if_b, lab.addr_a)
    g = RstGuard(lab.ns_a)
    try:
        g.add_port(guarded)
        assert g.list_kernel_ports() == {guarded}
        assert kernel_connect(lab, lab.addr_a, unguarded, 2) == "refused"       # kernel RST for a bound port
        assert kernel_connect(lab, lab.addr_a, guarded, 1.0) == "timeout"        # no RST, no SYN-ACK
        time.sleep(0.1)
        rsts = cap.rst_ports()
        assert unguarded in rsts
        assert guarded not in rsts
        assert g.counters()["pre"] >= 1
        # removing the port gives it back to the kernel
        g.remove_port(guarded)
        assert kernel_connect(lab, lab.addr_a, guarded, 2) == "refused"
        # a kernel listener elsewhere in ns_a is unaffected
        srv = socket_in_netns(lab.ns_a, socket.AF_INET, socket.SOCK_STREAM)
        srv.bind((lab.addr_a, 0))
        srv.listen()
        assert kernel_connect(lab, lab.addr_a, srv.getsockname()[1], 2) == "connected"
        srv.close()
    finally:
        cap.close()
        g.close()
        res.close()
    assert ruleset(lab) == before


def test_guard_ipv6(lab):
    res = PortReservation(lab.ns_a)
    p = res.reserve(lab.addr6_a, 0)
    with RstGuard(lab.ns_a) as g:
        g.add_port(p)
        assert kernel_connect(lab, lab.addr6_a, p, 1.0) == "timeout"
    assert kernel_connect(lab, lab.addr6_a, p, 1.0) == "refused"
    res.close()


def test_guard_scope_is_every_local_address_when_the_frame_arrives(lab):
    """``fib daddr type local`` (PERF_LOG step 30: why not a set of our addresses): a guarded port
    is guarded at an address added after the guard and at an AnyIP prefix (a local route, no
    address), at once and with nothing told; an unguarded port there still gets the kernel's RST."""
    x = lab.subnet
    extra, anyip = f"198.18.{x}.9", f"198.18.{x}.70"
    with RstGuard(lab.ns_a) as g:
        g.add_port(5555)
        lab.run(lab.ns_a, ["ip", "addr", "add", f"{extra}/32", "dev", lab.if_a])
        lab.run(lab.ns_a, ["ip", "route", "add", "local", f"198.18.{x}.64/26", "dev", "lo"])
        for addr in (extra, anyip):
            assert kernel_connect(lab, addr, 5556, 2) == "refused", addr
            assert kernel_connect(lab, addr, 5555, 1.0) == "timeout", addr
        assert g.counters()["pre"] >= 2


def test_close_restores_ruleset_and_is_idempotent(lab):
    before = ruleset(lab)
    g = RstGuard(lab.ns_a)
    for p in range(40000, 40100):
        g.add_port(p)
    g.add_port(40000)            # idempotent
    g.remove_port(50000)         # unknown: no-op
    assert g.table in list_tables(lab.ns_a)
    g.close()
    g.close()
    assert ruleset(lab) == before
    with pytest.raises(RuntimeError):
        g.add_port(1)


def test_two_guards_one_process(lab):
    before = ruleset(lab)
    g1, g2 = RstGuard(lab.ns_a), RstGuard(lab.ns_a)
    assert g1.table != g2.table and g1.table == f"aiotcpstack_{os.getpid()}"
    g1.add_port(1000)
    g2.add_port(1000)
    g1.close()
    assert g2.list_kernel_ports() == {1000}
    g2.close()
    assert ruleset(lab) == before


def test_normal_exit_removes_table(lab):
    before = ruleset(lab)
    p = child(lab, "from aiotcpstack.host.firewall import RstGuard\n"
                   f"g = RstGuard({lab.ns_a!r}); g.add_port(5555); print(g.table, flush=True)\n")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert out.strip().startswith("aiotcpstack_")
    assert ruleset(lab) == before


def _started(p):
    line = p.stdout.readline().strip()
    assert line.startswith("aiotcpstack_"), (line, p.stderr.read() if p.poll() is not None else "")
    return line


def test_sigterm_removes_table_and_dies_by_signal(lab):
    before = ruleset(lab)
    p = child(lab, "import time\nfrom aiotcpstack.host.firewall import RstGuard\n"
                   f"g = RstGuard({lab.ns_a!r}); g.add_port(5555); print(g.table, flush=True)\ntime.sleep(60)\n")
    table = _started(p)
    assert table in list_tables(lab.ns_a)
    p.send_signal(signal.SIGTERM)
    p.wait(20)
    assert p.returncode == -signal.SIGTERM
    assert ruleset(lab) == before


def test_sigint_keeps_keyboardinterrupt_semantics(lab):
    before = ruleset(lab)
    code = ("import time\nfrom aiotcpstack.host.firewall import RstGuard, list_tables\n"
            f"g = RstGuard({lab.ns_a!r}); g.add_port(5555)\n"
            "try:\n    print(g.table, flush=True)\n    time.sleep(60)\nexcept KeyboardInterrupt:\n"
            f"    print('KI', g.table in list_tables({lab.ns_a!r}), flush=True)\n")
    p = child(lab, code)
    _started(p)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert out.strip() == "KI True", err          # handler chained to KeyboardInterrupt, guard still up
    assert p.returncode == 0
    assert ruleset(lab) == before                 # ... and removed at exit


def test_sigkill_then_sweep(lab):
    before = ruleset(lab)
    p = child(lab, "import time\nfrom aiotcpstack.host.firewall import RstGuard\n"
                   f"g = RstGuard({lab.ns_a!r}); g.add_port(5555); print(g.table, flush=True)\ntime.sleep(60)\n")
    table = _started(p)
    p.kill()
    p.wait(10)
    assert table in list_tables(lab.ns_a)        # SIGKILL leaves it behind ...
    g = RstGuard(lab.ns_a)                       # ... the next start sweeps it
    assert table not in list_tables(lab.ns_a)
    g.close()
    assert ruleset(lab) == before


def test_add_port_cost(lab, capsys):
    with RstGuard(lab.ns_a) as g:
        n = 2000
        t = time.perf_counter()
        for p in range(20000, 20000 + n):
            g.add_port(p)
        add = (time.perf_counter() - t) / n
        t = time.perf_counter()
        for p in range(20000, 20000 + n):
            g.remove_port(p)
        rem = (time.perf_counter() - t) / n
        assert g._sock is not None, "netlink fast path not in use"
    with capsys.disabled():
        print(f"\nRstGuard.add_port: {add * 1e6:.1f} us, remove_port: {rem * 1e6:.1f} us (netlink batch)")
    assert add < 1e-3 and rem < 1e-3


def test_guard_in_current_namespace_from_lab_process(lab):
    # netns=None path: run the guard inside ns_a via a child started by nsenter
    before = ruleset(lab)
    env = dict(os.environ, PYTHONPATH=REPO)
    r = lab.run(lab.ns_a, [sys.executable, "-c",
                           "from aiotcpstack.host.firewall import RstGuard\n"
                           "g = RstGuard(); g.add_port(7); print(sorted(g.list_kernel_ports())); g.close()\n"],
                env=env)
    assert r.stdout.strip() == "[7]"
    assert ruleset(lab) == before


# ---------------------------------------------------------------- port reservation

def test_reserve_eaddrinuse_for_kernel_socket(lab):
    holder = socket_in_netns(lab.ns_a, socket.AF_INET, socket.SOCK_STREAM)
    holder.bind((lab.addr_a, 0))
    holder.listen()
    port = holder.getsockname()[1]
    with PortReservation(lab.ns_a) as res:
        with pytest.raises(OSError) as ei:
            res.reserve(lab.addr_a, port)
        assert ei.value.errno == errno.EADDRINUSE
        with pytest.raises(OSError) as ei:
            res.reserve("0.0.0.0", port)
        assert ei.value.errno == errno.EADDRINUSE
    holder.close()


def test_reserved_port_blocks_kernel_programs(lab):
    with PortReservation(lab.ns_a) as res:
        port = res.reserve(lab.addr_a, 0, reuse_address=True)
        assert port in res
        other = socket_in_netns(lab.ns_a, socket.AF_INET, socket.SOCK_STREAM)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            with pytest.raises(OSError) as ei:
                other.bind((lab.addr_a, port))
                other.listen()                 # a REUSEADDR bind may pass; listen must not
            assert ei.value.errno == errno.EADDRINUSE
        finally:
            other.close()
        res.release(port)
        assert port not in res
        free = socket_in_netns(lab.ns_a, socket.AF_INET, socket.SOCK_STREAM)
        free.bind((lab.addr_a, port))
        free.close()


def test_ephemeral_allocation(lab):
    lo, hi = map(int, lab.run(lab.ns_a, ["cat", "/proc/sys/net/ipv4/ip_local_port_range"]).stdout.split())
    with PortReservation(lab.ns_a) as res:
        ports = {res.reserve(lab.addr_a, 0) for _ in range(50)}
        assert len(ports) == 50 and all(lo <= p <= hi for p in ports)
        p6 = res.reserve(lab.addr6_a, 0)
        assert p6 > 0
        with pytest.raises(OSError) as ei:
            res.reserve(lab.addr_a, sorted(ports)[0])
        assert ei.value.errno == errno.EADDRINUSE
        with pytest.raises(OSError) as ei:
            res.reserve("198.18.255.254" if not lab.addr_a.startswith("198.18.255.") else "198.18.254.254", 0)
        assert ei.value.errno == errno.EADDRNOTAVAIL
    # all released
    s = socket_in_netns(lab.ns_a, socket.AF_INET, socket.SOCK_STREAM)
    s.bind((lab.addr_a, sorted(ports)[0]))
    s.close()


def test_dual_stack_reservation_holds_both_families(lab):
    """One AF_INET6 socket on :: with IPV6_V6ONLY=0 (what a shared-mode Stack with IPv6 uses: one
    descriptor per port) keeps v4 and v6 binds, REUSEADDR listens and bind(0) off the port."""
    with PortReservation(lab.ns_a) as res:
        port = res.reserve("::", 0, v6only=False)
        assert len(res.reserved()) == 1
        for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET, lab.addr_a),
                          (socket.AF_INET6, "::"), (socket.AF_INET6, lab.addr6_a)):
            other = socket_in_netns(lab.ns_a, fam, socket.SOCK_STREAM)
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                with pytest.raises(OSError) as ei:
                    other.bind((addr, port))
                    other.listen()
                assert ei.value.errno == errno.EADDRINUSE, (addr, ei.value)
            finally:
                other.close()
        res.release(port)
        free = socket_in_netns(lab.ns_a, socket.AF_INET, socket.SOCK_STREAM)
        free.bind((lab.addr_a, port))
        free.close()
