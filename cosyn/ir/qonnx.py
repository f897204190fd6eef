"""Read the integer graph from a QONNX file, as Brevitas' `export_qonnx` writes it.

The nodes are walked in the file's (topological) order with the same builder as
`cosyn.lower`: a `Quant` or `BipolarQuant` on a constant gives integer weights, on
a value it closes its float chain (bias, BatchNormalization, Relu, Clip,
Add/Sub/Mul/Div by a constant; before the first quantizer, the input's
preprocessing) into the input quantizer or a requantize node found by bisection
against torch float32 implementations of the operators (qonnx_ops.py).
Gemm/MatMul/Conv become Dense/Conv2d, MaxPool a MaxPool2d, AveragePool,
GlobalAveragePool and ReduceMean over (H, W) an AvgPool2d (a Trunc after it, as
Brevitas writes TruncAvgPool2d, the requantize node), Add of two values an Add node,
Flatten/Reshape to (batch, -1) a Flatten, and an affine chain after the last layer
(FINN's TensorNorm) the graph's `output_ops`. A file with a 1-D Conv reads every
(batch, C, L) value as a (C, 1, L) image: the Conv a Conv2d of a (1, k) kernel, a 1-D
MaxPool a MaxPool2d and a 1-D AveragePool, GlobalAveragePool or ReduceMean over L an
AvgPool2d of a (1, k) window. Operators on constants alone (Pow, Sqrt, Transpose, ...)
are folded. The file is replayed once on a zero input of its declared shape, which gives
every value's shape; a file malformed in any way gives one CosynError line naming it.

    g = from_qonnx("m.onnx")   # g.run(x) equals the exported Brevitas model's output
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import NodeProto, numpy_helper

from cosyn.errors import CosynError, ModelFileError, UnsupportedLayerError
from cosyn.ir.builder import Builder, Conv, Pool, _divided, _extend, _Input, _per_channel, _Val
from cosyn.ir.chain import ARITHMETIC, Binary, operand
from cosyn.ir.graph import Graph
from cosyn.ir.qonnx_ops import (
    OPS,
    BipolarOp,
    ClipOp,
    attrs,
    avg_geometry,
    batch_norm,
    bipolar_op,
    clip,
    conv_geometry,
    evaluate,
    pool_geometry,
    quant_op,
    supported_ops,
    transpose_perm,
    trunc_op,
)
from cosyn.ir.qonnx_ops import QuantOp as QuantOp

__all__ = ["ONNX_LOWERINGS", "Refused", "from_qonnx", "input_shape", "onnx_op"]

# The QONNX frontend's extension point, filled by the modules that define node kinds
# (cosyn.ir.kinds): an op type -> fn(builder, node, args, out, ident) giving the builder
# value of its output (a tuple for several), its float replay in qonnx_ops.OPS.
ONNX_LOWERINGS: dict[str, Callable] = {}


def onnx_op(op_type: str, replay: Callable) -> Callable[[Callable], Callable]:
    """Register the decorated lowering and `replay` (fn(node, *inputs) -> torch output,
    as qonnx_ops.OPS) for `op_type`."""

    def register(fn: Callable) -> Callable:
        OPS[op_type], ONNX_LOWERINGS[op_type] = replay, fn
        return fn

    return register


_REFUSED = {
    "QuantizeLinear": "this is a QCDQ export; export the model with "
    "brevitas.export.export_qonnx instead",
    "DequantizeLinear": "this is a QCDQ export; export the model with "
    "brevitas.export.export_qonnx instead",
}


_QUANTS = ("Quant", "BipolarQuant")
_UNSIGNED_BIPOLAR = (
    "a BipolarQuant (-scale or +scale) of a value that cannot be negative gives +scale for "
    "every input; Brevitas writes its unsigned 1-bit quantizers (QuantReLU with bit_width=1, "
    "which compute 0 or scale) this way, so the file does not say what the model computes; "
    "use 2 or more bits, or lower the Brevitas model with cosyn.lower"
)


@dataclass
class _Const:
    """A constant tensor; `quant` and `raw` are set where it is a Quant of the constant `raw`."""

    value: torch.Tensor
    quant: QuantOp | BipolarOp | None = None
    raw: torch.Tensor | None = None


def from_qonnx(path: str | os.PathLike) -> Graph:
    """The integer graph of the QONNX file at `path` (one float input, one output)."""
    path = Path(path)
    model = _load(path)
    with torch.no_grad(), _one_line(path):
        return _QonnxBuilder(path, model).run()


def input_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """Per-sample shape of the file's input, as declared in the file."""
    path = Path(path)
    model = _load(path)
    with _one_line(path):
        return _input(path, model.graph)[1]


