"""Shared-mode RST suppression: keep the kernel from answering the segments of the user-space stack.

Decision: **nftables**, one table per stack, ``inet aiotcpstack_<pid>`` (``_<n>`` appended for a second
guard of the same process in the same namespace), comment ``aiotcpstack pid=<pid>``, holding a named set
``ports`` (inet_service, ``flags dynamic``: a hash set, see ``_ruleset``) and two base chains::

    chain pre { type filter hook prerouting priority raw; policy accept;       # -300: before conntrack
        iif "lo" accept
        tcp dport @ports fib daddr type local counter drop }
    chain out { type filter hook output priority raw; policy accept;
        oif "lo" accept
        tcp sport @ports tcp flags & rst == rst counter drop }

Why nftables, not iptables: a named set makes "add a port" one set-element add (no rule churn, O(1)
lookup at any number of ports), the whole state is one table we can delete atomically (nothing else of
the host's firewall is touched or even listed/rewritten, unlike iptables-save/restore), and element adds
can be sent as a raw nfnetlink batch from this process (no fork/exec per connection).

Why drop in prerouting (raw) rather than only the kernel's outgoing RSTs: AF_PACKET taps receive frames
before the netfilter prerouting hook, so the user-space stack still sees everything while the kernel
never processes those segments at all: no RST (including the one the kernel sends for a SYN to a port
that is only *bound* by our reservation socket, ports.py), no SYN-ACK/ACK/challenge ACK, no conntrack
entry, no wasted kernel CPU per segment.  ``fib daddr type local`` limits it to traffic addressed to this
host (forwarded flows that happen to use the port are untouched).  The output-hook rule is a
belt-and-braces for anything the kernel still originates with such a source port (our own frames go out
through AF_PACKET and never traverse the IP output hook, so they are not affected).  Loopback is exempt:
the stack does not see lo traffic, so local kernel clients keep getting the kernel's honest answers --
unless the stack's interface IS lo (``RstGuard(interface="lo")``): then lo is covered like any other
interface, since kernel sockets in the namespace are the peers the stack talks to over lo.

Why not earlier, at the device's netdev ingress hook (also after the AF_PACKET taps, before ``ip_rcv``):
measured in PERF_LOG step 24 (a netdev table beside this one, sets kept equal in one transaction; the
inet family's ingress hook refuses ``fib``).  It saves only ``ip_rcv`` itself (~0.2 us a frame, ~13 % of
the receive softirq of a dropped frame); the rule's evaluation and the drop (~55 %, ~1.7 us a frame in
a round trip) move with it, and the netdev family validates the IP header again.  Round trips and bulk
receive (offloads on and off) did not change; not worth a second table per guard.

Why ``fib daddr type local`` and not a set of our addresses (``ip daddr @local4``, kept by
host/addr_monitor.py) or a direct ``ip daddr`` match: measured in PERF_LOG step 30.  Without ``fib`` the
rule costs ~0.2 us less a frame (2.14 -> 1.95 us of the sender's CPU per dropped frame); no workload moved
beyond its spread.  And it would not mean the same: ``fib`` answers from the namespace's local routing
table at the moment the frame arrives -- every interface's addresses, 127.0.0.0/8, AnyIP prefixes --
while a set follows the stack's interface one loop turn late (the kernel would RST our ports at a new
address meanwhile); the same meaning needs a mirror of the local table (a route monitor, interval sets).

Cost of ``add_port``: one NFT_MSG_NEWSETELEM inside a BATCH_BEGIN/END sent on a NETLINK_NETFILTER socket
that was opened in the stack's namespace at construction, waiting for the kernel's ACK (so the element is
active when add_port returns).  Measured ~20-40 us (see tests/live/test_firewall.py::test_add_port_cost),
independent of the number of ports held (hash set); ``nft add element`` via a process costs ~3-5 ms.
``add_ports``/``remove_ports`` put many elements in one transaction (~140-180 us for 32).  If the
netlink path fails (odd kernels), it falls back to ``nft -f -``.

Lifecycle: ``close()`` deletes the table; every guard is closed at interpreter exit (atexit) and on
SIGTERM/SIGHUP/SIGINT *when the default disposition would kill the process without running atexit*
(SIG_DFL): then the tables are removed and the signal is re-raised with the default action (the exit
status stays "killed by signal").  Python-level handlers (e.g. the default SIGINT -> KeyboardInterrupt,
or an application's SIGTERM handler) are chained to unchanged - the process may survive them, so the
guard stays; atexit covers the later exit.  At construction, tables ``aiotcpstack_<pid>*`` whose pid is
dead are deleted (sweep; SIGKILL leaves them behind).
"""
from __future__ import annotations

