"""Pseudo-sockets: what ``Server.sockets`` holds on the drop-in loop (there is no kernel socket).

Enough of ``asyncio.trsock.TransportSocket`` for code that reads the bound address or sets the
usual TCP options on a server socket:

* ``family``, ``type`` (``SOCK_STREAM``), ``proto`` (``IPPROTO_TCP``), ``getsockname()``,
  ``getpeername()`` (``ENOTCONN`` for a listener);
* ``fileno()`` is ``-1`` (no descriptor; also once closed, like a closed socket);
* ``setsockopt`` / ``getsockopt`` of ``TCP_NODELAY``, ``SO_KEEPALIVE``, ``TCP_KEEPIDLE`` /
  ``TCP_KEEPINTVL`` / ``TCP_KEEPCNT``, ``SO_RCVBUF``, ``SO_SNDBUF`` are mapped onto the
  listener's :class:`~aiotcpstack.tcp.config.TcpConfig` (i.e. the connections it accepts from
  then on, as options set on a listening socket are inherited by ``accept()``-ed ones);
* ``IP_TTL``, ``IP_TOS``, ``IPV6_UNICAST_HOPS``, ``IPV6_TCLASS`` with Linux's semantics
  (``do_ip_setsockopt`` / ``do_ipv6_setsockopt``, checked against the kernel): TTL -1 or 1..255,
  hop limit -1..255 (-1: the stack's ``ip_default_ttl`` / ``ipv6_hop_limit``, which getsockopt
  then reports); IP_TOS any int, its low byte kept; traffic class -1..255 (-1: 0); the two ECN bits
  of both are cleared (TCP keeps them under its own control, ``__ip_sock_set_tos``: ECT(0) on
  new data of an ECN connection, tcp/ecn.py);
  out of range: ``EINVAL``; IPv6-level options on an AF_INET socket: ``ENOPROTOOPT`` (set) /
  ``EOPNOTSUPP`` (get), as Linux.  On a connection they take effect from its next segment,
  retransmissions included; on a listener, for its SYN-ACKs and the connections it accepts;
  the IPv4 options on an AF_INET6 socket are kept but, as in Linux for a non-mapped peer, unused;
* ``IP_OPTIONS`` (bytes, RFC 9293 3.9.2.1 MUST-51) as Linux's ``ip_options_get``: validated
  (``EINVAL`` for what Linux rejects), padded to whole words; a source route lists its hops, the
  final destination being the connection's.  On a connection from its next segment (the MSS
  shrinks to leave room), replacing a route echoed from the peer's SYN (MUST-52); on a listener
  for its SYN-ACKs and accepted connections (Linux does not pass them on: a departure, so that a
  server can impose its route).  ``getsockopt(IPPROTO_IP, IP_OPTIONS, buflen)`` returns what the
  connection sends -- also a reversed source route received with the peer's SYN (MUST-53) -- in
  the application's form (``ip_options_undo``); empty on IPv6 (AF_INET6 sockets keep them unused);
* ``SO_REUSEPORT`` / ``SO_REUSEADDR`` read back what ``create_server`` was given (setting them
  only records the value: the stack's own port table decides conflicts);
* ``sockatmark()`` on a connection's pseudo-socket (``transport.get_extra_info('socket')``):
  whether the next octet handed to ``data_received`` is the last urgent one (urgent data stays in
  line, as with ``SO_OOBINLINE``; see docs/architecture.md "Urgent data");
* every other option, and every other socket method, is a clear ``OSError(ENOPROTOOPT)`` /
  ``AttributeError`` -- never a silent no-op.
"""
from __future__ import annotations

import errno
import socket
import struct
from typing import Any, Callable

__all__ = ["PseudoSocket"]

_TCP = socket.IPPROTO_TCP
_SOL = socket.SOL_SOCKET
_IP = socket.IPPROTO_IP
_IP6 = socket.IPPROTO_IPV6
_ECN_MASK = 3            # INET_ECN_MASK: the low two bits of the TOS / traffic class

#: (level, option) -> (TcpConfig field, kind)
_CONFIG_OPTS: dict[tuple[int, int], tuple[str, str]] = {
    (_TCP, socket.TCP_NODELAY): ("nodelay", "bool"),
    (_SOL, socket.SO_KEEPALIVE): ("keepalive", "bool"),
    (_SOL, socket.SO_RCVBUF): ("rcvbuf", "int"),
    (_SOL, socket.SO_SNDBUF): ("sndbuf", "int"),
}
for _name, _field in (("TCP_KEEPIDLE", "keepalive_time"), ("TCP_KEEPINTVL", "keepalive_intvl"),
                      ("TCP_KEEPCNT", "keepalive_probes")):
    if hasattr(socket, _name):
        _CONFIG_OPTS[(_TCP, getattr(socket, _name))] = (_field, "int")
