"""Live: ECN (RFC 3168; tcp/ecn.py) against the kernel's TCP in ns_b with net.ipv4.tcp_ecn=1.

* Negotiation both ways: our client with ``ecn=1`` and our server with the default ``ecn=2``
  (accept) each end up with ECN, and the kernel says so: ``tcpi_options`` of its socket (TCP_INFO,
  what ``ss -ti`` prints as "ecn" / "ecnseen"; the iproute2 6.1 ``ss`` here prints none of the
  option flags on this 6.18 kernel, not even "ts sack" between two kernel sockets) has ECN, and
  ECN_SEEN once our ECT(0) data arrived; with the defaults on both sides (2 / 2) nobody asks.
* Marks in the path, nft ``ip ecn set ce`` on a fraction of the data (``numgen random``) in ns_b:
  our data to the kernel -- the kernel echoes ECE, we reduce (``TcpEcnCwr``) and send CWR
  (counted by nft); the kernel's data to us -- we echo ECE (``TcpEcnCeRecv``) and the kernel
  reduces and sends CWR (counted by nft).  Every byte arrives intact (hashed)."""
from __future__ import annotations

import asyncio
import hashlib
import socket
import threading

import pytest

from aiotcpstack import Stack
from aiotcpstack.host.netns import socket_in_netns
from test_pmtud_live import KernelServer
from test_ttl_tos_live import _counters

pytestmark = pytest.mark.timeout(120)

TABLE = "ats_ecn"


def _sysctl_ecn(lab, value: int) -> None:
    lab.run(lab.ns_b, ["sysctl", "-qw", f"net.ipv4.tcp_ecn={value}"])


TCPI_OPT_ECN = 8             # include/uapi/linux/tcp.h
TCPI_OPT_ECN_SEEN = 16


def _tcpi_options(sock: socket.socket) -> int:
    """``tcpi_options`` of a kernel TCP socket (struct tcp_info: state, ca_state, retransmits,
    probes, backoff, options)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[5]


class KernelSink:
    """Kernel TCP server in ns_b: reads to EOF, notes ``tcpi_options``, replies, closes."""

    def __init__(self, ns: str, addr: str, reply: bytes) -> None:
        self.sock = socket_in_netns(ns, socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((addr, 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.n = 0
        self.options = -1
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.sock.settimeout(60)
            c, _ = self.sock.accept()
            with c:
                c.settimeout(60)
                while d := c.recv(1 << 20):
                    self.n += len(d)
                self.options = _tcpi_options(c)
                c.sendall(self.reply)
        except BaseException as exc:  # noqa: BLE001
            self.error = exc

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


class HoldingClient:
    """A kernel client in ns_b that connects, sends ``upload`` and holds the connection open
    until ``release()`` (so that ``ss`` can look at it)."""

    def __init__(self, ns: str, addr: str, port: int, upload: bytes) -> None:
        self.sock = socket_in_netns(ns, socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect((addr, port))
        self.local_port = self.sock.getsockname()[1]
        self.sock.sendall(upload)

    def release(self) -> bytes:
        self.sock.shutdown(socket.SHUT_WR)
        got = bytearray()
        while d := self.sock.recv(1 << 16):
            got += d
        self.options = _tcpi_options(self.sock)
        self.sock.close()
        return bytes(got)


async def _echo_server(stack: Stack, addr: str):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        writer.write(hashlib.sha256(data).digest())
        await writer.drain()
        writer.close()

    return await stack.start_server(handle, addr, 0)


async def _both_ways(lab, kernel_ecn: int, **stack_kw) -> tuple[int, int]:
    """Under ns_b's ``net.ipv4.tcp_ecn=kernel_ecn``: our client sends 20 kB to a kernel server,
    then a kernel client sends 30 kB to our server; ``tcpi_options`` of the kernel's two sockets
    (its server's, its client's), read after the data."""
    loop = asyncio.get_running_loop()
    _sysctl_ecn(lab, kernel_ecn)
    ks = KernelSink(lab.ns_b, lab.addr_b, b"r" * 1000)
    try:
        async with Stack(lab.if_a, netns=lab.ns_a, **stack_kw) as stack:
            reader, writer = await stack.open_connection(lab.addr_b, ks.port)
            (mine,) = [c for c in stack.connections() if c["remote"][1] == ks.port]
            writer.write(b"a" * 20000)
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 20) == b"r" * 1000
            writer.close()
            server = await _echo_server(stack, lab.addr_a)
            port = server.sockets[0].getsockname()[1]
            blob = b"k" * 30000
            kc = await loop.run_in_executor(None, HoldingClient, lab.ns_b, lab.addr_a, port, blob)
            assert await loop.run_in_executor(None, kc.release) == hashlib.sha256(blob).digest()
            server.close()
            await server.wait_closed()
        await loop.run_in_executor(None, ks.thread.join, 10)
        assert ks.error is None and ks.n == 20000
    finally:
        ks.close()
    # our side agrees with the kernel's
    assert mine["ecn"] == bool(ks.options & TCPI_OPT_ECN)
    return ks.options & (TCPI_OPT_ECN | TCPI_OPT_ECN_SEEN), kc.options & (TCPI_OPT_ECN | TCPI_OPT_ECN_SEEN)


BOTH = TCPI_OPT_ECN | TCPI_OPT_ECN_SEEN


@pytest.mark.parametrize("ours", [1, 2])
async def test_negotiated_with_the_kernel_both_ways(lab, ours: int) -> None:
    """Our client (``ours``=1 asks) and our server (1 or 2: accepts) with a kernel that asks
    (tcp_ecn=1): ECN on the kernel's sockets, and ECN_SEEN: our data was ECT(0)."""
    server_opts, client_opts = await _both_ways(lab, 1, ecn=ours)
    assert server_opts == (BOTH if ours == 1 else 0)       # 2: we never ask
    assert client_opts == BOTH                             # the kernel's request accepted


