"""Torch float32 implementations of the ONNX and QONNX operators cosyn reads.

`QuantOp` is QONNX's `Quant` (scale, zero point, bit width, signed, narrow,
rounding_mode) computed the way Brevitas' IntQuant computes it (x / scale + zero
point, round, clamp, minus zero point, times scale), and returns a Brevitas
QuantTensor, so the builder can close float chains with it exactly as it does with
a Brevitas quantizer. `evaluate` replays one ONNX node in torch: the QONNX
frontend runs the file once on a zero input, which gives every value's shape and
checks that the file is consistent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from brevitas.quant_tensor import IntQuantTensor
from onnx import NodeProto, helper

from cosyn.errors import ModelFileError, UnsupportedLayerError

__all__ = [
    "OPS",
    "ROUNDING",
    "BipolarOp",
    "ClipOp",
    "QuantOp",
    "TruncOp",
    "attrs",
    "avg_geometry",
    "batch_norm",
    "bipolar_op",
    "clip",
    "conv_geometry",
    "evaluate",
    "pool_geometry",
    "quant_op",
    "supported_ops",
    "transpose_perm",
    "trunc_op",
]


def _away(f: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda y: torch.sign(y) * f(torch.abs(y))


ROUNDING: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "ROUND": torch.round,  # half to even, as Brevitas' RoundSte and numpy's round
    "HALF_EVEN": torch.round,
    "FLOOR": torch.floor,
    "CEIL": torch.ceil,
    "DOWN": torch.trunc,
    "ROUND_TO_ZERO": torch.trunc,
    "UP": _away(torch.ceil),
    "HALF_UP": _away(lambda a: torch.floor(a + 0.5)),
    "HALF_DOWN": _away(lambda a: torch.ceil(a - 0.5)),
}


@dataclass(frozen=True, eq=False)
class QuantOp:
    """QONNX `Quant`; calling it returns the dequantized value as an IntQuantTensor."""

    scale: torch.Tensor
    zero_point: torch.Tensor
    bit_width: int
    signed: bool
    narrow: bool
    rounding: str

    @property
    def lo(self) -> int:
        if not self.signed:
            return 0
        return -(1 << (self.bit_width - 1)) + int(self.narrow)

    @property
    def hi(self) -> int:
        if self.signed:
            return (1 << (self.bit_width - 1)) - 1
        return (1 << self.bit_width) - 1 - int(self.narrow)

    def int(self, x: torch.Tensor) -> torch.Tensor:
        """The integers (zero point included), as float32: what Brevitas' to_int gives."""
        y = x / self.scale
        y = y + self.zero_point
        return torch.clamp(ROUNDING[self.rounding](y), self.lo, self.hi)

    def __call__(self, x: torch.Tensor) -> IntQuantTensor:
        y = (self.int(x) - self.zero_point) * self.scale
        bw = torch.tensor(float(self.bit_width))
        return IntQuantTensor(y, self.scale, self.zero_point, bw, self.signed, False)


@dataclass(frozen=True, eq=False)
class BipolarOp:
    """QONNX `BipolarQuant`: scale where x >= 0, else -scale (Brevitas' binary_sign * scale,
    QONNX's binary_quant); calling it returns an IntQuantTensor of 1 signed bit."""

    scale: torch.Tensor
    zero_point: torch.Tensor = field(default_factory=lambda: torch.zeros(()))

    def int(self, x: torch.Tensor) -> torch.Tensor:
        """-1 or +1, as float32."""
        return torch.where(x >= 0, 1.0, -1.0).to(torch.float32)

    def __call__(self, x: torch.Tensor) -> IntQuantTensor:
        y = self.int(x) * self.scale
        zp = torch.zeros_like(self.scale)
        return IntQuantTensor(y, self.scale, zp, torch.tensor(1.0), True, False)


def bipolar_op(scale: torch.Tensor) -> BipolarOp:
    if not torch.all(scale > 0):
        raise ModelFileError(f"BipolarQuant scale {scale.tolist()} is not positive")
    return BipolarOp(scale.to(torch.float32))


def attrs(node: NodeProto) -> dict:
    """The node's attributes as Python values (strings decoded)."""
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


