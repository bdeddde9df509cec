"""ECN in the sans-IO TCP (RFC 3168 6.1, RFC 9293 SHLD-8; tcp/ecn.py), at segment level: the
``ecn`` option and its validation, negotiation for the active and the passive side and the
listener (request socks and SYN cookies) in every combination of the option with the peer's
SYN / SYN-ACK flags, ECT(0) on new data only, the ECE -> one reduction per window -> CWR
sequence of the sender, and the receiver's ECE from a CE mark until CWR."""
from __future__ import annotations

import pytest

from aiotcpstack.mib import Counters
from aiotcpstack.tcp import ecn as E
from aiotcpstack.tcp import syncookies
from aiotcpstack.tcp.config import TcpConfig
from aiotcpstack.tcp.listener import Listener
from aiotcpstack.tcp.timer_wheel import TimerWheel
from aiotcpstack.wire.tcp import ACK, CWR, ECE, PSH, SYN, TcpHeader, TcpOptions

from aiotcpstack.tools.ss import detail_line

from tcp_harness import Harness, Sent

MASK = 0xFFFFFFFF


class EctHarness(Harness):
    """Records, with each segment, whether it left with ECT(0) (the route's ECN bits at that
    moment: ``conn._ect``, which ``Route.set_ecn`` follows)."""

    def __init__(self, *a, **kw) -> None:
        self.ect: list[bool] = []
        super().__init__(*a, **kw)

    def _output(self, hdr: TcpHeader, payload) -> None:
        super()._output(hdr, payload)
        self.ect.append(self.conn._ect)

    def take_ect(self) -> list[tuple[Sent, bool]]:
        out = list(zip(self.out, self.ect))
        self.out = []
        self.ect = []
        return out


def active(ecn: int, synack_flags: int) -> tuple[EctHarness, Sent]:
    """Our connect() under ``ecn``, answered by a SYN-ACK with ``synack_flags`` (SYN|ACK|...)."""
    h = EctHarness(TcpConfig(ecn=ecn))
    h.conn.connect(0.0)
    syn = h.take_one()
    hdr = TcpHeader(80, h.local[1], 5000, syn.seq + 1, synack_flags, 65535, h.peer_syn_opts(syn))
    h.at(0.01)
    h.conn.on_segment(hdr, b"", 0.01)
    h.conn.end_batch(0.01)
    h.take_ect()
    assert h.conn.state == "ESTABLISHED"
    return h, syn


def passive(ecn: int, syn_flags: int) -> tuple[EctHarness, Sent]:
    h = EctHarness(TcpConfig(ecn=ecn))
    syn = TcpHeader(80, h.local[1], 5000, 0, syn_flags, 65535,
                    TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(100, 0)))
    h.conn.accept_syn(syn, 0.0)
    synack = h.take_one()
    h.feed(0.01, ".", 5001, synack.seq + 1, window=512, opts=TcpOptions(timestamp=(101, synack.tsval)))
    h.take_ect()
    assert h.conn.state == "ESTABLISHED"
    return h, synack


def test_option_default_and_validation() -> None:
    assert TcpConfig().ecn == 2                    # Linux's net.ipv4.tcp_ecn default
    for v in (0, 1, 2):
        assert TcpConfig(ecn=v).ecn == v
    for bad in (3, -1, True, "1", 1.0):
        with pytest.raises(ValueError, match="ecn"):
            TcpConfig(ecn=bad)


@pytest.mark.parametrize("ecn", [0, 1, 2])
@pytest.mark.parametrize("answer", [SYN | ACK, SYN | ACK | ECE, SYN | ACK | ECE | CWR, SYN | ACK | CWR])
def test_active_negotiation(ecn: int, answer: int) -> None:
    h, syn = active(ecn, answer)
    # only ecn=1 asks, with ECE|CWR on the SYN (RFC 3168 6.1.1)
    assert syn.hdr.flags & (ECE | CWR) == (ECE | CWR if ecn == 1 else 0)
    # ... and only an ECN-setup SYN-ACK (ECE without CWR) answers it
    assert bool(h.conn.ecn) == (ecn == 1 and answer & (ECE | CWR) == ECE)
    snap = h.conn.snapshot()
    assert snap["ecn"] == bool(h.conn.ecn)                         # tcp_info / ss -i "ecn"
    assert ("ecn" in detail_line(snap).split()) == snap["ecn"]


