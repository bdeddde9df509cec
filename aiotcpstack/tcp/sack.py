"""Sender-side SACK scoreboard (RFC 2018, RFC 6675, DSACK detection per RFC 2883).

Holds the SACKed ranges above SND.UNA as disjoint merged ``[left, right)`` absolute sequence
ranges sorted by their distance from SND.UNA (mod 2**32).  The connection asks it the RFC 6675
questions: how many bytes are SACKed (for ``pipe``), up to where octets are lost (``IsLost``,
section 4: more than (DupThresh - 1) * SMSS bytes SACKed above them), and where the next hole
below a limit is (``NextSeg`` rule 1).
"""
from __future__ import annotations

MASK = 0xFFFFFFFF
DUPTHRESH = 3


class SackScoreboard:
    __slots__ = ("blocks", "sacked", "reord", "newly_end", "_new_hi")

    def __init__(self) -> None:
        self.blocks: list[list[int]] | tuple = ()     # a list from the first SACKed range on
        self.sacked = 0
        # after update(): the lowest newly SACKed sequence below the highest SACKed one before
        # it (a hole filled out of order: tcp/reordering.py), else None
        self.reord: int | None = None
        # after update(): the end of the highest newly SACKed range (absolute), else None --
        # the most recently sent original that ACK delivered, for RACK (tcp/rack.py)
        self.newly_end: int | None = None
        self._new_hi = 0

    def __bool__(self) -> bool:
        return bool(self.blocks)

    def clear(self) -> None:
        self.blocks = ()
        self.sacked = 0

    def update(self, sack_blocks, snd_una: int, snd_nxt: int, ack: int | None = None) -> tuple[int, tuple | None]:
        """Merge received SACK blocks.  Returns ``(newly_sacked_bytes, dsack)``: ``dsack`` is the
        first block when it reports a duplicate (RFC 2883 section 4), else None -- the sender's
        undo (tcp/congestion/undo.py) needs its range, not only that one came.  ``ack``: the
        segment's cumulative ACK (RFC 2883: a first block below *it* is a duplicate, even when
        the same ACK is what moves SND.UNA past the block; Linux compares with ``ack_seq``)."""
        outstanding = (snd_nxt - snd_una) & MASK
        below = 0 if ack is None else (ack - snd_una) & MASK     # the ACK, relative to SND.UNA
        if below >= 0x80000000:
            below = 0
        newly = 0
        dsack = None
        self.reord = None
        self.newly_end = None
        newly_hi = 0
        prior_high = self.highest(snd_una)
        for i, (left, right) in enumerate(sack_blocks):
            rel_l = (left - snd_una) & MASK
            rel_r = (right - snd_una) & MASK
            if i == 0:
                # RFC 2883 section 4: a first block below the cumulative ACK, or inside the
                # second block, reports a duplicate.
                if rel_r <= below or rel_r >= 0x80000000:
                    dsack = (left, right)
                    continue
                if len(sack_blocks) > 1:
                    l2, r2 = sack_blocks[1]
                    if ((left - l2) & MASK) < 0x80000000 and ((r2 - right) & MASK) < 0x80000000:
                        dsack = (left, right)
                        continue
            if rel_l >= 0x80000000:          # starts below SND.UNA: clip
                rel_l = 0
            if rel_r >= 0x80000000 or rel_r > outstanding or rel_r <= rel_l:
                continue                      # bogus or beyond what we sent: ignore
            if rel_l < prior_high:
                # (Linux tcp_sacktag_one's state->reord: the first byte this block newly SACKs)
                hole = self.next_hole(snd_una, rel_l, rel_r)
                if hole is not None and hole[0] < prior_high:
                    low = (snd_una + hole[0]) & MASK
                    if self.reord is None or ((low - self.reord) & MASK) >= 0x80000000:
                        self.reord = low
            added = self._add(rel_l, rel_r, snd_una)
            if added:
                newly += added
                if self._new_hi > newly_hi:
                    newly_hi = self._new_hi
        if newly_hi:
            self.newly_end = (snd_una + newly_hi) & MASK
        return newly, dsack

    def _add(self, rel_l: int, rel_r: int, una: int) -> int:
        blocks = self.blocks
        if not blocks:
            blocks = self.blocks = []
        i = 0
        n = len(blocks)
        while i < n and ((blocks[i][1] - una) & MASK) < rel_l:
            i += 1
        j = i
        new_l, new_r = rel_l, rel_r
        covered = 0
        while j < n:
            s = (blocks[j][0] - una) & MASK
            e = (blocks[j][1] - una) & MASK
            if s > rel_r:
                break
            covered += e - s
            if s < new_l:
                new_l = s
            if e > new_r:
                new_r = e
            j += 1
        # the end of the highest newly covered part: below the last block overlapped when that
        # reaches past rel_r (blocks are disjoint, so a gap lies just below it), else rel_r
        if j > i and ((blocks[j - 1][1] - una) & MASK) >= rel_r:
            self._new_hi = (blocks[j - 1][0] - una) & MASK
        else:
            self._new_hi = rel_r
        blocks[i:j] = [[(una + new_l) & MASK, (una + new_r) & MASK]]
        added = (new_r - new_l) - covered
        self.sacked += added
        return added

    def prune(self, snd_una: int) -> None:
        """Forget what the cumulative ACK now covers."""
        blocks = self.blocks
        while blocks:
            l, r = blocks[0]
            if ((snd_una - r) & MASK) < 0x80000000:          # r <= una
                self.sacked -= (r - l) & MASK
                del blocks[0]
            elif ((snd_una - l) & MASK) - 1 < 0x7FFFFFFF:     # l < una < r: clip
                self.sacked -= (snd_una - l) & MASK
                blocks[0][0] = snd_una
                break
            else:
                break

    def highest(self, snd_una: int) -> int:
        """Relative offset (from SND.UNA) just past the highest SACKed byte (0 if none)."""
        if not self.blocks:
            return 0
        return (self.blocks[-1][1] - snd_una) & MASK

    def lost_limit(self, snd_una: int, mss: int, dupthresh: int = DUPTHRESH) -> int:
        """RFC 6675 IsLost(): relative offset below which every un-SACKed octet is lost (0: none).

        An octet is lost when DupThresh discontiguous SACKed ranges lie above it or more than
        (DupThresh - 1) * SMSS SACKed bytes do.  ``dupthresh``: the connection's reordering
        degree (tcp/reordering.py; Linux ``tp->reordering``), 3 by default."""
        acc = 0
        count = 0
        threshold = (dupthresh - 1) * mss
        for l, r in reversed(self.blocks):
            acc += (r - l) & MASK
            count += 1
            if acc > threshold or count >= dupthresh:
                return (l - snd_una) & MASK
        return 0

    def sacked_in(self, snd_una: int, rel_a: int, rel_b: int) -> int:
        """SACKed bytes within the relative range ``[rel_a, rel_b)``."""
        total = 0
        for l, r in self.blocks:
            s = (l - snd_una) & MASK
            if s >= rel_b:
                break
            e = (r - snd_una) & MASK
            lo = s if s > rel_a else rel_a
            hi = e if e < rel_b else rel_b
            if hi > lo:
                total += hi - lo
        return total

    def next_hole(self, snd_una: int, rel_from: int, rel_limit: int) -> tuple[int, int] | None:
        """The first un-SACKed relative range ``[start, end)`` at or after ``rel_from`` and below
        ``rel_limit`` (end stops at the next SACKed block), or None."""
        pos = rel_from
        for l, r in self.blocks:
            s = (l - snd_una) & MASK
            e = (r - snd_una) & MASK
            if e <= pos:
                continue
            if s <= pos:
                pos = e
                continue
            # hole [pos, s)
            if pos >= rel_limit:
                return None
            return pos, min(s, rel_limit)
        if pos >= rel_limit:
            return None
        return pos, rel_limit

    def is_sacked(self, snd_una: int, rel: int) -> bool:
        for l, r in self.blocks:
            s = (l - snd_una) & MASK
            if s > rel:
                return False
            if rel < ((r - snd_una) & MASK):
                return True
        return False
