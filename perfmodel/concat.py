"""The concat block's timing and resources, defined once (kind "concat").

`ConcatBlock` (`hw/rtl/_concat.py`) takes two streams in the pipeline's order (HWC for
(C, H, W) values, index order for flat ones) and sends, per pixel, the first input's
C1 channels, then the second's C2: channels are innermost, so a channel concatenation
interleaves the two streams pixel by pixel. Its control: the position `k` in the
pixel's C1 + C2 elements (which input is read: `a` while k < C1, else `b`) and the
output register's valid `v`; an element is taken from the input read when it is
valid and the output register is empty or leaving (as `AddBlock`'s, one input at a
time). Latency 1, interval C1*P + C2*P for P pixels, one element per cycle.

While it reads one input the other waits, so the pipeline puts a FIFO in front of each
input it would keep waiting within a sample (`perfmodel.pipeline._buffer_inputs`), as
for an add. This module registers the kind's timing (`perfmodel.blocks.TIMINGS`) and
primitives (`perfmodel.resources.PRIMITIVES`); `cosyn.perfmodel` imports every module of
its package.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from cosyn.perfmodel.blocks import TIMINGS, lockstep
from cosyn.perfmodel.mac import QUIET
from cosyn.perfmodel.resources import PRIMITIVES, Primitives

from cosyn.ir.kinds.concat import Concat

__all__ = ["ConcatTiming"]


class ConcatTiming:
    """`ConcatBlock`'s timing (see `perfmodel.blocks`) for `pixels` pixels of `c1` then
    `c2` channels: the output stream takes its elements in order, each when offered and
    one cycle after the one before (`lockstep` of the merged offers), and sends it a
    cycle later."""

    inputs, outputs = 2, 1

    def __init__(self, pixels: int, c1: int, c2: int) -> None:
        if min(pixels, c1, c2) < 1:
            raise ValueError(f"concat needs a pixel and a channel of each, not {pixels, c1, c2}")
        self.pixels, self.c1, self.c2 = pixels, c1, c2
        self.elements = pixels * (c1 + c2)
        self.latency, self.interval = 1, self.elements
        self.key = ("concat", pixels, c1, c2)
        pos = np.arange(self.elements).reshape(pixels, c1 + c2)
        self.pos = (pos[:, :c1].reshape(-1), pos[:, c1:].reshape(-1))  # of a's, b's elements

    def _taken(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        merged = np.empty(self.elements, dtype=np.int64)
        merged[self.pos[0]], merged[self.pos[1]] = a, b
        return lockstep(merged)

    def timing(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._taken(a, b) + 1

    def transfers(self, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
        t = self._taken(a, b)
        return [t[self.pos[0]], t[self.pos[1]]]

    def control(self) -> _ConcatControl:
        return _ConcatControl(self.c1, self.c1 + self.c2)


class _ConcatControl:
    """`k`: the next element's position in its pixel; `v`: the output register is full."""

    def __init__(self, c1: int, n: int) -> None:
        self.c1, self.n, self.k, self.v = c1, n, 0, False

    def registers(self) -> tuple:
        return self.k, self.v

    def valid(self) -> list[bool]:
        return [self.v]

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        space = not self.v or oready[0]
        first = self.k < self.c1
        return [first and space, not first and space]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        if takes[0] or takes[1]:
            self.v, self.k = True, (self.k + 1) % self.n
        elif oready[0]:
            self.v = False

    def _take(self, valids: list[bool], oready: list[bool]) -> bool:
        return (not self.v or oready[0]) and valids[0 if self.k < self.c1 else 1]

    def quiet(self, valids: list[bool], oready: list[bool]) -> int:
        """Taking, the steps until the other input is read; else none change (QUIET)
        unless the output register empties."""
        if not self._take(valids, oready):
            return 0 if self.v and oready[0] else QUIET
        if not self.v:
            return 0
        return (self.c1 if self.k < self.c1 else self.n) - 1 - self.k

    def skip(self, n: int, valids: list[bool], oready: list[bool]) -> None:
        if self._take(valids, oready):
            self.k += n


def _counter(n: int) -> int:
    return max(int(n - 1).bit_length(), 1)


def primitives(stage: Any) -> Primitives:
    """`ConcatBlock`: the position counter and its flag, the output register and its
    valid, the select between the inputs, the counter's step and compares."""
    y, c = stage.node.dtype.bits, _counter(stage.timing.c1 + stage.timing.c2)
    return Primitives(add_bits=3 * c, reg_bits=c + 1 + y + 1, mux_bits=y + c, depth=c, levels=2)


def _timing(node: Concat, ctx: Any) -> ConcatTiming:
    a, b = ctx.in_shapes
    if ctx.perm is not None:
        raise ValueError(
            "the RTL concat block reads flat inputs in index order, not a flattened image's "
            "order; concatenate the images (dim=1) before flattening"
        )
    if len(a) not in (1, 3) or (len(a) == 3 and ctx.order != "hwc"):
        raise ValueError(f"concat takes (C, H, W) values in HWC order or flat ones, not {a}")
    return ConcatTiming(math.prod(a[1:]), int(a[0]), int(b[0]))


TIMINGS[Concat.kind] = _timing
PRIMITIVES[Concat.kind] = primitives
