"""The dense block: a double-buffered input, weights in ROM, P multiply-accumulates per cycle."""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import memory, wiring
from cosyn.hw.rtl._base import COMPONENTS, Ctx, element_shape, ports
from cosyn.hw.rtl._buffer import Buffer, pack, unpack, word_shape
from cosyn.hw.rtl._mac import MacLanes
from cosyn.hw.rtl._rom import memory_attrs, weight_roms
from cosyn.hw.rtl._window import step
from cosyn.perfmodel.blocks import TIMINGS
from cosyn.perfmodel.resources import issued_rows, lane_rows, term_words, weight_rows

from cosyn.ir.nodes import Dense

__all__ = ["DenseBlock"]


class DenseBlock(wiring.Component):
    """acc[o] = bias[o] + sum_i weight[o, i] * x[i], in the node's accumulator type.

    Members: `i` (In, element stream of the input type), `o` (Out, element stream of
    `node.dtype`, outputs in index order).

    The N inputs of a sample are written to one of two buffers while the other is read: the
    next sample streams in while this one computes. The O outputs are computed P at a
    time (P = `ctx.parallelism`): group g issues one term per cycle, input element i and
    the weights of outputs g*P .. g*P+P-1 (one ROM row), so a group takes N cycles.
    Where P does not divide O, the last group's lanes beyond O hold zero weights and
    their results are not loaded. The terms pass the multiply-accumulate pipeline
    (`MacLanes`: read, register, multiply, accumulate), and a group's P results leave
    one per cycle from its output register while the next group computes. Weight columns
    are stored in stream order (`ctx.index()`), so a flatten in front costs nothing.

    With SIMD S (`ctx.simd`, dividing N), a buffer word holds S consecutive input
    elements (the writer packs them), a term is a word, and each lane multiplies its S
    weights by the word's S elements and sums the products (`MacLanes`): a group takes
    N / S cycles, with S times the multipliers.

    Without SIMD, where enough weights are zero (`perfmodel.blocks.sparse_terms`), group
    g issues only the terms whose P weights are not all zero: the weight ROM holds their
    rows alone, and a term ROM (`perfmodel.resources.term_words`) gives each term's
    input element and whether it is its group's first or last. The term ROM's word for
    the next term is read while a term issues, so the buffer's address is the word plus
    the bank's base: cycles follow the non-zero weights.

    Timing: `cycles` (`perfmodel.blocks.DenseTiming`), the model of this control.
    """

    def __init__(self, node: Dense, ctx: Ctx) -> None:
        self.cycles = TIMINGS["dense"](node, ctx)
        self.node, self.ctx = node, ctx
        self.p, self.n, self.groups = self.cycles.p, self.cycles.n, self.cycles.groups
        self.simd, self.words = self.cycles.simd, self.cycles.words
        super().__init__(ports(ctx, node.dtype))

    def _roms(self, m: Module, addr, en, kept: list[np.ndarray] | None) -> tuple:
        rows = weight_rows(self.node.weight[:, self.ctx.index()], self.p, self.simd)  # stream order
        if kept is not None:  # the issued terms' rows alone
            rows = issued_rows(rows, kept, self.n)
        bias = lane_rows(self.node.bias, self.p).reshape(self.groups, self.p)
        return weight_roms(m, rows, bias, addr, en)

    def elaborate(self, platform) -> Module:
        m = Module()
        bits = element_shape(self.ctx.in_type)
        buf = Buffer(m, "buf", word_shape(bits, self.simd), 2 * self.words)
        full = Array(Signal(name=f"full{k}") for k in range(2))
        self._writer(m, buf, full)
        mac = MacLanes(
            self.p, element_shape(self.node.dtype), self.o, self.cycles.sizes[-1], self.simd
        )

        # the issue stage: a term of group g, while the pipeline does not stall
        rd_bank, g = Signal(), Signal(range(max(self.groups, 2)))
        issue = full[rd_bank] & ~mac.stall
        kept = self.cycles.kept  # the terms each group issues (None: all of them)
        if kept is None:
            raddr, widx, first, last = self._counters(m, full, rd_bank, g, issue)
        else:
            raddr, widx, first, last = self._terms(m, full, rd_bank, g, issue, kept)
        br, ws, bs, block = self._roms(m, widx, mac.runs[0], kept)
        mac.control(m, issue, first, last, g, g == self.groups - 1)
        x = unpack(buf.read(m, raddr, ~mac.stall), bits, self.simd)
        mac.datapath(m, x, ws, br, bs, block)
        return m

    def _counters(self, m: Module, full, rd_bank, g, issue) -> tuple:
        """Every term: word i of group g; the addresses are counters of their own
        (bank * words + i, g * words + i)."""
        n = self.words
        i = Signal(range(max(n, 2)))
        raddr, widx = Signal(range(2 * n)), Signal(range(self.groups * n))
        with m.If(issue):
            self._advance(m, full, rd_bank, g, i)
            self._addresses(m, rd_bank, g, i, raddr, widx)
        return raddr, widx, i == 0, i == n - 1

    def _terms(self, m: Module, full, rd_bank, g, issue, kept: list[np.ndarray]) -> tuple:
        """The terms of `kept`: term t's word (element, first, last) is read from the term
        ROM at `ahead` while term t - 1 issues (and once after reset), so it is on the
        port's output when t issues; `widx` counts the terms (the weight row)."""
        words, bits = term_words(kept, self.n)
        total = len(words)
        rom = memory.Memory(
            shape=bits + 2, depth=total, init=words, attrs=memory_attrs(total, True)
        )
        m.submodules.terms = rom
        port = rom.read_port()
        ahead, widx = Signal(range(max(total, 2))), Signal(range(max(total, 2)))
        primed = Signal()
        read = issue | ~primed
        m.d.comb += [port.addr.eq(ahead), port.en.eq(read)]
        with m.If(read):
            m.d.sync += [primed.eq(1), ahead.eq(Mux(ahead == total - 1, 0, ahead + 1))]
        col, first, last = port.data[:bits], port.data[bits], port.data[bits + 1]
        raddr = Signal(range(2 * self.n))
        m.d.comb += raddr.eq(Mux(rd_bank, self.n, 0) + col)
        with m.If(issue):
            m.d.sync += widx.eq(Mux(widx == total - 1, 0, widx + 1))
            with m.If(last):
                m.d.sync += g.eq(g + 1)
                with m.If(g == self.groups - 1):
                    m.d.sync += [g.eq(0), rd_bank.eq(~rd_bank), full[rd_bank].eq(0)]
        return raddr, widx, first, last

    def _writer(self, m: Module, buf: Buffer, full) -> None:
        """Input side: fill the buffer that is not full, S elements a word (`pack`; the
        write address counts 0 .. 2 * words - 1: bank 0's words, then bank 1's)."""
        n = self.n
        wr_bank, wr_i = Signal(), Signal(range(max(n, 2)))
        waddr = Signal(range(2 * self.words))
        take = self.i.valid & self.i.ready
        m.d.comb += self.i.ready.eq(~full[wr_bank])
        word, put = pack(m, self.i.payload, self.simd, take)
        buf.write(m, waddr, word, put)
        with m.If(put):
            step(m, waddr, 2 * self.words - 1)
        with m.If(take):
            m.d.sync += wr_i.eq(wr_i + 1)
            with m.If(wr_i == n - 1):
                m.d.sync += [wr_i.eq(0), wr_bank.eq(~wr_bank), full[wr_bank].eq(1)]

    def _advance(self, m: Module, full, rd_bank, g, i) -> None:
        """Step the read counters: element, then group, then the next buffer."""
        m.d.sync += i.eq(i + 1)
        with m.If(i == self.words - 1):
            m.d.sync += [i.eq(0), g.eq(g + 1)]
            with m.If(g == self.groups - 1):
                m.d.sync += [g.eq(0), rd_bank.eq(~rd_bank), full[rd_bank].eq(0)]

    def _addresses(self, m: Module, rd_bank, g, i, raddr, widx) -> None:
        """Step the buffer address (rd_bank * words + i) and the weight row (g * words + i)."""
        n = self.words
        m.d.sync += [raddr.eq(raddr + 1), widx.eq(widx + 1)]
        with m.If(i == n - 1):
            with m.If(g == self.groups - 1):
                m.d.sync += [raddr.eq(Mux(rd_bank, 0, n)), widx.eq(0)]
            with m.Else():
                m.d.sync += raddr.eq(Mux(rd_bank, n, 0))


def _dense(node: Dense, ctx: Ctx) -> DenseBlock:
    return DenseBlock(node, ctx)


COMPONENTS["dense"] = _dense
