"""Benchmark workloads: the application side (runs in ns_a) and the kernel peer side (runs in ns_b).

Run as a process by ``benchmarks.run`` (never imported by the stack itself)::

    python -m benchmarks.workloads peer --workload bulk_send --size 134217728 ...   # in ns_b
    python -m benchmarks.workloads app  --workload bulk_send --impl kernel --loop uvloop --host H --port P ...

The *application* code (``app_*`` coroutines and their Protocols) is identical for both
implementations: it only sees a ``net`` object with ``create_connection(factory, host, port)``,
which is ``loop.create_connection`` (kernel sockets) or ``Stack.create_connection`` (aiotcpstack).

Protocol between the processes and the orchestrator (stdout, one line each):

* the peer prints ``READY <port>`` once it listens (and, for single-connection peers, ``RESULT {json}``
  when it is done);
* the app prints ``RESULT {json}``: ``{"value": float, "unit": str, "extra": {...}}`` or
  ``{"error": str}``.

Every workload verifies its bytes (a SHA-256 of the whole stream, computed *outside* the timed
section, plus exact byte counts, or per-request echo checks), so a fast but wrong stack cannot win.
"""
from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import hashlib
import json
import os
import random
import resource
import socket
import sys
import time
import traceback
from typing import Any, Callable

WORKLOADS = ("bulk_send", "bulk_recv", "rr_latency", "conn_rate", "idle_conns")

PATTERN_BLOCK = (1 << 20) + 4093      # odd length: no alignment with segment or buffer sizes
WRITE_CHUNK = 256 * 1024              # the app's write() size in bulk_send


# --------------------------------------------------------------------------- helpers (both sides)
def pattern(seed: int, n: int) -> bytearray:
    """``n`` deterministic pseudo-random bytes: a random block repeated, each repetition stamped with
    its offset (so a stack that drops, duplicates or reorders whole blocks is still caught)."""
    blk = random.Random(seed).randbytes(PATTERN_BLOCK)
    buf = bytearray(n)
    mv = memoryview(buf)
    for off in range(0, n, PATTERN_BLOCK):
        k = min(PATTERN_BLOCK, n - off)
        mv[off:off + k] = blk[:k]
        stamp = off.to_bytes(8, "big")[: k]
        mv[off:off + len(stamp)] = stamp
    return buf


def pattern_digest(seed: int, n: int) -> str:
    return hashlib.sha256(pattern(seed, n)).hexdigest()


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass
    if want < 1 << 17:
        try:   # root may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 17, 1 << 17))
        except (ValueError, OSError):
            pass


def pin(cpu: int | None) -> None:
    if cpu is not None and cpu >= 0:
        os.sched_setaffinity(0, {cpu})


