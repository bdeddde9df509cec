"""The timer wheel: ordering, (lazy) re-arm, cancel, re-arming callbacks, far deadlines, a model
check against a naive priority-queue timer, and a proof that re-arming allocates nothing."""
from __future__ import annotations

import math
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiotcpstack.tcp.timer_wheel import Timer, TimerWheel


def recorder(log: list, name: object):
    return lambda now: log.append((name, now))


def test_fires_in_deadline_order_and_never_early() -> None:
    w = TimerWheel()
    log: list = []
    deadlines = {"a": 0.0055, "b": 0.002, "c": 0.3, "d": 0.0021, "e": 5.0}
    timers = {k: Timer(recorder(log, k)) for k in deadlines}
    for k, t in timers.items():
        w.arm(t, deadlines[k])
    assert len(w) == 5
    assert w.advance(0.0019) == 0
    assert w.advance(0.002) == 1 and log[-1][0] == "b"
    assert w.advance(0.0029) == 0                            # d is at 2.1 ms: tick 3
    assert w.advance(0.003) == 1 and log[-1][0] == "d"
    assert w.advance(0.0059) == 0                            # a at 5.5 ms -> tick 6: never early
    assert w.advance(0.006) == 1 and log[-1][0] == "a"
    assert w.advance(10.0) == 2
    assert [k for k, _ in log] == ["b", "d", "a", "c", "e"]
    assert all(now >= deadlines[k] - 1e-12 for k, now in log)
    assert len(w) == 0 and w.next_expiry() is None


def test_one_advance_fires_everything_due_in_order() -> None:
    w = TimerWheel()
    log: list = []
    ds = [7.3, 0.01, 3600.0, 0.5, 61.0, 0.011, 2.0, 0.2]
    for i, d in enumerate(ds):
        w.arm(Timer(recorder(log, i)), d)
    assert w.advance(4000.0) == len(ds)
    assert [ds[i] for i, _ in log] == sorted(ds)


def test_rearm_earlier_and_later() -> None:
    w = TimerWheel()
    log: list = []
    t = Timer(recorder(log, "t"))
    w.arm(t, 1.0)
    w.arm(t, 0.1)                      # earlier: re-filed
    assert w.next_expiry() == pytest.approx(0.1)
    w.advance(0.1)
    assert log == [("t", 0.1)]
    assert not w.pending(t) and not t.pending

    w.arm(t, 0.2)
    w.arm(t, 0.7)                      # later: lazy (stays in the 0.2 slot)
    assert t.expires == 0.7 and len(w) == 1
    assert w.next_expiry() == pytest.approx(0.7)
    assert w.advance(0.2) == 0 and w.pending(t)   # the old slot came up and re-filed it
    assert w.next_expiry() == pytest.approx(0.7)
    assert w.advance(0.699) == 0
    assert w.advance(0.7) == 1


def test_postponed_then_pulled_back_keeps_next_expiry_and_hook_right() -> None:
    w = TimerWheel()
    calls: list[float] = []
    log: list = []
    t, u = Timer(recorder(log, "t")), Timer(recorder(log, "u"))
    w.arm(t, 0.1)
    w.arm(t, 0.5)                      # lazy: still filed at 0.1
    w.arm(u, 0.3)
    assert w.next_expiry() == pytest.approx(0.3)
    w.on_new_earliest = calls.append
    w.arm(t, 0.2)                      # later than where it is filed, earlier than everything else
    assert calls == [pytest.approx(0.2)]
    assert w.next_expiry() == pytest.approx(0.2)
    w.advance(0.2)
    assert log == [("t", 0.2)]


def test_rearm_per_ack_pattern_fires_once_at_last_deadline() -> None:
    w = TimerWheel()
    fired: list = []
    rto = Timer(recorder(fired, "rto"))
    now = 0.0
    for _ in range(5000):              # an ACK every 0.5 ms re-arms the RTO to now + 200 ms
        now += 0.0005
        w.arm(rto, now + 0.2)
        w.advance(now)
    assert fired == []
    w.advance(now + 0.1999)
    assert fired == []
    w.advance(now + 0.2)
    assert fired == [("rto", now + 0.2)]


