"""Lower a Brevitas model to the integer graph.

The model is traced with torch.fx (Brevitas and torch.nn modules stay leaves) and
run once on the example input, so every value's shape and quantization is known.
The walk keeps, for each traced value, a `_Val` (builder.py): the integer node that
produces it, its float32 scale, and the float operations still to be applied
before the next quantizer. A quantizer closes that chain into a requantize node
found against the model's own modules (see requant.py), so it is exact.

Forward code is read as FINN's example networks write it: values computed from
constants alone (a buffer, `torch.tensor([1.0])`) are constants, a traced value's
shape (`x.shape[0]`, `x.size(0)`) is metadata for a flatten, and +, -, *, / by a
constant join the value's float chain (`2 * x - 1` before the input quantizer,
TensorNorm after the last layer; see chain.py). A layer with return_quant_tensor=True
traces as a proxy that passes `isinstance(x, QuantTensor)`, so residual blocks that check
their operands before adding them (Brevitas' ResNet examples) trace, and their sum is
an Add node. Whatever else the code does is
refused in one UnsupportedLayerError line naming the module path and the operation.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from brevitas.nn import (
    QuantConv1d,
    QuantConv2d,
    QuantLinear,
    TruncAdaptiveAvgPool2d,
    TruncAvgPool2d,
)
from brevitas.nn.quant_layer import QuantNonLinearActLayer
from brevitas.quant_tensor import QuantTensor
from torch import fx, nn

from cosyn.errors import CosynError, UnsupportedLayerError
from cosyn.ir.builder import (  # noqa: F401  (_Val, _Input, _apply, ... stay importable here)
    Builder,
    Conv,
    Pool,
    _apply,
    _extend,
    _Input,
    _log2_ratio,
    _per_channel,
    _Val,
    layer_bias,
)
from cosyn.ir.chain import ARITHMETIC, Binary, operand
from cosyn.ir.graph import Graph

__all__ = [
    "FUNCTIONS", "LOWERINGS", "MODELS", "SUPPORTS", "Pending", "lower", "lowers", "supported",
]  # fmt: skip

_SUPPORTED = (
    "QuantIdentity, QuantReLU, QuantHardTanh (and other monotone Brevitas activations), "
    "QuantLinear, QuantConv2d, QuantConv1d (as a (1, k) QuantConv2d of height 1), "
    "MaxPool2d (and F.max_pool2d), MaxPool1d of a quantized value, "
    "AvgPool2d, AdaptiveAvgPool2d of sizes that divide, TruncAvgPool2d, "
    "TruncAdaptiveAvgPool2d, F.avg_pool2d, F.adaptive_avg_pool2d, torch.mean over (H, W), "
    "AvgPool1d, AdaptiveAvgPool1d, F.avg_pool1d, F.adaptive_avg_pool1d and torch.mean over L "
    "of a (batch, C, L) signal (as a (1, k) AvgPool2d), "
    "BatchNorm1d/2d, ReLU, Hardtanh, Dropout, Identity, Flatten, "
    "add of two quantized values (QuantTensors too), "
    "+, -, *, / by constants (one value, or one per channel), "
    "flatten/view/reshape to (batch, -1)"
)
_ELEMENTWISE = (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.Hardtanh, nn.ReLU6)
_PASSTHROUGH = (nn.Dropout, nn.Identity)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (
            type(m).__module__.startswith("brevitas.")
            or type(m) in LOWERINGS
            or (super().is_leaf_module(m, qualname))
        )

    def proxy(self, node: fx.Node) -> fx.Proxy:
        if _returns_quant(self.root, node):
            node.meta["quant_tensor"] = True
            return _QuantProxy(node, self)
        return super().proxy(node)


class _QuantProxy(fx.Proxy):
    """A traced QuantTensor: it passes forward code's `isinstance(x, QuantTensor)` checks,
    as Brevitas' residual blocks make before they add (its type stays an fx Proxy)."""

    @property
    def __class__(self) -> type:  # what isinstance reads after the type
        return QuantTensor


