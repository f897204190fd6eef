"""The conv2d block's compute position, and what it derives, kept in registers.

The position is the counters of `perfmodel.conv_state.State` (pixel, group, window term,
row slots, frame parity). Everything the block computes from them, the line-buffer
address of the term, whether it lies in the padding, how much input its pixel needs,
and how far the writer may run ahead, is a register too, stepped with the counters by
adds and small tables indexed by a counter: no constant multiply and no compare chain
lies between a counter and the memories or the issue decision.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Array, Const, Module, Mux, Signal, Value
from amaranth.lib import memory
from cosyn.hw.rtl._rom import memory_attrs
from cosyn.perfmodel.conv import ConvGeometry
from cosyn.perfmodel.resources import conv_term_words

__all__ = ["SparseWindow", "Window", "add_mod", "step"]


def add_mod(a, k: int, r: int):
    """(a + k) mod r for 0 <= a < r and a constant k (any sign)."""
    k %= r
    return Mux(a >= r - k, a - (r - k), a + k) if k else a


def step(m: Module, sig: Signal, last: int) -> Value:
    """sig counts 0..last and wraps; returns the wrap condition."""
    wrap = sig == last
    m.d.sync += sig.eq(Mux(wrap, 0, sig + 1))
    return wrap


def _table(values: list[int], index: Value) -> Value:
    """values[index], a constant table in LUTs."""
    if len(set(values)) == 1:
        return Const(values[0])
    return Array(Const(v) for v in values)[index]


def _signal(lo: int, hi: int, init: int, name: str) -> Signal:
    return Signal(range(min(lo, init), max(hi, init) + 1), init=init, name=name)


class Window:
    """Counters: pixel (oy, ox), group gi, term (ky, kx, c) (c over the conv group's
    words, C/G/S of S channels each, from `cb`, the group's first, kept where G > 1;
    below, C counts words of S channels: `ConvGeometry.words`), `widx` the weight ROM row,
    `fbase`/`top_slot`/`rslot` the line-buffer slots of the frame's row 0, of row y_top
    and of row y_top + ky, `fc` the frame parity (`fw` the writer's); `start` and
    `lastpix` flag the first term of a pixel and the frame's last pixel.

    Derived registers: `y_top` and `yy` = y_top + ky (input rows, negative in the
    padding), `xc0` = x_left * C and `xc` = (x_left + kx) * C + cb + c, `laddr` = rslot * W*C
    + xc (the term's line-buffer address where it lies in the image), `need` (the
    frame index of the last input the pixel's window reads), `lor` and `lora` (the
    writer's row bound, lo + R, and that less H')."""

    def __init__(self, g: ConvGeometry) -> None:
        self.g = g
        wc = g.w * g.words
        self.fw, self.fc = Signal(), Signal()
        self.oy, self.ox = Signal(range(g.oh)), Signal(range(g.ow))
        self.gi, self.ky, self.kx, self.c = (
            Signal(range(n), name=nm)
            for n, nm in ((g.groups, "gi"), (g.kh, "ky"), (g.kw, "kx"), (g.cin_words, "c"))
        )
        # the first input channel of group gi's conv group (0 without conv groups)
        self.cb = Signal(range(g.words), name="cb") if g.cgroups > 1 else None
        self.widx = Signal(range(g.groups * g.terms))
        self.fbase = Signal(range(g.rows))
        self.top_slot = Signal(range(g.rows), init=-g.ph % g.rows)
        self.rslot = Signal(range(g.rows), init=-g.ph % g.rows)
        ytop_hi = (g.oh - 1) * g.sh - g.ph
        self.yy_span = (-g.ph, ytop_hi + g.kh - 1)
        self.xc_span = (-g.pw * g.words, ((g.ow - 1) * g.sw - g.pw + g.kw) * g.words - 1)
        self.y_top = _signal(-g.ph, ytop_hi, -g.ph, "y_top")
        self.yy = _signal(*self.yy_span, -g.ph, "yy")
        self.xc0 = _signal(
            -g.pw * g.words, ((g.ow - 1) * g.sw - g.pw) * g.words, -g.pw * g.words, "xc0"
        )
        self.xc = _signal(*self.xc_span, -g.pw * g.words, "xc")
        top0 = (-g.ph % g.rows) * wc - g.pw * g.words
        self.laddr = _signal(self.xc_span[0], (g.rows - 1) * wc + self.xc_span[1], top0, "laddr")
        needs = [
            [g.need(y * g.sh - g.ph, x * g.sw - g.pw) for x in range(g.ow)] for y in range(g.oh)
        ]
        flat = [n for row in needs for n in row]
        self.need = _signal(min(flat), max(flat), needs[0][0], "need")
        self._needs = needs
        lors = [min(max(y * g.sh - g.ph, 0), g.lo_max) + g.rows for y in range(g.oh)]
        self._lors = lors
        self.lor = _signal(min(lors), max(lors), lors[0], "lor")
        self.lora = _signal(min(lors) - g.h_used, max(lors) - g.h_used, lors[0] - g.h_used, "lora")
        self.start = Signal(init=1)  # the next term is a pixel's first (term 0 of group 0)
        self.lastpix = Signal(init=int(g.oh * g.ow == 1))  # ... of the frame's last pixel
        self.first = (self.ky == 0) & (self.kx == 0) & (self.c == 0)
        self.last = (self.ky == g.kh - 1) & (self.kx == g.kw - 1) & (self.c == g.cin_words - 1)

    def address(self) -> Value:
        """The term's line-buffer address (any word where it lies in the padding)."""
        return self.laddr

    def pad(self) -> Value | None:
        """The term lies in the padding (None where no window reaches it)."""
        return self._pad(self.yy, self.xc)

    def _pad(self, yy: Value, xc: Value) -> Value | None:
        g = self.g
        out = _outside(yy, self.yy_span, g.h) + _outside(xc, self.xc_span, g.w * g.words)
        if not out:
            return None
        v = out[0]
        for o in out[1:]:
            v = v | o
        return v

    def read_ahead(self, m: Module, issue: Value) -> None:
        """Nothing to read ahead: the term is the counters'."""

    def advance(self, m: Module) -> None:
        """Step the term, then the group, the pixel, the row and the frame. A term's
        channel c runs over its conv group's C/G channels from `cb`; the next window
        column skips the other groups' C - C/G."""
        g = self.g
        rb = [r * g.w * g.words for r in range(g.rows)]
        step(m, self.widx, g.groups * g.terms - 1)
        m.d.sync += [self.xc.eq(self.xc + 1), self.laddr.eq(self.laddr + 1), self.start.eq(0)]
        with m.If(step(m, self.c, g.cin_words - 1)):
            if g.cin_words < g.words:
                skip = 1 + g.words - g.cin_words
                m.d.sync += [self.xc.eq(self.xc + skip), self.laddr.eq(self.laddr + skip)]
            with m.If(step(m, self.kx, g.kw - 1)):
                self._next_ky(m, rb)

    def _next_ky(self, m: Module, rb: list[int]) -> None:
        g = self.g
        base = self.xc0 if self.cb is None else self.xc0 + self.cb
        nxt = [rb[(r + 1) % g.rows] for r in range(g.rows)]
        m.d.sync += [
            self.rslot.eq(add_mod(self.rslot, 1, g.rows)),
            self.xc.eq(base),
            self.yy.eq(self.yy + 1),
            self.laddr.eq(_table(nxt, self.rslot) + base),
        ]
        with m.If(step(m, self.ky, g.kh - 1)):
            m.d.sync += [
                self.rslot.eq(self.top_slot),
                self.yy.eq(self.y_top),
                self.laddr.eq(_table(rb, self.top_slot) + self.xc0),
            ]
            if self.cb is not None:  # the next group's channels (the first's at a pixel's end)
                bases = [g.channel_base((i + 1) % g.groups) // g.simd for i in range(g.groups)]
                nb = _table(bases, self.gi)
                m.d.sync += [
                    self.cb.eq(nb),
                    self.xc.eq(self.xc0 + nb),
                    self.laddr.eq(_table(rb, self.top_slot) + self.xc0 + nb),
                ]
            with m.If(step(m, self.gi, g.groups - 1)):
                self._next_pixel(m, rb)

    def _next_pixel(self, m: Module, rb: list[int]) -> None:
        g = self.g
        ox, oy = self.ox, self.oy
        if g.oh * g.ow > 1:  # the next pixel is the last: this one is the one before
            wrap_last = (oy == g.oh - 2) if g.ow == 1 else Const(0, 1)
            m.d.sync += self.lastpix.eq(
                Mux(ox == g.ow - 1, wrap_last, (oy == g.oh - 1) & (ox == g.ow - 2))
            )
        m.d.sync += self.start.eq(1)
        dx = g.sw * g.words
        needs, lors = self._needs, self._lors
        dcol = [needs[0][(x + 1) % g.ow] - needs[0][x] for x in range(g.ow)]
        m.d.sync += [
            self.xc0.eq(self.xc0 + dx),
            self.xc.eq(self.xc0 + dx),
            self.laddr.eq(_table(rb, self.top_slot) + self.xc0 + dx),
            self.need.eq(self.need + _table(dcol, self.ox)),
        ]
        with m.If(step(m, self.ox, g.ow - 1)):
            top = add_mod(self.top_slot, g.sh, g.rows)
            left = -g.pw * g.words
            shifted = [rb[(r + g.sh) % g.rows] + left for r in range(g.rows)]
            nrow = [needs[(y + 1) % g.oh][0] for y in range(g.oh)]
            nlor = [lors[(y + 1) % g.oh] for y in range(g.oh)]
            m.d.sync += [
                self.xc0.eq(left),
                self.xc.eq(left),
                self.y_top.eq(self.y_top + g.sh),
                self.yy.eq(self.y_top + g.sh),
                self.top_slot.eq(top),
                self.rslot.eq(top),
                self.laddr.eq(_table(shifted, self.top_slot)),
                self.need.eq(_table(nrow, self.oy)),
                self.lor.eq(_table(nlor, self.oy)),
                self.lora.eq(_table([v - g.h_used for v in nlor], self.oy)),
            ]
            with m.If(step(m, self.oy, g.oh - 1)):
                top = add_mod(self.fbase, g.h_used - g.ph, g.rows)
                first = [rb[(f + g.h_used - g.ph) % g.rows] + left for f in range(g.rows)]
                m.d.sync += [
                    self.y_top.eq(-g.ph),
                    self.yy.eq(-g.ph),
                    self.fbase.eq(add_mod(self.fbase, g.h_used, g.rows)),
                    self.top_slot.eq(top),
                    self.rslot.eq(top),
                    self.laddr.eq(_table(first, self.fbase)),
                    self.fc.eq(~self.fc),
                ]


def _outside(v, span: tuple[int, int], n: int) -> list:
    """The conditions under which v (known to lie in `span`) is outside 0 .. n-1."""
    return ([v < 0] if span[0] < 0 else []) + ([v >= n] if span[1] >= n else [])


class SparseWindow(Window):
    """The window of a conv2d block that skips zero weights (no conv groups): group gi
    issues only its terms `kept[gi]` (window order). Each term's word (`resources.
    conv_term_words`: row ky, offset kx*C + c in the row, first and last flags) comes
    from a term ROM read one term ahead (`read_ahead`, as the dense block's), and the
    term's line-buffer address and padding follow from it and the pixel's registers:
    the slot of row y_top + ky (a table of top_slot and ky) plus x_left*C + offset. The
    pixel, group and frame registers are `Window`'s, stepped at a group's last term;
    its term counters stay unused. `widx` counts the issued terms (the weight ROM's
    rows)."""

    def __init__(self, m: Module, g: ConvGeometry, kept: list[np.ndarray]) -> None:
        super().__init__(g)
        words, kb, ob = conv_term_words(kept, g.kh, g.kw, g.c)
        self._total = total = len(words)
        rom = memory.Memory(
            shape=kb + ob + 2, depth=total, init=words, attrs=memory_attrs(total, True)
        )
        m.submodules.terms = rom
        self._port = rom.read_port()
        self._ahead, self._primed = Signal(range(max(total, 2))), Signal()
        self.widx = Signal(range(max(total, 2)))
        data = self._port.data
        self._ky, off = data[:kb], data[kb : kb + ob]
        self.first, self.last = data[kb + ob], data[kb + ob + 1]
        self._yy = self.y_top + self._ky
        self._xc = self.xc0 + off
        rb = [r * g.w * g.words for r in range(g.rows)]
        slots = Array(
            Array(Const(rb[(t + k) % g.rows]) for k in range(g.kh)) for t in range(g.rows)
        )
        self._laddr = slots[self.top_slot][self._ky] + self._xc

    def address(self) -> Value:
        return self._laddr

    def pad(self) -> Value | None:
        return self._pad(self._yy, self._xc)

    def read_ahead(self, m: Module, issue: Value) -> None:
        """Term t's word is read while term t - 1 issues (and once after reset), so it
        is on the port when t issues."""
        port, ahead, total = self._port, self._ahead, self._total
        read = issue | ~self._primed
        m.d.comb += [port.addr.eq(ahead), port.en.eq(read)]
        with m.If(read):
            m.d.sync += [self._primed.eq(1), ahead.eq(Mux(ahead == total - 1, 0, ahead + 1))]

    def advance(self, m: Module) -> None:
        """Step the issued term, then at a group's last the group, the pixel, the row
        and the frame."""
        g = self.g
        step(m, self.widx, self._total - 1)
        m.d.sync += self.start.eq(0)
        with m.If(self.last), m.If(step(m, self.gi, g.groups - 1)):
            self._next_pixel(m, [r * g.w * g.words for r in range(g.rows)])
