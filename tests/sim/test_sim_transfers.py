"""Seeded transfers between two full stacks over the simulated wire (virtual time).

Every case is one seed: the seed picks sizes (most small, a few up to several MB), impairments
(0-10 % loss, reordering, duplication, delay/jitter, bit errors), buffer sizes and whether the GSO/vnet path is
used; every byte is compared.  Failures name the seed (``pytest -k seed0042``) and print a summary.
"""
from __future__ import annotations

import os
import random

import pytest

from aiotcpstack.tcp.config import TcpConfig

from .harness import run_transfer

N_SEEDS = int(os.environ.get("SIM_SEEDS", "1000"))


def scenario(seed: int) -> dict:
    rng = random.Random(seed)
    r = rng.random()
    if r < 0.85:
        up = rng.randrange(0, 32 * 1024)
    elif r < 0.98:
        up = rng.randrange(32 * 1024, 256 * 1024)
    else:
        up = rng.randrange(256 * 1024, 3 * 1024 * 1024)
    d = rng.random()
    down = 0 if d < 0.3 else rng.randrange(0, 16 * 1024) if d < 0.9 else rng.randrange(16 * 1024, 128 * 1024)
    loss = rng.choice([0.0, 0.0, 0.001, 0.01, 0.02, 0.05, 0.10]) if up < 1024 * 1024 else rng.choice([0.0, 0.01, 0.02])
    net = dict(
        loss=loss,
        reorder=rng.choice([0.0, 0.0, 0.01, 0.05]),
        dup=rng.choice([0.0, 0.0, 0.01, 0.03]),
        delay=rng.choice([0.0001, 0.001, 0.005, 0.02]),
        jitter=rng.choice([0.0, 0.0, 0.0005, 0.002]),
    )
    buf = rng.choice([16384, 65536, 87040, 262144])
    cfg = TcpConfig(sndbuf=buf, rcvbuf=max(buf, 65536),
                    sack=rng.random() < 0.85, timestamps=rng.random() < 0.85,
                    window_scaling=rng.random() < 0.9,
                    congestion_control=rng.choice(["cubic", "reno"]),
                    # >1: TSO-sized output() calls that ip/ splits in software (or GSO with vnet)
                    tso_segs=rng.choice([1, 1, 4, 16]))
    vnet = rng.random() < 0.15
    if not vnet:
        # bit errors past the Ethernet header: caught by the IP/TCP checksums (a vnet link
        # would mark frames checksum-trusted, so corruption is only simulated without it)
        net["corrupt"] = rng.choice([0.0, 0.0, 0.0, 0.01, 0.02])
    return dict(up=up, down=down, net=net, config=cfg, vnet=vnet)


@pytest.mark.parametrize("seed", range(N_SEEDS), ids=lambda s: f"seed{s:04d}")
def test_seeded_transfer(seed: int) -> None:
    sc = scenario(seed)
    res = run_transfer(seed, sc["up"], sc["down"], config=sc["config"], vnet=sc["vnet"], **sc["net"])
    assert res.ok, f"{res.summary()} net={sc['net']} cfg={sc['config']} vnet={sc['vnet']}"


def test_determinism_same_seed_same_result() -> None:
    sc = scenario(4242)
    kw = dict(config=TcpConfig(), loss=0.03, reorder=0.02, dup=0.01, delay=0.003, jitter=0.001)
    r1 = run_transfer(4242, 300_000, 20_000, **kw)
    r2 = run_transfer(4242, 300_000, 20_000, **kw)
    assert r1.ok and r2.ok, r1.summary()
    assert r1.time == r2.time
    assert r1.counters_a == r2.counters_a and r1.counters_b == r2.counters_b
    assert r1.wire == r2.wire and r1.events == r2.events
    r3 = run_transfer(4243, 300_000, 20_000, **kw)
    assert (r3.time, r3.wire) != (r1.time, r1.wire)
