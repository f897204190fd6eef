"""The conv2d block: a line buffer, a sliding window, P multiply-accumulates per cycle.

Built by `COMPONENTS["conv2d"](node, ctx)` with `ctx.in_type`, `ctx.in_shape` (C, H,
W), `ctx.order == "hwc"` and `ctx.parallelism` (P; with conv groups, a divisor of a group's
output channels).
Its timing is `perfmodel.conv` (`ConvTiming`, from `conv_state.State`, the cycle model of this
control): the block back-pressures its input while the line buffer holds rows still
to be read, so the timing takes the cycles inputs are *offered* and says when they
are taken.
"""

from __future__ import annotations

from amaranth.hdl import C, Module, Mux, Signal
from amaranth.lib import wiring
from cosyn.hw.rtl._base import COMPONENTS, Ctx, element_shape, ports
from cosyn.hw.rtl._buffer import Buffer, pack, unpack, word_shape
from cosyn.hw.rtl._mac import MacLanes
from cosyn.hw.rtl._rom import weight_roms
from cosyn.hw.rtl._window import SparseWindow, Window, step
from cosyn.perfmodel.blocks import TIMINGS
from cosyn.perfmodel.resources import issued_rows, lane_rows, weight_rows, window_weights

from cosyn.ir.nodes import Conv2d

__all__ = ["Conv2dBlock"]


class Conv2dBlock(wiring.Component):
    """acc[o, y, x] = bias[o] + sum_{c,ky,kx} weight[o,c,ky,kx] * xpad[b+c, y*sh+ky, x*sw+kx],
    c over the C/G channels of o's conv group, from its first b (G = 1: all C, b = 0).

    Members: `i` (In, element stream of `ctx.in_type`, the (C, H, W) input in HWC
    order), `o` (Out, element stream of `node.dtype`, the (O, OH, OW) output in HWC
    order). Zero padding and stride as in the node.

    The input is written to a line buffer of R = min(KH + SH + spare, H') rows of W*C
    elements (a dual-port memory; rows rotate through the R slots): the KH rows a
    window reads, SH rows that stream in while the current output row computes, and
    the spare rows `perfmodel.conv.with_spare_rows` gives a block whose windows take
    longer than a row's input (the next sample's first rows then arrive while the last
    windows are read), so the multipliers rarely wait for a row.
    For each output pixel, once the input up to its window's last element has arrived,
    the window is read one element per cycle (zero outside the image) and broadcast to P
    lanes that take P output channels' weights from one ROM row: a group of P channels
    (of one conv group) takes KH*KW*C/G cycles, the ceil(O/P) groups of a pixel follow
    each other (where P does not divide O, the last group's lanes beyond O hold zero
    weights and their results are not loaded). The terms pass the multiply-accumulate
    pipeline (`MacLanes`), and a group's results leave one per cycle from its output
    register while the next group computes. The input stalls when its row would
    overwrite one the current output row still reads. Rows below the last window are
    taken and dropped (H' rows are kept).

    With SIMD S (`ctx.simd`, a divisor of C/G), a line-buffer word holds S consecutive
    channels of a pixel (the writer packs them), a term is a word, and each lane
    multiplies its S weights by the word's S elements and sums the products at once
    (`MacLanes`): a group takes KH*KW*C/G/S cycles, with S times the multipliers.

    Timing: `cycles` (`perfmodel.conv.ConvTiming`), the model of this control.
    """

    def __init__(self, node: Conv2d, ctx: Ctx) -> None:
        self.node, self.ctx = node, ctx
        self.cycles = TIMINGS["conv2d"](node, ctx)
        self.geo = self.cycles.geo
        super().__init__(ports(ctx, node.dtype))

    def _roms(self, m: Module, addr, en) -> tuple:
        g, kept = self.geo, self.cycles.kept
        rows = weight_rows(window_weights(self.node), g.p, g.simd)
        if kept is not None:  # the issued terms' rows alone
            rows = issued_rows(rows, kept, g.terms)
        bias = lane_rows(self.node.bias, g.p).reshape(g.groups, g.p)
        return weight_roms(m, rows, bias, addr, en)

    def _writer(self, m: Module, s: Window, ahead) -> Signal:
        """Input side: rows into rotating slots, while the row is below the window's bound
        (`s.lor`; `s.lora` while the writer is a frame ahead), S elements a word (`pack`);
        returns the count of elements in the frame."""
        g = self.geo
        wy, wcol = Signal(range(g.h)), Signal(range(g.w * g.c))
        wcount, waddr = Signal(range(g.frame_in)), Signal(range(g.rows * g.w * g.words))
        drop = (wy > g.y_end) if g.y_end < g.h - 1 else C(0, 1)
        m.d.comb += self.i.ready.eq(drop | Mux(ahead, wy < s.lora, wy < s.lor))
        take = self.i.valid & self.i.ready
        word, put = pack(m, self.i.payload, g.simd, take)
        self._lbuf.write(m, waddr, word, put & ~drop)
        with m.If(put & ~drop):
            step(m, waddr, g.rows * g.w * g.words - 1)
        with m.If(take):
            m.d.sync += wcount.eq(wcount + 1)
            with m.If(step(m, wcol, g.w * g.c - 1)), m.If(step(m, wy, g.h - 1)):
                m.d.sync += [wcount.eq(0), s.fw.eq(~s.fw)]
        return wcount

    def elaborate(self, platform) -> Module:
        m = Module()
        g = self.geo
        bits = element_shape(self.ctx.in_type)
        self._lbuf = Buffer(m, "lbuf", word_shape(bits, g.simd), g.rows * g.w * g.words)
        s = Window(g) if self.cycles.kept is None else SparseWindow(m, g, self.cycles.kept)
        ahead = s.fw ^ s.fc  # the writer is in the next frame: all of this one is in
        wcount = self._writer(m, s, ahead)
        mac = MacLanes(g.p, element_shape(self.node.dtype), self.o, g.short, g.simd)
        br, ws, bs, block = self._roms(m, s.widx, mac.runs[0])
        pad1 = self._issue(m, s, ahead, wcount, mac)
        data = self._lbuf.read(m, s.address(), ~mac.stall)  # outside the image: any word
        x = Mux(pad1, 0, data) if pad1 is not None else data
        mac.datapath(m, unpack(x, bits, g.simd), ws, br, bs, block)
        return m

    def _issue(self, m: Module, s: Window, ahead, wcount, mac: MacLanes):
        """One window term per cycle, when its data is in and the pipeline runs: the
        line-buffer and weight reads (addresses are registers); returns the term's
        padding flag at stage 1 (None where no window reaches the padding)."""
        run = ~mac.stall
        avail = ahead | (~s.lastpix & (wcount > s.need))
        go = (~s.start | avail) & run
        mac.control(m, go, s.first, s.last, s.gi, s.gi == self.geo.groups - 1)
        s.read_ahead(m, go)
        with m.If(go):
            s.advance(m)
        pad = s.pad()
        if pad is None:
            return None
        pad1 = Signal()
        with m.If(run):
            m.d.sync += pad1.eq(pad)
        return pad1


def _conv2d(node: Conv2d, ctx: Ctx) -> Conv2dBlock:
    if ctx.order != "hwc" or len(ctx.in_shape) != 3:  # checked before the block exists
        raise ValueError(f"{node.name}: conv2d takes a (C, H, W) input in HWC order")
    return Conv2dBlock(node, ctx)


COMPONENTS["conv2d"] = _conv2d
