"""Real frame I/O through a raw ``AF_PACKET`` socket, optionally inside a named network namespace.

Design notes (why it looks like this):

* The socket is created with protocol 0 -- it receives nothing -- and only bound to ``ETH_P_ALL``
  after the BPF filter is attached, so no unfiltered frame can be queued.  Whatever might still
  have been queued is drained anyway before the first read.
* ``PACKET_VNET_HDR`` gives us the kernel's checksum state (veth frames are CHECKSUM_PARTIAL: the
  local kernel never computed the checksum, so verifying it in Python would *fail*, not just waste
  time) and lets us send 64 KB TSO super-frames that the kernel segments and checksums.
* Receive is batched: one ``add_reader`` callback takes up to ``batch`` frames and hands them to
  ``on_frames`` at once (NAPI-style), so the stack can do its per-batch work (one ACK, one
  delivery per connection) once.  256 frames from the ring, like Linux's ``netdev_budget`` of 300
  per softirq round: a bulk receive of MTU frames backlogs the ring, and every batch costs a
  loop turn, an ACK (whose ``sendmsg`` runs the peer's ACK processing in our softirq) and a
  delivery; 64-frame batches paid that four times as often (PERF_LOG step 20).  The ``recvmmsg``
  path and the buffers for frames too big for a ring slot hold at most ``RX_SLOTS`` (64 KB each).
  Where it can be set up the frames come from a TPACKET_V2 receive ring (ring.py: no syscall
  while frames wait, the kernel copies each frame once, in the softirq that delivers it), else
  from one ``recvmmsg`` (mmsg.py), else from ``recv_into`` until ``EAGAIN``.
* Receive buffers are ``RX_BUFFER_SIZE`` (> 64 KB) because veth passes GRO/TSO super-frames up to
  packet sockets unsegmented, even at MTU 1500.
* Network namespaces are per *thread*: ``setns`` is done in the calling thread and always undone,
  and the socket keeps the namespace it was created in for its whole life.
"""
from __future__ import annotations

import collections
import ctypes
import errno
import fcntl
import os
import socket
import struct
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence

from . import bpf
from . import mmsg as _mmsg
from . import ring as _ring
from .base import (
    ETH_HLEN,
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    RX_BUFFER_SIZE,
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VNET_HDR,
    VNET_HDR_LEN,
    Frame,
    Link,
    LinkStats,
    NoSuchInterfaceError,
    NoSuchNetnsError,
    OnFrames,
    RxItem,
)

SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
ETH_P_ALL = 0x0003

SIOCGIFMTU = 0x8921
SIOCGIFHWADDR = 0x8927
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772

CLONE_NEWNET = 0x40000000

#: receive buffers of RX_BUFFER_SIZE (> 64 KB: super-frames) for recvmmsg, or for the ring's
#: TP_STATUS_COPY frames: at most this many per poll (4 MB of address space, resident where used)
RX_SLOTS = 64

PERMISSION_MESSAGE = "AF_PACKET needs CAP_NET_RAW (run as root or grant cap_net_raw,cap_net_admin)"

_PKTTYPE_OUTGOING = bpf.PACKET_OUTGOING
_libc: Optional[ctypes.CDLL] = None


def _setns(fd: int) -> None:
    """``setns(fd, CLONE_NEWNET)`` for the calling thread (``os.setns`` exists only from 3.12)."""
    if hasattr(os, "setns"):
        os.setns(fd, CLONE_NEWNET)
        return
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def netns_path(netns: str) -> str:
    """``ip netns`` names live in /run/netns; anything containing a slash is taken as a path."""
    return netns if "/" in netns else f"/run/netns/{netns}"