@contextmanager
def _one_line(path: Path) -> Iterator[None]:
    """Any exception but a CosynError (a file malformed in a way no check foresaw) becomes
    one ModelFileError line naming the file; a CosynError from the graph below (a node's
    bit width, say) is prefixed with the file where it does not name it."""
    try:
        yield
    except CosynError as e:
        if str(path) in str(e):
            raise
        raise type(e)(f"{path}: {e}") from e
    except Exception as e:
        raise ModelFileError(
            f"{path}: cosyn cannot read this file ({type(e).__name__}: {_first_line(e)}); "
            "export the model with brevitas.export.export_qonnx"
        ) from e


def _load(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file; give the path of a QONNX .onnx file")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf raises DecodeError, RuntimeWarning, ...
        raise ModelFileError(
            f"{path}: not a readable ONNX file ({_first_line(e)}); export the model with "
            "brevitas.export.export_qonnx"
        ) from e
    if not model.graph.node or not model.graph.output:
        raise ModelFileError(f"{path}: the ONNX graph has no nodes or no output")
    return model


def _input(path: Path, graph: onnx.GraphProto) -> tuple[str, tuple[int, ...]]:
    """Name and per-sample shape of the one graph input that is not an initializer."""
    inits = {i.name for i in graph.initializer}
    ins = [i for i in graph.input if i.name not in inits]
    if len(ins) != 1:
        raise ModelFileError(
            f"{path}: the graph needs exactly one input, it has {[i.name for i in ins]}"
        )
    t = ins[0].type.tensor_type
    dims = [d.dim_value for d in t.shape.dim[1:]]
    if t.elem_type != onnx.TensorProto.FLOAT or len(t.shape.dim) < 2 or min(dims) <= 0:
        raise ModelFileError(
            f"{path}: input {ins[0].name!r} must be float32 of a fixed shape (batch, ...); "
            "export with a concrete example input"
        )
    return ins[0].name, tuple(dims)


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


class _QonnxBuilder(Builder):
    """The QONNX frontend: values are ONNX tensor names; `values` holds their replay."""

    def __init__(self, path: Path, model: onnx.ModelProto) -> None:
        super().__init__({})
        self.path = path
        self.graph = model.graph
        self.vals: dict[str, object] = {}
        self.signal = any(
            n.op_type == "Conv" and len(attrs(n).get("kernel_shape", ())) == 1
            for n in self.graph.node
        )

    def value_shape(self, n: str) -> tuple[int, ...]:
        return tuple(self.values[n].shape[1:])

    def run(self) -> Graph:
        for init in self.graph.initializer:
            self._const(init.name, numpy_helper.to_array(init))
        name, shape = _input(self.path, self.graph)
        self.values[name] = torch.zeros((1, *shape))
        self.vals[name] = _Input(self.shape(name))
        for node in self.graph.node:
            self.step(node)
        out = self.output()
        try:
            return self.finish(self.vals[out])
        except UnsupportedLayerError as e:
            raise UnsupportedLayerError(f"{self.path}: output {out!r}: {e}") from e

    def output(self) -> str:
        """The one output that is not a constant (the TorchScript exporter adds a returned
        QuantTensor's scale, zero point and bit width as constant outputs)."""
        names = [o.name for o in self.graph.output]
        missing = [n for n in names if n not in self.vals]
        if missing:
            raise ModelFileError(f"{self.path}: no node produces the graph output {missing[0]!r}")
        outs = [n for n in names if not isinstance(self.vals[n], _Const)]
        if len(outs) != 1:
            raise UnsupportedLayerError(
                f"{self.path}: the graph needs exactly one computed output, it has {outs}"
            )
        return outs[0]

    def _const(self, name: str, a: np.ndarray) -> None:
        self.values[name] = t = torch.from_numpy(np.array(a))
        self.vals[name] = _Const(t)

    # -- one node ---------------------------------------------------------------------------

    def step(self, node: NodeProto) -> None:
        label = node.name or (node.output[0] if node.output else "")
        where = f"{self.path}: node {label!r} ({node.op_type})"
        ident = re.sub(r"\W+", "_", label.replace("export_handler", ""))
        ident = re.sub(r"^(node_+)?_?(symbolic)?", "", ident).strip("_") or "0"
        try:
            self.replay(node)
            out = self.lower(node, ident)
            for name, v in zip(
                node.output, out if isinstance(out, tuple) else (out,), strict=False
            ):
                self.vals[name] = v
        except CosynError as e:
            msg = re.sub(rf"^{re.escape(ident)}( \(\w+\))?:? ?", "", str(e))
            raise type(e)(f"{where}: {msg}") from e
        except Exception as e:  # malformed in a way no check foresaw
            raise ModelFileError(
                f"{where}: cosyn cannot read this node ({type(e).__name__}: {_first_line(e)})"
            ) from e

    def replay(self, node: NodeProto) -> None:
        """Compute the node's float output on the zero input (its shape, and a check)."""
        if node.op_type in _REFUSED:
            raise UnsupportedLayerError(_REFUSED[node.op_type])
        if node.op_type == "Constant":
            self._const(node.output[0], _constant(node))
            return
        missing = [i for i in node.input if i and i not in self.values]
        if missing:
            raise ModelFileError(
                f"input {missing[0]!r} is produced by no earlier node; the file is truncated "
                "or not in topological order"
            )
        ins = [self.values[i] if i else None for i in node.input]
        if node.op_type not in OPS:
            raise UnsupportedLayerError(
                f"cosyn cannot lower this operation; supported: {supported_ops()}"
            )
        try:
            out = evaluate(node, ins)
            for name, v in zip(
                node.output, out if isinstance(out, tuple) else (out,), strict=False
            ):
                self.values[name] = v
        except CosynError:
            raise
        except Exception as e:
            raise ModelFileError(f"the node fails on its inputs ({_first_line(e)})") from e

    def lower(self, node: NodeProto, ident: str) -> object:
        """The builder value of the node's output."""
        out = node.output[0]
        if node.op_type == "Constant":
            return self.vals[out]
        args = [self.vals[i] if i else None for i in node.input]
        refused = next((a for a in args if isinstance(a, Refused)), None)
        if refused is not None:
            raise UnsupportedLayerError(refused.reason)
        if node.op_type == "Transpose" and isinstance(args[0], _Const) and args[0].quant:
            return _transposed(args[0], transpose_perm(node, args[0].raw.dim()))
        if node.op_type not in _QUANTS and all(a is None or isinstance(a, _Const) for a in args):
            return _Const(self.values[out])  # constant folding, e.g. a reshaped weight
        if node.op_type in ONNX_LOWERINGS:
            return ONNX_LOWERINGS[node.op_type](self, node, args, out, ident)
        op = getattr(self, f"op_{node.op_type.lower()}", None)
        if op is None:
            raise UnsupportedLayerError(
                f"cosyn computes {node.op_type} on constants only (a constant folded into the "
                "layers), not on the model's values"
            )
        return op(node, args, out, ident)

    # -- operators --------------------------------------------------------------------------

    def op_quant(self, node, args, out, ident) -> object:
        x, *params = args
        if not all(isinstance(p, _Const) for p in params) or len(params) != 3:
            raise UnsupportedLayerError(
                "scale, zero point and bit width must be constants (a runtime-computed scale "
                "cannot be lowered)"
            )
        q = quant_op(node, *(p.value for p in params))
        if isinstance(x, _Const):
            return _Const(self.values[out], q, x.value)
        if isinstance(x, _Val) and x.bias is None:
            x, q = _fuse(x, q)
        return self.quantize(x, q, out, ident)

    def op_bipolarquant(self, node, args, out, ident) -> object:
        x, scale = args
        if not isinstance(scale, _Const):
            raise UnsupportedLayerError("its scale must be a constant")
        q = bipolar_op(scale.value)
        if isinstance(x, _Const):
            return _Const(self.values[out], q, x.value)
        if isinstance(x, _Val | _Input) and x.chain and _nonnegative(x.chain[-1]):
            raise UnsupportedLayerError(_UNSIGNED_BIPOLAR)
        if isinstance(x, _Val) and x.bias is None:
            x, q = _fuse(x, q)
        return self.quantize(x, q, out, ident)

    def op_gemm(self, node, args, out, ident) -> object:
        a = attrs(node)
        if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0):
            raise UnsupportedLayerError("only alpha=1, beta=1 and transA=0 are supported")
        w = self.weight(args[1], transpose=not a.get("transB", 0))
        return self.dense(args[0], w, self.bias(args[2:], w[0].shape[0]), out, ident)

    def op_matmul(self, node, args, out, ident) -> object:
        return self.dense(args[0], self.weight(args[1], transpose=True), None, out, ident)

    def op_conv(self, node, args, out, ident) -> object:
        w, s_w = self.weight(args[1])
        groups = int(attrs(node).get("group", 1))  # the weight is (O, C/group, ...), as torch's
        stride, pad = conv_geometry(node, tuple(w.shape[2:]))
        w = w[:, :, None, :] if w.ndim == 3 else w  # a 1-D kernel: (1, k)
        bias = self.bias(args[2:], w.shape[0])
        v = self.clean(args[0], ident)
        conv = Conv(stride, pad, groups)
        return self.accumulate(v, w, s_w, bias, self.shape(out), ident, ident, conv)

    def op_maxpool(self, node, args, out, ident) -> object:
        return self.maxpool(args[0], Pool(*pool_geometry(node)), self.shape(out), ident, ident)

    def op_averagepool(self, node, args, out, ident) -> object:
        """AveragePool or GlobalAveragePool: the window sum, divided once by kh*kw."""
        k, stride, pad, ceil, count = avg_geometry(node, tuple(self.values[node.input[0]].shape))
        pool = Pool(
            k, stride, pad, ceil_mode=ceil, count_include_pad=count, divisors=(k[0] * k[1],)
        )
        return self.avgpool(args[0], pool, self.shape(out), ident, ident)

    op_globalaveragepool = op_averagepool

    def op_reducemean(self, node, args, out, ident) -> object:
        """ReduceMean over the last two axes of an (N, C, H, W) value (or the last of an
        (N, C, L) signal): a global average."""
        shape = tuple(self.values[node.input[0]].shape)
        axes = attrs(node).get("axes") if len(args) < 2 else self.constant(args[1]).value.tolist()
        keep = bool(attrs(node).get("keepdims", 1))
        return self.global_average(out, args[0], shape, axes or (), keep, ident, ident)

    def op_trunc(self, node, args, out, ident) -> object:
        """Trunc (Brevitas' TruncAvgPool2d): it reads its input back as integers at its
        `scale`, so an average's divisions left on the chain are that scale's where they
        give that scale exactly (Brevitas' pooling divides the input's float32 scale by
        kh*kw as the chain does, so its files do). A scale only near it keeps the chain,
        quantized against it as any other: round(sum * s / 9 / scale) is not the sum for
        every sum once scale and s / 9 differ."""
        x, *params = args
        if len(params) != 5 or not all(isinstance(p, _Const) for p in params):
            raise UnsupportedLayerError("Trunc needs constant scales, zero point and bit widths")
        q = trunc_op(node, *(p.value for p in params))
        if _divided(x):
            s = x.scale
            for op in x.chain:
                s = op(s)
            if q.scale.numel() == 1 and bool(torch.all(s == q.scale)):
                x = _Val(x.node, q.scale.reshape(()))
                self.node(x.node).scale = q.scale.reshape(()).numpy()
        return self.quantize(x, q, out, ident)

    def dense(self, x, w: tuple, bias, out: str, ident: str) -> _Val:
        v = self.clean(x, ident)
        if len(self.shape(out)) != 1:
            raise UnsupportedLayerError("only (batch, features) inputs are supported")
        return self.accumulate(v, w[0], w[1], bias, self.shape(out), ident, ident)

    def weight(self, c: object, transpose: bool = False) -> tuple[np.ndarray, torch.Tensor]:
        """Integer weights (out first) and their scale, from a Quant of a constant."""
        if not isinstance(c, _Const) or c.quant is None:
            raise UnsupportedLayerError(
                "its weights are not the output of a Quant node; quantize them "
                "(QuantLinear, QuantConv2d) before export"
            )
        q = c.quant
        if torch.any(q.zero_point != 0):
            raise UnsupportedLayerError("weight zero points are not supported")
        w = q.int(c.raw).to(torch.int64)
        scale = q.scale
        if transpose:
            w, scale = w.T, scale.T if scale.dim() == 2 else scale
        return w.numpy(), scale

    def bias(self, args: list, channels: int) -> torch.Tensor | None:
        """The float bias the node adds (after its Quant, if any), one per channel."""
        if not args or args[0] is None:
            return None
        if not isinstance(args[0], _Const) or args[0].value.numel() != channels:
            raise UnsupportedLayerError("its bias must be a constant with one value per channel")
        return args[0].value.reshape(-1).to(torch.float32)

    def op_relu(self, node, args, out, ident) -> object:
        return _extend(args[0], torch.relu, ident)

    def op_clip(self, node, args, out, ident) -> object:
        bounds = [None if b is None else self.constant(b).value for b in args[1:]]
        return _extend(args[0], clip(node, *bounds), ident)

    def op_batchnormalization(self, node, args, out, ident) -> object:
        params = [self.constant(p).value.to(torch.float32) for p in args[1:5]]
        return _extend(args[0], batch_norm(node, *params), ident)

    def op_add(self, node, args, out, ident) -> object:
        a, b = args
        if not isinstance(a, _Const) and not isinstance(b, _Const):
            x, y = (self.clean(t, ident) for t in (a, b))
            return self.sum2(x, y, self.shape(out), ident)
        v = b if isinstance(a, _Const) else a
        if isinstance(v, _Val) and v.clean:  # a layer's float bias
            c = self.operand(node, args, ident)[1]
            return _Val(v.node, v.scale, _per_channel(torch.as_tensor(c), self.shape(out)))
        return self.arithmetic("add", node, args, ident)

    def op_sub(self, node, args, out, ident) -> object:
        return self.arithmetic("sub", node, args, ident)

    def op_mul(self, node, args, out, ident) -> object:
        return self.arithmetic("mul", node, args, ident)

    def op_div(self, node, args, out, ident) -> object:
        return self.arithmetic("div", node, args, ident)

    def arithmetic(self, op: str, node, args, ident) -> object:
        """A float operation with a constant on the value's chain."""
        v, c, reverse = self.operand(node, args, ident)
        return _extend(v, Binary(ARITHMETIC[op], c, reverse), ident)

    def operand(self, node, args, ident) -> tuple[object, object, bool]:
        """(value, constant, whether the constant comes first) of a binary node."""
        a, b = args
        reverse = isinstance(a, _Const)
        v, c = (b, a) if reverse else (a, b)
        self.constant(c)
        shape = self.shape(node.input[1 if reverse else 0])
        return v, operand(c.value, shape, isinstance(v, _Input), ident), reverse

    def op_flatten(self, node, args, out, ident) -> object:
        if attrs(node).get("axis", 1) != 1:
            raise UnsupportedLayerError("only Flatten with axis=1 is supported")
        return self.flatten(out, args[0], ident)

    def op_reshape(self, node, args, out, ident) -> object:
        src = self.values[node.input[0]]
        if self.values[out].dim() != 2 or self.values[out].shape[0] != src.shape[0]:
            raise UnsupportedLayerError("only a reshape to (batch, -1) is supported")
        return self.flatten(out, args[0], ident)

    def op_identity(self, node, args, out, ident) -> object:
        return args[0]

    op_dropout = op_identity

    # -- helpers ----------------------------------------------------------------------------

    def constant(self, c: object) -> _Const:
        if not isinstance(c, _Const):
            raise UnsupportedLayerError("only operations with a constant operand are supported")
        return c


