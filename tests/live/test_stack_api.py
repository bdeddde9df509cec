"""Live: the asyncio surface of ``Stack`` (Transport, Server, errors) against the kernel's TCP.

Each test runs our stack in ns_a (shared mode unless stated) and a kernel peer in ns_b (blocking
sockets created inside ns_b, used from threads).
"""
from __future__ import annotations

import asyncio
import errno
import os
import shutil
import socket
import ssl
import struct
import subprocess

import pytest

from aiotcpstack import Stack
from aiotcpstack.host.netns import socket_in_netns

pytestmark = pytest.mark.timeout(120)
MB = 1024 * 1024


def kernel_listener(lab, port: int = 0) -> socket.socket:
    s = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((lab.addr_b, port))
    s.listen(8)
    s.settimeout(30)
    return s


def in_thread(fn, *args) -> asyncio.Future:
    return asyncio.get_running_loop().run_in_executor(None, fn, *args)


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.events: list = []
        self.data = bytearray()
        self.lost = asyncio.get_running_loop().create_future()
        self.eof = asyncio.Event()
        self.paused = 0
        self.resumed = 0
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self):
        self.events.append("eof")
        self.eof.set()
        return True     # keep open: we decide when to close

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1

    def connection_lost(self, exc) -> None:
        self.events.append(("lost", exc))
        if self.lost.done():
            raise AssertionError("connection_lost called twice")
        self.lost.set_result(exc)


async def test_extra_info_half_close_and_single_connection_lost(lab) -> None:
    ls = kernel_listener(lab)
    port = ls.getsockname()[1]

    def peer():
        c, _ = ls.accept()
        with c:
            got = b""
            while True:
                d = c.recv(65536)
                if not d:
                    break
                got += d
            c.sendall(b"reply:" + got)       # after our FIN: half-close works
        return got

    async with Stack(lab.if_a, netns=lab.ns_a) as stack:
        fut = in_thread(peer)
        tr, pr = await stack.create_connection(Recorder, lab.addr_b, port)
        assert pr.events == ["made"]
        assert tr.get_extra_info("peername") == (lab.addr_b, port)
        sockname = tr.get_extra_info("sockname")
        assert sockname[0] == lab.addr_a and 32768 <= sockname[1] <= 60999
        info = tr.get_extra_info("tcp_info")
        assert info["state"] == "ESTABLISHED" and info["mss"] > 0
        assert tr.can_write_eof()
        assert [c["state"] for c in stack.connections()] == ["ESTABLISHED"]
        assert stack.connections()[0]["remote"] == (lab.addr_b, port)
        tr.write(b"hello")
        tr.writelines([b" ", b"world"])
        tr.write_eof()
        assert await asyncio.wait_for(fut, 10) == b"hello world"
        await asyncio.wait_for(pr.eof.wait(), 10)
        assert bytes(pr.data) == b"reply:hello world"
        tr.close()
        assert tr.is_closing()
        assert await asyncio.wait_for(pr.lost, 10) is None
        await asyncio.sleep(0.05)
        assert pr.events == ["made", "eof", ("lost", None)]
    ls.close()


async def test_abort_resets_peer_and_peer_reset_reported(lab) -> None:
    ls = kernel_listener(lab)
    port = ls.getsockname()[1]

    def peer_expect_reset():
        c, _ = ls.accept()
        with c:
            c.settimeout(10)
            try:
                while c.recv(65536):
                    pass
            except ConnectionResetError:
                return "reset"
            return "eof"

    def peer_send_reset():
        c, _ = ls.accept()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.recv(5)
        c.close()                              # linger 0: RST

    async with Stack(lab.if_a, netns=lab.ns_a) as stack:
        fut = in_thread(peer_expect_reset)
        tr, pr = await stack.create_connection(Recorder, lab.addr_b, port)
        tr.write(b"x" * 1000)
        await asyncio.sleep(0.05)
        tr.abort()
        assert await asyncio.wait_for(fut, 10) == "reset"
        assert await asyncio.wait_for(pr.lost, 5) is None

        fut = in_thread(peer_send_reset)
        tr, pr = await stack.create_connection(Recorder, lab.addr_b, port)
        tr.write(b"hello")
        await asyncio.wait_for(fut, 10)
        exc = await asyncio.wait_for(pr.lost, 10)
        assert isinstance(exc, ConnectionResetError) and exc.errno == errno.ECONNRESET
        assert stack.counters["EstabResets"] >= 1 or stack.counters["InSegs"] > 0
    ls.close()


