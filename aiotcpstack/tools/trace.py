"""``aiotcpstack trace``: capture one transfer against kernel TCP and draw it.

Run mode (root): a fresh :class:`~aiotcpstack.host.lab.Lab` (or a persistent one: ``--lab NAME``); a small
kernel-TCP peer runs in ``ns_b``; our stack in ``ns_a`` fetches ``--size`` MiB from it (``--direction
download``, the default) or sends that much to it (``upload``).  While it runs:

* every frame our stack sends or receives goes to ``PREFIX.pcap`` (the Stack's ``pcap=`` option, i.e.
  :class:`~aiotcpstack.link.pcap.PcapLink`; ``--capture tcpdump`` runs tcpdump on ``if_a`` in ``ns_a``
  instead -- the kernel's view of the same veth);
* ``Stack.connections()`` is sampled every ``--interval`` seconds (cwnd, ssthresh, srtt, rttvar, ...) into
  ``PREFIX-samples.json``;
* a progress bar runs on stderr (terminals only; ``--no-progress`` turns it off).

Then (and in ``--pcap FILE`` mode, which needs no root) the capture is parsed with the project's ``wire/``
parsers and drawn: ``PREFIX-tseq.png`` (time-sequence graph) and ``PREFIX-cwnd-rtt.png``
(see :mod:`aiotcpstack.tools.plots`).  The stack's cwnd is drawn only when it is the sender (upload):
as a receiver its cwnd never moves.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from typing import Any, TextIO

from .progress import Progress, fmt_bytes

__all__ = ["PEER_SCRIPT", "run_transfer", "main", "add_arguments"]

#: the kernel-TCP peer, run as ``python -c PEER_SCRIPT MODE HOST PORT BYTES`` inside ns_b
PEER_SCRIPT = r"""
import os, socket, sys
mode, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
if mode == "send":
    block = memoryview(os.urandom(1 << 16))
    left = n
    while left:
        left -= c.send(block[:min(left, len(block))])
    c.shutdown(socket.SHUT_WR)
    while c.recv(1 << 16):
        pass
else:
    got = 0
    while True:
        d = c.recv(1 << 18)
        if not d:
            break
        got += len(d)
    print(got, flush=True)
