"""Live: multi-MB transfers against the kernel's TCP under impairments, both directions (our client ->
kernel server, kernel client -> our server), shared and dedicated mode, every byte checked by SHA-256.

- 3 % random loss in BOTH directions: ``lab.set_loss(ns_a, 0.03)`` and ``lab.set_loss(ns_b, 0.03)``
  (nft netdev egress rule on the veth peer feeding each namespace, chosen frames forwarded into a sink:
  a silent wire loss, not a local NET_XMIT_DROP).  Offloads off so that one loss is one segment.
- reordering (+ delay/jitter and a little duplication) on the impairment wire of an :class:`ImpairedLab`
  (a - router m - wire - b).

Throughput and the loss-repair counters of our side are printed (``-s`` shows them).
"""
from __future__ import annotations

import asyncio
import hashlib

import pytest

from aiotcpstack import Stack
from test_tcp_live import MB, KernelServer, blob, kernel_client, our_client, start_our_server

pytestmark = pytest.mark.timeout(120)

REPAIR = ("RetransSegs", "TCPTimeouts", "TCPSackRecovery", "TCPFastRetrans", "TCPLossProbes",
          "TCPLostRetransmit", "TCPDSACKRecv", "TCPOFOQueue", "TCPFullUndo", "TCPPartialUndo",
          "TCPDSACKUndo", "TCPLossUndo", "TCPSpuriousRTOs", "TCPSACKReorder", "TCPTSReorder")


def _show(label: str, nbytes: int, secs: float, counters: dict) -> None:
    rep = " ".join(f"{k}={counters.get(k, 0)}" for k in REPAIR)
    print(f"{label}: {nbytes / MB:.1f} MB in {secs:.2f} s = {nbytes * 8 / secs / 1e6:.1f} Mbit/s  {rep}")


async def client_to_kernel(lab, stack: Stack, server_addr: str, up: bytes, down: bytes, label: str,
                           deadline: float = 60.0) -> dict:
    """our client -> kernel server, hash-checked both ways; the REPAIR counters it moved."""
    srv = KernelServer(lab.ns_b, server_addr, down)
    try:
        c0 = dict(stack.counters)
        digest, n, secs = await asyncio.wait_for(our_client(stack, server_addr, srv.port, up), deadline)
        moved = {k: stack.counters[k] - c0.get(k, 0) for k in REPAIR}
        _show(f"{label} our client->kernel", len(up) + n, secs, moved)
        assert (digest, n) == (hashlib.sha256(down).hexdigest(), len(down))
        srv.thread.join(10)
        assert not srv.errors, srv.errors
        assert srv.results == [(hashlib.sha256(up).hexdigest(), len(up))]
    finally:
        srv.close()
    return moved


async def _both_directions(lab, stack: Stack, server_addr: str, our_addr: str, up: bytes, down: bytes,
                           label: str, deadline: float = 60.0) -> None:
    """our client -> kernel server, then kernel client -> our server, hash-checked."""
    loop = asyncio.get_running_loop()
    await client_to_kernel(lab, stack, server_addr, up, down, label, deadline)
    server, results, done = await start_our_server(stack, None, down)
    try:
        port = server.sockets[0].getsockname()[1]
        c0 = dict(stack.counters)
        digest, n, secs = await asyncio.wait_for(
            loop.run_in_executor(None, kernel_client, lab.ns_b, our_addr, port, up), deadline)
        await asyncio.wait_for(done, 20)
        _show(f"{label} kernel client->our server", len(up) + n, secs,
              {k: stack.counters[k] - c0.get(k, 0) for k in REPAIR})
        assert results == [(hashlib.sha256(up).hexdigest(), len(up))]
        assert (digest, n) == (hashlib.sha256(down).hexdigest(), len(down))
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


