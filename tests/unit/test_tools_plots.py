"""aiotcpstack.tools.pcapread / plots: a synthetic capture (built with wire/ and PcapWriter) is parsed with
the project's parsers and drawn; the graphs exist, are real PNGs and report the points they drew."""
from __future__ import annotations

import os

import pytest

from aiotcpstack.link.pcap import PcapWriter
from aiotcpstack.tools import pcapread
from aiotcpstack.wire.ethernet import ETH_P_IP, build_ethernet
from aiotcpstack.wire.ipv4 import build_ipv4_header
from aiotcpstack.wire.tcp import ACK, FIN, PSH, SYN, TcpHeader, TcpOptions, build_tcp

pytest.importorskip("matplotlib")

from aiotcpstack.tools import plots  # noqa: E402

A_IP, B_IP = bytes([198, 18, 1, 1]), bytes([198, 18, 1, 2])
A_MAC, B_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
A_PORT, B_PORT = 40000, 8080
MSS = 1000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _frame(src_a: bool, hdr: TcpHeader, payload: bytes = b"") -> bytes:
    src, dst = (A_IP, B_IP) if src_a else (B_IP, A_IP)
    smac, dmac = (A_MAC, B_MAC) if src_a else (B_MAC, A_MAC)
    seg = build_tcp(hdr, payload, src, dst)
    return build_ethernet(dmac, smac, ETH_P_IP) + build_ipv4_header(src, dst, 6, len(seg)) + seg


def make_capture(path: str, n_segments: int = 40, lost: int = 10, wscale: int = 2) -> dict:
    """B (a server) sends ``n_segments`` of MSS bytes to A; segment ``lost`` is lost once: A SACKs what
    follows, B retransmits it after three dup ACKs.  1 ms one-way delay, timestamps on."""
    isn_a, isn_b = 1000, 4_294_000_000        # B's sequence numbers wrap during the transfer
    t = 1_700_000_000.0
    frames = []
    ts = [100]

    def opts(**kw):
        ts[0] += 1
        return TcpOptions(timestamp=(ts[0], kw.pop("ecr", 0)), **kw)

    frames.append((t, _frame(True, TcpHeader(A_PORT, B_PORT, isn_a, 0, SYN, 65535,
                                              opts(mss=MSS, wscale=wscale, sack_permitted=True)))))
    t += 0.001
    frames.append((t, _frame(False, TcpHeader(B_PORT, A_PORT, isn_b, isn_a + 1, SYN | ACK, 65535,
                                               opts(mss=MSS, wscale=wscale, sack_permitted=True, ecr=101)))))
    t += 0.001
    frames.append((t, _frame(True, TcpHeader(A_PORT, B_PORT, isn_a + 1, isn_b + 1, ACK, 16000, opts(ecr=102)))))
    base = (isn_b + 1) % 2**32
    received_to = 0          # A's cumulative (relative) ack
    sacked: list[tuple[int, int]] = []
    retransmits = 0
    for i in range(n_segments):
        t += 0.0002
        seq = (base + i * MSS) % 2**32
        frames.append((t, _frame(False, TcpHeader(B_PORT, A_PORT, seq, isn_a + 1, ACK | PSH, 1000, opts(ecr=ts[0]),
                                                   ), b"x" * MSS)))
        if i == lost:
            continue         # A never sees it
        if i > lost and received_to == lost * MSS:
            sacked = [(lost + 1, i + 1)]
            blocks = (((base + (lost + 1) * MSS) % 2**32, (base + (i + 1) * MSS) % 2**32),)
            frames.append((t + 0.001, _frame(True, TcpHeader(A_PORT, B_PORT, isn_a + 1, (base + received_to) % 2**32,
                                                              ACK, 16000, opts(ecr=ts[0], sack_blocks=blocks)))))
            if i == lost + 3:            # third dup ACK: fast retransmit
                t += 0.002
                frames.append((t, _frame(False, TcpHeader(B_PORT, A_PORT, (base + lost * MSS) % 2**32, isn_a + 1,
                                                          ACK, 1000, opts(ecr=ts[0])), b"y" * MSS)))
                retransmits += 1
                received_to = (i + 1) * MSS
                frames.append((t + 0.001, _frame(True, TcpHeader(A_PORT, B_PORT, isn_a + 1,
                                                                  (base + received_to) % 2**32, ACK, 16000,
                                                                  opts(ecr=ts[0])))))
            continue
        received_to = (i + 1) * MSS
        frames.append((t + 0.001, _frame(True, TcpHeader(A_PORT, B_PORT, isn_a + 1, (base + received_to) % 2**32,
                                                          ACK, 16000, opts(ecr=ts[0])))))
    t += 0.002
    fin_seq = (base + n_segments * MSS) % 2**32
    frames.append((t, _frame(False, TcpHeader(B_PORT, A_PORT, fin_seq, isn_a + 1, FIN | ACK, 1000, opts()))))
    frames.sort(key=lambda f: f[0])
    with PcapWriter(path) as w:
        for ts_, fr in frames:
            w.write(fr, ts_)
    return {"frames": len(frames), "retransmits": retransmits, "bytes": (n_segments + retransmits) * MSS,
            "sacked": sacked}


