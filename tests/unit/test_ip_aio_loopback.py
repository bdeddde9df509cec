"""The aio layer (Stack, TcpTransport, Server) without root: two dedicated-mode Stacks on one event
loop joined by an in-memory link pair (frames cross via ``loop.call_soon``, one batch per loop
iteration, like an AF_PACKET reader draining its queue)."""
from __future__ import annotations

import asyncio
import errno
import hashlib
import os

import pytest

from aiotcpstack import Stack
from aiotcpstack.link.base import Link, LinkStats


class LoopLink(Link):
    def __init__(self, name: str, mac: bytes) -> None:
        self.name = name
        self.mac = mac
        self.mtu = 1500
        self.vnet = False
        self.stats = LinkStats()
        self.peer: LoopLink | None = None
        self.on_frames = None
        self.loop = None
        self.pending: list = []
        self.closed = False
        self.drop_next = 0

    def open_reader(self, on_frames) -> None:
        self.on_frames = on_frames

    def attach(self, loop) -> None:
        self.loop = loop

    def send(self, frame, gso_type=0, gso_size=0, csum_start=0, csum_offset=0) -> None:
        assert gso_type == 0 and csum_start == 0
        assert len(frame) - 14 <= self.mtu
        peer = self.peer
        if self.closed or peer is None or peer.closed or peer.loop is None:
            return
        if self.drop_next:
            self.drop_next -= 1
            return
        if not peer.pending:
            peer.loop.call_soon(peer._flush)
        peer.pending.append((bytes(frame), False))

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        if batch and not self.closed and self.on_frames is not None:
            self.on_frames(batch)

    def close(self) -> None:
        self.closed = True


def pair():
    a = LoopLink("la", bytes.fromhex("020000000a01"))
    b = LoopLink("lb", bytes.fromhex("020000000b01"))
    a.peer, b.peer = b, a
    return a, b


A, B = "198.18.7.1", "198.18.7.2"


@pytest.fixture
async def stacks():
    la, lb = pair()
    sa = Stack("la", address=f"{A}/24", link=la)
    sb = Stack("lb", address=f"{B}/24", link=lb)
    await sa.start()
    await sb.start()
    try:
        yield sa, sb
    finally:
        await sa.close()
        await sb.close()


async def test_streams_echo_both_ways(stacks) -> None:
    sa, sb = stacks

    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await sb.start_server(echo, B, 7000)
    blob = os.urandom(1_500_000)
    reader, writer = await sa.open_connection(B, 7000)
    assert writer.get_extra_info("peername") == (B, 7000)

    async def send():
        writer.write(blob)
        await writer.drain()
        writer.write_eof()

    task = asyncio.ensure_future(send())
    got = await asyncio.wait_for(reader.read(-1), 30)
    await task
    assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
    writer.close()
    await writer.wait_closed()
    server.close()
    await asyncio.wait_for(server.wait_closed(), 5)
    assert sa.counters["ActiveOpens"] == 1 and sb.counters["PassiveOpens"] == 1


async def test_refused_and_eaddrinuse_and_errors(stacks) -> None:
    sa, sb = stacks
    with pytest.raises(ConnectionRefusedError) as ei:
        await asyncio.wait_for(sa.create_connection(asyncio.Protocol, B, 9), 10)
    assert ei.value.errno == errno.ECONNREFUSED
    srv = await sb.create_server(asyncio.Protocol, None, 8000)
    with pytest.raises(OSError) as ei:
        await sb.create_server(asyncio.Protocol, B, 8000)
    assert ei.value.errno == errno.EADDRINUSE
    srv.close()
    with pytest.raises(ValueError):
        await sa.create_connection(asyncio.Protocol, sock=object())
    with pytest.raises(TypeError, match="frobnicate"):
        Stack("x", address="198.18.9.9/24", frobnicate=True)
    with pytest.raises(RuntimeError):
        await Stack("x", address="198.18.9.9/24").create_connection(asyncio.Protocol, B, 1)


class Proto(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.events: list = []
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data) -> None:
        self.data += data

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc) -> None:
        self.events.append(("lost", exc))
        assert not self.lost.done(), "connection_lost twice"
        self.lost.set_result(exc)


async def test_abort_gives_peer_connection_reset(stacks) -> None:
    sa, sb = stacks
    server_protos: list[Proto] = []

    def factory():
        p = Proto()
        server_protos.append(p)
        return p

    await sb.create_server(factory, None, 7100)
    tr, pr = await sa.create_connection(Proto, B, 7100)
    tr.write(b"x" * 10)
    await asyncio.sleep(0.01)
    assert server_protos and bytes(server_protos[0].data) == b"x" * 10
    tr.abort()
    assert await asyncio.wait_for(pr.lost, 5) is None
    exc = await asyncio.wait_for(server_protos[0].lost, 5)
    assert isinstance(exc, ConnectionResetError) and exc.errno == errno.ECONNRESET
    assert pr.events == ["made", ("lost", None)]


