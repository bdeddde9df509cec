"""The stack's one timer wheel: the user-space analogue of the kernel's timer wheel and ``mod_timer``.

Every connection owns a few preallocated :class:`Timer` objects (one per kernel timer:
retransmit/zero-window probe, delayed ACK, keepalive / SYN-ACK / FIN_WAIT2, TIME_WAIT) and re-arms
them in place. The asyncio layer keeps exactly one ``loop.call_at`` for :meth:`TimerWheel.next_expiry`
and calls :meth:`TimerWheel.advance` when it fires; no connection ever owns a ``TimerHandle``.

Design (why it looks like this)
-------------------------------
* **Hierarchical hashed wheel with cascading**, ``LEVELS`` levels of 64 slots each; level ``k``
  has a slot width of ``64**k`` ticks, so 5 levels cover ``2**30`` ticks (12.4 days at 1 ms).
  Deadlines further out are filed at the horizon and re-filed when that slot comes up, so any
  deadline works (TIME_WAIT 60 s, keepalive 7200 s, ...). Unlike Linux's post-4.8 wheel, which
  lets far timers fire up to 12.5 % late, we cascade: when a coarse slot comes up its timers are
  re-filed into finer levels, so every timer fires in the first ``advance`` whose tick reaches
  its deadline tick (never early, at most one granularity late). Each timer cascades at most
  ``LEVELS - 1`` times over its life.
* **Intrusive doubly-linked lists**: each slot is a preallocated sentinel node, and a
  :class:`Timer` carries its own ``_prev``/``_next`` links and its slot. ``arm``, re-arm and
  ``cancel`` are O(1) pointer updates and allocate no objects (no heap entries, no handles);
  ``tests/unit/test_tcp_timer_wheel.py`` checks that with ``tracemalloc``.
* **Lazy re-arm to a later deadline** (like the kernel's ``mod_timer`` fast path, but for any
  later deadline): a pending timer moved *later* only gets its ``expires`` updated; it stays in
  its old slot and is re-filed when that slot comes up. The per-ACK RTO re-arm is therefore
  two attribute stores. Re-arming *earlier* unlinks and re-files (still O(1)).
* **Detach** (Linux ``inet_csk_clear_xmit_timer``, which clears only ``icsk_pending``): a timer
  stopped by :meth:`TimerWheel.detach` is not pending but stays linked in its slot, so that the
  next arm to a deadline not before that slot's time is the lazy path too (a connection's
  retransmission timer, stopped by every ACK of everything and armed by the next send: one
  request/response round trip).  The slot drops it when it comes up; ``cancel`` unlinks it.
* **Occupancy bitmaps** (one 64-bit int per level, like the kernel's ``pending_map``) let
  :meth:`next_expiry` find the next non-empty slot with a few integer operations per level
  instead of scanning slots, and let :meth:`advance` jump over idle stretches (an idle stack
  that wakes after an hour does not iterate 3.6 million ticks).

Trade-off of :meth:`next_expiry`: the earliest deadline is cached. Arming earlier updates the
cache in O(1); cancelling or postponing the timer that *was* the earliest (or emptying a slot)
only marks it stale, and the next call recomputes it by walking the occupancy bitmaps and the
timers of the earliest slots, stopping at the first slot that cannot hold anything earlier and
after at most ``_SCAN_BUDGET`` (64) timers. Within the budget the answer is exact (the earliest
``expires`` rounded up to the granularity); past it (thousands of lazily postponed timers parked
in the same early slots) it is that slot's time, a lower bound: the ``advance`` then re-files
them and may fire nothing, one cheap spurious wake-up, the price of O(1) lazy re-arm (the kernel
pays the same). Cascades never need a wake-up of their own: ``advance`` performs every cascade
between the last tick and ``now`` before firing.  A stale cache is still a lower bound of every
deadline (cancelling or postponing only moves the earliest later), so ``arm`` compares against it
without recomputing: below it the new timer is the exact earliest; at or above it the driver,
already waiting until at most that bound, needs no call.  :meth:`next_expiry_bound` gives the
driver that bound (one ``next_expiry`` walk per ``advance`` instead of one per cancelled timer).

Ticks: a deadline ``when`` belongs to tick ``ceil(when / granularity)`` and ``advance(now)``
processes up to tick ``floor(now / granularity)`` (both with a 1e-6-tick tolerance for float
noise), so a timer never fires before ``when`` and never more than one granularity after it.
"""
from __future__ import annotations

