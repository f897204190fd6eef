"""The frontend-independent half of lowering: traced values, float chains, requantization.

Both frontends (torch.fx in lowering.py, QONNX in qonnx.py) walk a model and keep,
for each value, a `_Val`: the integer node that produces it, the float32 scale that
dequantizes it, and any float operations (a float bias, a batch norm, a ReLU) still
to be applied before the next quantizer. A quantizer (any callable returning a
Brevitas QuantTensor) closes that chain into a requantize node: the map from
integers to integers is found against the model's own float32 arithmetic (see
requant.py), so it is exact. A frontend subclasses `Builder` and says, through
`shape(n)`, what shape its value `n` has. Each node's range and, for accumulators and
adds, its type come from its kind's `infer_range`.
"""

from __future__ import annotations

import copy
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from brevitas.quant_tensor import QuantTensor

from cosyn.errors import UnsupportedLayerError
from cosyn.ir import nodes as N
from cosyn.ir.chain import Binary, quant_type
from cosyn.ir.graph import Graph
from cosyn.ir.requant import as_shift, float_thresholds, threshold_bank

__all__ = ["Builder", "Conv", "Pool", "_Input", "_Val", "layer_bias", "node_name"]


def node_name(path: str, kind: str) -> str:
    """The node a module at `path` lowers to, before numbering: `layers.0` becomes
    `layers_0`, `0` (a Sequential's) `dense_0`."""
    base = re.sub(r"\W", "_", path)
    return base if base[:1].isalpha() else f"{kind}_{base}"


