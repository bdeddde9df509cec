"""The namespace lab itself: comes up, works, and goes away."""
from __future__ import annotations

import ipaddress
import os
import time
import re
import subprocess
import sys

import pytest
from pyroute2 import netns as pr_netns

from aiotcpstack.host.lab import Lab, lab_namespaces, sweep_stale


def _all_ns() -> set[str]:
    return set(pr_netns.listnetns())


def test_lab_comes_up_and_pings(lab):
    assert {lab.ns_a, lab.ns_b} <= _all_ns()
    assert len(lab.if_a) <= 15 and len(lab.if_b) <= 15
    for a in (lab.addr_a, lab.addr_b, lab.spare_addr):
        assert a.startswith("198.18.")
    for a in (lab.addr6_a, lab.addr6_b, lab.spare_addr6):
        assert ipaddress.IPv6Address(a) in ipaddress.ip_network("2001:2::/48"), a
    assert len(lab.mac_a) == 6 and lab.mac_a != lab.mac_b
    lab.run(lab.ns_a, ["ping", "-c", "1", "-W", "2", lab.addr_b])
    lab.run(lab.ns_b, ["ping", "-c", "1", "-W", "2", lab.addr_a])
    # IPv6 usable at once (no DAD)
    lab.run(lab.ns_a, ["ping", "-6", "-c", "1", "-W", "2", lab.addr6_b])
    out = lab.run(lab.ns_a, ["ip", "-6", "addr", "show", "dev", lab.if_a]).stdout
    assert "tentative" not in out
    # no default route in either namespace
    for ns in (lab.ns_a, lab.ns_b):
        assert "default" not in lab.run(ns, ["ip", "route"]).stdout
        assert "default" not in lab.run(ns, ["ip", "-6", "route"]).stdout


def test_names_unique(lab_factory):
    l1, l2 = lab_factory(), lab_factory()
    assert l1.prefix != l2.prefix and l1.if_a != l2.if_a
    assert re.match(r"^ats[0-9a-f]+_[0-9a-f]{3}$", l1.prefix)


def test_offloads_off(lab_nooffload):
    lab = lab_nooffload
    for ns, dev in ((lab.ns_a, lab.if_a), (lab.ns_b, lab.if_b)):
        feats = dict(re.findall(r"^([a-z-]+): (on|off)", lab.run(ns, ["ethtool", "-k", dev]).stdout, re.M))
        for f in ("tx-checksumming", "tcp-segmentation-offload", "generic-segmentation-offload",
                  "generic-receive-offload"):
            assert feats[f] == "off", (f, feats[f])
    lab.run(lab.ns_a, ["ping", "-c", "1", "-W", "2", lab.addr_b])


def test_offloads_on_by_default(lab):
    out = lab.run(lab.ns_a, ["ethtool", "-k", lab.if_a]).stdout
    assert re.search(r"^tcp-segmentation-offload: on", out, re.M)


def _ping_loss(lab, count=400) -> float:
    r = lab.run(lab.ns_a, ["ping", "-c", str(count), "-i", "0.002", "-W", "1", "-q", lab.addr_b],
                check=False)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", r.stdout)
    assert m, r.stdout + r.stderr
    return 1 - int(m.group(2)) / int(m.group(1))


def test_loss_random(lab):
    lab.run(lab.ns_a, ["ping", "-c", "1", "-W", "2", lab.addr_b])    # resolve ARP first
    lab.set_loss(lab.ns_b, 0.25)
    loss = _ping_loss(lab)
    assert 0.15 < loss < 0.36, loss
    assert lab.loss_dropped(lab.ns_b) > 0
    lab.set_loss(lab.ns_b, 0.0)
    assert _ping_loss(lab, 100) == 0.0


def test_loss_seeded_is_deterministic(lab):
    lab.run(lab.ns_a, ["ping", "-c", "1", "-W", "2", lab.addr_b])
    lab.set_loss(lab.ns_a, 0.1, seed=7)         # replies towards a are dropped
    loss = _ping_loss(lab, 500)
    assert 0.08 <= loss <= 0.12, loss
    lab.set_loss(lab.ns_a, 0.0)