def test_cancel() -> None:
    w = TimerWheel()
    log: list = []
    a, b = Timer(recorder(log, "a")), Timer(recorder(log, "b"))
    w.arm(a, 0.05)
    w.arm(b, 100.0)
    assert w.cancel(a) is True and w.cancel(a) is False
    assert not w.pending(a) and w.pending(b)
    assert w.cancel(b) is True
    assert len(w) == 0 and w.next_expiry() is None
    assert w.advance(1000.0) == 0 and log == []
    w.arm(a, 1001.0)                   # a cancelled timer can be armed again
    assert w.advance(1001.0) == 1


def test_callbacks_rearm_and_cancel() -> None:
    w = TimerWheel()
    log: list = []

    def periodic(now: float) -> None:
        log.append(("p", round(tick.expires, 6)))
        if len(log) < 10:
            w.arm(tick, tick.expires + 0.1)   # due again within this advance: fires again

    tick = Timer(periodic)
    w.arm(tick, 0.1)
    assert w.advance(1.05) == 10
    assert [e for _, e in log] == [round(0.1 * i, 6) for i in range(1, 11)]

    # A callback re-arming into the future does not fire twice in the same advance.
    log.clear()
    self_rearm = Timer(lambda now: (log.append(now), w.arm(self_rearm, now + 1.0)))
    w.arm(self_rearm, 2.0)
    assert w.advance(2.5) == 1
    assert w.pending(self_rearm) and self_rearm.expires == 3.5

    # A callback cancelling a timer due in the same batch stops it; re-arming moves it.
    log.clear()
    victim = Timer(recorder(log, "victim"))
    moved = Timer(recorder(log, "moved"))
    killer = Timer(lambda now: (w.cancel(victim), w.arm(moved, now + 5.0), log.append(("killer", now))))
    w.cancel(self_rearm)
    w.arm(killer, 10.0)
    w.arm(victim, 10.0005)
    w.arm(moved, 10.0007)
    assert w.advance(10.001) == 1
    assert log == [("killer", 10.001)]
    assert w.advance(15.001) == 1 and log[-1][0] == "moved"


def test_callback_arming_a_due_timer_keeps_deadline_order() -> None:
    w = TimerWheel()
    log: list = []
    early = Timer(recorder(log, "early"))
    late = Timer(recorder(log, "late"))
    first = Timer(lambda now: (log.append(("first", now)), w.arm(early, 0.5)))
    w.arm(first, 0.3)
    w.arm(late, 0.8)
    w.advance(1.0)
    assert [n for n, _ in log] == ["first", "early", "late"]


def test_far_deadlines_step_by_step_and_jump() -> None:
    far = [60.0, 75.0, 7200.0, 86400.0 * 3, 86400.0 * 20]   # the last is past the 12-day horizon
    for stepwise in (False, True):
        w = TimerWheel()
        log: list = []
        for d in far:
            w.arm(Timer(recorder(log, d)), d)
        w.arm(Timer(recorder(log, "near")), 0.2)
        if stepwise:
            now = 0.0
            while len(log) < len(far) + 1:
                nxt = w.next_expiry()
                assert nxt is not None and nxt >= now
                now = nxt
                w.advance(now)
            for name, when in log:
                # fired at the first event at or after the deadline: within one granularity
                d = 0.2 if name == "near" else name
                assert d - 1e-9 <= when <= d + 0.001
        else:
            w.advance(86400.0 * 30)
            assert [n for n, _ in log] == ["near", *far]


def test_idle_jump_is_cheap() -> None:
    w = TimerWheel()
    log: list = []
    w.arm(Timer(recorder(log, "keepalive")), 7200.0)
    t0 = time.perf_counter()
    w.advance(7199.999)
    w.advance(3 * 86400.0)
    assert time.perf_counter() - t0 < 0.5    # bitmaps skip idle slots (a per-tick loop would take seconds)
    assert len(log) == 1


