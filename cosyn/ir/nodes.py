"""Nodes of the integer graph: exactly the arithmetic the hardware performs.

Every node produces an integer tensor. Its `shape` is per sample (no batch axis),
its `dtype` the bit width and signedness of every element, and `scale` the float32
factor (broadcastable to `shape`, channel axis first) that turns the integers back
into the model's float values. `eval` is the golden arithmetic: int64 NumPy in,
int64 NumPy out, batch axis first. Backends read the same attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

__all__ = [
    "Add",
    "Conv2d",
    "Dense",
    "Flatten",
    "IntType",
    "Node",
    "Poly",
    "Quantize",
    "Shift",
    "Threshold",
    "int_type_for_range",
]


@dataclass(frozen=True)
class IntType:
    """A two's complement (signed) or plain binary (unsigned) integer of `bits` bits."""

    bits: int
    signed: bool

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 62:
            raise ValueError(f"Bit width must be between 1 and 62, not {self.bits!r}")

    @property
    def lo(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def __str__(self) -> str:
        return f"{'i' if self.signed else 'u'}{self.bits}"


def int_type_for_range(lo: int, hi: int) -> IntType:
    """The narrowest IntType holding every integer in [lo, hi]."""
    lo, hi = int(lo), int(hi)
    if lo >= 0:
        return IntType(max(hi.bit_length(), 1), False)
    return IntType(max(hi.bit_length(), (-lo - 1).bit_length()) + 1, True)


@dataclass(eq=False)
class Node:
    """Base of every node. `inputs` names the producing nodes, in order."""

    name: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: IntType
    scale: np.ndarray
    kind: ClassVar[str] = "node"
    multiplies: ClassVar[bool] = False  # has multipliers (MACs > 0)
    elementwise: ClassVar[bool] = False  # output element k depends on input element k only

    def eval(self, *xs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def macs(self) -> int:
        """Multiply-accumulates per sample (0 for nodes without multipliers)."""
        return 0


@dataclass(eq=False)
class Quantize(Node):
    """Graph input: float32 to integer through the model's own input quantizer.

    The integer is the count of float `thresholds` that x reaches, plus dtype.lo-ish
    `base`: found by bisection over float32 values against the model, so it equals
    the model's quantizer on every float32 input (NaN excluded).
    """

    thresholds: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    base: int = 0
    kind: ClassVar[str] = "quantize"

    def quantize(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return self.base + np.searchsorted(self.thresholds, x, side="right").astype(np.int64)

    def eval(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.int64)


@dataclass(eq=False)
class Dense(Node):
    """acc[o] = bias[o] + sum_i weight[o, i] * x[i]; dtype is the accumulator's type."""

    weight: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    kind: ClassVar[str] = "dense"
    multiplies: ClassVar[bool] = True

    def eval(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight.T + self.bias

    @property
    def macs(self) -> int:
        return int(self.weight.size)


@dataclass(eq=False)
class Conv2d(Node):
    """2-D convolution (groups=1) with zero padding; dtype is the accumulator's type."""

    weight: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 1, 1), np.int64))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    kind: ClassVar[str] = "conv2d"
    multiplies: ClassVar[bool] = True

    def eval(self, x: np.ndarray) -> np.ndarray:
        n, c = x.shape[:2]
        o, _, kh, kw = self.weight.shape
        ph, pw = self.padding
        sh, sw = self.stride
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        oh, ow = self.shape[1], self.shape[2]
        windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
        windows = windows[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw]
        cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n, oh, ow, c * kh * kw)
        acc = cols @ self.weight.reshape(o, -1).T + self.bias
        return acc.transpose(0, 3, 1, 2)

    @property
    def macs(self) -> int:
        return int(self.weight.size * self.shape[1] * self.shape[2])


