"""``aiotcpstack lab up|down|status``: a persistent two-namespace lab for experiments.

``Lab`` (host/lab.py) removes itself on exit (context manager, atexit) and sweeps labs whose creating pid
is dead (names ``ats<pid hex>_<xyz>-a``).  A lab that must outlive the command therefore (1) uses a name
outside that pattern -- ``atsl<NAME>-a`` / ``atsl<NAME>-b``, interfaces ``atsl<NAME>a`` / ``atsl<NAME>b``
-- so no other run's sweep takes it, and (2) is a :class:`PersistentLab`, a ``Lab`` whose ``close()`` does
nothing once set up (so the atexit hook leaves it), while a failed set-up still cleans up.  State goes to
``/run/aiotcpstack/labs/<NAME>.json`` (0600, directory 0700) for ``status``, ``down`` and ``trace --lab``.

``down`` kills the processes left in the namespaces (servers started for experiments), removes the
namespaces (the veth pair and the nft loss tables go with them) and the state file.  It also removes
``atsl<NAME>-a/-b`` namespaces whose state file was lost.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from typing import Any, TextIO

from .control import run_dir

__all__ = ["PersistentLab", "labs_dir", "load_state", "lab_up", "lab_down", "lab_status", "main", "add_arguments"]

NAME_RE = re.compile(r"^[a-z0-9]{1,9}$")
PREFIX = "atsl"


def labs_dir(create: bool = False) -> str:
    d = os.path.join(run_dir(create=create), "labs")
    if create:
        os.makedirs(d, mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)
    return d


def state_path(name: str) -> str:
    return os.path.join(labs_dir(), f"{name}.json")


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ValueError(f"lab name {name!r}: 1-9 characters, lower-case letters and digits "
                         f"(interface names are at most 15 characters)")
    return name


def namespaces_of(name: str) -> list[str]:
    return [f"{PREFIX}{name}-a", f"{PREFIX}{name}-b"]


def _persistent_lab_class() -> type:
    from ..host.lab import Lab

    class PersistentLab(Lab):
        """A :class:`~aiotcpstack.host.lab.Lab` that stays after the process exits (see module docstring)."""

        keep = False            # False while setting up: a failed set-up removes what it made

        def close(self) -> None:
            if self.keep:
                return
            super().close()

        def destroy(self) -> None:
            self.keep = False
            self._closed = False
            super().close()

    return PersistentLab


def __getattr__(name: str) -> Any:       # PersistentLab without importing pyroute2 at module import
    if name == "PersistentLab":
        return _persistent_lab_class()
    raise AttributeError(name)


def lab_state(lab: Any, name: str) -> dict[str, Any]:
    return {
        "name": name, "prefix": lab.prefix, "namespaces": list(lab.namespaces),
        "ns_a": lab.ns_a, "ns_b": lab.ns_b, "if_a": lab.if_a, "if_b": lab.if_b,
        "addr_a": lab.addr_a, "addr_b": lab.addr_b, "prefixlen": lab.prefixlen,
        "addr6_a": lab.addr6_a if lab.ipv6 else None, "addr6_b": lab.addr6_b if lab.ipv6 else None,
        "prefixlen6": lab.prefixlen6, "spare_addr": lab.spare_addr,
        "spare_addr6": lab.spare_addr6 if lab.ipv6 else None,
        "mac_a": lab.mac_a.hex(":"), "mac_b": lab.mac_b.hex(":"), "mtu": lab.mtu,
        "offloads": lab.offloads, "loss": lab.initial_loss, "ipv6": lab.ipv6,
        "created": time.time(), "created_by_pid": os.getpid(),
    }


def _write_state(name: str, state: dict[str, Any]) -> str:
    labs_dir(create=True)
    path = state_path(name)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, path)
    return path


def load_state(name: str) -> dict[str, Any] | None:
    try:
        with open(state_path(name)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def all_states() -> list[dict[str, Any]]:
    out = []
    try:
        names = sorted(os.listdir(labs_dir()))
    except OSError:
        return out
    for fn in names:
        if fn.endswith(".json"):
            st = load_state(fn[:-5])
            if st:
                out.append(st)
    return out


def _need_root(what: str, err: TextIO) -> bool:
    if os.geteuid() != 0:
        print(f"aiotcpstack lab {what}: needs root (CAP_SYS_ADMIN/CAP_NET_ADMIN for namespaces and veth); "
              f"run it with sudo", file=err)
        return False
    return True


def lab_up(name: str = "default", offloads: bool = True, loss: float = 0.0, ipv6: bool = True,
           mtu: int = 1500) -> dict[str, Any]:
    """Create the persistent lab ``name`` and store its state; returns the state dict."""
    check_name(name)
    from ..host import netns as _ns
    for ns in namespaces_of(name):
        if _ns.netns_exists(ns):
            raise FileExistsError(f"lab {name!r} is already up (namespace {ns} exists); "
                                  f"'aiotcpstack lab down --name {name}' first")
    cls = _persistent_lab_class()
    lab = cls(prefix=f"{PREFIX}{name}", offloads=offloads, loss=loss, ipv6=ipv6, mtu=mtu)
    lab.__enter__()             # on failure it cleans up (keep is False) and re-raises
    lab.keep = True
    try:
        state = lab_state(lab, name)
        state["state_file"] = _write_state(name, state)
    except BaseException:
        lab.destroy()
        raise
    return state


def _remove_namespaces(names: list[str]) -> list[str]:
    from pyroute2 import netns as pr_netns

    from ..host import netns as _ns
    try:
        from ..host.lab import _kill_processes_in
    except ImportError:                       # pragma: no cover - older lab.py
        _kill_processes_in = None            # type: ignore[assignment]
    removed = []
    for ns in names:
        if not _ns.netns_exists(ns):
            continue
        if _kill_processes_in is not None:
            _kill_processes_in(ns)
        pr_netns.remove(ns)
        removed.append(ns)
    return removed


def lab_down(name: str) -> list[str]:
    """Remove lab ``name`` (namespaces, processes inside, state file); returns the removed namespaces."""
    check_name(name)
    st = load_state(name)
    names = list(st["namespaces"]) if st else []
    for ns in namespaces_of(name):
        if ns not in names:
            names.append(ns)
    removed = _remove_namespaces(names)
    try:
        os.unlink(state_path(name))
    except FileNotFoundError:
        pass
    return removed


def _procs_in(ns: str) -> list[int]:
    from ..host import netns as _ns
    try:
        st = os.stat(_ns.netns_path(ns))
    except OSError:
        return []
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            pst = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if (pst.st_ino, pst.st_dev) == (st.st_ino, st.st_dev):
            out.append(int(pid))
    return out


def _link_state(ns: str, ifname: str) -> str:
    from pyroute2 import IPRoute
    try:
        with IPRoute(netns=ns) as ipr:
            idx = ipr.link_lookup(ifname=ifname)
            if not idx:
                return "missing"
            link = ipr.get_links(idx[0])[0]
            return str(link.get("IFLA_OPERSTATE") or "?").lower()
    except Exception as exc:  # noqa: BLE001
        return f"error: {exc}"


def _loss_drops(ns: str, dev: str) -> int | None:
    from ..host import netns as _ns
    r = subprocess.run(_ns.nsenter_argv(ns, ["nft", "-j", "list", "table", "netdev", f"ats_loss_{dev}"]),
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None
    try:
        for item in json.loads(r.stdout)["nftables"]:
            for e in item.get("rule", {}).get("expr", []):
                if "counter" in e:
                    return int(e["counter"]["packets"])
    except (ValueError, KeyError):
        return None
    return None


def lab_status(st: dict[str, Any]) -> dict[str, Any]:
    """Live facts about a stored lab: namespaces present, links' oper state, processes, loss drops."""
    from ..host import netns as _ns
    out: dict[str, Any] = {"name": st["name"], "namespaces": {}}
    for ns, ifname, peer_ns, peer_if in ((st["ns_a"], st["if_a"], st["ns_b"], st["if_b"]),
                                         (st["ns_b"], st["if_b"], st["ns_a"], st["if_a"])):
        exists = _ns.netns_exists(ns)
        info: dict[str, Any] = {"exists": exists}
        if exists:
            info["link"] = _link_state(ns, ifname)
            info["processes"] = _procs_in(ns)
            if _ns.netns_exists(peer_ns):
                info["loss_drops"] = _loss_drops(peer_ns, peer_if)   # loss for ns is applied on the peer's egress
        out["namespaces"][ns] = info
    out["up"] = all(v["exists"] for v in out["namespaces"].values())
    return out


