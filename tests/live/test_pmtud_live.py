"""Live: path MTU discovery through a real router, black-hole fallback, spoofed ICMP.

Lab: :class:`ImpairedLab` a - m - b, the kernel in ``m`` routes, the m-b hop has the smaller MTU
``mtu2`` (1300 for IPv4, 1280 for IPv6).  The kernel in ``b`` knows its own link MTU, so by default
it would advertise an MSS that already fits (``mtu2 - 40``) and no PMTUD would ever happen on our
side.  To get the classic PMTUD situation (a peer whose MSS is larger than the path allows), ns_b's
route back to a carries ``advmss`` 1460 / 1440: b advertises the full-size MSS while its own
segments stay within its link MTU.  So:

- our sending direction (our client's upload, our server's reply): our 1500-byte packets reach m,
  which answers ICMP frag-needed / packet-too-big; we lower the MSS, retransmit, and finish.
- the kernel's sending direction needs no PMTUD at all here (its segments are sized by its own
  link MTU).  In a topology where it did (the small hop behind a router on its side), the
  kernel's own PMTUD (and, with the ICMP filtered, its ``tcp_mtu_probing``, off by default on
  Linux) would apply: not ours to test.

Black hole: nft in ns_m drops the router's outgoing frag-needed / packet-too-big; our side then
detects the black hole after tcp_retries1 RTOs and falls back to base_mss 1024 (tcp/mtu_probe.py).

Spoofing: scapy in ns_b sends ICMP errors quoting our 4-tuple with a sequence number outside
SND.UNA..SND.NXT during a transfer: ignored (OutOfWindowIcmps), MSS unchanged, transfer completes.
"""
from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import sys
import threading
import time

import pytest
from pyroute2 import IPRoute

from aiotcpstack import Stack
from aiotcpstack.host.netns import socket_in_netns

MB = 1024 * 1024
pytestmark = pytest.mark.timeout(180)


