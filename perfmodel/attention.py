"""The attention block's timing, defined once: the phases of its control, per sequence.

`hw/rtl/_attention.py` runs one sequence at a time through these phases (the output
always ready, the inputs offered at full rate), counted from the cycle its length is
taken:
  LEN   1 cycle: the sequence's length L is taken;
  RECV  L * dim + 1 cycles: Q, K and V arrive (an element of each a cycle, stored),
        then a cycle that sees all three complete;
  then a row per query i (the first `queries` where the node sets them) and head h,
  over the query's C key slots (`slots`):
  (top-k only) RANK L * dh + 1: the low-bit score q_lo . k_lo of every key, a product
        a cycle (registered, then summed), and a cycle for the last sum;
        SELECT C * L + 1: C passes over the L scores, each choosing the best left, and
        a cycle for the last choice;
  SCORE C * dh + 1: a product q . k a cycle (memories read a cycle ahead, the product
        registered, then summed), scores stored, and a cycle for the last sum;
  EXP   C:      i-exp of each score minus the row's maximum (EXP_STAGES stages), summed;
  DIV   EXP_STAGES + m + 1: the sum's last term, then the divisor 2^m // sum, a
                quotient bit a cycle;
  SUM   dh * C: a product p * v a cycle (two stages), an output element every C cycles;
and the block takes the next length right after the last row (`interval`); its last
output element leaves three cycles after the last row ends (`last_output`).
Slots: a full row (dense, or one of the first n_global queries) has the L keys; a
window row has C = n_global + 2 window + 1 fixed slots (the globals, then keys
i - window .. i + window), those outside the sequence or among the globals being keys
of probability zero; a top-k row the min(k, L) chosen keys. Every window row costs the
same, so the window pattern's cycles grow linearly with L; dense attention's, and
top-k's ranking and choice, quadratically.
"""

from __future__ import annotations

from dataclasses import dataclass

from cosyn.ir.kinds.attention import Attention

__all__ = ["EXP_STAGES", "AttentionControl", "AttentionTiming"]

EXP_STAGES = 5  # a score's read to its e: difference, quotient, rest, parabola, shift


@dataclass(frozen=True)
class AttentionTiming:
    """Cycles of the attention block of `node` (see the module doc)."""

    node: Attention

    @property
    def dh(self) -> int:
        return int(self.node.shape[0]) // self.node.heads

    def slots(self, i: int, length: int) -> int:
        """Key slots of query i of a sequence of `length` tokens."""
        a = self.node
        if a.pattern == "topk":
            return min(a.k, length)
        if a.pattern == "dense" or i < a.n_global:
            return length
        return a.n_global + 2 * a.window + 1

    def row(self, i: int, length: int) -> int:
        """Cycles of query i, all heads: (RANK, SELECT,) SCORE, EXP, DIV and SUM per head."""
        c, dh, m = self.slots(i, length), self.dh, self.node.spec.m
        choose = length * dh + 1 + c * length + 1 if self.node.pattern == "topk" else 0
        return self.node.heads * (choose + c * dh + 1 + c + (EXP_STAGES + m + 1) + dh * c)

    def interval(self, length: int) -> int:
        """Cycles from taking a sequence's length to taking the next one's."""
        if not 1 <= length <= self.node.max_len:
            raise ValueError(
                f"{self.node.name}: {length} tokens; it takes 1 to {self.node.max_len}"
            )
        return (
            1
            + length * int(self.node.shape[0])
            + 1
            + sum(self.row(i, length) for i in range(self.node.rows(length)))
        )

    def control(self, lengths: list[int]) -> AttentionControl:
        """The cycle model of the block's control, for sequences of `lengths`."""
        return AttentionControl(self, lengths)

    def last_output(self, length: int) -> int:
        """Cycles from taking a sequence's length to its last output element's transfer."""
        return self.interval(length) + 2


_LEN, _RECV, _SCORE, _EXP, _DIV, _SUM, _RANK, _SELECT, _WAIT, _RWAIT = range(10)  # the RTL's


