"""``aiotcpstack ss``: the connections of running stacks, formatted like ``ss -tin``.

::

    State  Recv-Q Send-Q  Local Address:Port  Peer Address:Port
    ESTAB  0      0        198.18.7.1:40312    198.18.7.2:8080
             ts sack wscale:7,7 rto:204 rtt:0.412/0.206 mss:1448 rcvmss:1448 cwnd:10 bytes_acked:1
             bytes_received:1048576 retrans:0/0 snd_wnd:64256 rcv_wnd:65535 pid:1234   (one line)

States use ``ss``'s short names (``ESTAB``, ``SYN-SENT``, ``TIME-WAIT``, ...).  Units as in ``ss``: rtt/rttvar
in ms, rto in ms, cwnd/ssthresh in segments (the stack keeps bytes: divided by the MSS).  ``retrans`` is
``current/total``-style like ss but we only know the total, so it prints ``retrans:0/<total>``.
The data comes from :func:`aiotcpstack.tools.control.query` (``connections`` and ``info``).
"""
from __future__ import annotations

import json
import socket
import sys
from typing import Any, Iterable, TextIO

from .control import ControlError, query_many, resolve_targets

__all__ = ["SS_STATE", "format_connections", "main"]

SS_STATE = {
    "ESTABLISHED": "ESTAB", "SYN_SENT": "SYN-SENT", "SYN_RECEIVED": "SYN-RECV", "FIN_WAIT_1": "FIN-WAIT-1",
    "FIN_WAIT_2": "FIN-WAIT-2", "TIME_WAIT": "TIME-WAIT", "CLOSED": "UNCONN", "CLOSE_WAIT": "CLOSE-WAIT",
    "LAST_ACK": "LAST-ACK", "LISTEN": "LISTEN", "CLOSING": "CLOSING",
}
INFINITE_SSTHRESH = 0x7FFFFFFF


def _port(port: Any, numeric: bool) -> str:
    if numeric or port in (None, 0, "*"):
        return str(port if port not in (None, 0) else "*")
    try:
        return socket.getservbyport(int(port), "tcp")
    except (OSError, ValueError, OverflowError):
        return str(port)


def _addr(sa: Any, numeric: bool) -> str:
    """``ss`` style ``addr:port`` / ``[v6]:port`` (addresses are never resolved: no DNS)."""
    if not sa:
        return "*:*"
    host, port = sa[0], sa[1]
    if host in (None, ""):
        host = "*"
    if ":" in str(host):
        host = f"[{host}]"
    return f"{host}:{_port(port, numeric)}"


def _ms(seconds: Any) -> str:
    v = float(seconds) * 1000.0
    return f"{v:.3f}".rstrip("0").rstrip(".") if v else "0"


def detail_line(c: dict[str, Any]) -> str:
    """The indented second line of ``ss -i`` for one connection snapshot."""
    parts: list[str] = []
    if c.get("timestamps"):
        parts.append("ts")
    if c.get("sack"):
        parts.append("sack")
    if c.get("ecn"):
        parts.append("ecn")
    cc = c.get("congestion_control") or c.get("cc")
    if cc:
        parts.append(str(cc))
    ws = c.get("wscale")
    if ws:
        parts.append(f"wscale:{ws[0]},{ws[1]}")
    if c.get("rto") is not None:
        parts.append(f"rto:{round(float(c['rto']) * 1000)}")
    if c.get("srtt") is not None:
        parts.append(f"rtt:{_ms(c['srtt'])}/{_ms(c.get('rttvar') or 0)}")
    mss = int(c.get("mss") or 0)
    if mss:
        parts.append(f"mss:{mss}")
    if c.get("rcv_mss"):
        parts.append(f"rcvmss:{c['rcv_mss']}")
    if c.get("cwnd") is not None:
        parts.append(f"cwnd:{int(c['cwnd']) // mss if mss else c['cwnd']}")
    ss = c.get("ssthresh")
    if ss is not None and int(ss) < INFINITE_SSTHRESH:          # ss omits the "infinite" initial value
        parts.append(f"ssthresh:{int(ss) // mss if mss else ss}")
    if c.get("bytes_acked") is not None:
        parts.append(f"bytes_acked:{c['bytes_acked']}")
    if c.get("bytes_received") is not None:
        parts.append(f"bytes_received:{c['bytes_received']}")
    if c.get("retransmits") is not None:
        parts.append(f"retrans:0/{c['retransmits']}")
    if c.get("ca_state") and c["ca_state"] != "open":
        parts.append(f"ca_state:{c['ca_state']}")
    if c.get("snd_wnd") is not None:
        parts.append(f"snd_wnd:{c['snd_wnd']}")
    if c.get("rcv_wnd") is not None:
        parts.append(f"rcv_wnd:{c['rcv_wnd']}")
    if c.get("pid") is not None:
        parts.append(f"pid:{c['pid']}")
    return " ".join(parts)