async def test_pause_reading_closes_window_and_loses_nothing(lab) -> None:
    ls = kernel_listener(lab)
    port = ls.getsockname()[1]
    payload = os.urandom(6 * MB)
    progress = {"sent": 0}

    def peer():
        c, _ = ls.accept()
        with c:
            view = memoryview(payload)
            while view:
                n = c.send(view[:65536])
                progress["sent"] += n
                view = view[n:]
        return True

    async with Stack(lab.if_a, netns=lab.ns_a, rcvbuf=262144, rcvbuf_max=262144) as stack:
        tr, pr = await stack.create_connection(Recorder, lab.addr_b, port)
        tr.pause_reading()
        assert not tr.is_reading()
        fut = in_thread(peer)
        await asyncio.sleep(1.0)
        # the kernel's socket buffers plus our window: far from 6 MB
        assert len(pr.data) == 0
        stalled_at = progress["sent"]
        assert stalled_at < len(payload)
        await asyncio.sleep(0.3)
        assert progress["sent"] == stalled_at          # window closed: sender stuck
        tr.resume_reading()
        assert tr.is_reading()
        assert await asyncio.wait_for(fut, 30)
        await asyncio.wait_for(pr.eof.wait(), 30)
        assert bytes(pr.data) == payload
        tr.close()
    ls.close()


class BufProto(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.buf = bytearray(1000)          # deliberately small: many get_buffer calls
        self.data = bytearray()
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int):
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self.buf[:nbytes]

    def eof_received(self):
        return False

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(exc)


async def test_buffered_protocol_and_write_flow_control(lab) -> None:
    ls = kernel_listener(lab)
    port = ls.getsockname()[1]
    blob = os.urandom(3 * MB)

    def echo_peer():
        c, _ = ls.accept()
        with c:
            got = bytearray()
            while True:
                d = c.recv(1 << 20)
                if not d:
                    break
                got += d
            c.sendall(got)
        return bytes(got)

    async with Stack(lab.if_a, netns=lab.ns_a) as stack:
        fut = in_thread(echo_peer)
        tr, pr = await stack.create_connection(BufProto, lab.addr_b, port)
        rec = Recorder()
        # a Recorder-like flow-control observer: wrap the protocol's callbacks
        tr.set_write_buffer_limits(high=64 * 1024)
        assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        pr.pause_writing = lambda: rec.pause_writing()
        pr.resume_writing = lambda: rec.resume_writing()
        tr.write(blob)
        assert tr.get_write_buffer_size() > 0
        assert rec.paused == 1
        tr.write_eof()
        assert await asyncio.wait_for(fut, 30) == blob
        assert await asyncio.wait_for(pr.done, 30) is None
        assert bytes(pr.data) == blob
        assert rec.resumed == 1
    ls.close()