def blob(n: int, seed: int) -> bytes:
    h = hashlib.sha256(b"pmtu%d" % seed).digest()
    return (h * (n // len(h) + 1))[:n]


def _fam(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


class KernelServer:
    """Kernel TCP server in ``ns``: reads to EOF (hashing), then sends ``reply`` and closes."""

    def __init__(self, ns: str, addr: str, reply: bytes) -> None:
        self.sock = socket_in_netns(ns, _fam(addr), socket.SOCK_STREAM)
        self.sock.bind((addr, 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.result: tuple[str, int] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.sock.settimeout(90)
            c, _ = self.sock.accept()
            with c:
                c.settimeout(90)
                h, n = hashlib.sha256(), 0
                while d := c.recv(1 << 20):
                    h.update(d)
                    n += len(d)
                self.result = (h.hexdigest(), n)
                c.sendall(self.reply)
                c.shutdown(socket.SHUT_WR)
                try:
                    while c.recv(65536):
                        pass
                except OSError:
                    pass
        except BaseException as exc:  # noqa: BLE001
            self.error = exc

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def kernel_client(ns: str, addr: str, port: int, upload: bytes) -> tuple[str, int]:
    s = socket_in_netns(ns, _fam(addr), socket.SOCK_STREAM)
    with s:
        s.settimeout(90)
        s.connect((addr, port))
        s.sendall(upload)
        s.shutdown(socket.SHUT_WR)
        h, n = hashlib.sha256(), 0
        while d := s.recv(1 << 20):
            h.update(d)
            n += len(d)
        return h.hexdigest(), n


class MssWatch:
    """Samples the MSS of our connections while a transfer runs."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.seen: set[int] = set()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            for c in self.stack.connections():
                if c.get("state") == "ESTABLISHED" and c.get("mss"):
                    self.seen.add(c["mss"])
            await asyncio.sleep(0.002)

    def stop(self) -> set[int]:
        self.task.cancel()
        return self.seen


async def our_client(stack: Stack, addr: str, port: int, upload: bytes) -> tuple[str, int, int]:
    reader, writer = await stack.open_connection(addr, port)
    writer.write(upload)
    await writer.drain()
    mss = writer.get_extra_info("tcp_info")["mss"]
    writer.write_eof()
    h, n = hashlib.sha256(), 0
    while d := await reader.read(1 << 20):
        h.update(d)
        n += len(d)
    writer.close()
    await writer.wait_closed()
    return h.hexdigest(), n, mss


async def start_our_server(stack: Stack, reply: bytes):
    results: list = []
    done = asyncio.get_running_loop().create_future()

    async def handle(reader, writer):
        try:
            h, n = hashlib.sha256(), 0
            while d := await reader.read(1 << 20):
                h.update(d)
                n += len(d)
            writer.write(reply)
            await writer.drain()
            results.append((h.hexdigest(), n, writer.get_extra_info("tcp_info")["mss"]))
            writer.close()
            await writer.wait_closed()
            if not done.done():
                done.set_result(None)
        except BaseException as exc:  # noqa: BLE001
            if not done.done():
                done.set_exception(exc)
            raise

    server = await stack.start_server(handle, None, 0)
    return server, results, done


def _wait_v6(lab) -> None:
    for ns in (lab.ns_a, getattr(lab, "ns_m", lab.ns_a), lab.ns_b):
        for _ in range(60):
            out = lab.run(ns, ["ip", "-6", "addr", "show", "tentative"], check=False).stdout
            if "tentative" not in out:
                break
            time.sleep(0.1)


async def _make_lab(lab_factory, v6: bool):
    lab = lab_factory(impaired=True, mtu2=1280 if v6 else 1300, offloads=False)

    def advmss() -> None:
        # b advertises a full-size MSS although its own link is smaller (see the module docstring);
        # pyroute2's sync IPRoute runs its own loop: not on the test's loop thread
        with IPRoute(netns=lab.ns_b) as ipr:
            if v6:
                ipr.route("replace", dst=lab.net6_a, gateway=lab.gw6_b, metrics={"advmss": 1440})
            else:
                ipr.route("replace", dst=lab.net_a, gateway=lab.gw_b, metrics={"advmss": 1460})
        out = lab.run(lab.ns_b, ["ip", "-6" if v6 else "-4", "route", "show"]).stdout
        assert "advmss" in out, out
        if v6:
            _wait_v6(lab)
    await asyncio.get_running_loop().run_in_executor(None, advmss)
    return lab


def _drop_pmtu_icmp(lab) -> None:
    """The black hole: the router's frag-needed / packet-too-big never leave ns_m."""
    lab.nft(lab.ns_m, """
table inet ats_pmtu_bh {
  chain out {
    type filter hook output priority 0; policy accept;
    icmp type destination-unreachable icmp code frag-needed counter drop
    icmpv6 type packet-too-big counter drop
  }
}
""")


async def _both_directions(lab, stack: Stack, v6: bool, up: bytes, down: bytes, forget_pmtu: bool = False):
    """our client -> kernel server, then kernel client -> our server; returns the MSS values our
    side had at the end of each of its sending phases."""
    loop = asyncio.get_running_loop()
    peer = lab.addr6_b if v6 else lab.addr_b
    srv = KernelServer(lab.ns_b, peer, down)
    try:
        digest, n, mss_client = await asyncio.wait_for(our_client(stack, peer, srv.port, up), 90)
        srv.thread.join(10)
        assert srv.error is None, srv.error
        assert srv.result == (hashlib.sha256(up).hexdigest(), len(up))
        assert (digest, n) == (hashlib.sha256(down).hexdigest(), len(down))
    finally:
        srv.close()
    if forget_pmtu:
        stack.core.pmtu.entries.clear()      # the server direction must discover it on its own
    server, results, done = await start_our_server(stack, down)
    try:
        port = server.sockets[0].getsockname()[1]
        ours = lab.addr6_a if v6 else lab.addr_a
        digest, n = await asyncio.wait_for(loop.run_in_executor(None, kernel_client, lab.ns_b, ours, port, up), 90)
        await asyncio.wait_for(done, 30)
        assert results[0][:2] == (hashlib.sha256(up).hexdigest(), len(up))
        assert (digest, n) == (hashlib.sha256(down).hexdigest(), len(down))
        mss_server = results[0][2]
    finally:
        server.close()
        await server.wait_closed()
    return mss_client, mss_server


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
async def test_pmtud_through_router(lab_factory, v6: bool) -> None:
    lab = await _make_lab(lab_factory, v6)
    mtu2 = lab.mtu2
    up, down = blob(4 * MB, 1), blob(4 * MB, 2)
    async with Stack(lab.if_a, netns=lab.ns_a) as stack:
        mss_c, mss_s = await _both_directions(lab, stack, v6, up, down, forget_pmtu=True)
        hdr = 60 if v6 else 40
        peer = lab.addr6_b if v6 else lab.addr_b
        dst = socket.inet_pton(_fam(peer), peer)
        c = stack.counters
        print(f"PMTUD {'v6' if v6 else 'v4'} mtu2={mtu2}: client mss={mss_c} server mss={mss_s} "
              f"TCPPMTUDUpdates={c['TCPPMTUDUpdates']} OutOfWindowIcmps={c['OutOfWindowIcmps']} "
              f"RetransSegs={c['RetransSegs']} TCPTimeouts={c['TCPTimeouts']} "
              f"cached pmtu={stack.core.pmtu.get(dst, stack.core._now())}")
        assert stack.core.pmtu.get(dst, stack.core._now()) == mtu2
        assert c["TCPPMTUDUpdates"] == 2            # once per connection (cache cleared between)
        assert c["TCPTimeouts"] == 0                # ICMP-driven: retransmitted at once, no RTO
        # our MSS dropped to the path MTU (minus IP/TCP headers and the timestamp option)
        assert mss_c == mtu2 - hdr - 12, mss_c
        assert mss_s == mtu2 - hdr - 12, mss_s
        assert c["TCPMTUPBlackhole"] == 0           # ICMP did the job, no black-hole fallback


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
async def test_pmtu_blackhole_fallback(lab_factory, v6: bool) -> None:
    lab = await _make_lab(lab_factory, v6)
    _drop_pmtu_icmp(lab)
    up, down = blob(2 * MB, 3), blob(1 * MB, 4)
    t0 = time.monotonic()
    async with Stack(lab.if_a, netns=lab.ns_a) as stack:
        mss_c, mss_s = await _both_directions(lab, stack, v6, up, down)
        c = stack.counters
        print(f"black hole {'v6' if v6 else 'v4'} mtu2={lab.mtu2}: client mss={mss_c} server mss={mss_s} "
              f"TCPMTUPBlackhole={c['TCPMTUPBlackhole']} TCPTimeouts={c['TCPTimeouts']} "
              f"TCPPMTUDUpdates={c['TCPPMTUDUpdates']} in {time.monotonic() - t0:.1f} s")
        assert c["TCPPMTUDUpdates"] == 0            # no ICMP got through
        assert c["TCPMTUPBlackhole"] >= 2           # once per connection (client, server)
        assert mss_c == 1024 - 12 and mss_s == 1024 - 12     # tcp_base_mss
    out = lab.run(lab.ns_m, ["nft", "list", "table", "inet", "ats_pmtu_bh"]).stdout
    dropped = [int(x) for x in re.findall(r"counter packets (\d+)", out)]
    print(f"router ICMP dropped by nft: {dropped}")
    assert sum(dropped) > 0, out                  # the router did signal, and it was filtered


_SPOOF = r"""
import sys
from scapy.all import IP, IPv6, ICMP, ICMPv6PacketTooBig, ICMPv6DestUnreach, TCP, send, conf
conf.verb = 0
peer, ours, sport, dport, seq, v6 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1"
pkts = []
for s in (seq, (seq + 0x40000000) & 0xFFFFFFFF):
    if v6:
        inner = IPv6(src=ours, dst=peer) / TCP(sport=sport, dport=dport, seq=s, flags="A")
        pkts.append(IPv6(src=peer, dst=ours) / ICMPv6PacketTooBig(mtu=1280) / inner)
        pkts.append(IPv6(src=peer, dst=ours) / ICMPv6DestUnreach(code=4) / inner)
    else:
        inner = IP(src=ours, dst=peer, flags="DF") / TCP(sport=sport, dport=dport, seq=s, flags="A")
        pkts.append(IP(src=peer, dst=ours) / ICMP(type=3, code=4, nexthopmtu=576) / inner)
        pkts.append(IP(src=peer, dst=ours) / ICMP(type=3, code=1) / inner)
        pkts.append(IP(src=peer, dst=ours) / ICMP(type=3, code=3) / inner)
for _ in range(5):
    send(pkts)
print(len(pkts) * 5)
"""


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
async def test_spoofed_icmp_errors_are_ignored(lab, v6: bool) -> None:
    if v6:
        _wait_v6(lab)
    loop = asyncio.get_running_loop()
    peer = lab.addr6_b if v6 else lab.addr_b
    ours = lab.addr6_a if v6 else lab.addr_a
    up = blob(24 * MB, 5)
    srv = KernelServer(lab.ns_b, peer, b"done")
    try:
        async with Stack(lab.if_a, netns=lab.ns_a) as stack:
            reader, writer = await stack.open_connection(peer, srv.port)
            sport = writer.get_extra_info("sockname")[1]
            mss0 = writer.get_extra_info("tcp_info")["mss"]

            async def pump():
                for i in range(0, len(up), 256 * 1024):
                    writer.write(up[i:i + 256 * 1024])
                    await writer.drain()

            task = asyncio.ensure_future(pump())
            await asyncio.sleep(0.05)
            info = writer.get_extra_info("tcp_info")
            # a sequence number far outside SND.UNA..SND.NXT (what a blind attacker would guess)
            bogus = (info["snd_una"] + 0x80000000) & 0xFFFFFFFF
            res = await loop.run_in_executor(None, lambda: lab.run(
                lab.ns_b, [sys.executable, "-c", _SPOOF, peer, ours, str(sport), str(srv.port), str(bogus),
                           "1" if v6 else "0"], timeout=60))
            sent = int(res.stdout.strip())
            await asyncio.wait_for(task, 60)
            mss1 = writer.get_extra_info("tcp_info")["mss"]
            state = writer.get_extra_info("tcp_info")["state"]
            writer.write_eof()
            reply = await asyncio.wait_for(reader.read(), 30)
            writer.close()
            await writer.wait_closed()
            c = stack.counters
            print(f"spoof {'v6' if v6 else 'v4'}: sent={sent} OutOfWindowIcmps={c['OutOfWindowIcmps']} "
                  f"mss {mss0}->{mss1} TCPPMTUDUpdates={c['TCPPMTUDUpdates']} soft={c['TCPIcmpSoftErrors']}")
            assert reply == b"done" and state == "ESTABLISHED"
            assert c["OutOfWindowIcmps"] >= sent * 9 // 10       # (one may race the transfer's end)
            assert mss1 == mss0
            assert c["TCPPMTUDUpdates"] == 0 and c["TCPIcmpSoftErrors"] == 0
            assert not stack.core.pmtu.entries
        srv.thread.join(10)
        assert srv.result == (hashlib.sha256(up).hexdigest(), len(up))
    finally:
        srv.close()
