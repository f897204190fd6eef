"""Lower a Brevitas model to the integer graph.

The model is traced with torch.fx (Brevitas and torch.nn modules stay leaves) and
run once on the example input, so every value's shape and quantization is known.
The walk keeps, for each traced value, a `_Val`: the integer node that produces it,
the float32 scale that dequantizes it, and any float operations (a float bias, a
batch norm, a ReLU) still to be applied before the next quantizer. A quantizer
closes that chain into a requantize node: the map from integers to integers is
found against the model's own modules (see requant.py), so it is exact.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from brevitas.nn import QuantConv2d, QuantLinear
from brevitas.nn.quant_layer import QuantNonLinearActLayer
from brevitas.quant_tensor import QuantTensor
from torch import fx, nn

from cosyn.errors import UnsupportedLayerError
from cosyn.ir import nodes as N
from cosyn.ir.graph import Graph
from cosyn.ir.requant import as_shift, float_thresholds, threshold_bank

__all__ = ["LOWERINGS", "SUPPORTED", "lower"]

SUPPORTED = (
    "QuantIdentity, QuantReLU, QuantHardTanh (and other monotone Brevitas activations), "
    "QuantLinear, QuantConv2d, BatchNorm1d/2d, ReLU, Hardtanh, Dropout, Identity, Flatten, "
    "add, flatten/view/reshape to (batch, -1)"
)
_ELEMENTWISE = (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.Hardtanh, nn.ReLU6)
_PASSTHROUGH = (nn.Dropout, nn.Identity)


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
    """The model's float input, with any float operations before its first quantizer."""

    chain: list[Callable[[torch.Tensor], torch.Tensor]] = field(default_factory=list)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (
            type(m).__module__.startswith("brevitas.")
            or type(m) in LOWERINGS
            or (super().is_leaf_module(m, qualname))
        )


