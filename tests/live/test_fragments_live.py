"""Live reassembly: the kernel in ns_b pings our dedicated addresses with ``ping -s 3000 -M dont``
(IPv4) and ``ping -6 -s 3000`` (IPv6), so every request arrives in kernel-made fragments; the stack
reassembles them (RFC 1122 3.3.2 / RFC 8200 4.5) and answers with fragments of its own, which the
kernel reassembles in turn -- ping succeeds only if both directions are right."""
from __future__ import annotations

import asyncio

import pytest

from aiotcpstack import Stack
from test_ipv6_live import _wait_dad

pytestmark = pytest.mark.timeout(120)


async def test_large_ping_in_fragments_both_families(lab) -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, _wait_dad, lab)
    address = f"{lab.spare_addr}/{lab.prefixlen},{lab.spare_addr6}/64"
    async with Stack(lab.if_a, netns=lab.ns_a, address=address) as stack:
        c = stack.counters
        for argv, p in (
                (["ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "3000", "-M", "dont", lab.spare_addr], "Ip"),
                (["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "-s", "3000", lab.spare_addr6], "Ip6")):
            res = await loop.run_in_executor(None, lambda: lab.run(lab.ns_b, argv, check=False))
            assert res.returncode == 0, res.stdout + res.stderr
            assert "3 received" in res.stdout, res.stdout
            # 3008 bytes of ICMP in 1500-byte frames: three fragments a request
            assert c[p + "ReasmOKs"] >= 3 and c[p + "ReasmReqds"] >= 9, dict(c)
            assert c[p + "ReasmFails"] == 0, dict(c)
        assert c["IcmpInEchos"] >= 3 and c.get("StackErrors", 0) == 0