def test_past_deadline_fires_on_next_advance() -> None:
    w = TimerWheel(now=100.0)
    log: list = []
    t = Timer(recorder(log, "t"))
    w.arm(t, 50.0)
    assert w.next_expiry() == pytest.approx(100.0)
    assert w.advance(100.0) == 1


def test_on_new_earliest_hook() -> None:
    w = TimerWheel()
    calls: list[float] = []
    w.on_new_earliest = calls.append
    a, b, c = Timer(lambda now: None), Timer(lambda now: None), Timer(lambda now: w.arm(d, now + 0.001))
    d = Timer(lambda now: None)
    w.arm(a, 0.05)
    assert calls == [pytest.approx(0.05)]
    w.arm(b, 0.06)                     # not earlier: no call
    assert len(calls) == 1
    w.arm(b, 0.01)                     # earlier: call
    assert calls[-1] == pytest.approx(0.01)
    w.arm(a, 0.5)                      # later (lazy): no call
    assert len(calls) == 2
    w.arm(c, 0.02)
    w.advance(0.03)                    # c's callback arms d inside advance: no hook call
    assert len(calls) == 2
    assert w.next_expiry() == pytest.approx(0.031)
    w.cancel(a)
    w.cancel(d)
    assert w.next_expiry() is None
    w.arm(a, 1.0)                      # first timer in an empty wheel: call
    assert calls[-1] == pytest.approx(1.0)


def test_exception_in_callback_keeps_wheel_consistent() -> None:
    w = TimerWheel()
    log: list = []

    def boom(now: float) -> None:
        raise RuntimeError("boom")

    w.arm(Timer(boom), 0.001)
    other = Timer(recorder(log, "other"))
    w.arm(other, 0.001)
    with pytest.raises(RuntimeError):
        w.advance(0.01)
    w.advance(0.01)                    # whatever was left of the batch fires now
    assert [n for n, _ in log] == ["other"] and len(w) == 0


def test_granularity_configurable() -> None:
    w = TimerWheel(granularity=0.01)
    log: list = []
    w.arm(Timer(recorder(log, "t")), 0.123)
    assert w.advance(0.129) == 0
    assert w.advance(0.13) == 1
    with pytest.raises(ValueError):
        TimerWheel(granularity=0)


def test_rearm_allocates_nothing() -> None:
    w = TimerWheel()
    timers = [Timer(lambda now: None) for _ in range(64)]
    deadlines = [0.001 * i for i in range(1, 2000)] + [60.0, 7200.0, 3.5]
    n = len(deadlines)
    for t in timers:
        w.arm(t, 1.0)
    w.advance(0.0)

    def rearm_many(count: int) -> None:
        for i in range(count):
            t = timers[i & 63]
            w.arm(t, deadlines[i % n])            # later (lazy), earlier, far: every path of arm
            if i % 7 == 0:
                w.cancel(t)

    tracemalloc.start()
    try:
        rearm_many(1000)                          # steady state: each timer holds its float/int deadline
        before = tracemalloc.take_snapshot()
        rearm_many(100_000)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = sum(s.size_diff for s in after.compare_to(before, "filename"))
    # A single retained object per arm would be >= 3.2 MB here.
    assert growth < 1024, growth


# ---------------------------------------------------------------- model check against a naive timer

G = 0.001
N_TIMERS = 6


def tick_of(when: float) -> int:
    return math.ceil(when / G - 1e-6)


class NaiveTimers:
    """Reference: a dict of deadlines; advance repeatedly fires the earliest due one."""

    def __init__(self) -> None:
        self.deadline: dict[int, float] = {}

    def advance(self, now: float, on_fire) -> None:
        target = math.floor(now / G + 1e-6)
        while True:
            due = [(when, i) for i, when in self.deadline.items() if tick_of(when) <= target]
            if not due:
                return
            when, i = min(due)
            del self.deadline[i]
            on_fire(i, now)


