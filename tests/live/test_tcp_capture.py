"""Live: a LOSSLESS multi-MB transfer in both directions (our client -> kernel server and kernel client
-> our server), captured with tcpdump on the peer's veth in ns_b, shows NO retransmission from either
side: no data segment's sequence range is sent twice (per direction, a segment carrying payload that
starts below the highest end already seen is a retransmission; GSO/TSO super-frames on the veth are
just larger ranges and need no special case), our RetransSegs stays 0 and the kernel's RetransSegs in
ns_b (/proc/net/snmp, what ``nstat`` reads) does not move.  Also catches spurious tail loss probes.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import tempfile

import pytest

from aiotcpstack import Stack
from aiotcpstack.host import netns as _ns
from test_tcp_live import MB, blob, our_client, start_our_server

pytestmark = pytest.mark.timeout(120)


# The kernel peer runs in its own process: a peer thread in this process would compete with our
# stack for the GIL (switch interval 5 ms), late ACKs from us would then fire the kernel's tail loss
# probe (PTO = 2*SRTT + 2 jiffies on a sub-millisecond veth) and the capture would show the kernel's
# (DSACKed, spurious) probes -- an artefact of the test, not of either TCP.
PEER = r"""
import hashlib, socket, sys
role, addr, port, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
out = bytearray(); h = hashlib.sha256(b"%d" % seed).digest()
while len(out) < n:
    h = hashlib.sha256(h).digest(); out += h * 64
data = bytes(out[:n])
def drain(c):
    h = hashlib.sha256(); k = 0
    while True:
        d = c.recv(1 << 20)
        if not d:
            return h.hexdigest(), k
        h.update(d); k += len(d)
if role == "server":
    ls = socket.socket(); ls.bind((addr, 0)); ls.listen(4)
    print(ls.getsockname()[1], flush=True)
    c, _ = ls.accept()
    got = drain(c); c.sendall(data); c.shutdown(socket.SHUT_WR); drain(c); c.close()
else:
    c = socket.create_connection((addr, port), timeout=30)
    c.sendall(data); c.shutdown(socket.SHUT_WR); got = drain(c); c.close()
