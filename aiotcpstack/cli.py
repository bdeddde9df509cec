"""The ``aiotcpstack`` command (also ``python -m aiotcpstack``).

Subcommands:

- ``demo``: build a lab, move data through the stack against kernel TCP both ways, clean up.
- ``lab up|down|status``: a persistent lab for experiments (``aiotcpstack.tools.lab_cmd``).
- ``ss``: connections of running stacks, like ``ss -tin`` (through their control sockets).
- ``nstat``: counters of running stacks, like ``nstat -az``.
- ``trace``: one transfer against kernel TCP, captured to pcap and drawn (time-sequence, cwnd/RTT);
  or ``--pcap FILE`` to draw an existing capture.
- ``bench``: the benchmarks (``benchmarks/run.py``), side by side with kernel TCP.

``-v`` / ``-vv`` (before or after the subcommand) log INFO / DEBUG from ``logging.getLogger("aiotcpstack")``
to stderr: the stack logs only through that logger (and its children) and prints nothing by itself.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
import time
from typing import Any

DEMO_PORT_KERNEL = 8080
DEMO_PORT_OURS = 8081


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


async def _fetch_http(stack: Any, host: str, port: int, path: str, attempts: int = 50) -> bytes:
    """GET ``path`` from a kernel HTTP server over our stack; returns the body."""
    for attempt in range(attempts):
        try:
            reader, writer = await stack.open_connection(host, port)
            break
        except ConnectionRefusedError:  # the kernel server may still be starting
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.1)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        raise RuntimeError(f"kernel HTTP server answered {status!r}")
    return body


async def _demo_async(lab: Any, size: int, mode: str, out: Any) -> int:
    import aiotcpstack

    payload = os.urandom(size)
    digest = hashlib.sha256(payload).hexdigest()
    address = f"{lab.spare_addr}/24" if mode == "dedicated" else None
    our_addr = lab.spare_addr if mode == "dedicated" else lab.addr_a
    loop = asyncio.get_running_loop()

    with tempfile.TemporaryDirectory(prefix="ats-demo-") as tmp:
        with open(os.path.join(tmp, "blob"), "wb") as f:
            f.write(payload)
        server_proc = lab.popen(lab.ns_b, [sys.executable, "-m", "http.server", str(DEMO_PORT_KERNEL),
                                           "--bind", lab.addr_b, "--directory", tmp],
                                stdout=open(os.devnull, "wb"), stderr=open(os.devnull, "wb"))
        try:
            async with aiotcpstack.Stack(interface=lab.if_a, netns=lab.ns_a, address=address) as stack:
                before = dict(stack.counters)
                print(f"stack up on {lab.if_a} in {lab.ns_a} ({mode} mode, address {our_addr}); "
                      f"kernel peer {lab.addr_b} in {lab.ns_b}", file=out)

                # 1. our client -> the kernel's HTTP server
                t0 = time.perf_counter()
                body = await _fetch_http(stack, lab.addr_b, DEMO_PORT_KERNEL, "/blob")
                t1 = time.perf_counter()
                ok1 = hashlib.sha256(body).hexdigest() == digest
                print(f"  fetched {_fmt_bytes(len(body))} from the kernel's http.server in {t1 - t0:.2f} s "
                      f"({len(body) * 8 / max(t1 - t0, 1e-9) / 1e6:.0f} Mbit/s), sha256 "
                      f"{'matches' if ok1 else 'DIFFERS'}", file=out)

                # 2. the kernel's curl -> our server
                async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                    await reader.readuntil(b"\r\n\r\n")
                    writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload))
                    writer.write(payload)
                    await writer.drain()
                    writer.close()

                server = await stack.start_server(serve, our_addr, DEMO_PORT_OURS)
                async with server:
                    dest = os.path.join(tmp, "fetched")
                    t2 = time.perf_counter()
                    proc = await loop.run_in_executor(None, lambda: lab.run(
                        lab.ns_b, ["curl", "-sS", "--max-time", "60", "-o", dest,
                                   f"http://{our_addr}:{DEMO_PORT_OURS}/blob"], check=False))
                    t3 = time.perf_counter()
                with open(dest, "rb") if os.path.exists(dest) else open(os.devnull, "rb") as f:
                    got = f.read()
                ok2 = proc.returncode == 0 and hashlib.sha256(got).hexdigest() == digest
                print(f"  served {_fmt_bytes(len(got))} to the kernel's curl in {t3 - t2:.2f} s "
                      f"({len(got) * 8 / max(t3 - t2, 1e-9) / 1e6:.0f} Mbit/s), curl exit {proc.returncode}, "
                      f"sha256 {'matches' if ok2 else 'DIFFERS'}", file=out)
                if proc.returncode != 0:
                    print(f"  curl said: {proc.stderr.strip()}", file=out)

                moved = {k: v - before.get(k, 0) for k, v in stack.counters.items() if v != before.get(k, 0)}
                print(f"  retransmitted segments: {moved.get('RetransSegs', 0)}", file=out)
                print("  counters that moved (Linux MIB names):", file=out)
                for name in sorted(moved):
                    print(f"    {name:<24} {moved[name]:>10}", file=out)
        finally:
            server_proc.terminate()
            server_proc.wait(timeout=10)
    return 0 if (ok1 and ok2) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("aiotcpstack demo: needs root (CAP_NET_ADMIN to build network namespaces and veth, "
              "CAP_NET_RAW for AF_PACKET); run it with sudo", file=sys.stderr)
        return 2
    from aiotcpstack.host.lab import Lab

    size = int(args.size * 1024 * 1024)
    with Lab(offloads=not args.no_offloads) as lab:
        print(f"lab: {lab.ns_a} [{lab.if_a} {lab.addr_a}] <-> [{lab.if_b} {lab.addr_b}] {lab.ns_b}")
        if args.uvloop:
            import uvloop
            rc = uvloop.run(_demo_async(lab, size, args.mode, sys.stdout)) if hasattr(uvloop, "run") else \
                asyncio.run(_demo_async(lab, size, args.mode, sys.stdout))
        else:
            rc = asyncio.run(_demo_async(lab, size, args.mode, sys.stdout))
    print("lab removed" + ("; demo OK" if rc == 0 else "; demo FAILED"))
    return rc


LOGGING_EPILOG = ("Logging: the stack logs through logging.getLogger('aiotcpstack') (children: aiotcpstack.aio, "
                  "aiotcpstack.tools, ...); -v shows INFO, -vv DEBUG on stderr.")


def _tools_cmd(module: str):
    """A subcommand handler that imports ``aiotcpstack.tools.<module>`` only when run (fast --help)."""
    def run(args: argparse.Namespace) -> int:
        import importlib
        return int(importlib.import_module(f"aiotcpstack.tools.{module}").main(args) or 0)
    return run


def _add_tools_args(module: str, parser: argparse.ArgumentParser) -> None:
    import importlib
    importlib.import_module(f"aiotcpstack.tools.{module}").add_arguments(parser)


def _find_benchmarks_main() -> Any:
    """``benchmarks.run.main`` (benchmarks/ sits next to the package in a source checkout)."""
    import importlib
    try:
        return importlib.import_module("benchmarks.run").main
    except ModuleNotFoundError as exc:
        if exc.name not in ("benchmarks", "benchmarks.run"):
            raise
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(root, "benchmarks", "run.py")):
        if root not in sys.path:
            sys.path.insert(0, root)
        sys.modules.pop("benchmarks", None)
        return importlib.import_module("benchmarks.run").main
    return None


BENCH_HELP = """usage: aiotcpstack bench [BENCHMARK OPTIONS ...]