delays = st.one_of(
    st.floats(0.0, 0.07),            # level 0
    st.floats(0.0, 5.0),             # level 1-2
    st.floats(0.0, 400.0),           # level 2-3
    st.sampled_from([60.0, 7200.0]),
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("arm"), st.integers(0, N_TIMERS - 1), delays),
        st.tuples(st.just("cancel"), st.integers(0, N_TIMERS - 1), st.just(0.0)),
        st.tuples(st.just("detach"), st.integers(0, N_TIMERS - 1), st.just(0.0)),
        st.tuples(st.just("advance"), st.just(0), st.one_of(st.floats(0.0, 0.1), st.floats(0.0, 1000.0))),
    ),
    max_size=60,
)
# Timer i's callback: (action, other timer, delay): re-arm other at now + delay / cancel other / nothing.
# (Reaction delays exceed one tick so that callbacks cannot re-arm each other forever within one
# advance; callbacks arming already-due timers are covered by the unit tests above.)
react_delays = st.one_of(st.floats(0.002, 0.07), st.floats(0.002, 400.0), st.just(7200.0))
reactions = st.lists(
    st.tuples(st.sampled_from(["arm", "cancel", "detach", "none"]), st.integers(0, N_TIMERS - 1), react_delays),
    min_size=N_TIMERS, max_size=N_TIMERS,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops, reactions, st.floats(0.0, 1e5))
def test_matches_naive_model(ops_list, reacts, start: float) -> None:
    w = TimerWheel(now=start, granularity=G)
    model = NaiveTimers()
    wheel_log: list = []
    model_log: list = []

    # Distinct per-timer offsets make simultaneous deadlines impossible (the order of exact
    # ties is unspecified in both implementations).
    def when_for(i: int, base: float) -> float:
        return base + (i + 1) * 1e-7

    def wheel_fire(i: int):
        def cb(now: float) -> None:
            wheel_log.append((i, now))
            act, j, d = reacts[i]
            if act == "arm":
                w.arm(timers[j], when_for(j, now + d))
            elif act == "cancel":
                w.cancel(timers[j])
            elif act == "detach":
                w.detach(timers[j])
        return cb

    def model_fire(i: int, now: float) -> None:
        model_log.append((i, now))
        act, j, d = reacts[i]
        if act == "arm":
            model.deadline[j] = when_for(j, now + d)
        elif act in ("cancel", "detach"):        # (detach: stopped as by cancel, still linked)
            model.deadline.pop(j, None)

    timers = [Timer(wheel_fire(i)) for i in range(N_TIMERS)]
    now = start
    for op, i, x in ops_list:
        if op == "arm":
            when = when_for(i, now + x)
            w.arm(timers[i], when)
            model.deadline[i] = when
        elif op == "cancel":
            assert w.cancel(timers[i]) == (i in model.deadline)
            model.deadline.pop(i, None)
        elif op == "detach":
            assert w.detach(timers[i]) == (i in model.deadline)
            model.deadline.pop(i, None)
        else:
            now += x
            before = len(wheel_log)
            n = w.advance(now)
            model.advance(now, model_fire)
            assert wheel_log == model_log
            assert n == len(wheel_log) - before
        assert {i for i in range(N_TIMERS) if w.pending(timers[i])} == set(model.deadline)
        assert len(w) == len(model.deadline)
        nxt = w.next_expiry()
        if model.deadline:
            # Few timers (< the scan budget): exact, the earliest deadline rounded up to a tick.
            assert nxt is not None
            assert round(nxt / G) == max(tick_of(min(model.deadline.values())), round(w.now / G))
        else:
            assert nxt is None
    now += 10 * 86400.0
    w.advance(now)
    model.advance(now, model_fire)
    assert wheel_log == model_log