_KEEPS_QUANT = (nn.MaxPool2d, nn.Flatten, nn.Identity, nn.Dropout)
_KEEP_FUNCTIONS = (F.max_pool2d, torch.max_pool2d, torch.flatten)
_KEEP_METHODS = ("flatten", "view", "reshape")
_CAT = (torch.cat, torch.concat, torch.concatenate)  # Brevitas: a cat of QuantTensors is one


def _returns_quant(root: nn.Module, n: fx.Node) -> bool:
    """True where traced node n is a QuantTensor in Brevitas: the output of a layer with
    return_quant_tensor=True, a sum of two, or one pooled, flattened or passed through."""
    first = n.args[0] if n.args else None
    if n.target in _CAT and isinstance(first, list | tuple):
        return all(isinstance(a, fx.Node) and a.meta.get("quant_tensor") for a in first)
    quant_in = isinstance(first, fx.Node) and first.meta.get("quant_tensor", False)
    if n.op == "call_module":
        m = root.get_submodule(n.target)
        return getattr(m, "return_quant_tensor", False) is True or (
            isinstance(m, _KEEPS_QUANT) and quant_in
        )
    if n.op not in ("call_function", "call_method") or not quant_in:
        return False
    if _arithmetic(n) == "add":
        return all(isinstance(a, fx.Node) and a.meta.get("quant_tensor") for a in n.args)
    return n.target in _KEEP_FUNCTIONS or (n.op == "call_method" and n.target in _KEEP_METHODS)


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