import math
from typing import Callable

__all__ = ["Timer", "TimerWheel", "LEVELS", "LEVEL_BITS"]

LEVEL_BITS = 6                      # 64 slots per level
LEVEL_SIZE = 1 << LEVEL_BITS
LEVEL_MASK = LEVEL_SIZE - 1
LEVELS = 5                          # horizon 2**30 ticks; beyond that: filed at the horizon, re-filed
_HORIZON = 1 << (LEVEL_BITS * LEVELS)
_FULL_MAP = (1 << LEVEL_SIZE) - 1
_SCAN_BUDGET = 64                   # max timers next_expiry() looks at when recomputing
_EPS = 1e-6                         # tolerance in ticks for float rounding (0.007 / 0.001 = 7.000000000000001)


class _Slot:
    """Sentinel of one slot's circular intrusive list (preallocated, never freed)."""

    __slots__ = ("_prev", "_next", "level", "index")

    def __init__(self, level: int, index: int) -> None:
        self._prev: _Slot | Timer = self
        self._next: _Slot | Timer = self
        self.level = level          # -1: the due list
        self.index = index


class _FiringMarker:
    """Stands in for ``Timer._slot`` while a timer waits in an expiry batch (pending, unlinked)."""

    __slots__ = ()


_FIRING = _FiringMarker()


class Timer:
    """One re-armable timer; allocate once per connection per kernel timer and re-arm in place.

    ``callback(now)`` is called with the ``now`` given to :meth:`TimerWheel.advance`. The timer
    is no longer pending when its callback runs (as in the kernel), so the callback may re-arm it.
    ``expires`` is the exact deadline of the last ``arm`` (meaningful only while pending).
    """

    __slots__ = ("callback", "name", "expires", "_tick", "_filed", "_slot", "_prev", "_next", "_parked")

    def __init__(self, callback: Callable[[float], object] | None, name: str = "") -> None:
        if callback is not None:       # None: a subclass defines ``callback`` as a method
            self.callback = callback
        self.name = name
        self.expires: float = 0.0
        self._tick = 0              # deadline tick: ceil(expires / granularity)
        self._filed = 0             # tick the timer is filed under (< _tick when lazily postponed)
        self._slot: _Slot | _FiringMarker | None = None
        self._prev: _Slot | Timer | None = None
        self._next: _Slot | Timer | None = None
        self._parked: _Slot | None = None      # detach(): the slot it still sits in, not pending

    @property
    def pending(self) -> bool:
        """Armed and not yet fired or cancelled (kernel ``timer_pending``)."""
        return self._slot is not None

    def __repr__(self) -> str:
        state = f"expires={self.expires!r}" if self._slot is not None else "idle"
        return f"<Timer {self.name or hex(id(self))} {state}>"


