"""Residual blocks: the add, the fork that feeds both paths, and the skip path's FIFO.

`COMPONENTS["add"](node, ctx)` builds `AddBlock` (inputs `a`, `b` in `node.inputs`
order, `ctx.in_types` for both). A graph value read by two nodes goes through a
`Fork` (`Fork(dtype)`: input `i`, outputs `o0`, `o1`). The shorter path of a
residual (the skip) holds its elements in a `SkipFifo(dtype, depth)` while the longer
path fills; the pipeline sizes it (`perfmodel.pipeline.fifo_depth`). The timing of
all three is `perfmodel.blocks` (`AddTiming`, `ForkTiming`, `FifoTiming`).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out
from cosyn.hw.rtl._base import COMPONENTS, Ctx, element_shape, element_stream
from cosyn.perfmodel.blocks import TIMINGS

from cosyn.ir.nodes import Add, IntType

__all__ = ["AddBlock", "Fork", "SkipFifo"]


class AddBlock(wiring.Component):
    """o = (a << shifts[0]) + (b << shifts[1]), element by element, in `node.dtype`.

    Members: `a`, `b` (In, element streams of `ctx.in_types`), `o` (Out, element
    stream of `node.dtype`). Both inputs carry their elements in the same order; one
    element of each is taken together, when both are valid and the output register
    is empty or leaving. Timing: `cycles` (`perfmodel.blocks.AddTiming`).
    """

    def __init__(self, node: Add, ctx: Ctx) -> None:
        if len(set(ctx.in_shapes)) != 1 or min(node.shifts) < 0:
            self._MustUse__silence = True  # never built
            raise ValueError(
                f"{node.name}: add takes two inputs of one shape and left shifts >= 0, "
                f"not shapes {ctx.in_shapes} and shifts {node.shifts}"
            )
        self.node, self.cycles = node, TIMINGS["add"](node, ctx)
        ta, tb = ctx.in_types
        super().__init__(
            {
                "a": In(element_stream(ta)),
                "b": In(element_stream(tb)),
                "o": Out(element_stream(node.dtype)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        s0, s1 = self.node.shifts
        space = ~self.o.valid | self.o.ready
        take = self.a.valid & self.b.valid & space
        m.d.comb += [self.a.ready.eq(self.b.valid & space), self.b.ready.eq(self.a.valid & space)]
        total = (self.a.payload << s0) + (self.b.payload << s1)
        with m.If(take):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(total)]  # extends or cuts
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m


class Fork(wiring.Component):
    """Copy each element of `i` to both `o0` and `o1`.

    Members: `i` (In), `o0`, `o1` (Out), element streams of `dtype`. Each output has
    a one-element register; the next element is taken when both registers are empty
    or leaving, so one output can run one element ahead of the other.
    """

    def __init__(self, dtype: IntType) -> None:
        es = element_stream(dtype)
        super().__init__({"i": In(es), "o0": Out(es), "o1": Out(es)})

    def elaborate(self, platform) -> Module:
        m = Module()
        outs = (self.o0, self.o1)
        free = [~o.valid | o.ready for o in outs]
        m.d.comb += self.i.ready.eq(free[0] & free[1])
        for o in outs:
            with m.If(self.i.valid & self.i.ready):
                m.d.sync += [o.valid.eq(1), o.payload.eq(self.i.payload)]
            with m.Elif(o.ready):
                m.d.sync += o.valid.eq(0)
        return m


class SkipFifo(wiring.Component):
    """A first-in first-out buffer of `depth` elements of `dtype` between `i` and `o`.

    Members: `i` (In), `o` (Out), element streams. An element written in one cycle
    can leave in the next; one element per cycle in and out.
    """

    def __init__(self, dtype: IntType, depth: int) -> None:
        if depth < 1:
            raise ValueError(f"FIFO depth must be at least 1, not {depth!r}")
        self.dtype, self.depth = dtype, depth
        es = element_stream(dtype)
        super().__init__({"i": In(es), "o": Out(es)})

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.q = q = fifo.SyncFIFO(width=self.dtype.bits, depth=self.depth)
        data = Signal(element_shape(self.dtype))
        m.d.comb += [
            q.w_data.eq(self.i.payload),
            q.w_en.eq(self.i.valid),
            self.i.ready.eq(q.w_rdy),
            data.eq(q.r_data),
            self.o.payload.eq(data),
            self.o.valid.eq(q.r_rdy),
            q.r_en.eq(self.o.ready),
        ]
        return m


def _add(node: Add, ctx: Ctx) -> AddBlock:
    return AddBlock(node, ctx)


COMPONENTS["add"] = _add
