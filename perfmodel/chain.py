"""A run of elementwise stages, and the FIFO behind them, as one control.

Between two convolutions the pipeline has a run of elementwise blocks (requantize,
activation, requantize) and often the FIFO in front of the next block. The run's
stages (`blocks.ElementwiseTiming`) shift together while no skid register is full,
so while none is and the FIFO is never full with an element offered, the run is one
shift register of all their stages, whose last bit is offered to the FIFO: the
FIFO's level rises by the elements that reach it and falls by those taken. `Chain`
steps the stages' controls together, wired as `perfmodel.steady` wires them
(`step`), and finds in closed form how long the run flows with its valid and ready
unchanged (`quiet`, `skip`): a gap in its producer's valid is then one event of the
steady state, not one per stage. While a skid register is full it asks each stage
(their own `quiet` and `skip`, the wires between them held). Tests hold it to the
stages stepped one by one.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

from cosyn.perfmodel.blocks import ElementwiseTiming, FifoTiming
from cosyn.perfmodel.mac import QUIET

__all__ = ["Chain", "chainable"]

_SKID = attrgetter("skid")


def chainable(timings: list[Any]) -> bool:
    """Whether `timings`, each stage feeding the next, make a `Chain`: two or more
    elementwise stages, or one or more and a FIFO last."""
    *run, last = timings
    return (
        len(timings) >= 2
        and all(isinstance(t, ElementwiseTiming) for t in run)
        and isinstance(last, (ElementwiseTiming, FifoTiming))
    )


class Chain:
    """The controls of `timings` (see `chainable`), stepped as one. In the run's shift
    register `v`, stage j of the run is bit j (the first stage's stages lowest)."""

    def __init__(self, timings: list[Any]) -> None:
        self.parts = [t.control() for t in timings]
        fifo = isinstance(timings[-1], FifoTiming)
        self.stages = self.parts[:-1] if fifo else self.parts
        self.fifo = self.parts[-1] if fifo else None
        self.depth = sum(s.stages for s in self.stages)
        self.all = (1 << self.depth) - 1
        self._v: int | None = 0  # the stages' bits packed (`_packed`), None where not known

    def valid(self) -> list[bool]:
        return self.parts[-1].valid()

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        return [not self.parts[0].skid]

    def registers(self) -> tuple:
        """Every stage's registers and the FIFO's level, as one flat tuple."""
        regs = tuple(x for s in self.stages for x in (s.v, s.skid))
        return regs if self.fifo is None else (*regs, self.fifo.level)

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        """One cycle: each stage takes from the one before when it offers and is taken.
        While the run flows, the shift register moves on and its output goes to the
        FIFO, or to the last stage's skid register where it is not taken."""
        if self._flows():
            v, fifo, last = self._packed(), self.fifo, self.stages[-1]
            out = bool(v >> (self.depth - 1))
            if fifo is None:
                last.skid = out and not oready[0]
            else:
                room = fifo.level != fifo.depth
                last.skid = out and not room
                fifo.level += int(out and room) - int(fifo.level != 0 and oready[0])
                fifo.peak = max(fifo.peak, fifo.level)
            self._unpack(((v << 1) | (1 if takes[0] else 0)) & self.all)
            return
        ivs, ors = self._wires(takes, oready)
        for j, (part, orr) in enumerate(zip(self.parts, ors, strict=True)):
            part.step(takes if j == 0 else [ivs[j][0] and ors[j - 1][0]], orr)
        self._v = None

    def quiet(self, valids: list[bool], oready: list[bool]) -> int:
        """Cycles, the input and the output's ready held, with valid and ready unchanged:
        while the run flows, until the FIFO (or, without one, the run's output) changes
        its valid, or an element reaches a full FIFO or an output not ready; else the
        fewest any stage allows, the wires between them held."""
        if self._flows():
            return self._flow_quiet(valids[0], oready[0])
        ivs, ors = self._wires(valids, oready)
        return min(p.quiet(iv, orr) for p, iv, orr in zip(self.parts, ivs, ors, strict=True))

    def skip(self, n: int, valids: list[bool], oready: list[bool]) -> None:
        """`step` n times, no more than `quiet` allows."""
        if self._flows():
            self._shift(n, valids[0], oready[0])
            return
        ivs, ors = self._wires(valids, oready)
        for p, iv, orr in zip(self.parts, ivs, ors, strict=True):
            p.skip(n, iv, orr)
        self._v = None

    def _wires(self, valids: list[bool], oready: list[bool]) -> tuple[list, list]:
        """Each stage's input valids and output readies (the next stage's ready)."""
        parts = self.parts
        ivs = [valids] + [p.valid() for p in parts[:-1]]
        ors: list[Any] = [None] * len(parts)
        ors[-1] = oready
        for j in range(len(parts) - 2, -1, -1):
            ors[j] = parts[j + 1].ready(ivs[j + 1], ors[j + 1])
        return ivs, ors

    def _flows(self) -> bool:
        """No skid register is full."""
        return not any(map(_SKID, self.stages))

    def _packed(self) -> int:
        """The run's shift register: stage j's bits above those of the stages before it
        (kept from the last `_unpack` while no stage has stepped alone)."""
        if self._v is None:
            v, at = 0, 0
            for s in self.stages:
                v |= s.v << at
                at += s.stages
            self._v = v
        return self._v

    def _flow_quiet(self, x: bool, ready: bool) -> int:
        """`quiet` while the run flows: the run's output at cycle i is bit depth-1-i of
        `v`, then `x`; the FIFO's level falls by one a cycle while it holds any and the
        output is ready, and rises by each element that reaches it."""
        v, d = self._packed(), self.depth
        last = bool(v >> (d - 1))
        fifo = self.fifo
        if fifo is None:
            if last and not ready:
                return 0
            differ = (v ^ (self.all if last else 0)) & (self.all >> 1)
            if differ:  # the nearest bit that differs from the output reaches it first
                return d - 1 - differ.bit_length()
            return QUIET if x == last else d - 1
        level, full = fifo.level, fifo.depth
        if level == 0 or not ready:  # until one reaches it empty, or reaches it full
            return _nth(v, d, x, 1 if level == 0 else full - level + 1)
        if level == full and last:  # the FIFO's full this cycle: the run's output waits
            return 0
        return _nth(~v & self.all, d, not x, level)  # until as many gaps drain it

    def _shift(self, n: int, x: bool, ready: bool) -> None:
        """`n` cycles of the flowing run (`_flow_quiet` allows them)."""
        v, d = self._packed(), self.depth
        s = min(n, d)
        fifo = self.fifo
        if fifo is not None:
            arrived = (v >> (d - s)).bit_count() + (n - s) * x
            fifo.level += arrived - (n if ready and fifo.level else 0)  # monotone (`quiet`)
            fifo.peak = max(fifo.peak, fifo.level)
        self._unpack(((v << s) | ((1 << s) - 1 if x else 0)) & self.all)

    def _unpack(self, v: int) -> None:
        self._v = v
        for st in self.stages:
            st.v = v & st.all
            v >>= st.stages


def _nth(bits: int, d: int, then: bool, k: int) -> int:
    """The cycle (from 0) of the k-th one in the sequence bit d-1, d-2, ..., 0 of
    `bits`, then `then` every cycle; QUIET where there is none."""
    while bits and k:
        top = bits.bit_length() - 1
        k -= 1
        if not k:
            return d - 1 - top
        bits ^= 1 << top
    return d + k - 1 if then else QUIET
