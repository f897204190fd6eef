"""The pooling block: a line buffer of running maxima (maxpool2d) or window sums
(avgpool2d), one input element per cycle.

Built by `COMPONENTS["maxpool2d"]` or `COMPONENTS["avgpool2d"]` `(node, ctx)` with
`ctx.in_type`, `ctx.in_shape` (C, H, W) and `ctx.order == "hwc"`. Its geometry, timing
and resources are `perfmodel.pool` (`PoolGeometry`, `PoolTiming`, the cycle model of
this control, the same for both kinds).
"""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from cosyn.hw.rtl._base import COMPONENTS, Ctx, element_shape, ports
from cosyn.hw.rtl._buffer import Buffer
from cosyn.hw.rtl._window import step
from cosyn.perfmodel.blocks import TIMINGS
from cosyn.perfmodel.pool import Axis
from cosyn.perfmodel.resources import BANK, BLOCK, placement

from cosyn.ir.nodes import AvgPool2d, MaxPool2d

__all__ = ["MaxPoolBlock", "PoolBlock"]


def _next(values: list[int], index: Value) -> Value:
    """values[(index + 1) % len], a constant table in LUTs."""
    nxt = values[1:] + values[:1]
    if len(set(nxt)) == 1:
        return Const(nxt[0])
    return Array(Const(v) for v in nxt)[index]


