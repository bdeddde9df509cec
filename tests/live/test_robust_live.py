"""Live robustness tier (docs/robustness.md, "Live tier"): RFC 5961 blind attacks crafted with the
real 4-tuple against a connection to a kernel peer, crash safety (SIGKILL + sweep, a raising protocol
callback, start() failing half-way), two shared-mode Stacks on one interface, and faults (peer
vanishing, link flap).

Our Stack runs in ns_a (shared mode unless said otherwise); kernel peers run in ns_b.  Attack frames
are built with scapy in the test process and sent by a helper process in ns_b (its own interpreter,
like tests/live/test_listen_live.py's flood), which also sniffs if_b with an AF_PACKET socket and
reports every TCP segment our side sent during a short window after each frame.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from aiotcpstack import Stack
from aiotcpstack.host.netns import socket_in_netns
from live_peers import KernelAcceptor, echo_cb, kernel_can_bind, kernel_echo_client, nft_ruleset, wait_for

pytestmark = pytest.mark.timeout(120)

MASK = 0xFFFFFFFF

# --------------------------------------------------------------------------- helpers

# argv: iface, then stdin: JSON {"frames": [hex...], "src": ip, "sport": port, "window": secs}
# Sends each frame, sniffs `window` seconds, reports the TCP segments from (src, sport) seen
# (incoming on iface, i.e. sent by the stack in ns_a) as [[flags, seq, ack, len, dport], ...] per frame.
# ``src`` an IPv6 address: IPv6 segments (no extension headers), else IPv4.  "burst": true sends all
# frames back to back, then sniffs once (one list).
ATTACK_SCRIPT = r"""
import json, socket, sys, time, select
iface = sys.argv[1]
job = json.loads(sys.stdin.read())
v6 = ":" in job["src"]
src = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, job["src"]); sport = job["sport"]
rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
rx.bind((iface, 0))
tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
tx.bind((iface, 0))
def drain():
    while select.select([rx], [], [], 0)[0]:
        rx.recv(65536)
out = []
groups = [job["frames"]] if job.get("burst") else [[f] for f in job["frames"]]
for group in groups:
    drain()
    for fhex in group:
        tx.send(bytes.fromhex(fhex))
    seen = []
    end = time.monotonic() + job["window"]
    while (left := end - time.monotonic()) > 0:
        if not select.select([rx], [], [], left)[0]:
            break
        b, addr = rx.recvfrom(65536)
        if addr[2] == socket.PACKET_OUTGOING or len(b) < 54:
            continue
        if not v6 and b[12:14] == b"\x08\x00":
            ihl = (b[14] & 15) * 4
            if b[23] != 6 or b[26:30] != src:
                continue
            t = 14 + ihl
            plen = int.from_bytes(b[16:18], "big") - ihl
        elif v6 and b[12:14] == b"\x86\xdd" and len(b) >= 74:
            if b[20] != 6 or b[22:38] != src:
                continue
            t = 54
            plen = int.from_bytes(b[18:20], "big")
        else:
            continue
        if int.from_bytes(b[t:t + 2], "big") != sport and sport:
            continue
        doff = (b[t + 12] >> 4) * 4
        seen.append([b[t + 13], int.from_bytes(b[t + 4:t + 8], "big"), int.from_bytes(b[t + 8:t + 12], "big"),
                     plen - doff, int.from_bytes(b[t + 2:t + 4], "big"), int.from_bytes(b[t:t + 2], "big")])
    out.append(seen)