class AttentionControl:
    """The block's control, register for register (`perfmodel.blocks`' protocol; inputs
    n, q, k, v, output o): the phase and its counters, the data stage's (live, phase,
    last) and the output register's `full`. `lengths` are the lengths the n stream
    carries, in order. `quiet` is conservative and `skip` steps (the steady state does
    not compose sequence blocks yet)."""

    def __init__(self, t: AttentionTiming, lengths: list[int]) -> None:
        self.t, self.lengths, self.seq = t, list(lengths), 0
        self.state, self.length, self.counts = _LEN, 0, [0, 0, 0]
        self.i = self.h = self.c = self.d = self.bit = self.taken = 0
        self.draining = self.live = self.p_last = self.full = False
        self.y_live = self.y_last = False  # SUM's second stage
        self.p_state = _LEN

    def registers(self) -> tuple:
        return tuple(v for k, v in vars(self).items() if k not in ("t", "lengths"))

    def valid(self) -> list[bool]:
        return [self.full]

    def _go(self, oready: list[bool]) -> bool:
        return not (self.y_live and self.y_last and self.full and not oready[0])

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        total = self.length * int(self.t.node.shape[0])
        recv = self.state == _RECV
        return [self.state == _LEN and self._go(oready), *(recv and n < total for n in self.counts)]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        go = self._go(oready)
        if self.full and oready[0]:
            self.full = False
        if go and self.y_live and self.y_last:
            self.full = True
        if go:
            self.y_live, self.y_last = self.live and self.p_state == _SUM, self.p_last
        chose = go and self.live and self.p_state == _SELECT and self.p_last
        if go:
            self._advance(takes[0])
        for j in range(3):  # after: the phases read the counts before this cycle's
            self.counts[j] += bool(takes[j + 1])
        if chose:
            self.taken += 1

    def _issue(self, last: bool) -> None:
        self.live, self.p_state, self.p_last = True, self.state, last

    def _advance(self, took_length: bool) -> None:
        """One clock of the phases (the RTL's `with m.If(go)`), from the old registers."""
        t, a, state = self.t, self.t.node, self.state
        dh, length = t.dh, self.length
        slots = t.slots(self.i, length) if length else 0
        last_c = self.c == slots - 1
        row = _RANK if a.pattern == "topk" else _SCORE
        self.live = False
        if state == _LEN and took_length:
            self.length, self.seq = self.lengths[self.seq], self.seq + 1
            self.state, self.counts = _RECV, [0, 0, 0]
        elif state == _RECV and all(n == length * int(a.shape[0]) for n in self.counts):
            self.state, self.i, self.h, self.c, self.d = row, 0, 0, 0, 0
        elif state in (_SCORE, _RANK):
            last_key = last_c if state == _SCORE else self.c == length - 1
            self._issue(self.d == dh - 1)
            if self.d < dh - 1:
                self.d += 1
            elif last_key:
                self.d = self.c = 0
                self.state, self.taken = (_WAIT, self.taken) if state == _SCORE else (_RWAIT, 0)
            else:
                self.d, self.c = 0, self.c + 1
        elif state == _SELECT:
            if self.draining:
                self.draining, self.c, self.d, self.state = False, 0, 0, _SCORE
            else:
                self._issue(self.c == length - 1)
                if self.c == length - 1:
                    self.c, self.draining = 0, self.taken == slots - 1
                else:
                    self.c += 1
        elif state in (_WAIT, _RWAIT):
            self.state = _EXP if state == _WAIT else _SELECT
        elif state == _EXP:
            self._issue(last_c)
            self.c = 0 if last_c else self.c + 1
            if last_c:
                self.bit, self.state = 0, _DIV
        elif state == _DIV:
            if self.bit == a.spec.m + EXP_STAGES:
                self.c, self.d, self.state = 0, 0, _SUM
            self.bit += 1
        elif state == _SUM:
            self._issue(last_c)
            self.c = 0 if last_c else self.c + 1
            if last_c and self.d < dh - 1:
                self.d += 1
            elif last_c:
                self.d = 0
                self._next_row(row)

    def _next_row(self, row: int) -> None:
        if self.h < self.t.node.heads - 1:
            self.h, self.state = self.h + 1, row
        elif self.i < self.t.node.rows(self.length) - 1:
            self.h, self.i, self.state = 0, self.i + 1, row
        else:
            self.h, self.state = 0, _LEN

    def quiet(self, valids: list[bool], oready: list[bool]) -> int:
        """0: every cycle is stepped (see the class doc)."""
        return 0

    def skip(self, n: int, valids: list[bool], oready: list[bool]) -> None:
        for _ in range(n):
            takes = [v and r for v, r in zip(valids, self.ready(valids, oready), strict=True)]
            self.step(takes, oready)
