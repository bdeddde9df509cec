"""Network-namespace labs for tests and benchmarks (pyroute2; no `ip` shell-outs).

``Lab``: two namespaces joined by one veth pair::

    ns_a [if_a 198.18.X.1/24, 2001:2:0:X::1/64] <==veth==> [if_b 198.18.X.2/24, 2001:2:0:X::2/64] ns_b

``ImpairedLab``: three namespaces, the middle one is a kernel router (ip_forward on)::

    ns_a [if_a .X.1] <=> [ma .X.254] ns_m [mx .Y.254] <=> ... <=> [if_b .Y.2] ns_b

with 198.18.X.0/24 on the a side and 198.19.Y.0/24 on the b side (2001:2:0:X::/64 and 2001:2:1:Y::/64).
``mtu2`` sets the MTU of the m-b hop, so the kernel router in m sends real ICMP frag-needed / packet-too-big.
When any impairment (delay, jitter, reorder, dup, loss) is asked for, the m-b hop becomes a *wire*: a second
veth pair mx<->my inside m, and ``python -m aiotcpstack.host.impair`` moves frames between ``my`` and ``mb``
(the veth to b) through AF_PACKET sockets, with seeded impairments.  ``my``/``mb`` carry no addresses, IPv6 is
disabled on them and an nft netdev ingress rule drops everything the kernel would see on them (AF_PACKET taps
see frames before the ingress hook), so the kernel in m never answers ARP/NDP there or forwards twice.

Addresses only from 198.18.0.0/15 and 2001:2::/48, no default routes: nothing can leave the lab.

Names: ``ats<pid hex>_<3 hex>`` + suffix, so a later run can sweep labs whose pid is dead (see ``sweep_stale``).
"""
from __future__ import annotations

import atexit
import ipaddress
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, Callable

from pyroute2 import IPRoute, netns as pr_netns

from . import netns as _ns
from .errors import NoSuchNamespaceError, PermissionsError, ToolMissingError

__all__ = ["Lab", "ImpairedLab", "sweep_stale", "lab_namespaces"]

IFA_F_NODAD = 0x02
_NAME_RE = re.compile(r"^ats([0-9a-f]+)_([0-9a-f]{3})-([a-z]+)$")

_live_labs: "weakref.WeakSet[_LabBase]" = weakref.WeakSet()
_atexit_registered = False
_reg_lock = threading.Lock()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lab_namespaces() -> list[str]:
    """Names of all namespaces that look like labs made by this module (any pid)."""
    try:
        return sorted(n for n in os.listdir(_ns.NETNS_RUN_DIR) if _NAME_RE.match(n))
    except FileNotFoundError:
        return []


def _kill_processes_in(name: str) -> None:
    """SIGKILL every process whose network namespace is /run/netns/NAME (left-overs of a dead lab)."""
    try:
        st = os.stat(_ns.netns_path(name))
    except OSError:
        return
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            pst = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if (pst.st_ino, pst.st_dev) == (st.st_ino, st.st_dev):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


def sweep_stale() -> list[str]:
    """Remove lab namespaces whose creating pid is dead (and kill processes left inside them).

    Returns the removed names.  A namespace with a process still inside would otherwise live on, unnamed,
    after its /run/netns entry is gone.
    """
    removed = []
    for name in lab_namespaces():
        m = _NAME_RE.match(name)
        if m and not _pid_alive(int(m.group(1), 16)):
            try:
                _kill_processes_in(name)
                pr_netns.remove(name)
                removed.append(name)
            except Exception:  # noqa: BLE001 - racing another sweeper is fine
                pass
    return removed


def _atexit_cleanup() -> None:
    for lab in list(_live_labs):
        try:
            lab.close()
        except Exception:  # noqa: BLE001
            pass


def _register(lab: "_LabBase") -> None:
    global _atexit_registered
    with _reg_lock:
        _live_labs.add(lab)
        if not _atexit_registered:
            atexit.register(_atexit_cleanup)
            _atexit_registered = True


def _check_root() -> None:
    if os.geteuid() != 0:
        raise PermissionsError("creating a network-namespace lab", "root (CAP_SYS_ADMIN and CAP_NET_ADMIN)")


def _new_prefix() -> str:
    return f"ats{os.getpid():x}_{secrets.token_hex(2)[:3]}"