print(json.dumps(out), flush=True)
"""

F_FIN, F_SYN, F_RST, F_PSH, F_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def tcp_frame(lab, src: str, dst: str, sport: int, dport: int, flags: str, seq: int, ack: int = 0,
              payload: bytes = b"", window: int = 64240, options=None) -> bytes:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.packet import raw
    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    p = (Ether(dst=lab.mac_a.hex(":"), src=lab.mac_b.hex(":")) / ip
         / TCP(sport=sport, dport=dport, flags=flags, seq=seq & MASK, ack=ack & MASK, window=window,
               options=options or []))
    if payload:
        p = p / payload
    return raw(p)


def send_and_sniff(lab, frames: list[bytes], src: str, sport: int, window: float = 0.4,
                   burst: bool = False) -> list[list[list[int]]]:
    """Send ``frames`` on if_b from a helper process in ns_b; per frame, the TCP segments (src, sport)
    sent within ``window`` seconds: [flags, seq, ack, payload_len, dport, sport].  ``burst``: all
    frames back to back, then one window (a list with one list)."""
    job = json.dumps({"frames": [f.hex() for f in frames], "src": src, "sport": sport, "window": window,
                      "burst": burst})
    proc = lab.popen(lab.ns_b, [sys.executable, "-c", ATTACK_SCRIPT, lab.if_b], stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(job, timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out)


class KernelServer:
    """Kernel TCP server in ns_b for one connection: waits for ``go``, then sends ``payload`` and
    shuts down its write side while reading the client's upload to EOF; ``result`` = sha256 of it."""

    def __init__(self, lab, payload: bytes, addr: str | None = None) -> None:
        addr = addr or lab.addr_b
        self.ls = socket_in_netns(lab.ns_b, socket.AF_INET6 if ":" in addr else socket.AF_INET,
                                  socket.SOCK_STREAM)
        self.ls.bind((addr, 0))
        self.ls.listen(4)
        self.ls.settimeout(60)
        self.port = self.ls.getsockname()[1]
        self.payload = payload
        self.go = threading.Event()
        self.result: str | BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            c, _ = self.ls.accept()
            c.settimeout(60)
            with c:
                if not self.go.wait(60):
                    raise TimeoutError("go never set")
                h = hashlib.sha256()

                def reader() -> None:
                    while b := c.recv(65536):
                        h.update(b)
                t = threading.Thread(target=reader, daemon=True)
                t.start()
                c.sendall(self.payload)
                c.shutdown(socket.SHUT_WR)
                t.join(60)
                self.result = h.hexdigest()
        except BaseException as exc:  # noqa: BLE001
            self.result = exc

    def close(self) -> None:
        self.go.set()
        self.ls.close()
        self.thread.join(5)



def nft_tables(lab, ns: str) -> list[str]:
    return [ln.split()[-1] for ln in lab.run(ns, ["nft", "list", "tables"]).stdout.splitlines() if ln.strip()]


def conn_snap(stack: Stack, lport: int) -> dict:
    for snap in stack.connections():
        if snap["local"][1] == lport:
            return snap
    raise AssertionError(f"no connection with local port {lport}: {stack.connections()}")



# --------------------------------------------------------------------------- 1. RFC 5961 blind attacks