class _Recorder(fx.Interpreter):
    """Runs the traced model once and keeps every intermediate value."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[fx.Node, object] = {}

    def run_node(self, n: fx.Node) -> object:
        self.values[n] = out = super().run_node(n)
        return out


def _float(v: object) -> torch.Tensor:
    return v.value if isinstance(v, QuantTensor) else v  # type: ignore[return-value]


class _Builder:
    def __init__(self, gm: fx.GraphModule, values: dict[fx.Node, object]) -> None:
        self.gm = gm
        self.values = values
        self.nodes: list[N.Node] = []
        self.ranges: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.vals: dict[fx.Node, object] = {}

    # -- bookkeeping ------------------------------------------------------------------

    def add(self, node: N.Node, lo: np.ndarray, hi: np.ndarray) -> N.Node:
        self.nodes.append(node)
        self.ranges[node.name] = (np.asarray(lo, np.int64), np.asarray(hi, np.int64))
        return node

    def shape(self, n: fx.Node) -> tuple[int, ...]:
        return tuple(_float(self.values[n]).shape[1:])

    def fresh(self, name: str, kind: str) -> str:
        """A unique identifier from a module path: `layers.0` becomes `layers_0`, `0` `dense_0`."""
        taken = {n.name for n in self.nodes}
        base = re.sub(r"\W", "_", name)
        base = cand = base if base[:1].isalpha() else f"{kind}_{base}"
        i = 1
        while cand in taken:
            cand, i = f"{base}_{i}", i + 1
        return cand

    # -- closing a float chain into integers ----------------------------------------------

    def quantize(self, v: _Val | _Input, quant: Callable, n: fx.Node, name: str) -> _Val:
        """Apply a Brevitas quantizer (a proxy returning a QuantTensor) to `v`."""
        shape = self.shape(n)
        probe = quant(torch.zeros((1, *shape)))
        if not isinstance(probe, QuantTensor):
            raise UnsupportedLayerError(f"{name}: quantizer returned no QuantTensor")
        if torch.any(probe.zero_point != 0):
            raise UnsupportedLayerError(
                f"{name}: zero points are not supported; use a symmetric quantizer"
            )
        dtype = N.IntType(int(probe.bit_width), bool(probe.signed))
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
        common = dict(inputs=(v.node,), shape=shape, dtype=dtype)
        if params is not None:
            node = N.Shift(name=self.fresh(name, "shift"), **common, scale=scale.numpy(), **params)
            return self._val(node, params["lo"], params["hi"], scale)
        node = N.Threshold(
            name=self.fresh(name, "threshold"),
            **common,
            scale=scale.numpy(),
            thresholds=bank.t,
            base=bank.base,
            sign=bank.sign,
        )
        ends = bank.base + bank.sign * bank.steps
        return self._val(node, np.minimum(bank.base, ends), np.maximum(bank.base, ends), scale)

    def _val(self, node: N.Node, lo, hi, scale: torch.Tensor) -> _Val:
        self.add(node, lo, hi)
        return _Val(node.name, scale)

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

        t, base = float_thresholds(f)
        scale = probe.scale.detach().reshape(())
        node = N.Quantize(
            name=self.fresh(name, "quantize"),
            inputs=(),
            shape=shape,
            dtype=dtype,
            scale=scale.numpy(),
            thresholds=t,
            base=base,
        )
        return self._val(node, np.full(1, base), np.full(1, base + t.size), scale)

    # -- walking the traced graph -----------------------------------------------------------

    def clean(self, v: object, what: str) -> _Val:
        if isinstance(v, _Input) or not isinstance(v, _Val) or not v.clean:
            raise UnsupportedLayerError(
                f"{what} receives a value that is not quantized; put a Brevitas quantizer "
                "(QuantIdentity, QuantReLU) before it"
            )
        return v

    def run(self) -> Graph:
        out = None
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                self.vals[n] = _Input()
            elif n.op == "output":
                out = self.vals[n.args[0]]
            elif n.op == "call_module":
                self.vals[n] = self.module(n, self.gm.get_submodule(n.target))
            else:
                self.vals[n] = self.function(n)
        return self.finish(out)

    def arg(self, n: fx.Node, i: int = 0) -> object:
        return self.vals[n.args[i]]

    def module(self, n: fx.Node, m: nn.Module) -> object:
        name, v = str(n.target), self.arg(n)
        what = f"{name} ({type(m).__name__})"
        if type(m) in LOWERINGS:
            return LOWERINGS[type(m)](self, n, m, v, name)
        if isinstance(m, QuantNonLinearActLayer):
            if m.input_quant.is_quant_enabled:
                raise UnsupportedLayerError(f"{what}: input_quant is not supported")
            if not m.act_quant.is_quant_enabled:
                return _extend(v, m, what)
            return self.quantize(v, m.act_quant, n, name)
        if isinstance(m, QuantLinear | QuantConv2d):
            return self.weighted(n, m, v, name, what)
        if isinstance(m, _ELEMENTWISE):
            return _extend(v, m, what)
        if isinstance(m, _PASSTHROUGH):
            return v
        if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
            return self.flatten(n, v, name)
        raise UnsupportedLayerError(
            f"{what}: cosyn cannot lower this module; supported: {SUPPORTED}"
        )

    def function(self, n: fx.Node) -> object:
        t = n.target
        if n.op == "get_attr" or (n.op == "call_method" and t == "size"):
            return None
        if t in (operator.add, torch.add) or (n.op == "call_method" and t == "add"):
            return self.add2(n)
        if t in (F.relu, torch.relu) or (n.op == "call_method" and t == "relu"):
            return _extend(self.arg(n), torch.relu, n.name)
        flat = t == torch.flatten or (n.op == "call_method" and t in ("flatten", "view", "reshape"))
        batch = _float(self.values[n.args[0]]).shape[0]
        if flat and len(self.shape(n)) == 1 and _float(self.values[n]).shape[0] == batch:
            return self.flatten(n, self.arg(n), n.name)
        raise UnsupportedLayerError(
            f"{n.name} ({n.op} {getattr(t, '__name__', t)}): cosyn cannot lower this "
            f"operation; supported: {SUPPORTED}"
        )

    def weighted(self, n: fx.Node, m: nn.Module, v: object, name: str, what: str) -> object:
        if m.input_quant.is_quant_enabled:
            v = self.quantize(v, m.input_quant, n, f"{name}.input_quant")
        v = self.clean(v, what)
        if v.scale.numel() != 1:
            raise UnsupportedLayerError(f"{what}: its input must have one scale per tensor")
        qw = m.quant_weight()
        if torch.any(qw.zero_point != 0):
            raise UnsupportedLayerError(f"{what}: weight zero points are not supported")
        w = qw.int().to(torch.int64).numpy()
        s_acc = (v.scale * qw.scale.reshape(-1)).to(torch.float32).detach()
        bias = self.bias(n, m)
        if bias is None:
            bias = torch.zeros(w.shape[0])
        b_int = torch.round(bias / s_acc)
        exact = torch.equal(b_int * s_acc, bias)  # an integer at the accumulator's scale
        b = b_int.to(torch.int64).numpy() if exact else np.zeros(w.shape[0], np.int64)
        shape = self.shape(n)
        lo_x, hi_x = self.ranges[v.node]
        lo_x, hi_x = int(lo_x.min()), int(hi_x.max())
        axes = tuple(range(1, w.ndim))
        lo = np.minimum(w * lo_x, w * hi_x).sum(axes) + b
        hi = np.maximum(w * lo_x, w * hi_x).sum(axes) + b
        scale = _per_channel(s_acc, shape)
        common = dict(
            inputs=(v.node,),
            shape=shape,
            dtype=N.int_type_for_range(lo.min(), hi.max()),
            scale=scale.numpy(),
            weight=w,
            bias=b,
        )
        if isinstance(m, QuantLinear):
            node = N.Dense(name=self.fresh(name, "dense"), **common)
        else:
            _check_conv(m, what)
            node = N.Conv2d(
                name=self.fresh(name, "conv2d"),
                **common,
                stride=tuple(m.stride),
                padding=tuple(m.padding),
            )
        self.add(node, lo, hi)
        out = _Val(node.name, scale, None if exact else _per_channel(bias, shape))
        if m.output_quant.is_quant_enabled:
            return self.quantize(out, m.output_quant, n, f"{name}.output_quant")
        return out

    def bias(self, n: fx.Node, m: nn.Module) -> torch.Tensor | None:
        """The bias the layer adds, as the model computes it: its output at zero input."""
        if m.bias is None:
            return None
        x = self.values[n.args[0]]
        zero = torch.zeros_like(_float(x)[:1])
        if isinstance(x, QuantTensor):
            zero = x.set(value=zero)
        out = _float(m(zero))
        return out.reshape(out.shape[1], -1)[:, 0].detach().to(torch.float32)

    def add2(self, n: fx.Node) -> _Val:
        a, b = (self.clean(self.arg(n, i), f"{n.name} (add)") for i in (0, 1))
        sa, sb = a.scale, b.scale
        if sa.numel() != 1 or sb.numel() != 1:
            raise UnsupportedLayerError(f"{n.name} (add): inputs need one scale per tensor")
        e = _log2_ratio(sa, sb)
        if e is None:
            raise UnsupportedLayerError(
                f"{n.name} (add): input scales {sa.item()} and {sb.item()} differ by a factor "
                "that is not a power of two; quantize both inputs with the same quantizer"
            )
        e = int(e.reshape(-1)[0])
        shifts = (max(e, 0), max(-e, 0))
        (la, ha), (lb, hb) = self.ranges[a.node], self.ranges[b.node]
        lo = np.left_shift(la.min(), shifts[0]) + np.left_shift(lb.min(), shifts[1])
        hi = np.left_shift(ha.max(), shifts[0]) + np.left_shift(hb.max(), shifts[1])
        scale = torch.minimum(sa, sb).reshape(())
        node = N.Add(
            name=self.fresh(n.name, "add"),
            inputs=(a.node, b.node),
            shape=self.shape(n),
            dtype=N.int_type_for_range(lo, hi),
            scale=scale.numpy(),
            shifts=shifts,
        )
        return self._val(node, np.full(1, lo), np.full(1, hi), scale)

    def flatten(self, n: fx.Node, v: object, name: str) -> _Val:
        v = self.clean(v, f"{name} (flatten)")
        src = self.nodes[[x.name for x in self.nodes].index(v.node)]
        if len(src.shape) == 1:
            return v
        per = int(np.prod(src.shape[1:]))
        lo, hi = (np.repeat(np.broadcast_to(r, (src.shape[0],)), per) for r in self.ranges[v.node])
        scale = torch.broadcast_to(v.scale, src.shape).reshape(-1)
        scale = scale[:1].reshape(()) if torch.all(scale == scale[0]) else scale
        node = N.Flatten(
            name=self.fresh(name, "flatten"),
            inputs=(v.node,),
            shape=self.shape(n),
            dtype=src.dtype,
            scale=scale.numpy(),
        )
        return self._val(node, lo, hi, scale)

    def finish(self, out: object) -> Graph:
        if isinstance(out, _Input) or out is None:
            raise UnsupportedLayerError("the model output does not depend on a quantized layer")
        if out.chain:
            raise UnsupportedLayerError(
                "the model output passes through float operations after its last quantized "
                "layer; end the model with a quantizer or a quantized layer"
            )
        bias = None if out.bias is None else out.bias.numpy()
        return Graph(self.nodes, output_bias=bias)


def _extend(v: object, op: Callable, what: str) -> object:
    if isinstance(v, _Input):
        return _Input([*v.chain, op])
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


def _check_conv(m: QuantConv2d, what: str) -> None:
    if (
        m.groups != 1
        or tuple(m.dilation) != (1, 1)
        or m.padding_mode != "zeros"
        or isinstance(m.padding, str)
    ):
        raise UnsupportedLayerError(
            f"{what}: only groups=1, dilation=1 and integer zero padding are supported"
        )


# Extension point: module type -> lowering function(builder, fx_node, module, value, name).
LOWERINGS: dict[type, Callable] = {}


def lower(model: nn.Module, example_input: torch.Tensor) -> Graph:
    """Lower a Brevitas model to the integer graph; `example_input` is a float batch."""
    model.eval()
    try:
        gm = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as e:  # fx raises many kinds on untraceable code
        raise UnsupportedLayerError(
            f"{type(model).__name__}: torch.fx cannot trace the model ({e}); cosyn lowers "
            "models without data-dependent control flow"
        ) from e
    rec = _Recorder(gm)
    with torch.no_grad():
        try:
            rec.run(example_input.to(torch.float32))
        except Exception as e:
            raise UnsupportedLayerError(
                f"{type(model).__name__}: the model fails on the example input "
                f"({str(e).splitlines()[0]}); check that it runs in Brevitas first"
            ) from e
        return _Builder(gm, rec.values).run()
