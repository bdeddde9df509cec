"""``python -m benchmarks.run``: aiotcpstack vs kernel TCP, side by side, in one run, as ratios.

It builds a :class:`~aiotcpstack.host.lab.Lab` (two namespaces joined by veth) and, for every
workload x offloads (on/off) x event loop (asyncio/uvloop) x run, starts

* a kernel *peer* process in ``ns_b`` (``python -m benchmarks.workloads peer ...``), then
* the *application* process in ``ns_a`` (``python -m benchmarks.workloads app ...``), once with
  kernel sockets (``loop.create_connection``) and once with ``aiotcpstack.Stack`` on ``if_a`` —
  the same application code both times.

Results go to ``--out`` (default ``results/bench-<timestamp>/``): ``results.md``, ``results.json``,
``ratios.png``; the Markdown table is also printed.  See ``benchmarks/README.md``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import select
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from . import report
from .progress import Progress
from .workloads import WORKLOADS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FULL = {"bulk_mb": 128, "rr_count": 20000, "conn_count": 2000, "idle_count": 10000, "runs": 3, "idle_runs": 1}
QUICK = {"bulk_mb": 16, "rr_count": 2000, "conn_count": 200, "idle_count": 500, "runs": 1, "idle_runs": 1}


def _csv(choices: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)} (got {text!r})")
        return list(dict.fromkeys(items))
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark aiotcpstack against kernel TCP (same asyncio app, same lab) and report ratios.")
    p.add_argument("--quick", action="store_true", help="small sizes, 1 run each (about a minute)")
    p.add_argument("--runs", type=int, help="runs per configuration (default 3; --quick: 1)")
    p.add_argument("--idle-runs", type=int, help="runs of idle_conns (default 1: it is slow and stable)")
    p.add_argument("--loops", type=_csv(("asyncio", "uvloop")), default=["asyncio", "uvloop"],
                   help="event loops (default asyncio,uvloop)")
    p.add_argument("--workloads", type=_csv(WORKLOADS), default=list(WORKLOADS),
                   help=f"comma-separated subset of {','.join(WORKLOADS)}")
    p.add_argument("--offloads", type=_csv(("on", "off")), default=["on", "off"],
                   help="veth offloads (TSO/GSO/checksum/GRO) on both ends: on,off (default both)")
    p.add_argument("--out", help="output directory (default results/bench-<timestamp>)")
    p.add_argument("--bulk-mb", type=int, help="MiB per bulk transfer (default 128; --quick: 16)")
    p.add_argument("--rr-count", type=int, help="round trips per rr_latency run (default 20000)")
    p.add_argument("--conn-count", type=int, help="connections per conn_rate run (default 2000)")
    p.add_argument("--conn-concurrency", type=int, default=8, help="parallel connections in conn_rate")
    p.add_argument("--idle-count", type=int, help="idle connections (default 10000; --quick: 500)")
    p.add_argument("--mode", choices=("shared", "dedicated"), default="shared",
                   help="Stack mode: shared (the kernel's address of if_a) or dedicated (a spare address)")
    p.add_argument("--stack-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Stack(**options), value as JSON (e.g. congestion_control=\"reno\")")
    p.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every workload timeout")
    p.add_argument("--profile", nargs="?", const="bulk_send", choices=WORKLOADS, metavar="WORKLOAD",
                   help="after the matrix, run our side of WORKLOAD (default bulk_send) once under cProfile "
                        "(first --offloads value, last --loops value); top functions to profile-WORKLOAD.txt")
    p.add_argument("--no-png", action="store_true", help="skip the matplotlib chart")
    # hidden: make "ours" kernel sockets too (sanity check of the harness: ratios must be ~1.0)
    p.add_argument("--ours", choices=("aiotcpstack", "kernel"), default="aiotcpstack", help=argparse.SUPPRESS)
    return p


class Config:
    def __init__(self, a: argparse.Namespace) -> None:
        base = QUICK if a.quick else FULL
        self.a = a
        self.runs = a.runs or base["runs"]
        self.idle_runs = a.idle_runs or min(self.runs, base["idle_runs"])
        self.bulk_size = (a.bulk_mb or base["bulk_mb"]) << 20
        self.rr_count = a.rr_count or base["rr_count"]
        self.conn_count = a.conn_count or base["conn_count"]
        self.idle_count = a.idle_count or base["idle_count"]
        self.cpus = sorted(os.sched_getaffinity(0))

    def runs_for(self, wl: str) -> int:
        return self.idle_runs if wl == "idle_conns" else self.runs

    def params(self, wl: str) -> dict[str, Any]:
        s = self.a.timeout_scale
        if wl in ("bulk_send", "bulk_recv"):
            return {"size": self.bulk_size, "timeout": s * (20 + self.bulk_size / 10e6)}
        if wl == "rr_latency":
            return {"count": self.rr_count, "timeout": s * (10 + self.rr_count * 0.001),
                    "cpu": self.cpus[-1]}
        if wl == "conn_rate":
            return {"count": self.conn_count, "concurrency": self.a.conn_concurrency,
                    "timeout": s * (10 + self.conn_count * 0.01)}
        if wl == "idle_conns":
            return {"count": self.idle_count, "concurrency": 200, "timeout": s * (20 + self.idle_count * 0.005)}
        raise ValueError(wl)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _read_line(proc: subprocess.Popen, timeout: float) -> str | None:
    """One line from ``proc.stdout`` (unbuffered binary pipe) within ``timeout`` s, None on EOF/timeout."""
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            return None
        buf += chunk
    return buf.split(b"\n", 1)[0].decode(errors="replace")


def _stop(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """End a process we started (by its Popen handle): TERM, then KILL."""
    if proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except OSError:
        pass


def _result_line(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith("RESULT "):
            try:
                return json.loads(line[len("RESULT "):])
            except json.JSONDecodeError:
                return None
    return None


def _tail(text: str, n: int = 400) -> str:
    t = " ".join(text.strip().split())
    return t[-n:]


def measure(lab: Any, cfg: Config, wl: str, loop: str, impl: str, run: int,
            profile: str | None = None) -> dict[str, Any]:
    """One run: peer in ns_b, app in ns_a; returns a measurement dict (never raises for workload errors)."""
    prm = cfg.params(wl)
    seed = 1000 + run
    m: dict[str, Any] = {"workload": wl, "loop": loop, "impl": impl, "run": run, "value": None,
                         "unit": report.METRICS[wl][1], "extra": {}, "error": None}
    t_start = time.monotonic()
    common = ["--workload", wl, "--seed", str(seed), "--timeout", f"{prm['timeout']:.1f}"]
    for key in ("size", "count", "concurrency", "cpu"):
        if key in prm:
            common += [f"--{key}", str(prm[key])]
    py = sys.executable
    peer_err = tempfile.TemporaryFile()
    peer = lab.popen(lab.ns_b, [py, "-m", "benchmarks.workloads", "peer", "--host", lab.addr_b, *common],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=peer_err, cwd=ROOT, env=_env(),
                     bufsize=0)
    app = None
    try:
        ready = _read_line(peer, 20 + (cfg.bulk_size / 100e6 if wl.startswith("bulk") else 0))
        if not ready or not ready.startswith("READY "):
            peer_err.seek(0)
            raise RuntimeError(f"peer did not start: {ready!r} {_tail(peer_err.read().decode(errors='replace'))}")
        port = int(ready.split()[1])
        use_stack = impl == "ours" and cfg.a.ours == "aiotcpstack"
        argv = [py, "-m", "benchmarks.workloads", "app", "--host", lab.addr_b, "--port", str(port),
                "--loop", loop, "--impl", "aiotcpstack" if use_stack else "kernel", *common]
        if use_stack:
            argv += ["--interface", lab.if_a, "--netns", lab.ns_a]
            if cfg.a.mode == "dedicated":
                argv += ["--address", f"{lab.spare_addr}/24"]
            for opt in cfg.a.stack_option:
                argv += ["--option", opt]
        if profile:
            argv += ["--profile", profile]
        app = lab.popen(lab.ns_a, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=_env(),
                        text=True)
        kill_after = prm["timeout"] + 45
        try:
            out, err = app.communicate(timeout=kill_after)
        except subprocess.TimeoutExpired:
            _stop(app)
            out, err = app.communicate()
            m["error"] = f"timeout: app process still running after {kill_after:.0f} s (killed)"
        res = _result_line(out or "")
        if res is None:
            if not m["error"]:
                m["error"] = f"app exited {app.returncode} without a result: {_tail(err or out or '')}"
        elif "error" in res:
            m["error"] = res["error"]
            m["extra"]["traceback"] = res.get("traceback", "")
        else:
            m["value"] = res["value"]
            m["unit"] = res.get("unit", m["unit"])
            m["extra"] = res.get("extra", {})
        # let the peer finish (single-connection peers exit by themselves; servers stop on stdin EOF)
        try:
            peer.stdin.close()
        except OSError:
            pass
        try:
            peer.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if peer.poll() is not None:
            rest = peer.stdout.read() or b""
            pres = _result_line(rest.decode(errors="replace"))
            if pres:
                m["extra"]["peer"] = pres
    except Exception as exc:  # noqa: BLE001 - one failed run must not end the benchmark
        m["error"] = m["error"] or f"{type(exc).__name__}: {exc}"
    finally:
        if app is not None:
            _stop(app)
        _stop(peer)
        peer_err.close()
    m["wall_seconds"] = time.monotonic() - t_start
    return m


def _plan(cfg: Config) -> list[tuple[str, str, str, int, str]]:
    steps = []
    for off in cfg.a.offloads:
        for wl in cfg.a.workloads:
            for lp in cfg.a.loops:
                for run in range(cfg.runs_for(wl)):
                    for impl in ("kernel", "ours"):
                        steps.append((off, wl, lp, run, impl))
    return steps


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def _meta(cfg: Config, lab: Any | None, started: str, load_before: str = "?") -> dict[str, Any]:
    a = cfg.a
    ours = "kernel (sanity mode: both sides kernel sockets)" if a.ours == "kernel" else "aiotcpstack.Stack"
    return {
        "title": "aiotcpstack vs kernel TCP" + (" — SANITY MODE (kernel vs kernel)" if a.ours == "kernel" else ""),
        "date": started, "ours": ours, "mode": a.mode if a.ours == "aiotcpstack" else "-",
        "runs": cfg.runs, "idle_runs": cfg.idle_runs, "quick": a.quick,
        "kernel": platform.release(), "python": platform.python_version(), "cpus": len(cfg.cpus),
        "loadavg": f"{load_before} before, {_loadavg()} after",
        "sizes": {"bulk_bytes": cfg.bulk_size, "rr_round_trips": cfg.rr_count, "conn_count": cfg.conn_count,
                  "conn_concurrency": a.conn_concurrency, "idle_count": cfg.idle_count},
        "workloads": a.workloads, "loops": a.loops, "offloads": a.offloads,
        "stack_options": a.stack_option, "lab": getattr(lab, "prefix", None),
        "notes": [
            "Each run starts a fresh app process in ns_a and a fresh kernel peer process in ns_b; "
            "kernel and ours runs are interleaved.",
            "bulk_*: N bytes, SHA-256 + byte count checked outside the timed section; "
            "Gbit/s from connection_made to the receiver's report (send) / to EOF (receive).",
            "rr_latency: app and peer pinned to the same CPU; 5% warm-up round trips discarded.",
            f"conn_rate: {a.conn_concurrency} parallel clients; each connects, sends one line, "
            "waits for the echo, closes (ours keeps TIME_WAIT).",
            "idle_conns: user RSS = VmRSS delta of the app process after gc / K (kernel sockets live "
            "in kernel memory, not in RSS); 'total' adds the kernel's Slab delta share "
            "(kernel: half of the machine-wide delta, the other half is the peer; ours: delta minus the "
            "peer's half as measured in the kernel run). Machine-wide Slab is noisy.",
        ],
    }


def write_outputs(out_dir: str, measurements: list[dict], meta: dict[str, Any], png: bool = True) -> str:
    os.makedirs(out_dir, exist_ok=True)
    rows = report.build_rows(measurements)
    md = report.render_markdown(rows, meta)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        f.write(report.to_json(rows, measurements, meta))
    if png and rows:
        try:
            report.plot_png(rows, os.path.join(out_dir, "ratios.png"), title=meta.get("title", ""))
        except Exception as exc:  # noqa: BLE001
            sys.stderr.write(f"warning: PNG not written: {exc}\n")
    return md


def _profile_report(path: str, out_txt: str, top: int = 25) -> str:
    import io
    import pstats
    s = io.StringIO()
    st = pstats.Stats(path, stream=s)
    st.sort_stats("tottime").print_stats(top)
    s.write("\n\n---- by cumulative time ----\n")
    st.sort_stats("cumulative").print_stats(top)
    with open(out_txt, "w") as f:
        f.write(s.getvalue())
    return s.getvalue()


def _make_lab(lab_cls: Any, attempts: int = 3) -> Any:
    """An entered Lab; creation is retried (a concurrent run's stale-lab sweep can race with it)."""
    for i in range(attempts):
        lab = lab_cls()
        try:
            lab.__enter__()
            return lab     # entered; the caller closes it
        except Exception as exc:  # noqa: BLE001
            if i == attempts - 1:
                raise
            sys.stderr.write(f"lab setup failed ({type(exc).__name__}: {exc}); retrying\n")
            time.sleep(0.5)
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    cfg = Config(a)
    if os.geteuid() != 0:
        sys.stderr.write("benchmarks need root (network namespaces, veth, AF_PACKET)\n")
        return 2
    started = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    load_before = _loadavg()
    out_dir = a.out or os.path.join("results", "bench-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    from aiotcpstack.host.lab import Lab

    steps = _plan(cfg)
    prog = Progress(len(steps) + (1 if a.profile else 0))
    measurements: list[dict] = []
    failed_cells: dict[str, list[str]] = {}     # workload -> first error of each failed cell (ours)
    ok_cells: set[str] = set()
    lab = None
    interrupted = False
    main_pid = os.getpid()

    def _on_term(signum: int, frame: Any) -> None:
        if os.getpid() != main_pid:       # a forked helper (pyroute2 forks for netns work): just die
            os._exit(128 + signum)
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, _on_term)
    try:
        lab = _make_lab(Lab)
        try:
            current_off = None
            for off, wl, lp, run, impl in steps:
                if off != current_off:
                    for ns, ifname in ((lab.ns_a, lab.if_a), (lab.ns_b, lab.if_b)):
                        lab.set_offloads(ns, ifname, off == "on")
                    current_off = off
                label = f"{wl} offloads={off} {lp} {impl} run {run + 1}"
                prog.start(label)
                cell = (off, wl, lp)
                skip = None
                if impl == "ours":
                    prev = [m for m in measurements if (m["offloads"], m["workload"], m["loop"]) == cell
                            and m["impl"] == "ours"]
                    if any(m["error"] for m in prev):
                        skip = "skipped: an earlier run of this configuration failed"
                    elif wl not in ok_cells and len(failed_cells.get(wl, [])) >= 2:
                        skip = f"skipped: failed in earlier configurations ({failed_cells[wl][0]})"
                if skip:
                    m = {"workload": wl, "loop": lp, "impl": impl, "run": run, "value": None,
                         "unit": report.METRICS[wl][1], "extra": {"skipped": True}, "error": skip}
                else:
                    m = measure(lab, cfg, wl, lp, impl, run)
                m["offloads"] = off
                measurements.append(m)
                if impl == "ours" and not skip:
                    if m["error"]:
                        failed_cells.setdefault(wl, []).append(m["error"])
                        prog.note(f"FAILED {label}: {m['error'][:300]}")
                    else:
                        ok_cells.add(wl)
                elif m["error"] and not skip:
                    prog.note(f"FAILED {label}: {m['error'][:300]}")
                val = f"{m['value']:.4g} {m['unit']}" if m["value"] is not None else "FAILED"
                prog.step(f"{label}: {val}")
            if a.profile:
                wl = a.profile
                prog.start(f"profile: ours {wl} under cProfile")
                os.makedirs(out_dir, exist_ok=True)
                pstats_path = os.path.abspath(os.path.join(out_dir, f"profile-{wl}.pstats"))
                off = a.offloads[0]
                for ns, ifname in ((lab.ns_a, lab.if_a), (lab.ns_b, lab.if_b)):
                    lab.set_offloads(ns, ifname, off == "on")
                pm = measure(lab, cfg, wl, a.loops[-1], "ours", 0, profile=pstats_path)
                if os.path.exists(pstats_path):
                    _profile_report(pstats_path, os.path.join(out_dir, f"profile-{wl}.txt"))
                    prog.note(f"profile written to {out_dir}/profile-{wl}.txt "
                              f"(offloads {off}, {a.loops[-1]}; under cProfile: "
                              f"{pm['value'] if pm['value'] is not None else pm['error']} {pm['unit']})")
                else:
                    prog.note(f"profile run produced no profile: {pm['error']}")
                prog.step()
        finally:
            lab.close()
    except KeyboardInterrupt:
        interrupted = True
        prog.note("interrupted: writing a partial report")
    finally:
        signal.signal(signal.SIGTERM, old_term)
        prog.close()
    meta = _meta(cfg, lab, started, load_before)
    if interrupted:
        meta["notes"] = ["INTERRUPTED: partial results."] + meta["notes"]
    md = write_outputs(out_dir, measurements, meta, png=not a.no_png)
    sys.stdout.write(md)
    sys.stdout.write(f"\n(results in {out_dir}/: results.md, results.json" +
                     ("" if a.no_png else ", ratios.png") + ")\n")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
