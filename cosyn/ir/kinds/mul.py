"""Elementwise product of two quantized values: `a * b`, torch.mul, `.mul` and ONNX Mul.

The graph is exact only where the model's float32 product equals ints * (sa * sb): each
input's float value is its ints times a per-tensor power-of-two scale (exact), their
product is ia * ib times a power of two, and float32 holds it exactly where |ia * ib|
is at most 2**24 (its 24-bit significand). Other scales make the model round twice (each
input, then the product) where the graph would not, and wider products round in float32
while the integers do not; both are refused in one line naming the layer.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from onnx import NodeProto
from torch import fx

from cosyn.errors import UnsupportedLayerError
from cosyn.ir.builder import Builder, _Input, _log2_ratio, _Val
from cosyn.ir.intervals import LIMIT, Range, as_range
from cosyn.ir.lowering import _describe, lowers
from cosyn.ir.nodes import Node
from cosyn.ir.qonnx import onnx_op

__all__ = ["EXACT_BITS", "Mul", "mul"]

EXACT_BITS = 24  # float32 holds every integer of magnitude up to 2**24 exactly
_EXPONENTS = (-126, 127 - EXACT_BITS - 1)  # scales 2**k whose ints * scale are normal floats


@dataclass(eq=False)
class Mul(Node):
    """a * b, element by element, of two inputs of one shape; `scale` is the product of
    theirs (per tensor). One multiplier per element: `macs` counts the products, and
    being elementwise it is no folded dense/conv (it takes no parallelism)."""

    kind: ClassVar[str] = "mul"
    multiplies: ClassVar[bool] = True
    elementwise: ClassVar[bool] = True

    def eval(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(a, np.int64) * np.asarray(b, np.int64)

    def infer_range(self, a: Range, b: Range) -> Range:
        """Exact for independent inputs, channel by channel: a product of two intervals
        has its extremes at their ends (the min and max of the four corner products).
        Bounds beyond 62 bits are saturated, so that `fit` refuses them naming the node."""
        ends = [np.array(x, dtype=object) for x in (*a, *b)]
        corners = [p * q for p in ends[:2] for q in ends[2:]]
        lo, hi = np.minimum.reduce(corners), np.maximum.reduce(corners)
        sat = np.vectorize(lambda v: max(-LIMIT, min(LIMIT, int(v))), otypes=[np.int64])
        return as_range(sat(lo), sat(hi))

    @property
    def macs(self) -> int:
        return int(np.prod(self.shape))


def mul(b: Builder, x: object, y: object, shape: tuple[int, ...], name: str, what: str) -> _Val:
    """A Mul node of the clean values `x` and `y` of one `shape` (the model's, per sample)
    at per-tensor power-of-two scales, whose product has at most `EXACT_BITS` bits."""
    x, y = (b.clean(v, what) for v in (x, y))
    shapes = [b.node(v.node).shape for v in (x, y)]
    if shapes[0] != shapes[1] or shapes[0] != tuple(shape):
        raise UnsupportedLayerError(
            f"{what}: only the product of two values of one shape is supported, not "
            f"{shapes[0]} and {shapes[1]} (broadcast); multiply values of the same shape"
        )
    one = torch.ones(())
    logs = [_log2_ratio(v.scale, one) if v.scale.numel() == 1 else None for v in (x, y)]
    if logs[0] is None or logs[1] is None:
        raise UnsupportedLayerError(
            f"{what}: the product of two values is exact in float32 only at per-tensor "
            f"power-of-two scales, not {_describe_scale(x.scale)} and "
            f"{_describe_scale(y.scale)}; use power-of-two scales (a *Pow2 quantizer such "
            "as Int8ActPow2) on both inputs"
        )
    k = [int(e[0]) for e in logs]
    if not all(_EXPONENTS[0] <= e <= _EXPONENTS[1] for e in (*k, k[0] + k[1])):
        raise UnsupportedLayerError(
            f"{what}: its scales 2**{k[0]}, 2**{k[1]} or their product leave float32's normal "
            f"range (2**{_EXPONENTS[0]} to 2**{_EXPONENTS[1]} for 24-bit integers); use "
            "scales nearer 1"
        )
    scale = torch.tensor(np.ldexp(np.float32(1), k[0] + k[1]), dtype=torch.float32)
    node = Mul.sized(
        b.in_ranges((x.node, y.node)), name=b.fresh(name, Mul.kind), inputs=(x.node, y.node),
        shape=tuple(shape), scale=scale.numpy(),
    )  # fmt: skip
    lo, hi = node.infer_range(*b.in_ranges(node.inputs))
    big = max(-int(lo.min()), int(hi.max()))
    if big > 1 << EXACT_BITS:
        raise UnsupportedLayerError(
            f"{what}: its product reaches {big} ({node.dtype} integers), beyond float32's "
            f"{EXACT_BITS}-bit integers, so the model rounds it and the hardware would not; "
            f"quantize its inputs to fewer bits (at most {EXACT_BITS} together)"
        )
    return b.emit(node, scale)


def _describe_scale(s: torch.Tensor) -> str:
    return f"{s.reshape(()).item():g}" if s.numel() == 1 else f"{s.numel()} per-channel scales"


# -- torch ----------------------------------------------------------------------------------


@lowers(operator.mul, torch.mul, "mul",
        supports="a * b, torch.mul and .mul of two quantized values of one shape "
        "(QuantTensors too) at per-tensor power-of-two scales")  # fmt: skip
def _torch_mul(b: Builder, n: fx.Node, args: tuple, kwargs: dict) -> object:
    """The product of two values; a value times a constant is the walk's own arithmetic."""
    if len(args) == 2 and not kwargs and all(isinstance(a, _Val | _Input) for a in args):
        return mul(b, args[0], args[1], b.shape(n), n.name, _describe(b.gm, n))
    return b.arithmetic(n, "mul", args, kwargs)


# -- QONNX ----------------------------------------------------------------------------------


@onnx_op("Mul", replay=lambda node, a, b: a * b)
def _onnx_mul(b: Builder, node: NodeProto, args: list, out: str, ident: str) -> object:
    """Mul of two values; of a value and a constant, the builder's own `op_mul`."""
    if all(isinstance(a, _Val | _Input) for a in args):
        return mul(b, args[0], args[1], b.shape(out), ident, ident)
    return b.op_mul(node, args, out, ident)
