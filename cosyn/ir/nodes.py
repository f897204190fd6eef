"""Nodes of the integer graph: exactly the arithmetic the hardware performs.

Every node produces an integer tensor. Its `shape` is per sample (no batch axis),
its `dtype` the bit width and signedness of every element, and `scale` the float32
factor (broadcastable to `shape`, channel axis first) that turns the integers back
into the model's float values. Backends read the same attributes.

Each node class is the one definition of its kind, registered in `KINDS` by its
`kind` string: `eval` is the golden arithmetic (int64 NumPy in, int64 NumPy out,
batch axis first), `infer_shape` the output shape from the input shapes,
`infer_range` the exact interval of its values from its inputs' (see intervals.py),
and the class attributes `multiplies` and `elementwise` say what hardware it needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np

from cosyn.errors import BitWidthError
from cosyn.ir.intervals import (
    IntType,
    Range,
    as_range,
    horner,
    int_type_for_range,
    weighted,
    window_taps,
)

__all__ = [
    "KINDS",
    "Add",
    "AvgPool2d",
    "Conv2d",
    "Dense",
    "Flatten",
    "IntType",
    "MaxPool2d",
    "Node",
    "Poly",
    "Quantize",
    "Range",
    "Shift",
    "Threshold",
    "int_type_for_range",
]


KINDS: dict[str, type[Node]] = {}  # kind -> its node class; filled as classes are defined


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
    per_channel: ClassVar[tuple[str, ...]] = ()  # fields with one row per channel (or one)
    sequence: ClassVar[bool] = False  # mixes the tokens of a sequence (see Graph.sequence)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Register a class that names its own `kind`; a kind has one class."""
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if kind is None:
            return
        old = KINDS.get(kind)
        if old is not None and _qualname(old) != _qualname(cls):
            raise TypeError(
                f"Node kind {kind!r} is already defined by {_qualname(old)}; "
                f"{_qualname(cls)} must name another kind"
            )
        KINDS[kind] = cls

    def eval(self, *xs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def infer_shape(self, *in_shapes: tuple[int, ...]) -> tuple[int, ...]:
        """The output shape from the input shapes (ValueError where they do not fit).

        Elementwise kinds keep their inputs' one shape; their per-channel fields need
        one row or one per channel (axis 0)."""
        if not self.elementwise:
            raise NotImplementedError(f"{type(self).__name__} does not infer its shape")
        if len(set(in_shapes)) != 1:
            raise ValueError(f"its inputs have different shapes {list(in_shapes)}")
        for f in self.per_channel:
            rows = len(np.atleast_1d(getattr(self, f)))
            if rows not in (1, in_shapes[0][0]):
                raise ValueError(f"{f} has {rows} rows for {in_shapes[0][0]} channels")
        return in_shapes[0]

    def infer_range(self, *in_ranges: Range) -> Range:
        """Per-tensor or per-channel bounds of every value, from the inputs' bounds."""
        raise NotImplementedError(f"{type(self).__name__} does not infer its range")

    @classmethod
    def sized(cls, in_ranges: Sequence[Range], **fields: Any) -> Self:
        """A node of this kind whose dtype is the narrowest holding its inferred range."""
        node = cls(dtype=_UNSIZED, **fields)
        node.dtype = node.fit(*node.infer_range(*in_ranges))
        return node

    def fit(self, lo: np.ndarray, hi: np.ndarray) -> IntType:
        """The narrowest IntType holding [lo, hi]; BitWidthError naming the node if none."""
        try:
            return int_type_for_range(lo, hi)
        except ValueError as e:
            raise BitWidthError(
                f"{self.name} ({self.kind}): its values span [{np.min(lo)}, {np.max(hi)}], "
                "more than 62 bits; reduce the bit widths of its inputs or weights"
            ) from e

    @property
    def macs(self) -> int:
        """Multiply-accumulates per sample (0 for nodes without multipliers)."""
        return 0

    @property
    def lane_outputs(self) -> int:
        """The outputs that may share an input element, so the most a multiplying node's
        parallelism can split: all of axis 0 (features or output channels)."""
        return int(self.shape[0])


_UNSIZED = IntType(62, True)  # a placeholder `sized` replaces at once


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _monotone(node: Node, x: Range) -> Range:
    """Range of a per-channel monotone elementwise node: its values at the ends of x."""
    y = node.eval(np.stack(np.broadcast_arrays(*x)))
    return as_range(y.min(0), y.max(0))


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

    def infer_shape(self) -> tuple[int, ...]:
        return self.shape

    def infer_range(self) -> Range:
        """The integers `quantize` makes; every value of dtype where there are no
        thresholds (a graph fed integers directly)."""
        if self.thresholds.size == 0:
            return as_range(self.dtype.lo, self.dtype.hi)
        return as_range(self.base, self.base + self.thresholds.size)


@dataclass(eq=False)
class Dense(Node):
    """acc[o] = bias[o] + sum_i weight[o, i] * x[i]; dtype is the accumulator's type."""

    weight: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    kind: ClassVar[str] = "dense"
    multiplies: ClassVar[bool] = True

    def eval(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight.T + self.bias

    def infer_shape(self, x: tuple[int, ...]) -> tuple[int, ...]:
        if x != self.weight.shape[1:]:
            raise ValueError(f"its weights take ({self.weight.shape[1]},) inputs, not {x}")
        return self.weight.shape[:1]

    def infer_range(self, x: Range) -> Range:
        """Exact: each output's bounds are reached with every input at one of its ends."""
        lo, hi = weighted(self.weight, *x)
        return as_range(lo.sum(1) + self.bias, hi.sum(1) + self.bias)

    @property
    def macs(self) -> int:
        return int(self.weight.size)

    @property
    def lane_inputs(self) -> int:
        """The inputs an output sums: the terms a lane may take several of in one cycle
        (SIMD) divide them."""
        return int(self.weight.shape[1])


@dataclass(eq=False)
class Conv2d(Node):
    """2-D convolution with zero padding; dtype is the accumulator's type. With `groups`
    G, as torch's: the weight is (O, C/G, KH, KW) and output channel o reads the C/G input
    channels of its group o // (O/G) (depthwise: G = C)."""

    weight: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 1, 1), np.int64))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    kind: ClassVar[str] = "conv2d"
    multiplies: ClassVar[bool] = True

    def eval(self, x: np.ndarray) -> np.ndarray:
        n, g = x.shape[0], self.groups
        o, cg, kh, kw = self.weight.shape
        ph, pw = self.padding
        sh, sw = self.stride
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        oh, ow = self.shape[1], self.shape[2]
        windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
        windows = windows[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw]
        windows = windows.reshape(n, g, cg, oh, ow, kh, kw).transpose(0, 1, 3, 4, 2, 5, 6)
        cols = windows.reshape(n, g, oh * ow, cg * kh * kw)
        acc = cols @ self.weight.reshape(g, o // g, -1).transpose(0, 2, 1)  # (N, G, OH*OW, O/G)
        acc = acc.transpose(0, 1, 3, 2).reshape(n, o, oh, ow)
        return acc + self.bias.reshape(-1, 1, 1)

    def infer_shape(self, x: tuple[int, ...]) -> tuple[int, ...]:
        o, cg, kh, kw = self.weight.shape
        c = cg * self.groups
        if self.groups < 1 or o % self.groups:
            raise ValueError(f"{self.groups} groups do not divide its {o} output channels")
        if len(x) != 3 or x[0] != c:
            raise ValueError(f"its weights take ({c}, H, W) inputs, not {x}")
        size = [
            (n + 2 * p - k) // s + 1
            for n, k, s, p in zip(x[1:], (kh, kw), self.stride, self.padding, strict=True)
        ]
        if min(size) < 1:
            raise ValueError(f"a {kh}x{kw} window does not fit its {x[1]}x{x[2]} input")
        return (o, *size)

    def infer_range(self, x: Range) -> Range:
        """Per output channel, over every window position: taps on the zero padding add
        nothing. Exact for stride 1; for larger strides the input size is not known from
        the output's, and the range covers every size that gives the output's."""
        lo, hi = (self._of_group(r) for r in x)
        neg, pos = (a.sum(1) for a in weighted(self.weight, lo, hi))  # (O, kh, kw) per tap
        _, oh, ow = self.shape
        (kh, kw), (sh, sw), (ph, pw) = self.weight.shape[2:], self.stride, self.padding
        sums = [
            (np.einsum("pi,qj,oij->opq", mh, mw, neg), np.einsum("pi,qj,oij->opq", mh, mw, pos))
            for mh in window_taps(oh, kh, sh, ph)
            for mw in window_taps(ow, kw, sw, pw)
        ]
        lo = np.min([a.min((1, 2)) for a, _ in sums], axis=0)
        hi = np.max([b.max((1, 2)) for _, b in sums], axis=0)
        return as_range(lo + self.bias, hi + self.bias)

    def _of_group(self, r: np.ndarray) -> np.ndarray:
        """A per-tensor or per-channel input bound as each output channel's weights read
        it: (1, C/G, 1, 1) or (O, C/G, 1, 1), the input channels of its group."""
        o, cg = self.weight.shape[:2]
        if r.size == 1 or self.groups == 1:
            return r.reshape(1, -1, 1, 1)
        return np.repeat(r.reshape(self.groups, cg), o // self.groups, axis=0)[..., None, None]

    @property
    def macs(self) -> int:
        return int(self.weight.size * self.shape[1] * self.shape[2])

    @property
    def lane_outputs(self) -> int:
        """The output channels of one group: only they read the same input channels."""
        return int(self.shape[0]) // self.groups

    @property
    def lane_inputs(self) -> int:
        """The input channels an output reads at each window position (its group's): the
        terms a lane may take several of in one cycle (SIMD) divide them."""
        return int(self.weight.shape[1])


@dataclass(eq=False)
class MaxPool2d(Node):
    """2-D max pooling: out[c, y, x] = max of the kernel window of channel c at (y*sh - ph,
    x*sw - pw), as torch's MaxPool2d (dilation 1, floor mode). The padding counts as the
    input type's minimum, so it never wins: each window holds an input element (padding
    at most half the kernel), and the max is theirs. The values are the input's, so its
    range, type and scale pass through (max commutes with a positive scale)."""

    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int] = (0, 0)
    kind: ClassVar[str] = "maxpool2d"

    def eval(self, x: np.ndarray) -> np.ndarray:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        low = np.iinfo(np.int64).min  # below every input: the padding never wins
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=low)
        oh, ow = self.shape[1], self.shape[2]
        windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
        return windows[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw].max((4, 5))

    def infer_shape(self, x: tuple[int, ...]) -> tuple[int, ...]:
        return _pool_shape(self, x)

    def infer_range(self, x: Range) -> Range:
        """The input's, channel by channel: every output is one of its inputs."""
        return as_range(*x)