#: (level, option) -> TcpConfig field of the IP header options (checked by _ip_value)
_IP_OPTS: dict[tuple[int, int], str] = {
    (_IP, socket.IP_TTL): "ip_ttl",
    (_IP, socket.IP_TOS): "ip_tos",
    (_IP6, socket.IPV6_UNICAST_HOPS): "ipv6_unicast_hops",
    (_IP6, socket.IPV6_TCLASS): "ipv6_tclass",
}
_IP_OPTIONS_KEY = (_IP, getattr(socket, "IP_OPTIONS", 4))
#: the stack default that getsockopt reports for a field left at -1
_IP_DEFAULTS = {"ip_ttl": "ip_default_ttl", "ipv6_unicast_hops": "ipv6_hop_limit"}


def _ip_value(field: str, value: int) -> int:
    """The value Linux stores for ``setsockopt(field's option, value)`` on a TCP socket, or
    ``OSError(EINVAL)``: ``IP_TTL`` -1 / 1..255; ``IPV6_UNICAST_HOPS`` -1..255; ``IP_TOS``
    truncated to its low byte; ``IPV6_TCLASS`` -1..255 with -1 meaning 0; both TOS forms with
    the ECN bits cleared (RFC 3168 6.1.1: ECN is the transport's; Linux masks them for TCP)."""
    if field == "ip_ttl":
        if value != -1 and not 1 <= value <= 255:
            raise OSError(errno.EINVAL, "Invalid argument")
        return value
    if field == "ipv6_unicast_hops":
        if not -1 <= value <= 255:
            raise OSError(errno.EINVAL, "Invalid argument")
        return value
    if field == "ip_tos":
        return value & 0xFF & ~_ECN_MASK
    if not -1 <= value <= 255:                       # ipv6_tclass
        raise OSError(errno.EINVAL, "Invalid argument")
    return 0 if value == -1 else value & ~_ECN_MASK


#: (level, option) -> flag name (recorded only)
_FLAG_OPTS: dict[tuple[int, int], str] = {(_SOL, socket.SO_REUSEADDR): "reuse_address"}
if hasattr(socket, "SO_REUSEPORT"):
    _FLAG_OPTS[(_SOL, socket.SO_REUSEPORT)] = "reuse_port"


def _opt_name(level: int, opt: int) -> str:
    prefix = (("TCP_",) if level == _TCP else ("SO_",) if level == _SOL else ("IP_",) if level == _IP
              else ("IPV6_",) if level == _IP6 else ())
    for name in dir(socket):
        if name.startswith(prefix) and getattr(socket, name) == opt:
            return name
    return f"level={level} option={opt}"


