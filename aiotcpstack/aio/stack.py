"""``Stack``: the public entry point (``docs``: DESIGN.md "Public API").

The only layer that knows the event loop.  It opens the link, integrates with the host (shared
mode: kernel addresses, kernel port reservation, the RST guard; dedicated mode: none of that),
and drives the sans-IO core:

* receive: ``link.attach(loop)``; the link's reader callback hands each drained batch to
  ``core.receive(batch, loop.time())``;
* timers: the stack's one :class:`TimerWheel`; its next expiry drives exactly ONE ``loop.call_at``
  (re-armed through ``wheel.on_new_earliest`` and after every ``advance``), never a ``TimerHandle``
  per connection or per event.
"""
from __future__ import annotations

import asyncio
import dataclasses
import errno
import functools
import ipaddress
import logging
import os
import socket
import struct
from asyncio.base_events import _ipaddr_info
from typing import Any, Callable

from ..mib import Counters
from ..tcp.config import TcpConfig
from .server import Server, ServerSocket, listener_sockaddr
from .transport import TcpTransport, sockaddr

log = logging.getLogger("aiotcpstack.aio")

_CONFIG_FIELDS = {f.name for f in dataclasses.fields(TcpConfig)}
#: options that configure the stack rather than TCP
_STACK_OPTIONS = {"vnet", "pcap", "timer_granularity", "secret", "link", "control"}


def _parse_addresses(address: Any) -> list[tuple[bytes, int]]:
    if isinstance(address, str):
        items = [a.strip() for a in address.split(",") if a.strip()]
    else:
        items = list(address)
    out = []
    for item in items:
        iface = ipaddress.ip_interface(item)
        out.append((iface.ip.packed, iface.network.prefixlen))
    if not out:
        raise ValueError("address= needs at least one address")
    return out


#: numeric host string -> packed address (None: not numeric); connect() parses the same few
#: peer addresses over and over (``ipaddress`` costs ~10 µs per call).  Bounded: cleared when full.
_IP_CACHE: dict[str, bytes | None] = {}
_CACHE_MAX = 1024


def _ip_bytes(host: str) -> bytes | None:
    try:
        return _IP_CACHE[host]
    except (KeyError, TypeError):
        pass
    try:
        b = ipaddress.ip_address(host.split("%", 1)[0]).packed
    except ValueError:
        b = None
    if type(host) is str:
        if len(_IP_CACHE) >= _CACHE_MAX:
            _IP_CACHE.clear()
        _IP_CACHE[host] = b
    return b