@dataclass(frozen=True)
class _BatchNorm:
    """Inference batch norm, computed by the same kernel as torch's BatchNorm modules."""

    mean: torch.Tensor
    var: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    eps: float

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(y, self.mean, self.var, self.weight, self.bias, False, 0.0, self.eps)

    affine = True


def batch_norm(node: NodeProto, weight, bias, mean, var) -> _BatchNorm:
    a = attrs(node)
    if a.get("training_mode", 0) or len(node.output) > 1:
        raise UnsupportedLayerError(
            "training-mode BatchNormalization is not supported; export in eval mode"
        )
    return _BatchNorm(mean, var, weight, bias, float(a.get("epsilon", 1e-5)))


@dataclass(frozen=True)
class ClipOp:
    lo: float | None
    hi: float | None

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return torch.clamp(y, self.lo, self.hi)


def clip(node: NodeProto, *bounds: torch.Tensor | None) -> ClipOp:
    a = attrs(node)
    lo = bounds[0] if len(bounds) > 0 else None
    hi = bounds[1] if len(bounds) > 1 else None
    lo = a.get("min") if lo is None else float(lo)
    hi = a.get("max") if hi is None else float(hi)
    return ClipOp(lo, hi)


def _as_2d(a: dict) -> dict:
    """A 1-D Conv's or pooling's attributes as the 2-D ones of its (C, 1, L) image."""
    out = dict(a)
    for k, one in (("kernel_shape", 1), ("strides", 1), ("dilations", 1)):
        if k in a:
            out[k] = (one, *a[k])
    if "pads" in a:
        out["pads"] = (0, a["pads"][0], 0, a["pads"][-1])
    return out


def _pool_attrs(node: NodeProto) -> dict:
    """A pooling node's attributes; a 1-D one's as the 2-D pooling's of its (C, 1, L) image."""
    a = attrs(node)
    return _as_2d(a) if len(a.get("kernel_shape", ())) == 1 else a


def conv_geometry(node: NodeProto, kernel: tuple[int, ...]) -> tuple[tuple, tuple]:
    """(stride, padding) of a 2-D Conv node cosyn can lower, or of a 1-D one as the (1, k)
    Conv of its (C, 1, L) image; UnsupportedLayerError otherwise."""
    a = attrs(node)
    a, kernel = (_as_2d(a), (1, *kernel)) if len(kernel) == 1 else (a, kernel)
    pads = tuple(a.get("pads", (0, 0, 0, 0)))
    if (
        len(kernel) != 2
        or tuple(a.get("dilations", (1, 1))) != (1, 1)
        or a.get("auto_pad", "NOTSET") != "NOTSET"
        or len(pads) != 4
        or pads[:2] != pads[2:]
    ):
        raise UnsupportedLayerError(
            "only 1-D and 2-D convolutions with dilation=1 and symmetric explicit padding are "
            "supported"
        )
    return tuple(a.get("strides", (1, 1))), pads[:2]


def pool_geometry(node: NodeProto) -> tuple[tuple, tuple, tuple, tuple, bool]:
    """(kernel, strides, padding, dilations, ceil_mode) of a 2-D MaxPool node cosyn can
    lower (symmetric explicit padding, one output), or of a 1-D one as the 2-D pooling of
    its (C, 1, L) image; UnsupportedLayerError otherwise."""
    a = _pool_attrs(node)
    kernel = tuple(a.get("kernel_shape", ()))
    pads = tuple(a.get("pads", (0, 0, 0, 0)))
    if (
        len(kernel) != 2
        or a.get("auto_pad", "NOTSET") != "NOTSET"
        or len(pads) != 4
        or pads[:2] != pads[2:]
        or len([o for o in node.output if o]) != 1
    ):
        raise UnsupportedLayerError(
            "only 1-D and 2-D max pooling with symmetric explicit padding and no indices output "
            "is supported"
        )
    strides = tuple(a.get("strides", (1, 1)))
    return kernel, strides, pads[:2], tuple(a.get("dilations", (1, 1))), bool(a.get("ceil_mode", 0))