def vmrss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def meminfo_bytes(key: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def sockstat_tcp() -> dict[str, int]:
    """``/proc/net/sockstat`` TCP line (inuse/alloc are per network namespace; mem is in pages, global)."""
    try:
        with open("/proc/net/sockstat") as f:
            for line in f:
                if line.startswith("TCP:"):
                    parts = line.split()[1:]
                    return {parts[i]: int(parts[i + 1]) for i in range(0, len(parts) - 1, 2)}
    except OSError:
        pass
    return {}


# --------------------------------------------------------------------------- application side
class KernelNet:
    """Kernel sockets: the loop's own ``create_connection``."""

    name = "kernel"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    async def create_connection(self, factory: Callable[[], asyncio.BaseProtocol], host: str, port: int):
        return await self.loop.create_connection(factory, host, port)

    async def close(self) -> None:
        pass


class StackNet:
    """aiotcpstack: ``Stack.create_connection`` (same arguments, same semantics)."""

    name = "aiotcpstack"

    def __init__(self, stack: Any) -> None:
        self.stack = stack

    async def create_connection(self, factory: Callable[[], asyncio.BaseProtocol], host: str, port: int):
        return await self.stack.create_connection(factory, host, port)

    async def close(self) -> None:
        await self.stack.close()


class _Timeout(Exception):
    pass


_PROFILER: Any = None     # set by --profile: enabled only inside the timed sections


_CPU = [0.0, 0.0]          # process CPU time (user + sys) at prof_on / prof_off


def prof_on() -> None:
    """Start of the measured section (connect .. done): CPU time, and the profiler if asked."""
    _CPU[0] = time.process_time()
    if _PROFILER is not None:
        _PROFILER.enable()


def prof_off() -> None:
    if _PROFILER is not None:
        _PROFILER.disable()
    _CPU[1] = time.process_time()


def fd_count() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def _tcp_state(tr: Any) -> str:
    """For a timeout's message: our connection's TCP state (``tcp_info``; the stock transports
    have none), so that a stalled run says what the sender was waiting for."""
    info = tr.get_extra_info("tcp_info")
    if not isinstance(info, dict):
        return ""
    return ", tcp_info=" + repr(info)


async def _bounded(aw: Any, timeout: float, what: Callable[[], str]) -> Any:
    try:
        return await asyncio.wait_for(aw, timeout)
    except asyncio.TimeoutError:
        raise _Timeout(f"timed out after {timeout:g} s ({what()})") from None


# ---- bulk_send: the app writes N bytes, then half-closes; the peer answers "DONE <n>\n<sha256>\n"
class _SendProto(asyncio.Protocol):
    def __init__(self, data: bytearray, done: asyncio.Future) -> None:
        self.data = memoryview(data)
        self.off = 0
        self.paused = False
        self.eof_sent = False
        self.reply = bytearray()
        self.done = done
        self.t0 = 0.0
        self.t_done = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = transport
        self.t0 = time.perf_counter()
        self._pump()

    def _pump(self) -> None:
        n = len(self.data)
        tr = self.tr
        while not self.paused and self.off < n:
            end = min(n, self.off + WRITE_CHUNK)
            chunk = self.data[self.off:end]
            self.off = end
            tr.write(chunk)
        if self.off >= n and not self.eof_sent:
            self.eof_sent = True
            tr.write_eof()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._pump()

    def data_received(self, data: bytes) -> None:
        if not self.t_done and b"\n" in data:
            self.t_done = time.perf_counter()
        self.reply += data
        if self.reply.count(b"\n") >= 2 and not self.done.done():
            self.done.set_result(bytes(self.reply))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError(
                f"connection closed before the peer's report (wrote {self.off} bytes, reply {bytes(self.reply)!r})"))


async def app_bulk_send(net: Any, a: argparse.Namespace) -> dict:
    loop = asyncio.get_running_loop()
    data = pattern(a.seed, a.size)
    done: asyncio.Future = loop.create_future()
    proto = _SendProto(data, done)
    prof_on()
    try:
        tr, _ = await _bounded(net.create_connection(lambda: proto, a.host, a.port), 15, lambda: "connect")
        try:
            reply = await _bounded(done, a.timeout, lambda: f"wrote {proto.off}/{a.size} bytes, "
                                   f"eof_sent={proto.eof_sent}, reply={bytes(proto.reply)!r}"
                                   f"{_tcp_state(tr)}")
        finally:
            tr.close()
    finally:
        prof_off()
    lines = reply.split(b"\n")
    if not lines[0].startswith(b"DONE "):
        raise RuntimeError(f"bad reply from the receiver: {reply!r}")
    got = int(lines[0].split()[1])
    if got != a.size:
        raise RuntimeError(f"receiver got {got} bytes, sent {a.size}")
    expect = hashlib.sha256(data).hexdigest()
    if lines[1].decode() != expect:
        raise RuntimeError(f"SHA-256 mismatch: receiver {lines[1].decode()[:16]}..., sent {expect[:16]}...")
    secs = proto.t_done - proto.t0
    return {"value": a.size * 8 / secs / 1e9, "unit": "Gbit/s",
            "extra": {"seconds": secs, "bytes": a.size, "verified": "sha256+count"}}


# ---- bulk_recv: the peer sends N bytes and half-closes; the app keeps the chunks, hashes afterwards
class _RecvProto(asyncio.Protocol):
    def __init__(self, done: asyncio.Future) -> None:
        self.chunks: list[bytes] = []
        self.n = 0
        self.calls = 0
        self.done = done
        self.t0 = 0.0
        self.t1 = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = transport
        self.t0 = time.perf_counter()

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.n += len(data)
        self.calls += 1

    def eof_received(self) -> bool:
        self.t1 = time.perf_counter()
        if not self.done.done():
            self.done.set_result(None)
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError(f"closed without EOF after {self.n} bytes"))