@dataclass
class _Val:
    """A traced value: float32(ints of `node`) * scale (+ bias), then `chain`."""

    node: str
    scale: torch.Tensor
    bias: torch.Tensor | None = None
    chain: list[Callable[[torch.Tensor], torch.Tensor]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True where the value is exactly ints * scale."""
        return self.bias is None and not self.chain


@dataclass
class _Input:
    """The model's float input of per-sample `shape`, with the float operations before its
    first quantizer; `flat` where the model flattens it to (batch, -1) on the way."""

    shape: tuple[int, ...]
    chain: list[Callable[[torch.Tensor], torch.Tensor]] = field(default_factory=list)
    flat: bool = False


@dataclass(frozen=True)
class Conv:
    """Geometry of a 2-D convolution (dilation=1, zero padding) of `groups` groups."""

    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int = 1


@dataclass(frozen=True)
class Pool:
    """Geometry of a 2-D pooling, as the frontend read it (pairs: height, width). For an
    average, `divisors` are the model's float32 divisions of the window sum, in order
    (torch's avg_pool2d: one, kh*kw or divisor_override; adaptive_avg_pool2d: kh then kw)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisors: tuple[int, ...] = ()


class Builder:
    """Collects integer nodes and closes float chains; `value_shape(n)` is the frontend's."""

    signal = False  # a model of 1-D convolutions: its (C, L) values are (C, 1, L) images
    sequence = False  # the graph takes a sequence at a time (Graph.sequence)

    def __init__(self, values: dict) -> None:
        self.values = values
        self.nodes: list[N.Node] = []
        self.ranges: dict[str, N.Range] = {}  # each node's infer_range, while building

    # -- bookkeeping ------------------------------------------------------------------

    def value_shape(self, n: object) -> tuple[int, ...]:
        """Per-sample shape of the frontend's value `n`, as the model has it."""
        raise NotImplementedError

    def shape(self, n: object) -> tuple[int, ...]:
        """Per-sample shape of value `n` in the graph: in a model of 1-D convolutions
        (`signal`), a (C, L) signal is an image (C, 1, L) of height 1, as the Conv2d,
        pooling and flatten nodes take it."""
        s = self.value_shape(n)
        return (s[0], 1, s[1]) if self.signal and len(s) == 2 else s

    def add(self, node: N.Node) -> N.Node:
        """Append `node`, keeping the range its kind infers from its inputs'."""
        self.nodes.append(node)
        self.ranges[node.name] = node.infer_range(*self.in_ranges(node.inputs))
        return node

    def node(self, name: str) -> N.Node:
        return next(n for n in self.nodes if n.name == name)

    def in_ranges(self, inputs: tuple[str, ...]) -> list[N.Range]:
        return [self.ranges[i] for i in inputs]

    def fresh(self, name: str, kind: str) -> str:
        """A unique identifier from a module path (`node_name`), numbered where taken."""
        taken = {n.name for n in self.nodes}
        base = cand = node_name(name, kind)
        i = 1
        while cand in taken:
            cand, i = f"{base}_{i}", i + 1
        return cand

    def emit(self, node: N.Node, scale: torch.Tensor) -> _Val:
        """Append `node` (see `add`); its output is the value ints * `scale`."""
        self.add(node)
        return _Val(node.name, scale)

    # -- closing a float chain into integers ----------------------------------------------

    def quantize(self, v: _Val | _Input, quant: Callable, n: object, name: str) -> _Val:
        """Apply a quantizer (a callable returning a QuantTensor) to `v`."""
        shape = self.shape(n)
        probe = quant(torch.zeros((1, *shape)))
        if not isinstance(probe, QuantTensor):
            raise UnsupportedLayerError(f"{name}: quantizer returned no QuantTensor")
        if torch.any(probe.zero_point != 0):
            raise UnsupportedLayerError(
                f"{name}: zero points are not supported; use a symmetric quantizer"
            )
        dtype = quant_type(quant, probe, shape, name)
        if isinstance(v, _Input):
            return self._input(v, quant, probe, dtype, shape, name)
        scale = _per_channel(probe.scale, shape)
        lo, hi = self.ranges[v.node]

        def f(a: np.ndarray) -> np.ndarray:
            x = (
                torch.from_numpy(np.ascontiguousarray(a))
                .to(torch.float32)
                .reshape(a.shape + (1,) * (len(shape) - 1))
            )
            out = quant(_apply(v, x))
            return torch.round(out.value / out.scale).reshape(a.shape).to(torch.int64).numpy()

        try:
            bank = threshold_bank(f, lo, hi)
        except ValueError as e:
            raise UnsupportedLayerError(f"{name}: {e}; cosyn lowers monotone activations") from e
        ratio = _log2_ratio(scale, v.scale) if v.bias is None and not v.chain else None
        params = as_shift(bank, ratio) if ratio is not None else None
        common = dict(inputs=(v.node,), shape=shape, dtype=dtype, scale=scale.numpy())
        if params is not None:
            node = N.Shift(name=self.fresh(name, N.Shift.kind), **common, **params)
            return self.emit(node, scale)
        node = N.Threshold(
            name=self.fresh(name, N.Threshold.kind),
            **common,
            thresholds=bank.t,
            base=bank.base,
            sign=bank.sign,
        )
        return self.emit(node, scale)

    def _input(self, v: _Input, quant, probe, dtype, shape, name) -> _Val:
        if probe.scale.numel() != 1:
            raise UnsupportedLayerError(f"{name}: the input quantizer must be per tensor")

        def f(x: np.ndarray) -> np.ndarray:
            with np.errstate(all="ignore"):
                y = torch.from_numpy(x.copy())
                for op in v.chain:
                    y = op(y)
                out = quant(y)
            return torch.round(out.value / out.scale).to(torch.int64).numpy()

        try:
            t, base = float_thresholds(f)
        except ValueError as e:
            raise UnsupportedLayerError(
                f"{name}: {e} with its input; cosyn reads inputs through an increasing "
                "quantizer (drop a negative factor from the preprocessing)"
            ) from e
        scale = probe.scale.detach().reshape(())
        node = N.Quantize(
            name=self.fresh(name, N.Quantize.kind),
            inputs=(),
            shape=v.shape,
            dtype=dtype,
            scale=scale.numpy(),
            thresholds=t,
            base=base,
        )
        out = self.emit(node, scale)
        return self._flatten(out, shape, "flatten") if v.flat else out

    # -- integer layers ---------------------------------------------------------------------

    def clean(self, v: object, what: str) -> _Val:
        if isinstance(v, _Input) or not isinstance(v, _Val) or not v.clean:
            raise UnsupportedLayerError(
                f"{what} receives a value that is not quantized; put a Brevitas quantizer "
                "(QuantIdentity, QuantReLU) before it"
            )
        return v

    def accumulate(
        self,
        v: _Val,
        w: np.ndarray,
        w_scale: torch.Tensor,
        bias: torch.Tensor | None,
        shape: tuple[int, ...],
        name: str,
        what: str,
        conv: Conv | None = None,
    ) -> _Val:
        """A Dense (or, with `conv`, Conv2d) node of integer weights `w` at `w_scale` on the
        clean value `v`. `bias` is the float bias as the model adds it: it becomes integers
        where it is an exact integer at the accumulator's scale, a float bias otherwise."""
        if v.scale.numel() != 1:
            raise UnsupportedLayerError(f"{what}: its input must have one scale per tensor")
        s_acc = (v.scale * w_scale.reshape(-1)).to(torch.float32).detach()
        if bias is None:
            bias = torch.zeros(w.shape[0])
        b_int = torch.round(bias / s_acc)
        exact = torch.equal(b_int * s_acc, bias)  # an integer at the accumulator's scale
        b = b_int.to(torch.int64).numpy() if exact else np.zeros(w.shape[0], np.int64)
        scale = _per_channel(s_acc, shape)
        common = dict(inputs=(v.node,), shape=shape, scale=scale.numpy(), weight=w, bias=b)
        ins = self.in_ranges((v.node,))
        if conv is None:
            node = N.Dense.sized(ins, name=self.fresh(name, N.Dense.kind), **common)
        else:
            geometry = dict(stride=conv.stride, padding=conv.padding, groups=conv.groups)
            node = N.Conv2d.sized(ins, name=self.fresh(name, N.Conv2d.kind), **common, **geometry)
        self.add(node)
        return _Val(node.name, scale, None if exact else _per_channel(bias, shape))

    def layer(
        self, m: torch.nn.Module, v: object, bias: torch.Tensor | None, n: object, name: str,
        what: str, conv: Conv | None = None,
    ) -> _Val:  # fmt: skip
        """A Brevitas QuantLinear or QuantConv (with `conv`) on `v`: its input quantizer if
        enabled, the accumulation of its integer weights (a 1-D kernel as (1, k)) with the
        float `bias` the model adds (`accumulate`), its output quantizer if enabled; `n` is
        the frontend's handle of the output (`shape`)."""
        if m.input_quant.is_quant_enabled:
            v = self.quantize(v, m.input_quant, n, f"{name}.input_quant")
        v = self.clean(v, what)
        qw = m.quant_weight()
        if torch.any(qw.zero_point != 0):
            raise UnsupportedLayerError(f"{what}: weight zero points are not supported")
        w = qw.int().to(torch.int64).numpy()
        w = w[:, :, None, :] if conv is not None and w.ndim == 3 else w
        out = self.accumulate(v, w, qw.scale, bias, self.shape(n), name, what, conv)
        if m.output_quant.is_quant_enabled:
            return self.quantize(out, m.output_quant, n, f"{name}.output_quant")
        return out

    def sum2(self, a: _Val, b: _Val, shape: tuple[int, ...], name: str) -> _Val:
        """An Add node of two clean values whose scales differ by a power of two."""
        sa, sb = a.scale, b.scale
        if sa.numel() != 1 or sb.numel() != 1:
            raise UnsupportedLayerError(f"{name} (add): inputs need one scale per tensor")
        e = _log2_ratio(sa, sb)
        if e is None:
            raise UnsupportedLayerError(
                f"{name} (add): input scales {sa.item()} and {sb.item()} differ by a factor "
                "that is not a power of two; quantize both inputs with the same quantizer"
            )
        e = int(e.reshape(-1)[0])
        shifts = (max(e, 0), max(-e, 0))
        scale = torch.minimum(sa, sb).reshape(())
        node = N.Add.sized(
            self.in_ranges((a.node, b.node)),
            name=self.fresh(name, N.Add.kind),
            inputs=(a.node, b.node),
            shape=shape,
            scale=scale.numpy(),
            shifts=shifts,
        )
        return self.emit(node, scale)

    def maxpool(self, v: object, pool: Pool, shape: tuple[int, ...], name: str, what: str) -> _Val:
        """A MaxPool2d node on the clean value `v`: the same integers' maxima at the same
        scale (a positive scale commutes with max), `shape` the model's output shape."""
        node = self._pool_node(N.MaxPool2d, v, pool, shape, name, what)
        if torch.any(v.scale <= 0):
            raise UnsupportedLayerError(f"{what}: its input's scale is not positive")
        return self.emit(node, v.scale)

    def avgpool(
        self, v: object, pool: Pool, shape: tuple[int, ...], name: str, what: str,
        trunc: bool = False,
    ) -> _Val:  # fmt: skip
        """An AvgPool2d node on the clean value `v`: its window sums, the model's mean once
        divided. Divisors that are powers of two go into the scale (exact in float32); others
        stay on the value's float chain as the model's own divisions, so the next quantizer
        is found against fl(fl(sum * s) / d), what the model computes. With `trunc` (the sum
        read back as an integer by Brevitas' truncation, at the scale s / d Brevitas gives
        it) the scale is s / d in float32 either way."""
        node = self._pool_node(N.AvgPool2d, v, pool, shape, name, what)
        s = self.clean(v, what).scale
        if trunc or all(d & (d - 1) == 0 for d in pool.divisors):
            scale = (s / int(np.prod(pool.divisors))).to(torch.float32)
            node.scale = scale.numpy()
            return self.emit(node, scale)
        node.scale = s.numpy()
        self.add(node)
        return _Val(node.name, s, None, [Binary(operator.truediv, d) for d in pool.divisors])

    def global_average(
        self, n: object, v: object, shape: tuple[int, ...], axes, keep: bool, name: str, what: str
    ) -> _Val | _Input:
        """The mean over `axes`, the last two of a (batch, C, H, W) value of `shape`, or
        the last of a (batch, C, L) signal (`signal`: the (C, 1, L) image's two): a global
        average pooling (the model divides the sum once, by H*W), flattened to (batch, C)
        unless `keep`."""
        axes = sorted(int(a) % len(shape) for a in axes)
        if self.signal and len(shape) == 3 and axes == [2]:
            shape, axes = (shape[0], shape[1], 1, shape[2]), [2, 3]
        if len(shape) != 4 or axes != [2, 3]:
            raise UnsupportedLayerError(
                f"{what}: only the mean over the last two axes of a (batch, C, H, W) value "
                "or the last of a (batch, C, L) signal (global average pooling) is supported"
            )
        h, w = shape[2:]
        pool = Pool((h, w), (h, w), (0, 0), divisors=(h * w,))
        out = self.avgpool(v, pool, (shape[1], 1, 1), name, what)
        return out if keep else self.flatten(n, out, name)

    def _pool_node(
        self, kind: type, v: object, pool: Pool, shape: tuple[int, ...], name: str, what: str
    ) -> N.MaxPool2d | N.AvgPool2d:
        """A MaxPool2d or AvgPool2d node of `pool` on the clean value `v` (not yet added);
        UnsupportedLayerError where the model pools otherwise (a border window's count,
        dilation, ceil_mode)."""
        if pool.dilation != (1, 1):
            raise UnsupportedLayerError(
                f"{what}: only dilation 1 is supported, not {pool.dilation}"
            )
        if not pool.count_include_pad and any(pool.padding):
            raise UnsupportedLayerError(
                f"{what}: count_include_pad=False divides a border window by fewer elements "
                "than the others; use count_include_pad=True or padding 0"
            )
        v = self.clean(v, what)
        src = self.node(v.node)
        fields = dict(kernel=pool.kernel, stride=pool.stride, padding=pool.padding)
        node = kind(
            name=self.fresh(name, kind.kind), inputs=(v.node,), shape=shape,
            dtype=src.dtype, scale=v.scale.numpy(), **fields,
        )  # fmt: skip
        try:
            floor = node.infer_shape(src.shape)
        except ValueError as e:
            raise UnsupportedLayerError(f"{what}: {e}") from e
        if floor != tuple(shape):
            raise UnsupportedLayerError(
                f"{what}: ceil_mode gives {tuple(shape)} where floor mode gives {floor}; "
                "only windows that end inside the padded input are supported (ceil_mode=False)"
            )
        if kind is N.AvgPool2d:
            node.dtype = node.fit(*node.infer_range(*self.in_ranges((v.node,))))
        return node

    def flatten(self, n: object, v: object, name: str) -> _Val | _Input:
        """Flatten to (batch, -1): a Flatten node, or, before the first quantizer, a note
        on the input (the input quantizer is elementwise, so it is flattened after). A
        value's float chain of operations by one number (an average's division) is kept."""
        if isinstance(v, _Input):
            return v if len(v.shape) == 1 else _Input(v.shape, v.chain, flat=True)
        if _divided(v):
            out = self._flatten(_Val(v.node, v.scale), self.shape(n), name)
            return _Val(out.node, out.scale, None, list(v.chain))
        return self._flatten(self.clean(v, f"{name} (flatten)"), self.shape(n), name)

    def _flatten(self, v: _Val, shape: tuple[int, ...], name: str) -> _Val:
        src = self.nodes[[x.name for x in self.nodes].index(v.node)]
        if len(src.shape) == 1:
            return v
        scale = torch.broadcast_to(v.scale, src.shape).reshape(-1)
        scale = scale[:1].reshape(()) if torch.all(scale == scale[0]) else scale
        node = N.Flatten(
            name=self.fresh(name, N.Flatten.kind),
            inputs=(v.node,),
            shape=shape,
            dtype=src.dtype,
            scale=scale.numpy(),
        )
        return self.emit(node, scale)

    def finish(self, out: object) -> Graph:
        """The graph; an affine float map after the last integer node (a scale, a bias, a
        batch norm, TensorNorm: dequantization) stays the model's float32 arithmetic on the
        output (`Graph.output_ops`)."""
        if not isinstance(out, _Val):
            raise UnsupportedLayerError("the model output does not depend on a quantized layer")
        other = [op for op in out.chain if not _affine(op)]
        if other:
            raise UnsupportedLayerError(
                "the model output passes through float operations after its last quantized "
                f"layer that are not a scale, a bias or a batch norm ({_op_name(other[0])}); "
                "end the model with a quantizer or a quantized layer"
            )
        bias = None if out.bias is None else out.bias.numpy()
        ops = tuple(
            copy.deepcopy(op) if isinstance(op, torch.nn.Module) else op for op in out.chain
        )
        g = Graph(self.nodes, output_bias=bias, output_ops=ops, sequence=self.sequence)
        g.check()
        return g


def layer_bias(m: torch.nn.Module, zero: torch.Tensor) -> torch.Tensor | None:
    """The float bias a Brevitas QuantLinear or QuantConv `m` adds to its accumulation, as
    its forward computes it: its bias quantizer given the quantized input and weights, for
    `zero`, an input of zeros as the model feeds it (a QuantTensor where it is one)."""
    if m.bias is None:
        return None
    with torch.no_grad():
        x = m.input_quant(zero)
        b = m.bias_quant(m.bias, x, m.quant_weight())
    return (b.value if isinstance(b, QuantTensor) else b).detach().to(torch.float32).reshape(-1)


def _affine(op: Callable) -> bool:
    """True for an affine float map of the output: +, -, *, / by constants, a batch norm."""
    return bool(getattr(op, "affine", False)) or isinstance(
        op, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d
    )


def _divided(v: object) -> bool:
    """True for a value whose float chain is only operations by one Python number (an
    average's divisions, left to the model), which commute with a flatten."""
    return (
        isinstance(v, _Val)
        and v.bias is None
        and bool(v.chain)
        and all(isinstance(op, Binary) and isinstance(op.c, int | float) for op in v.chain)
    )


def _op_name(op: Callable) -> str:
    return getattr(op, "__name__", type(op).__name__)


def _extend(v: object, op: Callable, what: str) -> object:
    if isinstance(v, _Input):
        return _Input(v.shape, [*v.chain, op], v.flat)
    if not isinstance(v, _Val):
        raise UnsupportedLayerError(f"{what}: input is not a tensor")
    return _Val(v.node, v.scale, v.bias, [*v.chain, op])


def _apply(v: _Val, acc: torch.Tensor) -> torch.Tensor:
    """The model's float arithmetic from integers to the quantizer input."""
    y = (
        acc * v.scale
        if v.scale.dim() == 0
        else acc * v.scale.reshape((1, *v.scale.shape[:1]) + (1,) * (acc.dim() - 2))
    )
    if v.bias is not None:
        y = y + v.bias.reshape((1, -1) + (1,) * (acc.dim() - 2))
    for op in v.chain:
        y = op(y)
    return y


def _per_channel(s: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A scale as () per tensor, or (C,) / (C, 1, 1) per channel for a sample of `shape`."""
    s = s.detach().to(torch.float32).reshape(-1)
    if s.numel() == 1:
        return s.reshape(())
    return s.reshape((-1,) + (1,) * (len(shape) - 1))


def _log2_ratio(num: torch.Tensor, den: torch.Tensor) -> np.ndarray | None:
    """Per-channel integer log2(num / den), or None where a ratio is not a power of two."""
    r = (num.double() / den.double()).reshape(-1).numpy()
    k = np.round(np.log2(r)).astype(np.int64)
    return k if np.all(np.ldexp(1.0, k) == r) else None
