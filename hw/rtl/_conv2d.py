"""The conv2d block: a line buffer, a sliding window, P multiply-accumulates per cycle.

Built by `COMPONENTS["conv2d"](node, ctx)` with `ctx.in_type`, `ctx.in_shape` (C, H,
W), `ctx.order == "hwc"` and `ctx.parallelism` (a divisor of the output channels).
Its timing is `perfmodel.conv` (`ConvTiming`, from `_State`, the cycle model of this
control): the block back-pressures its input while the line buffer holds rows still
to be read, so the timing takes the cycles inputs are *offered* and says when they
are taken.
"""

from __future__ import annotations

import operator
from functools import reduce

import numpy as np
from amaranth.hdl import C, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from cosyn.hw.rtl._base import COMPONENTS, Ctx, element_shape, element_stream
from cosyn.hw.rtl._rom import weight_roms
from cosyn.perfmodel.blocks import TIMINGS
from cosyn.perfmodel.conv import ConvGeometry

from cosyn.ir.nodes import Conv2d

__all__ = ["Conv2dBlock"]


def _add_mod(a, k: int, r: int):
    """(a + k) mod r for 0 <= a < r and a constant k (any sign)."""
    k %= r
    return Mux(a >= r - k, a - (r - k), a + k) if k else a


def _clamp(v, span: tuple[int, int], lo: int, hi: int):
    """v clamped to [lo, hi], v known to lie in `span`: no comparison that cannot hold
    (Verilator's lint flags those)."""
    if span[0] < lo:
        v = Mux(v < lo, lo, v)
    if span[1] > hi:
        v = Mux(v > hi, hi, v)
    return v


def _outside(v, span: tuple[int, int], n: int) -> list:
    """The conditions under which v (known to lie in `span`) is outside 0 .. n-1."""
    return ([v < 0] if span[0] < 0 else []) + ([v >= n] if span[1] >= n else [])


def _step(m: Module, sig: Signal, last: int) -> object:
    """sig counts 0..last and wraps; returns the wrap condition."""
    wrap = sig == last
    m.d.sync += sig.eq(Mux(wrap, 0, sig + 1))
    return wrap