class Stack:
    """A user-space TCP/IP stack on one interface (see DESIGN.md, Public API).

    ``Stack(interface, netns=None, address=None, **options)``: ``address=None`` is shared mode (use
    the interface's kernel addresses, reserve ports in the kernel, keep the kernel's RSTs in);
    ``address="198.18.0.3/24"`` (or a list / comma-separated string, v4 and/or v6) is dedicated mode.
    ``options`` are :class:`~aiotcpstack.tcp.config.TcpConfig` fields (``sndbuf``, ``rcvbuf``,
    ``congestion_control``, ``nodelay``, ...) plus ``vnet`` (use the vnet header offloads, default
    True), ``pcap`` (path: record every frame), ``timer_granularity`` and ``control`` (True or a path:
    serve ``aiotcpstack ss`` / ``nstat`` on an owner-only unix socket, default
    ``/run/aiotcpstack/<pid>.sock``).
    """

    def __init__(self, interface: str, netns: str | None = None, address: Any = None, **options: Any) -> None:
        unknown = [k for k in options if k not in _CONFIG_FIELDS and k not in _STACK_OPTIONS]
        if unknown:
            raise TypeError(f"Stack() got an unexpected option {unknown[0]!r}")
        self.interface = interface
        self.netns = netns
        self.address = address
        self.dedicated = address is not None
        self._dedicated_addrs = _parse_addresses(address) if address is not None else []
        self._options = dict(options)
        cfg_kw = {k: v for k, v in options.items() if k in _CONFIG_FIELDS}
        self._config_explicit = set(cfg_kw)
        # asyncio's socket transports set TCP_NODELAY on every TCP socket (base_events._set_nodelay):
        # a drop-in replacement must default to Nagle off too.
        cfg_kw.setdefault("nodelay", True)
        self.config = TcpConfig(**cfg_kw)
        from ..tcp.congestion import registry
        try:
            registry.get(self.config.congestion_control)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        self.counters = Counters()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.link: Any = None
        self.core: Any = None
        self.wheel: Any = None
        self._guard: Any = None
        self._ports: Any = None
        self._reservations: dict[int, Any] = {}     # shared mode: ports in use (reserved, guarded)
        self._pool: dict[int, None] = {}            # reserved and guarded ahead of use (ephemeral)
        self._pool_addr = ""                        # where the pooled ports are bound
        self._unreserve: dict[int, None] = {}       # released, kernel-side release queued
        self._no_v6_sockets = False
        self._ifindex = 0
        self._has_v6 = False
        self._timer_handle: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._transports: set[TcpTransport] = set()
        self._servers: set[Server] = set()
        self._started = False
        self._closed = False
        self._pcap_writer: Any = None
        self._control: Any = None      # tools.control.ControlServer when control=True|path
        self._addr_monitor: Any = None  # host.addr_monitor.AddressMonitor (shared mode)
        self._filter: tuple[Any, set, set | None] | None = None   # (our AfPacketLink, v4, v6) of its BPF filter
        self._filter_dirty = False

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> "Stack":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def start(self) -> None:
        if self._started:
            return
        if self._closed:
            raise RuntimeError("Stack is closed")
        loop = asyncio.get_running_loop()
        self._loop = loop
        try:
            self._start_sync(loop)
            if self._options.get("control"):
                from ..tools.control import ControlServer
                ctl = self._options["control"]
                self._control = ControlServer(self, None if ctl is True else ctl)
                await self._control.start()
        except BaseException:
            self._teardown()
            raise
        self._started = True

    def _start_sync(self, loop: asyncio.AbstractEventLoop) -> None:
        from ..ip.core import MAX_GSO_PAYLOAD, NetworkCore
        from ..tcp.timer_wheel import TimerWheel

        opts = self._options
        routes: list[tuple[bytes, int, bytes | None]] = []
        if self.dedicated:
            addresses = self._dedicated_addrs
        else:
            # (robustness issue) follow the kernel's addresses: the monitor opens before the
            # discovery, so no change after the snapshot is missed (host/addr_monitor.py)
            self._open_addr_monitor()
            addresses, routes = self._discover()
            if self._addr_monitor is not None:
                self._addr_monitor.ifindex = self._ifindex
        v4 = [a for a, _ in addresses if len(a) == 4]
        v6 = [a for a, _ in addresses if len(a) == 16]
        self._has_v6 = bool(v6)

        link = opts.get("link")
        if link is None:
            from ..link.afpacket import AfPacketLink
            # rx_copy=False: frames arrive as views into the link's receive buffers, valid for
            # the batch; the core copies only what it keeps (ip/core.py receive -> pin_rx), so
            # received data is copied once, at delivery, as the kernel copies it once to user
            try:
                link = AfPacketLink(self.interface, netns=self.netns, vnet=opts.get("vnet", True),
                                    local_ipv4=v4, local_ipv6=v6 if v6 else None, rx_copy=False)
                self._filter = (link, set(v4), set(v6) if v6 else None)
            except ValueError as exc:
                # too many addresses for one classic BPF program (jump offsets / 4096 insns):
                # filter on our MAC only; the core drops what is not for our addresses
                log.warning("receive filter by address not possible (%s): filtering on the MAC only", exc)
                link = AfPacketLink(self.interface, netns=self.netns, vnet=opts.get("vnet", True),
                                    rx_copy=False)
                self._filter = None
        self.link = link
        if opts.get("pcap"):
            from ..link.pcap import PcapLink, PcapWriter
            self._pcap_writer = PcapWriter(opts["pcap"])
            link = self.link = PcapLink(link, self._pcap_writer, close_writer=False)

        config = self.config
        if "tso_segs" not in self._config_explicit:
            # vnet: one GSO super-frame per output() (the kernel or the peer segments it);
            # otherwise software GSO in ip/ (like Linux's GSO before a non-TSO driver): fewer
            # trips through the connection's output path per segment.
            # the MSS the core will use (it takes the link's when config.mss is the default;
            # on lo that is 65496, and 44 x 65496 would overflow an IPv4 datagram)
            mtu = min(link.mtu, 65535)
            mss = mtu - 40 if config.mss == TcpConfig().mss else min(config.mss, mtu - 40)
            segs = max(1, MAX_GSO_PAYLOAD // mss) if link.vnet else 16
            config = config.with_options(tso_segs=segs)

        if not self.dedicated:
            from ..host import firewall, ports
            # on lo the guard must cover lo itself (kernel peers reach us over it)
            self._guard = firewall.RstGuard(netns=self.netns, interface=self.interface)
            self._ports = ports.PortReservation(netns=self.netns)

        self.wheel = TimerWheel(now=loop.time(), granularity=opts.get("timer_granularity", 0.001))
        self.wheel.on_new_earliest = self._arm_timer
        self.core = NetworkCore(
            # min(): lo's MTU is 65536; an IP datagram is at most 65535 (Linux clamps to IP_MAX_MTU)
            link.mac, min(link.mtu, 65535), addresses, self.counters, config, self.wheel, link.send,
            loop.time, vnet=link.vnet, dedicated=self.dedicated, routes=routes,
            neighbour_lookup=None if self.dedicated else self._neighbour_lookup,
            reserve_port=None if self.dedicated else self._reserve_port,
            release_port=None if self.dedicated else self._release_port,
            secret=opts.get("secret") or os.urandom(32))
        import time
        self.core.wallclock = time.time      # IP Timestamp options: ms since midnight UT
        if not self.dedicated:
            self.core.pick_port = self._pick_port
            self.core.port_held = self._port_held
        if link.vnet and getattr(type(link), "send_tcp", None) is not None:
            self.core.transmit_tcp = link.send_tcp      # scatter-gather TCP frames (no joins)
            self.core.transmit_tcp_burst = getattr(link, "send_tcp_burst", None)
        self.core.loopback_hook = self._schedule_loopback
        self._loopback_link = bool(getattr(link, "is_loopback", False))
        self.core.loopback_link = self._loopback_link
        link.open_reader(self._on_frames)
        link.attach(loop)
        if self._addr_monitor is not None:
            self._addr_monitor.attach(loop)

    def _discover(self) -> tuple[list[tuple[bytes, int]], list[tuple[bytes, int, bytes | None]]]:
        from ..host import iface
        info = iface.discover(self.interface, self.netns)
        self._ifindex = info.index
        addresses: list[tuple[bytes, int]] = []
        for item in list(info.addrs_v4) + list(info.addrs_v6):
            addresses.append(_addr_pair(item))
        if not addresses:
            raise OSError(errno.EADDRNOTAVAIL,
                          f"interface {self.interface!r} has no addresses (shared mode needs the kernel's "
                          f"address; or pass address= for dedicated mode)")
        routes = []
        for r in getattr(info, "routes", ()) or ():
            rt = _route_triple(r)
            if rt is not None:
                routes.append(rt)
        return addresses, routes

    # ------------------------------------------------------------------ addresses come and go
    def _open_addr_monitor(self) -> None:
        from ..host.addr_monitor import AddressMonitor
        from ..host.errors import NoSuchNamespaceError, PermissionsError
        try:
            self._addr_monitor = AddressMonitor(self.netns, self._on_addr_event, self._on_addr_resync)
        except (NoSuchNamespaceError, PermissionsError):
            raise
        except OSError as exc:
            log.warning("cannot follow the kernel's address changes on %s (%s); a removed address "
                        "will not abort its connections", self.interface, exc)

    def _on_addr_event(self, ev: Any) -> None:
        if self._closed or self.core is None:
            return
        if ev.added:
            self._add_address(ev.address, ev.prefixlen)
        else:
            self._remove_address(ev.address)

    def _on_addr_resync(self, snapshot: list[tuple[bytes, int]]) -> None:
        """After lost notifications: make the core's addresses the kernel's ``snapshot``."""
        if self._closed or self.core is None:
            return
        now = {a for a, _ in snapshot}
        for a, _ in list(self.core.routing.addresses):
            if a not in now:
                self._remove_address(a)
        for a, plen in snapshot:
            self._add_address(a, plen)

    def add_address(self, address: str) -> bool:
        """Make ``address`` (``"198.18.0.3/24"``; no prefix: /32 or /128) one of the stack's.
        Shared mode calls this itself when the kernel's interface gains an address; in dedicated
        mode it adds an address the stack answers ARP/NDP for.  False if it already was ours."""
        self._check_running()
        return self._add_address(*_addr_pair(address))

    def _add_address(self, addr: bytes, plen: int) -> bool:
        if not self.core.add_address(addr, plen):
            return False
        if len(addr) == 16:
            self._has_v6 = True          # shared mode: later port reservations cover v6 too
        self._widen_filter(addr)
        log.info("address %s/%d added to %s", _ip_str(addr), plen, self.interface)
        self._kick()
        return True

    def remove_address(self, address: str) -> int:
        """``address`` is no longer the stack's: no ARP/NDP answers or new connections for it, and
        every connection using it ends at once with ``connection_lost(OSError(EADDRNOTAVAIL, ...))``
        (``TCPAbortOnAddrRemoved``; no RST is sent from an address that is not ours any more).
        Shared mode calls this itself when the address is removed from the kernel's interface
        (Linux would keep such connections until they time out; see ``NetworkCore.remove_address``).
        Returns how many connections were aborted."""
        self._check_running()
        return self._remove_address(_addr_pair(address)[0])

    def _remove_address(self, addr: bytes) -> int:
        if not self.core.routing.is_local(addr):
            return 0
        n = self.core.remove_address(addr, self._loop.time(),
                                     f"local address {_ip_str(addr)} was removed from interface {self.interface!r}")
        left = [_ip_str(a) for a, _ in self.core.routing.addresses]
        log.warning("address %s removed from %s: %d connection(s) aborted; addresses left: %s",
                    _ip_str(addr), self.interface, n, ", ".join(left) or "none (connect() fails with "
                    "EADDRNOTAVAIL until one is added)")
        self._kick()
        return n

    def _widen_filter(self, addr: bytes) -> None:
        """The receive filter of a link the stack made lists its destination addresses: a new one
        is added (the old ones stay; the core drops what is no longer ours).  Coalesced: one new
        filter per turn of the loop, however many addresses came (a resync adds many at once)."""
        if self._filter is None:
            return
        link, v4, v6 = self._filter
        fam = v6 if len(addr) == 16 else v4
        if fam is None or addr in fam:
            return                      # that family is not filtered by address / already there
        fam.add(addr)
        if not self._filter_dirty:
            self._filter_dirty = True
            self._loop.call_soon(self._apply_filter)

    def _apply_filter(self) -> None:
        self._filter_dirty = False
        if self._closed or self._filter is None:
            return
        link, v4, v6 = self._filter
        from ..link import bpf
        mac = None if link.is_loopback else link.mac
        # a second descriptor of the same socket: the filter belongs to the socket (and is
        # replaced atomically)
        dup = socket.socket(fileno=os.dup(link.fileno()))
        try:
            try:
                prog = bpf.build_filter(mac=mac, ipv4=sorted(v4), ipv6=None if v6 is None else sorted(v6),
                                        accept_arp=not link.is_loopback)
                bpf.attach_filter(dup, prog)
            except (OSError, ValueError):
                # too many addresses for one classic BPF program (4096 instructions): filter by
                # MAC only; the core drops what is not for one of our addresses
                prog = bpf.build_filter(mac=mac, accept_arp=not link.is_loopback)
                bpf.attach_filter(dup, prog)
                self._filter = None
        finally:
            dup.close()                 # only the duplicate descriptor
        link.bpf_program = prog

    #: how long closing the stack waits for orphaned connections (closed by the application,
    #: data not yet acknowledged) to deliver their data, as the kernel keeps sending on an orphaned
    #: socket after close(); what is still unacknowledged then is reset.
    ORPHAN_LINGER = 5.0

    def _orphans(self) -> list[TcpTransport]:
        return [t for t in self._transports if t.is_orphan]

    async def linger_orphans(self, timeout: float | None = None) -> None:
        """Run until every orphaned connection's data is acknowledged (or ``timeout``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.ORPHAN_LINGER if timeout is None else timeout)
        while self._orphans() and loop.time() < deadline:
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        if self._closed:
            return
        if self._started:
            await self.linger_orphans()
        self._closed = True
        for server in list(self._servers):
            server.close()
        for t in list(self._transports):
            t.abort()
        self._transports.clear()
        await asyncio.sleep(0)         # let connection_lost callbacks run
        self._teardown()

    def _teardown(self) -> None:
        if self._addr_monitor is not None:
            self._addr_monitor.close()
            self._addr_monitor = None
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None
        if self.link is not None:
            try:
                self.link.detach()
            except Exception:  # noqa: BLE001
                pass
            self.link.close()
        if self._pcap_writer is not None:
            self._pcap_writer.close()
        # every port at once: the guard's table goes first (one transaction for all its
        # elements), then the reservation sockets (in use, pooled or with a release pending)
        self._reservations.clear()
        self._pool.clear()
        self._unreserve.clear()
        if self._guard is not None:
            self._guard.close()
            self._guard = None
        if self._ports is not None and hasattr(self._ports, "close"):
            self._ports.close()
            self._ports = None

    def _check_running(self) -> asyncio.AbstractEventLoop:
        if not self._started or self._closed:
            raise RuntimeError("Stack is not running (use 'async with stack' or 'await stack.start()')")
        return self._loop  # type: ignore[return-value]

    # ------------------------------------------------------------------ loop driver
    def _on_frames(self, batch: list) -> None:
        # API calls from protocol callbacks inside the batch (write, close) skip their own timer
        # re-arm: the one after the batch covers them (one loop.call_at decision per batch)
        self._in_batch = True
        try:
            self.core.receive(batch, self._loop.time())
        finally:
            self._in_batch = False
            # (_kick inline: once per batch, i.e. per segment of a round trip)
            wheel = self.wheel
            if wheel is not None and not self._closed:
                nxt = wheel.next_expiry_bound()
                if nxt is not None:
                    when = self._timer_when
                    if when is None or nxt < when:
                        self._arm_timer(nxt)

    def _schedule_loopback(self) -> None:
        self._loop.call_soon(self._flush_loopback)

    def _flush_loopback(self) -> None:
        if self._closed:
            return
        try:
            self.core.flush_loopback(self._loop.time())
        finally:
            self._kick()

    def _arm_timer(self, when: float) -> None:
        h = self._timer_handle
        if h is not None:
            if self._timer_when is not None and self._timer_when <= when:
                return
            h.cancel()
        self._timer_when = when
        self._timer_handle = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        when = self._timer_when
        self._timer_handle = None
        self._timer_when = None
        now = self._loop.time()
        if when is not None and now < when:
            now = when       # call_at may run up to one clock resolution early
        self.core.now = now
        try:
            self.wheel.advance(now)
        finally:
            self._kick()       # a failing timer callback must not stall every other timer

    _in_batch = False                  # inside _on_frames (see there)

    def _kick(self) -> None:
        """Re-arm the loop timer for the wheel's next expiry (after API calls / batches)."""
        wheel = self.wheel
        if wheel is None or self._closed or self._in_batch:
            return
        # (a lower bound is enough: the call_at is never moved later, and every arm below the
        # bound calls _arm_timer itself)
        nxt = wheel.next_expiry_bound()
        if nxt is not None:
            when = self._timer_when
            if when is None or nxt < when:        # (_arm_timer's own test, without the call)
                self._arm_timer(nxt)

    # ------------------------------------------------------------------ host integration (shared)
    #: shared mode: ephemeral ports are reserved in the kernel and added to the RST guard ahead of
    #: use, this many at a time (one namespace check and ONE nft transaction per batch instead of a
    #: netlink round trip per connection); a pool that runs dry again within ``PORT_BATCH_WINDOW``
    #: seconds gets twice the batch, up to ``PORT_BATCH_MAX`` (a connection burst pays the
    #: transaction's fixed cost 4x less often; a batch stalls the loop ~20 us per port, so it
    #: stays small), back to ``PORT_BATCH`` after a quiet spell; at most one batch is held unused
    PORT_BATCH = 32
    PORT_BATCH_MAX = 128
    PORT_BATCH_WINDOW = 1.0
    _port_batch = 0                    # the current batch size (0: PORT_BATCH)
    _last_refill = -1e9                # loop time of the last refill

    def _resv_addr(self) -> str:
        """Where reservation sockets bind: one dual-stack socket on ``::`` (IPV6_V6ONLY=0) holds a
        port for both families -- Linux refuses any v4 or v6 bind/listen on it and its ephemeral
        allocation (connect(), bind(0)) skips it: one descriptor per port; v4-only stacks (or
        kernels without IPv6) bind ``0.0.0.0``."""
        return "::" if self._has_v6 and not self._no_v6_sockets else "0.0.0.0"

    def _pick_port(self) -> int | None:
        """``core.pick_port``: a pre-reserved ephemeral port (bound in the kernel, guarded), or
        None.  The core claims it through ``_reserve_port``."""
        pool = self._pool
        if pool and self._pool_addr != self._resv_addr():
            self._drain_pool()            # an IPv6 address came: v4-only reservations do not hold v6
        if not pool:
            self._refill_pool()
        for port in pool:
            return port
        return None

    def _refill_pool(self) -> None:
        lo, hi = self.config.ephemeral_ports
        span = hi - lo + 1
        if span <= 0:
            return
        users = self.core.demux.port_users
        held = self._reservations
        pending = self._unreserve
        now = self._loop.time() if self._loop is not None else 0.0
        if now - self._last_refill < self.PORT_BATCH_WINDOW:
            want = min(2 * (self._port_batch or self.PORT_BATCH), self.PORT_BATCH_MAX)
        else:
            want = self.PORT_BATCH
        self._port_batch = want
        self._last_refill = now
        cands: dict[int, None] = {}
        # RFC 6056 algorithm 1 (simple port randomisation): pooled ports do not depend on the
        # destination, so each is drawn at random from the ephemeral range
        for (r,) in struct.iter_unpack("=I", os.urandom(8 * want)):
            port = lo + r % span
            if port in users or port in held or port in pending or port in cands:
                continue
            cands[port] = None
            if len(cands) == want:
                break
        addr = self._resv_addr()
        try:
            got = self._ports.reserve_many(addr, list(cands), v6only=False)
        except OSError as exc:
            if exc.errno != errno.EAFNOSUPPORT or addr != "::":
                raise
            self._no_v6_sockets = True        # no IPv6 sockets on this kernel
            addr = "0.0.0.0"
            got = self._ports.reserve_many(addr, list(cands))
        if not got:
            return
        try:
            self._guard.add_ports(got)
        except BaseException:
            self._ports.release_many(got)
            raise
        self._pool_addr = addr
        pool = self._pool
        for port in got:
            pool[port] = None

    def _drain_pool(self) -> None:
        ports = list(self._pool)
        self._pool.clear()
        self._unreserve_now(ports)

    def _port_held(self, port: int) -> bool:
        """``core.port_held``: reserved and guarded by us but used by nothing (pooled, or its
        release is queued): a segment to it gets our RST, as the kernel would answer for it."""
        return port in self._pool or port in self._unreserve

    def _reserve_port(self, port: int) -> bool:
        """Shared mode: a local port starts being used by us: bind a kernel socket to it (so the
        kernel and other programs leave it alone) and add it to the RST guard -- or take it from
        the pre-reserved pool / the queue of ports whose release is pending (nothing to do)."""
        if port in self._pool:
            del self._pool[port]
            self._reservations[port] = True
            return True
        if port in self._unreserve:
            if self._ports.holds(port, self._resv_addr()):
                del self._unreserve[port]
                self._reservations[port] = True
                return True
            self._flush_unreserve()
        try:
            addr = self._resv_addr()
            try:
                self._ports.reserve(addr, port, v6only=False)
            except OSError as exc:
                if exc.errno != errno.EAFNOSUPPORT or addr != "::":
                    raise
                self._no_v6_sockets = True
                self._ports.reserve("0.0.0.0", port)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False              # (a failed reserve holds nothing)
            raise
        self._reservations[port] = True
        try:
            self._guard.add_port(port)
        except BaseException:
            self._reservations.pop(port, None)
            self._unreserve_now([port])
            raise
        return True

    def _release_port(self, port: int) -> None:
        """The port is no longer used: its guard element and kernel socket go -- batched: the
        ports released during one turn of the loop leave in one nft transaction (the port stays
        reserved and guarded until then, and a new use of it in between just keeps it)."""
        if self._reservations.pop(port, None) is None:
            return
        if self._closed:
            self._unreserve[port] = None      # the teardown removes the table and every socket at once
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            self._unreserve_now([port])
            return
        if not self._unreserve:
            loop.call_soon(self._flush_unreserve)
        self._unreserve[port] = None

    def _flush_unreserve(self) -> None:
        if self._unreserve:
            ports = list(self._unreserve)
            self._unreserve.clear()
            self._unreserve_now(ports)

    def _unreserve_now(self, ports: list[int]) -> None:
        """Guard elements first, then the kernel sockets (never a kernel-free port we still
        guard, where a kernel program's segments would be dropped)."""
        if not ports:
            return
        if self._guard is not None:
            try:
                self._guard.remove_ports(ports)
            except Exception:  # noqa: BLE001
                log.exception("RstGuard.remove_ports(%s)", ports)
        if self._ports is not None:
            try:
                self._ports.release_many(ports)
            except Exception:  # noqa: BLE001
                log.exception("PortReservation.release_many(%s)", ports)

    def _neighbour_lookup(self, ip: bytes, done: Callable[[bytes | None], None]) -> None:
        """Shared mode: ask the kernel's neighbour table (it resolves; we poll a few times)."""
        loop = self._loop
        if getattr(self, "_loopback_link", False):
            loop.call_soon(done, bytes(6))      # lo: no link-layer addresses (zero MACs)
            return
        from ..host import iface
        ifindex = self._ifindex
        attempts = [0]

        def work() -> bytes | None:
            return iface.resolve_neighbour(self.netns, ifindex, ip)

        def finish(fut: asyncio.Future) -> None:
            if self._closed:
                return
            try:
                mac = fut.result()
            except Exception:  # noqa: BLE001
                log.exception("neighbour lookup for %s", ip.hex())
                mac = None
            if mac is None:
                attempts[0] += 1
                if attempts[0] < 30:       # ~1.5 s: the kernel's own ARP retries take 3 x 1 s max
                    loop.call_later(0.005 * min(attempts[0], 10), start)
                    return
            done(_mac_bytes(mac) if mac is not None else None)
            self._kick()

        def start() -> None:
            if not self._closed:
                loop.run_in_executor(None, work).add_done_callback(finish)

        start()

    # ------------------------------------------------------------------ resolution helpers
    async def _resolve(self, host: Any, port: Any, family: int = 0) -> list[tuple[bytes, int]]:
        if port is None:
            raise ValueError("port is required")
        if isinstance(port, str):
            port = socket.getservbyname(port, "tcp") if not port.isdigit() else int(port)
        ip = _ip_bytes(host) if isinstance(host, str) else None
        if ip is not None:
            return [(ip, int(port))]
        infos = await self._loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
        out = []
        for fam, _, _, _, sa in infos:
            b = _ip_bytes(sa[0])
            if b is not None and (b, sa[1]) not in out:
                out.append((b, sa[1]))
        if not out:
            raise OSError(f"getaddrinfo({host!r}) returned empty list")
        return out

    # ------------------------------------------------------------------ client side
    async def create_connection(self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: Any = None,
                                port: Any = None, *, ssl: Any = None, family: int = 0, proto: int = 0,
                                flags: int = 0, sock: Any = None, local_addr: Any = None,
                                server_hostname: str | None = None, ssl_handshake_timeout: float | None = None,
                                ssl_shutdown_timeout: float | None = None, happy_eyeballs_delay: float | None = None,
                                interleave: int | None = None, all_errors: bool = False) -> tuple[Any, Any]:
        """``loop.create_connection`` through the stack: the arguments, their checks, the address
        resolution (``getaddrinfo`` through the loop), happy eyeballs and the error aggregation
        are those of ``asyncio.base_events.BaseEventLoop.create_connection``."""
        loop = self._check_running()
        if sock is not None:
            raise ValueError("sock= cannot be used with an aiotcpstack Stack: the stack owns its own "
                             "endpoints (pass host and port; the drop-in loop hands sock= to its base loop)")
        if server_hostname is not None and not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        if server_hostname is None and ssl:
            if not host:
                raise ValueError("You must set server_hostname when using ssl without a host")
            server_hostname = host
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        if happy_eyeballs_delay is not None and interleave is None:
            interleave = 1           # RFC 8305 "First Address Family Count"
        if host is None and port is None:
            raise ValueError("host and port was not specified and no sock specified")
        info = _INFO_CACHE.get((host, port, family, proto)) if type(host) is str and type(port) is int else None
        if info is not None and not ssl and local_addr is None and happy_eyeballs_delay is None \
                and not all_errors:
            # the common case -- a numeric address seen before, one attempt, no TLS -- without
            # the general path's coroutine layers (_ensure_resolved, _connect_sock, _connect_one,
            # _finish_connection: a frame, a coroutine object and an await each per connection).
            # Same steps, same outcome: with one address and no ``all_errors`` the general path
            # re-raises the one attempt's exception object as it is.
            address = info[4]
            rip = _ip_bytes(address[0])
            if rip is not None:
                rport = address[1]
                transport = self._open(loop, rip, rport, None, None)
                try:
                    await transport._established_waiter
                except BaseException as exc:
                    new = self._open_failed(transport, exc, rip, rport)
                    if new is None:
                        raise
                    raise new from None
                transport._established_waiter = None
                try:
                    protocol = protocol_factory()
                    waiter = loop.create_future()
                    transport._start(protocol, waiter)
                    await waiter
                except BaseException:
                    transport.close()
                    raise
                return transport, protocol
        infos = await _ensure_resolved(loop, host, port, family, proto, flags)
        if not infos:
            raise OSError("getaddrinfo() returned empty list")
        laddr_infos = None
        if local_addr is not None:
            laddr_infos = await _ensure_resolved(loop, local_addr[0], local_addr[1], family, proto, flags)
            if not laddr_infos:
                raise OSError("getaddrinfo() returned empty list")
        if interleave:
            from asyncio.base_events import _interleave_addrinfos
            infos = _interleave_addrinfos(infos, interleave)
        exceptions: list[list[BaseException]] = []
        transport: TcpTransport | None = None
        if happy_eyeballs_delay is None:
            for info in infos:
                try:
                    transport = await self._connect_sock(loop, exceptions, info, laddr_infos)
                    break
                except OSError:
                    continue
        else:
            from asyncio import staggered
            won: list[TcpTransport] = []

            async def attempt(info: tuple) -> TcpTransport:
                t = await self._connect_sock(loop, exceptions, info, laddr_infos)
                won.append(t)
                return t
            transport, _, _ = await staggered.staggered_race(
                (functools.partial(attempt, info) for info in infos), happy_eyeballs_delay)
            for t in won:        # losers that connected anyway (as asyncio closes their sockets)
                if t is not transport:
                    t.abort()
        if transport is None:
            flat = [exc for sub in exceptions for exc in sub]
            try:
                if all_errors:
                    raise ExceptionGroup("create_connection failed", flat)
                if len(flat) == 1:
                    raise flat[0]
                model = str(flat[0])
                if all(str(exc) == model for exc in flat):
                    raise flat[0]
                raise OSError("Multiple exceptions: {}".format(", ".join(str(exc) for exc in flat)))
            finally:
                flat = None  # type: ignore[assignment]
                exceptions = None  # type: ignore[assignment]
        return await self._finish_connection(loop, transport, protocol_factory, ssl, server_hostname,
                                             ssl_handshake_timeout, ssl_shutdown_timeout)

    async def _connect_sock(self, loop: asyncio.AbstractEventLoop, exceptions: list, addr_info: tuple,
                            local_addr_infos: list | None) -> TcpTransport:
        """One attempt (``BaseEventLoop._connect_sock``): pick a local address of the same
        family, then the handshake; every failure is recorded in ``exceptions``."""
        my_exceptions: list[BaseException] = []
        exceptions.append(my_exceptions)
        family, _type, _proto, _, address = addr_info
        try:
            rip = _ip_bytes(address[0])
            if rip is None:
                raise OSError(errno.EAFNOSUPPORT, f"Address family not supported: {address!r}")
            lip = lport = None
            if local_addr_infos is not None:
                for lfamily, _, _, _, laddr in local_addr_infos:
                    if lfamily != family:
                        continue
                    lip = _ip_bytes(laddr[0])
                    lport = laddr[1]
                    if lip is not None and not any(lip == a for a, _ in self.core.routing.addresses) \
                            and lip not in (b"\0" * 4, b"\0" * 16):
                        exc = OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
                        msg = (f"error while attempting to bind on address {laddr!r}: "
                               f"{exc.strerror.lower()}")
                        my_exceptions.append(OSError(exc.errno, msg))
                        lip = None
                        continue
                    break
                else:
                    if my_exceptions:
                        raise my_exceptions.pop()
                    raise OSError(f"no matching local address with family={family!r} found")
                if lip is None:
                    raise my_exceptions.pop()
                if lip in (b"\0" * 4, b"\0" * 16):
                    lip = None
            try:
                return await self._connect_one(loop, rip, address[1], lip, lport or None)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE and lport:
                    raise OSError(exc.errno, f"error while attempting to bind on address "
                                  f"{(address[0] if lip is None else _ip_str(lip), lport)!r}: "
                                  f"address already in use") from None
                raise
        except OSError as exc:
            my_exceptions.append(exc)
            raise

    def _open(self, loop: asyncio.AbstractEventLoop, rip: bytes, rport: int, lip: bytes | None,
              lport: int | None) -> TcpTransport:
        """Start an active open: the transport, its connection (the SYN is sent) and the waiter
        the handshake resolves (``transport._established_waiter``; ``tcp_established`` sets it,
        ``tcp_closed`` fails it)."""
        transport = TcpTransport(self, loop)
        transport._established_waiter = loop.create_future()
        conn = self.core.connect(rip, rport, transport, loop.time(), lip=lip, lport=lport)
        transport._attach(conn)
        self._transports.add(transport)
        self._kick()
        return transport

    def _open_failed(self, transport: TcpTransport, exc: BaseException, rip: bytes,
                     rport: int) -> BaseException | None:
        """The handshake of ``_open`` failed with ``exc`` (or the wait was cancelled): clean up;
        returns the exception to raise instead (``from None``), or None to re-raise ``exc``."""
        if isinstance(exc, asyncio.CancelledError):
            transport._established_waiter = None
            transport.abort()
            return None
        if isinstance(exc, OSError):
            self._transports.discard(transport)
            if exc.errno is not None and exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                # (EADDRNOTAVAIL: our address was removed meanwhile; that message says so)
                # as the selector loop's sock_connect: OSError(SO_ERROR, 'Connect call failed <addr>')
                # (OSError() picks the errno's subclass: ConnectionRefusedError, TimeoutError, ...)
                return OSError(exc.errno, f"Connect call failed {sockaddr(rip, rport)}")
        return None

    async def _connect_one(self, loop: asyncio.AbstractEventLoop, rip: bytes, rport: int,
                           lip: bytes | None, lport: int | None) -> TcpTransport:
        transport = self._open(loop, rip, rport, lip, lport)
        try:
            await transport._established_waiter
        except BaseException as exc:
            new = self._open_failed(transport, exc, rip, rport)
            if new is None:
                raise
            raise new from None
        transport._established_waiter = None
        return transport

    async def _finish_connection(self, loop: asyncio.AbstractEventLoop, transport: TcpTransport,
                                 protocol_factory: Callable[[], Any], ssl: Any, server_hostname: str | None,
                                 ssl_handshake_timeout: float | None, ssl_shutdown_timeout: float | None):
        try:
            protocol = protocol_factory()
            waiter = loop.create_future()
            if ssl:
                import ssl as _ssl
                from asyncio import sslproto
                ctx = ssl if isinstance(ssl, _ssl.SSLContext) else _ssl.create_default_context()
                ssl_proto = sslproto.SSLProtocol(loop, protocol, ctx, waiter, server_side=False,
                                                 server_hostname=server_hostname,
                                                 ssl_handshake_timeout=ssl_handshake_timeout,
                                                 ssl_shutdown_timeout=ssl_shutdown_timeout)
                transport._start(ssl_proto)
                await waiter
                return ssl_proto._app_transport, protocol
            transport._start(protocol, waiter)     # connection_made, then the waiter (as asyncio)
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol

    async def open_connection(self, host: Any = None, port: Any = None, *, limit: int = 2 ** 16, **kwds: Any):
        loop = self._check_running()
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await self.create_connection(lambda: protocol, host, port, **kwds)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return reader, writer

    # ------------------------------------------------------------------ server side
    async def create_server(self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: Any = None,
                            port: Any = None, *, family: int = 0, flags: int = socket.AI_PASSIVE,
                            sock: Any = None, backlog: int = 100, ssl: Any = None, reuse_address: Any = None,
                            reuse_port: Any = None, keep_alive: Any = None, ssl_handshake_timeout: float | None = None,
                            ssl_shutdown_timeout: float | None = None, start_serving: bool = True) -> Server:
        loop = self._check_running()
        if sock is not None:
            raise ValueError("sock= cannot be used with an aiotcpstack Stack: the stack owns its own "
                             "endpoints (pass host and port)")
        if ssl is not None and not hasattr(ssl, "wrap_bio"):
            raise TypeError("ssl argument must be an SSLContext or None")
        if ssl_handshake_timeout is not None and ssl is None:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and ssl is None:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        if isinstance(port, str):
            port = int(port) if port.isdigit() else socket.getservbyname(port, "tcp")
        port = int(port or 0)
        if host is None or host == "" or host == []:
            # (IPv6 issue) like the stock loop: host None -> one endpoint per family (0.0.0.0 and
            # :: with V6ONLY), i.e. the dual wildcard; family= narrows it to one family
            hosts: list[bytes | None] = [None]
            if family == socket.AF_INET:
                hosts = [b"\0" * 4]
            elif family == socket.AF_INET6:
                hosts = [b"\0" * 16]
        else:
            names = [host] if isinstance(host, str) else list(host)
            hosts = []
            for name in names:
                if name == "":
                    hosts.append(None)
                    continue
                if name in ("0.0.0.0", "::"):
                    # (IPv6 issue) asyncio binds "0.0.0.0" v4-only and "::" with IPV6_V6ONLY:
                    # per-family wildcards, not the dual one
                    hosts.append(b"\0" * 4 if name == "0.0.0.0" else b"\0" * 16)
                    continue
                b = _ip_bytes(name)
                if b is None:
                    b = (await self._resolve(name, port or 0, family))[0][0]
                hosts.append(b)
            if None in hosts:
                hosts = [None]
        config = self.core.config
        if keep_alive:
            config = config.with_options(keepalive=True)
        else:
            config = None
        server = Server(self, loop, protocol_factory, ssl, backlog, ssl_handshake_timeout, ssl_shutdown_timeout)
        # (asyncio sets SO_REUSEADDR on POSIX unless reuse_address=False)
        server._sock_flags = {"reuse_address": True if reuse_address is None else reuse_address,
                              "reuse_port": reuse_port}
        try:
            for ip in hosts:
                listener = self.core.listen(ip, port, backlog, None, config,
                                            on_acceptable=server._on_acceptable)
                if not port:
                    port = listener.port      # several hosts: same port for all (like asyncio)
                fam, addr = listener_sockaddr(listener.ip, listener.port)
                server._add_listener(listener, fam, addr)
                if listener.ip == b"" and self.core.local_v6:
                    server._add_listener(listener, socket.AF_INET6, ("::", listener.port, 0, 0))
        except BaseException:
            server.close()
            raise
        self._servers.add(server)
        if start_serving:
            server._start_serving()
            await asyncio.sleep(0)
        return server

    async def start_server(self, client_connected_cb: Callable[..., Any], host: Any = None, port: Any = None, *,
                           limit: int = 2 ** 16, **kwds: Any) -> Server:
        loop = self._check_running()

        def factory() -> asyncio.StreamReaderProtocol:
            reader = asyncio.StreamReader(limit=limit, loop=loop)
            return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

        return await self.create_server(factory, host, port, **kwds)

    def _server_closed(self, server: Server) -> None:
        self._servers.discard(server)

    # ------------------------------------------------------------------ introspection
    def connections(self) -> list[dict[str, Any]]:
        out = []
        if self.core is None:
            return out
        for conn in self.core.connections():
            try:
                snap = dict(conn.snapshot())
            except Exception:  # noqa: BLE001
                snap = {"state": getattr(conn, "state", "?")}
            lip, lport = conn.local
            rip, rport = conn.remote
            snap["local"] = sockaddr(lip, lport)
            snap["remote"] = sockaddr(rip, rport)
            out.append(snap)
        return out

    @property
    def addresses(self) -> list[str]:
        if self.core is None:
            return [str(ipaddress.ip_address(a)) for a, _ in self._dedicated_addrs]
        return [str(ipaddress.ip_address(a)) for a, _ in self.core.routing.addresses]

    def __repr__(self) -> str:
        mode = f"dedicated {self.address}" if self.dedicated else "shared"
        return f"<aiotcpstack.Stack {self.interface} netns={self.netns} {mode}>"


def _addr_pair(item: Any) -> tuple[bytes, int]:
    """Normalise what ``iface.discover`` reports for an address into ``(bytes, prefixlen)``."""
    if isinstance(item, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return item.ip.packed, item.network.prefixlen
    if isinstance(item, str):
        i = ipaddress.ip_interface(item)
        return i.ip.packed, i.network.prefixlen
    if isinstance(item, tuple):
        a, plen = item[0], item[1]
        if isinstance(a, str):
            a = ipaddress.ip_address(a).packed
        elif isinstance(a, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            a = a.packed
        return bytes(a), int(plen)
    addr = getattr(item, "address", None) or getattr(item, "addr", None)
    plen = getattr(item, "prefixlen", None)
    if addr is not None and plen is not None:
        return _addr_pair((addr, plen))
    raise TypeError(f"cannot interpret interface address {item!r}")


def _route_triple(r: Any) -> tuple[bytes, int, bytes | None] | None:
    def b(x: Any) -> bytes | None:
        if x is None or x == b"" or x == "":
            return None
        if isinstance(x, (bytes, bytearray)):
            return bytes(x)
        return ipaddress.ip_address(str(x)).packed
    if isinstance(r, tuple):
        dst, plen, gw = r[0], r[1], r[2] if len(r) > 2 else None
    else:
        dst = getattr(r, "dst", None)
        plen = getattr(r, "prefixlen", None)
        if plen is None:
            plen = getattr(r, "dst_len", 0)
        gw = getattr(r, "gateway", None)
    dstb = b(dst)
    gwb = b(gw)
    if dstb is None:
        fam_len = len(gwb) if gwb is not None else 4
        dstb = b"\0" * fam_len
        plen = 0
    if gwb is None:
        return None        # on-link routes come from the addresses
    return dstb, int(plen or 0), gwb


def _mac_bytes(mac: Any) -> bytes:
    if isinstance(mac, (bytes, bytearray)) and len(mac) == 6:
        return bytes(mac)
    return bytes.fromhex(str(mac).replace(":", "").replace("-", ""))


def _ip_str(ip: bytes) -> str:
    return str(ipaddress.ip_address(ip))


#: (host, port, family, proto) -> ``_ipaddr_info`` result for numeric str hosts and int ports
#: (deterministic; the tuples are immutable).  Bounded like ``_IP_CACHE``.
_INFO_CACHE: dict[tuple, tuple] = {}


async def _ensure_resolved(loop: asyncio.AbstractEventLoop, host: Any, port: Any, family: int, proto: int,
                           flags: int) -> list[tuple]:
    """``BaseEventLoop._ensure_resolved``: numeric hosts without a lookup (``_ipaddr_info``),
    names through ``loop.getaddrinfo`` (the base loop's resolver), SOCK_STREAM only."""
    key = None
    if type(host) is str and type(port) is int:
        key = (host, port, family, proto)
        info = _INFO_CACHE.get(key)
        if info is not None:
            return [info]
    info = _ipaddr_info(host, port, family, socket.SOCK_STREAM, proto)
    if info is not None:
        if key is not None:
            if len(_INFO_CACHE) >= _CACHE_MAX:
                _INFO_CACHE.clear()
            _INFO_CACHE[key] = info
        return [info]
    return list(await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM,
                                       proto=proto, flags=flags))