def format_connections(conns: Iterable[dict[str, Any]], numeric: bool = False, info: bool = True) -> str:
    """Render connection snapshots (``Stack.connections()`` items, optionally with ``pid``) as ``ss -tin``."""
    rows = []
    for c in conns:
        state = SS_STATE.get(str(c.get("state")), str(c.get("state")))
        recvq = int(c.get("unread") or 0)
        sendq = int(c.get("send_buffer") or 0)
        rows.append((state, str(recvq), str(sendq), _addr(c.get("local"), numeric),
                     _addr(c.get("remote"), numeric), detail_line(c) if info else None))
    head = ("State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port")
    w = [max([len(head[i])] + [len(r[i]) for r in rows]) for i in range(5)]
    lines = [f"{head[0]:<{w[0]}} {head[1]:<{w[1]}} {head[2]:<{w[2]}} {head[3]:>{w[3]}} {head[4]:<{w[4]}}"]
    for r in rows:
        lines.append(f"{r[0]:<{w[0]}} {r[1]:<{w[1]}} {r[2]:<{w[2]}} {r[3]:>{w[3]}} {r[4]:<{w[4]}}")
        if r[5]:
            lines.append("\t " + r[5])
    return "\n".join(lines) + "\n"


def collect(pid: int | None = None, socket_path: str | None = None,
            err: TextIO | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Ask every target stack.  Returns (connections with ``pid`` added, infos, number of failures)."""
    err = err if err is not None else sys.stderr
    conns: list[dict[str, Any]] = []
    infos: list[dict[str, Any]] = []
    failures = 0
    for p, path in resolve_targets(pid, socket_path):
        try:
            res = query_many(path, ["info", "connections"])
        except (ControlError, ValueError) as exc:
            print(f"aiotcpstack: {exc}", file=err)
            failures += 1
            continue
        info = res.get("info") or {}
        infos.append(info)
        for c in res.get("connections") or []:
            c = dict(c)
            c.setdefault("pid", info.get("pid", p))
            conns.append(c)
    return conns, infos, failures


def main(args: Any, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    targets = resolve_targets(args.pid, args.socket)
    if not targets:
        where = f"for pid {args.pid}" if args.pid else "in the control-socket directory"
        print(f"aiotcpstack ss: no running stack with a control socket {where} "
              f"(start the Stack with control=True)", file=err)
        return 1
    conns, infos, failures = collect(args.pid, args.socket, err)
    if args.state:
        want = {s.upper().replace("_", "-") for s in args.state}
        conns = [c for c in conns if SS_STATE.get(str(c.get("state")), "") in want
                 or str(c.get("state")) in {s.upper() for s in args.state}]
    if args.json:
        json.dump({"stacks": infos, "connections": conns}, out, indent=1, default=str)
        out.write("\n")
    else:
        if len(infos) > 1 or args.verbose_header:
            for info in infos:
                print(f"# pid {info.get('pid')}: {info.get('interface')} netns={info.get('netns')} "
                      f"{'dedicated' if info.get('dedicated') else 'shared'} {' '.join(info.get('addresses') or [])}",
                      file=out)
        out.write(format_connections(conns, numeric=args.numeric, info=not args.no_info))
    return 1 if failures and not infos else 0


def add_arguments(p: Any) -> None:
    p.add_argument("--pid", type=int, help="only the stack(s) of this process")
    p.add_argument("--socket", metavar="PATH", help="a control socket path (default: every live socket in "
                                                    "/run/aiotcpstack/)")
    p.add_argument("-n", "--numeric", action="store_true", help="do not resolve service names (ports as numbers)")
    p.add_argument("--no-info", action="store_true", help="only the table, no per-connection detail line")
    p.add_argument("--state", action="append", metavar="STATE",
                   help="only connections in this state (ESTAB, SYN-SENT, TIME-WAIT, ...; repeatable)")
    p.add_argument("--json", action="store_true", help="raw snapshots as JSON")
    p.add_argument("-H", "--header", dest="verbose_header", action="store_true",
                   help="print a '# pid ...' line per stack (automatic with more than one stack)")