def lab_addr6(subnet: int, host: int) -> str:
    """A lab IPv6 address in 2001:2:0:<subnet>::/64, in canonical (RFC 5952) text form.

    Canonical because the stack reports addresses (``getsockname``, ``stack.addresses``) as
    ``inet_ntop`` writes them: subnet 0 spelled ``2001:2:0:0::1`` would never compare equal to the
    ``2001:2::1`` the stack returns (a CI failure when the random subnet came out 0).
    """
    return str(ipaddress.IPv6Address(f"2001:2:0:{subnet:x}::{host:x}"))


class _LabBase:
    """Namespace bookkeeping, process helpers, nft helpers, offloads, cleanup."""

    prefixlen = 24
    prefixlen6 = 64

    def __init__(self, prefix: str | None) -> None:
        _check_root()
        if shutil.which("nsenter") is None:
            raise ToolMissingError("nsenter", "running processes inside lab namespaces")
        sweep_stale()
        self.prefix = prefix or _new_prefix()
        if len(self.prefix) > 13:
            raise ValueError(f"lab prefix {self.prefix!r} too long (max 13 chars: interface names are <= 15)")
        self._namespaces: list[str] = []
        self._procs: list[subprocess.Popen] = []
        self._closed = False
        self._loss_tables: dict[str, tuple[str, str]] = {}

    # ----------------------------------------------------------------- namespaces
    def _make_ns(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        if _ns.netns_exists(name):
            raise FileExistsError(f"network namespace {name!r} already exists")
        pr_netns.create(name)
        self._namespaces.append(name)
        with IPRoute(netns=name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        return name

    @property
    def namespaces(self) -> list[str]:
        return list(self._namespaces)

    def ipr(self, ns: str) -> IPRoute:
        """An IPRoute bound to lab namespace ``ns`` (caller closes it, e.g. ``with lab.ipr(lab.ns_a) as ipr``)."""
        return IPRoute(netns=ns)

    # ----------------------------------------------------------------- running things
    def run_in(self, ns: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` in a fresh thread switched into namespace ``ns``; return its result."""
        return _ns.run_in_netns(ns, fn, *args, **kwargs)

    def popen(self, ns: str, argv: list[str], **kw: Any) -> subprocess.Popen:
        """Start ``argv`` inside namespace ``ns`` (nsenter --net). Killed at lab close if still running."""
        p = subprocess.Popen(_ns.nsenter_argv(ns, list(argv)), **kw)
        self._procs.append(p)
        return p

    def run(self, ns: str, argv: list[str], check: bool = True, timeout: float | None = 60,
            **kw: Any) -> subprocess.CompletedProcess:
        """Run ``argv`` inside ``ns`` to completion (text output captured unless overridden)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(_ns.nsenter_argv(ns, list(argv)), check=check, timeout=timeout, **kw)

    def nft(self, ns: str, script: str) -> None:
        if shutil.which("nft") is None:
            raise ToolMissingError("nft", "lab packet loss")
        r = subprocess.run(_ns.nsenter_argv(ns, ["nft", "-f", "-"]), input=script, text=True,
                           capture_output=True)
        if r.returncode != 0:
            raise RuntimeError(f"nft in {ns} failed: {r.stderr.strip()}\n--- script ---\n{script}")

    # ----------------------------------------------------------------- veth / addresses
    @staticmethod
    def _veth(ns1: str, if1: str, ns2: str, if2: str, mtu: int) -> None:
        # created directly inside ns1 with the peer in ns2: nothing ever appears in the caller's namespace
        with IPRoute(netns=ns1) as ipr:
            ipr.link("add", ifname=if1, kind="veth", mtu=mtu,
                     peer={"ifname": if2, "net_ns_fd": ns2, "mtu": mtu})

    @staticmethod
    def _ifindex(ns: str, ifname: str) -> int:
        with IPRoute(netns=ns) as ipr:
            idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            from .errors import NoSuchInterfaceError
            raise NoSuchInterfaceError(ifname, ns)
        return idx[0]

    @staticmethod
    def _mac(ns: str, ifname: str) -> bytes:
        with IPRoute(netns=ns) as ipr:
            link = ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0]
        return bytes.fromhex(link.get("IFLA_ADDRESS").replace(":", ""))

    @staticmethod
    def _configure(ns: str, ifname: str, v4: list[tuple[str, int]], v6: list[tuple[str, int]],
                   ipv6: bool, up: bool = True) -> None:
        if ipv6:
            for key in ("accept_dad", "dad_transmits"):
                _ns.write_sysctl(ns, f"net/ipv6/conf/{ifname}/{key}", 0)
            _ns.write_sysctl(ns, f"net/ipv6/conf/{ifname}/accept_ra", 0)
        else:
            _ns.write_sysctl(ns, f"net/ipv6/conf/{ifname}/disable_ipv6", 1)
        with IPRoute(netns=ns) as ipr:
            idx = ipr.link_lookup(ifname=ifname)[0]
            for addr, plen in v4:
                ipr.addr("add", index=idx, address=addr, prefixlen=plen)
            if ipv6:
                for addr, plen in v6:
                    ipr.addr("add", index=idx, address=addr, prefixlen=plen, flags=IFA_F_NODAD)
            if up:
                ipr.link("set", index=idx, state="up")

    def set_offloads(self, ns: str, ifname: str, on: bool,
                     features: tuple[str, ...] = ("tx", "tso", "gso", "gro")) -> None:
        """Turn checksum/segmentation offloads on or off (``ethtool -K`` inside the namespace)."""
        if shutil.which("ethtool") is None:
            raise ToolMissingError("ethtool", "switching veth offloads")
        argv = ["ethtool", "-K", ifname]
        for f in features:
            argv += [f, "on" if on else "off"]
        r = self.run(ns, argv, check=False)
        if r.returncode not in (0, 80):   # 80: "nothing changed"/some features fixed - tolerated
            raise RuntimeError(f"ethtool -K {ifname} in {ns} failed: {r.stderr.strip()}")

    # ----------------------------------------------------------------- loss
    def _loss_target(self, ns: str) -> tuple[str, str]:
        """(namespace, device) whose *egress* feeds ``ns``'s veth."""
        raise NotImplementedError

    SINK = "ats_sink"

    def _ensure_sink(self, ns: str) -> None:
        """A veth pair whose peer stays down: frames sent into it vanish without an error to the sender."""
        with IPRoute(netns=ns) as ipr:
            if ipr.link_lookup(ifname=self.SINK):
                return
            ipr.link("add", ifname=self.SINK, kind="veth", peer={"ifname": self.SINK + "_p"})
            ipr.link("set", index=ipr.link_lookup(ifname=self.SINK)[0], state="up")
        _ns.write_sysctl(ns, f"net/ipv6/conf/{self.SINK}/disable_ipv6", 1)

    def set_loss(self, ns: str, ratio: float, seed: int | None = None) -> None:
        """Drop ``ratio`` (0..1, resolution 1/1000) of the packets arriving at namespace ``ns``'s veth.

        Where: on the netdev *egress* hook of the veth peer that feeds ``ns`` (in the other namespace, own
        table ``ats_loss_<dev>``), not on ``ns``'s ingress: AF_PACKET sockets see received frames before any
        ingress hook, so an ingress rule would not affect a user-space stack in ``ns``.
        How: the chosen frames are ``fwd``-ed into a sink veth (``ats_sink``, peer down) instead of
        ``drop``-ped: a drop at egress returns NET_XMIT_DROP to the sender (kernel TCP treats that as local
        congestion and re-sends, ping retries on ENOBUFS) - not a wire loss; ``fwd`` is NF_STOLEN, silent.
        AF_PACKET senders with PACKET_QDISC_BYPASS skip the egress hook (not affected).
        ``seed=None``: kernel ``numgen random`` (not reproducible).  With a seed: deterministic -
        ``numgen inc mod 1000`` against a seeded random set of round(ratio*1000) residues.
        ``ratio=0`` removes the rule.
        """
        _ns.off_loop(self._set_loss, ns, ratio, seed)

    def _set_loss(self, ns: str, ratio: float, seed: int | None = None) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError("loss ratio must be in [0, 1]")
        tns, dev = self._loss_target(ns)
        n = round(ratio * 1000)
        table = f"ats_loss_{dev}"
        script = f"table netdev {table}\ndelete table netdev {table}\n" if ns in self._loss_tables else ""
        if n > 0:
            self._ensure_sink(tns)
            if n >= 1000:
                match = ""
            elif seed is None:
                match = f"numgen random mod 1000 < {n} "
            else:
                residues = sorted(random.Random(seed).sample(range(1000), n))
                match = "numgen inc mod 1000 { " + ", ".join(map(str, residues)) + " } "
            script += (f"table netdev {table} {{\n"
                       f"  chain egress {{\n"
                       f"    type filter hook egress device \"{dev}\" priority 0; policy accept;\n"
                       f"    {match}counter fwd to \"{self.SINK}\"\n"
                       f"  }}\n}}\n")
        if script:
            self.nft(tns, script)
        if n > 0:
            self._loss_tables[ns] = (tns, dev)
        else:
            self._loss_tables.pop(ns, None)

    def loss_dropped(self, ns: str) -> int:
        """Packets dropped so far by ``set_loss(ns, ...)``."""
        import json
        if ns not in self._loss_tables:
            return 0
        tns, dev = self._loss_tables[ns]
        out = self.run(tns, ["nft", "-j", "list", "table", "netdev", f"ats_loss_{dev}"]).stdout
        for item in json.loads(out)["nftables"]:
            for e in item.get("rule", {}).get("expr", []):
                if "counter" in e:
                    return e["counter"]["packets"]
        return 0

    # ----------------------------------------------------------------- lifecycle
    def _setup(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        _register(self)
        try:
            _ns.off_loop(self._setup)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for p in self._procs:
            if p.poll() is None:
                try:
                    p.terminate()
                    p.wait(2)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                except Exception:  # noqa: BLE001
                    pass
        errors = []
        for name in reversed(self._namespaces):
            try:
                if _ns.netns_exists(name):
                    pr_netns.remove(name)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{name}: {exc}")
        _live_labs.discard(self)
        if errors:
            raise RuntimeError("lab cleanup failed: " + "; ".join(errors))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.prefix} namespaces={self._namespaces}>"


class Lab(_LabBase):
    """Two namespaces ``ns_a``/``ns_b`` joined by veth ``if_a``/``if_b``.

    Attributes: ns_a, ns_b, if_a, if_b, addr_a, addr_b (v4 strings), addr6_a, addr6_b, prefixlen (24),
    prefixlen6 (64), spare_addr / spare_addr6 (free addresses in the subnets, for dedicated mode),
    mac_a, mac_b (bytes), ifindex_a, ifindex_b, mtu, subnet (index X).
    """

    def __init__(self, prefix: str | None = None, offloads: bool = True, loss: float = 0.0,
                 ipv6: bool = True, mtu: int = 1500) -> None:
        super().__init__(prefix)
        self.offloads = offloads
        self.initial_loss = loss
        self.ipv6 = ipv6
        self.mtu = mtu
        self.subnet = random.SystemRandom().randrange(256)
        x = self.subnet
        self.ns_a = f"{self.prefix}-a"
        self.ns_b = f"{self.prefix}-b"
        self.if_a = f"{self.prefix}a"
        self.if_b = f"{self.prefix}b"
        self.addr_a, self.addr_b, self.spare_addr = f"198.18.{x}.1", f"198.18.{x}.2", f"198.18.{x}.3"
        self.addr6_a, self.addr6_b = lab_addr6(x, 1), lab_addr6(x, 2)
        self.spare_addr6 = lab_addr6(x, 3)
        self.network = ipaddress.ip_network(f"198.18.{x}.0/24")
        self.network6 = ipaddress.ip_network(f"2001:2:0:{x:x}::/64")
        self.mac_a = self.mac_b = b""
        self.ifindex_a = self.ifindex_b = 0

    def _setup(self) -> None:
        self._make_ns("a")
        self._make_ns("b")
        self._veth(self.ns_a, self.if_a, self.ns_b, self.if_b, self.mtu)
        self._configure(self.ns_a, self.if_a, [(self.addr_a, 24)], [(self.addr6_a, 64)], self.ipv6)
        self._configure(self.ns_b, self.if_b, [(self.addr_b, 24)], [(self.addr6_b, 64)], self.ipv6)
        if not self.offloads:
            self.set_offloads(self.ns_a, self.if_a, False)
            self.set_offloads(self.ns_b, self.if_b, False)
        self.mac_a = self._mac(self.ns_a, self.if_a)
        self.mac_b = self._mac(self.ns_b, self.if_b)
        self.ifindex_a = self._ifindex(self.ns_a, self.if_a)
        self.ifindex_b = self._ifindex(self.ns_b, self.if_b)
        if self.initial_loss:
            self.set_loss(self.ns_a, self.initial_loss)
            self.set_loss(self.ns_b, self.initial_loss)

    def _loss_target(self, ns: str) -> tuple[str, str]:
        if ns == self.ns_a:
            return self.ns_b, self.if_b
        if ns == self.ns_b:
            return self.ns_a, self.if_a
        raise NoSuchNamespaceError(ns)

    def peer_ns(self, ns: str) -> str:
        return self.ns_b if ns == self.ns_a else self.ns_a


# ImpairedLab lives in impaired.py-like section below to keep Lab importable early.
from ._impaired_lab import ImpairedLab  # noqa: E402,F401