async def test_close_flushes_then_connection_lost_once(stacks) -> None:
    sa, sb = stacks
    server_protos: list[Proto] = []

    def factory():
        p = Proto()
        server_protos.append(p)
        return p

    await sb.create_server(factory, None, 7200)
    tr, pr = await sa.create_connection(Proto, B, 7200)
    blob = os.urandom(300_000)
    tr.write(blob)
    tr.close()
    tr.close()                    # idempotent
    assert tr.is_closing()
    assert await asyncio.wait_for(pr.lost, 10) is None
    await asyncio.wait_for(_until(lambda: "eof" in server_protos[0].events), 10)
    assert bytes(server_protos[0].data) == blob
    assert pr.events == ["made", ("lost", None)]


async def _until(cond, step: float = 0.005) -> None:
    while not cond():
        await asyncio.sleep(step)


async def _connected(sa, sb, port: int) -> tuple:
    """A connection from ``sa`` to a server on ``sb``: (client transport, client Proto, server Proto)."""
    sp: list[Proto] = []

    def factory():
        p = Proto()
        sp.append(p)
        return p

    await sb.create_server(factory, None, port)
    tr, pr = await sa.create_connection(Proto, B, port)
    # the factory runs before the handshake completes; connection_made may come a turn later
    await _until(lambda: bool(sp) and hasattr(sp[0], "transport"))
    return tr, pr, sp[0]


async def test_pause_reading_and_write_flow_control(stacks) -> None:
    sa, sb = stacks
    tr, pr, server = await _connected(sa, sb, 7300)
    sp = [server]
    server_tr = sp[0].transport
    server_tr.pause_reading()
    paused = []
    pr.pause_writing = lambda: paused.append("pause")
    pr.resume_writing = lambda: paused.append("resume")
    blob = os.urandom(2_000_000)
    tr.write(blob)
    assert paused == ["pause"]
    await asyncio.sleep(0.2)
    assert len(sp[0].data) == 0           # nothing delivered while paused
    assert tr.get_write_buffer_size() > 0
    server_tr.resume_reading()
    await asyncio.wait_for(_until(lambda: len(sp[0].data) == len(blob)), 20)
    assert bytes(sp[0].data) == blob
    await asyncio.wait_for(_until(lambda: paused == ["pause", "resume"]), 5)
    assert sa.connections()[0]["state"] == "ESTABLISHED"
    tr.close()


async def test_server_async_with_and_serve_forever_cancel(stacks) -> None:
    sa, sb = stacks
    async with await sb.create_server(asyncio.Protocol, None, 0) as srv:
        assert srv.is_serving()
        port = srv.sockets[0].getsockname()[1]
        assert port > 0
        task = asyncio.ensure_future(srv.serve_forever())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not srv.is_serving()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(sa.create_connection(asyncio.Protocol, B, port), 5)


async def test_syn_loss_is_retransmitted(stacks) -> None:
    sa, sb = stacks
    await sb.create_server(asyncio.Protocol, None, 7400)
    sa.link.drop_next = 1                 # the first SYN is lost
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tr, _ = await asyncio.wait_for(sa.create_connection(asyncio.Protocol, B, 7400, ), 10)
    assert loop.time() - t0 >= 0.9        # initial RTO 1 s
    assert sa.counters["TCPSynRetrans"] >= 1 or sa.counters["RetransSegs"] >= 1
    tr.close()


async def test_connection_to_our_own_address(stacks) -> None:
    """Client and server on the same stack: segments loop back inside the core (like ``lo``)."""
    sa, _ = stacks

    async def echo(reader, writer):
        writer.write(await reader.read())
        await writer.drain()
        writer.close()

    await sa.start_server(echo, None, 7500)
    blob = os.urandom(500_000)
    reader, writer = await sa.open_connection(A, 7500)
    writer.write(blob)
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 10) == blob
    writer.close()
    assert sa.link.peer.pending == [] and sa.counters["ActiveOpens"] == 1 and sa.counters["PassiveOpens"] == 1
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(sa.create_connection(asyncio.Protocol, A, 7501), 5)


class OrderProto(asyncio.Protocol):
    """Records the order of connection_made, a callback it schedules, and the return of
    create_connection (``events``); ``ctx`` holds what connection_made saw of a context var."""

    def __init__(self, events: list, var) -> None:
        self.events = events
        self.var = var

    def connection_made(self, transport) -> None:
        self.events.append(("made", self.var.get(None)))
        self.var.set("set in connection_made")
        asyncio.get_running_loop().call_soon(self.events.append, "soon")


async def _order_of(create, var) -> list:
    events: list = []
    var.set("caller")
    tr, _ = await create(lambda: OrderProto(events, var))
    events.append(("returned", var.get(None)))
    tr.close()
    return events