async def app_bulk_recv(net: Any, a: argparse.Namespace) -> dict:
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()
    proto = _RecvProto(done)
    prof_on()
    try:
        tr, _ = await _bounded(net.create_connection(lambda: proto, a.host, a.port), 15, lambda: "connect")
        try:
            await _bounded(done, a.timeout, lambda: f"received {proto.n}/{a.size} bytes")
        finally:
            tr.close()
    finally:
        prof_off()
    secs = proto.t1 - proto.t0
    if proto.n != a.size:
        raise RuntimeError(f"received {proto.n} bytes, the peer sent {a.size}")
    h = hashlib.sha256()
    for c in proto.chunks:
        h.update(c)
    if h.hexdigest() != pattern_digest(a.seed, a.size):
        raise RuntimeError("SHA-256 mismatch on the received stream")
    return {"value": a.size * 8 / secs / 1e9, "unit": "Gbit/s",
            "extra": {"seconds": secs, "bytes": a.size, "data_received_calls": proto.calls,
                      "verified": "sha256+count"}}


# ---- rr_latency: one byte out, one byte back, N times
class _RRProto(asyncio.Protocol):
    def __init__(self, total: int, done: asyncio.Future) -> None:
        self.total = total
        self.i = 0
        self.samples: list[int] = []
        self.done = done
        self.t = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = transport
        self._send()

    def _send(self) -> None:
        self.t = time.perf_counter_ns()
        self.tr.write(bytes((self.i & 0xFF,)))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        if len(data) != 1 or data[0] != (self.i & 0xFF):
            if not self.done.done():
                self.done.set_exception(RuntimeError(f"round trip {self.i}: expected echo of "
                                                     f"{self.i & 0xFF}, got {bytes(data)!r}"))
            return
        self.samples.append(now - self.t)
        self.i += 1
        if self.i >= self.total:
            if not self.done.done():
                self.done.set_result(None)
            return
        self._send()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError(f"closed after {self.i} round trips"))