class PoolBlock(wiring.Component):
    """out[c, oy, ox] = max (maxpool2d) or sum (avgpool2d) of channel c's window at (oy,
    ox), windows not overlapping. Padding changes neither (it is the minimum for a
    maximum, 0 for a sum), so the window's input elements are all it reads.

    Members: `i` (In, element stream of `ctx.in_type`, the (C, H, W) input in HWC
    order), `o` (Out, element stream of `node.dtype`, the (C, OH, OW) output in HWC
    order; a sum's type is the node's, wide enough for every window).

    The next element's position (c, x, y) is three counters; whether its column and row
    lie in a window, start it or end it, and its line-buffer address (output column * C
    + c) are registers stepped with them from small tables. The line buffer holds a
    running result (of the node's type) per output column and channel, a `Buffer`: LUT
    RAM banks of `BANK` words or, deeper than `perfmodel.resources.RAM_DEPTH`, one block
    RAM (`placement`). When an element is taken its word is read (stage 1: each bank's
    word registered); stage 2 registers the bank's word, or the result of the element
    two or three ahead where that one writes the word after the read; stage 3 registers
    the element where it starts its window, else the larger of it and that word (or the
    sum of the two), the word being the result of the element just ahead (in the stage-3
    register) where that one wrote it, both compares (or adds) at once, and writes it
    back a cycle later. The stage-3 register is the output, offered where the element
    ended its window. A skid register behind it takes a result the consumer does not
    take, and the stages and the input hold until it has left.

    Timing: `cycles` (`perfmodel.pool.PoolTiming`), the model of this control.
    """

    def __init__(self, node: MaxPool2d | AvgPool2d, ctx: Ctx) -> None:
        self.node, self.ctx = node, ctx
        self.sums = isinstance(node, AvgPool2d)
        self.cycles = TIMINGS[node.kind](node, ctx)
        self.geo = self.cycles.geo
        super().__init__(ports(ctx, node.dtype))

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

    def _buffer(self, m: Module) -> Buffer:
        """The line buffer: LUT RAM banks of `BANK` words, or one block RAM, by its depth."""
        depth = self.geo.depth
        block = placement(depth, rom=False) == BLOCK
        return Buffer(m, "lbuf", element_shape(self.node.dtype), depth, depth if block else BANK)

    def elaborate(self, platform) -> Module:
        m = Module()
        shape, out = element_shape(self.ctx.in_type), element_shape(self.node.dtype)
        full = Signal()  # the skid register holds a result
        run = ~full
        take = self.i.valid & run
        m.d.comb += self.i.ready.eq(run)
        inwin, first, last, addr = self._position(m, take)
        lbuf = self._buffer(m)
        # stage k holds its element, address and flags (w: in a window, f: starts it,
        # e: ends it); y3, y4, y5 the results of the last three elements
        x1, x2 = Signal(shape), Signal(shape)
        a1, a2, a3 = (Signal.like(addr, name=f"a{k}") for k in (1, 2, 3))
        w1, w2, w3, f1, f2, e1, e2, o3 = (Signal(name=n) for n in _STAGE_FLAGS)
        ma1, mb1, mc1, ma2 = (Signal(name=n) for n in ("ma1", "mb1", "mc1", "ma2"))
        y3, y4, r2, skid = (Signal(out, name=n) for n in ("y3", "y4", "r2", "skid"))
        word = lbuf.read(m, addr, run)  # stage 1: each bank's word registered
        with m.If(run):
            m.d.sync += [
                x1.eq(self.i.payload), a1.eq(addr), w1.eq(take & inwin), f1.eq(first),
                e1.eq(take & last),
                # the elements ahead write their results after this read: which one last
                # writes this word? Stage 2's result is in y3 and stage 3's in y4 when this
                # one is in stage 1 (chosen into r2 then), stage 1's in y3 when it compares
                ma1.eq(w1 & (a1 == addr)), mb1.eq(w2 & (a2 == addr)), mc1.eq(w3 & (a3 == addr)),
                x2.eq(x1), a2.eq(a1), w2.eq(w1), f2.eq(f1), e2.eq(e1), ma2.eq(ma1),
                r2.eq(Mux(mb1, y3, Mux(mc1, y4, word))),
            ]  # fmt: skip
        # both compares (adds) at once: no mux between a register and the carry chains
        if self.sums:
            larger = Mux(ma2, x2 + y3, x2 + r2)
        else:
            larger = Mux(ma2, Mux(x2 > y3, x2, y3), Mux(x2 > r2, x2, r2))
        new = Mux(f2, x2, larger)
        with m.If(run):
            m.d.sync += [y3.eq(new), y4.eq(y3), a3.eq(a2), w3.eq(w2), o3.eq(e2)]
        lbuf.write(m, a3, y3, run & w3)  # the result written back a cycle later
        m.d.comb += [self.o.valid.eq(full | o3), self.o.payload.eq(Mux(full, skid, y3))]
        with m.If(full & self.o.ready):
            m.d.sync += full.eq(0)
        with m.Elif(~full & o3 & ~self.o.ready):
            m.d.sync += [full.eq(1), skid.eq(y3)]
        return m


_STAGE_FLAGS = ("w1", "w2", "w3", "f1", "f2", "e1", "e2", "o3")
_FLAGS = ("inwin", "first", "last")


def _flags(axis: tuple[Axis, ...], name: str) -> list[Signal]:
    """The flags of an axis' coordinate 0, as registers."""
    return [Signal(init=int(getattr(axis[0], f)), name=f"{name}_{f}") for f in _FLAGS]


def _step_flags(m: Module, flags: list[Signal], axis: tuple[Axis, ...], index: Value) -> None:
    """Load the flags of the coordinate after `index`."""
    for sig, f in zip(flags, _FLAGS, strict=True):
        m.d.sync += sig.eq(_next([int(getattr(a, f)) for a in axis], index))


MaxPoolBlock = PoolBlock  # the name the maxpool2d block was first given


def _pool2d(node: MaxPool2d | AvgPool2d, ctx: Ctx) -> PoolBlock:
    if ctx.order != "hwc" or len(ctx.in_shape) != 3:  # checked before the block exists
        raise ValueError(f"{node.name}: {node.kind} takes a (C, H, W) input in HWC order")
    return PoolBlock(node, ctx)


COMPONENTS[MaxPool2d.kind] = COMPONENTS[AvgPool2d.kind] = _pool2d