async def test_create_connection_order_and_context_as_the_stock_loop(stacks, monkeypatch) -> None:
    """connection_made runs in a copy of the caller's context before create_connection returns,
    and a callback it schedules runs before the caller resumes -- as with the stock loop's
    selector transport (connection_made, then the waiter, as adjacent ready callbacks).  The
    first connection to an address takes the general path, the next ones the fast path."""
    import contextvars
    sa, sb = stacks
    await sb.create_server(asyncio.Protocol, None, 7600)
    loop = asyncio.get_running_loop()
    var = contextvars.ContextVar("order_test")
    general = []
    real = Stack._connect_sock

    async def counting(self, *a, **kw):
        general.append(1)
        return await real(self, *a, **kw)
    monkeypatch.setattr(Stack, "_connect_sock", counting)
    ours = [await _order_of(lambda f: sa.create_connection(f, B, 7600), var) for _ in range(3)]
    assert len(general) <= 1                       # (the address cache makes the rest fast)
    srv = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    stock = await _order_of(lambda f: loop.create_connection(f, "127.0.0.1", port), var)
    srv.close()
    expected = [("made", "caller"), "soon", ("returned", "caller")]
    assert stock == expected
    assert ours == [expected] * 3


async def test_create_connection_errors_same_on_both_paths(stacks) -> None:
    """Refused, refused again (fast path), and with ``all_errors``: the general path's errors."""
    sa, sb = stacks
    errs = []
    for _ in range(2):
        with pytest.raises(ConnectionRefusedError) as ei:
            await asyncio.wait_for(sa.create_connection(asyncio.Protocol, B, 9), 10)
        errs.append((type(ei.value), ei.value.errno, str(ei.value), ei.value.__suppress_context__))
    assert errs[0] == errs[1] == (ConnectionRefusedError, errno.ECONNREFUSED,
                                  f"[Errno {errno.ECONNREFUSED}] Connect call failed ('{B}', 9)", True)
    with pytest.raises(ExceptionGroup) as eg:
        await asyncio.wait_for(sa.create_connection(asyncio.Protocol, B, 9, all_errors=True), 10)
    (only,) = eg.value.exceptions
    assert isinstance(only, ConnectionRefusedError) and only.errno == errno.ECONNREFUSED
    assert not sa._transports and not sa.core.demux.conns


async def test_create_connection_cancelled_in_handshake(stacks) -> None:
    """Cancelled while the SYN is unanswered (on the fast path too): the connection is aborted
    (SYN_SENT: no RST), nothing is left in the stack, and the port is given back."""
    sa, sb = stacks
    await sb.create_server(asyncio.Protocol, None, 7700)
    tr, _ = await sa.create_connection(asyncio.Protocol, B, 7700)     # warms the address cache
    tr.close()
    await asyncio.sleep(0.05)
    before = dict(sa.core.demux.port_users)
    sa.link.drop_next = 100
    task = asyncio.ensure_future(sa.create_connection(asyncio.Protocol, B, 7700))
    await asyncio.sleep(0.05)
    assert any(c.state == "SYN_SENT" for c in sa.core.demux.conns.values())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    sa.link.drop_next = 0
    assert not any(getattr(c, "state", None) == "SYN_SENT" for c in sa.core.demux.conns.values())
    assert not [t for t in sa._transports if not t.is_closing()]
    assert dict(sa.core.demux.port_users) == before


async def test_writes_in_one_turn_fill_tso_frames_and_the_tail_follows(stacks) -> None:
    """transport.write holds a partial TSO frame after full ones while the protocol may still be
    writing in this turn of the loop (TcpConnection.send(more=True)): three 100,000-byte writes in
    one callback leave one partial segment on the wire instead of three, and the tail of a lone
    write goes out at the next turn (not after a timer)."""
    sa, sb = stacks
    tr, pr, server = await _connected(sa, sb, 7400)
    sp = [server]
    warm = os.urandom(3_000_000)               # open the congestion window first
    tr.write(warm)
    await asyncio.wait_for(_until(lambda: len(sp[0].data) == len(warm)), 20)
    mss = sa.connections()[0]["mss"]
    sizes: list[int] = []                      # TCP payload sizes of the frames B receives
    link = sb.link
    deliver = link.on_frames

    def record(batch):
        for frame, _ in batch:
            ihl = (frame[14] & 15) * 4
            total = int.from_bytes(frame[16:18], "big")
            doff = (frame[14 + ihl + 12] >> 4) * 4
            if total - ihl - doff:
                sizes.append(total - ihl - doff)
        deliver(batch)

    link.on_frames = record
    buf = bytearray(100_000)
    blob = b""
    for i in range(3):                          # one turn: the caller reuses its buffer
        buf[:] = os.urandom(len(buf))
        blob += bytes(buf)
        tr.write(buf)
    want = len(warm) + len(blob)
    await asyncio.wait_for(_until(lambda: len(sp[0].data) == want), 20)
    assert bytes(sp[0].data[len(warm):]) == blob
    assert sum(sizes) == len(blob)
    assert len([s for s in sizes if s < mss]) == 1, sizes
    sizes.clear()
    t0 = asyncio.get_running_loop().time()
    tr.write(bytes(100_000))
    await asyncio.wait_for(_until(lambda: len(sp[0].data) == want + 100_000, 0.001), 20)
    assert asyncio.get_running_loop().time() - t0 < 0.05
    assert sum(sizes) == 100_000 and len([s for s in sizes if s < mss]) == 1, sizes
    tr.close()