async def test_server_lifecycle(lab) -> None:
    async with Stack(lab.if_a, netns=lab.ns_a) as stack:
        conns = []

        async def handler(reader, writer):
            conns.append(writer)
            data = await reader.read()
            writer.write(data.upper())
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await stack.start_server(handler, lab.addr_a, 0, start_serving=False)
        assert not server.is_serving()
        port = server.sockets[0].getsockname()[1]
        assert server.sockets[0].getsockname() == (lab.addr_a, port)
        assert server.get_loop() is asyncio.get_running_loop()

        def client():
            s = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
            with s:
                s.settimeout(10)
                s.connect((lab.addr_a, port))
                s.sendall(b"abc")
                s.shutdown(socket.SHUT_WR)
                out = b""
                while True:
                    d = s.recv(100)
                    if not d:
                        return out
                    out += d

        fut = in_thread(client)          # connects before we serve: waits in the accept queue
        await asyncio.sleep(0.2)
        assert conns == []
        task = asyncio.ensure_future(server.serve_forever())
        assert await asyncio.wait_for(fut, 10) == b"ABC"
        assert server.is_serving()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not server.is_serving() and server.sockets == ()
        await asyncio.wait_for(server.wait_closed(), 5)

        def refused():
            s = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
            with s:
                s.settimeout(5)
                try:
                    s.connect((lab.addr_a, port))
                except ConnectionRefusedError:
                    return "refused"
                except OSError as exc:
                    return repr(exc)
                return "connected"
        # the port was released with the server: the kernel owns it again and refuses
        assert await in_thread(refused) == "refused"

        async with await stack.create_server(asyncio.Protocol, None, 0) as srv2:
            assert srv2.is_serving()
        assert not srv2.is_serving()


async def test_syn_timeout_in_dedicated_mode(lab) -> None:
    # nobody owns .250: ARP goes unanswered, the SYN retries run out
    dead = str(lab.network.network_address + 250)
    async with Stack(lab.if_a, netns=lab.ns_a, address=f"{lab.spare_addr}/24",
                     syn_retries=1, rto_initial=0.2) as stack:
        with pytest.raises(TimeoutError) as ei:
            await asyncio.wait_for(stack.create_connection(asyncio.Protocol, dead, 80), 20)
        assert ei.value.errno == errno.ETIMEDOUT
        assert stack.connections() == []


async def test_stack_rejects_sock_and_unknown_options(lab) -> None:
    with pytest.raises(TypeError, match="bogus"):
        Stack(lab.if_a, netns=lab.ns_a, bogus=1)
    async with Stack(lab.if_a, netns=lab.ns_a, nodelay=True) as stack:
        with pytest.raises(ValueError):
            await stack.create_connection(asyncio.Protocol, sock=socket.socket())
        with pytest.raises(ValueError):
            await stack.create_server(asyncio.Protocol, sock=socket.socket())


@pytest.fixture
def tls_files(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not installed (needed to make a test certificate)")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=aiotcpstack.test",
                    "-addext", "subjectAltName=DNS:aiotcpstack.test"],
                   check=True, capture_output=True)
    return str(cert), str(key)


async def test_tls_both_directions_over_our_stack(lab, tls_files) -> None:
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=cert)
    payload = os.urandom(MB)
    # our TLS server <- kernel TLS client
    async with Stack(lab.if_a, netns=lab.ns_a) as stack:
        async def handler(reader, writer):
            data = await reader.readexactly(len(payload))
            writer.write(data[::-1])
            await writer.drain()
            writer.close()

        server = await stack.start_server(handler, None, 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]

        def kernel_tls_client():
            raw = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
            raw.settimeout(20)
            raw.connect((lab.addr_a, port))
            with client_ctx.wrap_socket(raw, server_hostname="aiotcpstack.test") as s:
                s.sendall(payload)
                out = bytearray()
                while len(out) < len(payload):
                    d = s.recv(65536)
                    if not d:
                        break
                    out += d
                return bytes(out)

        assert await asyncio.wait_for(in_thread(kernel_tls_client), 30) == payload[::-1]
        server.close()

        # our TLS client -> kernel TLS server
        ls = kernel_listener(lab)
        kport = ls.getsockname()[1]

        def kernel_tls_server():
            c, _ = ls.accept()
            with server_ctx.wrap_socket(c, server_side=True) as s:
                data = bytearray()
                while len(data) < len(payload):
                    d = s.recv(65536)
                    if not d:
                        break
                    data += d
                s.sendall(bytes(data[::-1]))
            return True

        fut = in_thread(kernel_tls_server)
        reader, writer = await stack.open_connection(lab.addr_b, kport, ssl=client_ctx,
                                                     server_hostname="aiotcpstack.test")
        writer.write(payload)
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(len(payload)), 30) == payload[::-1]
        assert writer.get_extra_info("peercert") is not None
        writer.close()
        assert await asyncio.wait_for(fut, 10)
        ls.close()


