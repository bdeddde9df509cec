"""Two complete network cores over a simulated wire, on virtual time (no asyncio, no sockets).

Each :class:`SimHost` is what the aio layer is for a real stack: a :class:`NetworkCore` with its own
:class:`TimerWheel`, :class:`Counters` and config, fed by a :class:`SimLink`.  The wheel's next
expiry drives ONE pending :class:`SimClock` event per host (re-armed through
``wheel.on_new_earliest`` and after every batch / advance), exactly as ``Stack`` drives one
``loop.call_at``.

:func:`run_transfer` runs one bidirectional transfer (client sends ``up`` bytes, server sends
``down`` bytes, both half-close after sending and close after EOF) and returns a
:class:`TransferResult` with every received byte checked by the caller.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from aiotcpstack.ip.core import MAX_GSO_PAYLOAD, NetworkCore
from aiotcpstack.link.sim import SimClock, SimNetwork
from aiotcpstack.mib import Counters
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.timer_wheel import TimerWheel

IP_A = bytes([198, 18, 0, 1])
IP_B = bytes([198, 18, 0, 2])
MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


class SimHost:
    def __init__(self, net: SimNetwork, name: str, mac: bytes, ip: bytes, config: TcpConfig,
                 vnet: bool = False, secret: bytes = b"") -> None:
        clock = net.clock
        self.clock = clock
        self.name = name
        self.link = net.link(name, mac, vnet=vnet)
        self.counters = Counters()
        self.wheel = TimerWheel(now=clock.now)
        if vnet and config.tso_segs == 1:
            config = config.with_options(tso_segs=max(1, MAX_GSO_PAYLOAD // config.mss))
        self.config = config
        self.core = NetworkCore(mac, self.link.mtu, [(ip, 24)], self.counters, config, self.wheel,
                                self.link.send, clock.time, vnet=self.link.vnet, dedicated=True,
                                secret=secret or name.encode(), strict=True)
        self.ip = ip
        self._event: Any = None
        self._event_when: float | None = None
        self.wheel.on_new_earliest = self._arm
        self.core.loopback_hook = lambda: clock.call_soon(self._flush_loopback)
        self.link.open_reader(self._on_frames)

    def _flush_loopback(self) -> None:
        self.core.flush_loopback(self.clock.now)
        self.kick()

    # -- the loop driver (what aio/stack.py does with call_at) -----------------------------------
    def _on_frames(self, batch: list) -> None:
        now = self.clock.now
        self.core.receive(batch, now)
        self.kick()

    def _arm(self, when: float) -> None:
        ev = self._event
        if ev is not None:
            if self._event_when is not None and self._event_when <= when:
                return
            ev.cancel()
        self._event_when = when
        self._event = self.clock.call_at(when, self._fire)

    def _fire(self) -> None:
        self._event = None
        self._event_when = None
        now = self.clock.now
        self.core.now = now
        self.wheel.advance(now)
        self.kick()

    def kick(self) -> None:
        nxt = self.wheel.next_expiry()
        if nxt is not None:
            self._arm(nxt)


class Peer:
    """An application on one end (a ConnectionHandler): writes ``data`` with write flow control
    (keeps at most ``window`` bytes queued), half-closes when done, closes after EOF."""

    def __init__(self, host: SimHost, data: bytes, window: int) -> None:
        self.host = host
        self.data = memoryview(data)
        self.window = window
        self.conn: Any = None
        self.sent = 0
        self.received = bytearray()
        self.established = False
        self.eof = False
        self.shut = False
        self.closed_called = False
        self.closed = False
        self.exc: BaseException | None = None

    # ConnectionHandler
    def tcp_established(self) -> None:
        self.established = True
        # like asyncio's call_soon(connection_made): the application runs after the softirq
        self.host.clock.call_soon(self.pump)

    def tcp_data(self, data: bytes) -> None:
        self.received += data

    def tcp_eof(self) -> None:
        self.eof = True
        self.host.clock.call_soon(self.pump)

    def tcp_send_space(self) -> None:
        self.pump()

    def tcp_closed(self, exc: BaseException | None) -> None:
        self.closed = True
        self.exc = exc

    def pump(self) -> None:
        conn = self.conn
        if conn is None or self.closed:
            return
        now = self.host.clock.now
        n = len(self.data)
        while self.sent < n and conn.send_buffer_size < self.window:
            chunk = min(n - self.sent, max(1, self.window - conn.send_buffer_size), 65536)
            conn.send(bytes(self.data[self.sent:self.sent + chunk]), now)
            self.sent += chunk
        if self.sent >= n and not self.shut:
            self.shut = True
            conn.shutdown(now)
        if self.shut and self.eof and not self.closed_called:
            self.closed_called = True
            conn.close(now)
        self.host.kick()

    @property
    def done(self) -> bool:
        if self.closed:
            return True
        conn = self.conn
        return (self.eof and self.shut and self.closed_called and conn is not None
                and conn.send_buffer_size == 0)


@dataclass
class TransferResult:
    seed: int
    up: int
    down: int
    ok: bool
    time: float
    client_received: bytes
    server_received: bytes
    expected_up: bytes
    expected_down: bytes
    counters_a: dict = field(default_factory=dict)
    counters_b: dict = field(default_factory=dict)
    wire: dict = field(default_factory=dict)
    client_exc: Any = None
    server_exc: Any = None
    client_state: str = ""
    server_state: str = ""
    events: int = 0

    def summary(self) -> str:
        return (f"seed={self.seed} up={self.up} down={self.down} ok={self.ok} t={self.time:.3f} "
                f"client={self.client_state}/{self.client_exc!r} server={self.server_state}/{self.server_exc!r} "
                f"got_up={len(self.server_received)} got_down={len(self.client_received)} wire={self.wire}")


def make_pair(seed: int = 0, config_a: TcpConfig | None = None, config_b: TcpConfig | None = None,
              vnet: bool = False, **net_kw: Any) -> tuple[SimClock, SimNetwork, SimHost, SimHost]:
    clock = SimClock()
    net = SimNetwork(clock, seed=seed, **net_kw)
    a = SimHost(net, "a", MAC_A, IP_A, config_a or TcpConfig(), vnet=vnet, secret=b"a%d" % seed)
    b = SimHost(net, "b", MAC_B, IP_B, config_b or TcpConfig(), vnet=vnet, secret=b"b%d" % seed)
    return clock, net, a, b


def payload(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def run_transfer(seed: int, up: int, down: int, *, config: TcpConfig | None = None, vnet: bool = False,
                 window: int | None = None, time_limit: float = 3600.0, port: int = 5000,
                 **net_kw: Any) -> TransferResult:
    rng = random.Random(seed ^ 0x5EED)
    data_up = payload(rng, up)
    data_down = payload(rng, down)
    cfg = config or TcpConfig()
    clock, net, a, b = make_pair(seed, cfg, cfg, vnet=vnet, **net_kw)
    win = window or cfg.sndbuf
    server_peer: list[Peer] = []

    def on_accept(conn: Any) -> Peer:
        p = Peer(b, data_down, win)
        p.conn = conn
        server_peer.append(p)
        return p

    b.core.listen(IP_B, port, 128, on_accept)
    client = Peer(a, data_up, win)
    client.conn = a.core.connect(IP_B, port, client, clock.now)
    a.kick()

    def stop() -> bool:
        if not client.done:
            return False
        return bool(server_peer) and server_peer[0].done

    events = clock.run(until=time_limit, stop=stop)
    server = server_peer[0] if server_peer else None
    got_up = bytes(server.received) if server else b""
    got_down = bytes(client.received)
    ok = got_up == data_up and got_down == data_down and client.exc is None and (server is not None and server.exc is None)
    return TransferResult(
        seed=seed, up=up, down=down, ok=ok, time=clock.now, client_received=got_down,
        server_received=got_up, expected_up=data_up, expected_down=data_down,
        counters_a={k: v for k, v in a.counters.items() if v}, counters_b={k: v for k, v in b.counters.items() if v},
        wire=net.stats.as_dict(), client_exc=client.exc, server_exc=server.exc if server else None,
        client_state=getattr(client.conn, "state", "?"), server_state=getattr(server.conn, "state", "?") if server else "-",
        events=events)


def digest(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:16]