c.close()
"""


class _StoredLab:
    """The parts of a ``Lab`` that ``trace`` uses, for a persistent lab loaded from its state file."""

    def __init__(self, st: dict[str, Any]) -> None:
        for key in ("ns_a", "ns_b", "if_a", "if_b", "addr_a", "addr_b", "spare_addr"):
            setattr(self, key, st[key])
        self.name = st["name"]
        self._procs: list[subprocess.Popen] = []

    def popen(self, ns: str, argv: list[str], **kw: Any) -> subprocess.Popen:
        from ..host.netns import nsenter_argv
        p = subprocess.Popen(nsenter_argv(ns, list(argv)), **kw)
        self._procs.append(p)
        return p

    def close(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _snapshot_sample(c: dict[str, Any], t: float) -> dict[str, Any]:
    keys = ("state", "cwnd", "ssthresh", "srtt", "rttvar", "rto", "bytes_acked", "bytes_received", "retransmits",
            "snd_wnd", "rcv_wnd", "send_buffer", "unread", "mss", "ca_state")
    out = {k: c.get(k) for k in keys if k in c}
    out["t"] = t
    return out


async def _transfer(lab: Any, size: int, direction: str, port: int, pcap: str | None, interval: float,
                    mode: str, progress: Progress, stack_options: dict[str, Any], timeout: float) -> dict[str, Any]:
    import aiotcpstack

    address = f"{lab.spare_addr}/24" if mode == "dedicated" else None
    opts = dict(stack_options)
    if pcap:
        opts["pcap"] = pcap
    samples: list[dict[str, Any]] = []
    result: dict[str, Any] = {"samples": samples}
    async with aiotcpstack.Stack(interface=lab.if_a, netns=lab.ns_a, address=address, **opts) as stack:
        before = dict(stack.counters)
        for attempt in range(100):
            try:
                reader, writer = await stack.open_connection(lab.addr_b, port)
                break
            except ConnectionRefusedError:
                if attempt == 99:
                    raise
                await asyncio.sleep(0.05)
        sockname = writer.get_extra_info("sockname")
        stop = asyncio.Event()

        async def sampler() -> None:
            while not stop.is_set():
                now = time.time()
                for c in stack.connections():
                    remote = c.get("remote") or ()
                    local = c.get("local") or ()
                    if len(remote) > 1 and remote[1] == port and (not sockname or local[1] == sockname[1]):
                        samples.append(_snapshot_sample(c, now))
                try:
                    await asyncio.wait_for(stop.wait(), interval)
                except asyncio.TimeoutError:
                    pass

        task = asyncio.ensure_future(sampler())
        t0 = time.perf_counter()

        async def move() -> int:
            if direction == "download":
                got = 0
                while True:
                    data = await reader.read(1 << 18)
                    if not data:
                        break
                    got += len(data)
                    progress.update(got)
                return got
            block = os.urandom(1 << 16)
            sent = 0
            while sent < size:
                chunk = block[:min(len(block), size - sent)]
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
                progress.update(sent)
            writer.write_eof()
            await reader.read()          # the peer closes after reading everything
            return sent

        try:
            moved = await asyncio.wait_for(move(), timeout)
        finally:
            elapsed = time.perf_counter() - t0
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 5)
            except (asyncio.TimeoutError, OSError):
                pass
            stop.set()
            await task
        result.update(bytes=moved, elapsed=elapsed, local=sockname,
                      counters=stack.counters.moved(before) if hasattr(stack.counters, "moved") else {})
    return result


def run_transfer(lab: Any, size: int, direction: str = "download", port: int | None = None,
                 pcap: str | None = None, capture: str = "stack", interval: float = 0.01, mode: str = "shared",
                 progress: Progress | None = None, stack_options: dict[str, Any] | None = None,
                 timeout: float = 120.0) -> dict[str, Any]:
    """Run one transfer in ``lab`` (a Lab or a stored lab); returns bytes, elapsed, samples, counters."""
    port = port or random.randrange(20000, 60000)
    progress = progress or Progress(size, direction, enabled=False)
    peer_mode = "send" if direction == "download" else "recv"
    peer = lab.popen(lab.ns_b, [sys.executable, "-c", PEER_SCRIPT, peer_mode, lab.addr_b, str(port), str(size)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dump = None
    try:
        line = peer.stdout.readline()
        if line.strip() != "ready":
            why = peer.stderr.read() if peer.poll() is not None else ""
            raise RuntimeError(f"kernel peer did not start: {line!r} {why}")
        stack_pcap = pcap if capture == "stack" else None
        if pcap and capture == "tcpdump":
            dump = lab.popen(lab.ns_a, ["tcpdump", "-i", lab.if_a, "-s", "0", "-U", "--immediate-mode", "-n",
                                        "-w", pcap, f"tcp port {port}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            # tcpdump says "listening on ..." once its capture is armed (the file exists earlier)
            first = dump.stderr.readline()
            if "listening on" not in first:
                raise RuntimeError(f"tcpdump did not start: {first.strip()} {dump.stderr.read().strip()}")
        res = asyncio.run(_transfer(lab, size, direction, port, stack_pcap, interval, mode, progress,
                                    stack_options or {}, timeout))
        progress.close()
        try:
            out, _ = peer.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            peer.kill()
            out, _ = peer.communicate()
        if direction == "upload":
            lines = [x for x in (out or "").split() if x.isdigit()]
            res["peer_received"] = int(lines[-1]) if lines else None
        res["port"] = port
        return res
    finally:
        progress.close()
        if dump is not None:
            time.sleep(0.2)          # let the last frames reach the file (-U: flushed per packet)
            dump.terminate()
            try:
                dump.wait(5)
            except subprocess.TimeoutExpired:
                dump.kill()
        if peer.poll() is None:
            peer.kill()
            peer.wait()


def _outputs(prefix: str) -> dict[str, str]:
    return {"pcap": prefix + ".pcap", "tseq": prefix + "-tseq.png", "cwnd": prefix + "-cwnd-rtt.png",
            "samples": prefix + "-samples.json"}


def draw(pcap: str, prefix: str, samples: list[dict[str, Any]] | None, port: int | None,
         out: TextIO) -> dict[str, Any]:
    from .plots import analyse, cwnd_rtt_graph, time_sequence_graph
    from .pcapread import read_tcp

    paths = _outputs(prefix)
    stats: dict[str, int] = {}
    packets = read_tcp(pcap, stats)
    a = analyse(packets, port=port)
    n_tseq = time_sequence_graph(a, paths["tseq"])
    n_cwnd = cwnd_rtt_graph(a, paths["cwnd"], samples=samples)
    print(f"capture: {pcap}: {stats['frames']} frames, {stats['tcp']} TCP segments"
          + (f", {stats['errors']} unparsable" if stats["errors"] else ""), file=out)
    print(f"connection: {a.sender[0]}:{a.sender[1]} -> {a.receiver[0]}:{a.receiver[1]}: "
          f"{fmt_bytes(a.bytes_sent)} in {a.duration:.3f} s, {len(a.segments)} data segments "
          f"({a.retransmitted_segments} retransmitted), {len(a.acks)} ACKs, {len(a.sacks)} SACK blocks", file=out)
    rtts = [r for _, r in a.rtt_data_ack] or [r for _, r in a.rtt_ts_receiver] or [r for _, r in a.rtt_ts_sender]
    if rtts:
        s = sorted(rtts)
        print(f"rtt samples: {len(s)}, min {s[0] * 1000:.3f} ms, median {s[len(s) // 2] * 1000:.3f} ms, "
              f"max {s[-1] * 1000:.3f} ms", file=out)
    print(f"graph: {paths['tseq']} ({n_tseq} points)", file=out)
    print(f"graph: {paths['cwnd']} ({n_cwnd} points)", file=out)
    return {"analysis": a, "tseq_points": n_tseq, "cwnd_points": n_cwnd, "paths": paths}


def main(args: Any, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    if args.pcap:
        prefix = args.output or os.path.splitext(args.pcap)[0]
        samples = None
        if args.samples:
            with open(args.samples) as f:
                samples = json.load(f)
        try:
            draw(args.pcap, prefix, samples, args.port, out)
        except (OSError, ValueError) as exc:
            print(f"aiotcpstack trace: {exc}", file=err)
            return 1
        except RuntimeError as exc:         # matplotlib missing
            print(f"aiotcpstack trace: {exc}", file=err)
            return 2
        return 0

    if os.geteuid() != 0:
        print("aiotcpstack trace: a transfer needs root (namespaces, veth, AF_PACKET); run it with sudo, or "
              "draw an existing capture with --pcap FILE", file=err)
        return 2
    try:
        import matplotlib  # noqa: F401 - fail before the run, not after it
    except ImportError:
        print("aiotcpstack trace: graphs need matplotlib: pip install 'aiotcpstack[tools]'", file=err)
        return 2
    prefix = args.output or "aiotcpstack-trace"
    paths = _outputs(prefix)
    parent = os.path.dirname(os.path.abspath(paths["pcap"]))
    os.makedirs(parent, exist_ok=True)
    size = int(args.size * 1024 * 1024)
    stack_options: dict[str, Any] = {}
    if args.cc:
        stack_options["congestion_control"] = args.cc
    progress = Progress(size, "download" if args.direction == "download" else "upload",
                        enabled=False if args.no_progress else None)

    def go(lab: Any) -> dict[str, Any]:
        print(f"lab: {lab.ns_a} [{lab.if_a} {lab.addr_a}] <-> [{lab.if_b} {lab.addr_b}] {lab.ns_b}", file=out)
        return run_transfer(lab, size, args.direction, port=args.port, pcap=paths["pcap"], capture=args.capture,
                            interval=args.interval, mode=args.mode, progress=progress,
                            stack_options=stack_options, timeout=args.timeout)

    try:
        if args.lab:
            from .lab_cmd import load_state
            st = load_state(args.lab)
            if st is None:
                print(f"aiotcpstack trace: no lab {args.lab!r} ('aiotcpstack lab up --name {args.lab}')", file=err)
                return 1
            stored = _StoredLab(st)
            try:
                res = go(stored)
            finally:
                stored.close()
        else:
            from ..host.lab import Lab
            with Lab(offloads=args.offloads == "on", loss=args.loss) as lab:
                res = go(lab)
    except Exception as exc:  # noqa: BLE001 - a failed run is reported, the lab is gone already
        print(f"aiotcpstack trace: transfer failed: {type(exc).__name__}: {exc}", file=err)
        return 1
    with open(paths["samples"], "w") as f:
        json.dump(res["samples"], f)
    who = "kernel -> aiotcpstack" if args.direction == "download" else "aiotcpstack -> kernel"
    rate = res["bytes"] * 8 / max(res["elapsed"], 1e-9) / 1e6
    print(f"transfer: {fmt_bytes(res['bytes'])} {args.direction} ({who}) in {res['elapsed']:.3f} s, "
          f"{rate:.1f} Mbit/s; {len(res['samples'])} stack samples -> {paths['samples']}", file=out)
    if res.get("counters"):
        moved = res["counters"]
        print("counters: " + ", ".join(f"{k} {moved[k]}" for k in sorted(moved)), file=out)
    # as a receiver our cwnd never moves: draw the stack's cwnd/ssthresh only when it sends
    samples = res["samples"] if args.direction == "upload" else \
        [{k: v for k, v in s.items() if k not in ("cwnd", "ssthresh")} for s in res["samples"]]
    try:
        drawn = draw(paths["pcap"], prefix, samples, res.get("port"), out)
    except (OSError, ValueError) as exc:
        print(f"aiotcpstack trace: {exc}", file=err)
        return 1
    ok = res["bytes"] == size and drawn["tseq_points"] > 0
    if args.direction == "upload" and res.get("peer_received") not in (None, size):
        print(f"aiotcpstack trace: the kernel peer received {res['peer_received']} of {size} bytes", file=err)
        ok = False
    return 0 if ok else 1


def add_arguments(p: Any) -> None:
    p.add_argument("--pcap", metavar="FILE", help="draw an existing capture instead of running a transfer "
                                                  "(no root needed)")
    p.add_argument("--samples", metavar="JSON", help="with --pcap: stack samples from an earlier trace")
    p.add_argument("-o", "--output", metavar="PREFIX",
                   help="output prefix: PREFIX.pcap, PREFIX-tseq.png, PREFIX-cwnd-rtt.png, PREFIX-samples.json "
                        "(default ./aiotcpstack-trace; with --pcap: the capture's name without .pcap)")
    p.add_argument("--size", type=float, default=4.0, help="MiB to move (default 4)")
    p.add_argument("--direction", choices=("download", "upload"), default="download",
                   help="download: our stack fetches from a kernel server (default); upload: our stack sends")
    p.add_argument("--mode", choices=("shared", "dedicated"), default="shared",
                   help="stack address mode (default shared)")
    p.add_argument("--offloads", choices=("on", "off"), default="off",
                   help="veth offloads in the fresh lab (default off: one bar per wire segment, not per "
                        "64 KB TSO/GRO super-frame)")
    p.add_argument("--loss", type=float, default=0.0, metavar="RATIO",
                   help="random loss in each direction in the fresh lab, 0..1")
    p.add_argument("--lab", metavar="NAME", help="use a persistent lab ('aiotcpstack lab up') instead of a fresh one")
    p.add_argument("--port", type=int, help="kernel peer's port (default random; with --pcap: pick the "
                                            "connection with this port)")
    p.add_argument("--capture", choices=("stack", "tcpdump"), default="stack",
                   help="stack: the Stack's own pcap tap (default); tcpdump: tcpdump on if_a in ns_a")
    p.add_argument("--interval", type=float, default=0.01, help="seconds between Stack.connections() samples")
    p.add_argument("--cc", metavar="NAME", help="our congestion control (reno, cubic)")
    p.add_argument("--timeout", type=float, default=120.0, help="give up the transfer after this many seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