@pytest.mark.parametrize("ecn", [0, 1, 2])
@pytest.mark.parametrize("syn_flags", [SYN, SYN | ECE, SYN | CWR, SYN | ECE | CWR])
def test_passive_negotiation(ecn: int, syn_flags: int) -> None:
    h, synack = passive(ecn, syn_flags)
    ok = ecn != 0 and syn_flags & (ECE | CWR) == ECE | CWR
    assert bool(h.conn.ecn) == ok
    assert synack.hdr.flags & (ECE | CWR) == (ECE if ok else 0)     # ECN-setup SYN-ACK


def test_retransmitted_syn_drops_ece_cwr_but_a_later_ecn_synack_is_taken() -> None:
    h = EctHarness(TcpConfig(ecn=1))
    h.conn.connect(0.0)
    first = h.take_one()
    assert first.hdr.flags & (ECE | CWR) == ECE | CWR
    rtx = h.run_until(1.0)
    assert len(rtx) == 1 and rtx[0].hdr.flags == SYN           # Linux tcp_ecn_clear_syn
    hdr = TcpHeader(80, h.local[1], 5000, first.seq + 1, SYN | ACK | ECE, 65535, h.peer_syn_opts(rtx[0]))
    h.at(1.01)
    h.conn.on_segment(hdr, b"", 1.01)
    assert h.conn.state == "ESTABLISHED" and h.conn.ecn == E.ECN_OK


def test_simultaneous_open_needs_ecn_setup_syns_on_both_sides() -> None:
    for peer_flags, ok in ((SYN | ECE | CWR, True), (SYN | ECE, False)):
        h = EctHarness(TcpConfig(ecn=1))
        h.conn.connect(0.0)
        syn = h.take_one()
        h.at(0.01)
        h.conn.on_segment(TcpHeader(80, h.local[1], 5000, 0, peer_flags, 65535, h.peer_syn_opts(syn)), b"", 0.01)
        synack = h.take_one()
        assert synack.hdr.flags & (SYN | ACK) == SYN | ACK
        assert bool(h.conn.ecn) == ok
        assert synack.hdr.flags & (ECE | CWR) == (ECE if ok else 0)


def test_ect_on_new_data_only_not_on_acks_or_retransmissions() -> None:
    h, _ = active(1, SYN | ACK | ECE)
    c = h.conn
    c.send(b"x" * 3000, 0.02)
    segs = h.take_ect()
    assert segs and all(ect for s, ect in segs if s.payload)
    # a pure ACK (for the peer's data) is Not-ECT
    h.feed(0.03, "P.", 5001, c.snd_una, payload=b"y" * 100,
           opts=TcpOptions(timestamp=(200, segs[-1][0].tsval)))
    acks = h.take_ect()
    assert acks and all(not s.payload and not ect for s, ect in acks)
    # the loss probe and the retransmission timeout resend old data: Not-ECT (RFC 3168 6.1.5)
    h.run_until(2.0)
    rtx = h.take_ect()
    assert any(s.seq == c.iss + 1 for s, _ in rtx)
    assert rtx and all(s.payload and not ect for s, ect in rtx)
    # acknowledged, the next new data is ECT again
    h.feed(2.1, ".", 5101, c.snd_nxt, opts=TcpOptions(timestamp=(300, rtx[-1][0].tsval)))
    h.take_ect()
    c.send(b"z" * 500, 2.2)
    new = h.take_ect()
    assert new and all(ect for s, ect in new if s.payload)


def test_no_ecn_no_ect_and_no_flags() -> None:
    h, _ = active(2, SYN | ACK | ECE)        # ecn=2 never asks: the ECE is not an answer
    assert h.conn.ecn == 0
    h.conn.send(b"x" * 3000, 0.02)
    segs = h.take_ect()
    assert segs and not any(ect for _s, ect in segs)
    assert not any(s.hdr.flags & (ECE | CWR) for s, _ in segs)


def _ack(h: EctHarness, t: float, ack: int, flags: str = ".", ece: bool = False) -> list[Sent]:
    h.at(t)
    mark = len(h.out)
    f = ACK | (ECE if ece else 0)
    h.conn.on_segment(TcpHeader(80, h.local[1], 5001, ack, f, 512, TcpOptions(timestamp=(1000 + int(t * 1000), 1))),
                      b"", t)
    h.conn.end_batch(t)
    return h.out[mark:]


