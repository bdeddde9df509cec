"""Live: CPython's own asyncio network tests (``test.test_asyncio`` of each available interpreter)
against the drop-in loop, in a private network namespace on ``lo`` (tests/live/cpython_asyncio_runner.py
does the work in a subprocess per interpreter).

Asserts: zero failures / errors (tests that cannot apply by design are excluded in the runner's
``EXCLUDED`` with their reason, see docs/asyncio-compat.md), and that the traffic went through the
user-space stack (the stack counters summed over every loop the tests made).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("cpython_asyncio_runner.py")
VENVS = {"3.11": ".venv", "3.12": ".venv-3.12", "3.13": ".venv-3.13"}


def _interpreters() -> list:
    params = []
    for ver, venv in VENVS.items():
        py = ROOT / venv / "bin" / "python"
        if not py.exists() and ver == f"{sys.version_info[0]}.{sys.version_info[1]}":
            # the running interpreter (e.g. tests run from a git worktree without its own venvs)
            py = Path(sys.executable)
        marks = []
        if not py.exists():
            marks.append(pytest.mark.skip(reason=f"no {venv} (PY=python{ver} bash scripts/bootstrap.sh)"))
        else:
            probe = subprocess.run([str(py), "-c", "import test.test_asyncio.test_streams"],
                                   capture_output=True, text=True)
            if probe.returncode != 0:
                marks.append(pytest.mark.skip(reason=f"python{ver} ships no test.test_asyncio: {probe.stderr[-200:]}"))
        params.append(pytest.param(str(py), id=f"py{ver}", marks=marks))
    return params


#: hard limit for one interpreter's run (the runner itself gives each module child 240 s and each
#: test 45 s; a normal run takes 30-60 s with 4 module children in parallel)
RUN_TIMEOUT = 280


def _run_runner(python: str) -> subprocess.CompletedProcess:
    """The runner in its own session; on timeout its whole process group (module children, test
    threads' subprocesses) is killed, so CI can never hang here."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([python, str(RUNNER), "--json", "--jobs", "4"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT), start_new_session=True)
    try:
        out, err = p.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = p.communicate()
        pytest.fail(f"runner exceeded {RUN_TIMEOUT} s (process group killed):\n{err[-5000:]}")
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


@pytest.mark.timeout(RUN_TIMEOUT + 30)
@pytest.mark.parametrize("python", _interpreters())
def test_cpython_asyncio_network_tests(python: str) -> None:
    r = _run_runner(python)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("CPYTHON_ASYNCIO_SUMMARY ")]
    assert lines, f"runner printed no summary (rc={r.returncode}):\n{r.stderr[-5000:]}"
    s = json.loads(lines[-1].split(" ", 1)[1])
    print(json.dumps({k: v for k, v in s.items() if k != "crashed_modules"}, indent=1))
    assert not s["missing_modules"], s["missing_modules"]
    assert not s["crashed_modules"], s["crashed_modules"]
    assert s["hung"] == [], s["hung"]
    assert s["not_run"] == [], s["not_run"]
    assert s["failures"] == [] and s["errors"] == [], (s["failures"], s["errors"], r.stderr[-8000:])
    assert s["unexpected_successes"] == [], s["unexpected_successes"]
    assert s["run"] >= 240 and s["passed"] >= 225, s
    for item in s["excluded"]:
        assert item["reason"], item
    assert len(s["excluded"]) <= 20, s["excluded"]
    # the proof: connections were opened by the user-space stack, both directions (a full run
    # makes ~120 active and ~65 passive opens over ~80 loops on 3.11-3.13)
    assert s["loops_with_stack"] >= 60, s
    assert s["counters"]["ActiveOpens"] >= 90 and s["counters"]["PassiveOpens"] >= 45, s["counters"]
    assert s["counters"]["InSegs"] >= 2000 and s["counters"]["OutSegs"] >= 2000, s["counters"]
    assert r.returncode == 0, r.stderr[-3000:]
