"""Deterministic simulated link on virtual time: two endpoints, seeded impairments.

Why: the TCP core must be testable for thousands of transfers under loss, reordering, duplication,
delay and rate limits, byte-exact and *reproducible* -- a failing seed must fail the same way every
time.  So nothing here reads a real clock or global randomness: :class:`SimClock` is an event heap
on virtual time with insertion-order tie-breaking, and every impairment decision comes from one
``random.Random(seed)`` drawn in a fixed order per frame.

Model of one direction of the wire (full duplex, directions independent)::

    send -> [loss?] -> serialization queue (rate_bps, FIFO) -> propagation (delay + jitter)
         -> [reorder? hold back] -> [corrupt?] -> peer.on_frames([(frame, csum_trusted)])
                    \\-> [dup? second copy right after]

Without reordering, jitter never reorders (arrival times are clamped to be non-decreasing), like a
real single-path link.  Frames selected for reordering are held back by ``reorder_delay`` and are
exempt from the clamp, so later frames overtake them.
"""
from __future__ import annotations

import errno
import heapq
import itertools
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .base import (
    ETH_HLEN,
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    Frame,
    Link,
    LinkStats,
    OnFrames,
)

__all__ = ["SimClock", "SimEvent", "SimNetwork", "SimLink", "segment_tcp"]