class _Builder(Builder):
    """The torch.fx frontend: values are fx nodes, recorded by `_Recorder`."""

    def __init__(self, gm: fx.GraphModule, values: dict[fx.Node, object]) -> None:
        super().__init__(values)
        self.gm = gm
        self.vals: dict[fx.Node, object] = {}
        self.signal = any(isinstance(m, QuantConv1d) for m in gm.modules())

    def value_shape(self, n: fx.Node) -> tuple[int, ...]:
        return tuple(_float(self.values[n]).shape[1:])

    # -- walking the traced graph -----------------------------------------------------------

    def run(self) -> Graph:
        out = None
        for n in self.gm.graph.nodes:
            try:
                if n.op == "output":
                    out = self.vals[n.args[0]]
                else:
                    self.vals[n] = self.step(n)
            except CosynError:
                raise
            except Exception as e:  # a bug or an odd model: still one line naming the node
                raise UnsupportedLayerError(
                    f"{_describe(self.gm, n)}: cosyn cannot lower this ({type(e).__name__}: "
                    f"{_first_line(e)}); supported: {supported()}"
                ) from e
        try:
            return self.finish(out)
        except CosynError:
            raise
        except Exception as e:
            raise UnsupportedLayerError(
                f"the model output: cosyn cannot lower it ({type(e).__name__}: {_first_line(e)})"
            ) from e

    def step(self, n: fx.Node) -> object:
        if n.op == "placeholder":
            return _Input(self.shape(n))
        if n.op == "call_module":
            return self.module(n, self.gm.get_submodule(n.target))
        if n.op == "get_attr":
            return _Const(self.values[n])
        return self.function(n)

    def arg(self, n: fx.Node, i: int = 0) -> object:
        a = n.args[i]
        return self.vals[a] if isinstance(a, fx.Node) else a

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
        if isinstance(m, QuantLinear | QuantConv2d | QuantConv1d):
            return self.weighted(n, m, v, name, what)
        if isinstance(m, _ELEMENTWISE):
            return _extend(v, _OfSignal(m) if self._signal(n) else m, what)
        if isinstance(m, _PASSTHROUGH):
            return v
        if isinstance(m, nn.MaxPool2d | nn.MaxPool1d):
            params = {k: getattr(m, k) for k in _POOL_ARGS}
            params = _of_height_one(params) if isinstance(m, nn.MaxPool1d) else params
            return self.maxpool(v, _pool(params, what), self.shape(n), name, what)
        if isinstance(m, TruncAvgPool2d | TruncAdaptiveAvgPool2d):
            return self.trunc_avgpool(n, m, v, name, what)
        if isinstance(m, nn.AvgPool2d | nn.AdaptiveAvgPool2d | nn.AvgPool1d | nn.AdaptiveAvgPool1d):
            return self.avgpool(v, self._avg(n, m, what), self.shape(n), name, what)
        if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
            return self.flatten(n, v, name)
        raise UnsupportedLayerError(
            f"{what}: cosyn cannot lower this module; supported: {supported()}"
        )

    def function(self, n: fx.Node) -> object:
        """A call_function or call_method node: metadata, a constant, or an operation."""
        t, method = n.target, n.op == "call_method"
        args = fx.node.map_arg(n.args, self.vals.__getitem__)
        kwargs = fx.node.map_arg(n.kwargs, self.vals.__getitem__)
        leaves = _leaves((args, kwargs))
        pending = next((a for a in leaves if isinstance(a, Pending)), None)
        if pending is not None:
            return pending.part(self, n, args)
        if not any(isinstance(a, _Val | _Input) for a in leaves):
            out = self.values[n]  # computed from constants (and shapes) alone
            meta = any(a is _META for a in leaves)
            constant = isinstance(out, torch.Tensor) or type(out) in (int, float)
            return _Const(out) if constant and not meta else _META
        if t is getattr and args[1] in ("device", "dtype", "is_cuda"):
            return self.values[n]  # the same for every input
        if t is getattr and args[1] == "value" and isinstance(args[0], _Val):
            return args[0]  # a QuantTensor's float value: the value itself
        if (t is getattr and args[1] in ("shape", "ndim")) or (method and t in ("size", "dim")):
            return _META
        if t in FUNCTIONS:  # a kind's (its handler may leave a case to `arithmetic`)
            return FUNCTIONS[t](self, n, args, kwargs)
        op = _arithmetic(n)
        if op is not None:
            return self.arithmetic(n, op, args, kwargs)
        if t in (F.relu, torch.relu) or (method and t == "relu"):
            return _extend(args[0], torch.relu, n.name)
        if t in _MAX_FUNCTIONS and isinstance(args[0], _Val | _Input):
            what = _describe(self.gm, n)
            params = {**dict(zip(_POOL_ARGS, n.args[1:], strict=False)), **n.kwargs}
            params = _of_height_one(params) if t in _MAX_1D else params
            return self.maxpool(args[0], _pool(params, what), self.shape(n), n.name, what)
        if t in _AVG_FUNCTIONS and isinstance(args[0], _Val | _Input):
            what = _describe(self.gm, n)
            return self.avgpool(args[0], self._avg(n, t, what), self.shape(n), n.name, what)
        if (t is torch.mean or (method and t == "mean")) and isinstance(args[0], _Val | _Input):
            return self.mean(n, args[0])
        flat = t == torch.flatten or (method and t in ("flatten", "view", "reshape"))
        if flat and isinstance(args[0], _Val | _Input) and self._flattens(n):
            return self.flatten(n, args[0], n.name)
        raise UnsupportedLayerError(
            f"{_describe(self.gm, n)}: cosyn cannot lower this operation; supported: {supported()}"
        )

    def _avg(self, n: fx.Node, op: object, what: str) -> Pool:
        """The geometry of an average pooling module or function (`op`) at node n; a 1-D
        one's is the (1, k) pooling's of the (C, 1, L) image."""
        one_d = isinstance(op, _AVG_1D_MODULES) or op in _AVG_1D
        if isinstance(op, nn.AdaptiveAvgPool2d | nn.AdaptiveAvgPool1d) or op in _ADAPTIVE:
            size = op.output_size if isinstance(op, nn.Module) else _arg(n, 1, "output_size")
            size_in = tuple(_float(self.values[n.args[0]]).shape[2:])
            if one_d:
                size_in, size = (1, *size_in), _of_height_one({"output_size": size})["output_size"]
            return _adaptive(size_in, size, what)
        if isinstance(op, nn.Module):
            params = {k: getattr(op, k, None) for k in _AVG_ARGS}
        else:
            params = {**dict(zip(_AVG_ARGS, n.args[1:], strict=False)), **n.kwargs}
        return _avg_pool(_of_height_one(params) if one_d else params, what)

    def trunc_avgpool(self, n: fx.Node, m: nn.Module, v: object, name: str, what: str) -> _Val:
        """Brevitas' TruncAvgPool2d: the window sum, then its truncation quantizer, which
        reads the average back as the integer sum at the scale s / d Brevitas gives it (its
        own avg_pool2d handler's, run here on the recorded input) and shifts it."""
        pool = self._avg(n, m, what)
        qin = self.values[n.args[0]]
        if not (isinstance(qin, QuantTensor) and m.is_trunc_quant_enabled):
            return self.avgpool(v, pool, self.shape(n), name, what)  # a plain average
        base = nn.AdaptiveAvgPool2d if isinstance(m, nn.AdaptiveAvgPool2d) else nn.AvgPool2d
        with torch.no_grad():
            acc = base.forward(m, qin)

        def quant(y: torch.Tensor) -> QuantTensor:
            return m.trunc_quant(acc.set(value=y))

        s = self.avgpool(v, pool, self.shape(n), name, what, trunc=True)
        return self.quantize(s, quant, n, f"{name}.trunc_quant")

    def mean(self, n: fx.Node, v: object) -> _Val | _Input:
        """torch.mean over the last two axes of a (batch, C, H, W) value: a global average
        pooling (torch divides the sum once), flattened to (batch, C) without keepdim."""
        what = _describe(self.gm, n)
        if "dtype" in n.kwargs:
            raise UnsupportedLayerError(f"{what}: a mean in another dtype is not supported")
        dims = _arg(n, 1, "dim")
        dims = dims if isinstance(dims, list | tuple) else (dims,)
        keep = bool(n.kwargs.get("keepdim", n.args[2] if len(n.args) > 2 else False))
        shape = tuple(_float(self.values[n.args[0]]).shape)
        return self.global_average(n, v, shape, dims, keep, n.name, what)

    def _flattens(self, n: fx.Node) -> bool:
        """True where node n reshapes its first input's batch to (batch, -1)."""
        batch = _float(self.values[n.args[0]]).shape[0]
        out = _float(self.values[n])
        return out.dim() == 2 and out.shape[0] == batch

    def arithmetic(self, n: fx.Node, op: str, args: tuple, kwargs: dict) -> object:
        """`a op b`: an Add node of two quantized values, or a float operation with a
        constant on the chain of the one value (folded into the next quantizer)."""
        what = f"{_describe(self.gm, n)}"
        if kwargs or len(args) != 2:
            raise UnsupportedLayerError(f"{what}: only `a {op} b` without options is supported")
        a, b = args
        if isinstance(a, _Val | _Input) and isinstance(b, _Val | _Input):
            if op != "add":
                raise UnsupportedLayerError(
                    f"{what}: two computed values can only be added or multiplied; cosyn "
                    f"does `{op}` with a constant only"
                )
            return self.add2(n)
        reverse = not isinstance(a, _Val | _Input)
        v, c = (b, a) if reverse else (a, b)
        if c is _META:
            raise UnsupportedLayerError(f"{what}: its operand depends on the input's shape")
        c = c.value if isinstance(c, _Const) else c
        src = n.args[1] if reverse else n.args[0]
        c = operand(c, self.shape(src), isinstance(v, _Input), what)
        return _extend(v, Binary(ARITHMETIC[op], c, reverse), what)

    def weighted(self, n: fx.Node, m: nn.Module, v: object, name: str, what: str) -> object:
        conv = None
        if isinstance(m, QuantConv2d):
            _check_conv(m, what)
            conv = Conv(tuple(m.stride), tuple(m.padding), m.groups)
        if isinstance(m, QuantConv1d):  # a (1, k) kernel over an image of height 1
            _check_conv(m, what)
            conv = Conv((1, m.stride[0]), (0, m.padding[0]), m.groups)
        return self.layer(m, v, self.bias(n, m), n, name, what, conv)

    def _signal(self, n: fx.Node) -> bool:
        """True where node n's input is a (batch, C, L) signal read as (C, 1, L)."""
        return self.signal and _float(self.values[n.args[0]]).dim() == 3

    def bias(self, n: fx.Node, m: nn.Module) -> torch.Tensor | None:
        """The bias the layer adds, as the model computes it (`layer_bias`)."""
        x = self.values[n.args[0]]
        zero = torch.zeros_like(_float(x)[:1])
        return layer_bias(m, x.set(value=zero) if isinstance(x, QuantTensor) else zero)

    def add2(self, n: fx.Node) -> _Val:
        a, b = (self.clean(self.arg(n, i), f"{_describe(self.gm, n)}") for i in (0, 1))
        return self.sum2(a, b, self.shape(n), n.name)


