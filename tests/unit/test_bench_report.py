"""Statistics, goal evaluation and rendering of the benchmark report (benchmarks/report.py). No root."""
from __future__ import annotations

import io
import json
import os

import pytest

from benchmarks import report
from benchmarks.progress import Progress
from benchmarks.report import GOALS, Goal, Stat


def m(workload: str, impl: str, run: int, value: float | None, offloads: str = "on", loop: str = "uvloop",
      error: str | None = None, **extra: float) -> dict:
    return {"workload": workload, "offloads": offloads, "loop": loop, "impl": impl, "run": run,
            "value": value, "unit": report.METRICS[workload][1], "extra": dict(extra), "error": error}


# --------------------------------------------------------------------------- statistics
def test_median_odd_even() -> None:
    assert report.median([3, 1, 2]) == 2
    assert report.median([4, 1, 3, 2]) == 2.5
    assert report.median([7]) == 7
    with pytest.raises(ValueError):
        report.median([])


def test_summarize_skips_none_and_nan() -> None:
    s = report.summarize([5.0, None, 1.0, float("nan"), 3.0])
    assert s == Stat(median=3.0, min=1.0, max=5.0, n=3)
    assert report.summarize([None, None]) is None
    assert report.summarize([]) is None


def test_ratio() -> None:
    assert report.ratio(2.0, 4.0) == 0.5
    assert report.ratio(None, 4.0) is None
    assert report.ratio(1.0, None) is None
    assert report.ratio(1.0, 0.0) is None


def test_pair_ratios_pairs_by_run_index() -> None:
    kernel = {0: 10.0, 1: 20.0, 2: 40.0}
    ours = {0: 5.0, 2: 40.0, 3: 1.0}          # run 1 failed, run 3 has no kernel partner
    assert report.pair_ratios(kernel, ours) == [0.5, 1.0]


# --------------------------------------------------------------------------- rows
def test_build_rows_median_min_max_and_ratio() -> None:
    ms = [m("bulk_send", "kernel", 0, 10.0), m("bulk_send", "ours", 0, 12.0),
          m("bulk_send", "kernel", 1, 20.0), m("bulk_send", "ours", 1, 10.0),
          m("bulk_send", "kernel", 2, 30.0), m("bulk_send", "ours", 2, 30.0)]
    (row,) = report.build_rows(ms)
    assert row.kernel == Stat(20.0, 10.0, 30.0, 3)
    assert row.ours == Stat(12.0, 10.0, 30.0, 3)
    assert row.ratio == Stat(1.0, 0.5, 1.2, 3)     # pairwise: 1.2, 0.5, 1.0
    assert row.runs == 3 and not row.failed
    (gr,) = row.goals
    assert gr.goal.id == "bulk_send" and gr.met is True and gr.value == 1.0


def test_rows_are_grouped_and_ordered() -> None:
    ms = []
    for wl in ("conn_rate", "bulk_recv", "bulk_send"):
        for off in ("off", "on"):
            for lp in ("uvloop", "asyncio"):
                ms += [m(wl, "kernel", 0, 1.0, off, lp), m(wl, "ours", 0, 1.0, off, lp)]
    keys = [(r.metric, r.offloads, r.loop) for r in report.build_rows(ms)]
    assert keys[:4] == [("bulk_send", "on", "asyncio"), ("bulk_send", "on", "uvloop"),
                        ("bulk_send", "off", "asyncio"), ("bulk_send", "off", "uvloop")]
    assert [k[0] for k in keys[4:]] == ["bulk_recv"] * 4 + ["conn_rate"] * 4


def test_failed_ours_row() -> None:
    ms = [m("bulk_recv", "kernel", 0, 10.0), m("bulk_recv", "ours", 0, None, error="TimeoutError: boom | x")]
    (row,) = report.build_rows(ms)
    assert row.failed and row.ours is None and row.ratio is None
    assert row.ours_errors == ["TimeoutError: boom | x"]
    (gr,) = row.goals
    assert gr.met is False and gr.detail == "FAILED"
    md = report.render_markdown([row])
    assert "FAILED: TimeoutError: boom \\| x" in md      # pipes escaped inside the table
    assert "NOT met" in md


