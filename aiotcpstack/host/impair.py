"""Impairment wire: forwards Ethernet frames between two interfaces with seeded delay, jitter, reordering,
duplication and loss.  Runs inside a namespace (ImpairedLab starts it in the middle namespace)::

    python -m aiotcpstack.host.impair --if1 X --if2 Y [--delay S] [--jitter S] [--reorder P]
        [--dup P] [--loss P] [--seed N] [--reorder-delay S]

It is a pure L2 wire (no learning, no filtering): every frame received on one interface (not sent by this
host: PACKET_OUTGOING frames are skipped) is sent on the other through AF_PACKET sockets.  Both
interfaces must carry no addresses and be ignored by the kernel (ImpairedLab drops their ingress in
nftables; AF_PACKET taps see frames before that hook) and must not deliver GSO super-frames (the senders
into the wire have TSO/GSO/tx-checksum off) - frames are forwarded byte for byte.

Impairments, per frame and per direction, from ``random.Random(seed)`` / ``Random(seed + 1)``:
loss (dropped), dup (sent twice), delay + uniform jitter; ``reorder`` holds the frame back an extra
``reorder_delay`` (default: max(1 ms, 2 * delay)) so later frames overtake it.  Without jitter/reorder the
order is preserved.  Prints ``ready`` on stdout when the sockets are bound; SIGTERM stops it and it prints
counters as JSON on stderr.
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import selectors
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23


class Wire:
    def __init__(self, if1: str, if2: str, delay: float = 0.0, jitter: float = 0.0, reorder: float = 0.0,
                 dup: float = 0.0, loss: float = 0.0, seed: int = 0, reorder_delay: float | None = None,
                 rcvbuf: int = 4 << 20, open_sockets: bool = True) -> None:
        self.ifs = (if1, if2)
        self.delay, self.jitter, self.reorder, self.dup, self.loss = delay, jitter, reorder, dup, loss
        self.reorder_delay = reorder_delay if reorder_delay is not None else max(0.001, 2 * delay)
        self.rng = (random.Random(seed), random.Random(seed + 1))
        self.socks: list[socket.socket] = []
        for name in (self.ifs if open_sockets else ()):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            try:
                s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:
                pass
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
            s.bind((name, ETH_P_ALL))
            s.setblocking(False)
            self.socks.append(s)
        self.heap: list[tuple[float, int, int, bytes]] = []
        self.seq = 0
        self.last_due = [0.0, 0.0]          # keep FIFO order per direction unless reordering on purpose
        self.stats = {"rx": [0, 0], "tx": [0, 0], "lost": [0, 0], "dup": [0, 0], "reordered": [0, 0],
                      "send_errors": [0, 0]}
        self.running = True
        self.parent_pid: int | None = None     # exit when reparented (the lab's process died)

    def _schedule(self, d: int, frame: bytes, now: float) -> None:
        rng = self.rng[d]
        if self.loss and rng.random() < self.loss:
            self.stats["lost"][d] += 1
            return
        copies = 2 if self.dup and rng.random() < self.dup else 1
        if copies == 2:
            self.stats["dup"][d] += 1
        for _ in range(copies):
            due = now + self.delay
            if self.jitter:
                due += rng.uniform(0, self.jitter)
            if self.reorder and rng.random() < self.reorder:
                due += self.reorder_delay
                self.stats["reordered"][d] += 1
            elif not self.jitter:
                due = max(due, self.last_due[d])
                self.last_due[d] = due
            if due <= now and not self.heap:
                self._send(d, frame)
            else:
                self.seq += 1
                heapq.heappush(self.heap, (due, self.seq, d, frame))

    def _send(self, d: int, frame: bytes) -> None:
        try:
            self.socks[1 - d].send(frame)
            self.stats["tx"][d] += 1
        except OSError:
            self.stats["send_errors"][d] += 1

    def _drain(self, d: int, now: float) -> None:
        s = self.socks[d]
        for _ in range(256):
            try:
                frame, addr = s.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            self.stats["rx"][d] += 1
            self._schedule(d, frame, now)

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        for d, s in enumerate(self.socks):
            sel.register(s, selectors.EVENT_READ, d)
        while self.running:
            timeout = None
            if self.heap:
                timeout = max(0.0, self.heap[0][0] - time.monotonic())
            for key, _ in sel.select(timeout if timeout is not None else 0.5):
                self._drain(key.data, time.monotonic())
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                break
            now = time.monotonic()
            while self.heap and self.heap[0][0] <= now:
                _, _, d, frame = heapq.heappop(self.heap)
                self._send(d, frame)

    def close(self) -> None:
        for s in self.socks:
            s.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aiotcpstack.host.impair", description=__doc__.split("\n")[0])
    ap.add_argument("--if1", required=True)
    ap.add_argument("--if2", required=True)
    ap.add_argument("--delay", type=float, default=0.0, help="one-way delay, seconds")
    ap.add_argument("--jitter", type=float, default=0.0, help="extra uniform delay 0..jitter, seconds")
    ap.add_argument("--reorder", type=float, default=0.0, help="probability a frame is held back")
    ap.add_argument("--reorder-delay", type=float, default=None)
    ap.add_argument("--dup", type=float, default=0.0, help="probability a frame is duplicated")
    ap.add_argument("--loss", type=float, default=0.0, help="probability a frame is dropped")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parent-pid", type=int, default=None, help="exit when this process is no longer our parent")
    a = ap.parse_args(argv)
    wire = Wire(a.if1, a.if2, a.delay, a.jitter, a.reorder, a.dup, a.loss, a.seed, a.reorder_delay)
    wire.parent_pid = a.parent_pid

    def stop(signum, frame):  # noqa: ARG001
        wire.running = False
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    try:
        wire.run()
    finally:
        wire.close()
        print(json.dumps(wire.stats), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
