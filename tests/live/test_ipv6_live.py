"""Live IPv6 (2001:2::/48 lab addresses only): transfers against the kernel in both directions, in
shared and dedicated mode, on one link and through a router (NDP for the router, the IPv6
pseudo-header checksum end to end); NDP in dedicated mode (the kernel resolves our address via our
NA; a kernel DAD probe for our address is defended); dual-stack create_server with the stock
loop's V6ONLY semantics (host None: both families; "0.0.0.0": v4 only; "::": v6 only).

(The same-link both-directions transfer in shared and dedicated mode is also in
test_tcp_live.py::test_ipv6_both_directions; here it is repeated through a router and with the NDP
checks.)
"""
from __future__ import annotations

import asyncio
import hashlib
import socket
import time

import pytest

from aiotcpstack import Stack
from test_pmtud_live import KernelServer, blob, kernel_client, our_client, start_our_server

MB = 1024 * 1024
pytestmark = pytest.mark.timeout(180)


def _wait_dad(lab) -> None:
    for ns in (lab.ns_a, getattr(lab, "ns_m", lab.ns_a), lab.ns_b):
        for _ in range(60):
            out = lab.run(ns, ["ip", "-6", "addr", "show", "tentative"], check=False).stdout
            if "tentative" not in out:
                break
            time.sleep(0.1)


async def _transfers(lab, stack: Stack, ours: str, up: bytes, down: bytes) -> None:
    loop = asyncio.get_running_loop()
    srv = KernelServer(lab.ns_b, lab.addr6_b, down)
    try:
        digest, n, mss = await asyncio.wait_for(our_client(stack, lab.addr6_b, srv.port, up), 60)
        srv.thread.join(10)
        assert srv.error is None and srv.result == (hashlib.sha256(up).hexdigest(), len(up))
        assert (digest, n) == (hashlib.sha256(down).hexdigest(), len(down))
    finally:
        srv.close()
    server, results, done = await start_our_server(stack, down)
    try:
        port = server.sockets[0].getsockname()[1]
        digest, n = await asyncio.wait_for(loop.run_in_executor(None, kernel_client, lab.ns_b, ours, port, up), 60)
        await asyncio.wait_for(done, 20)
        assert results[0][:2] == (hashlib.sha256(up).hexdigest(), len(up))
        assert (digest, n) == (hashlib.sha256(down).hexdigest(), len(down))
    finally:
        server.close()
        await server.wait_closed()


async def test_ipv6_transfers_through_a_router(lab_factory) -> None:
    """Shared mode only: a dedicated Stack takes no routes (its address is on-link only)."""
    lab = lab_factory(impaired=True)
    await asyncio.get_running_loop().run_in_executor(None, _wait_dad, lab)
    mode = "shared"
    up, down = blob(4 * MB, 11), blob(3 * MB, 12)
    async with Stack(lab.if_a, netns=lab.ns_a) as stack:
        t0 = time.monotonic()
        await _transfers(lab, stack, lab.addr6_a, up, down)
        c = stack.counters
        print(f"IPv6 via router ({mode}): {2 * (len(up) + len(down)) / MB:.0f} MB in "
              f"{time.monotonic() - t0:.2f} s, InCsumErrors={c['InCsumErrors']} "
              f"Icmp6OutNeighborSolicits={c['Icmp6OutNeighborSolicits']}")
        assert c["InCsumErrors"] == 0


@pytest.mark.parametrize("mode", ["shared", "dedicated"])
async def test_ipv6_same_link_both_directions(lab, mode: str) -> None:
    await asyncio.get_running_loop().run_in_executor(None, _wait_dad, lab)
    address = None if mode == "shared" else f"{lab.spare_addr6}/64"
    ours = lab.addr6_a if mode == "shared" else lab.spare_addr6
    async with Stack(lab.if_a, netns=lab.ns_a, address=address) as stack:
        await _transfers(lab, stack, ours, blob(4 * MB, 13), blob(2 * MB, 14))
        if mode == "dedicated":
            # the kernel in ns_b resolves our dedicated address through our NA (RFC 4861 7.2.4):
            # forget what it learned from our own NS, then make it solicit
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, lambda: lab.run(lab.ns_b, ["ip", "-6", "neigh", "flush", "dev", lab.if_b]))
            res = await loop.run_in_executor(None, lambda: lab.run(
                lab.ns_b, ["ping", "-6", "-c", "1", "-W", "2", lab.spare_addr6], check=False))
            assert res.returncode == 0, res.stdout + res.stderr
            out = lab.run(lab.ns_b, ["ip", "-6", "neigh", "show", lab.spare_addr6]).stdout
            assert lab.mac_a.hex(":") in out.lower(), out
            assert stack.counters["Icmp6OutNeighborAdvertisements"] >= 1