@contextmanager
def in_netns(netns: Optional[str]) -> Iterator[None]:
    """Run the body with the calling thread inside ``netns`` (None: stay where we are).

    Private to the link layer on purpose: ``host/netns.py`` offers the general helper, but the
    link must not depend on host code to open its socket.
    """
    if netns is None:
        yield
        return
    path = netns_path(netns)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NoSuchNetnsError(netns, path) from None
    try:
        saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                _setns(target)
            except PermissionError:
                raise PermissionError(
                    errno.EPERM,
                    f"entering network namespace {netns!r} needs CAP_SYS_ADMIN (run as root)",
                ) from None
            except OSError as e:
                if e.errno == errno.EINVAL:
                    raise OSError(errno.EINVAL, f"{path} is not a network namespace") from None
                raise
            try:
                yield
            finally:
                _setns(saved)  # must never be skipped: the thread would stay in the wrong netns
        finally:
            os.close(saved)
    finally:
        os.close(target)


def _ifreq(name: str) -> bytearray:
    b = name.encode()
    if len(b) >= 16:
        raise ValueError(f"interface name {name!r} too long")
    return bytearray(b.ljust(40, b"\0"))


def _fold_sum(data: bytes | memoryview) -> int:
    """One's-complement 16-bit sum of ``data`` (uncomplemented, folded).

    ``int.from_bytes(...) % 0xffff`` is the one's-complement sum done by CPython's bignum code in
    C -- far faster than a Python loop; only used as the no-vnet fallback for partial checksums.
    """
    if len(data) & 1:
        data = bytes(data) + b"\0"
    s = int.from_bytes(data, "big") % 0xFFFF
    return s if s or not any(data) else 0xFFFF


def _tcp_vnet(csum_start: int, hdr_len: int, gso_type: int, gso_size: int, cwr: int) -> bytes:
    """The vnet header of a TCP frame whose checksum the kernel completes (NEEDS_CSUM: the TCP
    header at ``csum_start`` holds the pseudo-header sum); with ``gso_type`` a TSO super-frame of
    ``gso_size`` segments after ``hdr_len`` header bytes, ``cwr`` (the TCP CWR flag) telling the
    segmenter SKB_GSO_TCP_ECN."""
    if gso_type:
        return VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type | GSO_ECN if cwr else gso_type, hdr_len,
                             gso_size, csum_start, 16)
    return VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, csum_start, 16)


