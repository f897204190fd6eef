"""The LayerNorm block's timing and resources, defined once (kind "layernorm").

`LayerNormBlock` (`hw/rtl/_layernorm.py`) normalizes a sample (a token) of F elements
in four phases of its control:
  IN    F cycles: takes the elements (one a cycle, as offered), stores them, sums them
        and their squares;
  VAR   1 cycle: v = F sum x^2 - (sum x)^2;
  SQRT  R cycles: sigma = floor(sqrt(v)), a root bit a cycle (R = ceil(v_bits / 2));
  OUT   per element j: a read, a load, B division steps (a quotient bit of
        (F x_j - sum x) << frac over sigma a cycle, B its bits), a cycle that scales
        the quotient by gamma and adds beta, and a finishing cycle that rounds and
        saturates it into the output register; the finishing cycle waits while the
        register holds a result the consumer has not taken.
After the last element's finishing cycle the block takes the next sample. A result
leaves the cycle after its finishing cycle where the consumer is ready.
Latency F + 1 + R + B + 4 (from the first element taken to the first result's
transfer), interval F + 1 + R + F (B + 4).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cosyn.models.intops import LayerNormSpec
from cosyn.perfmodel.blocks import TIMINGS
from cosyn.perfmodel.mac import QUIET
from cosyn.perfmodel.resources import PRIMITIVES, Primitives

from cosyn.ir.kinds.layernorm import LayerNorm

__all__ = ["LayerNormTiming", "numerator_bits", "root_steps"]

_IN, _VAR, _SQRT, _OUT = range(4)


def root_steps(spec: LayerNormSpec) -> int:
    """R: the root bits of a v_bits-bit variance."""
    return -(-spec.v_bits // 2)


def numerator_bits(spec: LayerNormSpec) -> int:
    """B: bits of |(F x - sum x) << frac| (|F x - sum x| <= 2 F 2^(in_bits - 1))."""
    return (2 * spec.features << (spec.in_bits - 1)).bit_length() + spec.frac


class LayerNormTiming:
    """`LayerNormBlock`'s timing (see `perfmodel.blocks` and the module doc)."""

    inputs, outputs = 1, 1

    def __init__(self, spec: LayerNormSpec) -> None:
        self.f, self.r, self.b = spec.features, root_steps(spec), numerator_bits(spec)
        self.step = self.b + 4  # cycles of an element in OUT
        self.latency = self.f + 1 + self.r + self.step
        self.interval = self.f + 1 + self.r + self.f * self.step
        self.key = ("layernorm", self.f, self.r, self.b)

    def transfers(self, arrivals: np.ndarray) -> list[np.ndarray]:
        """Idle, the block takes each element as it is offered."""
        return [np.asarray(arrivals, dtype=np.int64)]

    def timing(self, arrivals: np.ndarray) -> np.ndarray:
        start = int(np.asarray(arrivals)[self.f - 1]) + 1  # VAR
        return start + 1 + self.r + self.step * np.arange(1, self.f + 1, dtype=np.int64)

    def control(self) -> _LayerNormControl:
        return _LayerNormControl(self)


class _LayerNormControl:
    """The block's control: its phase, the element count `pos`, the cycle within a
    phase's step `cnt`, and the output register's `full`."""

    def __init__(self, t: LayerNormTiming) -> None:
        self.t, self.state, self.pos, self.cnt, self.full = t, _IN, 0, 0, False

    def registers(self) -> tuple:
        return self.state, self.pos, self.cnt, self.full

    def valid(self) -> list[bool]:
        return [self.full]

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        return [self.state == _IN]

    def _finishing(self) -> bool:
        return self.state == _OUT and self.cnt == self.t.step - 1

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        t = self.t
        taken = self.full and oready[0]
        if self.state == _IN:
            if takes[0]:
                self.pos += 1
                if self.pos == t.f:
                    self.state, self.pos = _VAR, 0
        elif self.state == _VAR:
            self.state, self.cnt = _SQRT, 0
        elif self.state == _SQRT:
            self.cnt += 1
            if self.cnt == t.r:
                self.state, self.cnt = _OUT, 0
        elif not self._finishing():
            self.cnt += 1
        elif not self.full or taken:
            self.full, taken = True, False
            self.cnt, self.pos = 0, self.pos + 1
            if self.pos == t.f:
                self.state, self.pos = _IN, 0
        if taken:
            self.full = False

    def quiet(self, valids: list[bool], oready: list[bool]) -> int:
        """Steps that only count: taking elements until the sample's last; a phase's
        cycles until its last; nothing while a result leaves."""
        if self.full and oready[0]:
            return 0
        t = self.t
        if self.state == _IN:
            return max(t.f - 1 - self.pos, 0) if valids[0] else QUIET
        if self.state == _SQRT:
            return t.r - 1 - self.cnt
        if self.state == _OUT:
            return max(t.step - 1 - self.cnt, 0)
        return 0

    def skip(self, n: int, valids: list[bool], oready: list[bool]) -> None:
        if self.state == _IN:
            self.pos += n if valids[0] else 0
        else:
            self.cnt += n


def primitives(stage: Any) -> Primitives:
    """`LayerNormBlock`: the sums (of x and x^2, a multiplier for the square), the
    variance (two multipliers), the root's and the divider's subtract-and-compare, the
    scale (a multiplier by gamma), rounding and saturation; the element memory and the
    gamma and beta ROMs."""
    spec: LayerNormSpec = stage.node.spec
    x, f, b = spec.in_bits, spec.features, numerator_bits(spec)
    s_bits = (f << (x - 1)).bit_length() + 1
    n_bits = spec.n_max.bit_length() + 1
    return Primitives(
        mults=[(x, x), (s_bits, s_bits), (s_bits, f.bit_length()), (n_bits, spec.gamma_bits)],
        add_bits=s_bits + 2 * x + 2 * spec.v_bits + 2 * b + spec.z_bits,
        reg_bits=2 * s_bits + 2 * x + 2 * spec.v_bits + 3 * b + spec.out_bits + 16,
        mux_bits=2 * b + spec.v_bits,
        mems=[
            (f, x, False, "AUTO", None),
            (f, spec.gamma_bits, True, "AUTO", None),
            (f, spec.z_bits, True, "AUTO", None),
        ],
        depth=max(b, spec.v_bits),
        levels=3,
    )


def _timing(node: LayerNorm, ctx: Any) -> LayerNormTiming:
    return LayerNormTiming(node.spec)


TIMINGS[LayerNorm.kind] = _timing
PRIMITIVES[LayerNorm.kind] = primitives
