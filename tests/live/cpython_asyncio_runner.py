"""Run CPython's own asyncio network tests (``test.test_asyncio``, shipped with the interpreter --
imported, never copied) against the drop-in loop, in a private network namespace on ``lo``.

    python tests/live/cpython_asyncio_runner.py [--uvloop] [--json] [-k REGEX] [--no-exclude]

What it does:

1. ``unshare(CLONE_NEWNET)``: this process gets a fresh network namespace (only ``lo``); brings lo
   up and sets ``net.ipv4.conf.{all,lo}.route_localnet=1`` and ``accept_local=1`` (IPv4 127/8
   frames injected by a packet socket are martians otherwise; ``link.lo_ipv4_injectable``).
2. Every loop the tests make (``asyncio.new_event_loop()``, the default policy,
   ``asyncio.SelectorEventLoop(selector)``, ``asyncio.EventLoop``) is the drop-in loop with its own
   shared-mode :class:`Stack` on ``lo``: the stack owns the ports it binds, kernel sockets (the
   tests' threaded servers and clients) are the other end.
3. Runs the selected TestCases with unittest; tests listed in ``EXCLUDED`` (with the reason, also in
   docs/asyncio-compat.md) are skipped; prints a summary (``--json``: one JSON line at the end)
   including the stack counters summed over every loop -- the proof the traffic went through the
   user-space stack (``ActiveOpens`` / ``PassiveOpens``).
"""
from __future__ import annotations

import argparse
import ctypes
import fnmatch
import json
import os
import re
import sys
import time
import unittest
from typing import Any

CLONE_NEWNET = 0x40000000

#: module -> (TestCase class-name regex, test-method regex) selecting the network tests
SELECTION: dict[str, tuple[str, str]] = {
    "test_streams": (r".*", r".*"),
    "test_server": (r".*", r".*"),
    "test_buffered_proto": (r".*", r".*"),
    "test_sslproto": (r".*", r".*"),
    "test_ssl": (r"^TestSSL$", r".*"),
    "test_events": (r"^(Select|Poll|EPoll)EventLoopTests$",
                    r"create_(connection|server|ssl_connection|ssl_unix|unix)|start_tls|server_close|"
                    r"connect_accepted_socket|open_connection|start_server"),
    "test_sendfile": (r".*", r".*"),
}

#: test id glob -> reason.  Only tests that cannot apply by design (see docs/asyncio-compat.md).
_BLOCKING_CONNECT = ("a blocking kernel connect() in the loop's own thread while the loop is not running: "
                     "a kernel listener completes the handshake by itself, the user-space stack answers "
                     "only while its loop runs (the connect() waits for the SYN-ACK forever)")
EXCLUDED: dict[str, str] = {
    "test_events.*EventLoopTests.test_create_server": _BLOCKING_CONNECT,
    "test_events.*EventLoopTests.test_create_server_dual_stack": _BLOCKING_CONNECT,
    "test_events.*EventLoopTests.test_server_close": _BLOCKING_CONNECT,
    # (3.13) socket.create_connection() to the server from inside a coroutine of the same loop
    "test_streams.StreamTests.test_unclosed_server_resource_warnings": _BLOCKING_CONNECT,
    "test_events.*EventLoopTests.test_create_server_trsock":
        "asserts Server.sockets are asyncio.trsock.TransportSocket wrapping a kernel socket and dup()s "
        "it (our pseudo-sockets have no descriptor)",
    "test_events.*EventLoopTests.test_create_server_multiple_hosts_ipv*":
        "mocks asyncio.base_events.socket (the kernel socket module) and binds to addresses the host "
        "does not have (1.2.3.4, ::2): it checks the stock loop's socket calls, no endpoint is created",
}


def _unshare_netns() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)} (needs root / CAP_SYS_ADMIN)")
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
    for key in ("route_localnet", "accept_local"):
        for dev in ("all", "lo"):
            with open(f"/proc/sys/net/ipv4/conf/{dev}/{key}", "w") as f:
                f.write("1")


TOTALS: dict[str, int] = {}
LOOPS = {"made": 0, "with_stack": 0}