class TimerWheel:
    """Hierarchical timer wheel driven by ``advance(now)``; see the module docstring.

    ``on_new_earliest(when)`` is called when an :meth:`arm` made outside :meth:`advance` moves
    the wheel's next event earlier than the driver was last told (or arms the first timer): the
    asyncio layer then re-arms its single ``loop.call_at``, which it never moves later. It is *not* called for arms made by callbacks during ``advance``;
    whoever calls ``advance`` must read :meth:`next_expiry` afterwards.
    """

    def __init__(self, now: float = 0.0, granularity: float = 0.001) -> None:
        if not granularity > 0:
            raise ValueError("granularity must be positive")
        self.granularity = granularity
        self.on_new_earliest: Callable[[float], None] | None = None
        self._clk = math.floor(now / granularity + _EPS)     # last processed tick
        self._slots = [_Slot(lvl, idx) for lvl in range(LEVELS) for idx in range(LEVEL_SIZE)]
        self._maps = [0] * LEVELS                            # occupancy bitmaps per level
        self._due = _Slot(-1, 0)                             # timers whose tick is <= _clk
        self._count = 0
        self._next_tick: int | None = None                   # cached next event tick
        self._next_valid = True
        self._running = False

    # ------------------------------------------------------------------ public API

    def __len__(self) -> int:
        """Number of pending timers."""
        return self._count

    @property
    def now(self) -> float:
        """Time of the last processed tick."""
        return self._clk * self.granularity

    def pending(self, timer: Timer) -> bool:
        """Whether ``timer`` is armed and has not fired or been cancelled."""
        return timer._slot is not None

    def arm(self, timer: Timer, when: float) -> None:
        """Arm (or re-arm) ``timer`` to fire at ``when``: the kernel's ``mod_timer``. O(1), no allocation.

        Re-arming a pending timer to a later deadline is lazy: only ``expires`` changes.
        """
        tick = math.ceil(when / self.granularity - _EPS)
        slot = timer._slot
        if slot is not None and slot is not _FIRING and tick >= timer._filed:
            # Lazy path: the old slot comes up first (at or before ``tick``) and re-files the
            # timer then. Only the cached earliest deadline may need attention.
            old = timer._tick
            timer.expires = when
            timer._tick = tick
            nxt = self._next_tick
            if self._next_valid:
                if nxt is None or tick < nxt:
                    # A lazily postponed timer pulled back in, ahead of everything else.
                    if self._running:
                        self._next_valid = False
                        self._next_tick = None
                    else:
                        self._next_tick = tick if tick > self._clk else self._clk
                        if self.on_new_earliest is not None:
                            self.on_new_earliest(self._next_tick * self.granularity)
                elif old == nxt and tick > old:
                    self._next_valid = False    # it may have been the earliest: recompute on demand
            elif nxt is not None and tick < nxt:
                # below the lower bound of every other timer: the earliest (see _new_earliest)
                self._new_earliest(tick)
            return
        if slot is None:
            parked = timer._parked
            if parked is not None:
                # detached, still linked (detach): a deadline not before its slot's time takes
                # it back in place, like the lazy path above; an earlier one unlinks it
                timer._parked = None
                if tick >= timer._filed:
                    self._count += 1
                    timer.expires = when
                    timer._tick = tick
                    if self._running:
                        timer._slot = parked
                        self._next_valid = False
                        self._next_tick = None
                        return
                    if not self._next_valid and self._next_tick is None:
                        self._recompute_next()      # (before it counts again: as for a new timer)
                    timer._slot = parked
                    prev = self._next_tick
                    if prev is None or tick < prev:
                        self._new_earliest(tick)
                    return
                self._unlink(timer, parked)
            self._count += 1
        elif slot is _FIRING:
            pass                    # waiting in an expiry batch: just stop it firing there
        else:
            self._unlink(timer, slot)  # type: ignore[arg-type]
        timer.expires = when
        timer._tick = tick
        if self._running:
            self._file(timer, tick)
            self._next_valid = False
            self._next_tick = None
            return
        if not self._next_valid and self._next_tick is None:
            self._recompute_next()
        self._file(timer, tick)
        prev = self._next_tick
        if prev is None or tick < prev:
            self._new_earliest(tick)

    def cancel(self, timer: Timer) -> bool:
        """Stop ``timer`` (kernel ``del_timer``); returns whether it was pending. O(1)."""
        slot = timer._slot
        if slot is None:
            parked = timer._parked
            if parked is not None:         # detached and still linked: unlinked now
                timer._parked = None
                prev = timer._prev
                nxt = timer._next
                prev._next = nxt  # type: ignore[union-attr]
                nxt._prev = prev  # type: ignore[union-attr]
                timer._prev = timer._next = None
                if parked._next is parked:
                    self._maps[parked.level] &= ~(1 << parked.index)
            return False
        if slot is not _FIRING:
            # (_unlink, inline: a connection cancels its retransmission timer on every ACK
            # that acknowledges everything -- once per request/response round trip)
            prev = timer._prev
            nxt = timer._next
            prev._next = nxt  # type: ignore[union-attr]
            nxt._prev = prev  # type: ignore[union-attr]
            timer._prev = timer._next = None
            if slot._next is slot and slot.level >= 0:  # type: ignore[union-attr]
                self._maps[slot.level] &= ~(1 << slot.index)  # type: ignore[union-attr]
        if timer._tick == self._next_tick:
            self._next_valid = False
        timer._slot = None
        self._count -= 1
        return True

    def detach(self, timer: Timer) -> bool:
        """Stop ``timer`` as :meth:`cancel` does, but leave it linked in its slot: Linux's
        ``inet_csk_clear_xmit_timer``, which only clears ``icsk_pending`` and leaves the
        ``timer_list`` queued.  It reads as not pending (``pending``, ``len``) and never fires;
        a later :meth:`arm` to a deadline not before its slot's time takes it back in place (no
        unlink, no re-filing: the lazy re-arm), an earlier one unlinks and re-files it.  The
        slot drops it when it comes up, :meth:`cancel` unlinks it at once (a connection that
        closes cancels its timers, so a stale link never keeps it alive for long).  For a timer
        stopped and re-armed over and over: a connection's retransmission timer, stopped by the
        ACK of everything it sent and armed by the next send.  Returns whether it was pending.
        O(1)."""
        slot = timer._slot
        if slot is None:
            return False
        if slot is _FIRING or slot.level < 0:  # type: ignore[union-attr]
            return self.cancel(timer)           # (an expiry batch or the due list: at once)
        timer._slot = None
        timer._parked = slot  # type: ignore[assignment]
        if timer._tick == self._next_tick:
            self._next_valid = False
        self._count -= 1
        return True

    def replace(self, old: Timer, new: Timer) -> None:
        """``new`` (idle) takes pending ``old``'s deadline and place in the wheel; ``old`` is
        idle after.  O(1): the same as ``cancel(old)`` + ``arm(new, old.expires)`` without
        unlinking, re-filing or touching the cached earliest (a connection handing its 2MSL
        timer to its TIME_WAIT record)."""
        slot = old._slot
        if slot is None or slot is _FIRING or new._slot is not None or new._parked is not None:
            expires = old.expires
            pending = self.cancel(old)
            if pending:
                self.arm(new, expires)
            return
        new.expires = old.expires
        new._tick = old._tick
        new._filed = old._filed
        prev = new._prev = old._prev
        nxt = new._next = old._next
        prev._next = new  # type: ignore[union-attr]
        nxt._prev = new  # type: ignore[union-attr]
        new._slot = slot
        old._slot = old._prev = old._next = None

    def _new_earliest(self, tick: int) -> None:
        """``tick`` is below every other pending timer's deadline (the wheel was empty, or ``tick``
        is below the cached earliest -- exact, or the lower bound kept after a cancel): it is
        the exact earliest now; tell ``on_new_earliest``."""
        if tick < self._clk:
            tick = self._clk
        self._next_tick = tick
        self._next_valid = True
        if self.on_new_earliest is not None:
            self.on_new_earliest(tick * self.granularity)

    def next_expiry_bound(self) -> float | None:
        """A lower bound of the earliest deadline, recomputed only when none is known.

        After a cancel (or a later re-arm) of the earliest timer the old earliest stays a valid
        lower bound; a driver that already waits until at most that time (``on_new_earliest``
        is called for every arm below it) has nothing to re-arm, so this skips the walk that
        :meth:`next_expiry` does to make it exact.  After :meth:`advance` nothing is known and
        it is computed."""
        if not self._next_valid and self._next_tick is None:
            self._recompute_next()
        tick = self._next_tick
        return None if tick is None else tick * self.granularity

    def next_expiry(self) -> float | None:
        """When :meth:`advance` next has work: a lower bound of the earliest deadline, or None.

        Cached; see the module docstring for when it is earlier than the earliest ``expires``.
        """
        if not self._next_valid:
            self._recompute_next()
        tick = self._next_tick
        return None if tick is None else tick * self.granularity

    def advance(self, now: float) -> int:
        """Fire every timer whose deadline tick is <= ``floor(now / granularity)``, in deadline order.

        Returns the number of callbacks run. Callbacks may arm and cancel any timer; a timer
        re-armed to a deadline that is already due fires again in this call, otherwise not.
        If a callback raises, the wheel stays consistent and the exception propagates.
        """
        target = math.floor(now / self.granularity + _EPS)
        fired = 0
        due = self._due
        self._running = True
        try:
            while True:
                if due._next is not due:
                    fired += self._fire_due(now)
                    continue
                event = self._next_event()
                if event is None or event > target:
                    break
                self._clk = event
                self._process_event(event)
            if target > self._clk:
                self._clk = target
        finally:
            self._running = False
            self._next_valid = False
            self._next_tick = None      # nothing known: the next query computes it
        return fired

    # ------------------------------------------------------------------ internals

    def _file(self, timer: Timer, tick: int) -> int:
        """Link ``timer`` (deadline ``tick``) into its slot relative to ``_clk``; return its event tick."""
        clk = self._clk
        delta = tick - clk
        if delta <= 0:
            slot = self._due
            event = clk
            timer._filed = tick
        else:
            if delta >= _HORIZON:
                tick = clk + _HORIZON - 1          # park at the horizon; re-filed when it comes up
                delta = _HORIZON - 1
            level = (delta.bit_length() - 1) // LEVEL_BITS
            shift = level * LEVEL_BITS
            idx = (tick >> shift) & LEVEL_MASK
            slot = self._slots[(level << LEVEL_BITS) | idx]
            self._maps[level] |= 1 << idx
            event = (tick >> shift) << shift
            timer._filed = tick
        tail = slot._prev
        timer._prev = tail
        timer._next = slot
        tail._next = timer
        slot._prev = timer
        timer._slot = slot
        return event

    def _unlink(self, timer: Timer, slot: _Slot) -> None:
        prev = timer._prev
        nxt = timer._next
        prev._next = nxt  # type: ignore[union-attr]
        nxt._prev = prev  # type: ignore[union-attr]
        timer._prev = timer._next = None
        if slot._next is slot and slot.level >= 0:
            # The cache stays a valid lower bound; cancel() invalidates it when the earliest goes.
            self._maps[slot.level] &= ~(1 << slot.index)

    def _next_event(self) -> int | None:
        """Tick of the next slot needing work after ``_clk`` (due list: ``_clk``), from the bitmaps."""
        if self._due._next is not self._due:
            return self._clk
        best: int | None = None
        clk = self._clk
        maps = self._maps
        for level in range(LEVELS):
            bm = maps[level]
            if not bm:
                continue
            shift = level * LEVEL_BITS
            window = clk >> shift
            start = (window + 1) & LEVEL_MASK
            # Rotate so bit 0 is the slot right after the current window; lowest set bit wins.
            rot = ((bm >> start) | (bm << (LEVEL_SIZE - start))) & _FULL_MAP
            j = (rot & -rot).bit_length() - 1
            event = (window + 1 + j) << shift
            if best is None or event < best:
                best = event
        return best

    def _recompute_next(self) -> None:
        """Cache the earliest deadline tick, scanning at most ``_SCAN_BUDGET`` timers.

        Buckets are visited per level in event order and a level stops as soon as a bucket's
        event is not earlier than the best deadline seen (every timer in it is due no earlier
        than that event). When the budget runs out (many lazily postponed timers in early
        slots) the unscanned bucket's event time is used instead: a lower bound, still correct.
        """
        self._next_valid = True
        if self._due._next is not self._due:
            self._next_tick = self._clk
            return
        best: int | None = None
        bound: int | None = None
        budget = _SCAN_BUDGET
        clk = self._clk
        slots = self._slots
        for level in range(LEVELS):
            bm = self._maps[level]
            if not bm:
                continue
            shift = level * LEVEL_BITS
            window = clk >> shift
            start = (window + 1) & LEVEL_MASK
            rot = ((bm >> start) | (bm << (LEVEL_SIZE - start))) & _FULL_MAP
            while rot:
                low = rot & -rot
                j = low.bit_length() - 1
                event = (window + 1 + j) << shift
                if best is not None and event >= best:
                    break
                slot = slots[(level << LEVEL_BITS) | ((start + j) & LEVEL_MASK)]
                node = slot._next
                while node is not slot and budget > 0:
                    t = node._tick  # type: ignore[union-attr]
                    if (best is None or t < best) and node._slot is not None:  # type: ignore[union-attr]
                        best = t                # (a detached timer has no deadline)
                    budget -= 1
                    node = node._next  # type: ignore[union-attr]
                if node is not slot:        # budget exhausted inside this bucket
                    if bound is None or event < bound:
                        bound = event
                    break
                rot ^= low
        if bound is not None and (best is None or bound < best):
            best = bound
        self._next_tick = best

    def _process_event(self, event: int) -> None:
        """At tick ``event``: cascade coarse slots that come up and move due timers to the due list."""
        maps = self._maps
        slots = self._slots
        for level in range(LEVELS - 1, -1, -1):
            shift = level * LEVEL_BITS
            if event & ((1 << shift) - 1):
                continue
            idx = (event >> shift) & LEVEL_MASK
            bit = 1 << idx
            if not maps[level] & bit:
                continue
            slot = slots[(level << LEVEL_BITS) | idx]
            maps[level] &= ~bit
            node = slot._next
            slot._next = slot._prev = slot
            while node is not slot:
                nxt = node._next
                if node._slot is None:      # type: ignore[union-attr]
                    # detached (detach): dropped here, idle
                    node._prev = node._next = node._parked = None  # type: ignore[union-attr]
                else:
                    # Cascade (level > 0), re-file a lazily postponed timer, or move to the due list.
                    self._file(node, node._tick)  # type: ignore[union-attr,arg-type]
                node = nxt

    def _take_due(self, batch: list[Timer]) -> None:
        """Move the due list into ``batch`` (marking the timers as waiting to fire)."""
        due = self._due
        clk = self._clk
        node = due._next
        due._next = due._prev = due
        while node is not due:
            nxt = node._next
            node._prev = node._next = None  # type: ignore[union-attr]
            if node._tick > clk:  # type: ignore[union-attr]
                self._file(node, node._tick)  # type: ignore[union-attr,arg-type]  # lazily postponed
            else:
                node._slot = _FIRING  # type: ignore[union-attr]
                batch.append(node)  # type: ignore[arg-type]
            node = nxt

    def _fire_due(self, now: float) -> int:
        """Run the callbacks of the due list, earliest ``expires`` first.

        A callback that arms a timer which is already due (deadline <= this tick) gets it merged
        into the running batch, so the firing order stays the deadline order.
        """
        due = self._due
        batch: list[Timer] = []
        self._take_due(batch)
        batch.sort(key=_expires, reverse=True)   # pop() from the end = earliest first
        fired = 0
        try:
            while batch:
                timer = batch.pop()
                if timer._slot is not _FIRING:
                    continue        # cancelled or re-armed by an earlier callback of this batch
                timer._slot = None
                self._count -= 1
                fired += 1
                timer.callback(now)
                if due._next is not due:
                    self._take_due(batch)
                    batch.sort(key=_expires, reverse=True)
        except BaseException:
            for timer in batch:
                if timer._slot is _FIRING:
                    self._file(timer, timer._tick)  # back to the due list: fires next advance
            raise
        return fired


def _expires(timer: Timer) -> float:
    return timer.expires
