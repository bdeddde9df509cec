"""``aiotcpstack nstat``: a running stack's counters, formatted like ``nstat -az``.

The stack keeps the bare Linux MIB names (``stack.counters["InSegs"]``); ``nstat`` prints them with their
MIB group in front (``TcpInSegs``, ``TcpExtTCPFastRetrans``, ``IpInReceives``).  By default this command
does the same, so its output lines up with the kernel's ``nstat -az`` in the peer namespace
(``--raw-names``: the stack's own keys).  Counters of our own with no kernel twin (``Arp*``, ``Link*``)
keep their names.

Absolute values by default.  ``-d/--delta``: the change since the previous ``-d`` run for that stack
(history in ``<run dir>/nstat-<pid>.json``, like nstat's ``/tmp/.nstat.u<uid>``).
"""
from __future__ import annotations

import fnmatch
import json
import os
import sys
from typing import Any, Iterable, TextIO

from .control import ControlError, query_many, resolve_targets, run_dir

__all__ = ["TCP_GROUP", "nstat_name", "format_counters", "main"]

#: /proc/net/snmp "Tcp:" fields (everything else the TCP layer counts is "TcpExt:")
TCP_GROUP = frozenset({
    "RtoAlgorithm", "RtoMin", "RtoMax", "MaxConn", "ActiveOpens", "PassiveOpens", "AttemptFails",
    "EstabResets", "CurrEstab", "InSegs", "OutSegs", "RetransSegs", "InErrs", "OutRsts", "InCsumErrors",
})


def nstat_name(name: str) -> str:
    """``InSegs`` -> ``TcpInSegs``; ``TCPFastRetrans`` -> ``TcpExtTCPFastRetrans``; ``IpInReceives`` unchanged."""
    if name in TCP_GROUP:
        return "Tcp" + name
    if name.startswith(("Ip", "Icmp", "Udp", "Arp", "Link", "TcpExt", "IpExt")):
        return name
    return "TcpExt" + name


def format_counters(counters: dict[str, int], zeros: bool = False, raw_names: bool = False,
                    patterns: Iterable[str] = (), header: str | None = None) -> str:
    """``nstat`` layout: ``name`` in 32 columns, value; zeros hidden unless ``zeros``.

    ``patterns``: shell-style globs on the printed name (a bare word matches as a prefix, like nstat).
    """
    pats = [p if any(ch in p for ch in "*?[") else p + "*" for p in patterns]
    items = []
    for key, value in counters.items():
        name = key if raw_names else nstat_name(key)
        if not zeros and not value:
            continue
        if pats and not any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(key, p) for p in pats):
            continue
        items.append((name, value))
    items.sort(key=_order)
    lines = [header] if header else []
    lines += [f"{name:<32}{value}" for name, value in items]
    return "\n".join(lines) + ("\n" if lines else "")


_GROUP_RANK = (("IpExt", 5), ("Ip", 0), ("Icmp", 1), ("TcpExt", 4), ("Tcp", 2), ("Udp", 3), ("Arp", 6),
               ("Link", 7))


def _order(item: tuple[str, int]) -> tuple[int, str]:
    """nstat's order: Ip, Icmp, Tcp, Udp, TcpExt, IpExt; then ours (Arp, Link); by name within a group."""
    name = item[0]
    for prefix, rank in _GROUP_RANK:
        if name.startswith(prefix):
            return (rank, name)
    return (99, name)


def _history_path(pid: Any, path: str) -> str:
    key = str(pid) if pid is not None else os.path.basename(path).replace(".sock", "")
    return os.path.join(run_dir(create=True), f"nstat-{key}.json")


def _delta(counters: dict[str, int], pid: Any, path: str, update: bool) -> dict[str, int]:
    hist_file = _history_path(pid, path)
    try:
        with open(hist_file) as f:
            prev = json.load(f)
        if prev.get("socket") != path:
            prev = {}
    except (OSError, ValueError):
        prev = {}
    before = prev.get("counters", {})
    out = {k: v - int(before.get(k, 0)) for k, v in counters.items()}
    if update:
        tmp = hist_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"socket": path, "counters": counters}, f)
        os.chmod(tmp, 0o600)
        os.replace(tmp, hist_file)
    return out


def main(args: Any, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    targets = resolve_targets(args.pid, args.socket)
    if not targets:
        where = f"for pid {args.pid}" if args.pid else "in the control-socket directory"
        print(f"aiotcpstack nstat: no running stack with a control socket {where} "
              f"(start the Stack with control=True)", file=err)
        return 1
    ok = 0
    dump: list[dict[str, Any]] = []
    for pid, path in targets:
        try:
            res = query_many(path, ["info", "counters"])
        except (ControlError, ValueError) as exc:
            print(f"aiotcpstack: {exc}", file=err)
            continue
        ok += 1
        info = res.get("info") or {}
        counters = {k: int(v) for k, v in (res.get("counters") or {}).items()}
        if args.delta:
            counters = _delta(counters, info.get("pid", pid), path, update=not args.no_update)
        if args.json:
            dump.append({"stack": info, "counters": counters})
            continue
        header = (f"#aiotcpstack pid {info.get('pid', pid)} {info.get('interface', '')} "
                  f"netns={info.get('netns')}")
        out.write(format_counters(counters, zeros=args.zeros, raw_names=args.raw_names,
                                  patterns=args.patterns, header=header))
    if args.json:
        json.dump(dump, out, indent=1)
        out.write("\n")
    return 0 if ok else 1


def add_arguments(p: Any) -> None:
    p.add_argument("patterns", nargs="*", metavar="PATTERN",
                   help="only counters matching these globs (a bare word is a prefix, e.g. TcpExt)")
    p.add_argument("--pid", type=int, help="only the stack(s) of this process")
    p.add_argument("--socket", metavar="PATH", help="a control socket path (default: every live socket in "
                                                    "/run/aiotcpstack/)")
    p.add_argument("-z", "--zeros", action="store_true", help="show counters that are zero too")
    p.add_argument("-a", "--absolute", action="store_true",
                   help="absolute values (the default; accepted for nstat compatibility)")
    p.add_argument("-d", "--delta", action="store_true",
                   help="the change since the previous -d run for that stack (history kept per pid)")
    p.add_argument("-s", "--no-update", action="store_true", help="with -d: do not update the history")
    p.add_argument("--raw-names", action="store_true",
                   help="the stack's own counter keys (InSegs) instead of nstat's (TcpInSegs)")
    p.add_argument("--json", action="store_true", help="counters as JSON")
