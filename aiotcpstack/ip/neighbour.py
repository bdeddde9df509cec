"""Neighbour cache (ARP for IPv4, NDP-shaped for IPv6): IP address -> link-layer address, with the
queue of packets waiting while an address is being resolved (the kernel's ``neigh->arp_queue``).

States, simplified from ``include/net/neighbour.h``: INCOMPLETE (resolving, packets queue up),
REACHABLE (confirmed less than ``reachable_time`` ago), STALE (older: still used, but the next use
triggers a refresh), FAILED (resolution gave up; the next packet starts over).

Bounded like Linux's ``gc_thresh3``: the table never holds more than ``max_entries`` entries.  An
insert into a full table first runs a forced GC (``neigh_forced_gc``) that frees ``gc_batch``
entries at once (amortised O(1) per insert), preferring entries that carry no useful state:
FAILED, then INCOMPLETE (their queued packets are dropped and counted
``NeighUnresolvedDiscards``), then the least recently confirmed STALE/REACHABLE ones.  A flood of
spoofed on-link sources therefore cycles through a bounded table (``NeighForcedGcRuns`` counts
the GC runs, ``NeighTableEvictions`` the entries freed).  An entry still referenced by a route
(a connection) may be evicted too -- Linux keeps refcounted entries instead; here the route keeps
its (detached) entry object, which re-enters the table the next time it needs resolution
(:meth:`NeighbourTable.resolve`), so a live connection never loses its next hop.

How a solicitation is sent is not decided here: the table calls ``solicit(ip, known_mac)``.
In dedicated mode the core broadcasts an ARP request (unicast to ``known_mac`` on refresh); in
shared mode the aio layer asks the kernel's neighbour table (``host/``) and calls back
:meth:`NeighbourTable.update`.  Sans-IO: no clock; retries are driven by :meth:`on_timer` at
:meth:`next_deadline` (the core arms one wheel timer for the whole table).
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

_ETH = struct.Struct("!6s6sH")      # destination MAC, source MAC, ethertype

INCOMPLETE = "INCOMPLETE"
REACHABLE = "REACHABLE"
STALE = "STALE"
FAILED = "FAILED"


class NeighbourEntry:
    __slots__ = ("ip", "mac", "state", "confirmed", "probes", "next_probe", "queue", "eth_cache",
                 "last_used")

    def __init__(self, ip: bytes) -> None:
        self.ip = ip
        self.mac: bytes | None = None
        self.state = INCOMPLETE
        self.confirmed = 0.0
        self.probes = 0
        self.next_probe: float | None = None
        self.queue: list[Any] = []
        #: ethertype -> prebuilt 14-byte Ethernet header (invalidated when the MAC changes)
        self.eth_cache: dict[int, bytes] = {}
        self.last_used = 0.0

    def eth_header(self, ethertype: int, src_mac: bytes) -> bytes:
        """The Ethernet header of a frame to this neighbour (resolved: ``mac`` is set), built once
        per ethertype and kept until the MAC changes (``eth_cache`` is cleared then)."""
        h = self.eth_cache.get(ethertype)
        if h is None:
            h = self.eth_cache[ethertype] = _ETH.pack(self.mac, src_mac, ethertype)
        return h

    def __repr__(self) -> str:
        mac = self.mac.hex(":") if self.mac else None
        return f"NeighbourEntry({self.ip.hex()} {mac} {self.state})"


class NeighbourTable:
    def __init__(self, counters: dict[str, int], solicit: Callable[[bytes, bytes | None], None], *,
                 reachable_time: float = 30.0, retrans_time: float = 1.0, max_probes: int = 3,
                 queue_len: int = 101, gc_time: float = 300.0, max_entries: int = 1024,
                 gc_batch: int = 0) -> None:
        self.counters = counters
        self.solicit = solicit
        self.reachable_time = reachable_time
        self.retrans_time = retrans_time
        self.max_probes = max_probes
        self.queue_len = queue_len           # like unres_qlen (packets)
        self.gc_time = gc_time
        self.max_entries = max(1, max_entries)          # gc_thresh3
        #: entries freed per forced GC run (default: 1/8 of the table, at least 1)
        self.gc_batch = gc_batch or max(1, self.max_entries // 8)
        self.entries: dict[bytes, NeighbourEntry] = {}
        #: called with the new earliest deadline when it moves earlier (the core re-arms its timer)
        self.on_deadline: Callable[[float], None] | None = None

    def entry(self, ip: bytes) -> NeighbourEntry:
        e = self.entries.get(ip)
        if e is None:
            e = NeighbourEntry(bytes(ip))
            self._insert(e)
        return e

    def _insert(self, e: NeighbourEntry) -> None:
        if len(self.entries) >= self.max_entries:
            self.forced_gc()
        self.entries[e.ip] = e

    def forced_gc(self) -> int:
        """``neigh_forced_gc``: free ``gc_batch`` entries (FAILED first, then INCOMPLETE, then the
        least recently confirmed).  Returns the number freed."""
        self.counters["NeighForcedGcRuns"] += 1
        want = min(self.gc_batch, len(self.entries))
        rank = {FAILED: 0, INCOMPLETE: 1, STALE: 2, REACHABLE: 3}
        victims = sorted(self.entries.values(), key=lambda e: (rank.get(e.state, 2), e.confirmed))[:want]
        for e in victims:
            del self.entries[e.ip]
            if e.queue:
                self.counters["NeighUnresolvedDiscards"] += len(e.queue)
                e.queue = []
            e.next_probe = None
            if e.mac is None:
                e.state = FAILED
        self.counters["NeighTableEvictions"] += len(victims)
        return len(victims)

    def lookup(self, ip: bytes) -> bytes | None:
        e = self.entries.get(ip)
        return e.mac if e is not None else None

    # -- the transmit side -------------------------------------------------------------------------
    def resolve(self, e: NeighbourEntry, now: float, packet: Any = None) -> bytes | None:
        """The MAC to send to, or None after queueing ``packet`` (when given) and starting
        resolution.  A STALE entry is still used while a refresh runs (kernel: DELAY/PROBE)."""
        if self.entries.get(e.ip) is not e:
            # evicted by a forced GC while a route still held it: re-enter the table so that
            # confirmations (update) and retries (on_timer) reach it again
            cur = self.entries.get(e.ip)
            if cur is not None:             # a newer entry for the same address: adopt its state
                if cur.mac is not None and e.mac != cur.mac:
                    e.mac = cur.mac
                    e.eth_cache.clear()
                e.state, e.confirmed = cur.state, cur.confirmed
                e.queue.extend(cur.queue)
                del e.queue[:-self.queue_len or None]
                e.next_probe, e.probes = cur.next_probe, cur.probes
                self.entries[e.ip] = e
            else:
                self._insert(e)
        mac = e.mac
        if mac is not None:
            if e.state is REACHABLE and now - e.confirmed > self.reachable_time:
                e.state = STALE
            if e.state is STALE and e.next_probe is None:
                self._probe(e, now)
            return mac
        if packet is not None:
            if len(e.queue) >= self.queue_len:
                e.queue.pop(0)
                self.counters["NeighUnresolvedDiscards"] += 1
            e.queue.append(packet)
        if e.next_probe is None:
            e.state = INCOMPLETE
            e.probes = 0
            self._probe(e, now)
        return None

    def _probe(self, e: NeighbourEntry, now: float) -> None:
        e.probes += 1
        e.next_probe = now + self.retrans_time
        self.solicit(e.ip, e.mac if e.state is STALE else None)
        if self.on_deadline is not None:
            self.on_deadline(e.next_probe)

    # -- the receive side --------------------------------------------------------------------------
    def update(self, ip: bytes, mac: bytes, now: float, create: bool = True) -> list[Any]:
        """A confirmation (ARP reply, request from it, kernel answer): returns the packets that were
        waiting for it (the caller sends them)."""
        e = self.entries.get(ip)
        if e is None:
            if not create:
                return []
            e = NeighbourEntry(bytes(ip))
            self._insert(e)
        mac = bytes(mac)
        if e.mac != mac:
            e.mac = mac
            e.eth_cache.clear()
        e.state = REACHABLE
        e.confirmed = now
        e.probes = 0
        e.next_probe = None
        q, e.queue = e.queue, []
        return q

    def failed(self, ip: bytes, now: float) -> None:
        """Resolution failed (e.g. the kernel said so in shared mode)."""
        e = self.entries.get(ip)
        if e is not None and e.mac is None:
            self._fail(e)

    def reconfirm(self, e: NeighbourEntry, now: float) -> bool:
        """Negative advice from a transport about the next hop ``e`` (RFC 1122 3.3.1.4 dead-gateway
        detection; TCP gives it after R1 unanswered retransmissions, RFC 9293 3.8.3): whatever
        ``e``'s age, its reachability is in doubt, so it becomes STALE and is probed now --
        unicast to the MAC we know (the kernel's PROBE state), the entry still used meanwhile.
        A confirmation makes it REACHABLE again; ``max_probes`` unanswered probes forget the MAC
        (:meth:`on_timer`), so the next packet starts a fresh broadcast resolution (a new gateway
        or a moved host is found).  An entry without a MAC or with a probe already running is
        left alone.  Returns True when a probe went out."""
        if e.mac is None or e.next_probe is not None:
            return False
        e.state = STALE
        self.resolve(e, now)          # (re-enters an evicted entry, then probes the STALE one)
        return e.next_probe is not None

    def _fail(self, e: NeighbourEntry) -> None:
        if e.queue:
            self.counters["NeighUnresolvedDiscards"] += len(e.queue)
            e.queue = []
        e.state = FAILED
        e.next_probe = None

    # -- timers ------------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        best = None
        for e in self.entries.values():
            t = e.next_probe
            if t is not None and (best is None or t < best):
                best = t
        return best

    def on_timer(self, now: float) -> None:
        dead = []
        for e in list(self.entries.values()):
            t = e.next_probe
            if t is None:
                if e.state is not INCOMPLETE and now - e.confirmed > self.gc_time and not e.queue:
                    dead.append(e.ip)
                continue
            if t > now:
                continue
            if e.probes >= self.max_probes:
                if e.mac is None:
                    self._fail(e)
                else:            # a stale entry that stopped answering: forget it
                    e.mac = None
                    e.eth_cache.clear()
                    self._fail(e)
            else:
                self._probe(e, now)
        for ip in dead:
            del self.entries[ip]