def _channel(a: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape a per-channel vector to broadcast over a batch of `ndim`-d samples."""
    return np.asarray(a).reshape((1, -1) + (1,) * (ndim - 1))


@dataclass(eq=False)
class Shift(Node):
    """Requantize by a power of two: clip(round(x / 2**shift), lo, hi), per channel.

    `shift` may be negative (a left shift). `rounding` is "half_even" (round half to
    even, torch.round) or "floor". `lo` and `hi` are per-channel clip bounds: they
    carry the activation (ReLU clips at 0) as well as the output range.
    """

    shift: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    rounding: str = "half_even"
    lo: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    hi: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    kind: ClassVar[str] = "shift"
    elementwise: ClassVar[bool] = True

    def eval(self, x: np.ndarray) -> np.ndarray:
        nd = x.ndim - 1
        k = _channel(self.shift, nd)
        left = np.left_shift(x, np.maximum(-k, 0))
        r = np.maximum(k, 0)
        floor = self.rounding == "floor"
        q = np.right_shift(left, r) if floor else shift_round_half_even(left, r)
        return np.clip(q, _channel(self.lo, nd), _channel(self.hi, nd))


def shift_round_half_even(x: np.ndarray, r: np.ndarray) -> np.ndarray:
    """x / 2**r rounded half to even, in integers only (r >= 0): what hardware does."""
    half = np.where(r > 0, np.left_shift(1, np.maximum(r - 1, 0)), 0)
    odd = np.right_shift(x, r) & 1
    return np.right_shift(x + half - 1 + np.where(r > 0, odd, 1), r)


@dataclass(eq=False)
class Threshold(Node):
    """Requantize by a threshold bank: out = base + sign * #{j : x >= thresholds[c, j]}.

    Any monotone map from integers to integers is a threshold bank (FINN's
    MultiThreshold): a scale that is not a power of two, a folded batch norm, a
    quantized sigmoid. Rows are per channel; `sign` is -1 where the map decreases.
    Unused entries hold a value above the input range.
    """

    thresholds: np.ndarray = field(default_factory=lambda: np.zeros((1, 0), np.int64))
    base: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    sign: np.ndarray = field(default_factory=lambda: np.ones(1, np.int64))
    kind: ClassVar[str] = "threshold"
    elementwise: ClassVar[bool] = True

    def eval(self, x: np.ndarray) -> np.ndarray:
        nd = x.ndim - 1
        t = self.thresholds.reshape(self.thresholds.shape[:1] + (1,) * (nd - 1) + (-1,))
        count = (x[..., None] >= t).sum(axis=-1)
        return _channel(self.base, nd) + _channel(self.sign, nd) * count


@dataclass(eq=False)
class Add(Node):
    """Elementwise sum of two inputs after aligning scales: (a << shifts[0]) + (b << shifts[1])."""

    shifts: tuple[int, int] = (0, 0)
    kind: ClassVar[str] = "add"
    elementwise: ClassVar[bool] = True

    def eval(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.left_shift(a, self.shifts[0]) + np.left_shift(b, self.shifts[1])


@dataclass(eq=False)
class Poly(Node):
    """Polynomial activation by Horner's rule, exactly in integers, per channel.

    `coeffs[c]` holds (c_d, ..., c_1, c_0), highest degree first: h = c_d, then
    h = h * x + c_k for k = d-1 .. 0. Nothing rounds; the result is the exact
    integer polynomial at `scale`, and a requantize node follows it. `stages[k]` is
    the type of h after Horner step k + 1 (the last equals dtype): each multiplier
    and adder in hardware is sized from it.
    """

    coeffs: np.ndarray = field(default_factory=lambda: np.zeros((1, 1), np.int64))
    stages: tuple[IntType, ...] = ()
    kind: ClassVar[str] = "poly"
    multiplies: ClassVar[bool] = True
    elementwise: ClassVar[bool] = True

    @property
    def degree(self) -> int:
        return self.coeffs.shape[1] - 1

    def eval(self, x: np.ndarray) -> np.ndarray:
        nd = x.ndim - 1
        h = np.broadcast_to(_channel(self.coeffs[:, 0], nd), x.shape)
        for k in range(1, self.degree + 1):
            h = h * x + _channel(self.coeffs[:, k], nd)
        return h

    @property
    def macs(self) -> int:
        return self.degree * int(np.prod(self.shape))


@dataclass(eq=False)
class Flatten(Node):
    """Row-major flatten of (C, H, W) to (C*H*W,), as torch.flatten does."""

    kind: ClassVar[str] = "flatten"

    def eval(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(x.shape[0], -1)
