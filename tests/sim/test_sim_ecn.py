"""ECN between two whole stacks on the simulated wire (RFC 3168; tcp/ecn.py, ip/core.py): for
every combination of the ``ecn`` option on client and server, ECN is used exactly when the client
asks (1) and the server accepts (1 or 2); then only data frames are ECT(0) and CE marks put on a
fraction of them in the path make the receiver echo ECE and the sender reduce its window and send
CWR, in both directions, with every byte delivered; without ECN no frame is ECT and the marks
the path would set never appear."""
from __future__ import annotations

import random

import pytest

from aiotcpstack.tcp.config import TcpConfig

from .harness import MAC_A, Peer, make_pair

ETH_HLEN = 14


def _ce_mark(frame: bytes) -> bytes:
    """``frame`` (Ethernet + option-less IPv4) with its ECN field set to CE, header checksum fixed."""
    b = bytearray(frame)
    b[ETH_HLEN + 1] |= 3
    b[ETH_HLEN + 10:ETH_HLEN + 12] = b"\0\0"
    s = sum(int.from_bytes(b[ETH_HLEN + i:ETH_HLEN + i + 2], "big") for i in range(0, 20, 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    b[ETH_HLEN + 10:ETH_HLEN + 12] = (~s & 0xFFFF).to_bytes(2, "big")
    return bytes(b)


def run(ecn_client: int, ecn_server: int, up: int, down: int, mark: float, seed: int = 1) -> dict:
    clock, net, a, b = make_pair(seed, TcpConfig(ecn=ecn_client), TcpConfig(ecn=ecn_server), delay=0.002)
    rng = random.Random(seed)
    seen = {"a": [0, 0, 0], "b": [0, 0, 0]}       # per sender: [ECT data, Not-ECT data, CE marks]
    orig = net._transmit

    def transmit(src, frame: bytes, trusted: bool) -> None:
        if len(frame) > ETH_HLEN + 40 and frame[12:14] == b"\x08\x00" and frame[ETH_HLEN + 9] == 6:
            who = "a" if src.mac == MAC_A else "b"
            ihl = (frame[ETH_HLEN] & 15) * 4
            tot = int.from_bytes(frame[ETH_HLEN + 2:ETH_HLEN + 4], "big")
            doff = (frame[ETH_HLEN + ihl + 12] >> 4) * 4
            if tot > ihl + doff:                             # a data frame
                ect = frame[ETH_HLEN + 1] & 3
                seen[who][0 if ect else 1] += 1
                if ect == 2 and rng.random() < mark:
                    frame = _ce_mark(frame)
                    seen[who][2] += 1
        orig(src, frame, trusted)

    net._transmit = transmit
    rng_data = random.Random(seed ^ 77)
    data_up, data_down = rng_data.randbytes(up), rng_data.randbytes(down)
    server: list[Peer] = []

    def on_accept(conn):
        p = Peer(b, data_down, 1 << 20)
        p.conn = conn
        server.append(p)
        return p

    b.core.listen(b.ip, 5000, 16, on_accept)
    client = Peer(a, data_up, 1 << 20)
    client.conn = a.core.connect(b.ip, 5000, client, clock.now)
    a.kick()
    clock.run(until=600.0, stop=lambda: client.done and bool(server) and server[0].done)
    assert server and bytes(server[0].received) == data_up and bytes(client.received) == data_down
    assert client.exc is None and server[0].exc is None
    return {"seen": seen, "a": dict(a.counters), "b": dict(b.counters),
            "ecn": (bool(client.conn.ecn), bool(server[0].conn.ecn))}


@pytest.mark.parametrize("ecn_server", [0, 1, 2])
@pytest.mark.parametrize("ecn_client", [0, 1, 2])
def test_negotiation_matrix_and_marks_both_ways(ecn_client: int, ecn_server: int) -> None:
    r = run(ecn_client, ecn_server, 600_000, 300_000, mark=0.02)
    ok = ecn_client == 1 and ecn_server != 0
    assert r["ecn"] == (ok, ok)
    seen = r["seen"]
    if not ok:
        assert seen["a"][0] == seen["b"][0] == 0 and seen["a"][1] and seen["b"][1]
        assert not r["a"].get("TcpEcnCwr") and not r["b"].get("TcpEcnCwr")
        return
    # data frames are ECT(0) -- all but retransmissions (none here: the path loses nothing)
    assert seen["a"][0] and seen["b"][0] and seen["a"][1] == seen["b"][1] == 0
    assert seen["a"][2] and seen["b"][2]
    # the receivers saw CE and echoed it; the senders reduced on the echo (and sent CWR, which
    # ended the echo: a reduction per window, so fewer reductions than marks is expected)
    assert r["b"]["TcpEcnCeRecv"] >= 1 and r["a"]["TcpEcnCwr"] >= 1
    assert r["a"]["TcpEcnCeRecv"] >= 1 and r["b"]["TcpEcnCwr"] >= 1
    assert r["a"]["TcpEcnCwr"] <= seen["a"][2] and r["b"]["TcpEcnCwr"] <= seen["b"][2]
    assert not r["a"].get("RetransSegs") and not r["b"].get("RetransSegs")   # no loss, no retransmission


def test_no_marks_no_reduction() -> None:
    r = run(1, 2, 300_000, 0, mark=0.0)
    assert r["ecn"] == (True, True)
    assert not r["a"].get("TcpEcnCwr") and not r["b"].get("TcpEcnCeRecv")