def describe(st: dict[str, Any]) -> str:
    v6a = f"  {st['addr6_a']}/{st['prefixlen6']}" if st.get("addr6_a") else ""
    v6b = f"  {st['addr6_b']}/{st['prefixlen6']}" if st.get("addr6_b") else ""
    lines = [
        f"lab {st['name']!r}:",
        f"  {st['ns_a']:<16} {st['if_a']:<15} {st['addr_a']}/{st['prefixlen']}{v6a}  mac {st['mac_a']}",
        f"  {st['ns_b']:<16} {st['if_b']:<15} {st['addr_b']}/{st['prefixlen']}{v6b}  mac {st['mac_b']}",
        f"  spare address (dedicated mode): {st['spare_addr']}"
        + (f"  {st['spare_addr6']}" if st.get("spare_addr6") else ""),
        f"  mtu {st['mtu']}  offloads {'on' if st['offloads'] else 'off'}  loss {st['loss']:g} (each direction)",
    ]
    return "\n".join(lines)


def hints(st: dict[str, Any]) -> str:
    return "\n".join([
        "try:",
        f"  ip netns exec {st['ns_b']} python3 -m http.server 8080 --bind {st['addr_b']} &",
        f"  python3 -c 'import asyncio, aiotcpstack; asyncio.run(...)'   # "
        f"Stack(interface=\"{st['if_a']}\", netns=\"{st['ns_a']}\", control=True)",
        f"  aiotcpstack ss; aiotcpstack nstat; aiotcpstack trace --lab {st['name']}",
        f"  aiotcpstack lab down --name {st['name']}",
    ])


