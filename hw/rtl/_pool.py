"""The maxpool2d block: a line buffer of running maxima, one input element per cycle.

Built by `COMPONENTS["maxpool2d"](node, ctx)` with `ctx.in_type`, `ctx.in_shape` (C, H,
W) and `ctx.order == "hwc"`. Its geometry, timing and resources are `perfmodel.pool`
(`PoolGeometry`, `MaxPoolTiming`, the cycle model of this control).
"""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, Value
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from cosyn.hw.rtl._base import COMPONENTS, Ctx, element_shape, element_stream
from cosyn.hw.rtl._rom import memory_attrs
from cosyn.hw.rtl._window import step
from cosyn.perfmodel.blocks import TIMINGS
from cosyn.perfmodel.pool import Axis

from cosyn.ir.nodes import MaxPool2d

__all__ = ["MaxPoolBlock"]


def _next(values: list[int], index: Value) -> Value:
    """values[(index + 1) % len], a constant table in LUTs."""
    nxt = values[1:] + values[:1]
    if len(set(nxt)) == 1:
        return Const(nxt[0])
    return Array(Const(v) for v in nxt)[index]


class MaxPoolBlock(wiring.Component):
    """out[c, oy, ox] = max of channel c's window at (oy, ox), windows not overlapping.

    Members: `i` (In, element stream of `ctx.in_type`, the (C, H, W) input in HWC
    order), `o` (Out, element stream of `node.dtype`, the (C, OH, OW) output in HWC
    order).

    The next element's position (c, x, y) is three counters; whether its column and
    row lie in a window, start it or end it, and its line-buffer address (output
    column * C + c) are registers stepped with them from small tables. When the
    element is taken, its word is read (the read registered, LUT RAM or block RAM by
    `perfmodel.resources.placement`). Stage 1 selects the element where it starts its
    window, else the larger of it and the running maximum, taken from the word read or,
    where the element just ahead wrote that word in the cycle of the read, from the
    stage-2 register that holds what it wrote (a flag registered with the element); it
    writes the result back. Stage 2 holds the result and offers it where the element
    ended its window. A skid register behind it takes a result the consumer does not
    take, and the stages and the input hold until it has left.

    Timing: `cycles` (`perfmodel.pool.MaxPoolTiming`), the model of this control.
    """

    def __init__(self, node: MaxPool2d, ctx: Ctx) -> None:
        self.node, self.ctx = node, ctx
        self.cycles = TIMINGS["maxpool2d"](node, ctx)
        self.geo = self.cycles.geo
        super().__init__(
            {"i": In(element_stream(ctx.in_type)), "o": Out(element_stream(node.dtype))}
        )

    def _position(self, m: Module, take: Value) -> tuple:
        """The next element's flags (in window, first, last) and address, as registers."""
        g = self.geo
        c, x, y = Signal(range(g.c)), Signal(range(g.w)), Signal(range(g.h))
        addr = Signal(range(g.depth), init=g.cols[0].index * g.c)
        col, row = _flags(g.cols, "col"), _flags(g.rows, "row")
        with m.If(take):
            m.d.sync += addr.eq(addr + 1)
            with m.If(step(m, c, g.c - 1)):
                m.d.sync += addr.eq(_next([a.index * g.c for a in g.cols], x))
                _step_flags(m, col, g.cols, x)
                with m.If(step(m, x, g.w - 1)):
                    _step_flags(m, row, g.rows, y)
                    step(m, y, g.h - 1)
        inwin, first, last = (a & b for a, b in zip(col, row, strict=True))
        return inwin, first, last, addr

    def elaborate(self, platform) -> Module:
        m = Module()
        g, shape = self.geo, element_shape(self.ctx.in_type)
        full = Signal()  # the skid register holds a result
        run = ~full
        take = self.i.valid & run
        m.d.comb += self.i.ready.eq(run)
        inwin, first, last, addr = self._position(m, take)
        mem = memory.Memory(
            shape=shape, depth=g.depth, init=[], attrs=memory_attrs(g.depth, rom=False)
        )
        m.submodules.lbuf = mem
        rd, wr = mem.read_port(transparent_for=()), mem.write_port()
        # stage 1: the element, its address and flags; the word read at its address
        x1, a1 = Signal(shape), Signal.like(addr)
        w1, f1, e1, fwd1 = Signal(), Signal(), Signal(), Signal()
        with m.If(run):
            m.d.sync += [
                x1.eq(self.i.payload),
                a1.eq(addr),
                w1.eq(take & inwin),
                f1.eq(first),
                e1.eq(take & last),
                fwd1.eq(w1 & (a1 == addr)),  # the element ahead writes this word now
            ]
        m.d.comb += [rd.addr.eq(addr), rd.en.eq(run)]
        y2, o2, skid = Signal(shape), Signal(), Signal(shape)
        r1 = rd.data
        larger = Mux(fwd1, Mux(x1 > y2, x1, y2), Mux(x1 > r1, x1, r1))
        new = Mux(f1, x1, larger)
        m.d.comb += [wr.addr.eq(a1), wr.data.eq(new), wr.en.eq(run & w1)]
        with m.If(run):
            m.d.sync += [y2.eq(new), o2.eq(e1)]
        m.d.comb += [self.o.valid.eq(full | o2), self.o.payload.eq(Mux(full, skid, y2))]
        with m.If(full & self.o.ready):
            m.d.sync += full.eq(0)
        with m.Elif(~full & o2 & ~self.o.ready):
            m.d.sync += [full.eq(1), skid.eq(y2)]
        return m


_FLAGS = ("inwin", "first", "last")


def _flags(axis: tuple[Axis, ...], name: str) -> list[Signal]:
    """The flags of an axis' coordinate 0, as registers."""
    return [Signal(init=int(getattr(axis[0], f)), name=f"{name}_{f}") for f in _FLAGS]


def _step_flags(m: Module, flags: list[Signal], axis: tuple[Axis, ...], index: Value) -> None:
    """Load the flags of the coordinate after `index`."""
    for sig, f in zip(flags, _FLAGS, strict=True):
        m.d.sync += sig.eq(_next([int(getattr(a, f)) for a in axis], index))


def _maxpool2d(node: MaxPool2d, ctx: Ctx) -> MaxPoolBlock:
    if ctx.order != "hwc" or len(ctx.in_shape) != 3:  # checked before the block exists
        raise ValueError(f"{node.name}: maxpool2d takes a (C, H, W) input in HWC order")
    return MaxPoolBlock(node, ctx)


COMPONENTS["maxpool2d"] = _maxpool2d