def test_partial_failure_keeps_successful_runs() -> None:
    ms = [m("bulk_recv", "kernel", 0, 10.0), m("bulk_recv", "ours", 0, 8.0),
          m("bulk_recv", "kernel", 1, 10.0), m("bulk_recv", "ours", 1, None, error="reset")]
    (row,) = report.build_rows(ms)
    assert not row.failed and row.ours == Stat(8.0, 8.0, 8.0, 1) and row.ratio.median == pytest.approx(0.8)
    assert "1 error(s)" in report.render_markdown([row])


def test_kernel_failure_makes_goal_unknown() -> None:
    ms = [m("conn_rate", "kernel", 0, None, error="x"), m("conn_rate", "ours", 0, 100.0)]
    (row,) = report.build_rows(ms)
    (gr,) = row.goals
    assert gr.met is None


# --------------------------------------------------------------------------- goals
@pytest.mark.parametrize("metric,off,loop,ids", [
    ("bulk_send", "on", "asyncio", ["bulk_send"]),
    ("bulk_send", "off", "uvloop", ["bulk_send_nooffload"]),
    ("bulk_recv", "on", "uvloop", ["bulk_recv"]),
    ("bulk_recv", "off", "asyncio", ["bulk_recv_nooffload"]),
    ("rr_latency", "on", "uvloop", ["rr_latency"]),
    ("rr_latency", "on", "asyncio", []),
    ("conn_rate", "off", "uvloop", ["conn_rate"]),
    ("conn_rate", "on", "asyncio", []),
    ("idle_conns", "on", "uvloop", []),
    ("idle_conns_total", "off", "asyncio", ["idle_mem"]),
])
def test_goal_applicability(metric: str, off: str, loop: str, ids: list[str]) -> None:
    assert [g.id for g in GOALS if g.applies(metric, off, loop)] == ids


@pytest.mark.parametrize("kind,threshold,ratio_v,ours_v,met", [
    ("ratio_min", 0.7, 0.7, 1.0, True),
    ("ratio_min", 0.7, 0.69, 1.0, False),
    ("ratio_max", 1.3, 1.3, 1.0, True),
    ("ratio_max", 1.3, 1.31, 1.0, False),
    ("abs_max", 10.0, 5.0, 10.0, True),
    ("abs_max", 10.0, 0.1, 10.5, False),
])
def test_goal_thresholds(kind: str, threshold: float, ratio_v: float, ours_v: float, met: bool) -> None:
    g = Goal("g", "goal", "bulk_send", kind, threshold)
    row = report.Row("bulk_send", "on", "uvloop", "x", True, Stat(1, 1, 1, 1), Stat(ours_v, ours_v, ours_v, 1),
                     Stat(ratio_v, ratio_v, ratio_v, 1), [], [], 1)
    assert report.evaluate_goal(g, row).met is met


def test_rr_goal_uses_lower_is_better_ratio() -> None:
    ms = [m("rr_latency", "kernel", 0, 20.0), m("rr_latency", "ours", 0, 25.0)]     # 1.25x: met
    (row,) = report.build_rows(ms)
    assert row.ratio.median == pytest.approx(1.25) and row.goals[0].met is True
    ms = [m("rr_latency", "kernel", 0, 20.0), m("rr_latency", "ours", 0, 30.0)]     # 1.5x: not met
    assert report.build_rows(ms)[0].goals[0].met is False