@pytest.mark.parametrize("family", ["v4", "v6"])
async def test_rfc5961_blind_attacks_against_live_connection(lab, family: str) -> None:
    rng = random.Random(5961)
    down = rng.randbytes(4 * 1024 * 1024)
    up = rng.randbytes(1024 * 1024)
    ours, theirs = (lab.addr_a, lab.addr_b) if family == "v4" else (lab.addr6_a, lab.addr6_b)
    srv = KernelServer(lab, down, theirs)
    loop = asyncio.get_running_loop()
    limit = 5                                  # challenge ACKs per second (tcp_challenge_ack_limit)
    try:
        async with Stack(lab.if_a, netns=lab.ns_a, challenge_ack_limit=limit) as stack:
            reader, writer = await stack.open_connection(theirs, srv.port)
            lport = writer.get_extra_info("sockname")[1]
            await asyncio.sleep(0.3)           # idle: the handshake's last ACK settled, nothing in flight
            s0 = conn_snap(stack, lport)
            assert s0["state"] == "ESTABLISHED" or str(s0["state"]).endswith("ESTABLISHED"), s0
            S, R, W = s0["snd_nxt"], s0["rcv_nxt"], s0["rcv_wnd"]
            assert s0["snd_una"] == S and W > 2
            c = stack.counters
            chal0 = c["TCPChallengeACK"]
            assert s0["local"][0] == ours and s0["remote"][0] == theirs, s0
            f = lambda flags, seq, ack=0, payload=b"": tcp_frame(  # noqa: E731
                lab, theirs, ours, srv.port, lport, flags, seq, ack, payload)
            evil = b"EVIL" * 64
            frames = [
                f("R", R + W + 0x10000000),          # (a) RST out of window: silently ignored
                f("R", R - 0x10000000),              # (a') RST before the window: ignored
                f("R", R + 1),                       # (b) RST in window, not RCV.NXT: challenge ACK
                f("RA", R + W // 2, S),              # (b') RST|ACK in window: challenge ACK
                f("S", R + 7),                       # (c) SYN in ESTABLISHED: challenge ACK
                f("S", R - 0x40000000),              # (c') SYN out of window: challenge ACK as well
                f("PA", R, S + 0x20000000, evil),    # (d) data, ACK far beyond SND.NXT: dropped
                f("PA", R, S - 0x40000000, evil),    # (d') data, ACK far before SND.UNA: dropped
            ]
            seen = await loop.run_in_executor(None, send_and_sniff, lab, frames, ours, lport)
            chal = c["TCPChallengeACK"] - chal0
            s1 = conn_snap(stack, lport)
            print(f"\nRFC 5961 [{family}]: per frame ours={seen} TCPChallengeACK+={chal} snap after: "
                  f"snd_nxt={s1['snd_nxt']} rcv_nxt={s1['rcv_nxt']} state={s1['state']}")
            # (a) nothing sent for out-of-window RSTs
            assert seen[0] == [] and seen[1] == []
            # (b), (c): exactly one challenge ACK each: pure ACK, SEQ=SND.NXT, ACK=RCV.NXT
            for i in (2, 3, 4, 5):
                assert len(seen[i]) == 1, (i, seen[i])
                flags, seq, ack, ln = seen[i][0][:4]
                assert flags == F_ACK and seq == S and ack == R and ln == 0, (i, seen[i])
            # (d): whatever we answer (an ACK is allowed), never data, never RST, and nothing taken
            for i in (6, 7):
                for flags, seq, ack, ln, *_ in seen[i]:
                    assert not flags & (F_RST | F_SYN | F_FIN) and ln == 0 and ack == R, (i, seen[i])
            assert chal >= 4
            assert s1["rcv_nxt"] == R and s1["snd_nxt"] == S and s1["state"] == s0["state"]
            # (e) rate limit (RFC 5961 section 7): 3 x limit in-window RSTs back to back, in a fresh
            # one-second window, draw exactly ``limit`` challenge ACKs and nothing else
            await asyncio.sleep(1.1)
            chal1 = c["TCPChallengeACK"]
            burst = [f("R", R + 1 + i) for i in range(3 * limit)]
            (bseen,) = await loop.run_in_executor(None, lambda: send_and_sniff(lab, burst, ours, lport, 0.5,
                                                                                burst=True))
            print(f"burst of {len(burst)} in-window RSTs: ours={bseen} TCPChallengeACK+="
                  f"{c['TCPChallengeACK'] - chal1} (limit {limit}/s)")
            assert len(bseen) == limit and all(x[:4] == [F_ACK, S, R, 0] for x in bseen), bseen
            assert c["TCPChallengeACK"] - chal1 == limit
            assert conn_snap(stack, lport)["state"] == s0["state"]
            # the real transfer after the attacks: byte-exact both ways
            t0 = time.monotonic()
            srv.go.set()

            async def upload() -> None:
                writer.write(up)
                await writer.drain()
                writer.write_eof()
            up_task = asyncio.ensure_future(upload())
            got = await asyncio.wait_for(reader.read(-1), 60)
            await asyncio.wait_for(up_task, 30)
            await asyncio.wait_for(loop.run_in_executor(None, srv.thread.join, 30), 40)
            assert len(got) == len(down) and hashlib.sha256(got).digest() == hashlib.sha256(down).digest()
            assert srv.result == hashlib.sha256(up).hexdigest(), srv.result
            print(f"transfer after attacks: {len(down)} B down + {len(up)} B up byte-exact in "
                  f"{time.monotonic() - t0:.2f}s")
            writer.close()
    finally:
        srv.close()


# --------------------------------------------------------------------------- 2. crash safety

CHILD_SCRIPT = r"""
import asyncio, os, sys
from aiotcpstack import Stack
async def main():
    stack = Stack(sys.argv[1], netns=sys.argv[2])
    await stack.start()
    server = await stack.create_server(asyncio.Protocol, None, 0)
    print(os.getpid(), server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


async def test_sigkill_then_next_stack_sweeps_table_and_port_is_free(lab) -> None:
    loop = asyncio.get_running_loop()
    before = nft_ruleset(lab, lab.ns_a)
    proc = subprocess.Popen([sys.executable, "-c", CHILD_SCRIPT, lab.if_a, lab.ns_a],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), 30)
        assert line, proc.stderr.read() if proc.poll() is not None else "no output"
        pid, port = map(int, line.split())
        assert pid == proc.pid
        table = f"aiotcpstack_{pid}"
        assert table in nft_tables(lab, lab.ns_a)
        assert not kernel_can_bind(lab.ns_a, lab.addr_a, port)       # reserved by the child
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    # SIGKILL runs no handler: the table stays behind (the reservation socket dies with the process)
    assert table in nft_tables(lab, lab.ns_a)
    async with Stack(lab.if_a, netns=lab.ns_a) as stack:
        tables = nft_tables(lab, lab.ns_a)
        assert table not in tables                       # swept by the new stack's RstGuard
        assert f"aiotcpstack_{os.getpid()}" in tables
        # the new stack can use the dead child's port
        server = await stack.create_server(asyncio.Protocol, None, port)
        assert server.sockets[0].getsockname()[1] == port
        server.close()
    after = nft_ruleset(lab, lab.ns_a)
    assert after == before, f"--- before\n{before}\n--- after\n{after}"
    assert kernel_can_bind(lab.ns_a, lab.addr_a, port)


class Boom(Exception):
    pass


async def test_raising_data_received_force_closes_only_that_connection(lab) -> None:
    loop = asyncio.get_running_loop()
    contexts: list[dict] = []
    old_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    lost: list[BaseException | None] = []

    class Raising(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            raise Boom("protocol bug")

        def connection_lost(self, exc) -> None:
            lost.append(exc)

    try:
        async with Stack(lab.if_a, netns=lab.ns_a) as stack:
            bad = await stack.create_server(Raising, None, 0)
            bad_port = bad.sockets[0].getsockname()[1]
            good = await stack.start_server(echo_cb, None, 0)
            good_port = good.sockets[0].getsockname()[1]

            def bad_client() -> str:
                s = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
                s.settimeout(10)
                try:
                    s.connect((lab.addr_a, bad_port))
                    s.sendall(b"x" * 1000)
                    try:
                        b = s.recv(100)
                        return "eof" if not b else f"data {b!r}"
                    except ConnectionResetError:
                        return "reset"
                finally:
                    s.close()
            res = await loop.run_in_executor(None, bad_client)
            assert res == "reset", res                       # aborted: RST, like asyncio's abort()
            assert await wait_for(lambda: bool(contexts) and bool(lost), 5)
            ctx = contexts[0]
            assert isinstance(ctx.get("exception"), Boom) and "data_received" in ctx["message"], ctx
            assert isinstance(lost[0], Boom), lost
            assert await wait_for(lambda: all(s["local"][1] != bad_port or s["state"] in ("CLOSED",)
                                              for s in stack.connections()), 5), stack.connections()
            # the stack keeps serving: another connection, and the same listener again
            data = random.Random(1).randbytes(200_000)
            got = await loop.run_in_executor(None, kernel_echo_client, lab, lab.addr_a, good_port, data, 30.0)
            assert got == data
            assert await loop.run_in_executor(None, bad_client) == "reset"
            assert stack.counters["StackErrors"] == 0 if "StackErrors" in stack.counters else True
            bad.close()
            good.close()
    finally:
        loop.set_exception_handler(old_handler)


async def test_start_failing_half_way_leaves_nothing_behind(lab, tmp_path) -> None:
    from aiotcpstack.link.afpacket import AfPacketLink
    before = nft_ruleset(lab, lab.ns_a)
    mine = f"aiotcpstack_{os.getpid()}"

    # (1) a non-existent interface: a clear error, nothing created
    stack = Stack("nosuchif0", netns=lab.ns_a)
    with pytest.raises(OSError) as ei:
        await stack.start()
    assert "nosuchif0" in str(ei.value)
    assert nft_ruleset(lab, lab.ns_a) == before

    # (2) the very last step of _start_sync (the link's reader) fails: guard, link torn down
    class FailingLink(AfPacketLink):
        def open_reader(self, on_frames):
            raise OSError(5, "injected open_reader failure")

    link = FailingLink(lab.if_a, netns=lab.ns_a, vnet=True, local_ipv4=[])
    stack = Stack(lab.if_a, netns=lab.ns_a, link=link)
    with pytest.raises(OSError, match="injected"):
        await stack.start()
    assert not any(t.startswith(mine) for t in nft_tables(lab, lab.ns_a))
    assert nft_ruleset(lab, lab.ns_a) == before

    # (3) after _start_sync: the control socket cannot be created
    (tmp_path / "afile").write_text("not a directory")
    stack = Stack(lab.if_a, netns=lab.ns_a, control=str(tmp_path / "afile" / "x.sock"))
    with pytest.raises(OSError):
        await stack.start()
    assert nft_ruleset(lab, lab.ns_a) == before
    assert stack._reservations == {}

    # and a working stack starts and reserves normally afterwards
    async with Stack(lab.if_a, netns=lab.ns_a) as ok:
        server = await ok.create_server(asyncio.Protocol, None, 0)
        port = server.sockets[0].getsockname()[1]
        assert not kernel_can_bind(lab.ns_a, lab.addr_a, port)
        server.close()
    assert kernel_can_bind(lab.ns_a, lab.addr_a, port)
    assert nft_ruleset(lab, lab.ns_a) == before


# --------------------------------------------------------------------------- 3. two stacks, one interface

async def test_two_shared_stacks_on_one_interface(lab) -> None:
    loop = asyncio.get_running_loop()
    before = nft_ruleset(lab, lab.ns_a)
    # a kernel server in ns_b both stacks connect to (outgoing: ephemeral ports)
    ka = KernelAcceptor(lab, 4)
    kport = ka.port
    try:
        async with Stack(lab.if_a, netns=lab.ns_a) as s1, Stack(lab.if_a, netns=lab.ns_a) as s2:
            mine = [t for t in nft_tables(lab, lab.ns_a) if t.startswith(f"aiotcpstack_{os.getpid()}")]
            assert len(mine) == 2, mine                     # one guard table each
            srv1 = await s1.start_server(echo_cb, None, 0)
            srv2 = await s2.start_server(echo_cb, None, 0)
            p1 = srv1.sockets[0].getsockname()[1]
            p2 = srv2.sockets[0].getsockname()[1]
            assert p1 != p2
            # a listening port of one stack cannot be taken by the other (kernel reservation)
            with pytest.raises(OSError):
                await s2.create_server(asyncio.Protocol, None, p1)
            rng = random.Random(2)
            jobs = [(p1, rng.randbytes(rng.randrange(1000, 100_000))) for _ in range(3)] + \
                   [(p2, rng.randbytes(rng.randrange(1000, 100_000))) for _ in range(5)]
            got = await asyncio.wait_for(asyncio.gather(*[
                loop.run_in_executor(None, kernel_echo_client, lab, lab.addr_a, p, d, 30.0) for p, d in jobs]), 60)
            assert got == [d for _, d in jobs]
            assert s1.counters["PassiveOpens"] == 3 and s2.counters["PassiveOpens"] == 5
            for st in (s1, s2):
                assert st.counters["OutRsts"] == 0, st.counters["OutRsts"]
            # outgoing: 2 connections per stack, all local ports distinct and reserved in the kernel
            ka.start()
            writers = []
            for st in (s1, s1, s2, s2):
                _, w = await st.open_connection(lab.addr_b, kport)
                writers.append(w)
            lports = [w.get_extra_info("sockname")[1] for w in writers]
            assert len(set(lports)) == 4 and not {p1, p2} & set(lports), lports
            for p in lports + [p1, p2]:
                assert not kernel_can_bind(lab.ns_a, lab.addr_a, p), p
            own1 = {sn["local"][1] for sn in s1.connections()}
            own2 = {sn["local"][1] for sn in s2.connections()}
            assert set(lports[:2]) <= own1 and set(lports[2:]) <= own2
            assert not set(lports[2:]) & own1 and not set(lports[:2]) & own2
            # a SYN to a port neither stack owns: exactly one answer, the kernel's RST (nothing listens);
            # a SYN to s1's listener: exactly one SYN-ACK (s1), no RST from s2 or the kernel
            free = kernel_free_port(lab)
            frames = [tcp_frame(lab, lab.addr_b, lab.addr_a, 40001, free, "S", 1000),
                      tcp_frame(lab, lab.addr_b, lab.addr_a, 40002, p1, "S", 2000)]
            seen = await loop.run_in_executor(None, send_and_sniff, lab, frames, lab.addr_a, 0, 0.4)
            to_free = [x for x in seen[0] if x[4] == 40001]
            to_p1 = [x for x in seen[1] if x[4] == 40002]
            print(f"\ntwo stacks: PassiveOpens {s1.counters['PassiveOpens']}/{s2.counters['PassiveOpens']}, "
                  f"outgoing lports {lports}, SYN to free port {free} -> {to_free}, SYN to p1 -> {to_p1}")
            assert len(to_free) == 1 and to_free[0][0] == F_RST | F_ACK and to_free[0][2] == 1001, to_free
            assert len(to_p1) == 1 and to_p1[0][0] == F_SYN | F_ACK and to_p1[0][2] == 2001, to_p1
            for st in (s1, s2):
                assert st.counters["OutRsts"] == 0
            for w in writers:
                w.close()
            srv1.close()
            srv2.close()
            await asyncio.wait_for(loop.run_in_executor(None, ka.thread.join, 10), 15)
    finally:
        ka.close()
    assert nft_ruleset(lab, lab.ns_a) == before
    for p in lports + [p1, p2]:
        assert kernel_can_bind(lab.ns_a, lab.addr_a, p), p


def kernel_free_port(lab) -> int:
    s = socket_in_netns(lab.ns_a, socket.AF_INET, socket.SOCK_STREAM)
    s.bind((lab.addr_a, 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------- 4. faults

class Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost: asyncio.Future = asyncio.get_running_loop().create_future()
        self.received = 0

    def data_received(self, data: bytes) -> None:
        self.received += len(data)

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def test_peer_vanishing_mid_transfer_times_out(lab) -> None:
    loop = asyncio.get_running_loop()
    ks = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
    ks.bind((lab.addr_b, 0))
    ks.listen(1)
    ks.settimeout(10)
    kport = ks.getsockname()[1]
    conns: list[socket.socket] = []
    stop = threading.Event()

    def slow_reader() -> None:          # reads ~2 MB/s so the transfer is still running when we cut
        c, _ = ks.accept()
        conns.append(c)
        c.settimeout(0.2)
        while not stop.is_set():
            try:
                if not c.recv(65536):
                    return
            except (socket.timeout, OSError):
                pass
            time.sleep(0.03)
    t = threading.Thread(target=slow_reader, daemon=True)
    t.start()
    try:
        async with Stack(lab.if_a, netns=lab.ns_a, retries2=3, rto_max=1.0) as stack:
            transport, proto = await stack.create_connection(Sink, lab.addr_b, kport)
            data = os.urandom(64 * 1024)
            for _ in range(20):
                transport.write(data)
                await asyncio.sleep(0.02)
            # the peer vanishes: everything on its interface dropped (both directions)
            lab.nft(lab.ns_b, f"""table inet vanish {{
                chain in {{ type filter hook input priority -400; policy accept; iifname "{lab.if_b}" drop; }}
                chain out {{ type filter hook output priority -400; policy accept; oifname "{lab.if_b}" drop; }}
            }}""")
            t0 = loop.time()
            for _ in range(20):
                transport.write(data)
            exc = await asyncio.wait_for(proto.lost, 30)
            took = loop.time() - t0
            print(f"\npeer vanished: connection_lost({exc!r}) after {took:.2f}s "
                  f"(retries2=3, rto_max=1.0); TCPTimeouts={stack.counters['TCPTimeouts']}")
            assert isinstance(exc, TimeoutError), exc
            assert took < 15
            assert stack.connections() == [] or all(s["state"] == "CLOSED" for s in stack.connections())
    finally:
        stop.set()
        t.join(5)
        ks.close()
        for c in conns:
            c.close()


async def test_link_flap_during_idle_connection(lab) -> None:
    loop = asyncio.get_running_loop()
    async with Stack(lab.if_a, netns=lab.ns_a) as stack:
        srv = await stack.start_server(echo_cb, None, 0)
        port = srv.sockets[0].getsockname()[1]
        # an idle connection: kernel client in ns_b, our echo server
        s = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(20)
        try:
            await loop.run_in_executor(None, s.connect, (lab.addr_a, port))
            await loop.run_in_executor(None, s.sendall, b"before")
            assert await loop.run_in_executor(None, s.recv, 100) == b"before"

            # and an outgoing connection of ours to a kernel echo server in ns_b
            ks = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
            ks.bind((lab.addr_b, 0))
            ks.listen(1)
            ks.settimeout(20)

            def kernel_echo_once() -> None:
                c, _ = ks.accept()
                with c:
                    c.settimeout(20)
                    while b := c.recv(65536):
                        c.sendall(b)
            echo_t = loop.run_in_executor(None, kernel_echo_once)
            r2, w2 = await stack.open_connection(lab.addr_b, ks.getsockname()[1])

            def set_state(state: str) -> None:
                with lab.ipr(lab.ns_a) as ipr:
                    ipr.link("set", index=ipr.link_lookup(ifname=lab.if_a)[0], state=state)
            await loop.run_in_executor(None, set_state, "down")
            # we send while the interface is down (AF_PACKET send fails: ENETDOWN): must not break
            during = random.Random(11).randbytes(300_000)
            w2.write(during)
            await asyncio.sleep(0.5)
            await loop.run_in_executor(None, set_state, "up")
            echoed = await asyncio.wait_for(r2.readexactly(len(during)), 30)
            assert echoed == during
            w2.write_eof()
            await asyncio.wait_for(echo_t, 10)
            ks.close()
            w2.close()
            # still works after: both directions, a larger payload
            data = random.Random(9).randbytes(500_000)

            def exchange() -> bytes:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                got = bytearray()
                while b := s.recv(65536):
                    got += b
                return bytes(got)
            got = await asyncio.wait_for(loop.run_in_executor(None, exchange), 30)
            assert got == data
            # and a new connection works too
            data2 = random.Random(10).randbytes(100_000)
            assert await loop.run_in_executor(None, kernel_echo_client, lab, lab.addr_a, port, data2, 30.0) == data2
            print(f"\nlink flap: LinkInDrops={stack.counters['LinkInDrops']} "
                  f"RetransSegs={stack.counters['RetransSegs']} StackErrors={stack.counters['StackErrors']}")
        finally:
            s.close()
        srv.close()


async def test_sigterm_removes_table_and_reservation(lab) -> None:
    loop = asyncio.get_running_loop()
    before = nft_ruleset(lab, lab.ns_a)
    proc = subprocess.Popen([sys.executable, "-c", CHILD_SCRIPT, lab.if_a, lab.ns_a],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), 30)
        assert line, proc.stderr.read() if proc.poll() is not None else "no output"
        pid, port = map(int, line.split())
        assert f"aiotcpstack_{pid}" in nft_tables(lab, lab.ns_a)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(loop.run_in_executor(None, proc.wait, 10), 15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGTERM          # still "killed by SIGTERM"
    # the guard's signal hook removed the table; no other Stack needed
    assert nft_ruleset(lab, lab.ns_a) == before
    assert kernel_can_bind(lab.ns_a, lab.addr_a, port)
