"""Residual blocks: the add, the fork that feeds both paths, and the skip path's FIFO.

`COMPONENTS["add"](node, ctx)` builds `AddBlock` (inputs `a`, `b` in `node.inputs`
order, `ctx.in_types` for both). A graph value read by two nodes goes through a
`Fork` (`Fork(dtype)`: input `i`, outputs `o0`, `o1`). The shorter path of a
residual (the skip) holds its elements in a `SkipFifo(dtype, depth)` while the longer
path fills; the pipeline sizes it (`perfmodel.pipeline.fifo_depth`). The timing of
all three is `perfmodel.blocks` (`AddTiming`, `ForkTiming`, `FifoTiming`).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from cosyn.hw.rtl._base import COMPONENTS, Ctx, element_shape, element_stream, ports
from cosyn.hw.rtl._rom import memory_attrs
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
        self.node, self.cycles = node, TIMINGS[node.kind](node, ctx)
        super().__init__(ports(ctx, node.dtype))

    def combine(self, a: Value, b: Value) -> Value:
        """The output element of one pair (a subclass's other arithmetic, same control)."""
        s0, s1 = self.node.shifts
        return (a << s0) + (b << s1)

    def elaborate(self, platform) -> Module:
        m = Module()
        space = ~self.o.valid | self.o.ready
        take = self.a.valid & self.b.valid & space
        m.d.comb += [self.a.ready.eq(self.b.valid & space), self.b.ready.eq(self.a.valid & space)]
        total = self.combine(self.a.payload, self.b.payload)
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
    can leave in the next; one element per cycle in and out. The element on offer is
    a register (`head`); the others wait in a LUT RAM of depth - 1 words, from which
    the next one is read into the head as it leaves (an element arriving at an empty
    head goes straight there). So the consumer sees a register, and the input's ready
    is a register's function (the count). Timing: `perfmodel.blocks.FifoTiming`.
    """

    def __init__(self, dtype: IntType, depth: int) -> None:
        if depth < 2:
            raise ValueError(f"FIFO depth must be at least 2, not {depth!r}")
        self.dtype, self.depth = dtype, depth
        es = element_stream(dtype)
        super().__init__({"i": In(es), "o": Out(es)})

    def elaborate(self, platform) -> Module:
        m = Module()
        n = self.depth - 1  # words of the RAM
        shape = element_shape(self.dtype)
        m.submodules.ram = ram = memory.Memory(
            shape=shape, depth=n, init=[], attrs=memory_attrs(n, rom=False)
        )
        wp, rp = ram.write_port(), ram.read_port(domain="comb")
        # counts: all elements (`level`) and the RAM's (`stored`), and whether the FIFO is
        # full and the RAM empty as registers of their own, so the enables below are a
        # few gates from registers
        level, stored = Signal(range(self.depth + 1)), Signal(range(self.depth))
        full, empty = Signal(), Signal(init=1)
        head, hv = Signal(shape), Signal()
        wa, ra = Signal(range(n)), Signal(range(n))
        m.d.comb += [self.i.ready.eq(~full), self.o.valid.eq(hv)]
        m.d.comb += self.o.payload.eq(head)
        take_in = self.i.valid & ~full
        leave = hv & self.o.ready
        refill = ~hv | self.o.ready  # the head is free or leaving
        write = take_in & ~(refill & empty)  # into the RAM, unless straight to the head
        read = refill & ~empty  # from the RAM into the head
        m.d.comb += [rp.addr.eq(ra), wp.addr.eq(wa), wp.data.eq(self.i.payload), wp.en.eq(write)]
        m.d.sync += [level.eq(level + take_in - leave), stored.eq(stored + write - read)]
        m.d.sync += full.eq(Mux(take_in & ~leave, level == self.depth - 1, full & ~leave))
        m.d.sync += empty.eq(Mux(read & ~write, stored == 1, empty & ~write))
        with m.If(write):
            m.d.sync += wa.eq(Mux(wa == n - 1, 0, wa + 1))
        with m.If(refill):
            with m.If(~empty):
                m.d.sync += [head.eq(rp.data), hv.eq(1), ra.eq(Mux(ra == n - 1, 0, ra + 1))]
            with m.Else():
                m.d.sync += [head.eq(self.i.payload), hv.eq(take_in)]
        return m


def _add(node: Add, ctx: Ctx) -> AddBlock:
    if len(set(ctx.in_shapes)) != 1 or min(node.shifts) < 0:  # before the block exists
        raise ValueError(
            f"{node.name}: add takes two inputs of one shape and left shifts >= 0, "
            f"not shapes {ctx.in_shapes} and shifts {node.shifts}"
        )
    return AddBlock(node, ctx)


COMPONENTS["add"] = _add
