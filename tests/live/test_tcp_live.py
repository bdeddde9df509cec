"""Live: our Stack (AF_PACKET on the lab's veth in ns_a) against the kernel's TCP in ns_b, both
directions, shared and dedicated mode, multi-MB transfers checked by SHA-256.

The kernel peer runs in plain threads with blocking sockets created inside ns_b
(``host.netns.socket_in_netns``: a socket stays in the namespace it was created in), so the asyncio
loop of the test only runs our stack.
"""
from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time

import pytest

from aiotcpstack import Stack
from aiotcpstack.host.netns import socket_in_netns

MB = 1024 * 1024
pytestmark = pytest.mark.timeout(180)


def blob(n: int, seed: int) -> bytes:
    out = bytearray()
    h = hashlib.sha256(b"%d" % seed).digest()
    while len(out) < n:
        h = hashlib.sha256(h).digest()
        out += h * 64
    return bytes(out[:n])


class KernelServer:
    """A kernel TCP server in ``ns``: per connection, reads to EOF (hashing), then sends
    ``reply`` bytes and closes.  Results land in ``self.results`` as (sha256-hex, nbytes)."""

    def __init__(self, ns: str, addr: str, reply: bytes, port: int = 0) -> None:
        self.sock = socket_in_netns(ns, socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, port))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.results: list[tuple[str, int]] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.sock.settimeout(60)
            conn, _ = self.sock.accept()
            with conn:
                conn.settimeout(60)
                h = hashlib.sha256()
                n = 0
                while True:
                    d = conn.recv(1 << 20)
                    if not d:
                        break
                    h.update(d)
                    n += len(d)
                self.results.append((h.hexdigest(), n))
                conn.sendall(self.reply)
                conn.shutdown(socket.SHUT_WR)
                conn.settimeout(10)
                try:
                    while conn.recv(65536):
                        pass
                except OSError:
                    pass
        except BaseException as exc:  # noqa: BLE001
            self.errors.append(exc)

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def kernel_client(ns: str, addr: str, port: int, upload: bytes) -> tuple[str, int, float]:
    """Connect from ``ns``, send ``upload``, half-close, read to EOF; (sha256, nbytes, seconds)."""
    s = socket_in_netns(ns, socket.AF_INET, socket.SOCK_STREAM)
    with s:
        s.settimeout(60)
        t0 = time.monotonic()
        s.connect((addr, port))
        s.sendall(upload)
        s.shutdown(socket.SHUT_WR)
        h = hashlib.sha256()
        n = 0
        while True:
            d = s.recv(1 << 20)
            if not d:
                break
            h.update(d)
            n += len(d)
        return h.hexdigest(), n, time.monotonic() - t0


async def our_client(stack: Stack, addr: str, port: int, upload: bytes) -> tuple[str, int, float]:
    t0 = time.monotonic()
    reader, writer = await stack.open_connection(addr, port)
    writer.write(upload)
    await writer.drain()
    writer.write_eof()
    h = hashlib.sha256()
    n = 0
    while True:
        d = await reader.read(1 << 20)
        if not d:
            break
        h.update(d)
        n += len(d)
    writer.close()
    await writer.wait_closed()
    return h.hexdigest(), n, time.monotonic() - t0


async def start_our_server(stack: Stack, host: str | None, reply: bytes):
    results: list[tuple[str, int]] = []
    done = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            h = hashlib.sha256()
            n = 0
            while True:
                d = await reader.read(1 << 20)
                if not d:
                    break
                h.update(d)
                n += len(d)
            results.append((h.hexdigest(), n))
            writer.write(reply)
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        except BaseException as exc:  # noqa: BLE001
            if not done.done():
                done.set_exception(exc)
            raise
        if not done.done():
            done.set_result(None)

    server = await stack.start_server(handle, host, 0)
    return server, results, done


def _report(label: str, nbytes: int, secs: float) -> None:
    print(f"{label}: {nbytes / MB:.1f} MB in {secs:.2f} s = {nbytes * 8 / secs / 1e6:.0f} Mbit/s")