class PseudoSocket:
    """A listening endpoint of a :class:`~aiotcpstack.aio.server.Server` (one per listener)."""

    def __init__(self, family: int, addr: tuple, *, get_config: Callable[[], Any] | None = None,
                 set_config: Callable[[Any], None] | None = None,
                 flags: dict[str, bool] | None = None,
                 urgent_pending: Callable[[], int] | None = None,
                 ip_options: Callable[[], bytes] | None = None) -> None:
        self.family = family
        self.type = socket.SOCK_STREAM
        self.proto = socket.IPPROTO_TCP
        self._addr = addr
        self._get_config = get_config
        self._set_config = set_config
        self._flags = {"reuse_address": False, "reuse_port": False}
        if flags:
            self._flags.update({k: bool(v) for k, v in flags.items() if v is not None})
        self._closed = False
        self._urgent_pending = urgent_pending
        self._ip_options = ip_options      # what a connection sends (getsockopt IP_OPTIONS)

    # ---------------------------------------------------------------- TransportSocket-like
    def getsockname(self) -> tuple:
        return self._addr

    def getpeername(self) -> tuple:
        raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")

    def fileno(self) -> int:
        return -1

    def gettimeout(self) -> float:
        return 0.0

    def _close(self) -> None:            # the Server's listener was closed
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "Bad file descriptor (the server is closed)")

    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:
        self._check_open()
        key = (level, optname)
        if key == _IP_OPTIONS_KEY and self._get_config is not None and self._set_config is not None:
            self._set_ip_options(value)
            return
        if isinstance(value, (bytes, bytearray)):
            value = struct.unpack("i", bytes(value[:4]).ljust(4, b"\0"))[0]
        if value is None or not isinstance(value, int):
            raise TypeError(f"setsockopt() value must be an int or bytes, not {type(value).__name__}")
        if key in _FLAG_OPTS:
            self._flags[_FLAG_OPTS[key]] = bool(value)
            return
        if key in _IP_OPTS and self._get_config is not None and self._set_config is not None:
            if level == _IP6 and self.family != socket.AF_INET6:
                raise OSError(errno.ENOPROTOOPT, "Protocol not available")
            field = _IP_OPTS[key]
            self._set_config(self._get_config().with_options(**{field: _ip_value(field, value)}))
            return
        if key not in _CONFIG_OPTS or self._get_config is None or self._set_config is None:
            raise OSError(errno.ENOPROTOOPT, f"aiotcpstack pseudo-socket: {_opt_name(level, optname)} is not "
                          "supported (no kernel socket; use the Stack's options)")
        field, kind = _CONFIG_OPTS[key]
        if kind == "int" and value <= 0:
            raise OSError(errno.EINVAL, "Invalid argument")
        cfg = self._get_config()
        self._set_config(cfg.with_options(**{field: bool(value) if kind == "bool" else int(value)}))

    def _set_ip_options(self, value: Any) -> None:
        """``setsockopt(IPPROTO_IP, IP_OPTIONS, bytes)``: Linux ``ip_options_get`` -- at most 40
        octets, validated (``EINVAL``), kept as given; b"" removes them."""
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"IP_OPTIONS takes bytes, not {type(value).__name__}")
        raw = bytes(value)
        if len(raw) > 40:
            raise OSError(errno.EINVAL, "Invalid argument")
        from ..wire.ipv4_options import IpOptionError, compile_options
        if raw:
            try:
                compile_options(raw, received=False)
            except IpOptionError:
                raise OSError(errno.EINVAL, "Invalid argument") from None
            raw = raw + b"\0" * (-len(raw) % 4)          # padded with EOL, as Linux stores them
        self._set_config(self._get_config().with_options(ip_options=raw))

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> int | bytes:
        self._check_open()
        key = (level, optname)
        if key == _IP_OPTIONS_KEY and self._get_config is not None:
            got = self._ip_options() if self._ip_options is not None else self._get_config().ip_options
            return got[:buflen] if buflen is not None else got
        if key in _FLAG_OPTS:
            v = int(self._flags[_FLAG_OPTS[key]])
        elif key in _IP_OPTS and self._get_config is not None:
            if level == _IP6 and self.family != socket.AF_INET6:
                raise OSError(errno.EOPNOTSUPP, "Operation not supported")
            field = _IP_OPTS[key]
            cfg = self._get_config()
            v = getattr(cfg, field)
            if v == -1:
                v = getattr(cfg, _IP_DEFAULTS[field])
        elif key in _CONFIG_OPTS and self._get_config is not None:
            field, _ = _CONFIG_OPTS[key]
            v = int(getattr(self._get_config(), field))
        else:
            raise OSError(errno.ENOPROTOOPT, f"aiotcpstack pseudo-socket: {_opt_name(level, optname)} is not "
                          "supported (no kernel socket; use the Stack's options)")
        if buflen is not None:
            return struct.pack("i", v)[:buflen]
        return v

    def sockatmark(self) -> bool:
        """A connection's pseudo-socket (``transport.get_extra_info('socket')``): True when the
        next octet ``data_received`` hands over is the last urgent one -- Linux's
        ``sockatmark()`` with ``SO_OOBINLINE``, which compares the read position with the urgent
        octet.  ``transport.get_extra_info('urgent_pending')`` says how many urgent octets are
        still to come."""
        self._check_open()
        if self._urgent_pending is None:
            raise OSError(errno.EINVAL, "sockatmark() on a listening pseudo-socket")
        return self._urgent_pending() == 1

    def __getattr__(self, name: str) -> Any:
        if name in ("accept", "bind", "connect", "connect_ex", "listen", "recv", "recv_into", "recvfrom",
                    "send", "sendall", "sendto", "sendmsg", "recvmsg", "dup", "detach", "makefile",
                    "shutdown", "close", "setblocking", "settimeout", "sendfile"):
            raise AttributeError(f"aiotcpstack pseudo-socket has no {name}(): there is no kernel socket "
                                 "(the endpoint lives in the user-space stack)")
        raise AttributeError(name)

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<aiotcpstack.PseudoSocket{state} family={self.family!r} laddr={self._addr!r}>"