async def test_defaults_on_both_sides_do_not_negotiate(lab) -> None:
    assert await _both_ways(lab, 2) == (0, 0)


def _mark_rules(ours: str, percent: int) -> str:
    """CE on ``percent`` % of the ECT(0) data in each direction, and counters of ECE/CWR."""
    return f"""table inet {TABLE} {{
  chain pre {{
    type filter hook prerouting priority -300; policy accept;
    ip saddr {ours} tcp flags & cwr == cwr counter comment "our_cwr"
    ip saddr {ours} tcp flags & ecn == ecn counter comment "our_ece"
    ip saddr {ours} ip ecn ect0 numgen random mod 100 < {percent} ip ecn set ce counter comment "marked_ours"
  }}
  chain post {{
    type filter hook postrouting priority 300; policy accept;
    ip daddr {ours} tcp flags & cwr == cwr counter comment "kernel_cwr"
    ip daddr {ours} tcp flags & ecn == ecn counter comment "kernel_ece"
    ip daddr {ours} ip ecn ect0 numgen random mod 100 < {percent} ip ecn set ce counter comment "marked_kernel"
  }}
}}
"""


async def test_ce_marks_make_both_senders_reduce_and_send_cwr(lab) -> None:
    loop = asyncio.get_running_loop()
    _sysctl_ecn(lab, 1)
    lab.nft(lab.ns_b, _mark_rules(lab.addr_a, 3))
    up = bytes(range(256)) * 40000                         # ~10 MB each way
    down = bytes(reversed(range(256))) * 40000
    ks = KernelServer(lab.ns_b, lab.addr_b, down)
    try:
        async with Stack(lab.if_a, netns=lab.ns_a, ecn=1) as stack:
            reader, writer = await stack.open_connection(lab.addr_b, ks.port)
            writer.write(up)
            writer.write_eof()
            got = await asyncio.wait_for(reader.read(), 60)
            writer.close()
            counters = dict(stack.counters)
        await loop.run_in_executor(None, ks.thread.join, 10)
        assert ks.error is None
        assert ks.result == (hashlib.sha256(up).hexdigest(), len(up))
        assert got == down
        c = await loop.run_in_executor(None, _counters, lab, TABLE)
    finally:
        ks.close()
    print(c, {k: v for k, v in counters.items() if "Ecn" in k})
    # our data marked -> the kernel echoed ECE -> we reduced and sent CWR
    assert c["marked_ours"] > 0 and c["kernel_ece"] > 0
    assert counters["TcpEcnCwr"] > 0 and c["our_cwr"] > 0
    # the kernel's data marked -> we echoed ECE -> the kernel reduced and sent CWR
    assert c["marked_kernel"] > 0 and counters["TcpEcnCeRecv"] > 0 and c["our_ece"] > 0
    assert c["kernel_cwr"] > 0