class SimEvent:
    """A scheduled callback; ``cancel()`` makes the clock skip it."""

    __slots__ = ("when", "fn", "args", "cancelled")

    def __init__(self, when: float, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __repr__(self) -> str:
        return f"<SimEvent t={self.when:.9f} {getattr(self.fn, '__qualname__', self.fn)}{' cancelled' if self.cancelled else ''}>"


class SimClock:
    """Virtual time and an event heap.

    Events run in time order; events at the same time run in the order they were scheduled (a
    monotonically increasing sequence number breaks ties), so runs are deterministic.  An event
    scheduled in the past runs at the current time (time never goes backwards).
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)
        self._heap: list[tuple[float, int, SimEvent]] = []
        self._seq = itertools.count()
        self.events_run = 0

    def time(self) -> float:
        """The current virtual time (usable wherever a ``clock=`` callable is expected)."""
        return self.now

    __call__ = time

    def call_at(self, when: float, fn: Callable[..., Any], *args: Any) -> SimEvent:
        ev = SimEvent(max(float(when), self.now), fn, args)
        heapq.heappush(self._heap, (ev.when, next(self._seq), ev))
        return ev

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> SimEvent:
        return self.call_at(self.now + max(0.0, delay), fn, *args)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> SimEvent:
        return self.call_at(self.now, fn, *args)

    def next_time(self) -> Optional[float]:
        """Time of the next pending (non-cancelled) event, or None."""
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pending(self) -> int:
        return sum(1 for _, _, ev in self._heap if not ev.cancelled)

    def run(
        self,
        until: Optional[float] = None,
        stop: Optional[Callable[[], bool]] = None,
        max_events: Optional[int] = None,
    ) -> int:
        """Process events in time order; return how many ran.

        Stops when ``stop()`` becomes true (checked before every event), when ``max_events`` have
        run, or when the next event lies after ``until`` -- then ``now`` advances to ``until``
        (virtual time passes even when nothing happens).  With no ``until`` it runs until the heap
        is empty, so a self-rearming timer needs ``until``, ``stop`` or ``max_events``.
        """
        count = 0
        heap = self._heap
        while True:
            if stop is not None and stop():
                return count
            if max_events is not None and count >= max_events:
                return count
            if not heap:
                break
            when, _, ev = heap[0]
            if until is not None and when > until:
                break
            heapq.heappop(heap)
            if ev.cancelled:
                continue
            if when > self.now:
                self.now = when
            ev.fn(*ev.args)
            count += 1
            self.events_run += 1
        if until is not None and until > self.now:
            self.now = float(until)
        return count

    def advance(self, dt: float) -> int:
        """Run everything due in the next ``dt`` seconds."""
        return self.run(until=self.now + dt)


@dataclass
class SimStats:
    """What the simulated wire did to the frames (both directions together)."""

    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    no_reader: int = 0
    gso_segments: int = 0
    log: Optional[list[tuple[float, str, int]]] = field(default=None, repr=False)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if k != "log"}


class _Direction:
    __slots__ = ("tx_free_at", "last_arrival")

    def __init__(self) -> None:
        self.tx_free_at = 0.0
        self.last_arrival = 0.0


class SimNetwork:
    """A simulated point-to-point Ethernet segment with seeded impairments.

    Impairment attributes (``loss``, ``dup``, ``reorder``, ``delay``, ``jitter``, ``rate_bps``,
    ``corrupt``, ``reorder_delay``) are plain attributes and may be changed mid-run.
    ``record=True`` keeps ``stats.log``: (time, link name, length) of every delivery, handy for
    determinism checks.
    ``volatile_rx=True`` (default) delivers each frame as a memoryview into a scratch buffer that is
    overwritten as soon as ``on_frames`` returns: the receive contract of ``AfPacketLink`` with
    ``rx_copy=False`` (a frame is valid only until the next batch), so every simulated test also
    proves that the stack copies whatever it keeps beyond the batch.
    """

    def __init__(
        self,
        clock: SimClock,
        seed: int = 0,
        loss: float = 0.0,
        dup: float = 0.0,
        reorder: float = 0.0,
        delay: float = 0.0,
        jitter: float = 0.0,
        rate_bps: Optional[float] = None,
        corrupt: float = 0.0,
        mtu: int = 1500,
        reorder_delay: Optional[float] = None,
        record: bool = False,
        volatile_rx: bool = True,
    ) -> None:
        self.clock = clock
        self.volatile_rx = volatile_rx
        self.seed = seed
        self.rng = random.Random(seed)
        self.loss = loss
        self.dup = dup
        self.reorder = reorder
        self.delay = delay
        self.jitter = jitter
        self.rate_bps = rate_bps
        self.corrupt = corrupt
        self.mtu = mtu
        #: how long a reordered frame is held back; default: one delay, at least 1 ms
        self.reorder_delay = reorder_delay
        self.stats = SimStats(log=[] if record else None)
        self.links: list[SimLink] = []
        self._dirs: dict[int, _Direction] = {}

    def link(self, name: str, mac: bytes, mtu: Optional[int] = None, vnet: bool = False) -> "SimLink":
        """Create one of the (at most two) endpoints."""
        if len(self.links) >= 2:
            raise ValueError("a SimNetwork has exactly two ends")
        if len(mac) != 6:
            raise ValueError("mac must be 6 bytes")
        lk = SimLink(self, name, bytes(mac), self.mtu if mtu is None else mtu, vnet)
        self.links.append(lk)
        self._dirs[id(lk)] = _Direction()
        return lk

    def peer_of(self, lk: "SimLink") -> Optional["SimLink"]:
        for other in self.links:
            if other is not lk:
                return other
        return None

    # -- the wire -----------------------------------------------------------------------------
    def _transmit(self, src: "SimLink", frame: bytes, trusted: bool) -> None:
        st = self.stats
        st.sent += 1
        rng = self.rng
        clock = self.clock
        now = clock.now
        d = self._dirs[id(src)]

        # serialization: the transmitter is busy for len*8/rate (lost frames still used the wire)
        if self.rate_bps:
            start = max(now, d.tx_free_at)
            d.tx_free_at = start + len(frame) * 8.0 / self.rate_bps
            leave = d.tx_free_at
        else:
            leave = now
        if self.loss and rng.random() < self.loss:
            st.lost += 1
            return
        arrival = leave + self.delay
        if self.jitter:
            arrival += rng.uniform(0.0, self.jitter)
        reordered = bool(self.reorder) and rng.random() < self.reorder
        if reordered:
            hold = self.reorder_delay if self.reorder_delay is not None else max(self.delay, 0.001)
            arrival += hold
            st.reordered += 1
        else:
            arrival = max(arrival, d.last_arrival)
            d.last_arrival = arrival
        if self.corrupt and len(frame) > ETH_HLEN and rng.random() < self.corrupt:
            b = bytearray(frame)
            b[rng.randrange(ETH_HLEN, len(b))] ^= rng.randrange(1, 256)
            frame = bytes(b)
            st.corrupted += 1
        dst = self.peer_of(src)
        clock.call_at(arrival, self._deliver, dst, frame, trusted)
        if self.dup and rng.random() < self.dup:
            st.duplicated += 1
            clock.call_at(arrival, self._deliver, dst, frame, trusted)

    def _deliver(self, dst: Optional["SimLink"], frame: bytes, trusted: bool) -> None:
        if dst is None or dst._on_frames is None or dst.closed:
            self.stats.no_reader += 1
            return
        self.stats.delivered += 1
        dst.stats.rx_frames += 1
        dst.stats.rx_bytes += len(frame)
        dst.stats.rx_batches += 1
        if self.stats.log is not None:
            self.stats.log.append((self.clock.now, dst.name, len(frame)))
        if not self.volatile_rx:
            dst._on_frames([(frame, trusted)])
            return
        scratch = bytearray(frame)
        try:
            dst._on_frames([(memoryview(scratch), trusted)])
        finally:
            scratch[:] = b"\xee" * len(scratch)     # the "next recvmmsg" overwrites the slot


class SimLink(Link):
    """One end of a :class:`SimNetwork`; implements the :class:`Link` interface on virtual time.

    ``vnet=False`` (default): like an AF_PACKET link without the vnet header -- GSO sends raise
    ``ValueError``; a requested partial checksum is completed in software; the peer receives
    ``csum_trusted=False``.  ``vnet=True``: GSO super-frames are segmented into ``gso_size`` TCP
    segments (with correct checksums) and delivered as ``csum_trusted=True``, like veth offloads.
    """

    def __init__(self, network: SimNetwork, name: str, mac: bytes, mtu: int, vnet: bool) -> None:
        self.network = network
        self.name = name
        self.mac = mac
        self.mtu = mtu
        self.vnet = vnet
        self.stats = LinkStats()
        self.closed = False
        self._on_frames: Optional[OnFrames] = None

    def open_reader(self, on_frames: OnFrames) -> None:
        self._on_frames = on_frames

    def attach(self, loop: Any) -> None:
        """Nothing to do: delivery is driven by the :class:`SimClock`."""

    def send(
        self,
        frame: Frame,
        gso_type: int = 0,
        gso_size: int = 0,
        csum_start: int = 0,
        csum_offset: int = 0,
    ) -> None:
        if self.closed:
            raise OSError(errno.EBADF, "link is closed")
        base = gso_type & ~GSO_ECN
        if base not in (GSO_NONE, GSO_TCPV4, GSO_TCPV6):
            raise ValueError(f"unsupported gso_type {gso_type}")
        frame = bytes(frame)
        if base:
            if not self.vnet:
                raise ValueError("GSO send needs vnet=True on this SimLink")
            if gso_size <= 0:
                raise ValueError("gso_size must be > 0 with gso_type")
            segs = segment_tcp(frame, base, gso_size, csum_start, csum_offset)
            self.network.stats.gso_segments += len(segs)
            for seg in segs:
                self._tx_one(seg, True)
            return
        trusted = False
        if csum_start:
            frame = complete_checksum(frame, csum_start, csum_offset)
            trusted = self.vnet
        self._tx_one(frame, trusted)

    def _tx_one(self, frame: bytes, trusted: bool) -> None:
        if len(frame) - ETH_HLEN > self.mtu:
            raise OSError(errno.EMSGSIZE, f"frame of {len(frame)} bytes exceeds MTU {self.mtu} on {self.name}")
        self.stats.tx_frames += 1
        self.stats.tx_bytes += len(frame)
        self.network._transmit(self, frame, trusted)

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return f"<SimLink {self.name!r} mtu={self.mtu} vnet={self.vnet}>"


# ------------------------------------------------------------------------------------------------
def _ones_sum(data: bytes | memoryview) -> int:
    """Folded one's-complement sum (bignum trick: 2**16 == 1 mod 0xffff, so this is done in C)."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    s = int.from_bytes(data, "big") % 0xFFFF
    return s if s or not any(data) else 0xFFFF


def complete_checksum(frame: bytes, csum_start: int, csum_offset: int) -> bytes:
    """Finish a NEEDS_CSUM checksum: the field holds the pseudo-header sum; fold from csum_start."""
    b = bytearray(frame)
    c = (~_ones_sum(memoryview(b)[csum_start:])) & 0xFFFF
    pos = csum_start + csum_offset
    b[pos:pos + 2] = c.to_bytes(2, "big")
    return bytes(b)


def _pseudo_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    s = int.from_bytes(src, "big") % 0xFFFF + int.from_bytes(dst, "big") % 0xFFFF + proto + length
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def segment_tcp(frame: bytes, gso_type: int, gso_size: int, csum_start: int = 0, csum_offset: int = 16) -> list[bytes]:
    """Software TSO: split an Ethernet/IPv4-or-IPv6/TCP super-frame into ``gso_size`` segments.

    Mirrors what the kernel's ``tcp_gso_segment`` does: sequence numbers advance, FIN/PSH only on
    the last segment, CWR only on the first, IPv4 ID increments, lengths and all checksums are
    recomputed (the input checksum field may hold a partial sum or anything else).
    """
    is_v4 = gso_type == GSO_TCPV4
    ip_off = ETH_HLEN
    if is_v4:
        ihl = (frame[ip_off] & 0x0F) * 4
        tcp_off = ip_off + ihl
    else:
        tcp_off = ip_off + 40
    if csum_start and csum_start != tcp_off:
        tcp_off = csum_start  # IPv6 extension headers: trust the caller's csum_start
    thl = (frame[tcp_off + 12] >> 4) * 4
    headers = frame[: tcp_off + thl]
    payload = frame[tcp_off + thl:]
    if is_v4:
        total = int.from_bytes(frame[ip_off + 2:ip_off + 4], "big")
        payload = payload[: max(0, total - (tcp_off - ip_off) - thl)]
        src, dst = frame[ip_off + 12:ip_off + 16], frame[ip_off + 16:ip_off + 20]
        ident = int.from_bytes(frame[ip_off + 4:ip_off + 6], "big")
    else:
        plen = int.from_bytes(frame[ip_off + 4:ip_off + 6], "big")
        payload = payload[: max(0, plen - (tcp_off - ip_off - 40) - thl)]
        src, dst = frame[ip_off + 8:ip_off + 24], frame[ip_off + 24:ip_off + 40]
        ident = 0
    seq0 = int.from_bytes(frame[tcp_off + 4:tcp_off + 8], "big")
    flags0 = frame[tcp_off + 13]
    n = max(1, -(-len(payload) // gso_size))
    out: list[bytes] = []
    for i in range(n):
        chunk = payload[i * gso_size:(i + 1) * gso_size]
        h = bytearray(headers)
        flags = flags0
        if i != n - 1:
            flags &= ~0x09  # FIN, PSH only on the last segment
        if i != 0:
            flags &= ~0x80  # CWR only on the first
        h[tcp_off + 13] = flags
        h[tcp_off + 4:tcp_off + 8] = ((seq0 + i * gso_size) & 0xFFFFFFFF).to_bytes(4, "big")
        tcp_len = thl + len(chunk)
        if is_v4:
            h[ip_off + 2:ip_off + 4] = (tcp_off - ip_off + tcp_len).to_bytes(2, "big")
            h[ip_off + 4:ip_off + 6] = ((ident + i) & 0xFFFF).to_bytes(2, "big")
            h[ip_off + 10:ip_off + 12] = b"\0\0"
            ipc = (~_ones_sum(memoryview(h)[ip_off:tcp_off])) & 0xFFFF
            h[ip_off + 10:ip_off + 12] = ipc.to_bytes(2, "big")
        else:
            h[ip_off + 4:ip_off + 6] = (tcp_off - ip_off - 40 + tcp_len).to_bytes(2, "big")
        h[tcp_off + 16:tcp_off + 18] = b"\0\0"
        s = _pseudo_sum(src, dst, 6, tcp_len) + _ones_sum(bytes(h[tcp_off:]) + chunk)
        while s > 0xFFFF:
            s = (s & 0xFFFF) + (s >> 16)
        h[tcp_off + 16:tcp_off + 18] = ((~s) & 0xFFFF).to_bytes(2, "big")
        out.append(bytes(h) + chunk)
    return out