def test_ece_reduces_once_per_window_and_cwr_goes_on_the_next_new_data() -> None:
    h, _ = active(1, SYN | ACK | ECE)
    c = h.conn
    c.send(b"x" * 200000, 0.02)                      # more than the initial window
    h.take_ect()
    una = c.snd_una
    cwnd0 = c.cc.cwnd
    high = c.snd_nxt
    t = 0.03
    out = _ack(h, t, una + 1448, ece=True)
    assert c.cc.ssthresh < cwnd0 and c.cc.cwnd <= cwnd0            # (cwnd follows PRR per ACK)
    assert h.counters["TcpEcnCwr"] == 1 and c.ecn & E.ECN_IN_CWR
    ssth1 = c.cc.ssthresh
    # the receiver echoes ECE until it sees CWR: no further reduction within this window
    data = [s for s in out if s.payload]
    k = 2
    while not data:
        t += 0.001
        data = [s for s in _ack(h, t, una + k * 1448, ece=True) if s.payload]
        k += 1
    assert c.cc.ssthresh == ssth1 and h.counters["TcpEcnCwr"] == 1
    assert data[0].seq == high and data[0].hdr.flags & CWR          # CWR on the next new data
    assert all(not s.hdr.flags & CWR for s in data[1:])            # once
    # SND.UNA reaches the SND.NXT of the reduction: still reducing (Linux waits until above it)
    t += 0.001
    _ack(h, t, high)
    assert c.ecn & E.ECN_IN_CWR
    t += 0.001
    out = _ack(h, t, high + 1448)
    assert not c.ecn & E.ECN_IN_CWR
    # a new ECE now is a new congestion event: a second reduction, a second CWR
    t += 0.001
    out = _ack(h, t, high + 2 * 1448, ece=True)
    assert h.counters["TcpEcnCwr"] == 2 and c.cc.ssthresh < ssth1
    while not any(s.payload for s in out):
        t += 0.001
        out = _ack(h, t, c.snd_una + 1448)
    assert [s for s in out if s.payload][0].hdr.flags & CWR


def test_ece_on_a_connection_without_ecn_is_ignored() -> None:
    h, _ = active(0, SYN | ACK)
    c = h.conn
    c.send(b"x" * 20000, 0.02)
    h.take_ect()
    cwnd0 = c.cc.cwnd
    _ack(h, 0.03, c.snd_una + 1448, ece=True)
    assert c.cc.cwnd >= cwnd0 and h.counters["TcpEcnCwr"] == 0


def test_ce_makes_ece_on_every_ack_until_cwr() -> None:
    h, synack = passive(2, SYN | ECE | CWR)
    c = h.conn
    seq = 5001
    ts = 200

    def data(t: float, n: int = 1000, flags: str = "P.", ce: bool = False, cwr: bool = False) -> list[Sent]:
        nonlocal seq, ts
        h.at(t)
        mark = len(h.out)
        ts += 1
        f = ACK | PSH | (CWR if cwr else 0)
        c.on_segment(TcpHeader(80, h.local[1], seq, c.snd_nxt, f, 512, TcpOptions(timestamp=(ts, 1))),
                     b"d" * n, t)
        if ce:
            E.ce_received(c)                         # what NetworkCore does after a CE segment
        c.end_batch(t)
        seq += n
        return h.out[mark:]

    out = data(0.02)
    assert not any(s.hdr.flags & ECE for s in out)
    out = data(0.03, ce=True)
    assert len(out) == 1 and out[0].hdr.flags & ECE                # ACKed at once, with ECE
    assert h.counters["TcpEcnCeRecv"] == 1
    out = data(0.04) + data(0.05) + h.run_until(1.0)
    assert out and all(s.hdr.flags & ECE for s in out)              # every ACK until CWR
    out = data(1.1, cwr=True)
    assert len(out) == 1 and not out[0].hdr.flags & ECE            # CWR: stop echoing, ACK now
    out = data(1.2) + h.run_until(2.0)
    assert out and not any(s.hdr.flags & ECE for s in out)
    # a CE on the very segment that carries CWR starts a new period (CE is checked after CWR)
    out = data(2.1, cwr=True, ce=True)
    assert out and out[-1].hdr.flags & ECE