async def test_dedicated_mode_defends_its_address_against_dad(lab) -> None:
    """A kernel that tries to configure our dedicated address runs DAD (RFC 4862 5.4: NS from ::);
    our NA to ff02::1 makes its address fail DAD, so two hosts never share it."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, _wait_dad, lab)
    async with Stack(lab.if_a, netns=lab.ns_a, address=f"{lab.spare_addr6}/64") as stack:
        from aiotcpstack.host.netns import write_sysctl

        def dad_on() -> None:       # the lab turns DAD off for speed: on again for if_b
            for key in ("accept_dad", "dad_transmits"):
                write_sysctl(lab.ns_b, f"net/ipv6/conf/{lab.if_b}/{key}", 1)
        await loop.run_in_executor(None, dad_on)
        await loop.run_in_executor(None, lambda: lab.run(
            lab.ns_b, ["ip", "-6", "addr", "add", f"{lab.spare_addr6}/64", "dev", lab.if_b]))
        out = ""
        for _ in range(50):
            await asyncio.sleep(0.1)
            out = (await loop.run_in_executor(None, lambda: lab.run(
                lab.ns_b, ["ip", "-6", "addr", "show", "dev", lab.if_b]))).stdout
            if "dadfailed" in out:
                break
        assert "dadfailed" in out, out
        assert stack.counters["Icmp6OutNeighborAdvertisements"] >= 1


def _try_connect(ns: str, family: int, addr: str, port: int) -> str:
    from aiotcpstack.host.netns import socket_in_netns
    s = socket_in_netns(ns, family, socket.SOCK_STREAM)
    with s:
        s.settimeout(5)
        try:
            s.connect((addr, port))
        except ConnectionRefusedError:
            return "refused"
        except OSError as exc:
            return f"error {exc}"
        s.sendall(b"ping")
        s.shutdown(socket.SHUT_WR)
        return s.recv(100).decode() or "eof"


@pytest.mark.parametrize("mode", ["shared", "dedicated"])
async def test_dual_stack_server_and_v6only_semantics(lab, mode: str) -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, _wait_dad, lab)
    if mode == "shared":
        address, ours4, ours6 = None, lab.addr_a, lab.addr6_a
    else:
        address = f"{lab.spare_addr}/{lab.prefixlen},{lab.spare_addr6}/64"
        ours4, ours6 = lab.spare_addr, lab.spare_addr6

    async def handle(reader, writer):
        data = await reader.read()
        writer.write(b"pong:" + data)
        await writer.drain()
        writer.close()

    async with Stack(lab.if_a, netns=lab.ns_a, address=address) as stack:
        async def probe(host):
            server = await stack.start_server(handle, host, 0)
            port = server.sockets[0].getsockname()[1]
            fams = sorted(s.family for s in server.sockets)
            r4 = await loop.run_in_executor(None, _try_connect, lab.ns_b, socket.AF_INET, ours4, port)
            r6 = await loop.run_in_executor(None, _try_connect, lab.ns_b, socket.AF_INET6, ours6, port)
            server.close()
            await server.wait_closed()
            return fams, r4, r6

        fams, r4, r6 = await probe(None)           # asyncio: one socket per family
        assert fams == sorted([socket.AF_INET, socket.AF_INET6])
        assert (r4, r6) == ("pong:ping", "pong:ping")
        fams, r4, r6 = await probe("0.0.0.0")      # v4 only
        assert fams == [socket.AF_INET] and r4 == "pong:ping" and r6 == "refused"
        fams, r4, r6 = await probe("::")           # IPV6_V6ONLY, like the stock loop
        assert fams == [socket.AF_INET6] and r6 == "pong:ping" and r4 == "refused"
        fams, r4, r6 = await probe(["0.0.0.0", "::"])
        assert (r4, r6) == ("pong:ping", "pong:ping")
