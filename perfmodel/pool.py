"""The pooling block's geometry, timing and resources, defined once (maxpool2d and
avgpool2d: one control, a comparator or an adder).

`PoolBlock` (`hw/rtl/_pool.py`) takes the (C, H, W) input in HWC order, one element
per cycle, and keeps one running result (a maximum, or a window sum) per output column
and channel in a line buffer of OW*C words. Windows must not overlap (kernel <= stride
on both axes), so each element belongs to at most one window: its first element
starts the result, the others raise it (or add to it), and its last (in stream order)
sends it out. Padding never changes a result (the minimum for a maximum, 0 for a sum),
so only the input's elements are read. Rows and columns no window reads are taken and
dropped. Outputs leave in HWC order.

Its control, which `_PoolControl` steps register for register: the position of the
next input in the frame (`k`); for each of the `DEPTH` stages (1: the line buffer's
banks read; 2: the bank's word chosen; 3: the running maximum compared and chosen
into the output register, written back from there a cycle later), whether its element
ends a window (`v`), the last stage's flag being the output's valid; and a skid
register (`full`) that takes a result the consumer does not take, after which the
stages and the input hold until it has left. So every element is taken as offered
while the output is ready, and a window's maximum leaves `DEPTH` cycles after its
last element arrives.

This module registers the kinds' timing (`perfmodel.blocks.TIMINGS`) and primitives
(`perfmodel.resources.PRIMITIVES`); `cosyn.perfmodel` imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from cosyn.perfmodel.blocks import TIMINGS
from cosyn.perfmodel.mac import QUIET
from cosyn.perfmodel.resources import BANK, BLOCK, LUT, PRIMITIVES, Primitives, placement

from cosyn.ir.nodes import AvgPool2d, MaxPool2d

__all__ = ["DEPTH", "Axis", "MaxPoolTiming", "PoolGeometry", "PoolTiming"]

DEPTH = 3  # stage 1: the line buffer's banks read; 2: the word chosen; 3: the result
_RESULT = {MaxPool2d.kind: "maximum", AvgPool2d.kind: "sum"}


@dataclass(frozen=True)
class Axis:
    """One input coordinate along an axis: whether a window reads it, whether it is its
    window's first or last there, and the window's index (0 where none reads it)."""

    inwin: bool
    first: bool
    last: bool
    index: int


def _axis(n: int, k: int, s: int, p: int, out: int) -> tuple[Axis, ...]:
    axis = []
    for i in range(n):
        o, r = divmod(i + p, s)
        inwin = r < k and o < out
        first = inwin and (r == 0 or i == 0)
        last = inwin and (r == k - 1 or i == n - 1)
        axis.append(Axis(inwin, first, last, o if inwin else 0))
    return tuple(axis)


@dataclass(frozen=True)
class PoolGeometry:
    """Sizes of one pooling block: input (c, h, w), kernel, stride, padding, output."""

    c: int
    h: int
    w: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    oh: int
    ow: int

    @classmethod
    def of(cls, node: MaxPool2d | AvgPool2d, in_shape: tuple[int, ...]) -> PoolGeometry:
        if len(in_shape) != 3:
            raise ValueError(f"pooling takes a (C, H, W) input, not {tuple(in_shape)}")
        (kh, kw), (sh, sw) = node.kernel, node.stride
        if kh > sh or kw > sw:
            raise ValueError(
                f"the RTL block keeps one {_RESULT[node.kind]} per output column, so windows "
                f"must not overlap: kernel {node.kernel} is larger than stride {node.stride}"
            )
        return cls(*in_shape, kh, kw, sh, sw, *node.padding, node.shape[1], node.shape[2])

    @cached_property
    def cols(self) -> tuple[Axis, ...]:
        return _axis(self.w, self.kw, self.sw, self.pw, self.ow)

    @cached_property
    def rows(self) -> tuple[Axis, ...]:
        return _axis(self.h, self.kh, self.sh, self.ph, self.oh)

    @cached_property
    def depth(self) -> int:
        """Words of the line buffer: a running result per output column and channel."""
        return self.ow * self.c

    @cached_property
    def frame_in(self) -> int:
        return self.c * self.h * self.w

    @cached_property
    def ends(self) -> tuple[bool, ...]:
        """Whether the element at each position of the frame (HWC order) ends a window."""
        rows = np.array([r.last for r in self.rows])
        cols = np.array([c.last for c in self.cols])
        e = np.repeat((rows[:, None] & cols[None, :]).reshape(-1), self.c)
        return tuple(bool(v) for v in e)


class PoolTiming:
    """`PoolBlock`'s timing (see `perfmodel.blocks`): every input taken as offered
    while the output is ready, a window's result `DEPTH` cycles after its last
    element. Latency: the first window's last element's position + DEPTH; interval:
    C*H*W, one element per cycle. The same for a maximum and a sum."""

    inputs, outputs = 1, 1

    def __init__(self, geo: PoolGeometry, kind: str = MaxPool2d.kind) -> None:
        self.geo = geo
        self.end_pos = np.flatnonzero(geo.ends)
        self.latency = int(self.end_pos[0]) + DEPTH
        self.interval = geo.frame_in
        self.key = (kind, geo)

    def timing(self, arrivals: np.ndarray) -> np.ndarray:
        return np.asarray(arrivals, dtype=np.int64)[self.end_pos] + DEPTH

    def transfers(self, arrivals: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(arrivals, dtype=np.int64)]

    def control(self) -> _PoolControl:
        return _PoolControl(self.geo.ends, _runs(self.geo.ends))


MaxPoolTiming = PoolTiming  # the name the maxpool2d block was first given


def _runs(ends: tuple[bool, ...]) -> tuple[int, ...]:
    """For each position, how many positions from it on (cyclically) have its `ends`
    value; QUIET where every position has it."""
    n = len(ends)
    if all(e == ends[0] for e in ends):
        return (QUIET,) * n
    runs = [0] * n
    start = next(i for i in range(n) if ends[i] != ends[i - 1])  # a run begins here
    for j in range(n, 0, -1):  # backwards from the end of the last run
        i = (start + j - 1) % n
        nxt = (i + 1) % n
        runs[i] = 1 + (runs[nxt] if ends[nxt] == ends[i] and nxt != start else 0)
    return tuple(runs)


class _PoolControl:
    """The block's control registers (see the module docstring): bit j of `v` says the
    element in stage j + 1 ends a window (bit DEPTH - 1: the output register holds a
    window's maximum)."""

    def __init__(self, ends: tuple[bool, ...], runs: tuple[int, ...]) -> None:
        self.ends, self.runs, self.n = ends, runs, len(ends)
        self.k, self.v, self.full = 0, 0, False
        self.top, self.all = 1 << (DEPTH - 1), (1 << DEPTH) - 1

    def registers(self) -> tuple:
        return self.k, self.v, self.full

    def valid(self) -> list[bool]:
        return [self.full or bool(self.v & self.top)]

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        return [not self.full]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        if self.full:
            self.full = not oready[0]
            return
        self.full = bool(self.v & self.top) and not oready[0]
        end = takes[0] and self.ends[self.k]
        self.v = ((self.v << 1) | end) & self.all
        if takes[0]:
            self.k = self.k + 1 if self.k + 1 < self.n else 0

    def quiet(self, valids: list[bool], oready: list[bool]) -> int:
        """Steps after which valid and ready stay as they are: while the flags that reach
        the output register (the stages' first, then the coming elements') equal its
        flag now."""
        if self.full:
            return 0 if oready[0] else QUIET
        a = bool(self.v & self.top)
        if a and not oready[0]:
            return 0
        for j in range(1, DEPTH):  # after step j the output holds stage DEPTH - j's flag
            if bool(self.v >> (DEPTH - 1 - j) & 1) != a:
                return j - 1
        if not valids[0]:
            return DEPTH - 1 if a else QUIET
        if self.ends[self.k] != a:
            return DEPTH - 1
        run = self.runs[self.k]
        return QUIET if run >= QUIET else DEPTH - 1 + run

    def skip(self, n: int, valids: list[bool], oready: list[bool]) -> None:
        if self.full or n == 0:
            return
        v = valids[0]
        bits = (self.v << n) & self.all if n < DEPTH else 0
        for i in range(min(n, DEPTH)):  # bit i: the element taken n - i steps on
            if v and self.ends[(self.k + n - 1 - i) % self.n]:
                bits |= 1 << i
        self.v = bits
        if v:
            self.k = (self.k + n) % self.n


def _counter(n: int) -> int:
    return max(int(n - 1).bit_length(), 1)


def primitives(stage: Any) -> Primitives:
    """`PoolBlock`: the position counters and the next element's flags and address
    (registers), the element, its address and flags in stages 1 and 2, the word chosen
    (from the banks or the results just written), the two compares (maxpool2d) or adders
    (avgpool2d) and the select, the result, output and skid registers, and the line
    buffer: LUT RAM banks of `BANK` words, each read registered and the bank chosen
    after, or block RAM (`placement`). Results and words are of the node's type (a
    sum's is wider than its input's)."""
    g, x, y = stage.timing.geo, stage.ctx.in_type.bits, stage.node.dtype.bits
    a = _counter(g.depth)
    counters = _counter(g.c) + _counter(g.w) + _counter(g.h)
    prims = Primitives()
    position = counters + a + 6  # the counters, the address, the column's and row's flags
    stages = (x + a + 6) + (x + a + 4 + y) + (2 * y + a + 2) + (1 + y)  # 1, 2, 3 (y3, y4), skid
    prims.reg_bits = position + stages
    prims.add_bits = counters + a + 3 * a + 2 * y  # steps; three address compares, two values'
    prims.mux_bits = 2 * y + 4 * y + y + a  # the word chosen, the select, the skid's, the address
    if placement(g.depth, rom=False) == BLOCK:
        prims.mems.append((g.depth, y, False, BLOCK, None))
    else:
        banks = -(-g.depth // BANK)
        for k in range(banks):
            prims.mems.append((min(BANK, g.depth - k * BANK), y, False, LUT, None))
        prims.mux_bits += (banks - 1) * y
        prims.reg_bits += _counter(banks) + banks * y
    prims.depth, prims.levels = y, 2
    return prims


for _kind in (MaxPool2d.kind, AvgPool2d.kind):
    TIMINGS[_kind] = lambda node, ctx: PoolTiming(PoolGeometry.of(node, ctx.in_shape), node.kind)
    PRIMITIVES[_kind] = primitives
