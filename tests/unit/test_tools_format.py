"""ss / nstat formatting from canned snapshots; the progress bar's rendering."""
from __future__ import annotations

import io
import types

from aiotcpstack.tools import nstat, ss
from aiotcpstack.tools.progress import Progress, fmt_bytes

SNAP = {
    "state": "ESTABLISHED", "local": ["198.18.7.1", 40312], "remote": ["198.18.7.2", 8080],
    "snd_una": 1, "snd_nxt": 1, "rcv_nxt": 5, "snd_wnd": 64256, "rcv_wnd": 65535,
    "srtt": 0.000412, "rttvar": 0.000206, "rto": 0.204, "cwnd": 14480, "ssthresh": 0x7FFFFFFF,
    "mss": 1448, "rcv_mss": 1448, "retransmits": 3, "bytes_acked": 1, "bytes_received": 1048576,
    "send_buffer": 10, "unread": 20, "rcvbuf": 131072, "ca_state": "open", "wscale": [7, 7],
    "timestamps": True, "sack": True, "pid": 1234,
}


def test_ss_table_and_detail_line():
    v6 = dict(SNAP, state="TIME_WAIT", local=["2001:2::1", 443, 0, 0], remote=["2001:2::2", 50000, 0, 0],
              ssthresh=28960, srtt=0.0, rttvar=0.0, ca_state="recovery")
    text = ss.format_connections([SNAP, v6], numeric=True)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["State", "Recv-Q", "Send-Q"]
    assert "Local Address:Port" in lines[0] and "Peer Address:Port" in lines[0]
    row = lines[1].split()
    assert row == ["ESTAB", "20", "10", "198.18.7.1:40312", "198.18.7.2:8080"]
    detail = lines[2]
    assert detail.startswith("\t ")
    for part in ("ts", "sack", "wscale:7,7", "rto:204", "rtt:0.412/0.206", "mss:1448", "cwnd:10",
                 "bytes_acked:1", "bytes_received:1048576", "retrans:0/3", "pid:1234"):
        assert part in detail.split(), part
    assert "ssthresh" not in detail                  # "infinite": omitted like ss does
    assert lines[3].split()[:1] == ["TIME-WAIT"]
    assert "[2001:2::1]:443" in lines[3] and "[2001:2::2]:50000" in lines[3]
    assert "ssthresh:20" in lines[4] and "rtt:0/0" in lines[4] and "ca_state:recovery" in lines[4]


def test_ss_service_names_without_numeric_and_no_info():
    text = ss.format_connections([SNAP], numeric=False, info=False)
    assert "198.18.7.2:http-alt" in text or "198.18.7.2:8080" in text     # depends on /etc/services
    assert len(text.splitlines()) == 2


def test_ss_all_states_have_ss_names():
    for state in ("ESTABLISHED", "SYN_SENT", "SYN_RECEIVED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT", "CLOSED",
                  "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING"):
        assert state in ss.SS_STATE


def test_ss_main_without_stacks(tmp_path, monkeypatch):
    monkeypatch.setenv("AIOTCPSTACK_RUN_DIR", str(tmp_path))
    err = io.StringIO()
    args = types.SimpleNamespace(pid=None, socket=None, numeric=True, no_info=False, state=None, json=False,
                                 verbose_header=False)
    assert ss.main(args, out=io.StringIO(), err=err) == 1
    assert "control=True" in err.getvalue()