def test_loss_at_construction(lab_factory):
    lab = lab_factory(loss=1.0)
    r = lab.run(lab.ns_a, ["ping", "-c", "2", "-i", "0.2", "-W", "1", lab.addr_b], check=False)
    assert r.returncode != 0


def test_removed_after_exit_and_on_exception():
    with Lab() as lab:
        names = lab.namespaces
        assert set(names) <= _all_ns()
    assert not set(names) & _all_ns()
    with pytest.raises(ZeroDivisionError):
        with Lab() as lab:
            names = lab.namespaces
            1 / 0
    assert not set(names) & _all_ns()


def test_run_in_and_popen(lab):
    import socket

    def addr():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((lab.addr_a, 0))
            return s.getsockname()[0]
        finally:
            s.close()
    assert lab.run_in(lab.ns_a, addr) == lab.addr_a
    p = lab.popen(lab.ns_b, ["sleep", "30"])
    assert p.poll() is None


def test_atexit_and_sweep(tmp_path):
    # a child creates a lab and exits normally: atexit removes it
    code = ("from aiotcpstack.host.lab import Lab\n"
            "import sys\nlab = Lab().__enter__()\nprint(lab.ns_a, lab.ns_b, flush=True)\n")
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    names = set(out.stdout.split())
    assert names and not names & _all_ns()
    # a child is SIGKILLed with a lab up: the next Lab() sweeps it
    code2 = code + "import time\ntime.sleep(60)\n"
    p = subprocess.Popen([sys.executable, "-c", code2], stdout=subprocess.PIPE, text=True, env=env)
    names = set(p.stdout.readline().split())
    assert names and names <= _all_ns()
    p.kill()
    p.wait()
    assert names <= _all_ns()
    sweep_stale()
    assert not names & _all_ns()


# ---------------------------------------------------------------- ImpairedLab

def test_impaired_lab_routes_through_m_with_pmtu(lab_factory):
    lab = lab_factory(impaired=True, mtu2=1280)
    assert not lab.wire
    assert lab.addr_b.startswith("198.19.") and lab.addr6_b.startswith("2001:2:0:")
    r = lab.run(lab.ns_a, ["ping", "-c", "1", "-W", "2", lab.addr_b])
    assert "ttl=63" in r.stdout                                   # one router hop
    lab.run(lab.ns_a, ["ping", "-6", "-c", "1", "-W", "2", lab.addr6_b])
    r = lab.run(lab.ns_a, ["ping", "-c", "1", "-W", "1", "-M", "do", "-s", "1400", lab.addr_b], check=False)
    assert "mtu = 1280" in r.stdout                               # kernel router's ICMP frag-needed
    for ns in (lab.ns_a, lab.ns_b):
        assert "default" not in lab.run(ns, ["ip", "route"]).stdout


def test_impaired_lab_wire_impairs(lab_factory):
    lab = lab_factory(impaired=True, mtu2=1280, delay=0.005, loss=0.1, dup=0.05, reorder=0.1, seed=3)
    assert lab.wire and lab.bridge is not None
    r = lab.run(lab.ns_a, ["ping", "-c", "200", "-i", "0.005", "-W", "1", "-q", lab.addr_b], check=False)
    assert "duplicates" in r.stdout
    lab.run(lab.ns_a, ["ping", "-6", "-c", "3", "-W", "3", lab.addr6_b], check=False)
    r = lab.run(lab.ns_a, ["ping", "-c", "1", "-W", "1", "-M", "do", "-s", "1400", lab.addr_b], check=False)
    assert "mtu = 1280" in r.stdout
    stats = lab.stop_bridge()
    assert stats and stats["lost"][0] > 0 and stats["dup"][0] > 0 and stats["reordered"][0] > 0
    # restart without impairments: clean path, and TCP works across it (kernel both ends)
    lab.start_bridge(delay=0.001)
    lab.run(lab.ns_a, ["ping", "-c", "3", "-i", "0.05", "-W", "1", lab.addr_b])