class _Meta:
    """The shape of a traced value (or a number computed from it), not a constant."""

    def __repr__(self) -> str:
        return "<the shape of a traced value>"


_META = _Meta()


@dataclass
class _Const:
    """A value the model computes from constants alone (a buffer, `torch.tensor([1.0])`)."""

    value: object


_FUNCTIONS = {
    operator.add: "add",
    torch.add: "add",
    operator.sub: "sub",
    torch.sub: "sub",
    operator.mul: "mul",
    torch.mul: "mul",
    operator.truediv: "div",
    torch.div: "div",
    torch.true_divide: "div",
}
_METHODS = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "true_divide": "div"}


def _arithmetic(n: fx.Node) -> str | None:
    if n.op == "call_method":
        return _METHODS.get(n.target)
    return _FUNCTIONS.get(n.target) if n.op == "call_function" else None


def _leaves(x: object) -> list:
    if isinstance(x, list | tuple):
        return [leaf for a in x for leaf in _leaves(a)]
    if isinstance(x, dict):
        return _leaves(list(x.values()))
    return [x]


def _describe(gm: fx.GraphModule, n: fx.Node) -> str:
    """`path (op)`: the module path where the node is a module, the traced name otherwise."""
    if n.op == "call_module":
        return f"{n.target} ({type(gm.get_submodule(n.target)).__name__})"
    what = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", n.target)
    stack = n.meta.get("nn_module_stack") or {}
    path = next(reversed(stack.values()))[0] if stack else ""
    return f"{path + '.' if path else ''}{n.name} ({n.op} {what})"


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