def _install_loop(use_uvloop: bool) -> type:
    import asyncio
    import asyncio.unix_events as ue

    from aiotcpstack import Stack
    from aiotcpstack.aio import loop as aloop

    base = aloop.stack_loop_class(use_uvloop)

    def account(stack: Stack) -> None:
        if stack._started:
            LOOPS["with_stack"] += 1
            for k, v in stack.counters.items():
                if v:
                    TOTALS[k] = TOTALS.get(k, 0) + v

    if use_uvloop:
        class LoLoop(base):  # type: ignore[valid-type,misc]
            def __init__(self, selector=None) -> None:
                super().__init__(Stack("lo"))
                LOOPS["made"] += 1

            def close(self) -> None:
                closed = self.is_closed()
                super().close()
                if not closed:
                    account(self._ats_stack)
    else:
        class LoLoop(base):  # type: ignore[valid-type,misc,no-redef]
            def __init__(self, selector=None) -> None:
                super().__init__(Stack("lo"), selector)
                LOOPS["made"] += 1

            def close(self) -> None:
                closed = self.is_closed()
                super().close()
                if not closed:
                    account(self._ats_stack)

    LoLoop.__name__ = LoLoop.__qualname__ = "SelectorEventLoop" if not use_uvloop else "Loop"
    asyncio.SelectorEventLoop = LoLoop            # what test_events / test_sendfile instantiate
    ue.SelectorEventLoop = LoLoop
    if hasattr(asyncio, "EventLoop"):
        asyncio.EventLoop = LoLoop                # 3.13
    ue._UnixDefaultEventLoopPolicy._loop_factory = LoLoop   # survives set_event_loop_policy(None)
    asyncio.set_event_loop_policy(None)
    return LoLoop


