"""Graphs of one TCP connection from a pcap (and optional samples of the stack's own state).

* :func:`time_sequence_graph` -- Stevens / tcptrace style: x = time, y = sequence number relative to
  the sender's ISN.  Each data segment is a vertical bar from ``seq`` to ``seq + len`` at the time it
  was seen (retransmissions in red), the receiver's cumulative ACK is a green step line, the right edge
  of its advertised window (``ack + window << wscale``) a yellow step line, SACK blocks violet bars at
  the time of the ACK carrying them.
* :func:`cwnd_rtt_graph` -- top: bytes in flight as seen at the capture point (highest sequence sent
  minus highest ACK) and, when given, the stack's own cwnd / ssthresh samples; bottom: RTT samples
  from the capture (data -> covering ACK, Karn: retransmitted segments never sampled; and TSval ->
  TSecr echo) and, when given, the stack's smoothed RTT.

Both return the number of points they drew (segments, ACKs, samples, ...), so callers and tests can
tell an empty graph from a real one.  The pcap is parsed with :mod:`.pcapread` (the project's ``wire/``
parsers).  matplotlib is imported lazily with the Agg backend (``pip install aiotcpstack[tools]``).

Where RTT samples come from matters: data -> ACK is the sender's RTT when the capture was taken at the
sender (``aiotcpstack trace --direction upload``: our stack's own capture); at the receiver it measures
only the receiver's ACK delay.  TSval -> TSecr matches a packet of one side with the first packet of the
other side echoing its timestamp: the round trip seen from the side whose TSval it was.  Both are
labelled with the side they start from; read them accordingly.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

from ..wire.tcp import FIN, RST, SYN
from .pcapread import FlowKey, TcpPacket, read_tcp, select_flow

__all__ = ["FlowAnalysis", "analyse", "analyse_pcap", "time_sequence_graph", "cwnd_rtt_graph", "plot_pcap"]

MOD = 1 << 32
HALF = 1 << 31


def _unwrap(value: int, ref: int) -> int:
    """The integer congruent to ``value`` mod 2**32 closest to ``ref`` (sequence spaces > 4 GiB)."""
    base = ref - (ref % MOD) + value
    if base - ref > HALF:
        base -= MOD
    elif ref - base > HALF:
        base += MOD
    return base


@dataclasses.dataclass
class FlowAnalysis:
    flow: FlowKey
    sender: tuple[str, int]
    receiver: tuple[str, int]
    t0: float
    isn: int
    # (t, rel_seq, rel_end, retransmitted)
    segments: list[tuple[float, int, int, bool]] = dataclasses.field(default_factory=list)
    # (t, rel_ack, rel_window_edge or None)
    acks: list[tuple[float, int, int | None]] = dataclasses.field(default_factory=list)
    # (t, rel_left, rel_right)
    sacks: list[tuple[float, int, int]] = dataclasses.field(default_factory=list)
    # (t, bytes in flight at the capture point)
    inflight: list[tuple[float, int]] = dataclasses.field(default_factory=list)
    # (t, rtt seconds)
    rtt_data_ack: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    rtt_ts_sender: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    rtt_ts_receiver: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    events: list[tuple[float, str, int]] = dataclasses.field(default_factory=list)   # SYN/FIN/RST marks
    wscale: int | None = None
    bytes_sent: int = 0
    retransmitted_bytes: int = 0
    retransmitted_segments: int = 0

    @property
    def duration(self) -> float:
        ts = [s[0] for s in self.segments] + [a[0] for a in self.acks]
        return max(ts) if ts else 0.0


def analyse(packets: Sequence[TcpPacket], flow: FlowKey | None = None, port: int | None = None) -> FlowAnalysis:
    """Turn a capture into the series the graphs need, for one connection (the busiest by default)."""
    if flow is None:
        flow = select_flow(list(packets), port)
        if flow is None:
            raise ValueError("no TCP connection in the capture" + (f" with port {port}" if port else ""))
    ends = set(flow)
    pkts = [p for p in packets if p.src_ep in ends and p.dst_ep in ends and p.src_ep != p.dst_ep]
    if not pkts:
        raise ValueError(f"no packets of {flow} in the capture")
    sent = {flow[0]: 0, flow[1]: 0}
    for p in pkts:
        sent[p.src_ep] += p.length
    sender = flow[0] if sent[flow[0]] >= sent[flow[1]] else flow[1]
    receiver = flow[1] if sender == flow[0] else flow[0]

    syn_s = next((p for p in pkts if p.src_ep == sender and p.flags & SYN), None)
    syn_r = next((p for p in pkts if p.src_ep == receiver and p.flags & SYN), None)
    s_pkts = [p for p in pkts if p.src_ep == sender]
    if syn_s is not None:
        isn = syn_s.seq
    elif s_pkts:        # capture started mid-connection: the first data byte seen is byte 1
        first = next((p for p in s_pkts if p.length), s_pkts[0])
        isn = (first.seq - 1) % MOD
    else:
        isn = (next(p for p in pkts if p.src_ep == receiver).ack - 1) % MOD
    wscale = None
    if syn_s is not None and syn_r is not None and syn_s.options.wscale is not None \
            and syn_r.options.wscale is not None:
        wscale = min(syn_r.options.wscale, 14)      # the receiver's shift scales the receiver's windows
    elif syn_s is not None and syn_r is not None:
        wscale = 0
    t0 = pkts[0].ts
    a = FlowAnalysis(flow=flow, sender=sender, receiver=receiver, t0=t0, isn=isn, wscale=wscale)

    high = 0            # highest relative end sent so far
    ref_s = 0
    ref_a = 0
    last_ack = 0
    pending: dict[int, tuple[float, bool]] = {}    # rel_end -> (t sent, retransmitted) of unacked data
    ts_first: dict[tuple[str, int], dict[int, float]] = {sender: {}, receiver: {}}
    ts_done: dict[tuple[str, int], set[int]] = {sender: set(), receiver: set()}
    for p in pkts:
        t = p.ts - t0
        if p.flags & (SYN | FIN | RST):
            label = "SYN" if p.flags & SYN else "FIN" if p.flags & FIN else "RST"
            rel = _unwrap((p.seq - isn) % MOD, ref_s) if p.src_ep == sender else \
                _unwrap((p.ack - isn) % MOD, ref_a) if p.flags & 0x10 else 0
            a.events.append((t, label, rel))
        # timestamp echo matching (both directions)
        opt_ts = p.options.timestamp
        if opt_ts is not None:
            tsval, tsecr = opt_ts
            other = receiver if p.src_ep == sender else sender
            ts_first[p.src_ep].setdefault(tsval, t)
            sent_at = ts_first[other].get(tsecr)
            if tsecr and sent_at is not None and tsecr not in ts_done[other]:
                ts_done[other].add(tsecr)
                (a.rtt_ts_sender if other == sender else a.rtt_ts_receiver).append((t, t - sent_at))
        if p.src_ep == sender:
            seq_len = p.length + (1 if p.flags & SYN else 0) + (1 if p.flags & FIN else 0)
            if p.length:
                rel = _unwrap((p.seq - isn) % MOD, ref_s)
                ref_s = rel
                end = rel + p.length
                retrans = rel < high
                a.segments.append((t, rel, end, retrans))
                a.bytes_sent += p.length
                if retrans:
                    a.retransmitted_bytes += p.length
                    a.retransmitted_segments += 1
                    for e in list(pending):           # Karn: no sample from anything re-sent
                        if e > rel:
                            pending[e] = (pending[e][0], True)
                pending[end] = (pending.get(end, (t, False))[0], retrans or end in pending)
                high = max(high, end)
            elif seq_len:
                high = max(high, _unwrap((p.seq - isn) % MOD, ref_s) + seq_len)
            a.inflight.append((t, max(0, high - last_ack)))
        else:
            if p.flags & 0x10:
                rel_ack = _unwrap((p.ack - isn) % MOD, ref_a if ref_a else ref_s)
                ref_a = rel_ack
                edge = None
                if wscale is not None:
                    shift = 0 if p.flags & SYN else wscale
                    edge = rel_ack + (p.window << shift)
                a.acks.append((t, rel_ack, edge))
                if rel_ack > last_ack:
                    covered = [e for e in pending if e <= rel_ack]
                    if covered:
                        newest = max(covered)
                        t_sent, was_re = pending[newest]
                        if not was_re and not any(pending[e][1] for e in covered):
                            a.rtt_data_ack.append((t, t - t_sent))
                        for e in covered:
                            del pending[e]
                    last_ack = rel_ack
                for left, right in p.options.sack_blocks or ():
                    l_rel = _unwrap((left - isn) % MOD, rel_ack)
                    r_rel = _unwrap((right - isn) % MOD, rel_ack)
                    if r_rel > l_rel:
                        a.sacks.append((t, l_rel, r_rel))
                a.inflight.append((t, max(0, high - last_ack)))
    return a


def analyse_pcap(path: str, port: int | None = None) -> FlowAnalysis:
    return analyse(read_tcp(path), port=port)


# ---------------------------------------------------------------------------------------------- plotting
def _plt() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("graphs need matplotlib: pip install 'aiotcpstack[tools]' (or pip install matplotlib)") \
            from None
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _title(a: FlowAnalysis) -> str:
    def ep(e: tuple[str, int]) -> str:
        return f"[{e[0]}]:{e[1]}" if ":" in e[0] else f"{e[0]}:{e[1]}"
    return f"{ep(a.sender)} \u2192 {ep(a.receiver)}"


def time_sequence_graph(a: FlowAnalysis, out_png: str, title: str | None = None, dpi: int = 110) -> int:
    """Draw the time-sequence graph of ``a`` into ``out_png``; returns the number of points drawn."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 6.5))
    n = 0
    norm = [s for s in a.segments if not s[3]]
    retr = [s for s in a.segments if s[3]]
    if norm:
        ax.vlines([s[0] for s in norm], [s[1] for s in norm], [s[2] for s in norm], colors="#1f3b99",
                  linewidth=1.0, label=f"data ({len(norm)} segments)")
        ax.plot([s[0] for s in norm], [s[2] for s in norm], linestyle="none", marker="_", markersize=3,
                color="#1f3b99")
        n += len(norm)
    if retr:
        ax.vlines([s[0] for s in retr], [s[1] for s in retr], [s[2] for s in retr], colors="#d62728",
                  linewidth=1.8, label=f"retransmitted ({len(retr)})", zorder=5)
        ax.plot([s[0] for s in retr], [s[2] for s in retr], linestyle="none", marker="_", markersize=5,
                color="#d62728", zorder=5)
        n += len(retr)
    if a.acks:
        ax.step([x[0] for x in a.acks], [x[1] for x in a.acks], where="post", color="#2ca02c", linewidth=1.0,
                label="ACK")
        n += len(a.acks)
        win = [(x[0], x[2]) for x in a.acks if x[2] is not None]
        if win:
            ax.step([w[0] for w in win], [w[1] for w in win], where="post", color="#d4a017", linewidth=1.0,
                    label="receive window edge" + (f" (wscale {a.wscale})" if a.wscale else ""))
            n += len(win)
    if a.sacks:
        ax.vlines([s[0] for s in a.sacks], [s[1] for s in a.sacks], [s[2] for s in a.sacks], colors="#9467bd",
                  linewidth=2.5, alpha=0.8, label=f"SACK blocks ({len(a.sacks)})", zorder=4)
        n += len(a.sacks)
    for t, label, rel in a.events:
        ax.annotate(label, (t, rel), fontsize=7, color="#555555", xytext=(2, 4), textcoords="offset points")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("sequence offset (bytes, relative to the sender's ISN)")
    sub = f"{a.bytes_sent} payload bytes, {a.retransmitted_segments} retransmitted segments " \
          f"({a.retransmitted_bytes} bytes)"
    ax.set_title((title or f"time-sequence graph {_title(a)}") + "\n" + sub, fontsize=10)
    ax.grid(True, alpha=0.3)
    if n:
        ax.legend(loc="upper left", fontsize=8)
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)
    fig.tight_layout()
    fig.savefig(out_png, dpi=dpi)
    plt.close(fig)
    return n