def test_nstat_names_and_layout():
    counters = {"InSegs": 12, "ActiveOpens": 1, "TCPFastRetrans": 0, "IpInReceives": 30, "ArpInReplies": 1,
                "DelayedACKs": 4, "IcmpInMsgs": 0, "LinkInFrames": 31}
    assert nstat.nstat_name("InSegs") == "TcpInSegs"
    assert nstat.nstat_name("TCPFastRetrans") == "TcpExtTCPFastRetrans"
    assert nstat.nstat_name("DelayedACKs") == "TcpExtDelayedACKs"
    assert nstat.nstat_name("IpInReceives") == "IpInReceives"
    text = nstat.format_counters(counters, header="#aiotcpstack pid 1")
    lines = text.splitlines()
    assert lines[0] == "#aiotcpstack pid 1"
    names = [line.split()[0] for line in lines[1:]]
    assert names == ["IpInReceives", "TcpActiveOpens", "TcpInSegs", "TcpExtDelayedACKs", "ArpInReplies",
                     "LinkInFrames"]                       # nstat's group order, zeros hidden
    assert lines[3] == f"{'TcpInSegs':<32}12"
    z = nstat.format_counters(counters, zeros=True)
    assert "TcpExtTCPFastRetrans" in z and "IcmpInMsgs" in z
    raw = nstat.format_counters(counters, raw_names=True)
    assert "InSegs" in raw.split() and "TcpInSegs" not in raw
    only = nstat.format_counters(counters, zeros=True, patterns=["TcpExt"])
    assert {line.split()[0] for line in only.splitlines()} == {"TcpExtTCPFastRetrans", "TcpExtDelayedACKs"}
    glob = nstat.format_counters(counters, patterns=["*InSegs"])
    assert glob.split() == ["TcpInSegs", "12"]


async def test_nstat_and_ss_main_through_a_control_socket(tmp_path, monkeypatch):
    import asyncio
    import os

    from aiotcpstack.tools import control
    monkeypatch.setenv("AIOTCPSTACK_RUN_DIR", str(tmp_path / "run"))

    class Fake:
        interface, netns, dedicated, addresses = "ifx", None, False, ["198.18.7.1"]
        counters = {"InSegs": 7, "OutSegs": 0}

        def connections(self):
            return [dict(SNAP)]

    server = await control.start_control(Fake())
    loop = asyncio.get_running_loop()
    try:
        args = types.SimpleNamespace(pid=os.getpid(), socket=None, zeros=False, raw_names=False, patterns=[],
                                     delta=False, no_update=False, json=False)
        out = io.StringIO()
        assert await loop.run_in_executor(None, lambda: nstat.main(args, out=out, err=io.StringIO())) == 0
        assert "TcpInSegs" in out.getvalue() and "TcpOutSegs" not in out.getvalue()
        # delta mode: first run shows everything since zero, the second only the change
        args.delta = True
        out = io.StringIO()
        await loop.run_in_executor(None, lambda: nstat.main(args, out=out, err=io.StringIO()))
        assert f"{'TcpInSegs':<32}7" in out.getvalue()
        Fake.counters["InSegs"] = 10
        out = io.StringIO()
        await loop.run_in_executor(None, lambda: nstat.main(args, out=out, err=io.StringIO()))
        assert f"{'TcpInSegs':<32}3" in out.getvalue()
        sargs = types.SimpleNamespace(pid=None, socket=server.path, numeric=True, no_info=False, state=["ESTAB"],
                                      json=False, verbose_header=True)
        out = io.StringIO()
        assert await loop.run_in_executor(None, lambda: ss.main(sargs, out=out, err=io.StringIO())) == 0
        assert "ESTAB" in out.getvalue() and "# pid" in out.getvalue()
        sargs.state = ["TIME-WAIT"]
        out = io.StringIO()
        await loop.run_in_executor(None, lambda: ss.main(sargs, out=out, err=io.StringIO()))
        assert "ESTAB " not in out.getvalue()
    finally:
        server.close()


def test_progress_rendering_and_non_tty_quiet():
    buf = io.StringIO()
    p = Progress(8 * 1024 * 1024, "fetch", stream=buf)     # not a tty: nothing while running
    p.update(4 * 1024 * 1024)
    assert buf.getvalue() == ""
    line = p.render()
    assert line.startswith("fetch  [") and " 50%" in line and "/8.0 MiB" in line and "Mbit/s" in line
    p.close()
    assert buf.getvalue() == ""                              # auto-disabled off a terminal
    forced = io.StringIO()
    q = Progress(100, "x", stream=forced, enabled=True, unit="")
    q.update(100)
    q.close()
    assert forced.getvalue().count("\n") == 1 and "100%" in forced.getvalue()
    assert fmt_bytes(512) == "512 B" and fmt_bytes(1536) == "1.5 KiB"