import atexit
import errno
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import weakref
from typing import Any

from . import netns as _ns
from .errors import FirewallError, PermissionsError, ToolMissingError

__all__ = ["RstGuard", "sweep_stale_tables", "TABLE_PREFIX"]

TABLE_PREFIX = "aiotcpstack_"
_TABLE_RE = re.compile(r"^aiotcpstack_(\d+)(?:_(\d+))?$")

# --- nfnetlink constants
NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_ACK, NLM_F_CREATE = 0x1, 0x4, 0x400
NLMSG_ERROR = 2
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 16, 17
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NFPROTO_INET = 1
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY = 1
NFTA_DATA_VALUE = 1
NLA_F_NESTED = 0x8000


def _nla(t: int, payload: bytes) -> bytes:
    ln = 4 + len(payload)
    return struct.pack("=HH", ln, t) + payload + b"\0" * ((4 - ln % 4) % 4)


def _nlmsg(mtype: int, flags: int, seq: int, family: int, res_id: int, payload: bytes) -> bytes:
    body = struct.pack("=BBH", family, 0, socket.htons(res_id)) + payload
    return struct.pack("=IHHII", 16 + len(body), mtype, flags, seq, 0) + body


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _nft_argv(netns: str | None, args: list[str]) -> list[str]:
    return _ns.nsenter_argv(netns, ["nft", *args])


def _require_nft() -> None:
    if shutil.which("nft") is None:
        raise ToolMissingError("nft", "shared-mode RST suppression (RstGuard)")
    if os.geteuid() != 0:
        raise PermissionsError("installing nftables rules for RST suppression", "CAP_NET_ADMIN")


def _nft(netns: str | None, args: list[str], script: str | None = None) -> str:
    r = subprocess.run(_nft_argv(netns, args), input=script, capture_output=True, text=True)
    if r.returncode != 0:
        msg = r.stderr.strip()
        if "Operation not permitted" in msg:
            raise PermissionsError("nft " + " ".join(args), "CAP_NET_ADMIN", msg)
        raise FirewallError(errno.EINVAL, f"nft {' '.join(args)} failed"
                            f"{' in network namespace ' + repr(netns) if netns else ''}: {msg}"
                            + (f"\n--- script ---\n{script}" if script else ""))
    return r.stdout


def list_tables(netns: str | None = None) -> list[str]:
    """Names of our tables (family inet) in ``netns``."""
    out = _nft(netns, ["-j", "list", "tables", "inet"])
    names = []
    for item in json.loads(out or '{"nftables": []}')["nftables"]:
        t = item.get("table")
        if t and t.get("family") == "inet" and _TABLE_RE.match(t["name"]):
            names.append(t["name"])
    return names


def sweep_stale_tables(netns: str | None = None) -> list[str]:
    """Delete our tables in ``netns`` whose owning pid is dead. Returns their names."""
    dead = [n for n in list_tables(netns) if not _pid_alive(int(_TABLE_RE.match(n).group(1)))]
    if dead:
        script = "".join(f"delete table inet {n}\n" for n in dead)
        try:
            _nft(netns, ["-f", "-"], script)
        except FirewallError:
            for n in dead:          # raced with another sweeper: delete one by one, ignore the missing
                try:
                    _nft(netns, ["delete", "table", "inet", n])
                except FirewallError:
                    pass
    return dead


# ---------------------------------------------------------------- process-wide cleanup
_guards: "weakref.WeakSet[RstGuard]" = weakref.WeakSet()
_hooks_lock = threading.Lock()
_hooks_installed = False
_prev_handlers: dict[int, Any] = {}
_counter = 0


def _close_all() -> None:
    for g in list(_guards):
        try:
            g.close()
        except Exception:  # noqa: BLE001
            pass


def _on_signal(signum: int, frame: Any) -> None:
    prev = _prev_handlers.get(signum, signal.SIG_DFL)
    if prev is signal.SIG_IGN:
        return
    if prev in (signal.SIG_DFL, None):
        # the default action kills us without atexit: clean up, then die by the same signal
        _close_all()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    prev(signum, frame)      # Python handler (default_int_handler raises KeyboardInterrupt): keep semantics


