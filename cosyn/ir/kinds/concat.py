"""Channel concatenation: torch.cat(dim=1) and ONNX Concat of quantized values.

Each input keeps its own scale on its own channels, so values of different scales
concatenate exactly (the next requantizer reads every channel at its own scale).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import fx

from cosyn.errors import UnsupportedLayerError
from cosyn.ir.builder import Builder, _per_channel, _Val
from cosyn.ir.intervals import Range, as_range
from cosyn.ir.lowering import _CAT, _arg, _describe, _float, lowers
from cosyn.ir.nodes import Node
from cosyn.ir.qonnx import onnx_op
from cosyn.ir.qonnx_ops import attrs

__all__ = ["Concat", "concat"]


@dataclass(eq=False)
class Concat(Node):
    """Concatenation of two inputs along axis 0 (the channels of (C, H, W) values, the
    elements of flat ones), as torch.cat(dim=1) of batched values: `split` channels of
    the first input, then the second's. The integers pass unchanged; `scale` is each
    input's for its channels."""

    split: int = 0
    kind: ClassVar[str] = "concat"

    def eval(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([a, b], axis=1)

    def infer_shape(self, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
        if len(a) != len(b) or a[1:] != b[1:]:
            raise ValueError(f"its inputs {a} and {b} differ beyond the channel axis")
        if a[0] != self.split:
            raise ValueError(f"its first input has {a[0]} channels, not split={self.split}")
        return (a[0] + b[0], *a[1:])

    def infer_range(self, a: Range, b: Range) -> Range:
        """Each input's bounds on its own channels (one bound where both have the same)."""
        if all(r.size == 1 for r in (*a, *b)) and a[0][0] == b[0][0] and a[1][0] == b[1][0]:
            return as_range(*a)
        sizes = (self.split, self.shape[0] - self.split)
        lo, hi = (
            np.concatenate(
                [np.broadcast_to(r[j], (n,)) for r, n in zip((a, b), sizes, strict=True)]
            )
            for j in (0, 1)
        )
        return as_range(lo, hi)


def concat(b: Builder, vs: list, dim: int, ndim: int, name: str, what: str) -> _Val:
    """Concat nodes (two inputs each, in order) of the clean values `vs` along `dim` of
    the model's batched values of `ndim` axes: their channels (dim 1)."""
    if len(vs) < 2 or dim % ndim != 1:
        raise UnsupportedLayerError(
            f"{what}: only the concatenation of two or more values along the channels "
            f"(dim=1) is supported, not dim={dim} of {len(vs)} values"
        )
    vals = [b.clean(v, what) for v in vs]
    out = vals[0]
    for v in vals[1:]:
        out = _concat2(b, out, v, name)
    return out


def _concat2(b: Builder, x: _Val, y: _Val, name: str) -> _Val:
    sx, sy = (b.node(v.node).shape for v in (x, y))
    parts = [torch.broadcast_to(v.scale.reshape(-1), (s[0],)) for v, s in ((x, sx), (y, sy))]
    scale = torch.cat(parts)
    shape = (sx[0] + sy[0], *sx[1:])
    scale = scale[0].reshape(()) if torch.all(scale == scale[0]) else _per_channel(scale, shape)
    node = Concat.sized(
        b.in_ranges((x.node, y.node)),
        name=b.fresh(name, Concat.kind),
        inputs=(x.node, y.node),
        shape=shape,
        scale=scale.numpy(),
        split=sx[0],
    )
    return b.emit(node, scale)


@lowers(*_CAT, supports="torch.cat of quantized values along channels (dim=1)")
def _torch_cat(b: Builder, n: fx.Node, args: tuple, kwargs: dict) -> _Val:
    what = _describe(b.gm, n)
    if not isinstance(args[0], list | tuple):
        raise UnsupportedLayerError(f"{what}: torch.cat takes a list or tuple of values")
    dim = _arg(n, 1, "dim") if len(n.args) > 1 or "dim" in n.kwargs else 0
    ndim = _float(b.values[n.args[0][0]]).dim()
    return concat(b, list(args[0]), int(dim), ndim, n.name, what)


@onnx_op("Concat", replay=lambda node, *xs: torch.cat(xs, int(attrs(node)["axis"])))
def _onnx_concat(b: Builder, node, args: list, out: str, ident: str) -> _Val:
    ndim = b.values[node.input[0]].dim()
    return concat(b, args, int(attrs(node)["axis"]), ndim, ident, ident)