def test_ce_without_ecn_changes_nothing() -> None:
    h, _ = passive(2, SYN)
    c = h.conn
    h.at(0.02)
    c.on_segment(TcpHeader(80, h.local[1], 5001, c.snd_nxt, ACK | PSH, 512, TcpOptions(timestamp=(200, 1))),
                 b"d" * 100, 0.02)
    E.ce_received(c)
    c.end_batch(0.02)
    h.run_until(1.0)
    assert not any(s.hdr.flags & ECE for s in h.out) and c.ecn == 0


# ------------------------------------------------------------------------------ the listener
class _Isn:
    def isn(self, *a) -> int:
        return 777_000

    def ts_offset(self, *a) -> int:
        return 0


def _listener(ecn: int, syncookies_mode: int) -> tuple[Listener, list]:
    sent: list = []
    cfg = TcpConfig(ecn=ecn, syncookies=syncookies_mode)
    lst = Listener(config=cfg, wheel=TimerWheel(0.0), counters=Counters(), local=(bytes([10, 0, 0, 1]), 80),
                   backlog=16, isn=_Isn(), secret=b"s", send=lambda lip, rip, hdr, p: sent.append(hdr))
    return lst, sent


@pytest.mark.parametrize("cookies", [0, 2])
@pytest.mark.parametrize("ts", [True, False])
@pytest.mark.parametrize("ecn", [0, 1, 2])
@pytest.mark.parametrize("syn_flags", [SYN, SYN | ECE | CWR, SYN | ECE])
def test_listener_request_socks_and_cookies_carry_ecn(cookies: int, ts: bool, ecn: int, syn_flags: int) -> None:
    lst, sent = _listener(ecn, cookies)
    lip, rip = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    syn = TcpHeader(40000, 80, 5000, 0, syn_flags, 65535,
                    TcpOptions(mss=1460, wscale=7, sack_permitted=True, timestamp=(100, 0) if ts else None))
    lst.on_segment(lip, rip, syn, b"", 0.0)
    synack = sent[-1]
    assert synack.flags & (SYN | ACK) == SYN | ACK
    asked = ecn != 0 and syn_flags & (ECE | CWR) == ECE | CWR
    # a cookie without timestamps cannot keep ECN: the SYN-ACK does not offer it
    ok = asked and (ts or not cookies)
    assert synack.flags & (ECE | CWR) == (ECE if ok else 0)
    if cookies and ts:
        opts = synack.options.timestamp[0] & ((1 << syncookies.TSBITS) - 1)
        assert bool(opts & syncookies.TS_OPT_ECN) == ok             # in the cookie's TSval
    ack = TcpHeader(40000, 80, 5001, (synack.seq + 1) & MASK, ACK, 512,
                    TcpOptions(timestamp=(101, synack.options.timestamp[0])) if ts else TcpOptions())
    child = lst.on_segment(lip, rip, ack, b"", 0.01)
    assert child is not None and child.state == "ESTABLISHED"
    assert bool(child.ecn) == ok


def test_cookie_ecn_bit_is_ignored_when_ecn_is_off() -> None:
    """Linux cookie_ecn_ok: a returning cookie that says ECN gives none when tcp_ecn is 0 (the
    setting changed meanwhile)."""
    lst, sent = _listener(1, 2)
    lip, rip = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    lst.on_segment(lip, rip, TcpHeader(40000, 80, 5000, 0, SYN | ECE | CWR, 65535,
                                       TcpOptions(mss=1460, sack_permitted=True, timestamp=(100, 0))), b"", 0.0)
    synack = sent[-1]
    assert synack.flags & ECE
    lst.config = lst.config.with_options(ecn=0)
    ack = TcpHeader(40000, 80, 5001, (synack.seq + 1) & MASK, ACK, 512,
                    TcpOptions(timestamp=(101, synack.options.timestamp[0])))
    child = lst.on_segment(lip, rip, ack, b"", 0.01)
    assert child is not None and child.ecn == 0


# ---------------------------------------------------------------- CWR paced by PRR (Linux TCP_CA_CWR)

M = 1460
RENO_ECN = TcpConfig(ecn=1, timestamps=False, sack=True, window_scaling=False, congestion_control="reno",
                     initial_cwnd=20, tlp=False)