def _install_hooks() -> None:
    global _hooks_installed
    with _hooks_lock:
        if _hooks_installed:
            return
        atexit.register(_close_all)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                try:
                    _prev_handlers[sig] = signal.getsignal(sig)
                    signal.signal(sig, _on_signal)
                except (ValueError, OSError):
                    pass
        _hooks_installed = True


class RstGuard:
    """Keep the kernel of ``netns`` from processing / answering TCP segments for the stack's ports.

    ``add_port(p)`` / ``remove_port(p)`` (cheap: one netlink batch), ``ports``, ``close()``; a context manager.
    """

    def __init__(self, netns: str | None = None, use_netlink: bool = True, interface: str | None = None) -> None:
        global _counter
        #: the stack's own interface is the loopback device: then lo is not exempt (kernel clients
        #: and servers in the namespace are exactly the peers the stack talks to over lo)
        self.covers_lo = interface == "lo"
        _require_nft()
        if netns is not None and not _ns.netns_exists(netns):
            from .errors import NoSuchNamespaceError
            raise NoSuchNamespaceError(netns)
        self.netns = netns
        self.pid = os.getpid()
        self.ports: set[int] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._seq = 0
        self._sock: socket.socket | None = None
        sweep_stale_tables(netns)
        existing = set(list_tables(netns))
        with _hooks_lock:
            name = f"{TABLE_PREFIX}{self.pid}"
            while name in existing or any(g.table == name and g.netns == netns for g in _guards):
                _counter += 1
                name = f"{TABLE_PREFIX}{self.pid}_{_counter}"
            self.table = name
        _nft(netns, ["-f", "-"], self._ruleset())
        _guards.add(self)
        _install_hooks()
        if use_netlink:
            try:
                self._sock = self._open_netlink()
            except OSError:
                if self._sock is not None:
                    self._sock.close()
                self._sock = None

    def _ruleset(self) -> str:
        t = self.table
        return (f"table inet {t} {{\n"
                f"  comment \"aiotcpstack pid={self.pid}\"\n"
                # flags dynamic: a hash set (O(1) element updates); without it the kernel picks the
                # bitmap backend for a 16-bit key, whose element insert/remove walks a list of
                # all elements (O(n): ~160 us per port at 10,000 ports instead of ~20 us)
                f"  set ports {{ type inet_service; flags dynamic; "
                f"comment \"local TCP ports owned by aiotcpstack pid {self.pid}\"; }}\n"
                f"  chain pre {{\n"
                f"    type filter hook prerouting priority raw; policy accept;\n"
                + ("" if self.covers_lo else "    iif \"lo\" accept\n")
                + f"    tcp dport @ports fib daddr type local counter drop\n"
                f"  }}\n"
                f"  chain out {{\n"
                f"    type filter hook output priority raw; policy accept;\n"
                + ("" if self.covers_lo else "    oif \"lo\" accept\n")
                + f"    tcp sport @ports tcp flags & rst == rst counter drop\n"
                f"  }}\n"
                f"}}\n")

    # ----------------------------------------------------------- netlink fast path
    def _open_netlink(self) -> socket.socket:
        def mk() -> socket.socket:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
            s.bind((0, 0))
            return s
        return mk() if self.netns is None else _ns.run_in_netns(self.netns, mk)

    def _netlink_elem(self, mtype: int, ports: list[int]) -> None:
        assert self._sock is not None
        self._seq += 1
        seq = self._seq
        elems = b"".join(
            _nla(NFTA_LIST_ELEM | NLA_F_NESTED,
                 _nla(NFTA_SET_ELEM_KEY | NLA_F_NESTED, _nla(NFTA_DATA_VALUE, struct.pack("!H", p))))
            for p in ports)
        payload = (_nla(NFTA_SET_ELEM_LIST_TABLE, self.table.encode() + b"\0")
                   + _nla(NFTA_SET_ELEM_LIST_SET, b"ports\0"))
        if ports:
            payload += _nla(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, elems)
        flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE if mtype == NFT_MSG_NEWSETELEM else 0)
        msg = (_nlmsg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, b"")
               + _nlmsg((NFNL_SUBSYS_NFTABLES << 8) | mtype, flags, seq, NFPROTO_INET, 0, payload)
               + _nlmsg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, b""))
        self._sock.send(msg)
        while True:
            data = self._sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                ln, t, _fl, rseq, _pid = struct.unpack_from("=IHHII", data, off)
                if t == NLMSG_ERROR and rseq == seq:
                    err = struct.unpack_from("=i", data, off + 16)[0]
                    if err:
                        raise OSError(-err, f"nftables set element update on {self.table}: {os.strerror(-err)}")
                    return
                off += (ln + 3) & ~3 or len(data)

    # ----------------------------------------------------------- public API
    def add_port(self, port: int) -> None:
        """Start keeping the kernel away from local TCP port ``port`` (idempotent)."""
        self._update(NFT_MSG_NEWSETELEM, [port])

    def remove_port(self, port: int) -> None:
        """Stop guarding ``port`` (unknown ports: no-op)."""
        self._update(NFT_MSG_DELSETELEM, [port])

    def add_ports(self, ports: "list[int]") -> None:
        """``add_port`` for many ports in one netlink batch (one kernel transaction; active when
        this returns)."""
        self._update(NFT_MSG_NEWSETELEM, ports)

    def remove_ports(self, ports: "list[int]") -> None:
        """``remove_port`` for many ports in one netlink batch."""
        self._update(NFT_MSG_DELSETELEM, ports)

    def _update(self, mtype: int, ports: "list[int]") -> None:
        for port in ports:
            if not 0 < port < 65536:
                raise ValueError(f"bad port {port}")
        with self._lock:
            if self._closed:
                raise RuntimeError("RstGuard is closed")
            adding = mtype == NFT_MSG_NEWSETELEM
            have = self.ports
            todo = list(dict.fromkeys(p for p in ports if (p in have) != adding))
            if not todo:
                return
            if self._sock is not None:
                try:
                    self._netlink_elem(mtype, todo)
                except OSError as exc:
                    if exc.errno == errno.ENOENT and not adding:
                        if len(todo) > 1:          # some already gone: the batch was refused whole
                            self._sock_elems_one_by_one(mtype, todo)
                    else:                           # unexpected: fall back to the nft command for good
                        self._sock.close()
                        self._sock = None
                        self._nft_elem(adding, todo)
            else:
                self._nft_elem(adding, todo)
            if adding:
                have.update(todo)
            else:
                have.difference_update(todo)

    def _sock_elems_one_by_one(self, mtype: int, ports: "list[int]") -> None:
        for p in ports:
            try:
                self._netlink_elem(mtype, [p])
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise

    def _nft_elem(self, adding: bool, ports: "list[int]") -> None:
        verb = "add" if adding else "delete"
        _nft(self.netns, [verb, "element", "inet", self.table, "ports", "{ " + ", ".join(map(str, ports)) + " }"])

    def list_kernel_ports(self) -> set[int]:
        """The set's elements as the kernel has them (slow: runs nft; for tests and debugging)."""
        out = _nft(self.netns, ["-j", "list", "set", "inet", self.table, "ports"])
        for item in json.loads(out)["nftables"]:
            if "set" in item:
                elems = item["set"].get("elem", [])
                return {e if isinstance(e, int) else e.get("elem", {}).get("val") for e in elems}
        return set()

    def counters(self) -> dict[str, int]:
        """Packets dropped so far: {'pre': n, 'out': n}."""
        out = _nft(self.netns, ["-j", "list", "table", "inet", self.table])
        res = {}
        for item in json.loads(out)["nftables"]:
            r = item.get("rule")
            if r:
                for e in r["expr"]:
                    if "counter" in e:
                        res[r["chain"]] = e["counter"]["packets"]
        return res

    def close(self) -> None:
        """Delete the table (idempotent). The kernel handles those ports again from now on."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._sock is not None:
                self._sock.close()
                self._sock = None
        _guards.discard(self)
        if os.getpid() != self.pid:      # forked child: the table belongs to the parent
            return
        try:
            _nft(self.netns, ["delete", "table", "inet", self.table])
        except FirewallError:
            if self.netns is None or _ns.netns_exists(self.netns):
                if self.table in list_tables(self.netns):
                    raise
        except FileNotFoundError:      # namespace already gone (with all its tables)
            pass

    def __enter__(self) -> "RstGuard":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RstGuard {self.table} netns={self.netns!r} ports={sorted(self.ports)}>"