@pytest.mark.parametrize("mode", ["shared", "dedicated"])
async def test_three_percent_loss_both_ways(lab_factory, mode: str) -> None:
    lab = lab_factory(offloads=False)
    lab.set_loss(lab.ns_a, 0.03)          # frames arriving at ns_a (kernel b -> us) are lost
    lab.set_loss(lab.ns_b, 0.03)          # frames arriving at ns_b (us -> kernel b) are lost
    up, down = blob(3 * MB, 31), blob(2 * MB, 32)
    address = None if mode == "shared" else f"{lab.spare_addr}/24"
    ours = lab.addr_a if mode == "shared" else lab.spare_addr
    async with Stack(lab.if_a, netns=lab.ns_a, address=address, vnet=False) as stack:
        await _both_directions(lab, stack, lab.addr_b, ours, up, down, f"{mode}/loss3%")
        counters = dict(stack.counters)
    assert lab.loss_dropped(lab.ns_a) > 0 and lab.loss_dropped(lab.ns_b) > 0
    assert counters["RetransSegs"] > 0          # we repaired losses of our own segments
    assert counters["InCsumErrors"] == 0


# shared mode only: a dedicated-mode Stack gets no routes (aio/stack.py takes the kernel's routes only
# in shared mode), so the router-separated peer of an ImpairedLab is unreachable (ENETUNREACH)
@pytest.mark.parametrize("mode", ["shared"])
async def test_reordering_delay_dup_both_ways(lab_factory, mode: str) -> None:
    """Impairment wire: 5 ms delay, 2 ms jitter, 3 % of frames held back (reordered), 1 % duplicated."""
    lab = lab_factory(impaired=True, delay=0.005, jitter=0.002, reorder=0.03, dup=0.01, seed=7)
    up, down = blob(4 * MB, 33), blob(3 * MB, 34)
    address = None if mode == "shared" else f"{lab.spare_addr}/24"
    ours = lab.addr_a if mode == "shared" else lab.spare_addr
    async with Stack(lab.if_a, netns=lab.ns_a, address=address) as stack:
        await _both_directions(lab, stack, lab.addr_b, ours, up, down, f"{mode}/reorder3%")
        counters = dict(stack.counters)
    stats = lab.stop_bridge()
    assert stats is not None and sum(stats["reordered"]) > 0 and sum(stats["dup"]) > 0, stats
    assert counters["TCPOFOQueue"] > 0            # we really received out-of-order data
    assert counters["InCsumErrors"] == 0
    # reordering makes our sender enter recovery (PRR) for segments that were only late; the
    # DSACKs / timestamps of the kernel's ACKs show it and the reductions are undone
    assert counters["TCPSackRecovery"] > 0
    assert sum(counters[k] for k in ("TCPFullUndo", "TCPPartialUndo", "TCPDSACKUndo", "TCPLossUndo")) > 0


# shared mode only: a dedicated-mode Stack gets no routes (aio/stack.py takes the kernel's routes only
# in shared mode), so the router-separated peer of an ImpairedLab is unreachable (ENETUNREACH)
@pytest.mark.parametrize("mode", ["shared"])
async def test_reordering_with_loss_both_ways(lab_factory, mode: str) -> None:
    """Reordering and loss together on the wire (2 ms delay, 1 ms jitter, 2 % reorder, 1 % loss)."""
    lab = lab_factory(impaired=True, delay=0.002, jitter=0.001, reorder=0.02, loss=0.01, seed=11)
    up, down = blob(3 * MB, 35), blob(2 * MB, 36)
    address = None if mode == "shared" else f"{lab.spare_addr}/24"
    ours = lab.addr_a if mode == "shared" else lab.spare_addr
    async with Stack(lab.if_a, netns=lab.ns_a, address=address) as stack:
        await _both_directions(lab, stack, lab.addr_b, ours, up, down, f"{mode}/reorder+loss")
    stats = lab.stop_bridge()
    assert stats is not None and sum(stats["lost"]) > 0, stats
