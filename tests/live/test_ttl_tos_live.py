"""Live: the kernel peer in ns_b sees the TTL / hop limit and DiffServ field we set (RFC 9293
MUST-49, MUST-48, SHLD-21, SHLD-22), counted by nft rules in ns_b's prerouting hook (``ip ttl`` /
``ip6 hoplimit`` and ``ip dscp`` / ``ip6 dscp``), v4 and v6, in both directions of connection
setup: our client (its SYN with the stack's ``ip_default_ttl`` / ``ipv6_hop_limit``, then a change
through ``get_extra_info('socket')`` mid-connection) and our server (IP_TTL / IP_TOS set on the
listening pseudo-socket: the SYN-ACK and the accepted connection carry them; then the accepted
connection changes them mid-connection).  Every segment of each connection is counted once, so
"no segment with other values" is checked too."""
from __future__ import annotations

import asyncio
import json
import socket

import pytest

from aiotcpstack import Stack
from test_ipv6_live import _wait_dad
from test_pmtud_live import KernelServer, kernel_client

pytestmark = pytest.mark.timeout(120)

TABLE = "ats_ttltos"


def _opts(v6: bool) -> tuple[int, int, int]:
    """(level, TTL option, TOS option) of the family."""
    if v6:
        return socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, socket.IPV6_TCLASS
    return socket.IPPROTO_IP, socket.IP_TTL, socket.IP_TOS


def _rules(v6: bool, ours: str, kport: int, lport: int) -> str:
    fam, ttl_kw = ("ip6", "hoplimit") if v6 else ("ip", "ttl")
    src = f"{fam} saddr {ours}"
    lines = []
    # to the kernel's server (our client): the default, then the values set mid-connection
    for name, ttl, dscp in (("c_default", 33 if not v6 else 34, 0), ("c_set", 5, 0x0A)):
        lines.append(f'{src} tcp dport {kport} {fam} {ttl_kw} {ttl} {fam} dscp {dscp} counter comment "{name}"')
    lines.append(f'{src} tcp dport {kport} tcp flags & (syn | ack) == syn {fam} {ttl_kw} {33 if not v6 else 34} '
                 f'counter comment "c_syn"')
    lines.append(f'{src} tcp dport {kport} counter comment "c_all"')
    # from our server: the listener's values (the SYN-ACK too), then the child's change
    lines.append(f'{src} tcp sport {lport} tcp flags & (syn | ack) == syn | ack {fam} {ttl_kw} 17 '
                 f'{fam} dscp 0x2e counter comment "s_synack"')
    for name, ttl, dscp in (("s_listener", 17, 0x2E), ("s_set", 200, 0x12)):
        lines.append(f'{src} tcp sport {lport} {fam} {ttl_kw} {ttl} {fam} dscp {dscp} counter comment "{name}"')
    lines.append(f'{src} tcp sport {lport} counter comment "s_all"')
    body = "\n    ".join(lines)
    return (f"table inet {TABLE} {{\n  chain pre {{\n    type filter hook prerouting priority -300; "
            f"policy accept;\n    {body}\n  }}\n}}\n")


def _counters(lab, table: str = TABLE) -> dict[str, int]:
    """Packet counts of the commented counter rules of ``table`` in ns_b."""
    out = json.loads(lab.run(lab.ns_b, ["nft", "-j", "list", "table", "inet", table]).stdout)
    counts: dict[str, int] = {}
    for item in out["nftables"]:
        rule = item.get("rule")
        if rule and "comment" in rule:
            for e in rule["expr"]:
                if "counter" in e:
                    counts[rule["comment"]] = e["counter"]["packets"]
    return counts


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
async def test_peer_sees_our_ttl_and_dscp(lab, v6: bool) -> None:
    loop = asyncio.get_running_loop()
    if v6:
        await loop.run_in_executor(None, _wait_dad, lab)
    ours, theirs = (lab.addr6_a, lab.addr6_b) if v6 else (lab.addr_a, lab.addr_b)
    level, opt_ttl, opt_tos = _opts(v6)
    ks = KernelServer(lab.ns_b, theirs, b"r" * 3000)
    served = loop.create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readexactly(1000)
            writer.write(b"x" * 500)
            await writer.drain()
            await asyncio.sleep(0.05)
            s = writer.get_extra_info("socket")
            assert s.getsockopt(level, opt_ttl) == 17 and s.getsockopt(level, opt_tos) == 0x2E << 2
            s.setsockopt(level, opt_ttl, 200)
            s.setsockopt(level, opt_tos, 0x12 << 2)           # DSCP AF21
            writer.write(b"y" * 500)
            await writer.drain()
            writer.close()
            served.set_result(True)
        except BaseException as exc:                          # noqa: BLE001
            served.set_exception(exc)

    try:
        async with Stack(lab.if_a, netns=lab.ns_a, ip_default_ttl=33, ipv6_hop_limit=34) as stack:
            server = await stack.start_server(handle, ours, 0)
            (ls,) = server.sockets
            ls.setsockopt(level, opt_ttl, 17)
            ls.setsockopt(level, opt_tos, 0x2E << 2)          # DSCP EF
            lport = ls.getsockname()[1]
            lab.nft(lab.ns_b, _rules(v6, ours, ks.port, lport))
            # our client: the SYN and the first data with the stack default, then a change
            reader, writer = await stack.open_connection(theirs, ks.port)
            s = writer.get_extra_info("socket")
            assert s.getsockopt(level, opt_ttl) == (34 if v6 else 33) and s.getsockopt(level, opt_tos) == 0
            writer.write(b"a" * 1000)
            await writer.drain()
            await asyncio.sleep(0.1)
            s.setsockopt(level, opt_ttl, 5)
            s.setsockopt(level, opt_tos, 0x0A << 2)           # DSCP AF11
            writer.write(b"b" * 1000)
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 20) == b"r" * 3000
            writer.close()
            await loop.run_in_executor(None, ks.thread.join, 10)
            assert ks.error is None and ks.result is not None and ks.result[1] == 2000
            # our server: the kernel connects, sends, reads the reply
            digest, n = await asyncio.wait_for(
                loop.run_in_executor(None, kernel_client, lab.ns_b, ours, lport, b"q" * 1000), 30)
            assert n == 1000
            await asyncio.wait_for(served, 10)
            await asyncio.sleep(0.2)                          # the last ACKs / FINs
            c = await loop.run_in_executor(None, _counters, lab)
            server.close()
            await server.wait_closed()
    finally:
        ks.close()
    print(c)
    assert c["c_syn"] == 1
    assert c["c_default"] >= 3 and c["c_set"] >= 2            # SYN, ACK, data / data, FIN
    assert c["c_all"] == c["c_default"] + c["c_set"]
    assert c["s_synack"] == 1
    assert c["s_listener"] >= 2 and c["s_set"] >= 1           # SYN-ACK, data (ACKs may ride on it) / data
    assert c["s_all"] == c["s_listener"] + c["s_set"]