def test_lower_bound_after_cancel_needs_no_walk() -> None:
    """A cancelled earliest leaves a lower bound: arms at or above it make no hook call and no
    recompute; an arm below it is the exact earliest (hook called, cache exact again)."""
    w = TimerWheel()
    calls: list[float] = []
    w.on_new_earliest = calls.append
    a, b, c, d = (Timer(lambda now: None) for _ in range(4))
    w.arm(a, 0.010)
    w.arm(b, 0.300)
    w.cancel(a)                                   # bound stays at 10 ms (true earliest: 300 ms)
    assert w.next_expiry_bound() == pytest.approx(0.010)
    w.arm(c, 0.200)                               # above the bound: the driver waits until 10 ms anyway
    assert calls == [pytest.approx(0.010)]
    w.arm(d, 0.005)                               # below it: the new earliest, exactly
    assert calls[-1] == pytest.approx(0.005)
    assert w.next_expiry_bound() == pytest.approx(0.005) == w.next_expiry()
    w.cancel(d)
    assert w.next_expiry() == pytest.approx(0.200)   # exact on request


def test_lazily_postponed_timer_pulled_below_a_stale_bound_calls_the_hook() -> None:
    """t filed at 100 ms and postponed to 500 ms (lazy: still filed at 100), u at 300 ms; the
    exact earliest is 300.  Cancelling u leaves 300 as the bound; re-arming t to 200 ms (lazy
    again: above where it is filed) must still tell the driver, or t would fire at 300."""
    w = TimerWheel()
    t, u = Timer(lambda now: None), Timer(lambda now: None)
    w.arm(t, 0.100)
    w.arm(t, 0.500)
    w.arm(u, 0.300)
    w.advance(0.050)
    assert w.next_expiry_bound() == pytest.approx(0.300)
    calls: list[float] = []
    w.on_new_earliest = calls.append
    w.cancel(u)
    w.arm(t, 0.200)
    assert calls == [pytest.approx(0.200)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["arm", "arm", "cancel", "detach", "run"]), st.integers(0, 11),
                          st.floats(0.0, 0.5)), max_size=120))
def test_driver_on_the_bound_never_fires_late(ops_list: list) -> None:
    """Driven like aio.Stack (one call_at, only moved earlier, set from on_new_earliest and from
    next_expiry_bound after API calls and each advance), no timer fires more than one tick late."""
    G = 0.001
    w = TimerWheel(granularity=G)
    fired: list[tuple[int, float, float]] = []
    deadline: dict[int, float] = {}
    handle: list[float | None] = [None]
    state = {"now": 0.0}

    def arm_driver(when: float) -> None:
        if handle[0] is None or when < handle[0]:
            handle[0] = when

    def kick() -> None:
        nxt = w.next_expiry_bound()
        if nxt is not None:
            arm_driver(nxt)

    def fire(i: int):
        def cb(now: float) -> None:
            fired.append((i, deadline.pop(i), now))
        return cb

    w.on_new_earliest = arm_driver
    timers = [Timer(fire(i)) for i in range(12)]
    for op, i, x in ops_list:
        now = state["now"]
        if op == "arm":
            deadline[i] = now + x
            w.arm(timers[i], now + x)
            kick()
        elif op in ("cancel", "detach"):
            getattr(w, op)(timers[i])
            deadline.pop(i, None)
            kick()
        elif handle[0] is not None:
            when = handle[0]
            # the driver's wake-up is never after a pending deadline's tick
            for d in deadline.values():
                assert when <= math.ceil(d / G - 1e-6) * G + 1e-9
            handle[0] = None
            state["now"] = max(now, when)
            w.advance(state["now"])
            kick()
    for i, d, at in fired:
        assert d - 1e-9 <= at <= d + G + 1e-9