def avg_geometry(
    node: NodeProto, in_shape: tuple[int, ...]
) -> tuple[tuple, tuple, tuple, bool, bool]:
    """(kernel, strides, padding, ceil_mode, count_include_pad) of a 2-D AveragePool node
    (symmetric explicit padding), or of a GlobalAveragePool of an (N, C, H, W) input; a 1-D
    one's (an (N, C, L) input) as the 2-D pooling's of its (C, 1, L) image."""
    if node.op_type == "GlobalAveragePool":
        if len(in_shape) not in (3, 4):
            raise UnsupportedLayerError("only 1-D and 2-D global average pooling is supported")
        k = tuple(in_shape[2:]) if len(in_shape) == 4 else (1, in_shape[2])
        return k, k, (0, 0), False, True
    a = _pool_attrs(node)
    kernel = tuple(a.get("kernel_shape", ()))
    pads = tuple(a.get("pads", (0, 0, 0, 0)))
    if len(kernel) != 2 or a.get("auto_pad", "NOTSET") != "NOTSET" or pads[:2] != pads[2:]:
        raise UnsupportedLayerError(
            "only 1-D and 2-D average pooling with symmetric explicit padding is supported"
        )
    if tuple(a.get("dilations", (1, 1))) != (1, 1):
        raise UnsupportedLayerError("only dilation 1 is supported")
    strides = tuple(a.get("strides", (1, 1)))
    ceil, count = bool(a.get("ceil_mode", 0)), bool(a.get("count_include_pad", 0))
    return kernel, strides, pads[:2], ceil, count


def _avgpool(node: NodeProto, x) -> torch.Tensor:
    kernel, stride, pad, ceil, count = avg_geometry(node, tuple(x.shape))
    if x.dim() == 3:  # a 1-D pooling
        return F.avg_pool1d(x, kernel[1], stride[1], pad[1], ceil, count)
    return F.avg_pool2d(x, kernel, stride, pad, ceil, count)


def _reduce_mean(node: NodeProto, x, axes=None) -> torch.Tensor:
    axes = attrs(node).get("axes") if axes is None else axes.tolist()
    return torch.mean(x, tuple(int(a) for a in axes), keepdim=bool(attrs(node).get("keepdims", 1)))


@dataclass(frozen=True, eq=False)
class TruncOp:
    """QONNX `Trunc` (as Brevitas' TruncIntQuant, which TruncAvgPool2d applies): the input's
    integers round(x / scale + zero point), divided by 2**round(log2(output_scale /
    scale)), rounded, clamped to the output bit width, times output_scale; calling it
    returns an IntQuantTensor."""

    scale: torch.Tensor
    out: QuantOp

    def __call__(self, x: torch.Tensor) -> IntQuantTensor:
        y = torch.round(x / self.scale + self.out.zero_point)
        y = y / torch.exp2(torch.round(torch.log2(self.out.scale / self.scale)))
        y = torch.clamp(ROUNDING[self.out.rounding](y), self.out.lo, self.out.hi)
        bw = torch.tensor(float(self.out.bit_width))
        return IntQuantTensor(y * self.out.scale, self.out.scale, self.out.zero_point, bw,
                              self.out.signed, False)  # fmt: skip


def trunc_op(node: NodeProto, scale, zp, in_bw, out_scale, out_bw) -> TruncOp:
    """The TruncOp of a QONNX Trunc node (version 2: with an output scale) of constants."""
    if torch.any(zp != 0):
        raise UnsupportedLayerError("Trunc with a zero point is not supported")
    q = quant_op(node, out_scale, zp, out_bw)
    return TruncOp(scale.to(torch.float32), replace(q, narrow=bool(attrs(node).get("narrow", 0))))


def _maxpool(node: NodeProto, x) -> torch.Tensor:
    kernel, stride, pad, dilation, ceil = pool_geometry(node)
    if x.dim() == 3:  # a 1-D pooling
        return F.max_pool1d(x, kernel[1], stride[1], pad[1], dilation[1], ceil)
    return F.max_pool2d(x, kernel, stride, pad, dilation, ceil)


def _gemm(node: NodeProto, a, b, c=None) -> torch.Tensor:
    at = attrs(node)
    if at.get("transA", 0):
        a = a.T
    if at.get("transB", 0):
        b = b.T
    y = at.get("alpha", 1.0) * (a @ b)
    return y if c is None else y + at.get("beta", 1.0) * c