def test_goal_summary_all_rows_must_meet() -> None:
    ms = [m("bulk_recv", "kernel", 0, 10.0, loop="asyncio"), m("bulk_recv", "ours", 0, 9.0, loop="asyncio"),
          m("bulk_recv", "kernel", 0, 10.0, loop="uvloop"), m("bulk_recv", "ours", 0, 5.0, loop="uvloop")]
    summary = {g["id"]: g for g in report.goal_summary(report.build_rows(ms))}
    assert summary["bulk_recv"]["met"] is False
    assert [r["met"] for r in summary["bulk_recv"]["rows"]] == [True, False]


# --------------------------------------------------------------------------- idle memory (derived)
def test_idle_totals_subtract_the_peers_slab_share() -> None:
    ms = [m("idle_conns", "kernel", 0, 2.0, slab_kib_per_conn=8.0),
          m("idle_conns", "ours", 0, 5.0, slab_kib_per_conn=7.0)]
    rows = {r.metric: r for r in report.build_rows(ms)}
    assert rows["idle_conns"].ours.median == 5.0
    total = rows["idle_conns_total"]
    assert total.kernel.median == pytest.approx(2.0 + 4.0)         # rss + half the slab (the client's half)
    assert total.ours.median == pytest.approx(5.0 + (7.0 - 4.0))   # rss + slab minus the peer's half
    assert total.ratio.median == pytest.approx(8.0 / 6.0)
    (gr,) = total.goals
    assert gr.goal.id == "idle_mem" and gr.met is True and gr.value == pytest.approx(8.0)


def test_idle_total_never_negative_kernel_share_and_fallback_to_cell_median() -> None:
    ms = [m("idle_conns", "kernel", 0, 2.0, slab_kib_per_conn=8.0),
          m("idle_conns", "kernel", 1, None, error="x"),
          m("idle_conns", "ours", 1, 11.0, slab_kib_per_conn=1.0)]       # less slab than the peer's half
    total = [x for x in report.derive_idle_totals(ms) if x["impl"] == "ours"][0]
    assert total["value"] == pytest.approx(11.0)


# --------------------------------------------------------------------------- rendering
def _sample_rows() -> tuple[list[report.Row], list[dict]]:
    ms = [m("bulk_send", "kernel", 0, 10.0), m("bulk_send", "ours", 0, 5.0),
          m("bulk_send", "kernel", 1, 12.0), m("bulk_send", "ours", 1, 6.0),
          m("rr_latency", "kernel", 0, 20.0, loop="uvloop"), m("rr_latency", "ours", 0, None, error="timed out"),
          m("idle_conns", "kernel", 0, 2.0, slab_kib_per_conn=8.0),
          m("idle_conns", "ours", 0, 5.0, slab_kib_per_conn=7.0)]
    return report.build_rows(ms), ms


def test_markdown_table() -> None:
    rows, _ = _sample_rows()
    md = report.render_markdown(rows, {"title": "T", "date": "d", "runs": 2, "notes": ["a note"]})
    lines = md.splitlines()
    assert lines[0] == "## T"
    header = next(i for i, line in enumerate(lines) if line.startswith("| workload"))
    assert lines[header + 1].startswith("|---")
    table = [line for line in lines[header + 2:] if line.startswith("|")]
    assert len(table) == len(rows)
    assert all(line.count("|") - line.count("\\|") == 9 for line in table)
    assert "| bulk_send ↑ | on | uvloop | 11.0 Gbit/s (10.0–12.0) | 5.50 Gbit/s (5.00–6.00) | **0.50x** |" in md
    assert "FAILED: timed out" in md
    assert "### Goals" in md and "[ ] NOT met" in md and "[x] met" in md
    assert "- a note" in md


