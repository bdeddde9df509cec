"""ImpairedLab: a - m - b with a kernel router in m and an optional impairment wire on the m-b hop.

    ns_a [if_a X.1] <=> [ma X.254]  ns_m (ip_forward)  [mx Y.254] <=> [my] ~impair~ [mb] <=> [if_b Y.2] ns_b
                                                       (without impairments: [mb Y.254] <=> [if_b] directly)

a side: 198.18.X.0/24 and 2001:2:0:X::/64 (router .254 / ::fe); b side: 198.19.Y.0/24 and
2001:2:0:(0x100+Y)::/64.  a and b reach each other only through m (static routes, no default routes).

Why a router and not an L2 bridge: ``mtu2`` must produce real PMTU signalling (ICMP frag-needed /
packet-too-big) - the kernel router in m does that; an L2 bridge would silently drop oversized frames.
The impairment wire (``python -m aiotcpstack.host.impair``) is L2 and sits between the router's b-side
veth (``mx``, whose peer ``my`` is also in m) and ``mb``, the veth to b; ``my``/``mb`` have no addresses,
IPv6 disabled and an nft netdev ingress drop so the kernel in m ignores them (AF_PACKET sees frames
before that hook).  The senders into the wire (``mx`` and ``if_b``) have tx-checksum/TSO/GSO off and
``my``/``mb`` have GRO off, so the wire only ever sees ordinary, fully checksummed frames <= mtu2.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
from typing import Any

from pyroute2 import IPRoute

from . import netns as _ns
from .errors import NoSuchNamespaceError
from .lab import _LabBase, lab_addr6

_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ImpairedLab(_LabBase):
    """Three namespaces ``ns_a`` - ``ns_m`` - ``ns_b``.

    Attributes as :class:`Lab` (ns_a, ns_b, if_a, if_b, addr_a, addr_b, addr6_a, addr6_b, mac_a, mac_b,
    ifindex_a, ifindex_b, spare_addr, spare_addr6 (in a's subnet), prefixlen) plus ns_m, gw_a, gw_b,
    gw6_a, gw6_b (router addresses), spare_addr_b / spare_addr6_b (in b's subnet), mtu, mtu2, mac_gw_a,
    mac_gw_b (router MACs seen from a / b: the next hop a user-space stack needs).
    """

    def __init__(self, prefix: str | None = None, offloads: bool = True, ipv6: bool = True, mtu: int = 1500,
                 mtu2: int | None = None, delay: float = 0.0, jitter: float = 0.0, reorder: float = 0.0,
                 dup: float = 0.0, loss: float = 0.0, seed: int = 0, wire: bool | None = None,
                 reorder_delay: float | None = None) -> None:
        super().__init__(prefix)
        self.offloads, self.ipv6, self.mtu = offloads, ipv6, mtu
        self.mtu2 = mtu2 or mtu
        self.impairment = dict(delay=delay, jitter=jitter, reorder=reorder, dup=dup, loss=loss, seed=seed,
                               reorder_delay=reorder_delay)
        self.wire = wire if wire is not None else any((delay, jitter, reorder, dup, loss))
        r = random.SystemRandom()
        x, y = r.randrange(256), r.randrange(256)
        self.subnet, self.subnet_b = x, y
        p = self.prefix
        self.ns_a, self.ns_m, self.ns_b = f"{p}-a", f"{p}-m", f"{p}-b"
        self.if_a, self.if_b = f"{p}a", f"{p}b"
        self.if_ma, self.if_mx, self.if_my, self.if_mb = f"{p}ma", f"{p}mx", f"{p}my", f"{p}mb"
        self.addr_a, self.gw_a, self.spare_addr = f"198.18.{x}.1", f"198.18.{x}.254", f"198.18.{x}.3"
        self.addr_b, self.gw_b, self.spare_addr_b = f"198.19.{y}.2", f"198.19.{y}.254", f"198.19.{y}.3"
        b6 = 0x100 + y
        self.addr6_a, self.gw6_a, self.spare_addr6 = (lab_addr6(x, 1), lab_addr6(x, 0xfe),
                                                       lab_addr6(x, 3))
        self.addr6_b, self.gw6_b, self.spare_addr6_b = (lab_addr6(b6, 2), lab_addr6(b6, 0xfe),
                                                         lab_addr6(b6, 3))
        self.net_a, self.net_b = f"198.18.{x}.0/24", f"198.19.{y}.0/24"
        self.net6_a, self.net6_b = f"2001:2:0:{x:x}::/64", f"2001:2:0:{b6:x}::/64"
        self.mac_a = self.mac_b = self.mac_gw_a = self.mac_gw_b = b""
        self.bridge: subprocess.Popen | None = None

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        for s in ("a", "m", "b"):
            self._make_ns(s)
        a, m, b = self.ns_a, self.ns_m, self.ns_b
        self._veth(a, self.if_a, m, self.if_ma, self.mtu)
        b_side_router_if = self.if_mx if self.wire else self.if_mb
        if self.wire:
            self._veth(m, self.if_mx, m, self.if_my, self.mtu2)
        self._veth(m, self.if_mb, b, self.if_b, self.mtu2)
        self._configure(a, self.if_a, [(self.addr_a, 24)], [(self.addr6_a, 64)], self.ipv6)
        self._configure(m, self.if_ma, [(self.gw_a, 24)], [(self.gw6_a, 64)], self.ipv6)
        self._configure(m, b_side_router_if, [(self.gw_b, 24)], [(self.gw6_b, 64)], self.ipv6)
        self._configure(b, self.if_b, [(self.addr_b, 24)], [(self.addr6_b, 64)], self.ipv6)
        _ns.write_sysctl(m, "net/ipv4/ip_forward", 1)
        if self.ipv6:
            _ns.write_sysctl(m, "net/ipv6/conf/all/forwarding", 1)
        if self.wire:
            for dev in (self.if_my, self.if_mb):
                self._configure(m, dev, [], [], ipv6=False)
            self.nft(m, "table netdev ats_wire {\n" + "".join(
                f"  chain in_{i} {{\n    type filter hook ingress device \"{dev}\" priority 0; policy drop;\n  }}\n"
                for i, dev in enumerate((self.if_my, self.if_mb))) + "}\n")
            self.set_offloads(m, self.if_mx, False, ("tx", "tso", "gso"))
            self.set_offloads(b, self.if_b, False, ("tx", "tso", "gso"))
            for dev in (self.if_my, self.if_mb):
                self.set_offloads(m, dev, False, ("gro",))
        if not self.offloads:
            self.set_offloads(a, self.if_a, False)
            self.set_offloads(b, self.if_b, False)
        # routes: each end reaches the other subnet via the router only
        with IPRoute(netns=a) as ipr:
            ipr.route("add", dst=self.net_b, gateway=self.gw_a)
            if self.ipv6:
                ipr.route("add", dst=self.net6_b, gateway=self.gw6_a)
        with IPRoute(netns=b) as ipr:
            ipr.route("add", dst=self.net_a, gateway=self.gw_b)
            if self.ipv6:
                ipr.route("add", dst=self.net6_a, gateway=self.gw6_b)
        self.mac_a, self.mac_b = self._mac(a, self.if_a), self._mac(b, self.if_b)
        self.mac_gw_a, self.mac_gw_b = self._mac(m, self.if_ma), self._mac(m, b_side_router_if)
        self.ifindex_a, self.ifindex_b = self._ifindex(a, self.if_a), self._ifindex(b, self.if_b)
        if self.wire:
            self.start_bridge(**self.impairment)

    # ------------------------------------------------------------------ impairment bridge
    def start_bridge(self, delay: float = 0.0, jitter: float = 0.0, reorder: float = 0.0, dup: float = 0.0,
                     loss: float = 0.0, seed: int = 0, reorder_delay: float | None = None) -> None:
        """(Re)start the impairment wire with these parameters (needs ``wire=True`` or an impairment)."""
        if not self.wire:
            raise RuntimeError("this ImpairedLab has no impairment wire (pass wire=True or an impairment)")
        self.stop_bridge()
        self.impairment = dict(delay=delay, jitter=jitter, reorder=reorder, dup=dup, loss=loss, seed=seed,
                               reorder_delay=reorder_delay)
        argv = [sys.executable, "-m", "aiotcpstack.host.impair", "--if1", self.if_my, "--if2", self.if_mb,
                "--delay", str(delay), "--jitter", str(jitter), "--reorder", str(reorder), "--dup", str(dup),
                "--loss", str(loss), "--seed", str(seed), "--parent-pid", str(os.getpid())]
        if reorder_delay is not None:
            argv += ["--reorder-delay", str(reorder_delay)]
        env = dict(os.environ)
        env["PYTHONPATH"] = _PKG_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.bridge = self.popen(self.ns_m, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env)
        line = self.bridge.stdout.readline()
        if line.strip() != "ready":
            err = self.bridge.stderr.read() if self.bridge.poll() is not None else ""
            raise RuntimeError(f"impairment bridge did not start: {line!r} {err}")

    def stop_bridge(self) -> dict | None:
        """Stop the wire; returns its counters (rx/tx/lost/dup/reordered per direction: [my->mb, mb->my])."""
        import json
        p, self.bridge = self.bridge, None
        if p is None or p.poll() is not None:
            return None
        p.terminate()
        try:
            _, err = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            return None
        try:
            return json.loads(err.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None

    def close(self) -> None:
        try:
            self.stop_bridge()
        except Exception:  # noqa: BLE001
            pass
        super().close()

    def _loss_target(self, ns: str) -> tuple[str, str]:
        if ns == self.ns_a:
            return self.ns_m, self.if_ma
        if ns == self.ns_b:
            return self.ns_m, self.if_mb
        raise NoSuchNamespaceError(ns)