@dataclass(frozen=True)
class Refused:
    """A node output cosyn does not lower (a TopK's values): an error where it is read."""

    reason: str


@dataclass(frozen=True)
class _Fused:
    """A quantizer with the activations before it (Relu, Clip), as Brevitas' QuantReLU
    and QuantHardTanh apply them inside their act_quant."""

    ops: tuple
    quant: QuantOp

    def __call__(self, y: torch.Tensor) -> object:
        for op in self.ops:
            y = op(y)
        return self.quant(y)


def _fuse(v: _Val, q: QuantOp) -> tuple[_Val, object]:
    """Move a chain of only Relu/Clip into the quantizer, so that a power-of-two
    requantization after them is still recognised as a shift (the bank is the same)."""
    if not v.chain or not all(op is torch.relu or isinstance(op, ClipOp) for op in v.chain):
        return v, q
    return _Val(v.node, v.scale), _Fused(tuple(v.chain), q)


def _nonnegative(op: object) -> bool:
    """True where the float operation's result is never negative (Relu, Clip at 0 or above)."""
    return op is torch.relu or (isinstance(op, ClipOp) and op.lo is not None and op.lo >= 0)


def _transposed(c: _Const, perm: tuple[int, ...]) -> _Const:
    """A transposed quantized constant (weights the TorchScript exporter feeds to MatMul)."""

    def t(a: torch.Tensor) -> torch.Tensor:
        return a.permute(perm) if a.dim() == len(perm) else a

    q = replace(c.quant, scale=t(c.quant.scale), zero_point=t(c.quant.zero_point))
    return _Const(t(c.value), q, t(c.raw))


def _constant(node: NodeProto) -> np.ndarray:
    a = attrs(node)
    if "value" not in a:
        raise UnsupportedLayerError("only Constant nodes with a tensor `value` are supported")
    return numpy_helper.to_array(a["value"])