Runs the benchmarks (benchmarks/run.py in a source checkout): aiotcpstack side by side with kernel
TCP on the same lab, in one run, reported as ratios. Every argument is passed to benchmarks/run.py's
main(argv); its own options follow.
"""


def cmd_bench(args: argparse.Namespace) -> int:
    argv = list(args.bench_args or [])
    want_help = any(a in ("-h", "--help") for a in argv)
    try:
        bench_main = _find_benchmarks_main()
    except Exception as exc:  # noqa: BLE001 - a broken benchmarks/ must not look like a missing one
        print(f"aiotcpstack bench: importing benchmarks/run.py failed: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    if want_help:
        print(BENCH_HELP)
        if bench_main is None:
            print("(benchmarks/run.py is not available in this installation)")
            return 0
        sys.stdout.flush()
        try:
            return int(bench_main(["--help"]) or 0)
        except SystemExit as exc:
            return int(exc.code or 0) if isinstance(exc.code, int) else 0
    if bench_main is None:
        print("aiotcpstack bench: the benchmarks are not available: benchmarks/run.py is missing (they ship in the "
              "source tree, not in the wheel: run from a checkout of the repository)", file=sys.stderr)
        return 2
    try:
        return int(bench_main(argv) or 0)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


def _verbose_arg(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=default,
                        help="log INFO (-v) or DEBUG (-vv) from logging.getLogger('aiotcpstack') to stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiotcpstack", description="A user-space TCP/IP stack for asyncio.",
                                     epilog=LOGGING_EPILOG)
    _verbose_arg(parser, 0)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,lab,ss,nstat,trace,bench}")

    def add(name: str, **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, epilog=LOGGING_EPILOG, **kw)
        _verbose_arg(p, argparse.SUPPRESS)     # -v after the subcommand counts too
        return p

    demo = add("demo", help="build a lab, move data through the user-space stack against the "
                            "kernel's TCP both ways, print what happened, clean up",
               description="Builds two network namespaces joined by veth; in one the kernel runs "
                           "Python's http.server and curl, in the other aiotcpstack fetches from that "
                           "server and serves to that curl. Prints sizes, times, retransmissions and "
                           "the counters that moved, then removes everything. Needs root.")
    demo.add_argument("--size", type=float, default=8.0, help="MiB to move each way (default 8)")
    demo.add_argument("--mode", choices=("shared", "dedicated"), default="shared",
                      help="shared: use the interface's kernel address (RSTs suppressed with nft); "
                           "dedicated: the stack owns an address of its own (default shared)")
    demo.add_argument("--uvloop", action="store_true", help="run on uvloop instead of the default asyncio loop")
    demo.add_argument("--no-offloads", action="store_true", help="turn veth offloads (TSO/GSO/checksum) off")
    demo.set_defaults(func=cmd_demo)

    lab = add("lab", help="persistent labs for experiments: lab up | lab down | lab status",
              description="A pair of network namespaces joined by veth that stays until 'lab down' "
                          "(state in /run/aiotcpstack/labs/NAME.json). Needs root.")
    _add_tools_args("lab_cmd", lab)
    for action in lab._subparsers._group_actions[0].choices.values():  # type: ignore[union-attr]
        _verbose_arg(action, argparse.SUPPRESS)
    lab.set_defaults(func=_tools_cmd("lab_cmd"))

    ss = add("ss", help="connections of running stacks, like 'ss -tin'",
             description="Asks running stacks through their control sockets (Stack(..., control=True): "
                         "/run/aiotcpstack/<pid>.sock) and prints their connections like 'ss -tin': State, "
                         "Recv-Q, Send-Q, local and peer address, then rtt/rttvar, rto, cwnd, ssthresh, "
                         "retransmissions, bytes acked/received.")
    _add_tools_args("ss", ss)
    ss.set_defaults(func=_tools_cmd("ss"))

    nstat = add("nstat", help="counters of running stacks, like 'nstat -az'",
                description="Asks running stacks through their control sockets and prints their Linux-MIB "
                            "counters with nstat's names (TcpInSegs, TcpExtTCPFastRetrans, ...). Absolute "
                            "values; zeros hidden unless -z; -d for the change since the last -d.")
    _add_tools_args("nstat", nstat)
    nstat.set_defaults(func=_tools_cmd("nstat"))

    trace = add("trace", help="capture a transfer against kernel TCP and draw it (or draw a pcap)",
                description="Runs one transfer between the stack and kernel TCP in a fresh lab (or --lab), "
                            "records a pcap and Stack.connections() samples, and draws a time-sequence graph "
                            "(data segments, ACKs, receive window, SACK blocks, retransmissions) and a "
                            "cwnd/RTT graph. With --pcap FILE it only draws an existing capture (no root).")
    _add_tools_args("trace", trace)
    trace.set_defaults(func=_tools_cmd("trace"))

    bench = add("bench", help="run the benchmarks (benchmarks/run.py) side by side with kernel TCP",
                description="Delegates to benchmarks/run.py main(argv); 'aiotcpstack bench --help' shows its "
                            "options.", add_help=False, usage="aiotcpstack bench [BENCHMARK OPTIONS ...]")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    bench.set_defaults(func=cmd_bench)
    return parser


def setup_logging(verbose: int) -> None:
    if verbose <= 0:
        return
    import logging
    logger = logging.getLogger("aiotcpstack")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)


def _split_bench(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``[-v...] bench ARGS...``: everything after ``bench`` goes to benchmarks/run.py untouched
    (argparse's REMAINDER cannot take a leading ``--help`` or ``--option``)."""
    for i, tok in enumerate(argv):
        if tok == "bench":
            return argv[:i + 1], argv[i + 1:]
        if not tok.startswith("-"):
            break
    return argv, None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    own, bench_args = _split_bench(argv)
    args = parser.parse_args(own)
    if bench_args is not None:
        args.bench_args = bench_args
    setup_logging(getattr(args, "verbose", 0) or 0)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