class AfPacketLink(Link):
    """An Ethernet link on a real interface through ``AF_PACKET``/``SOCK_RAW``.

    ``bpf_filter``: a program from :func:`aiotcpstack.link.bpf.build_filter` (list of
    ``(code, jt, jf, k)``); by default only IPv4/IPv6/ARP frames for our MAC, broadcast or
    multicast pass.  ``local_ipv4``/``local_ipv6``/``tcp_ports`` narrow the default filter.
    ``rx_copy``: deliver frames as ``bytes`` (safe to keep) rather than memoryviews into the
    link's receive buffers, which stay valid -- bytes unchanged -- until the next :meth:`poll`
    begins (or :meth:`close`).  ``rx_ring``: receive through a TPACKET_V2 ring of about
    ``rx_ring_bytes`` (None: where supported, see ring.py; False: ``recvmmsg``, or
    ``recv_into`` with ``rx_mmsg=False``).  ``batch``: the most frames one :meth:`poll` hands
    to ``on_frames`` (the ``recvmmsg`` path reads at most ``RX_SLOTS``).

    Loopback (``lo``): works, with zero MACs and no ARP.  lo hands every frame we send straight
    back to us as PACKET_HOST; those echoes are recognised and dropped (``stats.extra
    ['rx_own_looped']``).  IPv6 ``::1`` works as is; IPv4 ``127/8`` frames injected by a packet
    socket carry no route, so the kernel drops them as martians unless
    ``net.ipv4.conf.lo.route_localnet=1`` and ``accept_local=1`` (``lo_ipv4_injectable`` tells).
    """

    def __init__(
        self,
        interface: str,
        netns: Optional[str] = None,
        vnet: bool = True,
        bpf_filter: Optional[list[tuple[int, int, int, int]]] = None,
        *,
        local_ipv4: Optional[Sequence[bytes | str]] = None,
        local_ipv6: Optional[Sequence[bytes | str]] = None,
        tcp_ports: Optional[Sequence[int]] = None,
        batch: int = 256,
        # The socket buffer is our "NIC ring": a Python stack drains it far slower than the kernel
        # fills it under a connection burst (500 clients x 10 segments), and every frame dropped
        # here is wire loss to TCP -- worse, a lost cookie ACK turns into a RST (as in Linux).
        # 32 MB is only used while a backlog exists.  Drops: read_kernel_stats().
        rcvbuf: int = 32 << 20,
        sndbuf: int = 4 << 20,
        rx_copy: bool = True,
        rx_mmsg: bool = True,
        rx_ring: Optional[bool] = None,
        # ~10,000 MTU slots: a connection burst (500 clients' handshakes at once under load)
        # overflowed 4 MiB where the 32 MB socket buffer of the recvmmsg path held it
        rx_ring_bytes: int = 16 << 20,
    ) -> None:
        self.name = interface
        self.netns = netns
        self.stats = LinkStats()
        self.batch = max(1, batch)
        self.rx_copy = rx_copy
        self._on_frames: Optional[OnFrames] = None
        self._loop: Any = None
        self._sock: Optional[socket.socket] = None
        self.vnet = False
        self.ignore_outgoing = False
        self.is_loopback = False
        # own frames that the loopback device will hand back to us (see _note_sent)
        self._own: dict[int, int] = {}
        self._own_order: collections.deque[int] = collections.deque()

        with in_netns(netns):
            try:
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            except PermissionError:
                raise PermissionError(errno.EPERM, PERMISSION_MESSAGE) from None
            try:
                self._setup(sock, interface, netns, vnet, bpf_filter, local_ipv4, local_ipv6, tcp_ports, rcvbuf, sndbuf)
            except BaseException:
                sock.close()
                raise
        self._sock = sock
        self.fileno = sock.fileno
        hdr = VNET_HDR_LEN if self.vnet else 0
        self._hdr = hdr
        self._fd = sock.fileno()
        # A TPACKET_V2 receive ring where it can be set up (ring.py; rx_ring=None: where
        # supported), else one recvmmsg per batch where libc has it (mmsg.py), else one recv_into
        # per frame.  With the ring, self._views only receive the frames too big for a ring slot
        # (TP_STATUS_COPY); their pages are touched only when used.
        self._ring: Optional[_ring.RxRing] = None
        if rx_ring or rx_ring is None:
            self._ring = _ring.make(sock, self.mtu, self.vnet, rx_ring_bytes)
        slots = min(self.batch, RX_SLOTS)
        self._mm = _mmsg.make(slots, RX_BUFFER_SIZE) if rx_mmsg and self._ring is None else None
        if self._mm is not None:
            self._views = self._mm.views
        else:
            self._views = _mmsg.slots(slots, RX_BUFFER_SIZE)
        if self._ring is None:
            self._drain_queued()     # (installing the ring purged the queue already)

    # ------------------------------------------------------------------------------------------
    def _setup(
        self,
        sock: socket.socket,
        interface: str,
        netns: Optional[str],
        vnet: bool,
        bpf_filter: Optional[list[tuple[int, int, int, int]]],
        local_ipv4: Optional[Sequence[bytes | str]],
        local_ipv6: Optional[Sequence[bytes | str]],
        tcp_ports: Optional[Sequence[int]],
        rcvbuf: int,
        sndbuf: int,
    ) -> None:
        sock.setblocking(False)  # never settimeout: the loop owns waiting
        try:
            self.ifindex = socket.if_nametoindex(interface)
        except OSError:
            raise NoSuchInterfaceError(interface, netns) from None

        # hardware type, MAC and MTU through ioctls on *this* socket: they resolve in the
        # socket's namespace, unlike /sys which reflects the namespace /sys was mounted in.
        req = _ifreq(interface)
        fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, req)
        hatype = struct.unpack_from("=H", req, 16)[0]
        if hatype not in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
            raise OSError(
                errno.EPROTONOSUPPORT,
                f"interface {interface!r} is not Ethernet (ARPHRD {hatype}); AfPacketLink needs Ethernet framing",
            )
        self.is_loopback = hatype == ARPHRD_LOOPBACK
        self.lo_ipv4_injectable: Optional[bool] = None
        if self.is_loopback:
            self.lo_ipv4_injectable = _lo_ipv4_injectable(interface)
        self.mac = bytes(req[18:24])
        req = _ifreq(interface)
        fcntl.ioctl(sock.fileno(), SIOCGIFMTU, req)
        self.mtu = struct.unpack_from("=i", req, 16)[0]

        for force, plain, size in ((SO_RCVBUFFORCE, socket.SO_RCVBUF, rcvbuf), (SO_SNDBUFFORCE, socket.SO_SNDBUF, sndbuf)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, size)
            except PermissionError:  # no CAP_NET_ADMIN: capped by net.core.[rw]mem_max
                sock.setsockopt(socket.SOL_SOCKET, plain, size)

        if vnet:
            try:
                sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
                self.vnet = True
            except OSError:
                self.vnet = False
        try:
            # Hides the OUTGOING tap copies of everything sent on the interface (ours and the
            # host's).  On lo the *looped-back* copy still arrives as PACKET_HOST; see _note_sent.
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            self.ignore_outgoing = True
        except OSError:  # kernels < 4.20: the BPF pkttype check below does the same job
            self.ignore_outgoing = False

        if bpf_filter is None:
            bpf_filter = bpf.build_filter(
                mac=None if self.is_loopback else self.mac,
                ipv4=local_ipv4,
                ipv6=local_ipv6,
                tcp_ports=tcp_ports,
                accept_arp=not self.is_loopback,
            )
        self.bpf_program = bpf_filter
        bpf.attach_filter(sock, bpf_filter)
        sock.bind((interface, ETH_P_ALL))

    def _drain_queued(self) -> None:
        """Discard anything queued before the filter took effect."""
        assert self._sock is not None
        buf = self._views[0]
        while True:
            try:
                self._sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno != errno.EINVAL:
                    return

    # ------------------------------------------------------------------ Link interface ----------
    def open_reader(self, on_frames: OnFrames) -> None:
        self._on_frames = on_frames

    def attach(self, loop: Any) -> None:
        if self._sock is None:
            raise OSError(errno.EBADF, "link is closed")
        if self._loop is not None:
            self.detach()
        loop.add_reader(self._sock.fileno(), self.poll)
        self._loop = loop

    def detach(self) -> None:
        if self._loop is not None and self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._loop = None

    def poll(self) -> int:
        """Drain one batch (up to ``batch`` frames) and deliver it; returns the number delivered.

        This is the ``add_reader`` callback; tests and blocking users may call it directly.
        With the receive ring see :meth:`_poll_ring`.  Otherwise the batch is read with one
        ``recvmmsg`` (mmsg.py) or, where libc has none, one ``recv_into`` per slot until
        ``EAGAIN``; either way slot ``i`` of ``self._views`` then holds a frame of ``lengths[i]``
        bytes (0: nothing usable in that slot), untouched until the next poll.
        """
        sock = self._sock
        if sock is None:
            return 0
        if self._ring is not None:
            return self._poll_ring()
        mm = self._mm
        if mm is not None:
            try:
                got = mm.recv(self._fd, socket.MSG_TRUNC)
            except OSError as e:
                self._rx_error(e)       # the loop calls us again if more frames wait
                return 0
            if not got:
                return 0
            lengths = mm.lengths(got)
        else:
            recv_into = sock.recv_into
            lengths = []
            for view in self._views:
                try:
                    lengths.append(recv_into(view, 0, socket.MSG_TRUNC))
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:
                    if not self._rx_error(e):
                        break
                    lengths.append(0)   # the frame was consumed: skip the slot, go on
        return self._deliver_slots(lengths)

    def _rx_error(self, e: OSError) -> bool:
        """Count a receive error the link lives with and say whether reading may go on; re-raise
        anything else.  EINVAL: ``packet_recvmsg`` consumed a frame its vnet header cannot
        describe (e.g. a UDP-GSO super-frame).  ENETDOWN: the interface went down; the packet
        socket reports it once (``sk_err``) and frames flow again when it comes back up."""
        extra = self.stats.extra
        if e.errno == errno.EINVAL:
            extra["rx_vnet_errors"] = extra.get("rx_vnet_errors", 0) + 1
            return True
        if e.errno == errno.ENETDOWN:
            extra["rx_netdown"] = extra.get("rx_netdown", 0) + 1
            return False
        raise e

    def _deliver_slots(self, lengths: Sequence[int]) -> int:
        """Strip the vnet header from the filled slots, drop truncated frames and loopback echoes
        of our own, copy (``rx_copy``) and hand the batch to ``on_frames`` once.

        Per frame this is the hot loop of the recvmmsg path: no ``enumerate``/``bool()`` calls,
        the trusted flag is a comparison (NEEDS_CSUM | DATA_VALID in the vnet flags byte)."""
        stats = self.stats
        hdr = self._hdr
        vnet = self.vnet
        copy = self.rx_copy
        own = self._own
        out: list[RxItem] = []
        nbytes = 0
        for view, n in zip(self._views, lengths):
            if n <= hdr or n > RX_BUFFER_SIZE:
                if n > RX_BUFFER_SIZE:
                    stats.rx_truncated += 1
                continue
            frame = view[hdr:n]
            if own and self._own_echo(frame):
                continue
            nbytes += n
            out.append((frame.tobytes() if copy else frame, vnet and view[0] & _VNET_TRUSTED != 0))
        return self._deliver(out, nbytes - hdr * len(out))

    def _deliver(self, out: list[RxItem], nbytes: int) -> int:
        """Count the batch and hand it to ``on_frames`` (once per poll, NAPI-style)."""
        if out:
            stats = self.stats
            stats.rx_frames += len(out)
            stats.rx_bytes += nbytes
            stats.rx_batches += 1
            if self._on_frames is not None:
                self._on_frames(out)
        return len(out)

    def _poll_ring(self) -> int:
        """:meth:`poll` with the receive ring (ring.py): no syscall while frames wait.

        THE RECEIVE CONTRACT: with ``rx_copy=False`` the frames are memoryviews into ring slots,
        which stay ours -- bytes unchanged -- until the next poll begins, which hands them back to
        the kernel first thing (or :meth:`close`).  With ``rx_copy=True`` the frames are copied
        out, so the slots go back at once and the kernel can refill them while the batch is
        processed.  While slots are held, ``packet_poll`` reports the socket readable (the slot
        before the kernel's head is not TP_STATUS_KERNEL), so the loop calls us again right after
        the batch: that call releases them and looks for more."""
        ring = self._ring
        assert ring is not None
        released = ring.release() if ring.held else 0
        copy = self.rx_copy
        out = ring.take(self.batch, copy, len(self._views))
        nbytes = ring.last_bytes
        if ring.copies:
            extra = self.stats.extra
            extra["rx_ring_copies"] = extra.get("rx_ring_copies", 0) + len(ring.copies)
            nbytes += self._recv_copies(out, ring.copies)
        if copy:
            ring.release()
        if ring.truncated:
            self.stats.rx_truncated += ring.truncated
            ring.truncated = 0
        if not out:
            if not released:
                self._check_error()
            return 0
        if self._own:
            kept = [item for item in out if not self._own_echo(item[0])]
            if len(kept) != len(out):
                nbytes -= sum(len(item[0]) for item in out) - sum(len(item[0]) for item in kept)
                out = kept
        return self._deliver(out, nbytes)

    def _recv_copies(self, out: list[Any], where: list[int]) -> int:
        """Read the frames the ring only has a truncated head of (TP_STATUS_COPY: the kernel
        queued the whole frame on the socket, in ring order) into ``self._views`` and put them
        at their places in ``out``; placeholders that cannot be filled are removed.  Returns the
        bytes delivered."""
        sock = self._sock
        assert sock is not None
        hdr = self._hdr
        vnet = self.vnet
        copy = self.rx_copy
        nbytes = 0
        ok = 0
        for view, idx in zip(self._views, where):
            try:
                n = sock.recv_into(view, 0, socket.MSG_TRUNC)
            except (BlockingIOError, InterruptedError):
                extra = self.stats.extra
                extra["rx_copy_missing"] = extra.get("rx_copy_missing", 0) + 1
                break
            except OSError as e:
                if not self._rx_error(e):
                    break
                continue
            if n > RX_BUFFER_SIZE:
                self.stats.rx_truncated += 1
                continue
            if n <= hdr:
                continue
            frame = view[hdr:n]
            out[idx] = (frame.tobytes() if copy else frame, vnet and view[0] & _VNET_TRUSTED != 0)
            nbytes += n - hdr
            ok += 1
        if ok != len(where):
            out[:] = [item for item in out if item is not None]
        return nbytes

    def _check_error(self) -> None:
        """A wake-up with nothing in the ring: a pending socket error (``sk_err``, e.g. ENETDOWN
        from ``packet_notifier``) makes the socket readable until someone reads it, and with the
        ring nobody calls recvmsg; ``SO_ERROR`` reads and clears it (``sock_error``)."""
        sock = self._sock
        if sock is None:
            return
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._rx_error(OSError(err, os.strerror(err)))

    def send(
        self,
        frame: Frame,
        gso_type: int = 0,
        gso_size: int = 0,
        csum_start: int = 0,
        csum_offset: int = 0,
    ) -> None:
        sock = self._sock
        if sock is None:
            raise OSError(errno.EBADF, "link is closed")
        base_gso = gso_type & ~GSO_ECN
        if base_gso not in (GSO_NONE, GSO_TCPV4, GSO_TCPV6):
            raise ValueError(f"unsupported gso_type {gso_type}")
        if self.vnet:
            if base_gso:
                if gso_size <= 0:
                    raise ValueError("gso_size must be > 0 with gso_type")
                if not csum_start:
                    csum_start, csum_offset = _tcp_csum_location(frame, base_gso)
                thl = (frame[csum_start + 12] >> 4) * 4
                if frame[csum_start + 13] & 0x80:  # CWR: tell the segmenter (SKB_GSO_TCP_ECN)
                    gso_type |= GSO_ECN
                hdr = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, csum_start + thl, gso_size, csum_start, csum_offset)
            elif csum_start:
                hdr = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, csum_start, csum_offset)
            else:
                hdr = _ZERO_VNET
            parts: list[Frame] = [hdr, frame]
        else:
            if base_gso:
                raise ValueError("GSO send needs the vnet header (PACKET_VNET_HDR), which is not active on this link")
            if csum_start:
                frame = _complete_checksum(frame, csum_start, csum_offset)
            parts = [frame]
        if not self._sendmsg(sock, parts):
            return
        self.stats.tx_frames += 1
        self.stats.tx_bytes += len(frame)
        if self.is_loopback:
            self._note_sent(frame)

    def send_tcp(self, l2l3: bytes, tcp_hdr: bytes, payload: Frame, gso_type: int = 0, gso_size: int = 0) -> None:
        """Scatter-gather :meth:`send` of an Ethernet+IP header, a TCP header holding the
        pseudo-header sum (NEEDS_CSUM: ``csum_start`` is the TCP header) and the payload, without
        joining them in user space (one ``sendmsg`` iovec each; the kernel copies once).
        Falls back to :meth:`send` of the joined frame where the vnet header is off or on
        loopback (whose echo detection needs the whole frame)."""
        sock = self._sock
        csum_start = len(l2l3)
        if sock is None or not self.vnet or self.is_loopback:
            self.send(b"".join((l2l3, tcp_hdr, payload)), gso_type, gso_size, csum_start, 16)
            return
        hdr = _tcp_vnet(csum_start, csum_start + len(tcp_hdr), gso_type, gso_size, tcp_hdr[13] & 0x80)
        if not self._sendmsg(sock, (hdr, l2l3, tcp_hdr, payload) if payload else (hdr, l2l3, tcp_hdr)):
            return
        stats = self.stats
        stats.tx_frames += 1
        stats.tx_bytes += csum_start + len(tcp_hdr) + len(payload)

    def send_tcp_burst(self, csum_start: int, hdr_len: int, gso_type: int, frames: Sequence[tuple]) -> None:
        """Several :meth:`send_tcp` frames of one connection: ``frames`` is ``[(headers,
        payload_parts, gso_size), ...]``, ``headers`` the Ethernet + IP + TCP headers (``hdr_len``
        bytes, the TCP header at ``csum_start``, holding the pseudo-header sum), the payload a
        list of buffers sent as their own iovecs (a segment may span send-buffer chunks; nothing
        is joined here), ``gso_size`` 0 for a frame of one segment.  The vnet headers are the
        same for every frame of a size (built once per burst)."""
        sock = self._sock
        if sock is None or not self.vnet or self.is_loopback:
            for headers, parts, gso_size in frames:
                self.send(b"".join((headers, *parts)), gso_type if gso_size else 0, gso_size, csum_start, 16)
            return
        vnets: dict[int, bytes] = {}
        sendmsg = sock.sendmsg
        sent = nbytes = 0
        for headers, parts, gso_size in frames:
            cwr = gso_size and headers[csum_start + 13] & 0x80
            key = -gso_size if cwr else gso_size
            hdr = vnets.get(key)
            if hdr is None:
                hdr = vnets[key] = _tcp_vnet(csum_start, hdr_len, gso_type if gso_size else 0, gso_size, cwr)
            try:                          # (_sendmsg inline: one Python call less per frame)
                nbytes += sendmsg((hdr, headers, *parts))
                sent += 1
            except OSError as e:
                if not self._tx_dropped(e):
                    raise
        stats = self.stats
        stats.tx_frames += sent
        stats.tx_bytes += nbytes - sent * VNET_HDR_LEN

    def _sendmsg(self, sock: socket.socket, parts: Sequence[Frame]) -> int:
        """One ``sendmsg``: the bytes sent (never 0 for a frame), or 0 (counted in ``tx_errors``)
        when the frame was dropped like a full device queue or a down interface would drop it --
        TCP retransmits."""
        try:
            return sock.sendmsg(parts)
        except OSError as e:
            if not self._tx_dropped(e):
                raise
            return 0

    def _tx_dropped(self, e: OSError) -> bool:
        """True (counted in ``tx_errors``) if a failed transmit only dropped the frame, as a full
        device queue or a down interface would (TCP retransmits); False: the caller raises."""
        if isinstance(e, (BlockingIOError, InterruptedError)) or e.errno in (errno.ENOBUFS, errno.ENETDOWN):
            self.stats.tx_errors += 1
            return True
        return False

    def _own_echo(self, frame: Frame) -> bool:
        """True (and forgotten) if ``frame`` is the loopback echo of one we sent (see _note_sent)."""
        own = self._own
        key = hash(bytes(frame))
        c = own.get(key)
        if not c:
            return False
        if c == 1:
            del own[key]
        else:
            own[key] = c - 1
        stats = self.stats
        stats.extra["rx_own_looped"] = stats.extra.get("rx_own_looped", 0) + 1
        return True

    def _note_sent(self, frame: Frame) -> None:
        """Remember a frame we sent on a loopback device so :meth:`poll` can drop its echo.

        lo hands every transmitted frame straight back as PACKET_HOST (indistinguishable from a
        frame the kernel sent to us), while PACKET_IGNORE_OUTGOING only hides the OUTGOING tap
        copy.  The echo arrives unchanged (lo neither segments nor fills checksums), so an exact
        content fingerprint identifies it.  Bounded, so frames that never come back age out.
        """
        key = hash(bytes(frame))
        self._own[key] = self._own.get(key, 0) + 1
        self._own_order.append(key)
        if len(self._own_order) > 4096:
            old = self._own_order.popleft()
            c = self._own.get(old)
            if c is not None:
                if c <= 1:
                    del self._own[old]
                else:
                    self._own[old] = c - 1

    def read_kernel_stats(self) -> dict[str, int]:
        """``PACKET_STATISTICS`` (the kernel resets them on read; we accumulate drops)."""
        if self._sock is None:
            return {"packets": 0, "drops": 0}
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        packets, drops = struct.unpack("=II", raw)
        self.stats.kernel_drops += drops
        return {"packets": packets, "drops": drops}

    def close(self) -> None:
        if self._sock is None:
            return
        self.detach()
        try:
            self.read_kernel_stats()
        except OSError:
            pass
        ring = self._ring
        if ring is not None:
            self._ring = None
            if not ring.close():
                # memoryviews into the ring are still alive: the mapping (and, before 3.13, the
                # socket it holds a dup of) stays until they go; stop the socket receiving now
                try:
                    bpf.attach_filter(self._sock, [(0x06, 0, 0, 0)])     # BPF_RET|BPF_K 0
                except OSError:
                    pass
        self._sock.close()
        self._sock = None

    def __repr__(self) -> str:
        where = f" netns={self.netns!r}" if self.netns else ""
        mac = ":".join(f"{b:02x}" for b in getattr(self, "mac", b""))
        return f"<AfPacketLink {self.name!r}{where} mac={mac} mtu={getattr(self, 'mtu', '?')} vnet={self.vnet}>"