def test_impaired_lab_tcp_across_wire(lab_factory):
    import socket
    import threading
    lab = lab_factory(impaired=True, mtu2=1280, loss=0.02, reorder=0.02, dup=0.01, delay=0.001, seed=1)
    data = os.urandom(300_000)

    def server():
        s = socket.socket()
        s.bind((lab.addr_b, 0))
        s.listen()
        return s
    srv = lab.run_in(lab.ns_b, server)
    got = []

    def serve():
        c, _ = srv.accept()
        buf = b""
        while True:
            d = c.recv(65536)
            if not d:
                break
            buf += d
        got.append(buf)
        c.close()
    t = threading.Thread(target=serve)
    t.start()

    def client():
        c = socket.create_connection((lab.addr_b, srv.getsockname()[1]), timeout=20)
        c.sendall(data)
        c.close()
    lab.run_in(lab.ns_a, client)
    t.join(30)
    srv.close()
    assert got and got[0] == data


def test_lab_usable_from_a_coroutine():
    import asyncio
    from aiotcpstack.host import iface

    async def main():
        with Lab() as lab:
            lab.set_loss(lab.ns_b, 0.5)
            info = iface.discover(lab.if_a, lab.ns_a)
            assert info.index == lab.ifindex_a and info.mac == lab.mac_a
            return lab.namespaces
    names = asyncio.run(main())
    assert not set(names) & _all_ns()


def test_iface_discover_neighbour_route(lab):
    import socket as _s
    from aiotcpstack.host import errors, iface
    info = iface.discover(lab.if_a, lab.ns_a)
    assert info.up and info.mtu == 1500 and info.mac == lab.mac_a
    assert (_s.inet_aton(lab.addr_a), 24) in info.addrs_v4
    assert (_s.inet_pton(_s.AF_INET6, lab.addr6_a), 64) in info.addrs_v6
    assert info.link_local_v6 is not None
    assert any(r.gateway is None and r.prefixlen == 24 for r in info.routes)
    assert iface.route_lookup(lab.ns_a, _s.inet_aton(lab.addr_b)) == (None, lab.ifindex_a)
    with pytest.raises(OSError):
        iface.route_lookup(lab.ns_a, "198.19.0.1")                 # no default route: unreachable
    assert iface.neighbour(lab.ns_a, lab.ifindex_a, _s.inet_aton(lab.addr_b)) is None
    for ip in (lab.addr_b, lab.addr6_b):
        iface.solicit(lab.ns_a, lab.ifindex_a, ip)
        for _ in range(50):
            mac = iface.neighbour(lab.ns_a, lab.ifindex_a, ip)
            if mac:
                break
            time.sleep(0.02)
        assert mac == lab.mac_b
    with pytest.raises(errors.NoSuchInterfaceError):
        iface.discover("nope0", lab.ns_a)
    # solicit is rate-limited per target (no spam when a caller polls)
    table = iface.NeighbourTable(lab.ns_a)
    try:
        assert table.solicit(lab.ifindex_a, lab.spare_addr) is True
        assert table.solicit(lab.ifindex_a, lab.spare_addr) is False
        assert table.lookup(lab.ifindex_a, lab.addr_b) == lab.mac_b
    finally:
        table.close()
    with pytest.raises(errors.NoSuchNamespaceError):
        iface.neighbour("ats-no-such-ns", 1, lab.addr_b)


def test_impaired_lab_removed(lab_factory):
    from aiotcpstack.host.lab import ImpairedLab
    with ImpairedLab(delay=0.001) as lab:
        names = lab.namespaces
        bridge = lab.bridge
    assert bridge.poll() is not None
    assert not set(names) & _all_ns()


def test_sigkilled_impaired_lab_is_swept_with_its_bridge():
    code = ("from aiotcpstack.host.lab import ImpairedLab\nimport time\n"
            "lab = ImpairedLab(delay=0.001).__enter__()\n"
            "print(lab.bridge.pid, *lab.namespaces, flush=True)\ntime.sleep(60)\n")
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    first = p.stdout.readline().split()
    bridge_pid, names = int(first[0]), set(first[1:])
    assert names and names <= _all_ns()
    p.kill()
    p.wait()
    sweep_stale()
    assert not names & _all_ns()
    for _ in range(50):                       # the bridge notices it was orphaned (or was killed by the sweep)
        try:
            os.kill(bridge_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("impairment bridge survived its lab")
