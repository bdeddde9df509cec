"""The ``aiotcpstack`` command: --help of every subcommand exits 0 (in-process and as ``python -m``)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from aiotcpstack import cli

COMMANDS = [[], ["demo"], ["lab"], ["lab", "up"], ["lab", "down"], ["lab", "status"], ["ss"], ["nstat"],
            ["trace"], ["bench"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_exits_zero(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        rc = cli.main(cmd + ["--help"])
        raise SystemExit(rc)             # bench handles --help itself and returns
    assert exc.value.code in (0, None)
    out = capsys.readouterr().out
    assert "usage:" in out


def test_python_dash_m_help():
    r = subprocess.run([sys.executable, "-m", "aiotcpstack", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for name in ("demo", "lab", "ss", "nstat", "trace", "bench"):
        assert name in r.stdout
    assert "getLogger('aiotcpstack')" in r.stdout


def test_verbose_before_and_after_subcommand():
    p = cli.build_parser()
    assert p.parse_args(["-vv", "ss"]).verbose == 2
    assert p.parse_args(["ss", "-v"]).verbose == 1
    assert p.parse_args(["lab", "status", "-v"]).verbose == 1
    assert p.parse_args(["ss"]).verbose == 0


def test_bench_passes_arguments_through(monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "_find_benchmarks_main", lambda: lambda argv: seen.append(argv) or 0)
    assert cli.main(["bench", "--quick", "--workloads", "bulk_send"]) == 0
    assert seen == [["--quick", "--workloads", "bulk_send"]]


def test_bench_missing_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_find_benchmarks_main", lambda: None)
    assert cli.main(["bench"]) == 2
    assert "benchmarks/run.py is missing" in capsys.readouterr().err
    assert cli.main(["bench", "--help"]) == 0


def test_lab_and_trace_need_root_message(monkeypatch, capsys):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert cli.main(["lab", "up"]) == 2
    assert "needs root" in capsys.readouterr().err
    assert cli.main(["trace", "--size", "1"]) == 2
    assert "needs root" in capsys.readouterr().err