@dataclass(eq=False)
class AvgPool2d(Node):
    """2-D average pooling as window sums: out[c, y, x] = sum of the kernel window of
    channel c at (y*sh - ph, x*sw - pw), the padding counting 0 (torch's AvgPool2d with
    count_include_pad=True, dilation 1, floor mode). The mean is that sum at the input's
    scale over the divisor (kh*kw, or divisor_override): no integer rounds, and the
    following requantize node does the rest. Where the divisor is a power of two, `scale`
    is the input's over it (exact in float32); otherwise no float32 factor gives the
    model's own fl(fl(sum * s) / divisor), so `scale` is the input's and the builder leaves
    the division to the model's float chain (the next quantizer, or `Graph.output_ops`)."""

    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int] = (0, 0)
    kind: ClassVar[str] = "avgpool2d"

    def eval(self, x: np.ndarray) -> np.ndarray:
        return self.windows(np.asarray(x, np.int64)).sum((4, 5))

    def windows(self, x: np.ndarray) -> np.ndarray:
        """(N, C, OH, OW, kh, kw) views of the zero-padded input's windows."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        oh, ow = self.shape[1], self.shape[2]
        windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
        return windows[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw]

    def infer_shape(self, x: tuple[int, ...]) -> tuple[int, ...]:
        return _pool_shape(self, x)

    def infer_range(self, x: Range) -> Range:
        """Per channel, over every window: n inputs of the window at their ends, n from the
        fewest to the most a window holds (padding adds nothing). Exact without padding;
        with it, as Conv2d's, over every input size that gives the output's."""
        _, oh, ow = self.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        counts = [
            np.outer(th.sum(1), tw.sum(1))
            for th in window_taps(oh, kh, sh, ph)
            for tw in window_taps(ow, kw, sw, pw)
        ]
        few, most = min(int(c.min()) for c in counts), max(int(c.max()) for c in counts)
        lo, hi = x
        return as_range(np.minimum(few * lo, most * lo), np.maximum(few * hi, most * hi))


def _pool_shape(node: MaxPool2d | AvgPool2d, x: tuple[int, ...]) -> tuple[int, ...]:
    """(C, OH, OW) of a pooling's (C, H, W) input, as torch's floor mode gives it."""
    if len(x) != 3:
        raise ValueError(f"it takes (C, H, W) inputs, not {x}")
    if any(2 * p > k for p, k in zip(node.padding, node.kernel, strict=True)):
        raise ValueError(f"padding {node.padding} is more than half the kernel {node.kernel}")
    size = [
        (n + 2 * p - k) // s + 1
        for n, k, s, p in zip(x[1:], node.kernel, node.stride, node.padding, strict=True)
    ]
    if min(size) < 1:
        raise ValueError(f"a {node.kernel} window does not fit its {x[1]}x{x[2]} input")
    return (x[0], *size)


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
    per_channel: ClassVar[tuple[str, ...]] = ("shift", "lo", "hi")

    def eval(self, x: np.ndarray) -> np.ndarray:
        nd = x.ndim - 1
        k = _channel(self.shift, nd)
        left = np.left_shift(x, np.maximum(-k, 0))
        r = np.maximum(k, 0)
        floor = self.rounding == "floor"
        q = np.right_shift(left, r) if floor else shift_round_half_even(left, r)
        return np.clip(q, _channel(self.lo, nd), _channel(self.hi, nd))

    def infer_range(self, x: Range) -> Range:
        """Exact: rounding and clipping never decrease, so the ends map to the ends."""
        return _monotone(self, x)


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
    per_channel: ClassVar[tuple[str, ...]] = ("thresholds", "base", "sign")

    def eval(self, x: np.ndarray) -> np.ndarray:
        nd = x.ndim - 1
        t = self.thresholds.reshape(self.thresholds.shape[:1] + (1,) * (nd - 1) + (-1,))
        count = (x[..., None] >= t).sum(axis=-1)
        return _channel(self.base, nd) + _channel(self.sign, nd) * count

    def infer_range(self, x: Range) -> Range:
        """Exact: the count never decreases, so the levels at the ends are the extremes."""
        return _monotone(self, x)


@dataclass(eq=False)
class Add(Node):
    """Elementwise sum of two inputs after aligning scales: (a << shifts[0]) + (b << shifts[1])."""

    shifts: tuple[int, int] = (0, 0)
    kind: ClassVar[str] = "add"
    elementwise: ClassVar[bool] = True

    def eval(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.left_shift(a, self.shifts[0]) + np.left_shift(b, self.shifts[1])

    def infer_range(self, a: Range, b: Range) -> Range:
        """Exact for independent inputs: the sum increases in both."""
        return as_range(self.eval(a[0], b[0]), self.eval(a[1], b[1]))


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
    per_channel: ClassVar[tuple[str, ...]] = ("coeffs",)

    @property
    def degree(self) -> int:
        return self.coeffs.shape[1] - 1

    def eval(self, x: np.ndarray) -> np.ndarray:
        nd = x.ndim - 1
        h = np.broadcast_to(_channel(self.coeffs[:, 0], nd), x.shape)
        for k in range(1, self.degree + 1):
            h = h * x + _channel(self.coeffs[:, k], nd)
        return h

    def stage_ranges(self, x: Range) -> list[Range]:
        """Ranges of h before the first Horner step (the leading coefficients) and after
        each: exact over every input integer where that is cheap (see intervals.horner)."""
        return [as_range(*r) for r in horner(self.coeffs, x)]

    def infer_range(self, x: Range) -> Range:
        return self.stage_ranges(x)[-1]

    @classmethod
    def sized(cls, in_ranges: Sequence[Range], **fields: Any) -> Self:
        """A Poly whose `stages` and dtype are the narrowest holding each step's range."""
        node = cls(dtype=_UNSIZED, **fields)
        ranges = node.stage_ranges(*in_ranges)
        node.stages = tuple(node.fit(*r) for r in ranges[1:])
        node.dtype = node.fit(*ranges[-1])
        return node

    @property
    def macs(self) -> int:
        return self.degree * int(np.prod(self.shape))


@dataclass(eq=False)
class Flatten(Node):
    """Row-major flatten of (C, H, W) to (C*H*W,), as torch.flatten does."""

    kind: ClassVar[str] = "flatten"

    def eval(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(x.shape[0], -1)

    def infer_shape(self, x: tuple[int, ...]) -> tuple[int, ...]:
        return (int(np.prod(x)),)

    def infer_range(self, x: Range) -> Range:
        """Each channel's bounds repeated over its elements."""
        lo, hi = x
        per = self.shape[0] // lo.size if lo.size > 1 else 1
        return as_range(np.repeat(lo, per), np.repeat(hi, per))
