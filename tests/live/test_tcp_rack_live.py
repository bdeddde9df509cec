"""Live: RACK (``recovery=1``, tcp/rack.py) against ``recovery=0`` (DupThresh only), our sender ->
the kernel's TCP over an impaired wire with reordering and loss together (2 ms delay, 1 ms jitter,
3 % of frames reordered, 1 % lost: adaptive reordering raises DupThresh, so without RACK a loss
near the tail of a flight waits for the RTO).  Every byte is checked by SHA-256; the loss-repair
counters of both runs are printed (``-s``).  Asserted: both transfers byte-exact, RACK's
retransmission timeouts no more than DupThresh's plus one (the counts are small and the wire is
random: one timeout either way is noise; the numbers go to benchmarks/PERF_LOG.md step 28)."""
from __future__ import annotations

import pytest

from aiotcpstack import Stack
from test_tcp_impaired import client_to_kernel
from test_tcp_live import MB, blob

pytestmark = pytest.mark.timeout(180)


async def _upload(lab, recovery: int, up: bytes, down: bytes) -> dict:
    async with Stack(lab.if_a, netns=lab.ns_a, recovery=recovery) as stack:
        return await client_to_kernel(lab, stack, lab.addr_b, up, down, f"recovery={recovery}")


async def test_rack_against_dupthresh_reordering_and_loss(lab_factory) -> None:
    lab = lab_factory(impaired=True, delay=0.002, jitter=0.001, reorder=0.03, loss=0.01, seed=13)
    up, down = blob(4 * MB, 41), blob(64 * 1024, 42)
    rack = await _upload(lab, 1, up, down)
    off = await _upload(lab, 0, up, down)
    stats = lab.stop_bridge()
    assert stats is not None and sum(stats["lost"]) > 0 and sum(stats["reordered"]) > 0, stats
    assert rack["RetransSegs"] > 0 and off["RetransSegs"] > 0      # losses of ours were repaired
    assert rack["TCPTimeouts"] <= off["TCPTimeouts"] + 1