VARIANTS = {
    "offloads": (dict(offloads=True), {}),          # veth TSO/GRO on, we use the vnet header (GSO)
    "no-offloads": (dict(offloads=False), {}),      # veth offloads off: real checksums, MTU frames
    "no-vnet": (dict(offloads=False), dict(vnet=False)),  # no vnet header: software segmentation, csum in software
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("mode", ["shared", "dedicated"])
async def test_our_client_to_kernel_server(lab_factory, mode: str, variant: str) -> None:
    lab_kw, opts = VARIANTS[variant]
    lab = lab_factory(**lab_kw)
    up, down = blob(8 * MB, 1), blob(4 * MB, 2)
    address = None if mode == "shared" else f"{lab.spare_addr}/24"
    srv = KernelServer(lab.ns_b, lab.addr_b, down)
    try:
        async with Stack(lab.if_a, netns=lab.ns_a, address=address, **opts) as stack:
            digest, n, secs = await asyncio.wait_for(our_client(stack, lab.addr_b, srv.port, up), 120)
            _report(f"{mode}/{variant} client->kernel", len(up) + n, secs)
            counters = dict(stack.counters)
        srv.thread.join(10)
        assert not srv.errors, srv.errors
        assert srv.results == [(hashlib.sha256(up).hexdigest(), len(up))]
        assert (digest, n) == (hashlib.sha256(down).hexdigest(), len(down))
        assert counters["InCsumErrors"] == 0
    finally:
        srv.close()


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("mode", ["shared", "dedicated"])
async def test_kernel_client_to_our_server(lab_factory, mode: str, variant: str) -> None:
    lab_kw, opts = VARIANTS[variant]
    lab = lab_factory(**lab_kw)
    up, down = blob(8 * MB, 3), blob(4 * MB, 4)
    address = None if mode == "shared" else f"{lab.spare_addr}/24"
    target = lab.addr_a if mode == "shared" else lab.spare_addr
    loop = asyncio.get_running_loop()
    async with Stack(lab.if_a, netns=lab.ns_a, address=address, **opts) as stack:
        server, results, done = await start_our_server(stack, None, down)
        port = server.sockets[0].getsockname()[1]
        digest, n, secs = await asyncio.wait_for(
            loop.run_in_executor(None, kernel_client, lab.ns_b, target, port, up), 120)
        await asyncio.wait_for(done, 10)
        _report(f"{mode}/{variant} kernel->server", len(up) + n, secs)
        assert stack.counters["InCsumErrors"] == 0
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)
    assert results == [(hashlib.sha256(up).hexdigest(), len(up))]
    assert (digest, n) == (hashlib.sha256(down).hexdigest(), len(down))


async def test_dedicated_mode_answers_ping(lab) -> None:
    loop = asyncio.get_running_loop()
    async with Stack(lab.if_a, netns=lab.ns_a, address=f"{lab.spare_addr}/24") as stack:
        res = await loop.run_in_executor(
            None, lambda: lab.run(lab.ns_b, ["ping", "-c", "3", "-i", "0.2", "-W", "2", lab.spare_addr], check=False))
        assert res.returncode == 0, res.stdout + res.stderr
        assert stack.counters["IcmpOutEchoReps"] >= 3
        assert stack.counters["ArpOutReplies"] >= 1


