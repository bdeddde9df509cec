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
EXCLUDED: dict[str, str] = {}


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


def _select(kregex: str | None, exclude: bool) -> tuple[unittest.TestSuite, list[tuple[str, str]], list[str]]:
    import importlib
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    excluded: list[tuple[str, str]] = []
    missing: list[str] = []
    for modname, (cls_re, meth_re) in SELECTION.items():
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--uvloop", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-exclude", action="store_true")
    ap.add_argument("-k", dest="kregex")
    ap.add_argument("-v", action="store_true")
    args = ap.parse_args()

    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
    _unshare_netns()
    _install_loop(args.uvloop)
    suite, excluded, missing = _select(args.kregex, not args.no_exclude)
    t0 = time.monotonic()
    stream = sys.stderr
    result = unittest.TextTestRunner(stream=stream, verbosity=2 if args.v else 1).run(suite)
    summary = {
        "python": sys.version.split()[0],
        "loop": "uvloop" if args.uvloop else "asyncio",
        "selected": suite.countTestCases(),
        "run": result.testsRun,
        "failures": [_tid(t) for t, _ in result.failures],
        "errors": [_tid(t) for t, _ in result.errors],
        "unexpected_successes": [_tid(t) for t in result.unexpectedSuccesses],
        "skipped": len(result.skipped),
        "skipped_reasons": sorted({r for _, r in result.skipped}),
        "excluded": [{"test": t, "reason": r} for t, r in excluded],
        "missing_modules": missing,
        "loops_made": LOOPS["made"],
        "loops_with_stack": LOOPS["with_stack"],
        "counters": {k: TOTALS.get(k, 0) for k in ("ActiveOpens", "PassiveOpens", "AttemptFails",
                                                     "EstabResets", "InSegs", "OutSegs", "OutRsts")},
        "seconds": round(time.monotonic() - t0, 1),
    }
    summary["passed"] = (summary["run"] - len(summary["failures"]) - len(summary["errors"])
                         - summary["skipped"] - len(summary["unexpected_successes"]))
    if args.json:
        print("CPYTHON_ASYNCIO_SUMMARY " + json.dumps(summary), flush=True)
    else:
        print(json.dumps(summary, indent=1), flush=True)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
