"""The dense block: a double-buffered input, weights in ROM, P multiply-accumulates per cycle."""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from cosyn.hw.rtl._base import COMPONENTS, Ctx, element_shape, element_stream
from cosyn.hw.rtl._rom import weight_roms
from cosyn.perfmodel.blocks import TIMINGS

from cosyn.ir.nodes import Dense

__all__ = ["DenseBlock"]


class DenseBlock(wiring.Component):
    """acc[o] = bias[o] + sum_i weight[o, i] * x[i], in the node's accumulator type.

    Members: `i` (In, element stream of the input type), `o` (Out, element stream of
    `node.dtype`, outputs in index order).

    The N inputs of a sample are written to one of two buffers while the other is
    read: the next sample streams in while this one computes. The O outputs are
    computed P at a time (P = `ctx.parallelism`, which divides O): for group g, P
    multipliers take one input element per cycle and the weights of outputs g*P ..
    g*P+P-1 from one ROM row, so a group takes N cycles. Its P results are loaded into
    an output shift register and leave one per cycle while the next group
    accumulates; the pipeline stalls only while that register is still full.
    Weight columns are stored in stream order (`ctx.index()`), so a flatten in front
    costs nothing.

    Timing: `cycles` (`perfmodel.blocks.DenseTiming`), the model of this control.
    """

    def __init__(self, node: Dense, ctx: Ctx) -> None:
        self.cycles = TIMINGS["dense"](node, ctx)
        self.node, self.ctx = node, ctx
        self.p, self.n, self.groups = self.cycles.p, self.cycles.n, self.cycles.groups
        super().__init__(
            {"i": In(element_stream(ctx.in_type)), "o": Out(element_stream(node.dtype))}
        )

    def _roms(self, m: Module) -> tuple:
        w = self.node.weight[:, self.ctx.index()]  # columns in stream order
        rows = w.reshape(self.groups, self.p, self.n).transpose(0, 2, 1).reshape(-1, self.p)
        return weight_roms(m, rows, self.node.bias.reshape(self.groups, self.p))

    def elaborate(self, platform) -> Module:
        m = Module()
        n, p, groups = self.n, self.p, self.groups
        m.submodules.buf = buf = memory.Memory(
            shape=element_shape(self.ctx.in_type), depth=2 * n, init=[]
        )
        bw, brd = buf.write_port(), buf.read_port(transparent_for=())
        wr, br, ws, bs = self._roms(m)
        full = Array(Signal(name=f"full{k}") for k in range(2))

        # input side: fill the buffer that is not full
        wr_bank, wr_i = Signal(), Signal(range(max(n, 2)))
        m.d.comb += [self.i.ready.eq(~full[wr_bank]), bw.data.eq(self.i.payload)]
        m.d.comb += [bw.addr.eq(wr_bank * n + wr_i), bw.en.eq(self.i.valid & self.i.ready)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += wr_i.eq(wr_i + 1)
            with m.If(wr_i == n - 1):
                m.d.sync += [wr_i.eq(0), wr_bank.eq(~wr_bank), full[wr_bank].eq(1)]

        # output side: a shift register of P results
        acc_shape = element_shape(self.node.dtype)
        outs = [Signal(acc_shape, name=f"out{j}") for j in range(p)]
        left = Signal(range(p + 1))
        m.d.comb += [self.o.valid.eq(left != 0), self.o.payload.eq(outs[0])]
        free = (left == 0) | ((left == 1) & self.o.ready)

        # stage 1 holds the element read last cycle; it stalls on a full output register
        s1_valid, s1_first, s1_last = Signal(), Signal(), Signal()
        stall = s1_valid & s1_last & ~free
        rd_bank, g, i = Signal(), Signal(range(max(groups, 2))), Signal(range(max(n, 2)))
        issue = full[rd_bank] & ~stall
        m.d.comb += [brd.addr.eq(rd_bank * n + i), wr.addr.eq(g * n + i), br.addr.eq(g)]
        m.d.comb += [brd.en.eq(~stall), wr.en.eq(~stall), br.en.eq(~stall)]
        with m.If(~stall):
            m.d.sync += [s1_valid.eq(issue), s1_first.eq(i == 0), s1_last.eq(i == n - 1)]
        with m.If(issue):
            self._advance(m, full, rd_bank, g, i)

        accs = [Signal(acc_shape, name=f"acc{j}") for j in range(p)]
        x = brd.data.as_signed() if self.ctx.in_type.signed else brd.data
        # partial sums wrap modulo 2**bits; the full sum is in the accumulator's range
        starts = [Mux(s1_first, bs[j], accs[j]) for j in range(p)]
        sums = [(starts[j] + ws[j] * x)[: acc_shape.width] for j in range(p)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += left.eq(left - 1)
            m.d.sync += [outs[j].eq(outs[j + 1]) for j in range(p - 1)]
        with m.If(s1_valid & ~stall):
            with m.If(s1_last):
                m.d.sync += [left.eq(p)] + [outs[j].eq(sums[j]) for j in range(p)]
            with m.Else():
                m.d.sync += [accs[j].eq(sums[j]) for j in range(p)]
        return m

    def _advance(self, m: Module, full, rd_bank, g, i) -> None:
        """Step the read counters: element, then group, then the next buffer."""
        m.d.sync += i.eq(i + 1)
        with m.If(i == self.n - 1):
            m.d.sync += [i.eq(0), g.eq(g + 1)]
            with m.If(g == self.groups - 1):
                m.d.sync += [g.eq(0), rd_bank.eq(~rd_bank), full[rd_bank].eq(0)]


def _dense(node: Dense, ctx: Ctx) -> DenseBlock:
    return DenseBlock(node, ctx)


COMPONENTS["dense"] = _dense
