"""Statistics, goals and rendering (Markdown, JSON, PNG) for the benchmark results.

Pure functions over plain data, no root, no network: unit-tested in ``tests/unit/test_bench_report.py``.

A *measurement* is one run of one workload on one implementation::

    {"workload": "bulk_send", "offloads": "on", "loop": "uvloop", "impl": "kernel" | "ours",
     "run": 0, "value": 12.3 | None, "unit": "Gbit/s", "extra": {...}, "error": None | "..."}

Rows group measurements by (metric, offloads, loop).  Runs are interleaved (kernel run i, then ours
run i), so the ratio is computed per pair: ``ratio_i = ours_i / kernel_i``; a row reports the median
of the pairwise ratios with their min-max, and each side's median [min-max].
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Iterable

# metric -> (title, unit, higher is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "bulk_send": ("bulk send (ours -> kernel)", "Gbit/s", True),
    "bulk_recv": ("bulk receive (kernel -> ours)", "Gbit/s", True),
    "rr_latency": ("1-byte request/response, median per round trip", "us", False),
    "conn_rate": ("connect + request + response + close", "conn/s", True),
    "idle_conns": ("idle connection memory, user RSS only", "KiB/conn", False),
    "idle_conns_total": ("idle connection memory, RSS + kernel slab share", "KiB/conn", False),
}
METRIC_ORDER = list(METRICS)


@dataclasses.dataclass(frozen=True)
class Goal:
    id: str
    text: str
    metric: str
    kind: str                  # "ratio_min" | "ratio_max" | "abs_max" (ours' median value)
    threshold: float
    offloads: str = "any"      # "on" | "off" | "any"
    loop: str = "any"          # "asyncio" | "uvloop" | "any"

    def applies(self, metric: str, offloads: str, loop: str) -> bool:
        return (metric == self.metric and self.offloads in ("any", offloads)
                and self.loop in ("any", loop))


GOALS: list[Goal] = [
    Goal("bulk_send", "bulk send >= 1.0x kernel (offloads on)", "bulk_send", "ratio_min", 1.0, offloads="on"),
    Goal("bulk_recv", "bulk receive >= 0.7x kernel (offloads on)", "bulk_recv", "ratio_min", 0.7, offloads="on"),
    Goal("bulk_send_nooffload", "bulk send >= 0.25x kernel (offloads off)", "bulk_send", "ratio_min", 0.25,
         offloads="off"),
    Goal("bulk_recv_nooffload", "bulk receive >= 0.25x kernel (offloads off)", "bulk_recv", "ratio_min", 0.25,
         offloads="off"),
    Goal("rr_latency", "RR latency <= 1.3x kernel (uvloop)", "rr_latency", "ratio_max", 1.3, loop="uvloop"),
    Goal("conn_rate", "conn/s >= 0.7x kernel (uvloop)", "conn_rate", "ratio_min", 0.7, loop="uvloop"),
    Goal("idle_mem", "<= 10 KiB per idle connection (RSS + kernel slab share)", "idle_conns_total", "abs_max", 10.0),
]


# --------------------------------------------------------------------------- statistics
@dataclasses.dataclass(frozen=True)
class Stat:
    median: float
    min: float
    max: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def median(values: Iterable[float]) -> float:
    s = sorted(values)
    if not s:
        raise ValueError("median of no values")
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def summarize(values: Iterable[float | None]) -> Stat | None:
    """median / min / max over the values that are not None (None when there are none)."""
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return None
    return Stat(median(v), min(v), max(v), len(v))


def ratio(ours: float | None, kernel: float | None) -> float | None:
    """``ours / kernel``; None when either is missing or the kernel value is not positive."""
    if ours is None or kernel is None or kernel <= 0:
        return None
    return ours / kernel


def pair_ratios(kernel: dict[int, float | None], ours: dict[int, float | None]) -> list[float]:
    """Ratios of runs measured in the same round (same run index), in run order."""
    out = []
    for run in sorted(set(kernel) & set(ours)):
        r = ratio(ours[run], kernel[run])
        if r is not None:
            out.append(r)
    return out


# --------------------------------------------------------------------------- derived metrics
def derive_idle_totals(measurements: list[dict]) -> list[dict]:
    """``idle_conns_total`` measurements from ``idle_conns`` ones.

    The app measures its own VmRSS delta (``value``) and the machine-wide Slab delta (``extra.
    slab_kib_per_conn``), which includes the *peer's* kernel sockets too (they are made in the same
    interval).  Kernel case: both ends are kernel sockets of the same kind, so the client's share is
    half: ``total = rss + slab / 2``.  Ours: the peer's half is the same as in the kernel run of the
    same round, the rest (our port-reservation sockets, nft set elements, ...) is ours:
    ``total = rss + max(0, slab - kernel_slab / 2)``.
    """
    idle = [m for m in measurements if m["workload"] == "idle_conns"]
    kernel_slab: dict[tuple, float] = {}
    for m in idle:
        if m["impl"] == "kernel" and m.get("value") is not None:
            kernel_slab[(m["offloads"], m["loop"], m["run"])] = m.get("extra", {}).get("slab_kib_per_conn", 0.0)
    by_cell: dict[tuple, list[float]] = {}
    for (off, lp, _run), s in kernel_slab.items():
        by_cell.setdefault((off, lp), []).append(s)
    out = []
    for m in idle:
        d = dict(m, workload="idle_conns_total", extra={})
        if m.get("value") is not None:
            slab = m.get("extra", {}).get("slab_kib_per_conn", 0.0)
            if m["impl"] == "kernel":
                d["value"] = m["value"] + slab / 2
                d["extra"] = {"kernel_share_kib": slab / 2}
            else:
                ks = kernel_slab.get((m["offloads"], m["loop"], m["run"]))
                if ks is None and by_cell.get((m["offloads"], m["loop"])):
                    ks = median(by_cell[(m["offloads"], m["loop"])])
                if ks is None:
                    d["value"] = None
                    d["error"] = "no kernel run to subtract the peer's slab share"
                else:
                    d["value"] = m["value"] + max(0.0, slab - ks / 2)
                    d["extra"] = {"kernel_share_kib": max(0.0, slab - ks / 2)}
        out.append(d)
    return out


# --------------------------------------------------------------------------- rows and goals
@dataclasses.dataclass
class GoalResult:
    goal: Goal
    met: bool | None            # None: cannot tell (the kernel side failed)
    value: float | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.goal.id, "text": self.goal.text, "kind": self.goal.kind,
                "threshold": self.goal.threshold, "met": self.met, "value": self.value, "detail": self.detail}


@dataclasses.dataclass
class Row:
    metric: str
    offloads: str
    loop: str
    unit: str
    higher_is_better: bool
    kernel: Stat | None
    ours: Stat | None
    ratio: Stat | None
    kernel_errors: list[str]
    ours_errors: list[str]
    runs: int
    goals: list[GoalResult] = dataclasses.field(default_factory=list)
    #: ours ÷ kernel of the app process's CPU time for the same work (``extra.cpu_seconds``),
    #: median of the per-run pairs: on a shared machine steadier than the rates themselves
    cpu_ratio: Stat | None = None

    @property
    def title(self) -> str:
        return METRICS.get(self.metric, (self.metric, "", True))[0]

    @property
    def failed(self) -> bool:
        return self.ours is None and bool(self.ours_errors)

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "title": self.title, "offloads": self.offloads, "loop": self.loop,
                "unit": self.unit, "higher_is_better": self.higher_is_better,
                "kernel": self.kernel.as_dict() if self.kernel else None,
                "ours": self.ours.as_dict() if self.ours else None,
                "ratio": self.ratio.as_dict() if self.ratio else None,
                "cpu_ratio": self.cpu_ratio.as_dict() if self.cpu_ratio else None,
                "kernel_errors": self.kernel_errors, "ours_errors": self.ours_errors, "runs": self.runs,
                "failed": self.failed, "goals": [g.as_dict() for g in self.goals]}


def evaluate_goal(goal: Goal, row: Row) -> GoalResult:
    if goal.kind == "abs_max":
        if row.ours is None:
            return GoalResult(goal, False, None, "FAILED" if row.ours_errors else "not measured")
        v = row.ours.median
        return GoalResult(goal, v <= goal.threshold, v, f"{_num(v)} {row.unit} <= {_num(goal.threshold)}")
    if row.ours is None and row.ours_errors:
        return GoalResult(goal, False, None, "FAILED")
    if row.ratio is None:
        return GoalResult(goal, None, None, "no ratio (kernel side failed or missing)")
    r = row.ratio.median
    if goal.kind == "ratio_min":
        return GoalResult(goal, r >= goal.threshold, r, f"{r:.2f}x >= {goal.threshold:g}x")
    if goal.kind == "ratio_max":
        return GoalResult(goal, r <= goal.threshold, r, f"{r:.2f}x <= {goal.threshold:g}x")
    raise ValueError(f"unknown goal kind {goal.kind!r}")


def _first_errors(ms: list[dict]) -> list[str]:
    out: list[str] = []
    for m in ms:
        e = m.get("error")
        if e and e not in out:
            out.append(e)
    return out


#: workloads whose ``cpu_seconds`` is the cost of the measured work (idle_conns measures memory:
#: its CPU time is only the connects, not comparable work)
CPU_METRICS = ("bulk_send", "bulk_recv", "rr_latency", "conn_rate")


def build_rows(measurements: list[dict], goals: list[Goal] | None = None,
               derive: bool = True) -> list[Row]:
    goals = GOALS if goals is None else goals
    ms = list(measurements)
    if derive:
        ms += derive_idle_totals(ms)
    cells: dict[tuple[str, str, str], list[dict]] = {}
    for m in ms:
        cells.setdefault((m["workload"], m["offloads"], m["loop"]), []).append(m)

    def order(key: tuple[str, str, str]) -> tuple:
        metric, off, lp = key
        mi = METRIC_ORDER.index(metric) if metric in METRIC_ORDER else len(METRIC_ORDER)
        return (mi, metric, 0 if off == "on" else 1, off, lp)

    rows = []
    for key in sorted(cells, key=order):
        metric, off, lp = key
        group = cells[key]
        k = [m for m in group if m["impl"] == "kernel"]
        o = [m for m in group if m["impl"] != "kernel"]
        title, unit, hib = METRICS.get(metric, (metric, "", True))
        unit = next((m.get("unit") for m in group if m.get("unit")), unit)
        kv = {m["run"]: m.get("value") for m in k if m.get("value") is not None}
        ov = {m["run"]: m.get("value") for m in o if m.get("value") is not None}
        row = Row(metric, off, lp, unit, hib, summarize(kv.values()), summarize(ov.values()),
                  summarize(pair_ratios(kv, ov)), _first_errors(k), _first_errors(o),
                  runs=max(len({m["run"] for m in k}), len({m["run"] for m in o})))
        kc = {m["run"]: (m.get("extra") or {}).get("cpu_seconds") for m in k if m.get("value") is not None
              and metric in CPU_METRICS}
        oc = {m["run"]: (m.get("extra") or {}).get("cpu_seconds") for m in o if m.get("value") is not None}
        row.cpu_ratio = summarize(pair_ratios({r: v for r, v in kc.items() if v is not None},
                                              {r: v for r, v in oc.items() if v is not None}))
        row.goals = [evaluate_goal(g, row) for g in goals if g.applies(metric, off, lp)]
        rows.append(row)
    return rows


def goal_summary(rows: list[Row]) -> list[dict[str, Any]]:
    """One entry per goal: met when every row it applies to meets it."""
    out = []
    for g in GOALS:
        results = [(r, gr) for r in rows for gr in r.goals if gr.goal.id == g.id]
        if not results:
            continue
        mets = [gr.met for _, gr in results]
        met: bool | None = False if False in mets else (None if None in mets else True)
        out.append({"id": g.id, "text": g.text, "met": met,
                    "rows": [{"offloads": r.offloads, "loop": r.loop, "met": gr.met, "detail": gr.detail}
                             for r, gr in results]})
    return out


# --------------------------------------------------------------------------- rendering
def _num(v: float) -> str:
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_stat(s: Stat | None, unit: str = "") -> str:
    if s is None:
        return "-"
    u = f" {unit}" if unit else ""
    if s.n == 1 or s.min == s.max:
        return f"{_num(s.median)}{u}"
    return f"{_num(s.median)}{u} ({_num(s.min)}–{_num(s.max)})"


def fmt_ratio(s: Stat | None) -> str:
    if s is None:
        return "-"
    if s.n == 1 or s.min == s.max:
        return f"**{s.median:.2f}x**"
    return f"**{s.median:.2f}x** ({s.min:.2f}–{s.max:.2f})"


def _md_escape(text: str, limit: int = 160) -> str:
    t = " ".join(text.split())
    if len(t) > limit:
        t = t[: limit - 1] + "…"
    return t.replace("|", "\\|")


def _goal_cell(row: Row) -> str:
    parts = []
    for gr in row.goals:
        mark = {True: "met", False: "NOT met", None: "?"}[gr.met]
        parts.append(f"{gr.goal.text.split(' (')[0]}: {mark}")
    return "; ".join(parts)


def render_markdown(rows: list[Row], meta: dict[str, Any] | None = None) -> str:
    meta = meta or {}
    lines = []
    title = meta.get("title", "aiotcpstack vs kernel TCP")
    lines.append(f"## {title}")
    lines.append("")
    info = []
    for key in ("date", "ours", "mode", "runs", "kernel", "python", "cpus", "loadavg", "quick"):
        if key in meta:
            info.append(f"{key}: {meta[key]}")
    if info:
        lines.append(", ".join(info))
        lines.append("")
    lines.append("Ratios are ours ÷ kernel: median of per-run pairs (min–max). "
                 "Values: median (min–max) over runs. CPU: ours ÷ kernel of the app process's CPU "
                 "time (user + system) for the same work, per-run pairs; the kernel's TCP work "
                 "done in softirq on the other CPU is not in its app's time.")
    lines.append("")
    lines.append("| workload | offloads | loop | kernel | ours | ours ÷ kernel | CPU ours ÷ kernel | goal |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ours = fmt_stat(r.ours, r.unit)
        if r.failed:
            ours = "FAILED: " + _md_escape(r.ours_errors[0])
        elif r.ours_errors:
            ours += f" ({len(r.ours_errors)} error(s): {_md_escape(r.ours_errors[0], 80)})"
        kern = fmt_stat(r.kernel, r.unit)
        if r.kernel is None and r.kernel_errors:
            kern = "FAILED: " + _md_escape(r.kernel_errors[0])
        rat = "FAILED" if r.failed else fmt_ratio(r.ratio)
        arrow = "↑" if r.higher_is_better else "↓"
        cpu = fmt_ratio(r.cpu_ratio) if r.cpu_ratio is not None else "—"
        lines.append(f"| {r.metric} {arrow} | {r.offloads} | {r.loop} | {kern} | {ours} | {rat} | {cpu} "
                     f"| {_goal_cell(r)} |")
    lines.append("")
    summary = goal_summary(rows)
    if summary:
        lines.append("### Goals")
        lines.append("")
        for g in summary:
            mark = {True: "[x] met", False: "[ ] NOT met", None: "[?] unknown"}[g["met"]]
            details = "; ".join(f"{x['offloads']}/{x['loop']}: {x['detail']}" for x in g["rows"])
            lines.append(f"- {mark} — {g['text']} ({details})")
        lines.append("")
    lines.append("↑ higher is better, ↓ lower is better. " + " ".join(
        f"`{m}`: {t} [{u}]." for m, (t, u, _h) in METRICS.items() if any(r.metric == m for r in rows)))
    lines.append("")
    for note in meta.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"


def to_json(rows: list[Row], measurements: list[dict], meta: dict[str, Any] | None = None) -> str:
    doc = {"meta": meta or {}, "goals": goal_summary(rows), "rows": [r.as_dict() for r in rows],
           "measurements": measurements}
    return json.dumps(doc, indent=2, sort_keys=False, default=str)


def plot_png(rows: list[Row], path: str, title: str = "aiotcpstack ÷ kernel") -> None:
    """Horizontal bars: median ratio per row with min-max whiskers; a line at 1.0; goal ticks."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.metric} [{r.offloads}, {r.loop}]" for r in rows]
    n = max(1, len(rows))
    fig, ax = plt.subplots(figsize=(9, 0.42 * n + 1.6))
    ys = list(range(len(rows)))[::-1]
    finite = [r.ratio.max for r in rows if r.ratio] + [1.0]
    xmax = max(finite) * 1.25
    for y, r in zip(ys, rows):
        if r.ratio is None:
            ax.text(0.02 * xmax, y, "FAILED" if r.failed else "n/a", va="center", color="crimson",
                    fontsize=8, fontweight="bold")
            continue
        met = [g.met for g in r.goals]
        color = "tab:green" if met and all(met) else ("tab:red" if False in met else "tab:blue")
        med = r.ratio.median
        ax.barh(y, med, color=color, alpha=0.8, height=0.6)
        ax.errorbar(med, y, xerr=[[med - r.ratio.min], [r.ratio.max - med]], fmt="none", ecolor="black",
                    capsize=3, lw=1)
        ax.text(r.ratio.max + 0.01 * xmax, y, f"{med:.2f}x", va="center", fontsize=8)
        for g in r.goals:
            if g.goal.kind.startswith("ratio"):
                ax.plot([g.goal.threshold] * 2, [y - 0.35, y + 0.35], color="black", lw=2)
    ax.axvline(1.0, color="grey", ls="--", lw=1)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlim(0, xmax)
    ax.set_xlabel("ours ÷ kernel (median, min–max whiskers; black tick: goal; ↑ better for throughput/rate, "
                  "↓ for latency/memory)", fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
