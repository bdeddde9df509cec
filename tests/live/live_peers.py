"""Peers and helpers shared by the live tests: an asyncio echo handler for our servers, a blocking
kernel echo client that runs in the lab's peer namespace (ns_b), polling and nft listing."""
from __future__ import annotations

import asyncio
import socket
import threading

from aiotcpstack.host.netns import socket_in_netns


async def echo_cb(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until EOF, then close; a reset peer aborts the connection."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
    except ConnectionError:
        writer.transport.abort()


def kernel_echo_client(lab, host: str, port: int, data: bytes, timeout: float = 60.0,
                       ip_options: bytes | None = None) -> bytes:
    """A kernel TCP client in ``lab.ns_b``: send ``data``, half-close, return everything echoed;
    ``ip_options``: its ``setsockopt(IP_OPTIONS)`` before connecting."""
    s = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
    if ip_options is not None:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, ip_options)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        got = bytearray()
        while b := s.recv(65536):
            got += b
        return bytes(got)
    finally:
        s.close()


async def wait_for(pred, timeout: float, step: float = 0.02) -> bool:
    """Poll ``pred()`` on the running loop until it is true or ``timeout`` passes; its last value."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if pred():
            return True
        await asyncio.sleep(step)
    return pred()


def kernel_can_bind(ns: str, addr: str, port: int) -> bool:
    """Whether a kernel socket in ``ns`` can bind ``(addr, port)`` (``addr``'s family; "::" or
    "0.0.0.0" for the wildcard): False while the port is reserved or in use."""
    s = socket_in_netns(ns, socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((addr, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def nft_ruleset(lab, ns: str) -> str:
    """The whole nftables ruleset of namespace ``ns`` (to compare before / after)."""
    return lab.run(ns, ["nft", "list", "ruleset"]).stdout


class KernelAcceptor:
    """A kernel listener in ``lab.ns_b`` (``port``) that accepts ``n`` connections in a thread
    once :meth:`start` is called, keeping them open in ``accepted`` until :meth:`close`."""

    def __init__(self, lab, n: int, backlog: int = 16, timeout: float = 30.0) -> None:
        self.sock = socket_in_netns(lab.ns_b, socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((lab.addr_b, 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._n = n
        self._timeout = timeout
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.sock.settimeout(self._timeout)
        for _ in range(self._n):
            self.accepted.append(self.sock.accept()[0])

    def start(self) -> "KernelAcceptor":
        self.thread.start()
        return self

    def close(self) -> None:
        self.sock.close()
        for c in self.accepted:
            c.close()


def kernel_connect(lab, addr: str, port: int, timeout: float) -> str:
    """A kernel client in ``lab.ns_b`` (IPv4 or IPv6 by ``addr``): "connected", "refused" (RST)
    or "timeout"."""
    s = socket_in_netns(lab.ns_b, socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((addr, port))
        return "connected"
    except ConnectionRefusedError:
        return "refused"
    except (TimeoutError, socket.timeout):
        return "timeout"
    finally:
        s.close()