class Conv2dBlock(wiring.Component):
    """acc[o, y, x] = bias[o] + sum_{c,ky,kx} weight[o,c,ky,kx] * xpad[c, y*sh+ky, x*sw+kx].

    Members: `i` (In, element stream of `ctx.in_type`, the (C, H, W) input in HWC
    order), `o` (Out, element stream of `node.dtype`, the (O, OH, OW) output in HWC
    order). Zero padding and stride as in the node.

    The input is written to a line buffer of R = min(KH + SH, H') rows of W*C elements
    (a dual-port memory; rows rotate through the R slots): the KH rows a window
    reads plus SH rows that stream in while the current output row computes, so
    the multipliers rarely wait for a row.
    For each output pixel, once the input up to its window's last element has
    arrived, the window is read one element per cycle (zero outside the image) and
    broadcast to P multipliers that take P output channels' weights from one ROM row:
    a group of P channels takes KH*KW*C cycles, the O/P groups of a pixel follow
    each other. A group's P sums go to an output shift register and leave one per
    cycle while the next group accumulates; a group's last term waits for that
    register to empty. The input stalls when its row would overwrite one the current
    output row still reads. Rows below the last window are taken and dropped (H' rows
    are kept).

    Timing: `cycles` (`perfmodel.conv.ConvTiming`), the model of this control.
    """

    def __init__(self, node: Conv2d, ctx: Ctx) -> None:
        self._MustUse__silence = True  # until the checks pass
        if ctx.order != "hwc" or len(ctx.in_shape) != 3:
            raise ValueError(f"{node.name}: conv2d takes a (C, H, W) input in HWC order")
        self.node, self.ctx = node, ctx
        self.cycles = TIMINGS["conv2d"](node, ctx)
        self.geo = self.cycles.geo
        self._MustUse__silence = False
        super().__init__(
            {"i": In(element_stream(ctx.in_type)), "o": Out(element_stream(node.dtype))}
        )

    def _roms(self, m: Module) -> tuple:
        g = self.geo
        w = self.node.weight.transpose(0, 2, 3, 1)  # (O, KH, KW, C): window order
        rows = w.reshape(g.groups, g.p, g.terms).transpose(0, 2, 1).reshape(-1, g.p)
        return weight_roms(m, rows, np.asarray(self.node.bias).reshape(g.groups, g.p))

    def _writer(self, m: Module, lo, ahead, fw: Signal) -> Signal:
        """Input side: rows into rotating slots; returns the count of elements in the frame."""
        g = self.geo
        wy, wcol = Signal(range(g.h)), Signal(range(g.w * g.c))
        wcount, waddr = Signal(range(g.frame_in)), Signal(range(g.rows * g.w * g.c))
        drop = (wy > g.y_end) if g.y_end < g.h - 1 else C(0, 1)
        row = Mux(ahead, g.h_used + wy, wy)
        m.d.comb += self.i.ready.eq(drop | (row < lo + g.rows))
        take = self.i.valid & self.i.ready
        wr = self._lb_wr
        m.d.comb += [wr.addr.eq(waddr), wr.data.eq(self.i.payload), wr.en.eq(take & ~drop)]
        with m.If(take):
            with m.If(~drop):
                _step(m, waddr, g.rows * g.w * g.c - 1)
            m.d.sync += wcount.eq(wcount + 1)
            with m.If(_step(m, wcol, g.w * g.c - 1)), m.If(_step(m, wy, g.h - 1)):
                m.d.sync += [wcount.eq(0), fw.eq(~fw)]
        return wcount

    def elaborate(self, platform) -> Module:
        m = Module()
        g = self.geo
        m.submodules.lbuf = lbuf = memory.Memory(
            shape=element_shape(self.ctx.in_type), depth=g.rows * g.w * g.c, init=[]
        )
        self._lb_wr, lb_rd = lbuf.write_port(), lbuf.read_port()
        s = _Window(g)
        ahead = s.fw ^ s.fc  # the writer is in the next frame: all of this one is in
        lo = Signal(range(g.h_used))
        m.d.comb += lo.eq(_clamp(s.y_top, s.y_span, 0, g.lo_max))
        wcount = self._writer(m, lo, ahead, s.fw)
        outs, left = self._output(m)
        v1, last1, first1, pad1 = Signal(), Signal(), Signal(), Signal()
        outside = self._issue(m, s, lb_rd, ahead, wcount, left, (v1, last1, first1, pad1))
        self._mac(m, lb_rd, outs, left, (v1, last1, first1, pad1), outside)
        return m

    def _output(self, m: Module) -> tuple[list[Signal], Signal]:
        """A shift register of P results and the count still to leave; outs[0] is `o`."""
        acc_shape = element_shape(self.node.dtype)
        outs = [Signal(acc_shape, name=f"out{j}") for j in range(self.geo.p)]
        left = Signal(range(self.geo.p + 1))
        m.d.comb += [self.o.valid.eq(left != 0), self.o.payload.eq(outs[0])]
        return outs, left

    def _issue(self, m: Module, s: _Window, lb_rd, ahead, wcount, left, stage) -> list:
        """One window term per cycle, when its data is in and its result has room: the
        line-buffer, weight and bias reads; returns the padding conditions."""
        g = self.geo
        v1, last1, first1, pad1 = stage
        wr, br, self._ws, self._bs = self._roms(m)
        last_pixel = (s.oy == g.oh - 1) & (s.ox == g.ow - 1)
        avail = ahead | (~last_pixel & (wcount > s.need(g)))
        free = ~(v1 & last1) & ((left == 0) | ((left == 1) & self.o.ready))
        go = (~(s.first & (s.gi == 0)) | avail) & (~s.last | free)
        y, x = s.y_top + s.ky, s.x_left + s.kx
        y_span, x_span = (
            (s.y_span[0], s.y_span[1] + g.kh - 1),
            (s.x_span[0], s.x_span[1] + g.kw - 1),
        )
        outside = _outside(y, y_span, g.h) + _outside(x, x_span, g.w)
        pad = reduce(operator.or_, outside) if outside else C(0, 1)
        addr = s.rslot * (g.w * g.c) + x * g.c + s.c
        m.d.comb += [
            lb_rd.addr.eq(Mux(pad, 0, addr) if outside else addr),
            wr.addr.eq(s.widx),
            br.addr.eq(s.gi),
        ]
        m.d.sync += [v1.eq(go), last1.eq(go & s.last), first1.eq(s.first), pad1.eq(pad)]
        with m.If(go):
            s.advance(m)
        return outside

    def _mac(self, m: Module, lb_rd, outs, left, stage, outside) -> None:
        """P multiply-accumulates on the term read last cycle; a group's last term loads
        the output register. Partial sums wrap modulo 2**bits; the full sum fits."""
        g = self.geo
        v1, last1, first1, pad1 = stage
        acc_shape = element_shape(self.node.dtype)
        accs = [Signal(acc_shape, name=f"acc{j}") for j in range(g.p)]
        xv = Mux(pad1, 0, lb_rd.data) if outside else lb_rd.data
        starts = [Mux(first1, self._bs[j], accs[j]) for j in range(g.p)]
        sums = [(starts[j] + self._ws[j] * xv)[: acc_shape.width] for j in range(g.p)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += left.eq(left - 1)
            m.d.sync += [outs[j].eq(outs[j + 1]) for j in range(g.p - 1)]
        with m.If(v1):
            with m.If(last1):
                m.d.sync += [left.eq(g.p)] + [outs[j].eq(sums[j]) for j in range(g.p)]
            with m.Else():
                m.d.sync += [accs[j].eq(sums[j]) for j in range(g.p)]


class _Window:
    """The compute position: output pixel (oy, ox), group gi, window term (ky, kx, c).

    `y_top`/`x_left` are the window's top-left input coordinates (negative in the
    padding); `fbase` the line-buffer slot of the frame's row 0, `top_slot` that of
    row y_top and `rslot` that of row y_top + ky (all modulo the buffer's rows, so a
    row in the top padding has a slot too); `widx` the weight ROM row; `fc` the frame
    parity.
    """

    def __init__(self, g: ConvGeometry) -> None:
        self.g = g
        self.fw, self.fc = Signal(), Signal()
        self.oy, self.ox = Signal(range(g.oh)), Signal(range(g.ow))
        self.y_top = Signal(range(-g.ph, (g.oh - 1) * g.sh - g.ph + 1), init=-g.ph)
        self.x_left = Signal(range(-g.pw, (g.ow - 1) * g.sw - g.pw + 1), init=-g.pw)
        self.gi, self.ky, self.kx, self.c = (
            Signal(range(n), name=nm)
            for n, nm in ((g.groups, "gi"), (g.kh, "ky"), (g.kw, "kx"), (g.c, "c"))
        )
        self.y_span = (-g.ph, (g.oh - 1) * g.sh - g.ph)
        self.x_span = (-g.pw, (g.ow - 1) * g.sw - g.pw)
        self.widx = Signal(range(g.groups * g.terms))
        self.fbase = Signal(range(g.rows))
        self.top_slot = Signal(range(g.rows), init=-g.ph % g.rows)
        self.rslot = Signal(range(g.rows), init=-g.ph % g.rows)
        self.first = (self.ky == 0) & (self.kx == 0) & (self.c == 0)
        self.last = (self.ky == g.kh - 1) & (self.kx == g.kw - 1) & (self.c == g.c - 1)

    def need(self, g: ConvGeometry):
        """Index in the frame of the last input element the current window reads."""
        dy, dx = g.kh - 1, g.kw - 1
        ys, xs = (
            (self.y_span[0] + dy, self.y_span[1] + dy),
            (self.x_span[0] + dx, self.x_span[1] + dx),
        )
        row = _clamp(self.y_top + dy, ys, ys[0], g.h - 1)  # only the far edge is clamped
        col = _clamp(self.x_left + dx, xs, xs[0], g.w - 1)
        return (row * g.w + col) * g.c + (g.c - 1)

    def advance(self, m: Module) -> None:
        """Step the term, then the group, the pixel, the row and the frame."""
        g = self.g
        _step(m, self.widx, g.groups * g.terms - 1)
        with m.If(_step(m, self.c, g.c - 1)), m.If(_step(m, self.kx, g.kw - 1)):
            m.d.sync += self.rslot.eq(_add_mod(self.rslot, 1, g.rows))
            with m.If(_step(m, self.ky, g.kh - 1)):
                m.d.sync += self.rslot.eq(self.top_slot)
                with m.If(_step(m, self.gi, g.groups - 1)):
                    self._next_pixel(m)

    def _next_pixel(self, m: Module) -> None:
        g = self.g
        m.d.sync += self.x_left.eq(self.x_left + g.sw)
        with m.If(_step(m, self.ox, g.ow - 1)):
            m.d.sync += self.x_left.eq(-g.pw)
            top = _add_mod(self.top_slot, g.sh, g.rows)
            m.d.sync += [
                self.y_top.eq(self.y_top + g.sh),
                self.top_slot.eq(top),
                self.rslot.eq(top),
            ]
            with m.If(_step(m, self.oy, g.oh - 1)):
                top = _add_mod(self.fbase, g.h_used - g.ph, g.rows)
                m.d.sync += [
                    self.y_top.eq(-g.ph),
                    self.fbase.eq(_add_mod(self.fbase, g.h_used, g.rows)),
                    self.top_slot.eq(top),
                    self.rslot.eq(top),
                    self.fc.eq(~self.fc),
                ]


def _conv2d(node: Conv2d, ctx: Ctx) -> Conv2dBlock:
    return Conv2dBlock(node, ctx)


COMPONENTS["conv2d"] = _conv2d
