"""Urgent data through the aio layer: ``transport.write_urgent`` on one in-memory Stack, the
peer protocol's optional ``urgent_data_received`` on the other (told once, before the data, the
data in line), ``get_extra_info('urgent_pending')`` and the pseudo-socket's ``sockatmark()``; a
stock protocol without the method gets the bytes unchanged; a notification held before
``connection_made`` is replayed in order and the query counts the bytes still held."""
from __future__ import annotations

import asyncio

from aiotcpstack.aio.transport import TcpTransport

from test_ip_aio_loopback import B, stacks  # noqa: F401  (the fixture)


class Urgent(asyncio.Protocol):
    def __init__(self) -> None:
        self.log: list = []
        self.data = bytearray()
        self.transport = None
        self.more = asyncio.Event()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def urgent_data_received(self, pending: int) -> None:
        sock = self.transport.get_extra_info("socket")
        self.log.append(("urgent", pending, self.transport.get_extra_info("urgent_pending"), sock.sockatmark()))

    def data_received(self, data: bytes) -> None:
        self.data += data
        sock = self.transport.get_extra_info("socket")
        self.log.append(("data", bytes(data), self.transport.get_extra_info("urgent_pending"), sock.sockatmark()))
        self.more.set()


class Plain(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.more = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.more.set()


async def collect(p, n: int) -> None:
    while len(p.data) < n:
        p.more.clear()
        await asyncio.wait_for(p.more.wait(), 5)


async def test_write_urgent_reaches_the_peer_protocol(stacks) -> None:  # noqa: F811
    sa, sb = stacks
    got: list = []
    srv = await sb.create_server(lambda: got.append(Urgent()) or got[-1], B, 7400)
    tr, _cl = await sa.create_connection(asyncio.Protocol, B, 7400)
    while not got or got[0].transport is None:
        await asyncio.sleep(0.001)
    p = got[0]
    tr.write(b"head")
    await collect(p, 4)
    tr.write_urgent(b"URGENT")
    await collect(p, 10)
    tr.write(b"tail")
    await collect(p, 14)
    assert bytes(p.data) == b"headURGENTtail"                          # in line
    urg = [e for e in p.log if e[0] == "urgent"]
    assert urg == [("urgent", 6, 6, False)]                              # once, before its data
    i = p.log.index(urg[0])
    assert p.log[i + 1][:3] == ("data", b"URGENT", 0)                   # handed over: none left
    assert p.transport.get_extra_info("urgent_pending") == 0
    # one urgent octet: the next octet handed over is the mark's (sockatmark, SO_OOBINLINE)
    tr.write_urgent(b"!")
    await collect(p, 15)
    assert [e for e in p.log if e[0] == "urgent"][-1] == ("urgent", 1, 1, True)
    tr.close()
    srv.close()


async def test_protocol_without_the_callback_gets_the_bytes(stacks) -> None:  # noqa: F811
    sa, sb = stacks
    got: list = []
    srv = await sb.create_server(lambda: got.append(Plain()) or got[-1], B, 7401)
    tr, _cl = await sa.create_connection(asyncio.Protocol, B, 7401)
    tr.write_urgent(b"!!")
    tr.write(b"after")
    while not got:
        await asyncio.sleep(0.001)
    await collect(got[0], 7)
    assert bytes(got[0].data) == b"!!after"
    tr.close()
    srv.close()


class FakeConn:
    """What the transport asks of a connection for urgent data: 8 octets were handed to the
    transport, the mark is after the 8th."""

    local = (bytes([198, 18, 0, 1]), 1)
    remote = (bytes([198, 18, 0, 2]), 2)

    def urgent_pending_after(self, held: int) -> int:
        return held

    @property
    def urgent_pending(self) -> int:
        return 0


async def test_notification_held_before_connection_made_is_replayed_in_order() -> None:
    loop = asyncio.get_running_loop()
    t = TcpTransport(None, loop, FakeConn())
    t.tcp_data(b"abc")
    t.tcp_urgent(5)                                                      # "defgh" are urgent
    t.tcp_data(b"defgh")
    p = Urgent()
    p.transport = t
    log: list = []
    p.urgent_data_received = lambda n: log.append(("urgent", n, t.get_extra_info("urgent_pending")))
    p.data_received = lambda d: log.append(("data", bytes(d)))
    t._start(p)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    # the count given and the query agree: "defgh" was still held when it was told
    assert log == [("data", b"abc"), ("urgent", 5, 5), ("data", b"defgh")]
