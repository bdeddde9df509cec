"""PcapWriter / PcapLink: files must read back in scapy (and so in Wireshark) byte- and time-exact."""
from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from aiotcpstack.link.pcap import PcapLink, PcapWriter
from aiotcpstack.link.sim import SimClock, SimNetwork

rdpcap = pytest.importorskip("scapy.utils").rdpcap

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def test_write_and_read_back_with_scapy(tmp_path: Path) -> None:
    from scapy.all import IP, TCP, Ether

    frames = [
        bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="198.18.1.1", dst="198.18.1.2") / TCP(sport=1, dport=2) / (b"x" * n))
        for n in (0, 1, 100, 1460)
    ]
    frames.append(MAC_B + MAC_A + b"\x08\x00" + bytes(70000))  # a GSO-sized frame > 65535
    times = [0.0, 1.000001, 1700000000.123456, 1700000000.999999, 1700000001.5]
    path = tmp_path / "t.pcap"
    with PcapWriter(path) as w:
        for f, t in zip(frames, times):
            w.write(f, t)
        assert w.count == len(frames)
    pkts = rdpcap(str(path))
    assert len(pkts) == len(frames)
    for p, f, t in zip(pkts, frames, times):
        # scapy's reader cuts records at 65535 bytes (its MTU constant); the file holds all of it
        assert p.original == f[:65535]
        assert float(p.time) == pytest.approx(t, abs=1e-6)
    assert pkts[2][TCP].dport == 2
    from scapy.utils import RawPcapReader

    meta = [m for _, m in RawPcapReader(str(path))]
    assert (meta[-1].caplen, meta[-1].wirelen) == (70014, 70014)
    raw = path.read_bytes()
    magic, vmaj, vmin, _, _, snap, linktype = struct.unpack_from("<IHHiIII", raw)
    assert (magic, vmaj, vmin, linktype) == (0xA1B2C3D4, 2, 4, 1) and snap >= 70014


def test_snaplen_truncates_but_keeps_original_length() -> None:
    buf = io.BytesIO()
    w = PcapWriter(buf, snaplen=64)
    w.write(bytes(range(200)), 5.25)
    w.flush()
    data = buf.getvalue()
    sec, usec, incl, orig = struct.unpack_from("<IIII", data, 24)
    assert (sec, usec, incl, orig) == (5, 250000, 64, 200)
    assert data[40:] == bytes(range(64))


def test_usec_rounding_carries_into_seconds() -> None:
    buf = io.BytesIO()
    w = PcapWriter(buf)
    w.write(b"\0" * 14, 2.9999999)
    sec, usec, _, _ = struct.unpack_from("<IIII", buf.getvalue(), 24)
    assert (sec, usec) == (3, 0)


def test_pcaplink_records_both_directions_on_virtual_time(tmp_path: Path) -> None:
    clock = SimClock(100.0)
    net = SimNetwork(clock, seed=1, delay=0.25, volatile_rx=False)   # the test keeps the frames
    a = net.link("a", MAC_A)
    b = net.link("b", MAC_B)
    path = tmp_path / "a.pcap"
    tap = PcapLink(a, PcapWriter(path), clock=clock.time)
    assert (tap.name, tap.mac, tap.mtu, tap.vnet) == ("a", MAC_A, 1500, False)
    got_a: list = []
    tap.open_reader(got_a.extend)
    b.open_reader(lambda batch: [b.send(MAC_A + MAC_B + b"\x08\x00" + b"reply:" + bytes(f[14:])) for f, _ in batch])
    tap.attach(None)
    tap.send(MAC_B + MAC_A + b"\x08\x00" + b"hello")
    clock.run()
    tap.close()
    assert len(got_a) == 1
    pkts = rdpcap(str(path))
    assert [bytes(p)[14:] for p in pkts] == [b"hello", b"reply:hello"]
    assert [float(p.time) for p in pkts] == pytest.approx([100.0, 100.5], abs=1e-6)
    assert tap.stats.tx_frames == 1