def test_pcapread_parses_with_wire(tmp_path):
    path = str(tmp_path / "x.pcap")
    info = make_capture(path)
    stats: dict[str, int] = {}
    pkts = pcapread.read_tcp(path, stats)
    assert stats["frames"] == info["frames"] == stats["tcp"] and stats["errors"] == 0
    assert sum(p.length for p in pkts) == info["bytes"]
    flow = pcapread.select_flow(pkts)
    assert set(flow) == {("198.18.1.1", A_PORT), ("198.18.1.2", B_PORT)}
    assert pcapread.select_flow(pkts, port=9) is None


def test_pcapread_rejects_pcapng_and_garbage(tmp_path):
    ng = tmp_path / "x.pcapng"
    ng.write_bytes(bytes.fromhex("0a0d0d0a") + b"\0" * 40)
    with pytest.raises(pcapread.PcapFormatError, match="pcapng"):
        pcapread.read_tcp(str(ng))
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"hello world, not a capture")
    with pytest.raises(pcapread.PcapFormatError):
        pcapread.read_tcp(str(bad))


def test_pcapread_snaplen_truncated_frames_keep_lengths(tmp_path):
    full = str(tmp_path / "full.pcap")
    make_capture(full)
    cut = str(tmp_path / "cut.pcap")
    with PcapWriter(cut, snaplen=96) as w:
        for ts, _lt, frame in pcapread.read_frames(full):
            w.write(frame, ts)
    a = [p.length for p in pcapread.read_tcp(full)]
    b = [p.length for p in pcapread.read_tcp(cut)]
    assert a == b


def test_analysis_finds_retransmission_sack_wrap_and_window(tmp_path):
    path = str(tmp_path / "x.pcap")
    info = make_capture(path, n_segments=40, lost=10, wscale=2)
    a = plots.analyse_pcap(path)
    assert a.sender == ("198.18.1.2", B_PORT) and a.receiver == ("198.18.1.1", A_PORT)
    assert a.retransmitted_segments == info["retransmits"] == 1
    re = [s for s in a.segments if s[3]]
    assert re[0][1] == 1 + 10 * MSS                       # relative to the ISN across the 2**32 wrap
    assert max(s[2] for s in a.segments) == 1 + 40 * MSS
    assert a.sacks and all(r > l for _, l, r in a.sacks)
    assert a.wscale == 2 and all(e == ack + (16000 << 2) for _, ack, e in a.acks[1:] if e is not None)
    assert a.acks[-1][1] == 1 + 40 * MSS
    assert a.rtt_data_ack and all(0 < r < 0.01 for _, r in a.rtt_data_ack)
    assert a.rtt_ts_receiver or a.rtt_ts_sender
    assert max(f for _, f in a.inflight) > 0


def _check_png(path: str) -> None:
    assert os.path.exists(path)
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert os.path.getsize(path) > 10_000        # a drawn graph, not an empty canvas


def test_time_sequence_and_cwnd_rtt_graphs(tmp_path):
    path = str(tmp_path / "x.pcap")
    make_capture(path)
    a = plots.analyse_pcap(path)
    tseq = str(tmp_path / "tseq.png")
    n = plots.time_sequence_graph(a, tseq)
    assert n >= len(a.segments) + len(a.acks) > 0
    _check_png(tseq)
    samples = [{"t": a.t0 + i * 0.002, "cwnd": 10_000 + 1000 * i, "ssthresh": 0x7FFFFFFF, "srtt": 0.002,
                "rttvar": 0.001} for i in range(20)]
    cw = str(tmp_path / "cwnd.png")
    m = plots.cwnd_rtt_graph(a, cw, samples=samples)
    assert m >= len(a.inflight) + 40
    _check_png(cw)


def test_plot_pcap_and_trace_cli_on_a_pcap(tmp_path, capsys):
    from aiotcpstack import cli
    path = str(tmp_path / "cap.pcap")
    make_capture(path)
    out = plots.plot_pcap(path, str(tmp_path / "a.png"), str(tmp_path / "b.png"))
    assert out["tseq_points"] > 0 and out["cwnd_points"] > 0
    assert cli.main(["trace", "--pcap", path, "-o", str(tmp_path / "cli")]) == 0
    text = capsys.readouterr().out
    assert "1 retransmitted" in text and "points)" in text
    _check_png(str(tmp_path / "cli-tseq.png"))
    _check_png(str(tmp_path / "cli-cwnd-rtt.png"))


def test_trace_cli_reports_bad_pcap(tmp_path, capsys):
    from aiotcpstack import cli
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"nope")
    assert cli.main(["trace", "--pcap", str(bad)]) == 1
    assert "not a pcap" in capsys.readouterr().err