print(got[0], got[1], flush=True)
"""


def _peer(lab, role: str, addr: str, port: int, n: int, seed: int) -> subprocess.Popen:
    import sys
    return lab.popen(lab.ns_b, [sys.executable, "-c", PEER, role, addr, str(port), str(n), str(seed)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kernel_retrans(lab) -> int:
    out = lab.run(lab.ns_b, ["cat", "/proc/net/snmp"]).stdout.splitlines()
    tcp = [ln.split()[1:] for ln in out if ln.startswith("Tcp:")]
    return int(dict(zip(tcp[0], tcp[1]))["RetransSegs"])


def _kernel_netstat(lab) -> dict:
    out = lab.run(lab.ns_b, ["nstat", "-az", "TcpExtTCPLossProbes", "TcpRetransSegs", "TcpExtTCPTimeouts",
                             "TcpExtTCPSpuriousRTOs", "TcpExtTCPDSACKRecv"]).stdout
    return {ln.split()[0]: int(ln.split()[1]) for ln in out.splitlines()[1:] if ln.strip()}


def retransmissions(pcap_path: str) -> tuple[dict, int]:
    """Per direction (src, sport, dst, dport): the segments whose payload starts below the highest
    sequence end already seen in that direction.  Returns (retransmissions, data segments seen)."""
    from scapy.layers.inet import IP, TCP
    from scapy.utils import RawPcapReader
    from scapy.layers.l2 import Ether
    highest: dict = {}
    found: dict = {}
    seen = 0
    for raw, _meta in RawPcapReader(pcap_path):
        pkt = Ether(raw)
        if IP not in pkt or TCP not in pkt:
            continue
        ip, tcp = pkt[IP], pkt[TCP]
        plen = ip.len - ip.ihl * 4 - tcp.dataofs * 4          # from headers: the capture is truncated
        key = (ip.src, tcp.sport, ip.dst, tcp.dport)
        if tcp.flags & 0x02:                                    # SYN: the sequence space starts here
            highest[key] = (tcp.seq + 1) & 0xFFFFFFFF
            continue
        if plen <= 0 or key not in highest:
            continue
        seen += 1
        hi = highest[key]
        end = (tcp.seq + plen) & 0xFFFFFFFF
        if 0 < ((hi - tcp.seq) & 0xFFFFFFFF) < 0x80000000:     # seq < highest end already seen
            found.setdefault(key, []).append((tcp.seq, plen))
        if 0 < ((end - hi) & 0xFFFFFFFF) < 0x80000000:         # end > highest
            highest[key] = end
    return found, seen


@pytest.mark.parametrize("mode", ["shared", "dedicated"])
async def test_lossless_transfer_has_no_retransmissions(lab, mode: str) -> None:
    loop = asyncio.get_running_loop()
    up, down = blob(4 * MB, 41), blob(4 * MB, 42)
    address = None if mode == "shared" else f"{lab.spare_addr}/24"
    ours = lab.addr_a if mode == "shared" else lab.spare_addr
    # The kernel's tail loss probe fires after PTO = 2*SRTT + 2 jiffies: on a veth with an SRTT well
    # under a millisecond that is shorter than the scheduling latency of a user-space stack in Python
    # (a batch being processed, the application hashing 1 MiB, GC): the kernel then sends spurious
    # probes (TCPLossProbes, each answered by our DSACK) in a lossless lab.  Those are timing probes,
    # not loss repair; with them off (tcp_early_retrans=0 in ns_b only) any retransmission the
    # capture shows is a real one (loss, RTO, or a protocol error on either side).
    _ns.write_sysctl(lab.ns_b, "net/ipv4/tcp_early_retrans", 0)
    fd, path = tempfile.mkstemp(suffix=".pcap")
    os.close(fd)
    dump = lab.popen(lab.ns_b, ["tcpdump", "-i", lab.if_b, "-n", "-s", "128", "-U", "--immediate-mode", "-Z", "root", "-B", "16384",
                                "-w", path, "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                     text=True)
    try:
        line = dump.stderr.readline()
        assert "listening on" in line, line
        k0 = _kernel_retrans(lab)
        srv = _peer(lab, "server", lab.addr_b, 0, len(down), 42)
        try:
            srv_port = int(await loop.run_in_executor(None, srv.stdout.readline))
            async with Stack(lab.if_a, netns=lab.ns_a, address=address) as stack:
                digest, n, _ = await asyncio.wait_for(our_client(stack, lab.addr_b, srv_port, up), 60)
                assert (digest, n) == (hashlib.sha256(down).hexdigest(), len(down))
                out, _ = await loop.run_in_executor(None, srv.communicate, None, 20)
                assert out.split() == [hashlib.sha256(up).hexdigest(), str(len(up))]
                server, results, done = await start_our_server(stack, None, down)
                port = server.sockets[0].getsockname()[1]
                cli = _peer(lab, "client", ours, port, len(up), 41)
                out, err = await asyncio.wait_for(loop.run_in_executor(None, cli.communicate, None, 60), 70)
                await asyncio.wait_for(done, 10)
                assert results == [(hashlib.sha256(up).hexdigest(), len(up))]
                assert out.split() == [hashlib.sha256(down).hexdigest(), str(len(down))], err
                server.close()
                await server.wait_closed()
                counters = dict(stack.counters)
        finally:
            if srv.poll() is None:
                srv.kill()
                srv.wait()
        await asyncio.sleep(0.3)
        k1 = _kernel_retrans(lab)
    finally:
        dump.terminate()
        _, err = dump.communicate(timeout=10)
    try:
        assert "\n0 packets dropped by kernel" in "\n" + err, err
        found, seen = retransmissions(path)
    finally:
        os.unlink(path)
    assert seen > 200                                     # the capture saw the transfers (GRO super-frames)
    assert found == {}, ({k: v[:5] for k, v in found.items()}, _kernel_netstat(lab),
                         {k: v for k, v in counters.items() if v and ("Drop" in k or "Prune" in k or "Retrans" in k)})
    assert counters["RetransSegs"] == 0, {k: counters[k] for k in ("RetransSegs", "TCPLossProbes", "TCPTimeouts")}
    assert counters["TCPLossProbes"] == 0, {k: v for k, v in counters.items() if v and k.startswith("TCP")}
    assert k1 == k0, (f"kernel RetransSegs moved {k0} -> {k1}", _kernel_netstat(lab))
