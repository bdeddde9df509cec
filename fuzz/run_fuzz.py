#!/usr/bin/env python3
"""Long fuzz run of the input path (NetworkCore.receive) with live connections and listeners.

    .venv/bin/python fuzz/run_fuzz.py --engine atheris --cases 1000000 --time 1800
    .venv/bin/python fuzz/run_fuzz.py --engine random  --cases 1000000      # no atheris needed

Each *epoch* builds a fresh tests.sim.fuzz_harness.FuzzWorld (two NetworkCores over the simulated
link, a listener and two connections transferring in both directions, v4 and v6), feeds
``--per-epoch`` mutated real frames into the server core (interleaved with the real traffic on
virtual time) and then checks that both transfers complete byte-exact.  Per frame: no exception
escapes receive(), StackErrors stays 0, and the frame moved a drop/accept counter or belongs to a
class the oracle says is ignored by design (see docs/robustness.md).

--engine atheris: libFuzzer drives the bytes (coverage-guided: atheris instruments the aiotcpstack
package); the bytes seed the mutation of a corpus frame.  --engine random: a seeded PRNG.
Prints cases, cases/s, epochs and the counters at the end; exit status 0 = no invariant broken.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

STATE = {"world": None, "fed": 0, "epochs": 0, "seed": 0, "t0": 0.0, "silent": 0, "cases": 0}


def new_world(args):
    from tests.sim.fuzz_harness import FuzzWorld
    STATE["epochs"] += 1
    return FuzzWorld(seed=STATE["seed"] * 1000003 + STATE["epochs"], up=args.up, down=args.up // 2)


def one_case(data: bytes, args) -> None:
    w = STATE["world"]
    rng = random.Random(data)
    frame, trusted = w.mutate(data, rng)
    w.feed(frame, trusted)
    STATE["cases"] += 1
    if w.fed % 20 == 0:
        w.step()
    if w.fed >= args.per_epoch:
        w.finish()
        STATE["silent"] += w.silent
        STATE["world"] = new_world(args)
    if STATE["cases"] % 100000 == 0:
        dt = time.time() - STATE["t0"]
        print(f"[fuzz] {STATE['cases']} cases, {STATE['cases'] / dt:.0f}/s, epochs {STATE['epochs']}", flush=True)
    if STATE["cases"] >= args.cases or time.time() - STATE["t0"] > args.time:
        report(args)
        os._exit(0)


def report(args) -> None:
    dt = time.time() - STATE["t0"]
    print(f"[fuzz] DONE engine={args.engine} cases={STATE['cases']} time={dt:.1f}s rate={STATE['cases'] / dt:.0f}/s "
          f"epochs={STATE['epochs']} (each finished byte-exact) silent-by-design={STATE['silent']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", choices=("atheris", "random"), default="atheris")
    ap.add_argument("--cases", type=int, default=1_000_000)
    ap.add_argument("--time", type=float, default=3600.0)
    ap.add_argument("--per-epoch", type=int, default=20000)
    ap.add_argument("--up", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=1)
    args, rest = ap.parse_known_args()
    STATE["seed"] = args.seed
    if args.engine == "atheris":
        import atheris
        with atheris.instrument_imports(include=["aiotcpstack"]):
            import aiotcpstack.ip.core  # noqa: F401
            import aiotcpstack.tcp.connection  # noqa: F401
            import aiotcpstack.tcp.listener  # noqa: F401
            import aiotcpstack.wire.tcp  # noqa: F401
        STATE["world"] = new_world(args)
        STATE["t0"] = time.time()
        atheris.Setup([sys.argv[0], *rest], lambda d: one_case(d, args))
        atheris.Fuzz()
    else:
        STATE["world"] = new_world(args)
        STATE["t0"] = time.time()
        rng = random.Random(args.seed)
        while True:
            one_case(rng.randbytes(16), args)


if __name__ == "__main__":
    main()