async def test_pcap_option_records_frames(lab, tmp_path) -> None:
    path = tmp_path / "stack.pcap"
    loop = asyncio.get_running_loop()
    async with Stack(lab.if_a, netns=lab.ns_a, address=f"{lab.spare_addr}/24", pcap=str(path)) as stack:
        res = await loop.run_in_executor(
            None, lambda: lab.run(lab.ns_b, ["ping", "-c", "2", "-i", "0.2", "-W", "2", lab.spare_addr], check=False))
        assert res.returncode == 0
    data = path.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1"          # pcap magic (little endian, us)
    assert len(data) > 24 + 4 * (16 + 42)           # ARP request/reply + 2 echo request/reply pairs


async def test_request_response_latency_no_nagle_stalls(lab) -> None:
    """asyncio sets TCP_NODELAY on its sockets; so do we: small request/response exchanges must
    not wait for delayed ACKs (200 round trips would take >= 8 s with 40 ms stalls)."""
    ls = kernel_listener(lab)
    port = ls.getsockname()[1]

    def echo():
        c, _ = ls.accept()
        with c:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                d = c.recv(65536)
                if not d:
                    return
                c.sendall(d)

    loop = asyncio.get_running_loop()
    async with Stack(lab.if_a, netns=lab.ns_a) as stack:
        fut = in_thread(echo)
        reader, writer = await stack.open_connection(lab.addr_b, port)
        t0 = loop.time()
        for i in range(200):
            msg = b"%05d" % i + b"q" * 95
            writer.write(msg[:50])
            writer.write(msg[50:])          # two small writes per request (Nagle would hold the 2nd)
            assert await asyncio.wait_for(reader.readexactly(100), 5) == msg
        elapsed = loop.time() - t0
        writer.close()
        await fut
        assert elapsed < 4.0, f"200 round trips took {elapsed:.2f} s"
    ls.close()


async def test_start_tls_upgrade(lab, tls_files) -> None:
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=cert)
    ls = kernel_listener(lab)
    port = ls.getsockname()[1]

    def kernel_starttls_server():
        c, _ = ls.accept()
        f = c.makefile("rb")
        assert f.readline() == b"STARTTLS\n"
        c.sendall(b"OK\n")
        with server_ctx.wrap_socket(c, server_side=True) as s:
            data = s.recv(100)
            s.sendall(b"secure:" + data)
        return True

    async with Stack(lab.if_a, netns=lab.ns_a) as stack:
        fut = in_thread(kernel_starttls_server)
        reader, writer = await stack.open_connection(lab.addr_b, port)
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"OK\n"
        await writer.start_tls(client_ctx, server_hostname="aiotcpstack.test")
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(11), 10) == b"secure:ping"
        assert writer.get_extra_info("peercert") is not None
        writer.close()
        assert await asyncio.wait_for(fut, 10)
    ls.close()


async def test_client_and_server_on_the_same_stack(lab) -> None:
    async with Stack(lab.if_a, netns=lab.ns_a) as stack:
        async def echo(reader, writer):
            writer.write(await reader.read())
            await writer.drain()
            writer.close()

        server = await stack.start_server(echo, None, 0)
        port = server.sockets[0].getsockname()[1]
        blob = os.urandom(4 * MB)
        reader, writer = await stack.open_connection(lab.addr_a, port)
        writer.write(blob)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 20) == blob
        writer.close()
        server.close()
