"""aiotcpstack.tools.control: the JSON protocol over a real unix socket, with a fake stack (no root)."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import stat

import pytest

from aiotcpstack.tools import control


class FakeStack:
    interface = "ats-a0"
    netns = "ns-x"
    dedicated = False
    addresses = ["198.18.0.1"]

    def __init__(self) -> None:
        self.counters = {"InSegs": 5, "ActiveOpens": 1, "TCPFastRetrans": 0}
        self.conns = [{"state": "ESTABLISHED", "local": ("198.18.0.1", 40000), "remote": ("198.18.0.2", 8080),
                       "srtt": 0.001, "rttvar": 0.0005, "rto": 0.2, "cwnd": 14480, "ssthresh": 0x7FFFFFFF,
                       "mss": 1448, "wscale": (7, 7), "raw": b"\x01\x02"}]

    def connections(self):
        return [dict(c) for c in self.conns]


@pytest.fixture
def rundir(tmp_path, monkeypatch):
    d = tmp_path / "run"
    monkeypatch.setenv("AIOTCPSTACK_RUN_DIR", str(d))
    return d


async def _in_thread(fn, *a):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *a)


async def test_round_trip_default_path_permissions_and_cleanup(rundir):
    stack = FakeStack()
    server = await control.start_control(stack)
    try:
        assert server.path == str(rundir / f"{os.getpid()}.sock")
        assert stat.S_IMODE(os.stat(rundir).st_mode) == 0o700
        st = os.stat(server.path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        # the client is synchronous (CLI): run it off the loop that serves
        conns = await _in_thread(control.query, server.path, "connections")
        assert conns[0]["state"] == "ESTABLISHED"
        assert conns[0]["local"] == ["198.18.0.1", 40000] and conns[0]["wscale"] == [7, 7]
        assert conns[0]["raw"] == "0102"
        counters = await _in_thread(control.query, server.path, "counters")
        assert counters == stack.counters
        stack.counters["InSegs"] = 9                        # live values, not a copy taken at start
        many = await _in_thread(control.query_many, server.path, ["counters", "info", "ping"])
        assert many["counters"]["InSegs"] == 9 and many["ping"] == "pong"
        assert many["info"]["pid"] == os.getpid() and many["info"]["interface"] == "ats-a0"
        assert many["info"]["netns"] == "ns-x" and many["info"]["addresses"] == ["198.18.0.1"]
        assert control.list_sockets(os.getpid()) == [(os.getpid(), server.path)]
        assert control.resolve_targets(pid=os.getpid()) == [(os.getpid(), server.path)]
    finally:
        server.close()
        await server.wait_closed()
    assert not os.path.exists(server.path)
    assert control.list_sockets(os.getpid()) == []


async def test_errors_and_raw_protocol(rundir):
    stack = FakeStack()
    async with control.ControlServer(stack) as server:
        with pytest.raises(control.ControlError, match="unknown cmd"):
            await _in_thread(control.query, server.path, "reboot")

        def raw() -> list[dict]:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(server.path)
            s.sendall(b'not json\n["list"]\n{"cmd": "counters"}')     # last one ends with EOF, no newline
            s.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.close()
            return [json.loads(line) for line in data.splitlines()]

        replies = await _in_thread(raw)
        assert [r["ok"] for r in replies] == [False, False, True]
        assert replies[2]["result"]["InSegs"] == 5

        def broken():
            raise RuntimeError("boom")
        stack.connections = broken
        with pytest.raises(control.ControlError, match="boom"):
            await _in_thread(control.query, server.path, "connections")
        assert (await _in_thread(control.query, server.path, "ping")) == "pong"     # still serving
    assert not os.path.exists(server.path)


async def test_second_server_in_same_process_and_stale_sweep(rundir):
    rundir.mkdir(mode=0o700)
    # a socket file left by a dead process is swept; a dead pid's name never looks alive
    dead = rundir / "999999999.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(dead))
    s.close()
    a = await control.start_control(FakeStack())
    b = await control.start_control(FakeStack())
    try:
        assert not dead.exists()
        assert a.path.endswith(f"{os.getpid()}.sock") and b.path.endswith(f"{os.getpid()}-1.sock")
        assert [p for _, p in control.list_sockets(os.getpid())] == sorted([a.path, b.path])
    finally:
        a.close()
        b.close()


async def test_explicit_path_in_use_and_stale(rundir, tmp_path):
    path = str(tmp_path / "sub" / "ctl.sock")
    a = await control.start_control(FakeStack(), path)
    try:
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        with pytest.raises(OSError, match="in use"):
            await control.start_control(FakeStack(), path)
    finally:
        a.close()
    # a stale socket file at an explicit path is replaced
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()
    b = await control.start_control(FakeStack(), path)
    assert (await _in_thread(control.query, path, "ping")) == "pong"
    b.close()
    assert not os.path.exists(path)


def test_client_errors_are_clear(tmp_path):
    with pytest.raises(control.ControlError, match="no control socket"):
        control.query(str(tmp_path / "missing.sock"), "ping")
    p = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(p))
    s.close()
    with pytest.raises(control.ControlError, match="cannot connect"):
        control.query(str(p), "ping")
