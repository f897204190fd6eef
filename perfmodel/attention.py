"""The attention block's timing, defined once: the phases of its control, per sequence.

`hw/rtl/_attention.py` runs one sequence at a time through these phases (the output
always ready, the inputs offered at full rate), counted from the cycle its length is
taken:
  LEN   1 cycle: the sequence's length L is taken;
  RECV  L * dim + 1 cycles: Q, K and V arrive (an element of each a cycle, stored),
        then a cycle that sees all three complete;
  then a row per query i and head h, over the query's C key slots (`slots`):
  (top-k only) RANK L * dh: the low-bit score q_lo . k_lo of every key, a product a cycle;
        SELECT C * L + 1: C passes over the L scores, each choosing the best left, and
        a cycle for the last choice;
  SCORE C * dh: a product q . k a cycle (memories read a cycle ahead), scores stored;
  EXP   C:      i-exp of each score minus the row's maximum, summed;
  DIV   m + 2:  a cycle for the sum's last term, then the divisor 2^m // sum, a
                quotient bit a cycle;
  SUM   dh * C: a product p * v a cycle, an output element every C cycles;
and the block takes the next length right after the last row (`interval`); its last
output element leaves two cycles after the last row ends (`last_output`).
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

__all__ = ["AttentionTiming"]


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
        choose = length * dh + c * length + 1 if self.node.pattern == "topk" else 0
        return self.node.heads * (choose + c * dh + c + (m + 2) + dh * c)

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
            + sum(self.row(i, length) for i in range(length))
        )

    def last_output(self, length: int) -> int:
        """Cycles from taking a sequence's length to its last output element's transfer."""
        return self.interval(length) + 1