def _iter_tests(suite: unittest.TestSuite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _iter_tests(t)
        else:
            yield t


def _select(kregex: str | None, exclude: bool, modules: list[str] | None = None
            ) -> tuple[unittest.TestSuite, list[tuple[str, str]], list[str]]:
    import importlib
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    excluded: list[tuple[str, str]] = []
    missing: list[str] = []
    for modname in (modules if modules is not None else list(SELECTION)):
        if modname not in SELECTION:
            missing.append(f"{modname}: not in SELECTION")
            continue
        cls_re, meth_re = SELECTION[modname]
        try:
            mod = importlib.import_module(f"test.test_asyncio.{modname}")
        except ImportError as exc:
            missing.append(f"{modname}: {exc}")
            continue
        for test in _iter_tests(loader.loadTestsFromModule(mod)):
            cls = type(test).__name__
            meth = getattr(test, "_testMethodName", "")
            if not re.search(cls_re, cls) or not re.search(meth_re, meth):
                continue
            tid = f"{modname}.{cls}.{meth}"
            if kregex and not re.search(kregex, tid):
                continue
            reason = _excluded(tid) if exclude else None
            if reason is not None:
                excluded.append((tid, reason))
                continue
            suite.addTest(test)
    return suite, excluded, missing


def _excluded(tid: str) -> str | None:
    for pat, reason in EXCLUDED.items():
        if fnmatch.fnmatchcase(tid, pat):
            return reason
    return None


def _tid(test: unittest.TestCase) -> str:
    parts = test.id().split(".")
    return ".".join(parts[-3:])


PER_TEST_TIMEOUT = 45.0        # a test running longer is recorded as hung and its child process ends
CHILD_TIMEOUT = 240.0          # hard limit per module child (the parent kills its process group)
RESULT_TAG = "CPYTHON_ASYNCIO_TEST "
CHILD_TAG = "CPYTHON_ASYNCIO_CHILD "


def _emit(tag: str, obj: Any) -> None:
    # one line, one write(): the parent parses stdout line by line (also after an os._exit)
    os.write(1, (tag + json.dumps(obj) + "\n").encode())


def _child_summary() -> dict:
    return {"loops_made": LOOPS["made"], "loops_with_stack": LOOPS["with_stack"], "counters": dict(TOTALS)}


class _Watchdog:
    """A hung test (e.g. a test's server thread spinning forever, which unittest's teardown then
    joins) cannot be interrupted from inside the process: after ``PER_TEST_TIMEOUT`` the watchdog
    thread records it as ``hung``, dumps every thread's stack (faulthandler) and ends the process
    with ``os._exit``; the parent records the rest of the module as not run."""

    def __init__(self, timeout: float) -> None:
        import threading
        self.timeout = timeout
        self.current: str | None = None
        self.started = 0.0
        self._lock = threading.Lock()
        threading.Thread(target=self._run, name="cpython-asyncio-watchdog", daemon=True).start()

    def start(self, tid: str) -> None:
        with self._lock:
            self.current, self.started = tid, time.monotonic()

    def stop(self) -> None:
        with self._lock:
            self.current = None

    def _run(self) -> None:
        import faulthandler
        while True:
            time.sleep(0.5)
            with self._lock:
                tid, started = self.current, self.started
            if tid is not None and time.monotonic() - started > self.timeout:
                sys.stderr.write(f"\n*** {tid} HUNG (> {self.timeout:.0f} s); stacks:\n")
                sys.stderr.flush()
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                _emit(RESULT_TAG, {"test": tid, "outcome": "hung", "seconds": round(time.monotonic() - started, 1)})
                _emit(CHILD_TAG, _child_summary())
                os._exit(3)


class _ReportingResult(unittest.TextTestResult):
    """Reports each test's outcome on stdout as it finishes (the parent keeps them even if the
    child is killed later) and arms the watchdog around each test."""

    watchdog: _Watchdog | None = None

    def startTest(self, test):
        self._t0 = time.monotonic()
        self._outcome_ = "ok"
        if self.watchdog is not None:
            self.watchdog.start(_tid(test))
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        if self.watchdog is not None:
            self.watchdog.stop()
        _emit(RESULT_TAG, {"test": _tid(test), "outcome": getattr(self, "_outcome_", "error"),
                           "seconds": round(time.monotonic() - getattr(self, "_t0", time.monotonic()), 2)})

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._outcome_ = "failure"

    def addError(self, test, err):
        super().addError(test, err)
        self._outcome_ = "error"
        if not isinstance(test, unittest.TestCase):     # setUpClass/module errors (_ErrorHolder)
            _emit(RESULT_TAG, {"test": str(test), "outcome": "error", "seconds": 0})

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._outcome_ = "skip: " + str(reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._outcome_ = "expected_failure"

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._outcome_ = "unexpected_success"

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._outcome_ = "failure" if issubclass(err[0], test.failureException) else "error"


def _child(args: argparse.Namespace) -> int:
    """One module (``--child MODULE``) in its own process and network namespace."""
    _unshare_netns()
    _install_loop(args.uvloop)
    suite, _, missing = _select(args.kregex, not args.no_exclude, [args.child])
    if missing:
        _emit(CHILD_TAG, dict(_child_summary(), missing=missing))
        return 2
    _ReportingResult.watchdog = _Watchdog(args.test_timeout)
    unittest.TextTestRunner(stream=sys.stderr, verbosity=2 if args.v else 1,
                            resultclass=_ReportingResult).run(suite)
    _ReportingResult.watchdog.stop()
    _emit(CHILD_TAG, _child_summary())
    return 0


def _run_children(args: argparse.Namespace, modules: list[str]) -> dict[str, dict]:
    """Every module in its own child (``--jobs`` at a time), each with a hard timeout: on expiry the
    child's whole process group is killed (a test may have started threads / subprocesses)."""
    import signal
    import subprocess
    import tempfile
    out: dict[str, dict] = {}
    pending = list(modules)
    running: dict[str, tuple] = {}
    while pending or running:
        while pending and len(running) < args.jobs:
            mod = pending.pop(0)
            cmd = [sys.executable, os.path.abspath(__file__), "--child", mod,
                   "--test-timeout", str(args.test_timeout)]
            for flag, on in (("--uvloop", args.uvloop), ("--no-exclude", args.no_exclude), ("-v", args.v)):
                if on:
                    cmd.append(flag)
            if args.kregex:
                cmd += ["-k", args.kregex]
            so = tempfile.TemporaryFile()
            se = tempfile.TemporaryFile()
            p = subprocess.Popen(cmd, stdout=so, stderr=se, start_new_session=True)
            running[mod] = (p, so, se, time.monotonic())
        time.sleep(0.2)
        for mod, (p, so, se, t0) in list(running.items()):
            timed_out = False
            if p.poll() is None:
                if time.monotonic() - t0 < args.child_timeout:
                    continue
                timed_out = True
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
            del running[mod]
            so.seek(0)
            se.seek(0)
            stdout = so.read().decode(errors="replace")
            stderr = se.read().decode(errors="replace")
            so.close()
            se.close()
            tests, summary = [], None
            for ln in stdout.splitlines():
                if ln.startswith(RESULT_TAG):
                    tests.append(json.loads(ln[len(RESULT_TAG):]))
                elif ln.startswith(CHILD_TAG):
                    summary = json.loads(ln[len(CHILD_TAG):])
            out[mod] = {"tests": tests, "summary": summary or {}, "rc": p.returncode,
                        "timed_out": timed_out, "seconds": round(time.monotonic() - t0, 1),
                        "stderr": stderr}
            if args.v or args.log_dir:
                if args.log_dir:
                    os.makedirs(args.log_dir, exist_ok=True)
                    with open(os.path.join(args.log_dir, f"{mod}.log"), "w") as f:
                        f.write(stderr)
                else:
                    sys.stderr.write(stderr)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--uvloop", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-exclude", action="store_true")
    ap.add_argument("-k", dest="kregex")
    ap.add_argument("-v", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--jobs", type=int, default=4, help="module children run in parallel")
    ap.add_argument("--test-timeout", type=float, default=PER_TEST_TIMEOUT)
    ap.add_argument("--child-timeout", type=float, default=CHILD_TIMEOUT)
    ap.add_argument("--log-dir", help="write each module child's stderr (unittest output) here")
    ap.add_argument("--modules", help="comma-separated subset of the SELECTION modules")
    args = ap.parse_args()

    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
    if args.child:
        return _child(args)

    modules = list(SELECTION) if not args.modules else [m.strip() for m in args.modules.split(",")]
    # the exclusion list and the selected count, without running anything (no netns needed)
    suite, excluded, missing = _select(args.kregex, not args.no_exclude, modules)
    t0 = time.monotonic()
    results = _run_children(args, [m for m in modules if not any(x.startswith(m + ":") for x in missing)])
    selected_ids = [_tid(t) for t in _iter_tests(suite)]
    by_outcome: dict[str, list[str]] = {}
    seen = set()
    counters: dict[str, int] = {}
    loops_made = loops_with_stack = 0
    per_module = {}
    for mod, r in results.items():
        for t in r["tests"]:
            seen.add(t["test"])
            key = t["outcome"].split(":", 1)[0]
            by_outcome.setdefault(key, []).append(t["test"])
        s = r["summary"]
        loops_made += s.get("loops_made", 0)
        loops_with_stack += s.get("loops_with_stack", 0)
        for k, v in s.get("counters", {}).items():
            counters[k] = counters.get(k, 0) + v
        per_module[mod] = {"run": len(r["tests"]), "seconds": r["seconds"], "rc": r["rc"],
                           "timed_out": r["timed_out"]}
        if r["rc"] not in (0,) and not r["tests"] or r["timed_out"] or not s:
            by_outcome.setdefault("crashed_modules", []).append(
                f"{mod} (rc={r['rc']}, timed_out={r['timed_out']}): {r['stderr'][-1500:]}")
    # Like CPython's own regrtest (--rerun): a test that failed or errored (not one that hung) is
    # run once more, alone, in a fresh child; it counts as passed only if that run passes, and
    # every re-run is reported ("rerun") so flakiness stays visible.  The tests have fixed client
    # timeouts (e.g. 2 s in test_start_server_1) that a loaded 2-CPU machine can exceed.
    rerun: list[dict] = []
    again = by_outcome.get("failure", []) + by_outcome.get("error", [])
    if again and len(again) <= 10:
        import copy
        args2 = copy.copy(args)
        args2.kregex = "^(" + "|".join(re.escape(t) for t in again) + ")$"
        second = _run_children(args2, sorted({t.split(".", 1)[0] for t in again}))
        outcome2 = {t["test"]: t["outcome"].split(":", 1)[0] for r in second.values() for t in r["tests"]}
        for r in second.values():
            s2 = r["summary"]
            loops_made += s2.get("loops_made", 0)
            loops_with_stack += s2.get("loops_with_stack", 0)
            for k, v in s2.get("counters", {}).items():
                counters[k] = counters.get(k, 0) + v
        for key in ("failure", "error"):
            for tid in list(by_outcome.get(key, [])):
                got = outcome2.get(tid, "not_run")
                rerun.append({"test": tid, "first": key, "rerun": got})
                if got == "ok":
                    by_outcome[key].remove(tid)
                    by_outcome.setdefault("ok", []).append(tid)
    not_run = [t for t in selected_ids if t not in seen]
    summary = {
        "python": sys.version.split()[0],
        "loop": "uvloop" if args.uvloop else "asyncio",
        "selected": len(selected_ids),
        "run": len(seen),
        "passed": len(by_outcome.get("ok", [])),
        "failures": by_outcome.get("failure", []),
        "errors": by_outcome.get("error", []),
        "hung": by_outcome.get("hung", []),
        "not_run": not_run,
        "crashed_modules": by_outcome.get("crashed_modules", []),
        "unexpected_successes": by_outcome.get("unexpected_success", []),
        "rerun": rerun,
        "expected_failures": len(by_outcome.get("expected_failure", [])),
        "skipped": len(by_outcome.get("skip", [])),
        "skipped_reasons": sorted({t["outcome"][6:] for r in results.values() for t in r["tests"]
                                   if t["outcome"].startswith("skip")}),
        "excluded": [{"test": t, "reason": r} for t, r in excluded],
        "missing_modules": missing,
        "modules": per_module,
        "loops_made": loops_made,
        "loops_with_stack": loops_with_stack,
        "counters": {k: counters.get(k, 0) for k in ("ActiveOpens", "PassiveOpens", "AttemptFails",
                                                       "EstabResets", "InSegs", "OutSegs", "OutRsts")},
        "seconds": round(time.monotonic() - t0, 1),
    }
    ok = not (summary["failures"] or summary["errors"] or summary["hung"] or summary["not_run"]
              or summary["crashed_modules"] or summary["unexpected_successes"] or missing)
    if args.json:
        print("CPYTHON_ASYNCIO_SUMMARY " + json.dumps(summary), flush=True)
    else:
        print(json.dumps(summary, indent=1), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
