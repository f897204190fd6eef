"""The label-select block's timing and resources, defined once (kind "labelselect").

`LabelSelectBlock` (`hw/rtl/_labelselect.py`) takes a flat value of N elements in index
order, one per cycle, and keeps the k largest so far, sorted, in k slots of (value,
index): each element is inserted at once before the first slot it is larger than
(strictly: an equal value arrived earlier, with a lower index, and stays ahead).
After the sample's last element the k indices move to an output shift register and
leave one per cycle, while the next sample fills the slots. Its control: the next
element's position `pos` and the labels left to send `left`; the input is ready
except at a sample's last element while labels of the one before are still left.
Latency N (the last element's cycle + 1 after the first's), interval max(N, k + 1).

This module registers the kind's timing (`perfmodel.blocks.TIMINGS`) and primitives
(`perfmodel.resources.PRIMITIVES`); `cosyn.perfmodel` imports every module of its package.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cosyn.perfmodel.blocks import TIMINGS
from cosyn.perfmodel.mac import QUIET
from cosyn.perfmodel.resources import PRIMITIVES, Primitives

from cosyn.ir.kinds.labelselect import LabelSelect

__all__ = ["LabelSelectTiming"]


class LabelSelectTiming:
    """`LabelSelectBlock`'s timing (see `perfmodel.blocks`): idle, it takes every element
    as offered, and its k labels leave one per cycle from the cycle after the last."""

    inputs, outputs = 1, 1

    def __init__(self, n: int, k: int) -> None:
        if not 1 <= k <= n:
            raise ValueError(f"k must be 1 to {n} (the elements), not {k!r}")
        self.n, self.k = n, k
        self.latency, self.interval = n, max(n, k + 1)
        self.key = ("labelselect", n, k)

    def timing(self, arrivals: np.ndarray) -> np.ndarray:
        return int(np.asarray(arrivals)[self.n - 1]) + 1 + np.arange(self.k, dtype=np.int64)

    def transfers(self, arrivals: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(arrivals, dtype=np.int64)]

    def control(self) -> _LabelSelectControl:
        return _LabelSelectControl(self.n, self.k)


class _LabelSelectControl:
    def __init__(self, n: int, k: int) -> None:
        self.n, self.k, self.pos, self.left = n, k, 0, 0

    def registers(self) -> tuple:
        return self.pos, self.left

    def valid(self) -> list[bool]:
        return [self.left != 0]

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        return [self.pos != self.n - 1 or self.left == 0]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        if self.left and oready[0]:
            self.left -= 1
        if takes[0]:
            if self.pos == self.n - 1:
                self.pos, self.left = 0, self.k
            else:
                self.pos += 1

    def quiet(self, valids: list[bool], oready: list[bool]) -> int:
        """Steps that only count: taking, until the sample's last element is next; sending,
        until the last label is."""
        q = QUIET
        if valids[0] and self.ready(valids, oready)[0]:
            q = max(self.n - 2 - self.pos, 0)
        if self.left and oready[0]:
            q = min(q, self.left - 1)
        return q

    def skip(self, n: int, valids: list[bool], oready: list[bool]) -> None:
        if valids[0] and self.ready(valids, oready)[0]:
            self.pos += n
        if self.left and oready[0]:
            self.left -= n


def _counter(n: int) -> int:
    return max(int(n - 1).bit_length(), 1)


def primitives(stage: Any) -> Primitives:
    """`LabelSelectBlock`: k slots (value, index, full), a compare per slot and the select
    of each slot's next (kept, shifted or the new element), the output shift register of
    k labels, the position and labels-left counters."""
    x, t = stage.ctx.in_type.bits, stage.timing
    i, c = stage.node.dtype.bits, _counter(t.n) + _counter(t.k + 1)
    return Primitives(
        add_bits=t.k * x + 2 * c,
        reg_bits=t.k * (x + i + 1) + t.k * i + c,
        mux_bits=2 * t.k * (x + i + 1) + 2 * t.k * i,
        depth=x,
        levels=3,
    )


def _timing(node: LabelSelect, ctx: Any) -> LabelSelectTiming:
    if len(ctx.in_shape) != 1 or ctx.perm is not None:
        raise ValueError(
            "the RTL label select reads a flat value in index order (a dense layer's output), "
            "not a flattened image"
        )
    return LabelSelectTiming(node.n, node.k)


TIMINGS[LabelSelect.kind] = _timing
PRIMITIVES[LabelSelect.kind] = primitives