def _conv(node: NodeProto, x, w, b=None) -> torch.Tensor:
    stride, pad = conv_geometry(node, tuple(w.shape[2:]))
    groups = int(attrs(node).get("group", 1))
    if w.dim() == 3:  # a 1-D convolution
        return F.conv1d(x, w, b, stride[1], pad[1], 1, groups)
    return F.conv2d(x, w, b, stride, pad, 1, groups)


def _quant(node: NodeProto, x, scale, zp, bw) -> torch.Tensor:
    return quant_op(node, scale, zp, bw)(x).value


def quant_op(node: NodeProto, scale, zp, bw) -> QuantOp:
    """The QuantOp of a QONNX Quant node with constant scale, zero point and bit width."""
    a = attrs(node)
    bits = float(bw)
    if bw.numel() != 1 or bits != int(bits) or not 1 <= bits <= 32:
        raise ModelFileError(f"bit width {bw.tolist()} is not one integer from 1 to 32")
    rounding = str(a.get("rounding_mode", "ROUND")).upper()
    if rounding not in ROUNDING:
        raise UnsupportedLayerError(
            f"rounding_mode {rounding!r} is unknown; expected one of {list(ROUNDING)}"
        )
    signed = bool(a.get("signed", 1))
    if signed and bits == 1:
        raise UnsupportedLayerError(
            "a 1-bit signed Quant is bipolar in QONNX but {-1, 0} in Brevitas; "
            "the file is ambiguous"
        )
    return QuantOp(
        scale.to(torch.float32),
        zp.to(torch.float32),
        int(bits),
        signed,
        bool(a.get("narrow", 1)),
        rounding,
    )


def _reshape(node: NodeProto, x, shape) -> torch.Tensor:
    dims = [int(d) for d in shape.tolist()]
    if not attrs(node).get("allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def transpose_perm(node: NodeProto, ndim: int) -> tuple[int, ...]:
    """The permutation of a Transpose node (reversed axes by default)."""
    return tuple(attrs(node).get("perm", range(ndim - 1, -1, -1)))


def _flatten(node: NodeProto, x) -> torch.Tensor:
    axis = attrs(node).get("axis", 1)
    return x.reshape(int(torch.tensor(x.shape[:axis]).prod()), -1)


OPS: dict[str, Callable] = {
    "Quant": _quant,
    "BipolarQuant": lambda n, x, scale: bipolar_op(scale)(x).value,
    "Gemm": _gemm,
    "MatMul": lambda n, a, b: a @ b,
    "Conv": _conv,
    "MaxPool": _maxpool,
    "AveragePool": _avgpool,
    "GlobalAveragePool": _avgpool,
    "ReduceMean": _reduce_mean,
    "Trunc": lambda n, x, *p: trunc_op(n, *p)(x).value,
    "Log": lambda n, x: torch.log(x),
    "Ceil": lambda n, x: torch.ceil(x),
    "Relu": lambda n, x: torch.relu(x),
    "Clip": lambda n, x, *b: clip(n, *b)(x),
    "BatchNormalization": lambda n, x, *p: batch_norm(n, *p)(x),
    "Add": lambda n, a, b: a + b,
    "Sub": lambda n, a, b: a - b,
    "Pow": lambda n, a, b: torch.pow(a, b.item() if b.numel() == 1 else b),
    "Sqrt": lambda n, x: torch.sqrt(x),
    "Mul": lambda n, a, b: a * b,
    "Div": lambda n, a, b: a / b,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": lambda n, x: x.permute(transpose_perm(n, x.dim())),
    "Identity": lambda n, x: x,
    "Dropout": lambda n, x, *rest: x,
}


def supported_ops() -> str:
    """The op types the QONNX frontend reads (those the kinds' modules add included)."""
    return ", ".join(OPS)


def evaluate(node: NodeProto, inputs: list[torch.Tensor | None]) -> torch.Tensor | tuple:
    """Node's output in torch (a tuple of them for TopK); KeyError for an op not in OPS."""
    return OPS[node.op_type](node, *inputs)
