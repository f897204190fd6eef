"""The product block: two element streams multiplied element by element (kind "mul").

`COMPONENTS["mul"](node, ctx)` builds `MulBlock` (inputs `a`, `b` in `node.inputs` order,
`ctx.in_types` for both). Its control is `AddBlock`'s, so its timing is the add's
(`perfmodel.blocks.AddTiming`, registered for the kind by `perfmodel.product`). (`_mul.py`
holds the multiply-accumulate lanes' multipliers.)
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from cosyn.hw.rtl._base import COMPONENTS, Ctx, ports
from cosyn.perfmodel.blocks import TIMINGS

from cosyn.ir.kinds.mul import Mul

__all__ = ["MulBlock"]


class MulBlock(wiring.Component):
    """o = a * b, element by element, in `node.dtype` (which holds every product).

    Members: `a`, `b` (In, element streams of `ctx.in_types`), `o` (Out, element stream
    of `node.dtype`). Both inputs carry their elements in the same order; one element of
    each is taken together, when both are valid and the output register is empty or
    leaving, and their product is registered. Timing: `cycles` (`AddTiming`).
    """

    def __init__(self, node: Mul, ctx: Ctx) -> None:
        self.node, self.cycles = node, TIMINGS[node.kind](node, ctx)
        super().__init__(ports(ctx, node.dtype))

    def elaborate(self, platform) -> Module:
        m = Module()
        space = ~self.o.valid | self.o.ready
        take = self.a.valid & self.b.valid & space
        m.d.comb += [self.a.ready.eq(self.b.valid & space), self.b.ready.eq(self.a.valid & space)]
        with m.If(take):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(self.a.payload * self.b.payload)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m


def _mul(node: Mul, ctx: Ctx) -> MulBlock:
    return MulBlock(node, ctx)


COMPONENTS[Mul.kind] = _mul