def cwnd_rtt_graph(a: FlowAnalysis | None, out_png: str, samples: Iterable[dict[str, Any]] | None = None,
                   title: str | None = None, dpi: int = 110, t0: float | None = None) -> int:
    """Draw in-flight/cwnd (top) and RTT (bottom) over time; returns the number of points drawn.

    ``samples``: dicts with ``t`` (wall-clock seconds, the pcap's clock) and any of ``cwnd``, ``ssthresh``
    (bytes), ``srtt``, ``rttvar`` (seconds) -- e.g. periodic ``Stack.connections()`` snapshots.
    ``t0``: the time origin (defaults to the analysis' first packet, else the first sample).
    """
    plt = _plt()
    samples = list(samples or [])
    if t0 is None:
        t0 = a.t0 if a is not None else (samples[0]["t"] if samples else 0.0)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 7.5), sharex=True)
    n = 0
    if a is not None and a.inflight:
        off = a.t0 - t0
        ax1.step([x[0] + off for x in a.inflight], [x[1] / 1024 for x in a.inflight], where="post",
                 color="#1f77b4", linewidth=0.9, label=f"bytes in flight at the capture point ({a.sender[0]} sending)")
        n += len(a.inflight)
    for key, colour, label in (("cwnd", "#d62728", "stack cwnd"), ("ssthresh", "#7f7f7f", "stack ssthresh")):
        pts = [(s["t"] - t0, s[key]) for s in samples if s.get(key) is not None and s[key] < 0x7FFFFFFF]
        if pts and any(v for _, v in pts):
            ax1.step([p[0] for p in pts], [p[1] / 1024 for p in pts], where="post", color=colour, linewidth=1.4,
                     label=label)
            n += len(pts)
    ax1.set_ylabel("KiB")
    ax1.grid(True, alpha=0.3)
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(loc="upper left", fontsize=8)
    if a is not None:
        off = a.t0 - t0
        for series, marker, colour, label in (
                (a.rtt_data_ack, ".", "#2ca02c", f"data\u2192ACK ({a.sender[0]} data)"),
                (a.rtt_ts_sender, "x", "#9467bd", f"TSval\u2192TSecr echo from {a.sender[0]}"),
                (a.rtt_ts_receiver, "+", "#8c564b", f"TSval\u2192TSecr echo from {a.receiver[0]}")):
            if series:
                ax2.plot([s[0] + off for s in series], [s[1] * 1000 for s in series], linestyle="none",
                         marker=marker, markersize=3, color=colour, label=f"{label} ({len(series)})")
                n += len(series)
    pts = [(s["t"] - t0, s["srtt"]) for s in samples if s.get("srtt")]
    if pts:
        ax2.plot([p[0] for p in pts], [p[1] * 1000 for p in pts], color="#d62728", linewidth=1.4,
                 label="stack srtt")
        n += len(pts)
        var = [(s["t"] - t0, s["srtt"], s.get("rttvar") or 0) for s in samples if s.get("srtt")]
        ax2.fill_between([v[0] for v in var], [(v[1] - v[2]) * 1000 for v in var],
                         [(v[1] + v[2]) * 1000 for v in var], color="#d62728", alpha=0.12, label="srtt \u00b1 rttvar")
    ax2.set_ylabel("RTT (ms)")
    ax2.set_xlabel("time (s)")
    ax2.grid(True, alpha=0.3)
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(loc="upper left", fontsize=8)
    ax1.set_title(title or ("cwnd / in flight and RTT" + (f" {_title(a)}" if a is not None else "")), fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=dpi)
    plt.close(fig)
    return n


def plot_pcap(pcap: str, tseq_png: str | None = None, cwnd_png: str | None = None, port: int | None = None,
              samples: Iterable[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Analyse ``pcap`` and draw the requested graphs; returns ``{"analysis", "tseq_points", "cwnd_points"}``."""
    a = analyse_pcap(pcap, port=port)
    out: dict[str, Any] = {"analysis": a, "tseq_points": 0, "cwnd_points": 0}
    if tseq_png:
        out["tseq_points"] = time_sequence_graph(a, tseq_png)
    if cwnd_png:
        out["cwnd_points"] = cwnd_rtt_graph(a, cwnd_png, samples=samples)
    return out