def test_replace_takes_the_deadline_and_place() -> None:
    w = TimerWheel()
    log: list = []
    a, b, c = Timer(recorder(log, "a")), Timer(recorder(log, "b")), Timer(recorder(log, "c"))
    w.arm(a, 0.5)
    w.arm(c, 0.5)
    w.arm(a, 0.7)                      # lazy: a stays filed at 0.5
    w.replace(a, b)
    assert not w.pending(a) and w.pending(b) and b.expires == 0.7 and len(w) == 2
    assert w.next_expiry() == pytest.approx(0.5)
    assert w.advance(0.69) == 1 and log == [("c", 0.69)]
    assert w.advance(0.7) == 1 and log[-1] == ("b", 0.7)
    w.replace(a, c)                    # old not pending: nothing to take
    assert not w.pending(c) and len(w) == 0


def test_detach_stops_the_timer_and_leaves_it_linked_for_an_arm_in_place() -> None:
    """detach (Linux inet_csk_clear_xmit_timer): not pending, not counted, never fires; an arm
    to a deadline not before its slot's time takes it back without unlinking or re-filing; an
    earlier one re-files it; the slot drops it when it comes up; cancel unlinks it at once."""
    w = TimerWheel()
    log: list = []
    t, u = Timer(recorder(log, "t")), Timer(recorder(log, "u"))
    w.arm(u, 5.0)
    w.arm(t, 0.2)
    slot = t._slot
    assert w.detach(t) and not t.pending and len(w) == 1
    assert t._prev is not None and t._parked is slot          # still linked
    assert w.next_expiry() == pytest.approx(5.0)              # a detached timer has no deadline
    assert not w.detach(t)                                    # (not pending any more)
    filed = []
    real_file = w._file
    w._file = lambda timer, tick: filed.append(timer) or real_file(timer, tick)   # type: ignore[method-assign]
    w.arm(t, 0.3)                                             # not before its slot: in place
    assert filed == [] and t._slot is slot and t._parked is None and t.pending and len(w) == 2
    assert w.next_expiry() == pytest.approx(0.3)
    w.detach(t)
    assert w.advance(0.25) == 0                               # its slot came up: dropped, idle
    assert t._prev is None and t._parked is None and not t.pending and len(w) == 1
    assert filed == []                                        # (dropped, not re-filed)
    w.arm(t, 0.5)
    w.detach(t)
    filed.clear()
    w.arm(t, 0.3)                                             # earlier than its slot: re-filed
    assert filed == [t] and t.pending and t._parked is None
    assert w.advance(0.3) == 1 and log == [("t", 0.3)]
    w.arm(t, 1.0)
    w.detach(t)
    assert not w.cancel(t) and t._prev is None and t._parked is None        # unlinked at once
    assert w.advance(2.0) == 0 and w.advance(5.0) == 1 and log[-1][0] == "u" and len(w) == 0
    assert w._maps == [0] * len(w._maps)                      # no slot left marked


def test_detach_in_the_due_list_or_an_expiry_batch_is_a_cancel() -> None:
    w = TimerWheel()
    log: list = []
    a, b = Timer(recorder(log, "a")), Timer(recorder(log, "b"))
    w.arm(a, 0.010)
    w.arm(b, 0.011)                                           # (after a in the same expiry batch)
    a.callback = lambda now: (log.append(("a", now)), w.detach(b))
    assert w.advance(0.02) == 1 and log == [("a", 0.02)]      # b detached while waiting: stopped
    assert not b.pending and b._parked is None and b._prev is None and len(w) == 0
    w.arm(a, 0.0)                                             # already due: the due list
    assert w.detach(a) and a._parked is None and a._prev is None and len(w) == 0
    assert w.advance(1.0) == 0


def test_replace_by_a_detached_timer() -> None:
    w = TimerWheel()
    log: list = []
    a, b = Timer(recorder(log, "a")), Timer(recorder(log, "b"))
    w.arm(b, 0.9)
    w.detach(b)
    w.arm(a, 0.5)
    w.replace(a, b)
    assert not a.pending and b.pending and b.expires == 0.5 and b._parked is None and len(w) == 1
    assert w.advance(1.0) == 1 and log == [("b", 1.0)]