async def test_connection_refused_and_eaddrinuse(lab) -> None:
    async with Stack(lab.if_a, netns=lab.ns_a) as stack:
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(stack.create_connection(asyncio.Protocol, lab.addr_b, 9), 10)
        server = await stack.create_server(asyncio.Protocol, None, 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(OSError) as ei:
            await stack.create_server(asyncio.Protocol, None, port)
        assert ei.value.errno == 98
        # the kernel in ns_a cannot take the port either (reservation)
        s = socket_in_netns(lab.ns_a, socket.AF_INET, socket.SOCK_STREAM)
        with s, pytest.raises(OSError):
            s.bind(("0.0.0.0", port))
        server.close()
        await server.wait_closed()


# ------------------------------------------------------------------------------------ IPv6
def _v6_server(ns: str, addr: str, reply: bytes):
    s = socket_in_netns(ns, socket.AF_INET6, socket.SOCK_STREAM)
    s.bind((addr, 0))
    s.listen(4)
    s.settimeout(30)

    def run():
        c, _ = s.accept()
        with c:
            h = hashlib.sha256()
            while True:
                d = c.recv(1 << 20)
                if not d:
                    break
                h.update(d)
            c.sendall(reply)
        return h.hexdigest()
    return s, run


def _v6_client(ns: str, addr: str, port: int, upload: bytes) -> str:
    s = socket_in_netns(ns, socket.AF_INET6, socket.SOCK_STREAM)
    with s:
        s.settimeout(30)
        s.connect((addr, port))
        s.sendall(upload)
        s.shutdown(socket.SHUT_WR)
        h = hashlib.sha256()
        while True:
            d = s.recv(1 << 20)
            if not d:
                return h.hexdigest()
            h.update(d)


def _wait_v6_ready(lab) -> None:
    """Kernel DAD must finish before the kernel uses its v6 addresses."""
    for ns in (lab.ns_a, lab.ns_b):
        for _ in range(50):
            out = lab.run(ns, ["ip", "-6", "addr", "show", "tentative"], check=False).stdout
            if "tentative" not in out:
                break
            time.sleep(0.1)


@pytest.mark.parametrize("mode", ["shared", "dedicated"])
async def test_ipv6_both_directions(lab, mode: str) -> None:
    _wait_v6_ready(lab)
    loop = asyncio.get_running_loop()
    up, down = blob(2 * MB, 5), blob(1 * MB, 6)
    address = None if mode == "shared" else f"{lab.spare_addr6}/64"
    ours = lab.addr6_a if mode == "shared" else lab.spare_addr6
    async with Stack(lab.if_a, netns=lab.ns_a, address=address) as stack:
        # our client -> kernel server
        ls, run = _v6_server(lab.ns_b, lab.addr6_b, down)
        fut = loop.run_in_executor(None, run)
        digest, n, _ = await asyncio.wait_for(our_client(stack, lab.addr6_b, ls.getsockname()[1], up), 60)
        assert await asyncio.wait_for(fut, 10) == hashlib.sha256(up).hexdigest()
        assert (digest, n) == (hashlib.sha256(down).hexdigest(), len(down))
        ls.close()
        # kernel client -> our server
        server, results, done = await start_our_server(stack, None, down)
        port = server.sockets[0].getsockname()[1]
        digest = await asyncio.wait_for(loop.run_in_executor(None, _v6_client, lab.ns_b, ours, port, up), 60)
        await asyncio.wait_for(done, 10)
        assert results == [(hashlib.sha256(up).hexdigest(), len(up))]
        assert digest == hashlib.sha256(down).hexdigest()
        if mode == "dedicated":
            res = await loop.run_in_executor(None, lambda: lab.run(
                lab.ns_b, ["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", lab.spare_addr6], check=False))
            assert res.returncode == 0, res.stdout + res.stderr
        server.close()


@pytest.mark.parametrize("mode", ["shared", "dedicated"])
async def test_transfers_under_random_loss(lab_factory, mode: str) -> None:
    """2 % random loss on both veth directions (nft numgen), offloads off so loss hits single
    segments: our retransmission against the kernel's, both directions, every byte checked."""
    lab = lab_factory(offloads=False, loss=0.02)
    loop = asyncio.get_running_loop()
    up, down = blob(3 * MB, 7), blob(2 * MB, 8)
    address = None if mode == "shared" else f"{lab.spare_addr}/24"
    target = lab.addr_a if mode == "shared" else lab.spare_addr
    srv = KernelServer(lab.ns_b, lab.addr_b, down)
    try:
        async with Stack(lab.if_a, netns=lab.ns_a, address=address, vnet=False) as stack:
            digest, n, secs = await asyncio.wait_for(our_client(stack, lab.addr_b, srv.port, up), 120)
            _report(f"{mode}/loss2% client->kernel", len(up) + n, secs)
            assert (digest, n) == (hashlib.sha256(down).hexdigest(), len(down))
            server, results, done = await start_our_server(stack, None, down)
            port = server.sockets[0].getsockname()[1]
            digest, n, secs = await asyncio.wait_for(
                loop.run_in_executor(None, kernel_client, lab.ns_b, target, port, up), 120)
            await asyncio.wait_for(done, 30)
            _report(f"{mode}/loss2% kernel->server", len(up) + n, secs)
            assert results == [(hashlib.sha256(up).hexdigest(), len(up))]
            assert (digest, n) == (hashlib.sha256(down).hexdigest(), len(down))
            assert stack.counters["RetransSegs"] > 0
            server.close()
        srv.thread.join(10)
        assert srv.results == [(hashlib.sha256(up).hexdigest(), len(up))]
    finally:
        srv.close()