_ZERO_VNET = bytes(VNET_HDR_LEN)
_VNET_TRUSTED = VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID


def _lo_ipv4_injectable(interface: str) -> Optional[bool]:
    """Would the kernel accept 127/8 IPv4 frames we inject on this loopback device?

    Read in the current thread's namespace (/proc/sys/net resolves it at open time).
    """
    def get(key: str) -> int:
        vals = []
        for dev in ("all", interface):
            with open(f"/proc/sys/net/ipv4/conf/{dev}/{key}") as f:
                vals.append(int(f.read().strip() or 0))
        return max(vals)

    try:
        return bool(get("route_localnet") and get("accept_local"))
    except (OSError, ValueError):
        return None


def _tcp_csum_location(frame: Frame, gso: int) -> tuple[int, int]:
    """csum_start/csum_offset of the TCP checksum for a plain Ethernet/IP/TCP frame."""
    if gso == GSO_TCPV4:
        return ETH_HLEN + (frame[ETH_HLEN] & 0x0F) * 4, 16
    return ETH_HLEN + 40, 16


def _complete_checksum(frame: Frame, csum_start: int, csum_offset: int) -> bytes:
    """Software NEEDS_CSUM: fold everything from csum_start (the field holds the pseudo sum)."""
    b = bytearray(frame)
    s = _fold_sum(memoryview(b)[csum_start:])
    c = (~s) & 0xFFFF
    pos = csum_start + csum_offset
    b[pos:pos + 2] = c.to_bytes(2, "big")
    return bytes(b)
