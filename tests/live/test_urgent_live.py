"""Live: urgent data between our stack and the kernel's TCP, both directions (RFC 9293 3.8.5,
RFC 6093).

* kernel -> us: a kernel client sends with ``MSG_OOB`` (with and without ``SO_OOBINLINE`` set on
  its own socket, which must change nothing on the wire); our protocol's
  ``urgent_data_received`` is called once, before the data, with the count that puts the mark
  right after the urgent bytes, and every byte arrives in line.  A 100 kB urgent write (the
  kernel sends pointer 0xFFFF until the mark is within reach) ends with RCV.UP at the true mark.
* us -> kernel: ``transport.write_urgent`` seen by a Linux receiver as Linux-to-Linux would be:
  ``select`` reports the exceptional condition, ``recv`` stops at the mark (``SIOCATMARK``, i.e.
  ``sockatmark()``), ``recv(MSG_OOB)`` returns the last urgent byte; with ``SO_OOBINLINE`` the
  byte stays in line and the mark is right before it.  Small and 100 kB urgent writes.
"""
from __future__ import annotations

import asyncio
import fcntl
import select
import socket
import struct
import threading

import pytest

from aiotcpstack import Stack
from aiotcpstack.host.netns import socket_in_netns

pytestmark = pytest.mark.timeout(120)

SIOCATMARK = 0x8905            # linux/sockios.h: sockatmark()'s ioctl


def atmark(s: socket.socket) -> bool:
    return struct.unpack("i", fcntl.ioctl(s.fileno(), SIOCATMARK, b"\0" * 4))[0] == 1


class UrgentRecorder(asyncio.Protocol):
    """Records the stream and, for each urgent notification, where in it the mark falls."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.data = bytearray()
        self.marks: list[int] = []
        self.pending_at_signal: list[int] = []
        self.told: list[int] = []
        self.later_marks: list[int] = []     # the mark as the query saw it after each delivery
        self.transport: asyncio.Transport | None = None
        self.made = loop.create_future()
        self.done = loop.create_future()

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.made.set_result(None)

    def urgent_data_received(self, pending: int) -> None:
        self.marks.append(len(self.data) + pending)
        self.told.append(pending)
        self.pending_at_signal.append(self.transport.get_extra_info("urgent_pending"))

    def data_received(self, data: bytes) -> None:
        self.data += data
        n = self.transport.get_extra_info("urgent_pending")
        if n:
            self.later_marks.append(len(self.data) + n)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_result(exc)


@pytest.mark.parametrize("oobinline", [False, True])
@pytest.mark.parametrize("size", [3, 100_000])
async def test_kernel_sends_msg_oob_to_us(lab, size: int, oobinline: bool) -> None:
    urgent = b"u" * (size - 1) + b"!"
    protos: list[UrgentRecorder] = []

    def factory() -> UrgentRecorder:
        p = UrgentRecorder()
        protos.append(p)
        return p

    def client(port: int) -> None:
        s = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
        with s:
            s.settimeout(30)
            if oobinline:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
            s.connect((lab.addr_a, port))
            s.sendall(b"head")
            _send_all_oob(s, urgent)
            s.sendall(b"tail")
            s.shutdown(socket.SHUT_WR)
            s.recv(1)                                          # our close

    async with Stack(lab.if_a, netns=lab.ns_a) as stack:
        server = await stack.create_server(factory, None, 0)
        port = server.sockets[0].getsockname()[1]
        t = threading.Thread(target=client, args=(port,), daemon=True)
        t.start()
        for _ in range(300):
            if protos:
                break
            await asyncio.sleep(0.01)
        p = protos[0]
        await asyncio.wait_for(p.made, 10)
        while not (bytes(p.data).endswith(b"tail") and len(p.data) == 8 + size):
            await asyncio.sleep(0.01)
        conn = p.transport.get_extra_info("connection")
        assert bytes(p.data) == b"head" + urgent + b"tail"      # all in line
        if size < 0xFFFF:
            assert p.marks == [4 + size]                         # the first non-urgent octet, once
        else:
            # pointers of 0xFFFF while the mark is far: each says "at least this far"; the
            # mark moves on within a run without a second signal (RFC 9293: one per run; a run
            # the application read through is over, and a later pointer starts a new one),
            # and the query after each delivery follows it to the true mark
            assert p.marks == sorted(set(p.marks)) and 4 < p.marks[0] <= 4 + size
            assert max(p.later_marks + p.marks) == 4 + size
        assert p.pending_at_signal == p.told                     # the query agreed at that time
        assert conn.rcv_up == (conn.irs + 1 + 4 + size) & 0xFFFFFFFF
        assert p.transport.get_extra_info("urgent_pending") == 0
        p.transport.close()
        await asyncio.wait_for(p.done, 10)
        server.close()
    t.join(10)
    assert not t.is_alive()


def _send_all_oob(s: socket.socket, data: bytes) -> None:
    """``send(MSG_OOB)`` until all of ``data`` is queued: the mark moves to the end of each
    call's bytes, so the last call leaves it after the last one (as one large send would)."""
    view = memoryview(data)
    while view:
        n = s.send(view, socket.MSG_OOB)
        view = view[n:]


@pytest.mark.parametrize("oobinline", [False, True])
@pytest.mark.parametrize("size", [3, 100_000])
async def test_we_send_urgent_to_the_kernel(lab, size: int, oobinline: bool) -> None:
    urgent = (b"U" * (size - 1)) + b"Z"
    result: dict = {}
    srv = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # room for everything before the reader starts: it waits for the exceptional condition
    # (the urgent byte arrived) first, and a 100 kB write must not stall on a closed window
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    srv.bind((lab.addr_b, 0))
    srv.listen(4)
    port = srv.getsockname()[1]

    def server() -> None:
        try:
            srv.settimeout(30)
            c, _ = srv.accept()
            with c:
                c.settimeout(30)
                if oobinline:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
                # the exceptional condition: urgent data is pending (tcp_poll's EPOLLPRI)
                _r, _w, x = select.select([], [], [c], 30)
                result["select"] = bool(x)
                before = bytearray()
                while not atmark(c):                           # recv stops at the mark
                    d = c.recv(65536)
                    if not d:
                        break
                    before += d
                result["before"] = bytes(before)
                if oobinline:
                    result["oob"] = None
                else:
                    result["oob"] = c.recv(1, socket.MSG_OOB)
                result["rest"] = b"".join(iter(lambda: c.recv(65536), b""))     # to EOF
        except BaseException as exc:  # noqa: BLE001
            result["error"] = exc

    t = threading.Thread(target=server, daemon=True)
    t.start()
    try:
        async with Stack(lab.if_a, netns=lab.ns_a) as stack:
            transport, p = await stack.create_connection(UrgentRecorder, lab.addr_b, port)
            transport.write(b"head")
            transport.write_urgent(urgent)
            transport.write(b"tail")
            transport.write_eof()
            await asyncio.wait_for(p.done, 30)
        t.join(10)
        assert "error" not in result, result.get("error")
        assert result["select"]
        # Linux's mark is the last urgent octet (our pointer names the octet after it, RFC 6093,
        # and Linux with tcp_stdurg=0 reads it so): the data before it, then it
        assert result["before"] == b"head" + urgent[:-1]
        if oobinline:
            assert result["rest"] == b"Z" + b"tail"
        else:
            assert result["oob"] == b"Z"
            assert result["rest"] == b"tail"
    finally:
        srv.close()
        t.join(5)
