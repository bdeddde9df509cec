"""The ``aiotcpstack`` command (also ``python -m aiotcpstack``).

Subcommands: ``demo`` (the README's main job).  The observability tools (``lab``, ``ss``,
``nstat``, ``trace``, ``bench``) belong to later work and are listed in the README's feature table.
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiotcpstack", description="A user-space TCP/IP stack for asyncio.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="build a lab, move data through the user-space stack against the "
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