class _OfSignal(nn.Module):
    """A module of (batch, C, L) signals (BatchNorm1d) applied to them as (batch, C, 1, L)."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.m(y.squeeze(2)).unsqueeze(2) if y.dim() == 4 else self.m(y)


def _check_conv(m: QuantConv2d | QuantConv1d, what: str) -> None:
    if any(d != 1 for d in m.dilation) or m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise UnsupportedLayerError(
            f"{what}: only dilation=1 and integer zero padding are supported, not dilation "
            f"{tuple(m.dilation)}, padding {m.padding!r} ({m.padding_mode})"
        )


_POOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_MAX_1D = (F.max_pool1d, torch.max_pool1d)  # of a (batch, C, L) signal: a (1, k) window
_MAX_FUNCTIONS = (F.max_pool2d, torch.max_pool2d, *_MAX_1D)


def _of_height_one(params: dict) -> dict:
    """A 1-D pooling's arguments as the 2-D pooling's of the (C, 1, L) image."""

    def pair(a: object, one: int) -> object:
        if a is None or a == [] or a == () or isinstance(a, fx.Node):
            return a
        return (one, int(a[0] if isinstance(a, list | tuple) else a))

    pairs = {"kernel_size": 1, "stride": 1, "padding": 0, "dilation": 1, "output_size": 1}
    return {k: pair(v, pairs[k]) if k in pairs else v for k, v in params.items()}


def _pool(params: dict, what: str) -> Pool:
    """The geometry of nn.MaxPool2d or F.max_pool2d from its arguments (`_POOL_ARGS`)."""
    if any(isinstance(a, fx.Node) for a in _leaves(list(params.values()))):
        raise UnsupportedLayerError(f"{what}: its window must be constant, not computed")
    if params.get("return_indices"):
        raise UnsupportedLayerError(f"{what}: return_indices=True is not supported")

    def pair(a: object) -> tuple[int, int]:
        a = tuple(a) if isinstance(a, list | tuple) else (a, a)
        return (int(a[0]), int(a[-1]))

    kernel = pair(params["kernel_size"])
    stride = params.get("stride")
    stride = kernel if stride is None or stride == [] or stride == () else pair(stride)
    return Pool(kernel, stride, pair(params.get("padding", 0)), pair(params.get("dilation", 1)),
                bool(params.get("ceil_mode", False)))  # fmt: skip


_AVG_ARGS = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
             "divisor_override")  # fmt: skip
_AVG_1D = (F.avg_pool1d, F.adaptive_avg_pool1d)  # of a (batch, C, L) signal: a (1, k) window
_AVG_1D_MODULES = (nn.AvgPool1d, nn.AdaptiveAvgPool1d)
_ADAPTIVE = (F.adaptive_avg_pool2d, F.adaptive_avg_pool1d)
_AVG_FUNCTIONS = (F.avg_pool2d, *_AVG_1D, F.adaptive_avg_pool2d)


def _arg(n: fx.Node, i: int, name: str) -> object:
    """Argument `name` of call node n, given at position i or by keyword."""
    return n.args[i] if len(n.args) > i else n.kwargs[name]


def _avg_pool(params: dict, what: str) -> Pool:
    """The geometry of nn.AvgPool2d or F.avg_pool2d from its arguments (`_AVG_ARGS`): torch
    divides the window sum by divisor_override or kh*kw, once."""
    p = _pool({k: v for k, v in params.items() if k in _POOL_ARGS}, what)
    d = params.get("divisor_override") or p.kernel[0] * p.kernel[1]
    return replace(p, count_include_pad=bool(params.get("count_include_pad", True)),
                   divisors=(int(d),))  # fmt: skip


def _adaptive(size_in: tuple[int, int], size: object, what: str) -> Pool:
    """The windows of an adaptive average pooling to `size` (None keeps an axis), exact
    where each output size divides its input's: kernel = stride = in / out. torch divides
    the sum by kh then kw, or, to (1, 1), once by kh*kw (its mean)."""
    size = tuple(size) if isinstance(size, list | tuple) else (size, size)
    out = tuple(int(n if o is None else o) for n, o in zip(size_in, size, strict=True))
    if any(n % o for n, o in zip(size_in, out, strict=True)):
        raise UnsupportedLayerError(
            f"{what}: output size {out} does not divide the input's {tuple(size_in)}, so its "
            "windows differ in size; use an output size that divides it"
        )
    k = (size_in[0] // out[0], size_in[1] // out[1])
    divisors = (k[0] * k[1],) if out == (1, 1) else k
    return Pool(k, k, (0, 0), divisors=divisors)


# The torch frontend's extension points, filled by the modules that define node kinds
# (cosyn.ir.kinds) and layers (cosyn.models): a module type -> fn(builder, n, module,
# value, name); a call_function target (the function) or call_method name (a string) ->
# fn(builder, n, args, kwargs), the fx node's arguments read as builder values; what
# they lower, for the message that refuses everything else.
LOWERINGS: dict[type, Callable] = {}
FUNCTIONS: dict[object, Callable] = {}
# A model type that fx cannot trace (a transformer's lists of sequences) -> fn(model,
# example_input) -> Graph: a walk of its own modules (cosyn.ir.sequence).
MODELS: dict[type, Callable] = {}
SUPPORTS: list[str] = []


def lowers(*targets: object, supports: str | None) -> Callable[[Callable], Callable]:
    """Register the decorated fn(builder, n, args, kwargs) for `targets` (functions, and
    method names as strings) in FUNCTIONS; `supports` says what it takes, for users (None:
    another registration says it)."""

    def register(fn: Callable) -> Callable:
        FUNCTIONS.update(dict.fromkeys(targets, fn))
        if supports:
            SUPPORTS.append(supports)
        return fn

    return register


def supported() -> str:
    """What `lower` takes, for an error message: the walk's own cases, then the kinds'."""
    return ", ".join([_SUPPORTED, *SUPPORTS])


class Pending:
    """A traced result that is no graph value until an operation reads a part of it (a
    torch.topk's (values, indices)): `part(builder, n, args)` lowers that fx node `n`."""

    def part(self, b: _Builder, n: fx.Node, args: tuple) -> object:
        raise NotImplementedError


def lower(model: nn.Module, example_input: torch.Tensor) -> Graph:
    """Lower a Brevitas model to the integer graph; `example_input` is a float batch (of a
    model in `MODELS`, what its forward takes: a transformer's token ids)."""
    model.eval()
    if type(model) in MODELS:
        return MODELS[type(model)](model, example_input)
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
