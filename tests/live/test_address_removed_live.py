"""Live: the interface address removed while the stack runs (robustness issue, "the address
removed -- clear errors, nothing hangs"; docs/robustness.md).

Shared mode follows the kernel's addresses through a netlink monitor (aiotcpstack/host/
addr_monitor.py): when an address the stack uses is deleted in ns_a (pyroute2, from a worker
thread; `ip -batch` for the bulk changes), every connection on it ends at once with
``OSError(EADDRNOTAVAIL)`` -- a deliberate departure from Linux, which keeps such sockets until
they time out -- its kernel port reservation and nft set element go as on a normal close, new
connections from it fail clearly, and when the address comes back new connections work again.
Dedicated mode has ``Stack.remove_address`` / ``add_address`` for the same path.

Our Stack runs in ns_a, kernel peers in ns_b (threads switched into ns_b).
"""
from __future__ import annotations

import asyncio
import errno
import socket
import threading
import time

import pytest

from aiotcpstack import Stack
from aiotcpstack.host.lab import IFA_F_NODAD
from aiotcpstack.host.netns import socket_in_netns
from live_peers import kernel_can_bind, nft_ruleset, wait_for

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------- helpers

def fam_of(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def set_addr(lab, op: str, addr: str, plen: int) -> None:
    """``ip addr add|del`` on if_a in ns_a (pyroute2; call from a worker thread, never the loop's)."""
    kw = {"flags": IFA_F_NODAD} if ":" in addr and op == "add" else {}
    with lab.ipr(lab.ns_a) as ipr:
        ipr.addr(op, index=lab.ifindex_a, address=addr, prefixlen=plen, **kw)


def kernel_addrs(lab) -> set[str]:
    with lab.ipr(lab.ns_a) as ipr:
        return {a.get("IFA_ADDRESS") for a in ipr.get_addr(index=lab.ifindex_a)}


async def off_loop(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


class KernelEcho:
    """Kernel echo server in ns_b: one thread per accepted connection."""

    def __init__(self, lab, addr: str) -> None:
        self.ls = socket_in_netns(lab.ns_b, fam_of(addr), socket.SOCK_STREAM)
        self.ls.bind((addr, 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    @staticmethod
    def _echo(c: socket.socket) -> None:
        try:
            while b := c.recv(65536):
                c.sendall(b)
        except OSError:
            pass

    def close(self) -> None:
        self.ls.close()
        for c in self.conns:
            c.close()


class KernelClient:
    """A kernel client in ns_b that stays connected: ``echo(b)`` sends and reads the echo back."""

    def __init__(self, lab, addr: str, port: int, timeout: float = 5.0) -> None:
        self.s = socket_in_netns(lab.ns_b, fam_of(addr), socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        try:
            self.s.connect((addr, port))
        except BaseException:
            self.s.close()
            raise

    def echo(self, data: bytes) -> bytes:
        self.s.sendall(data)
        got = b""
        while len(got) < len(data):
            b = self.s.recv(65536)
            if not b:
                break
            got += b
        return got

    def close(self) -> None:
        self.s.close()


class Recorder(asyncio.Protocol):
    """Our server side: echoes, records connection_lost's exception (``lost``)."""
    instances: list["Recorder"] = []

    def __init__(self) -> None:
        self.lost = asyncio.get_running_loop().create_future()
        self.local = ""
        Recorder.instances.append(self)

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.local = transport.get_extra_info("sockname")[0]

    @classmethod
    def on(cls, addr: str) -> "Recorder":
        (r,) = [r for r in cls.instances if r.local == addr]
        return r

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc) -> None:
        self.lost.set_result(exc)


class Heartbeat:
    """Ticks every 10 ms on the loop; ``max_gap``: the longest the loop was blocked."""

    def __init__(self) -> None:
        self.max_gap = 0.0
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            now = loop.time()
            self.max_gap = max(self.max_gap, now - last)
            last = now

    async def stop(self) -> float:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        return self.max_gap




def run_on(kind: str, coro_fn, *args) -> None:
    if kind == "uvloop":
        import uvloop
        factory = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(coro_fn(*args))


# --------------------------------------------------------------------------- (a) established connections

async def established_connections_abort(lab, family: str) -> None:
    loop = asyncio.get_running_loop()
    if family == "v4":
        mine, peer, plen, other, other_peer = lab.addr_a, lab.addr_b, 24, lab.addr6_a, lab.addr6_b
    else:
        mine, peer, plen, other, other_peer = lab.addr6_a, lab.addr6_b, 64, lab.addr_a, lab.addr_b
    before = await off_loop(nft_ruleset, lab, lab.ns_a)
    ke = await off_loop(KernelEcho, lab, peer)
    ke_other = await off_loop(KernelEcho, lab, other_peer)
    clients: list[KernelClient] = []
    Recorder.instances = []
    try:
        stack = Stack(lab.if_a, netns=lab.ns_a)
        await stack.start()
        try:
            server = await stack.create_server(Recorder, None, 0)
            sport = server.sockets[0].getsockname()[1]
            # our client -> kernel echo server, over the address that will go
            reader, writer = await stack.open_connection(peer, ke.port)
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
            lport = writer.get_extra_info("sockname")[1]
            # kernel client -> our server, over the same address; and one over the other family
            victim = await off_loop(KernelClient, lab, mine, sport)
            survivor = await off_loop(KernelClient, lab, other, sport)
            clients += [victim, survivor]
            assert await off_loop(victim.echo, b"one") == b"one"
            assert await off_loop(survivor.echo, b"two") == b"two"
            assert await wait_for(lambda: len(Recorder.instances) == 2, 2)
            srv_lost = Recorder.on(mine).lost
            assert not Recorder.on(other).lost.done()
            assert lport in stack._reservations and lport in stack._guard.list_kernel_ports()
            assert not kernel_can_bind(lab.ns_a, "::" if fam_of(mine) == socket.AF_INET6 else "0.0.0.0", lport)

            beat = Heartbeat()
            t0 = loop.time()
            await off_loop(set_addr, lab, "del", mine, plen)
            # (a) both connections on it end at once with a clear error
            with pytest.raises(OSError) as ei:
                await asyncio.wait_for(reader.read(), 2)
            took_client = loop.time() - t0
            srv_exc = await asyncio.wait_for(srv_lost, 2)
            took_server = loop.time() - t0
            max_gap = await beat.stop()
            print(f"\n[{family}] address {mine} removed: our client's read() raised {ei.value!r} after "
                  f"{took_client * 1000:.0f} ms, our server side connection_lost({srv_exc!r}) after "
                  f"{took_server * 1000:.0f} ms; loop max gap {max_gap * 1000:.0f} ms; "
                  f"TCPAbortOnAddrRemoved={stack.counters['TCPAbortOnAddrRemoved']}")
            for exc in (ei.value, srv_exc):
                assert isinstance(exc, OSError) and exc.errno == errno.EADDRNOTAVAIL, exc
                assert mine in str(exc) and lab.if_a in str(exc) and "removed" in str(exc), exc
            assert took_client < 2 and took_server < 2
            assert max_gap < 0.25, max_gap                       # the loop was never blocked
            assert stack.counters["TCPAbortOnAddrRemoved"] == 2
            assert mine not in stack.addresses and other in stack.addresses
            assert not [s for s in stack.connections() if s["local"][0] == mine], stack.connections()
            # the aborted client's port reservation and nft element went as on a normal close; the
            # listener's stay
            assert lport not in stack._reservations
            kports = await off_loop(stack._guard.list_kernel_ports)
            assert lport not in kports and sport in kports, (lport, sport, kports)
            assert await off_loop(kernel_can_bind, lab.ns_a, "::" if fam_of(mine) == socket.AF_INET6 else "0.0.0.0", lport)
            # the wildcard listener keeps serving the remaining addresses
            assert await off_loop(survivor.echo, b"still here") == b"still here"
            fresh = await off_loop(KernelClient, lab, other, sport)
            clients.append(fresh)
            assert await off_loop(fresh.echo, b"new") == b"new"
            # a write on the aborted transport fails like on a closed socket, nothing hangs
            assert writer.transport.is_closing()
            writer.close()
            # an orderly connection over the other family still works outward too
            r2, w2 = await stack.open_connection(other_peer, ke_other.port)
            w2.write(b"pong")
            assert await asyncio.wait_for(r2.readexactly(4), 5) == b"pong"
            w2.close()
            server.close()
        finally:
            t1 = time.monotonic()
            await asyncio.wait_for(stack.close(), 10)
            took_close = time.monotonic() - t1
        print(f"[{family}] stack.close() took {took_close * 1000:.0f} ms")
        assert took_close < 1.5
    finally:
        for c in clients:
            c.close()
        ke.close()
        ke_other.close()
    assert await off_loop(nft_ruleset, lab, lab.ns_a) == before
    assert await off_loop(kernel_can_bind, lab.ns_a, "::" if fam_of(mine) == socket.AF_INET6 else "0.0.0.0", sport)


@pytest.mark.parametrize("kind,family", [("asyncio", "v4"), ("uvloop", "v4"), ("asyncio", "v6"), ("uvloop", "v6")])
def test_removed_address_aborts_its_connections(lab, kind: str, family: str) -> None:
    run_on(kind, established_connections_abort, lab, family)


# --------------------------------------------------------------------------- (b) connect after removal

async def test_connect_after_removal_fails_clearly_and_readd_works(lab) -> None:
    ke4 = await off_loop(KernelEcho, lab, lab.addr_b)
    ke6 = await off_loop(KernelEcho, lab, lab.addr6_b)
    clients: list[KernelClient] = []
    try:
        async with Stack(lab.if_a, netns=lab.ns_a) as stack:
            server = await stack.create_server(Recorder, None, 0)
            sport = server.sockets[0].getsockname()[1]
            await off_loop(set_addr, lab, "del", lab.addr_a, 24)
            assert await wait_for(lambda: lab.addr_a not in stack.addresses, 2), stack.addresses
            with pytest.raises(OSError) as ei:
                await stack.open_connection(lab.addr_b, ke4.port)
            assert ei.value.errno == errno.EADDRNOTAVAIL and "no IPv4 address" in str(ei.value), ei.value
            with pytest.raises(OSError) as ei:
                await stack.open_connection(lab.addr_b, ke4.port, local_addr=(lab.addr_a, 0))
            assert ei.value.errno == errno.EADDRNOTAVAIL and lab.addr_a in str(ei.value), ei.value
            with pytest.raises(OSError) as ei:
                await stack.create_server(Recorder, lab.addr_a, 0)
            assert ei.value.errno == errno.EADDRNOTAVAIL
            # a kernel client cannot reach the listener over it any more (nobody answers)
            with pytest.raises(OSError):
                await off_loop(KernelClient, lab, lab.addr_a, sport, 1.0)

            # every address gone (v6 global and link-local too): the stack keeps running
            for a in await off_loop(kernel_addrs, lab):
                await off_loop(set_addr, lab, "del", a, 64 if ":" in a else 24)
            assert await wait_for(lambda: stack.addresses == [], 2), stack.addresses
            with pytest.raises(OSError) as ei:
                await asyncio.wait_for(stack.open_connection(lab.addr6_b, ke6.port), 2)
            assert ei.value.errno == errno.EADDRNOTAVAIL and "no IPv6 address" in str(ei.value), ei.value
            assert stack.counters["StackErrors"] == 0

            # back: new connections work again in both directions and both families
            await off_loop(set_addr, lab, "add", lab.addr_a, 24)
            await off_loop(set_addr, lab, "add", lab.addr6_a, 64)
            assert await wait_for(lambda: {lab.addr_a, lab.addr6_a} <= set(stack.addresses), 2), stack.addresses
            for peer, ke in ((lab.addr_b, ke4), (lab.addr6_b, ke6)):
                r, w = await asyncio.wait_for(stack.open_connection(peer, ke.port), 5)
                w.write(b"again")
                assert await asyncio.wait_for(r.readexactly(5), 5) == b"again"
                w.close()
            for mine in (lab.addr_a, lab.addr6_a):
                kc = await off_loop(KernelClient, lab, mine, sport)
                clients.append(kc)
                assert await off_loop(kc.echo, b"in") == b"in"
            print(f"\nafter re-adding: addresses {stack.addresses}; PassiveOpens="
                  f"{stack.counters['PassiveOpens']} ActiveOpens={stack.counters['ActiveOpens']}")
            server.close()
    finally:
        for c in clients:
            c.close()
        ke4.close()
        ke6.close()


# --------------------------------------------------------------------------- lost notifications

async def test_lost_notifications_resync_from_a_dump(lab) -> None:
    """The monitor's socket overflows while the loop is blocked (100 addresses added, the v6 one
    in use removed): the kernel drops notifications (ENOBUFS), the monitor re-reads every address
    and the stack reconciles -- the connection on the removed address is aborted, the new
    addresses are served (the receive filter is widened for them)."""
    from aiotcpstack.link import bpf
    sub = lab.subnet
    new = [f"198.19.{sub}.{i}" for i in range(1, 101)]
    ke6 = await off_loop(KernelEcho, lab, lab.addr6_b)
    clients: list[KernelClient] = []
    try:
        async with Stack(lab.if_a, netns=lab.ns_a) as stack:
            server = await stack.create_server(Recorder, None, 0)
            sport = server.sockets[0].getsockname()[1]
            reader, writer = await stack.open_connection(lab.addr6_b, ke6.port)
            mon = stack._addr_monitor
            # a tiny receive buffer (the kernel's minimum) so that the overflow is certain
            mon.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            script = "".join(f"addr add {a}/32 dev {lab.if_a}\n" for a in new)
            script += f"addr del {lab.addr6_a}/64 dev {lab.if_a}\n"
            # blocks this (the stack's) loop on purpose while the kernel sends ~100 notifications
            lab.run(lab.ns_a, ["ip", "-batch", "-"], input=script)
            with pytest.raises(OSError) as ei:
                await asyncio.wait_for(reader.read(), 3)
            assert ei.value.errno == errno.EADDRNOTAVAIL and lab.addr6_a in str(ei.value)
            want = await off_loop(kernel_addrs, lab)
            assert await wait_for(lambda: set(stack.addresses) == want, 3), set(stack.addresses) ^ want
            print(f"\noverflow: ENOBUFS seen {mon.overflows}x, dumps {mon.resyncs}; stack addresses "
                  f"{len(stack.addresses)} == kernel's; {ei.value!r}")
            assert mon.overflows >= 1 and mon.resyncs >= 1
            # a new address is served: it passes the (widened) receive filter
            frame = (lab.mac_a + lab.mac_b + b"\x08\x00" + bytes([0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0])
                     + socket.inet_aton(lab.addr_b) + socket.inet_aton(new[41]) + bytes(20))
            assert bpf.run_filter(stack.link.bpf_program, frame) > 0
            await off_loop(lab.run, lab.ns_b, ["ip", "route", "add", f"198.19.{sub}.0/24", "dev", lab.if_b])
            kc = await off_loop(KernelClient, lab, new[41], sport)
            clients.append(kc)
            assert await off_loop(kc.echo, b"via a new address") == b"via a new address"
            # and back (the loop running this time): the stack follows, and the connection on the
            # new address is aborted when it goes
            script = "".join(f"addr del {a}/32 dev {lab.if_a}\n" for a in new)
            await off_loop(lambda: lab.run(lab.ns_a, ["ip", "-batch", "-"], input=script))
            want = await off_loop(kernel_addrs, lab)
            assert await wait_for(lambda: set(stack.addresses) == want, 3), set(stack.addresses) ^ want
            assert stack.counters["TCPAbortOnAddrRemoved"] == 2
            server.close()
    finally:
        for c in clients:
            c.close()
        ke6.close()


# --------------------------------------------------------------------------- dedicated mode

async def test_dedicated_remove_address(lab) -> None:
    spare = lab.spare_addr
    async with Stack(lab.if_a, netns=lab.ns_a, address=f"{spare}/24") as stack:
        server = await stack.create_server(Recorder, spare, 0)
        sport = server.sockets[0].getsockname()[1]
        Recorder.instances = []
        kc = await off_loop(KernelClient, lab, spare, sport)
        try:
            assert await off_loop(kc.echo, b"hello") == b"hello"
            lost = Recorder.on(spare).lost
            assert stack.remove_address(spare) == 1
            exc = await asyncio.wait_for(lost, 1)
            assert isinstance(exc, OSError) and exc.errno == errno.EADDRNOTAVAIL and spare in str(exc)
            assert stack.addresses == [] and stack.remove_address(spare) == 0
            # ARP for it is not answered any more: the kernel in ns_b cannot connect
            await off_loop(lab.run, lab.ns_b, ["ip", "neigh", "flush", "dev", lab.if_b])
            replies = stack.counters["ArpOutReplies"]
            requests = stack.counters["ArpInRequests"]
            with pytest.raises(OSError):
                s = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
                try:
                    s.settimeout(1.5)
                    await off_loop(s.connect, (spare, sport))
                finally:
                    s.close()
            assert stack.counters["ArpInRequests"] > requests
            assert stack.counters["ArpOutReplies"] == replies
            # back
            assert stack.add_address(f"{spare}/24") and not stack.add_address(f"{spare}/24")
            kc2 = await off_loop(KernelClient, lab, spare, sport)
            try:
                assert await off_loop(kc2.echo, b"back") == b"back"
            finally:
                kc2.close()
            assert stack.counters["TCPAbortOnAddrRemoved"] == 1
        finally:
            kc.close()
        server.close()


async def test_start_with_more_addresses_than_one_filter_holds(lab) -> None:
    """An interface with 400 addresses: one classic BPF program cannot list them all; the stack
    starts anyway with a MAC-only receive filter (logged) and serves an address far down the list."""
    sub = lab.subnet
    new = [f"198.19.{sub}.{i}" for i in range(1, 201)] + [f"198.19.{(sub + 1) % 256}.{i}" for i in range(1, 201)]
    script = "".join(f"addr add {a}/32 dev {lab.if_a}\n" for a in new)
    lab.run(lab.ns_a, ["ip", "-batch", "-"], input=script)
    await off_loop(lab.run, lab.ns_b, ["ip", "route", "add", f"198.19.{sub}.0/24", "dev", lab.if_b])

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.t = transport

        def data_received(self, data):
            self.t.write(data)

    async with Stack(lab.if_a, netns=lab.ns_a) as stack:
        assert stack._filter is None and stack.link.bpf_program, "expected the MAC-only fallback"
        assert len(stack.addresses) >= 400
        server = await stack.create_server(Echo, new[150], 0)
        port = server.sockets[0].getsockname()[1]

        def client() -> bytes:
            s = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(5)
            try:
                s.connect((new[150], port))
                s.sendall(b"many addresses")
                return s.recv(100)
            finally:
                s.close()
        assert await off_loop(client) == b"many addresses"
        server.close()
