"""Label select: torch.argmax, torch.topk(...).indices, ONNX ArgMax and TopK's indices.

The labels are the indices of the k largest of a flat value, largest first, equal values
in index order: torch.argmax's rule and a stable sort's (torch.topk's own order among
equal values is unspecified on CPU).
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
from cosyn.ir.builder import Builder, _Val
from cosyn.ir.intervals import Range, as_range
from cosyn.ir.lowering import Pending, _arg, _describe, _float, lowers
from cosyn.ir.nodes import Node
from cosyn.ir.qonnx import Refused, onnx_op
from cosyn.ir.qonnx_ops import attrs

__all__ = ["LabelSelect", "Labels", "label_select"]


@dataclass(eq=False)
class LabelSelect(Node):
    """The labels of a flat input of `n` elements, as FINN's LabelSelect: out[j] is the
    index of its j-th largest element, for j < k (k = 1: the argmax), equal values in
    index order (the lower index first, as torch.argmax and a stable descending sort).
    The output integers are indices, at scale 1."""

    k: int = 1
    n: int = 1
    kind: ClassVar[str] = "labelselect"

    def eval(self, x: np.ndarray) -> np.ndarray:
        return np.argsort(-np.asarray(x, np.int64), axis=1, kind="stable")[:, : self.k]

    def infer_shape(self, x: tuple[int, ...]) -> tuple[int, ...]:
        if x != (self.n,):
            raise ValueError(f"it takes a flat ({self.n},) input, not {x}")
        if not 1 <= self.k <= self.n:
            raise ValueError(f"k={self.k} labels of {self.n} elements; k must be 1 to {self.n}")
        return (self.k,)

    def infer_range(self, x: Range) -> Range:
        return as_range(0, self.n - 1)


@dataclass(frozen=True)
class Labels:
    """The output op of a label select: its float indices as torch's int64 indices,
    (batch,) where `squeeze` (torch.argmax without keepdim)."""

    squeeze: bool
    affine = True  # a relabelling of exact integers: it may end the model

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        y = torch.round(y).to(torch.int64)
        return y.reshape(len(y)) if self.squeeze else y


def label_select(b: Builder, v: object, k: int, squeeze: bool, name: str, what: str) -> _Val:
    """A LabelSelect node of the k largest of the clean flat value `v`, their indices
    largest first (ties: the lower index first), as int64 like torch's indices; with
    `squeeze` (torch.argmax without keepdim) one index per sample."""
    if isinstance(v, _Val) and not v.clean:
        raise UnsupportedLayerError(
            f"{what}: its input has a float bias or float operations after its last "
            "integer layer, so its order is not the integers'; quantize the bias (or use "
            "none), or put a quantizer before the label select"
        )
    v = b.clean(v, what)
    src = b.node(v.node)
    if len(src.shape) != 1:
        raise UnsupportedLayerError(f"{what}: labels are selected from (batch, N) values only")
    if v.scale.numel() != 1 or float(v.scale) <= 0:
        raise UnsupportedLayerError(
            f"{what}: its input needs one positive scale per tensor (then the integers "
            "are in the order of the values); quantize it with a per-tensor quantizer"
        )
    n = int(src.shape[0])
    if not 1 <= k <= n:
        raise UnsupportedLayerError(f"{what}: k={k} labels of {n} values")
    node = LabelSelect.sized(
        b.in_ranges((v.node,)), name=b.fresh(name, LabelSelect.kind),
        inputs=(v.node,), shape=(k,), scale=np.float32(1.0), k=k, n=n,
    )  # fmt: skip
    out = b.emit(node, torch.tensor(1.0))
    return _Val(out.node, out.scale, None, [Labels(squeeze)])


# -- torch ----------------------------------------------------------------------------------


@lowers(torch.argmax, "argmax",
        supports="torch.argmax and torch.topk(...).indices over the features of a quantized "
        "(batch, N) value")  # fmt: skip
def _torch_argmax(b: Builder, n: fx.Node, args: tuple, kwargs: dict) -> _Val:
    """torch.argmax over the features of a (batch, N) value: a LabelSelect of one."""
    what = _describe(b.gm, n)
    dim = _arg(n, 1, "dim") if len(n.args) > 1 or "dim" in n.kwargs else None
    keep = bool(n.kwargs.get("keepdim", n.args[2] if len(n.args) > 2 else False))
    if dim is None or int(dim) % 2 != 1 or _float(b.values[n.args[0]]).dim() != 2:
        raise UnsupportedLayerError(
            f"{what}: only the argmax over the features (dim=1) of a (batch, N) value is "
            f"supported, not dim={dim}"
        )
    return label_select(b, args[0], 1, not keep, n.name, what)


@lowers(torch.topk, "topk", supports=None)
def _torch_topk(b: Builder, n: fx.Node, args: tuple, kwargs: dict) -> _TopK:
    """torch.topk of a (batch, N) value along its features, largest first: its indices
    (`_TopK.part`) are a LabelSelect of k."""
    what = _describe(b.gm, n)
    names = ("k", "dim", "largest", "sorted")
    p = {**dict(zip(names, n.args[1:], strict=False)), **n.kwargs}
    dim = int(p.get("dim", -1))
    ok = p.get("largest", True) and p.get("sorted", True) and dim % 2 == 1
    if not ok or _float(b.values[n.args[0]]).dim() != 2 or isinstance(p["k"], fx.Node):
        raise UnsupportedLayerError(
            f"{what}: only torch.topk of a constant k, largest=True and sorted=True over "
            "the features (dim=1) of a (batch, N) value is supported"
        )
    return _TopK(args[0], int(p["k"]), n.name, what)


@dataclass
class _TopK(Pending):
    """A torch.topk of the value `v`: its indices become a LabelSelect of `k`."""

    v: object
    k: int
    name: str
    what: str

    def part(self, b: Builder, n: fx.Node, args: tuple) -> _Val:
        """`.indices` or `[1]` of the torch.topk: its LabelSelect; its values are refused."""
        if args[0] is not self or not (
            (n.target is operator.getitem and args[1] == 1)
            or (n.target is getattr and args[1] == "indices")
        ):
            raise UnsupportedLayerError(
                f"{_describe(b.gm, n)}: of a torch.topk only its indices (labels) are "
                "supported, not its values"
            )
        return label_select(b, self.v, self.k, False, self.name, self.what)


# -- QONNX ----------------------------------------------------------------------------------


def _geometry(node: NodeProto, ndim: int) -> tuple[bool, bool]:
    """(whether the label select is over the last axis of a (batch, N) value, keepdims) of
    an ArgMax or TopK node; UnsupportedLayerError where it picks otherwise than torch's
    argmax and topk of the largest, sorted."""
    a = attrs(node)
    argmax = node.op_type == "ArgMax"
    axis = int(a.get("axis", 0 if argmax else -1))
    if a.get("select_last_index", 0) or not a.get("largest", 1) or not a.get("sorted", 1):
        raise UnsupportedLayerError(
            "only the first largest (select_last_index=0) and the largest, sorted (TopK "
            "largest=1, sorted=1) are supported"
        )
    return ndim == 2 and axis % 2 == 1, bool(a.get("keepdims", 1))


def _labels(b: Builder, node: NodeProto, x: object, k: int, ident: str) -> _Val:
    over, keep = _geometry(node, b.values[node.input[0]].dim())
    if not over:
        raise UnsupportedLayerError(
            "only the label select over the features (axis 1) of a (batch, N) value is supported"
        )
    return label_select(b, x, k, node.op_type == "ArgMax" and not keep, ident, ident)


def _argmax(node: NodeProto, x: torch.Tensor) -> torch.Tensor:
    _, keep = _geometry(node, x.dim())
    return torch.argmax(x, int(attrs(node).get("axis", 0)), keep)


def _topk(node: NodeProto, x: torch.Tensor, k: torch.Tensor) -> tuple:
    _geometry(node, x.dim())
    return tuple(torch.topk(x, int(k.reshape(-1)[0]), int(attrs(node).get("axis", -1))))


@onnx_op("ArgMax", replay=_argmax)
def _onnx_argmax(b: Builder, node: NodeProto, args: list, out: str, ident: str) -> _Val:
    return _labels(b, node, args[0], 1, ident)


@onnx_op("TopK", replay=_topk)
def _onnx_topk(b: Builder, node: NodeProto, args: list, out: str, ident: str) -> tuple:
    """Its indices (output 1) are a LabelSelect; its values are refused where read."""
    k = int(b.constant(args[1]).value.reshape(-1)[0])
    values = Refused("of a TopK only its indices (labels) are supported, not its values")
    return values, _labels(b, node, args[0], k, ident)