def _reno_ecn() -> Harness:
    """An ECN connection (our SYN asked, the SYN-ACK agreed) with 20 segments in flight."""
    h = Harness(RENO_ECN)
    h.conn.connect(0.0)
    syn = h.take_one()
    h.at(0.01)
    h.conn.on_segment(TcpHeader(80, h.local[1], 5000, syn.seq + 1, SYN | ACK | ECE, 65535,
                                TcpOptions(mss=M, sack_permitted=True)), b"", 0.01)
    h.conn.end_batch(0.01)
    h.take()
    assert h.conn.ecn & E.ECN_OK
    h.conn.send(b"x" * 60 * M, 0.02)
    assert len(h.take()) == 20
    return h


def _seg(i: int) -> int:
    return 1001 + i * M


def _peer_ack(h: Harness, t: float, ack: int, ece: bool = False, sack=()) -> list[Sent]:
    h.at(t)
    mark = len(h.out)
    h.conn.on_segment(TcpHeader(80, h.local[1], 5001, ack, ACK | (ECE if ece else 0), 65535,
                                TcpOptions(sack_blocks=tuple(sack) or None)), b"", t)
    h.conn.end_batch(t)
    return [s for s in h.out[mark:] if s.payload]


def test_cwr_sends_per_prr_and_ends_with_cwnd_at_ssthresh() -> None:
    # Linux tcp_enter_cwr + tcp_cwnd_reduction: the ECE ACK starts the reduction (Reno:
    # ssthresh = 10 of 20 segments) and from then on each ACK lets out ssthresh / RecoverFS of
    # what it delivered -- one segment every second ACK -- instead of cwnd = ssthresh at once
    # (silence for ten ACKs, then one per ACK)
    h = _reno_ecn()
    c = h.conn
    high = c.snd_nxt
    t = 0.03
    sends = []
    for k in range(1, 21):
        t += 1e-4
        sends.append(len(_peer_ack(h, t, _seg(k), ece=(k < 3))))
        prr = c.prr                               # never ahead of PRR's proportional bound
        assert prr is None or prr.prr_out <= -(-prr.prr_delivered * c.cc.ssthresh // (prr.recover_fs * M)) * M
    # (the last ACKs: pipe reached ssthresh, PRR-SSRB holds it there)
    assert sends[:18] == [1, 0] * 9 and sum(sends) == 10
    # half of the 20 segments: the ACK carrying ECE did not grow the window first
    assert c.cc.ssthresh == 10 * M and h.counters["TcpEcnCwr"] == 1
    assert c.ecn & E.ECN_IN_CWR                   # SND.UNA == the SND.NXT of the ECE: not yet
    assert c.snd_una == high
    _peer_ack(h, t + 1e-4, _seg(21))
    assert not c.ecn & E.ECN_IN_CWR and c.cc.ca_state == "open"
    assert c.cc.cwnd == c.cc.ssthresh == 10 * M   # Linux tcp_end_cwnd_reduction


def test_loss_during_cwr_enters_recovery_without_a_second_reduction() -> None:
    # Linux tcp_enter_recovery while in CWR: no new ssthresh, PRR goes on (no
    # tcp_init_cwnd_reduction), prior_ssthresh 0 -- so undoing the recovery (its
    # retransmission DSACKed) does not undo the ECN reduction
    h = _reno_ecn()
    c = h.conn
    t = 0.03
    _peer_ack(h, t, _seg(1), ece=True)
    _peer_ack(h, t + 1e-4, _seg(2))
    ssthresh = c.cc.ssthresh
    out = []
    t += 2e-4
    for k in range(4, 8):                         # segment 2 lost: four SACKs above it
        t += 1e-4
        out += _peer_ack(h, t, _seg(2), sack=[(_seg(3), _seg(k))])
    assert c.ca_state == 3 and h.counters["TCPSackRecovery"] == 1
    assert _seg(2) in [s.seq for s in out]        # the fast retransmit
    assert c.cc.ssthresh == ssthresh and h.counters["TcpEcnCwr"] == 1 and c.cc.congestion_events == 1
    assert c.prr.prr_delivered == 6 * M           # the same PRR reduction, continued: 2 ACKed + 4 SACKed
    # the original arrives after all: everything acknowledged, the retransmission DSACKed
    _peer_ack(h, t + 0.01, c.snd_nxt, sack=[(_seg(2), _seg(3))])
    assert h.counters["TCPFullUndo"] == 1 and c.ca_state == 0
    # the ECN reduction stays (before: the window of before the ECE came back, ssthresh infinite)
    assert c.cc.ssthresh == ssthresh and c.cc.cwnd < 20 * M
