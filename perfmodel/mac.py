"""The cycle model of the multiply-accumulate pipeline that dense and conv2d share.

Behind a block's issue stage (one term a cycle: an input element and P weights), a
term passes `STAGES` registered stages, each about one primitive deep:

  1. read        the input buffer (or line buffer) and the weight ROM row;
  2. register    the element (in two copies, each feeding half the lanes) and the
                 weights, so a memory's output drives nothing but a register;
  3. multiply    where one operand has at most `NARROW` bits, the partial products
                 summed in pairs (LUTs and carry chains); else the whole product (a DSP);
  4. product     the pairs summed (or the DSP's product registered once more);
  5. accumulate  P sums (the group's bias, read from its ROM meanwhile, starts a group).

With SIMD (S terms a lane a cycle, `mac_stages`), a stage between 4 and 5 sums each
lane's S products (a tree of adds), so no stage is deeper than without.

A group's last term, once accumulated (`done`), loads the P results into the output
register, from which they leave one per cycle (where P does not divide the outputs, the
block's last group loads its `short` results only). The load needs at most one result
still waiting there: if that one is not taken in the load's cycle, it moves to a head
register in front and leaves first. So the decision to load reads registers only, never
the consumer's ready; a `done` that cannot load holds every stage and the issue
(`stall`). With the output always ready the register is free again P cycles after a
load, so a group takes max(terms, P) cycles.

`MacPipe` holds those registers (without the data) and steps them; the blocks' control
models (`perfmodel.blocks.DenseTiming`, `perfmodel.conv`) drive it, and the RTL
(`hw/rtl/_mac.py`) implements it register for register.
"""

from __future__ import annotations

__all__ = ["NARROW", "QUIET", "STAGES", "MacPipe", "mac_stages", "multiply_stages"]

STAGES = 5
NARROW = 4
QUIET = 1 << 40  # a control's `quiet`: no change in sight


def mac_stages(simd: int = 1) -> int:
    """Stages of the pipeline: `STAGES`, and with SIMD (S > 1 products a lane) one more
    after the product, where each lane's S products are summed (a tree of adds)."""
    return STAGES + (simd > 1)


def multiply_stages(bits: int) -> int:
    """Registered stages of a multiply whose narrow operand has `bits` bits (the other's
    multiples x, 3x, -x, then one selected per pair of bits and the pairs summed):
    two up to 4 bits, three up to 8 (the pair sums summed); wider, a multiplier block
    with a register on each side, two."""
    return 3 if NARROW < bits <= 2 * NARROW else 2


class MacPipe:
    """Valid and last flags per stage (bit j of `v` and `last`: stage j + 1; `fin`: the
    last term of the block's last group, whose results are `short`, where fewer than P),
    and the results in the output register (`left`, the head included)."""

    def __init__(self, p: int, short: int | None = None, stages: int = STAGES) -> None:
        self.p, self.short = p, p if short is None else short
        self.stages, self.all, self.end = stages, (1 << stages) - 1, 1 << (stages - 1)
        self.v = self.last = self.fin = 0
        self.left = 0

    @property
    def stall(self) -> bool:
        """A group's results are done but two or more results still wait to leave."""
        return bool(self.last & self.end) and self.left >= 2

    @property
    def busy(self) -> bool:
        """A term is in flight or a result waits to leave."""
        return self.left != 0 or self.v != 0

    def step(self, issue: bool, last: bool, oready: bool, fin: bool = False) -> None:
        """One cycle: a term issued or not (and whether it is its group's last, and the
        block's last group's: `fin`), the output ready or not. The caller issues only
        when not `stall`."""
        done = self.last & self.end
        if done and self.left >= 2:  # stall: everything holds, the output may leave
            self.left -= bool(oready)
            return
        out = self.left != 0 and oready
        if done:
            self.left += (self.short if self.fin & self.end else self.p) - out
        elif out:
            self.left -= 1
        self.v = ((self.v << 1) | (1 if issue else 0)) & self.all
        self.last = ((self.last << 1) | (1 if issue and last else 0)) & self.all
        self.fin = ((self.fin << 1) | (1 if issue and last and fin else 0)) & self.all

    def quiet(self, oready: bool) -> int:
        """Cycles, the output ready or not throughout, in which no result loads and the
        output register neither empties nor fills: the last result waiting is not taken,
        a group's last term does not reach the end (or stays stalled there)."""
        left, last = self.left, self.last
        out = left - 1 if left and oready else QUIET
        if not last:
            return out
        if last & self.end:
            if left < 2:
                return 0
            return left - 2 if oready else QUIET
        return min(out, self.stages - last.bit_length())

    def advance(self, n: int, issue: bool, oready: bool) -> None:
        """`step` n times, no more than `quiet` allows, issuing no group's last term."""
        stall = self.last & self.end and self.left >= 2
        if self.left and oready:
            self.left -= n
        if not stall:
            s = min(n, self.stages)
            self.v = ((self.v << s) | (((1 << s) - 1) if issue else 0)) & self.all
            self.last = (self.last << s) & self.all
            self.fin = (self.fin << s) & self.all
