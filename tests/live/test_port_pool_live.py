"""Shared mode's pre-reserved ephemeral ports (``Stack._pick_port`` / ``_refill_pool``) and the
RST guard's batched set updates, against the kernel in a lab.

A pooled port is reserved in the kernel (bound socket) and in the guard's set *before* it is handed
to a connection, a segment to a pooled port that no connection uses yet is answered by our RST (as
the kernel would answer for its bound socket), a released port is free for the kernel again within
a turn of the loop, and closing the stack leaves the ruleset and every pooled port as they were.
"""
from __future__ import annotations

import asyncio

from aiotcpstack import Stack
from aiotcpstack.host.firewall import RstGuard
from live_peers import KernelAcceptor, kernel_can_bind, kernel_connect, nft_ruleset, wait_for



async def test_pooled_ports_reserved_guarded_answered_and_released(lab) -> None:
    loop = asyncio.get_running_loop()
    before = nft_ruleset(lab, lab.ns_a)
    ka = KernelAcceptor(lab, 2, backlog=8).start()
    kport = ka.port
    accepted = ka.accepted
    try:
        async with Stack(lab.if_a, netns=lab.ns_a, time_wait=1.0) as stack:
            _, w1 = await stack.open_connection(lab.addr_b, kport)
            l1 = w1.get_extra_info("sockname")[1]
            pool = list(stack._pool)
            lo, hi = stack.config.ephemeral_ports
            # one batch was reserved for the first connect; it took one port of it
            assert 0 < len(pool) < Stack.PORT_BATCH and l1 not in pool
            assert all(lo <= p <= hi for p in pool + [l1])
            kports = await loop.run_in_executor(None, stack._guard.list_kernel_ports)
            assert set(pool) | {l1} <= kports, (pool, l1, kports)
            for p in pool[:4] + [l1]:
                # the dual-stack reservation socket holds v4 and v6 (the lab has both)
                assert not kernel_can_bind(lab.ns_a, lab.addr_a, p), p
                assert not kernel_can_bind(lab.ns_a, "::", p), p
            # a SYN to a pooled port nobody uses yet: refused at once by our RST (the guard keeps
            # the kernel out, so without it the SYN would go unanswered)
            res = await loop.run_in_executor(None, kernel_connect, lab, lab.addr_a, pool[0], 3.0)
            assert res == "refused", res
            assert pool[0] in stack._pool          # still pooled and reserved
            # the second connect takes a port from the pool: no new reservation round
            _, w2 = await stack.open_connection(lab.addr_b, kport)
            l2 = w2.get_extra_info("sockname")[1]
            assert l2 in pool and l2 not in stack._pool
            # we close first, then the peer: TIME_WAIT (1 s here) holds the port; then it is
            # released
            w1.close()
            assert await wait_for(lambda: len(accepted) == 2, 5)
            accepted[0].close()
            await asyncio.sleep(0.1)
            assert l1 in stack._reservations
            assert await wait_for(lambda: l1 not in stack._reservations and l1 not in stack._unreserve, 5)
            assert kernel_can_bind(lab.ns_a, lab.addr_a, l1)
            kports = await loop.run_in_executor(None, stack._guard.list_kernel_ports)
            assert l1 not in kports and l2 in kports
            w2.transport.abort()
            pooled = list(stack._pool)
        ka.thread.join(10)
    finally:
        ka.close()
    assert nft_ruleset(lab, lab.ns_a) == before
    for p in pooled + [l1, l2]:
        assert kernel_can_bind(lab.ns_a, lab.addr_a, p), p
        assert kernel_can_bind(lab.ns_a, "::", p), p


def test_guard_batch_updates(lab) -> None:
    before = nft_ruleset(lab, lab.ns_a)
    with RstGuard(netns=lab.ns_a) as g:
        listing = lab.run(lab.ns_a, ["nft", "list", "set", "inet", g.table, "ports"]).stdout
        assert "flags dynamic" in listing, listing       # a hash set: O(1) element updates
        g.add_ports(list(range(30000, 30100)) + [30000])  # duplicates: once
        assert g.list_kernel_ports() == set(range(30000, 30100)) == g.ports
        g.add_ports([30050, 30100])                       # already there / new: only the new one
        assert g.list_kernel_ports() == set(range(30000, 30101))
        g.remove_ports(list(range(30000, 30050)) + [40000])   # unknown ports: no-op
        assert g.list_kernel_ports() == set(range(30050, 30101)) == g.ports
        g.remove_ports([])
        g.add_ports([])
    assert nft_ruleset(lab, lab.ns_a) == before