def main(args: Any, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    action = args.lab_action
    if action == "up":
        if not _need_root("up", err):
            return 2
        try:
            st = lab_up(args.name, offloads=args.offloads == "on", loss=args.loss, ipv6=not args.no_ipv6,
                        mtu=args.mtu)
        except (FileExistsError, ValueError) as exc:
            print(f"aiotcpstack lab up: {exc}", file=err)
            return 1
        if args.json:
            json.dump(st, out, indent=1)
            out.write("\n")
        else:
            print(describe(st), file=out)
            print(f"  state: {st['state_file']}", file=out)
            print(hints(st), file=out)
        return 0
    if action == "down":
        if not _need_root("down", err):
            return 2
        names = [s["name"] for s in all_states()] if args.all else [args.name]
        if args.all:
            from ..host import netns as _ns
            try:
                extra = sorted({n[len(PREFIX):-2] for n in os.listdir(_ns.NETNS_RUN_DIR)
                                if n.startswith(PREFIX) and n[-2:] in ("-a", "-b")})
            except OSError:
                extra = []
            names += [n for n in extra if n not in names and NAME_RE.match(n)]
        rc = 0
        for name in names:
            try:
                removed = lab_down(name)
            except Exception as exc:  # noqa: BLE001
                print(f"aiotcpstack lab down: {name}: {exc}", file=err)
                rc = 1
                continue
            if removed:
                print(f"lab {name!r} removed ({', '.join(removed)})", file=out)
            else:
                print(f"lab {name!r} was not up", file=out)
        return rc
    # status
    states = all_states() if args.all or args.name is None else []
    if not (args.all or args.name is None):
        st = load_state(args.name)
        if st is None:
            print(f"aiotcpstack lab status: no lab {args.name!r} (see 'aiotcpstack lab status')", file=err)
            return 1
        states = [st]
    if not states:
        print("no labs (start one with 'aiotcpstack lab up')", file=out)
        return 0
    dump = []
    rc = 0
    for st in states:
        live = lab_status(st) if os.geteuid() == 0 else {"up": None, "namespaces": {}}
        if live["up"] is False:
            rc = 1
        if args.json:
            dump.append({"state": st, "status": live})
            continue
        print(describe(st), file=out)
        if live["up"] is None:
            print("  (run as root for the live status)", file=out)
        for ns, info in live["namespaces"].items():
            if not info["exists"]:
                print(f"  {ns}: MISSING", file=out)
                continue
            extra = ""
            if info.get("loss_drops") is not None:
                extra = f", loss rule dropped {info['loss_drops']} packets"
            print(f"  {ns}: link {info['link']}, {len(info['processes'])} process(es){extra}", file=out)
        age = time.time() - st.get("created", time.time())
        print(f"  up {'yes' if live['up'] else 'NO' if live['up'] is False else '?'}, created {age:.0f} s ago",
              file=out)
    if args.json:
        json.dump(dump, out, indent=1)
        out.write("\n")
    return rc


def add_arguments(p: Any) -> None:
    sub = p.add_subparsers(dest="lab_action", required=True, metavar="{up,down,status}")
    up = sub.add_parser("up", help="create a persistent lab and print its namespaces, interfaces, addresses",
                        description="Creates two network namespaces joined by a veth pair (addresses from "
                                    "198.18.0.0/15 and 2001:2::/48, no route out) that stay until "
                                    "'aiotcpstack lab down'. State: /run/aiotcpstack/labs/NAME.json. Needs root.")
    up.add_argument("--name", default="default", help="lab name, 1-9 of [a-z0-9] (default: default)")
    up.add_argument("--offloads", choices=("on", "off"), default="on",
                    help="veth TSO/GSO/checksum offloads (default on)")
    up.add_argument("--loss", type=float, default=0.0, metavar="RATIO",
                    help="random loss in each direction, 0..1 (nft numgen; default 0)")
    up.add_argument("--mtu", type=int, default=1500, help="veth MTU (default 1500)")
    up.add_argument("--no-ipv6", action="store_true", help="IPv4 only")
    up.add_argument("--json", action="store_true", help="print the state as JSON")
    down = sub.add_parser("down", help="remove a persistent lab (namespaces, processes in them, state)",
                          description="Kills the processes left in the lab's namespaces, removes the namespaces "
                                      "(with their veth and nft tables) and the state file. Needs root.")
    down.add_argument("--name", default="default", help="lab name (default: default)")
    down.add_argument("--all", action="store_true", help="every persistent lab")
    status = sub.add_parser("status", help="show persistent labs and whether they are still up",
                            description="Lists the stored labs (or one with --name) with their addresses and "
                                        "live state: namespaces present, link state, processes inside, packets "
                                        "dropped by the loss rule. Exit status 1 if a lab is not (fully) up.")
    status.add_argument("--name", default=None, help="only this lab")
    status.add_argument("--all", action="store_true", help="every lab (the default without --name)")
    status.add_argument("--json", action="store_true", help="state and status as JSON")