async def app_rr_latency(net: Any, a: argparse.Namespace) -> dict:
    loop = asyncio.get_running_loop()
    warmup = max(10, a.count // 20)
    done: asyncio.Future = loop.create_future()
    proto = _RRProto(a.count + warmup, done)
    prof_on()
    try:
        tr, _ = await _bounded(net.create_connection(lambda: proto, a.host, a.port), 15, lambda: "connect")
        try:
            await _bounded(done, a.timeout, lambda: f"{proto.i}/{a.count + warmup} round trips")
        finally:
            tr.close()
    finally:
        prof_off()
    s = sorted(proto.samples[warmup:])
    n = len(s)
    med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return {"value": med / 1000, "unit": "us",
            "extra": {"round_trips": n, "p10_us": s[n // 10] / 1000, "p90_us": s[9 * n // 10] / 1000,
                      "p99_us": s[min(n - 1, 99 * n // 100)] / 1000, "mean_us": sum(s) / n / 1000,
                      "verified": "echo of every byte"}}


# ---- conn_rate: connect, "REQ i\n", wait "RSP i\n", close; C workers
class _ReqProto(asyncio.Protocol):
    def __init__(self, i: int, got: asyncio.Future, lost: asyncio.Future) -> None:
        self.i = i
        self.buf = b""
        self.got = got
        self.lost = lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(b"REQ %d\n" % self.i)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if b"\n" in self.buf and not self.got.done():
            self.got.set_result(self.buf)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.got.done():
            self.got.set_exception(exc or ConnectionError(f"request {self.i}: closed before the response"))
        if not self.lost.done():
            self.lost.set_result(None)


class _LineProto(asyncio.Protocol):
    """A control connection: send one line, wait for one line back."""

    def __init__(self, line: bytes, got: asyncio.Future) -> None:
        self.line = line
        self.buf = b""
        self.got = got

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.line)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if b"\n" in self.buf and not self.got.done():
            # the idle_conns server greets every connection with "!" (this one too)
            self.got.set_result(self.buf.split(b"\n", 1)[0].lstrip(b"!"))

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.got.done():
            self.got.set_exception(exc or ConnectionError("control connection closed"))


async def _control(net: Any, a: argparse.Namespace, line: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    got: asyncio.Future = loop.create_future()
    tr, _ = await _bounded(net.create_connection(lambda: _LineProto(line, got), a.host, a.port), 15,
                           lambda: "control connect")
    try:
        return await _bounded(got, 15, lambda: f"control reply to {line!r}")
    finally:
        tr.close()


async def app_conn_rate(net: Any, a: argparse.Namespace) -> dict:
    loop = asyncio.get_running_loop()
    nxt = iter(range(a.count))
    done_count = 0

    async def worker() -> None:
        nonlocal done_count
        for i in nxt:
            got: asyncio.Future = loop.create_future()
            lost: asyncio.Future = loop.create_future()
            tr, _ = await net.create_connection(lambda: _ReqProto(i, got, lost), a.host, a.port)
            try:
                resp = await got
            finally:
                tr.close()
            if resp != b"RSP %d\n" % i:
                raise RuntimeError(f"request {i}: wrong response {resp!r}")
            await lost
            done_count += 1

    t0 = time.perf_counter()
    prof_on()
    try:
        await _bounded(asyncio.gather(*(worker() for _ in range(a.concurrency))), a.timeout,
                       lambda: f"{done_count}/{a.count} connections done")
    finally:
        prof_off()
    secs = time.perf_counter() - t0
    served = int(await _control(net, a, b"STATS\n"))
    if served < a.count:
        raise RuntimeError(f"server counted {served} requests, client did {a.count}")
    return {"value": a.count / secs, "unit": "conn/s",
            "extra": {"connections": a.count, "concurrency": a.concurrency, "seconds": secs,
                      "server_counted": served, "verified": "per-request echo + server count"}}


# ---- idle_conns: K connections, each greeted with "!" by the server, then held idle
class _IdleProto(asyncio.Protocol):
    def __init__(self, got: asyncio.Future) -> None:
        self.got = got

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = transport

    def data_received(self, data: bytes) -> None:
        if not self.got.done():
            if data == b"!":
                self.got.set_result(None)
            else:
                self.got.set_exception(RuntimeError(f"bad greeting {data!r}"))

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.got.done():
            self.got.set_exception(exc or ConnectionError("idle connection closed"))


async def app_idle_conns(net: Any, a: argparse.Namespace) -> dict:
    loop = asyncio.get_running_loop()
    transports: list[Any] = []

    async def one() -> None:
        got: asyncio.Future = loop.create_future()
        tr, _ = await net.create_connection(lambda: _IdleProto(got), a.host, a.port)
        transports.append(tr)
        await got

    await _bounded(one(), 15, lambda: "warm-up connection")     # warm caches, imports, the stack's tables
    for _ in range(3):
        gc.collect()
    await asyncio.sleep(0.2)
    rss0, slab0, sock0, fd0 = vmrss_bytes(), meminfo_bytes("Slab"), sockstat_tcp(), fd_count()
    t0 = time.perf_counter()

    async def batch_all() -> None:
        left = a.count
        while left > 0:
            k = min(left, a.concurrency)
            await asyncio.gather(*(one() for _ in range(k)))
            left -= k

    prof_on()
    try:
        await _bounded(batch_all(), a.timeout, lambda: f"{len(transports) - 1}/{a.count} connections open, "
                       f"{fd_count() - fd0} more fds than before")
    except OSError as exc:
        if exc.errno != errno.EMFILE:
            raise
        n = max(1, len(transports) - 1)
        raise OSError(errno.EMFILE, f"Too many open files after {n}/{a.count} connections: "
                      f"{(fd_count() - fd0) / n:.1f} fds per connection, RLIMIT_NOFILE "
                      f"{resource.getrlimit(resource.RLIMIT_NOFILE)[0]}") from exc
    finally:
        prof_off()
    secs = time.perf_counter() - t0
    for _ in range(3):
        gc.collect()
    await asyncio.sleep(0.5)
    rss1, slab1, sock1, fd1 = vmrss_bytes(), meminfo_bytes("Slab"), sockstat_tcp(), fd_count()
    server_open = int(await _control(net, a, b"COUNT\n"))
    if server_open != a.count + 1:
        raise RuntimeError(f"server holds {server_open} connections, expected {a.count + 1}")
    k = a.count
    res = {"value": (rss1 - rss0) / k / 1024, "unit": "KiB/conn",
           "extra": {"connections": k, "connect_seconds": secs, "rss_delta": rss1 - rss0,
                     "slab_delta": slab1 - slab0, "slab_kib_per_conn": (slab1 - slab0) / k / 1024,
                     "sockstat_mem_pages_delta": sock1.get("mem", 0) - sock0.get("mem", 0),
                     "sockstat_inuse_delta": sock1.get("inuse", 0) - sock0.get("inuse", 0),
                     "fds_per_conn": (fd1 - fd0) / k, "server_open": server_open, "verified": "greeting on every connection + server count"}}
    for tr in transports:
        tr.abort()
    return res


APPS = {"bulk_send": app_bulk_send, "bulk_recv": app_bulk_recv, "rr_latency": app_rr_latency,
        "conn_rate": app_conn_rate, "idle_conns": app_idle_conns}


def _parse_options(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or ():
        k, _, v = item.partition("=")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


async def _app_async(a: argparse.Namespace) -> dict:
    loop = asyncio.get_running_loop()
    if a.impl == "kernel":
        net: Any = KernelNet(loop)
    else:
        import aiotcpstack
        stack = aiotcpstack.Stack(a.interface, netns=a.netns, address=a.address, **_parse_options(a.option))
        t = time.perf_counter()
        await asyncio.wait_for(stack.start(), 30)
        start_s = time.perf_counter() - t
        net = StackNet(stack)
    try:
        res = await APPS[a.workload](net, a)
        if _CPU[1] > _CPU[0]:
            # the app process's CPU time (user + sys) in the measured section: on a shared, noisy
            # machine the cost per byte / per connection is steadier than the rate
            res.setdefault("extra", {})["cpu_seconds"] = round(_CPU[1] - _CPU[0], 6)
        if a.impl != "kernel":
            res.setdefault("extra", {})["stack_start_seconds"] = start_s
            try:
                c = net.stack.counters
                res["extra"]["counters"] = {k: int(v) for k, v in dict(c).items() if v}
            except Exception:  # noqa: BLE001
                pass
        return res
    finally:
        await asyncio.wait_for(net.close(), 15)


def app_main(a: argparse.Namespace) -> int:
    raise_nofile()
    pin(a.cpu)
    if a.loop == "uvloop":
        import uvloop
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop
    global _PROFILER
    prof = None
    if a.profile:
        import cProfile
        prof = _PROFILER = cProfile.Profile()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            res = runner.run(_app_async(a))
        ok = True
    except BaseException as exc:  # noqa: BLE001 - reported to the orchestrator
        res = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
        ok = False
    if prof is not None:
        prof.disable()
        _PROFILER = None
        prof.dump_stats(a.profile)
    print("RESULT " + json.dumps(res), flush=True)
    return 0 if ok else 1


# --------------------------------------------------------------------------- kernel peer side (ns_b)
def _listen(host: str, port: int, backlog: int = 4096) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(backlog)
    return s


def _ready(port: int) -> None:
    print(f"READY {port}", flush=True)


def peer_bulk_send(a: argparse.Namespace) -> dict:
    """Receiver: read to EOF into a preallocated buffer, answer DONE at once, then the SHA-256."""
    ls = _listen(a.host, a.port)
    buf = bytearray(a.size + (1 << 20))
    mv = memoryview(buf)
    _ready(ls.getsockname()[1])
    c, _ = ls.accept()
    c.settimeout(a.timeout)
    n = 0
    t0 = None
    while True:
        if n >= len(buf):
            raise RuntimeError(f"received more than {a.size} bytes")
        k = c.recv_into(mv[n:])
        if not k:
            break
        if t0 is None:
            t0 = time.perf_counter()
        n += k
    t1 = time.perf_counter()
    c.sendall(b"DONE %d\n" % n)
    c.sendall(hashlib.sha256(mv[:n]).hexdigest().encode() + b"\n")
    c.shutdown(socket.SHUT_WR)
    c.settimeout(10)
    try:
        while c.recv(65536):
            pass
    except OSError:
        pass
    c.close()
    return {"bytes": n, "peer_seconds": (t1 - t0) if t0 else None}


def peer_bulk_recv(a: argparse.Namespace) -> dict:
    """Sender: N pattern bytes (prepared before READY), then FIN; wait for the app's close."""
    data = pattern(a.seed, a.size)
    ls = _listen(a.host, a.port)
    _ready(ls.getsockname()[1])
    c, _ = ls.accept()
    c.settimeout(a.timeout)
    t0 = time.perf_counter()
    c.sendall(memoryview(data))
    c.shutdown(socket.SHUT_WR)
    t1 = time.perf_counter()
    try:
        while c.recv(65536):
            pass
    except OSError:
        pass
    c.close()
    return {"bytes": a.size, "peer_seconds": t1 - t0}


def peer_rr_latency(a: argparse.Namespace) -> dict:
    ls = _listen(a.host, a.port)
    _ready(ls.getsockname()[1])
    c, _ = ls.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.settimeout(a.timeout)
    n = 0
    recv, send = c.recv, c.sendall
    while True:
        d = recv(64)
        if not d:
            break
        send(d)
        n += len(d)
    c.close()
    return {"echoed": n}


class _ConnServer(asyncio.Protocol):
    served = 0
    open = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = transport
        self.buf = b""
        _ConnServer.open += 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if line.startswith(b"REQ "):
                _ConnServer.served += 1
                self.tr.write(b"RSP " + line[4:] + b"\n")
            elif line == b"STATS":
                self.tr.write(b"%d\n" % _ConnServer.served)
            elif line == b"COUNT":
                self.tr.write(b"%d\n" % (_ConnServer.open - 1))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        _ConnServer.open -= 1


class _IdleServer(_ConnServer):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        transport.write(b"!")


def _peer_asyncio_server(a: argparse.Namespace, proto: type) -> dict:
    try:
        import uvloop
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:
        factory = asyncio.new_event_loop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(proto, a.host, a.port, backlog=4096, reuse_address=True)
        _ready(srv.sockets[0].getsockname()[1])
        stop = loop.create_future()
        loop.add_reader(sys.stdin.fileno(), lambda: stop.done() or stop.set_result(None))
        await stop          # the orchestrator closes our stdin (or kills us) when the app is done
        srv.close()

    with asyncio.Runner(loop_factory=factory) as r:
        r.run(main())
    return {"served": _ConnServer.served}


PEERS: dict[str, Callable[[argparse.Namespace], dict]] = {
    "bulk_send": peer_bulk_send, "bulk_recv": peer_bulk_recv, "rr_latency": peer_rr_latency,
    "conn_rate": lambda a: _peer_asyncio_server(a, _ConnServer),
    "idle_conns": lambda a: _peer_asyncio_server(a, _IdleServer)}


def peer_main(a: argparse.Namespace) -> int:
    raise_nofile()
    pin(a.cpu)
    try:
        res = PEERS[a.workload](a)
        ok = True
    except BaseException as exc:  # noqa: BLE001
        res = {"error": f"{type(exc).__name__}: {exc}"}
        ok = False
    print("RESULT " + json.dumps(res), flush=True)
    return 0 if ok else 1


# --------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.workloads")
    p.add_argument("role", choices=("app", "peer"))
    p.add_argument("--workload", required=True, choices=WORKLOADS)
    p.add_argument("--host", required=True, help="app: the peer's address; peer: the address to listen on")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--size", type=int, default=64 << 20)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--cpu", type=int, default=None)
    p.add_argument("--impl", choices=("kernel", "aiotcpstack"), default="kernel")
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    p.add_argument("--interface")
    p.add_argument("--netns")
    p.add_argument("--address")
    p.add_argument("--option", action="append", default=[], help="Stack option key=value (JSON value)")
    p.add_argument("--profile", help="write a cProfile dump of the app to this path")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    return app_main(a) if a.role == "app" else peer_main(a)


if __name__ == "__main__":
    sys.exit(main())
