"""The concat block: two element streams into one, per pixel the first's channels first.

`COMPONENTS["concat"](node, ctx)` builds `ConcatBlock` (inputs `a`, `b` in
`node.inputs` order, `ctx.in_types` and `ctx.in_shapes` for both). Its timing and
resources are `perfmodel.concat` (`ConcatTiming`, the cycle model of this control).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from cosyn.hw.rtl._base import COMPONENTS, Ctx, ports
from cosyn.perfmodel.blocks import TIMINGS

from cosyn.ir.kinds.concat import Concat

__all__ = ["ConcatBlock"]


class ConcatBlock(wiring.Component):
    """o = a's C1 elements of a pixel, then b's C2, pixel by pixel (a channel concatenation
    in HWC order; flat values: all of a, then all of b).

    Members: `a`, `b` (In, element streams of `ctx.in_types`), `o` (Out, element stream
    of `node.dtype`, which holds both). A position counter `k` over the pixel's C1 + C2
    elements and its flag `first` (k < C1) choose the input read; its element is taken
    when valid and the output register is empty or leaving, and the other input waits.
    Timing: `cycles` (`perfmodel.concat.ConcatTiming`).
    """

    def __init__(self, node: Concat, ctx: Ctx) -> None:
        self.node, self.cycles = node, TIMINGS[node.kind](node, ctx)
        super().__init__(ports(ctx, node.dtype))

    def elaborate(self, platform) -> Module:
        m = Module()
        c1, n = self.cycles.c1, self.cycles.c1 + self.cycles.c2
        k, first = Signal(range(n)), Signal(init=1)
        space = ~self.o.valid | self.o.ready
        m.d.comb += [self.a.ready.eq(first & space), self.b.ready.eq(~first & space)]
        take = Mux(first, self.a.valid, self.b.valid) & space
        with m.If(take):
            m.d.sync += [
                self.o.valid.eq(1),
                self.o.payload.eq(Mux(first, self.a.payload, self.b.payload)),
                k.eq(k + 1),
            ]
            with m.If(k == n - 1):
                m.d.sync += [k.eq(0), first.eq(1)]
            with m.Elif(k == c1 - 1):
                m.d.sync += first.eq(0)
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m


def _concat(node: Concat, ctx: Ctx) -> ConcatBlock:
    return ConcatBlock(node, ctx)


COMPONENTS[Concat.kind] = _concat