def test_json_roundtrip() -> None:
    rows, ms = _sample_rows()
    doc = json.loads(report.to_json(rows, ms, {"date": "d"}))
    assert doc["meta"] == {"date": "d"}
    assert doc["measurements"] == ms
    by = {(r["metric"], r["loop"]): r for r in doc["rows"]}
    bs = by[("bulk_send", "uvloop")]
    assert bs["ratio"] == {"median": 0.5, "min": 0.5, "max": 0.5, "n": 2}
    assert bs["kernel"]["median"] == 11.0 and bs["goals"][0]["met"] is False
    assert by[("rr_latency", "uvloop")]["failed"] is True
    assert {g["id"] for g in doc["goals"]} == {"bulk_send", "rr_latency", "idle_mem"}


def test_png_written_and_non_empty(tmp_path: "os.PathLike[str]") -> None:
    pytest.importorskip("matplotlib")
    rows, _ = _sample_rows()
    path = os.path.join(tmp_path, "ratios.png")
    report.plot_png(rows, path, title="test")
    with open(path, "rb") as f:
        head = f.read(8)
    assert head == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 2000


def test_png_with_no_ratio_at_all(tmp_path: "os.PathLike[str]") -> None:
    pytest.importorskip("matplotlib")
    rows = report.build_rows([m("conn_rate", "kernel", 0, 10.0), m("conn_rate", "ours", 0, None, error="x")])
    path = os.path.join(tmp_path, "r.png")
    report.plot_png(rows, path)
    assert os.path.getsize(path) > 1000


def test_fmt() -> None:
    assert report.fmt_stat(None) == "-"
    assert report.fmt_stat(Stat(1234.5, 1000, 2000, 3), "conn/s") == "1,234 conn/s (1,000–2,000)"
    assert report.fmt_stat(Stat(0.5, 0.5, 0.5, 1), "x") == "0.500 x"
    assert report.fmt_ratio(Stat(0.5, 0.4, 0.6, 3)) == "**0.50x** (0.40–0.60)"


# --------------------------------------------------------------------------- progress bar
def test_progress_bar_non_tty_and_tty() -> None:
    out = io.StringIO()
    p = Progress(4, stream=out, width=8, tty=False)
    p.start("a")                 # nothing on a non-terminal
    p.step("a done")
    p.step("b done", n=3)
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[##......] 1/4") and lines[0].endswith("a done")
    assert lines[1].startswith("[########] 4/4")
    out = io.StringIO()
    p = Progress(2, stream=out, width=4, tty=True)
    p.start("x")
    p.note("hello")
    p.step()
    p.close()
    text = out.getvalue()
    assert "\r[" in text and "hello\n" in text and text.endswith("\n")


def test_cpu_ratio_pairs_cpu_seconds_by_run_and_is_rendered() -> None:
    ms = [m("bulk_send", "kernel", 0, 10.0, cpu_seconds=0.10), m("bulk_send", "ours", 0, 5.0, cpu_seconds=0.30),
          m("bulk_send", "kernel", 1, 10.0, cpu_seconds=0.20), m("bulk_send", "ours", 1, 5.0, cpu_seconds=0.20),
          m("bulk_send", "kernel", 2, 10.0), m("bulk_send", "ours", 2, 5.0, cpu_seconds=9.0)]   # no pair
    (row,) = report.build_rows(ms)
    c = row.cpu_ratio
    assert c is not None and c.n == 2
    assert (c.median, c.min, c.max) == pytest.approx((2.0, 1.0, 3.0))
    assert row.as_dict()["cpu_ratio"]["median"] == pytest.approx(2.0)
    md = report.render_markdown([row])
    assert "CPU ours ÷ kernel" in md and "2.00x" in md
    (row2,) = report.build_rows([m("conn_rate", "kernel", 0, 10.0), m("conn_rate", "ours", 0, 5.0)])
    assert row2.cpu_ratio is None and "| — |" in report.render_markdown([row2])
    rows3 = report.build_rows([m("idle_conns", "kernel", 0, 2.0, cpu_seconds=1.0),
                               m("idle_conns", "ours", 0, 4.0, cpu_seconds=3.0)])
    assert rows3 and all(r.cpu_ratio is None for r in rows3)   # memory: its CPU time is not the work
