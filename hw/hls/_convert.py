"""The integer graph as an hls4ml layer list, every precision taken from the graph.

hls4ml lays tensors out channels last; the graph is channels first. A 3-D tensor
(C, H, W) is (H, W, C) in hls4ml, and a flattened one keeps hls4ml's order: `perm`
maps each hls4ml position to the graph's flat index, and the Dense that consumes it
reads its weight columns in that order (free in hardware). Nodes are converted by
`CONVERTERS[node.kind]`; a kind without one raises an UnsupportedLayerError. A kind
that hls4ml has no exact layer for declares its extension layer (`_layers.extension`)
beside its converter, so one kind's HLS is in one place here (and its C++ header).

Accumulators get the graph's accumulator type. A partial sum may leave its range
(the range bounds the full sum), but ap_int wraps modulo 2**bits, so the full sum,
which is in range, comes out exact.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from cosyn.hw.hls._layers import EXTENSIONS, Extension, extension

from cosyn.errors import BitWidthError, UnsupportedLayerError
from cosyn.ir import nodes as N
from cosyn.ir.graph import Graph
from cosyn.ir.kinds.concat import Concat
from cosyn.ir.kinds.labelselect import LabelSelect
from cosyn.ir.kinds.mul import Mul
from cosyn.ir.nodes import IntType, int_type_for_range

__all__ = ["CONVERTERS", "Converted", "Tensor", "ap_type", "convert", "supported_kinds"]

_EXACT_DOUBLE = 53  # C simulation moves values through double: integers up to 2**53 are exact


@dataclass(frozen=True)
class Tensor:
    """A graph value as hls4ml holds it: shape, channel count, flat permutation, type."""

    shape: tuple[int, ...]
    n_chan: int
    perm: np.ndarray | None
    dtype: IntType

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class Converted:
    """One hls4ml layer: its layer-list entry, its precisions, and the value it makes."""

    layer: dict[str, Any]
    precision: dict[str, str]
    out: Tensor


Converter = Callable[[N.Node, str, list[Tensor], list[str]], Converted]


def ap_type(t: IntType) -> str:
    return f"ap_{'' if t.signed else 'u'}int<{t.bits}>"


def _int_type(a: np.ndarray) -> IntType:
    a = np.asarray(a, dtype=np.int64)
    return int_type_for_range(a.min(), a.max()) if a.size else IntType(1, False)


def _check_exact(name: str, *arrays: np.ndarray) -> None:
    for a in arrays:
        if a.size and np.abs(a).max() >= 2**_EXACT_DOUBLE:
            raise BitWidthError(
                f"{name}: a constant needs more than {_EXACT_DOUBLE} bits, which hls4ml's "
                "weight files cannot carry exactly; reduce the bit widths of this layer"
            )


def _per_channel(a: np.ndarray, t: Tensor, name: str) -> np.ndarray:
    """Per-channel (or per-tensor) rows of the graph, one row per hls4ml channel."""
    a = np.asarray(a, dtype=np.int64)
    a = a.reshape(-1, 1) if a.ndim <= 1 else a.reshape(a.shape[0], -1)
    graph_chan = t.n_chan if t.perm is None else t.size
    if a.shape[0] not in (1, graph_chan):
        raise UnsupportedLayerError(f"{name}: {a.shape[0]} per-channel values for {graph_chan}")
    a = np.broadcast_to(a, (graph_chan, a.shape[1]))
    return a[t.perm] if t.perm is not None else a


def _dense(node: N.Node, name: str, ins: list[Tensor], srcs: list[str]) -> Converted:
    assert isinstance(node, N.Dense)
    (x,) = ins
    if len(x.shape) != 1:
        raise UnsupportedLayerError(f"{node.name}: a dense layer needs a flat input")
    w = node.weight if x.perm is None else node.weight[:, x.perm]
    wt, bt = _weight_type(w), _int_type(node.bias)
    _check_exact(node.name, node.bias)
    layer = dict(
        class_name="Dense",
        name=name,
        inputs=srcs,
        n_in=w.shape[1],
        n_out=w.shape[0],
        weight_data=w.T.copy(),
        bias_data=node.bias.copy(),
    )
    prec = dict(
        weight=ap_type(wt), bias=ap_type(bt), accum=ap_type(node.dtype), result=ap_type(node.dtype)
    )
    return Converted(layer, prec, Tensor(node.shape, node.shape[0], None, node.dtype))


def _weight_type(w: np.ndarray) -> IntType:
    """The weights' type, widened where hls4ml reads a type as more than its integers:
    ap_int<2> holding -2 (it treats ap_int<2> as ternary {-1, 0, 1}), and ap_uint<1>
    (with ap_uint<1> inputs it is an XNOR layer, whose sums it maps to 2 * sum - n_in)."""
    t = _int_type(w)
    if t == IntType(2, True) and w.min() < -1:
        return IntType(3, True)
    return IntType(2, False) if t == IntType(1, False) else t


def _conv2d(node: N.Node, name: str, ins: list[Tensor], srcs: list[str]) -> Converted:
    """hls4ml's Conv2D (channels last); a depthwise one (groups = channels = outputs) its
    DepthwiseConv2D. hls4ml has no other grouped convolution (its depthwise layers take a
    depth multiplier of 1 only): those are refused naming the node."""
    assert isinstance(node, N.Conv2d)
    x = _image(node, ins, "a convolution")
    o, cg, kh, kw = node.weight.shape
    c = cg * node.groups
    _, oh, ow = node.shape
    if node.groups > 1 and not cg == 1 == o // node.groups:
        raise UnsupportedLayerError(
            f"{node.name}: hls4ml has no grouped convolution of {node.groups} groups ({cg} "
            f"input and {o // node.groups} output channels each), only depthwise (one input "
            "and one output channel per group); use the RTL backend, or groups=1"
        )
    depthwise = node.groups > 1
    layer = dict(
        class_name="DepthwiseConv2D" if depthwise else "Conv2D",
        name=name,
        inputs=srcs,
        **_window(x, oh, ow, node.stride, node.padding),
        n_chan=c,
        n_filt=o,
        filt_height=kh,
        filt_width=kw,
        dilation=1,
    )
    if depthwise:  # (KH, KW, C, 1)
        layer.update(depth_multiplier=1, depthwise_data=node.weight.transpose(2, 3, 0, 1).copy())
    else:
        layer.update(weight_data=node.weight.transpose(2, 3, 1, 0).copy())
    layer.update(bias_data=node.bias.copy())
    _check_exact(node.name, node.bias)
    prec = dict(
        weight=ap_type(_weight_type(node.weight)),
        bias=ap_type(_int_type(node.bias)),
        accum=ap_type(node.dtype),
        result=ap_type(node.dtype),
    )
    return Converted(layer, prec, Tensor((oh, ow, o), o, None, node.dtype))


def _image(node: N.Node, ins: list[Tensor], what: str) -> Tensor:
    """The one input of a window layer: a (C, H, W) image (hls4ml's (H, W, C)), else an
    UnsupportedLayerError naming the node."""
    (x,) = ins
    if len(x.shape) != 3 or x.perm is not None:
        raise UnsupportedLayerError(f"{node.name}: {what} needs a (C, H, W) input")
    return x


def _window(x: Tensor, oh: int, ow: int, stride: tuple, padding: tuple) -> dict[str, Any]:
    """The keys hls4ml's 2-D window layers share: channels last, the input's and the
    output's size, stride and (symmetric) padding."""
    (sh, sw), (ph, pw) = stride, padding
    return dict(data_format="channels_last", in_height=x.shape[0], in_width=x.shape[1],
                out_height=oh, out_width=ow, stride_height=sh, stride_width=sw,
                pad_top=ph, pad_bottom=ph, pad_left=pw, pad_right=pw)  # fmt: skip


def _maxpool2d(node: N.Node, name: str, ins: list[Tensor], srcs: list[str]) -> Converted:
    """hls4ml's MaxPooling2D (channels last). Its padding is the type's top bit set: the
    minimum of a signed type, but not of an unsigned one, so padding needs a signed input."""
    assert isinstance(node, N.MaxPool2d)
    x = _image(node, ins, "max pooling")
    (kh, kw), (ph, pw) = node.kernel, node.padding
    if (ph or pw) and not x.dtype.signed:
        raise UnsupportedLayerError(
            f"{node.name}: hls4ml pads max pooling with the type's top bit, not the minimum of "
            f"an unsigned input ({ap_type(x.dtype)}); use padding 0 or a signed input"
        )
    _, oh, ow = node.shape
    layer = dict(
        class_name="MaxPooling2D",
        name=name,
        inputs=srcs,
        **_window(x, oh, ow, node.stride, node.padding),
        n_filt=x.shape[2],
        pool_height=kh,
        pool_width=kw,
    )
    prec = dict(accum=ap_type(x.dtype), result=ap_type(node.dtype))
    return Converted(layer, prec, Tensor((oh, ow, x.shape[2]), x.shape[2], None, node.dtype))


def _avgpool2d(node: N.Node, name: str, ins: list[Tensor], srcs: list[str]) -> Converted:
    """The window sum as hls4ml's DepthwiseConv2D of weights 1 (channels last, zero padding
    counted), accumulated in the node's type: exact. (hls4ml's AveragePooling2D divides by
    the window's size in fixed point, which no type makes exact for a divisor that is not a
    power of two; the graph keeps the division in the next requantization instead.)"""
    assert isinstance(node, N.AvgPool2d)
    x = _image(node, ins, "average pooling")
    (kh, kw), c = node.kernel, x.shape[2]
    _, oh, ow = node.shape
    layer = dict(
        class_name="DepthwiseConv2D",
        name=name,
        inputs=srcs,
        **_window(x, oh, ow, node.stride, node.padding),
        n_chan=c,
        depth_multiplier=1,
        n_filt=c,
        filt_height=kh,
        filt_width=kw,
        dilation=1,
        depthwise_data=np.ones((kh, kw, c, 1), np.int64),
        bias_data=np.zeros(c, np.int64),
    )
    prec = dict(weight=ap_type(_weight_type(layer["depthwise_data"])), bias="ap_uint<1>",
                accum=ap_type(node.dtype), result=ap_type(node.dtype))  # fmt: skip
    return Converted(layer, prec, Tensor((oh, ow, c), c, None, node.dtype))


def _out(node: N.Node, x: Tensor) -> Tensor:
    return Tensor(x.shape, x.n_chan, x.perm, node.dtype)


def _n_chan(x: Tensor) -> int:
    return x.size if x.perm is not None else x.n_chan


_SHIFT = extension(
    Extension(
        name="CosynShift",
        function="cosyn_shift",
        base_config="cosyn_shift_config",
        header="cosyn_requant.h",
        weights=("shift", "lo", "hi"),
        consts={"n_chan": "unsigned", "half_even": "bool"},
        types={"shift_t": "shift", "clip_t": "lo"},
    )
)


def _shift(node: N.Node, name: str, ins: list[Tensor], srcs: list[str]) -> Converted:
    assert isinstance(node, N.Shift)
    (x,) = ins
    k, lo, hi = (_per_channel(a, x, node.name)[:, 0] for a in (node.shift, node.lo, node.hi))
    clip = int_type_for_range(min(lo.min(), hi.min()), max(lo.max(), hi.max()))
    # the left-shifted value, or the rounding constant 2**(k-1) added before a right shift
    work = max(x.dtype.bits + int(np.maximum(-k, 0).max()), int(k.max())) + 2
    layer = dict(
        class_name=_SHIFT.name,
        name=name,
        inputs=srcs,
        n_in=x.size,
        n_chan=_n_chan(x),
        half_even=node.rounding == "half_even",
        work_bits=work,
        shift_data=k,
        lo_data=lo,
        hi_data=hi,
    )
    if node.rounding not in ("half_even", "floor"):
        raise UnsupportedLayerError(f"{node.name}: rounding {node.rounding!r} has no HLS layer")
    prec = dict(
        shift=ap_type(_int_type(k)), lo=ap_type(clip), hi=ap_type(clip), result=ap_type(node.dtype)
    )
    return Converted(layer, prec, _out(node, x))


_THRESHOLD = extension(
    Extension(
        name="CosynThreshold",
        function="cosyn_threshold",
        base_config="cosyn_threshold_config",
        header="cosyn_requant.h",
        weights=("thr", "base", "sign"),
        consts={"n_chan": "unsigned", "n_thr": "unsigned"},
        types={"thr_t": "thr", "base_t": "base", "sign_t": "sign"},
    )
)


def _threshold(node: N.Node, name: str, ins: list[Tensor], srcs: list[str]) -> Converted:
    assert isinstance(node, N.Threshold)
    (x,) = ins
    t = _per_channel(node.thresholds, x, node.name)
    if t.shape[1] == 0:  # no step: a constant, kept as one threshold no input reaches
        t = np.full((t.shape[0], 1), x.dtype.hi + 1, np.int64)
    base, sign = (_per_channel(a, x, node.name)[:, 0] for a in (node.base, node.sign))
    _check_exact(node.name, t, base)
    work = max(_int_type(base).bits, node.dtype.bits, (t.shape[1]).bit_length() + 1) + 2
    layer = dict(
        class_name=_THRESHOLD.name,
        name=name,
        inputs=srcs,
        n_in=x.size,
        n_chan=_n_chan(x),
        n_thr=t.shape[1],
        work_bits=work,
        thr_data=t.reshape(-1),
        base_data=base,
        sign_data=sign,
    )
    prec = dict(
        thr=ap_type(_int_type(t)),
        base=ap_type(_int_type(base)),
        sign=ap_type(IntType(2, True)),
        result=ap_type(node.dtype),
    )
    return Converted(layer, prec, _out(node, x))


_ADD = extension(
    Extension(
        name="CosynAdd",
        function="cosyn_add",
        base_config="cosyn_add_config",
        header="cosyn_requant.h",
        consts={"shift1": "unsigned", "shift2": "unsigned"},
        n_inputs=2,
    )
)


def _add(node: N.Node, name: str, ins: list[Tensor], srcs: list[str]) -> Converted:
    assert isinstance(node, N.Add)
    a, b = ins
    same = (a.perm is None) == (b.perm is None) and (
        a.perm is None or np.array_equal(a.perm, b.perm)
    )
    if a.shape != b.shape or not same:
        raise UnsupportedLayerError(f"{node.name}: an add needs two inputs of one layout")
    s1, s2 = node.shifts
    work = max(a.dtype.bits + s1, b.dtype.bits + s2) + 2
    layer = dict(
        class_name=_ADD.name,
        name=name,
        inputs=srcs,
        n_in=a.size,
        shift1=s1,
        shift2=s2,
        work_bits=work,
    )
    return Converted(layer, dict(result=ap_type(node.dtype)), _out(node, a))


_POLY = extension(
    Extension(
        name="CosynPoly",
        function="cosyn_poly",
        base_config="cosyn_poly_config",
        header="cosyn_poly.h",
        weights=("coeff",),
        consts={"n_chan": "unsigned", "degree": "unsigned"},
        types={"coeff_t": "coeff"},
        typelists={"stage": "stage_types"},
    )
)


def _poly(node: N.Node, name: str, ins: list[Tensor], srcs: list[str]) -> Converted:
    """Horner's rule, each step's value in the graph's type for it (`Poly.stages`)."""
    assert isinstance(node, N.Poly)
    (x,) = ins
    c = _per_channel(node.coeffs, x, node.name)
    stages = _stage_types(node, c)
    _check_exact(node.name, c)
    layer = dict(
        class_name=_POLY.name,
        name=name,
        inputs=srcs,
        n_in=x.size,
        n_chan=_n_chan(x),
        degree=node.degree,
        work_bits=max(t.bits for t in stages),
        coeff_data=c.reshape(-1),
        stage_types=[ap_type(t) for t in stages],
    )
    prec = dict(coeff=ap_type(_int_type(c)), result=ap_type(node.dtype))
    return Converted(layer, prec, _out(node, x))


def _stage_types(node: N.Poly, c: np.ndarray) -> list[IntType]:
    """h's type before the first Horner step (the leading coefficients), then after each."""
    if len(node.stages) != node.degree or (node.stages and node.stages[-1] != node.dtype):
        raise BitWidthError(
            f"{node.name}: a degree-{node.degree} polynomial needs {node.degree} Horner stage "
            f"types, the last equal to its dtype {node.dtype}, not {tuple(map(str, node.stages))}"
            "; lower the model again"
        )
    return [_int_type(c[:, 0]), *node.stages]


def _flatten(node: N.Node, name: str, ins: list[Tensor], srcs: list[str]) -> Converted:
    (x,) = ins
    if len(x.shape) == 3:  # hls4ml position (h, w, c) holds graph index (c, h, w)
        h, w, c = x.shape
        perm = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
    else:
        perm = x.perm
    layer = dict(class_name="Reshape", name=name, inputs=srcs, target_shape=[x.size])
    out = Tensor((x.size,), x.size, perm, node.dtype)
    return Converted(layer, dict(result=ap_type(node.dtype)), out)


def _concat(node: N.Node, name: str, ins: list[Tensor], srcs: list[str]) -> Converted:
    """hls4ml's Concatenate along the channels (its last axis: channels last); a flat
    value keeps each input's hls4ml order, the second's indices after the first's."""
    assert isinstance(node, Concat)
    a, b = ins
    if len(a.shape) != len(b.shape) or a.shape[:-1] != b.shape[:-1]:
        raise UnsupportedLayerError(f"{node.name}: a concat needs two inputs of one layout")
    op = f"concatenate{len(a.shape)}d"  # hls4ml's function for the rank (as its Keras reader)
    layer = dict(class_name="Concatenate", name=name, inputs=srcs, axis=-1, op=op)
    if len(a.shape) == 3:
        out = Tensor((*a.shape[:2], a.shape[2] + b.shape[2]), a.shape[2] + b.shape[2], None,
                     node.dtype)  # fmt: skip
    else:
        perm = None
        if a.perm is not None or b.perm is not None:
            pa = np.arange(a.size) if a.perm is None else a.perm
            pb = np.arange(b.size) if b.perm is None else b.perm
            perm = np.concatenate([pa, a.size + pb])
        out = Tensor((a.size + b.size,), a.size + b.size, perm, node.dtype)
    return Converted(layer, dict(result=ap_type(node.dtype)), out)


_LABELSELECT = extension(
    Extension(
        name="CosynLabelSelect",
        function="cosyn_labelselect",
        base_config="cosyn_labelselect_config",
        header="cosyn_select.h",
        consts={"n_out": "unsigned"},
        out_size="n_out",
    )
)


def _labelselect(node: N.Node, name: str, ins: list[Tensor], srcs: list[str]) -> Converted:
    """CosynLabelSelect: the k largest of a flat value in its graph index order."""
    assert isinstance(node, LabelSelect)
    (x,) = ins
    if len(x.shape) != 1 or x.perm is not None:
        raise UnsupportedLayerError(
            f"{node.name}: a label select needs a flat input in index order (a dense layer's)"
        )
    layer = dict(class_name=_LABELSELECT.name, name=name, inputs=srcs, n_in=x.size,
                 n_out=node.k, work_bits=x.dtype.bits + 1)  # fmt: skip
    out = Tensor(node.shape, node.shape[0], None, node.dtype)
    return Converted(layer, dict(result=ap_type(node.dtype)), out)


def _mul(node: N.Node, name: str, ins: list[Tensor], srcs: list[str]) -> Converted:
    """hls4ml's Multiply merge layer (`nnet::multiply`: res = data1 * data2, the ap_int
    product of the inputs' types assigned to the result's): exact in the node's type."""
    assert isinstance(node, Mul)
    a, b = ins
    same = (a.perm is None) == (b.perm is None) and (
        a.perm is None or np.array_equal(a.perm, b.perm)
    )
    if a.shape != b.shape or not same:
        raise UnsupportedLayerError(f"{node.name}: a mul needs two inputs of one layout")
    layer = dict(class_name="Merge", name=name, inputs=srcs, op="multiply")
    return Converted(layer, dict(result=ap_type(node.dtype)), _out(node, a))


CONVERTERS: dict[str, Converter] = {
    N.Dense.kind: _dense,
    N.Conv2d.kind: _conv2d,
    N.MaxPool2d.kind: _maxpool2d,
    N.AvgPool2d.kind: _avgpool2d,
    N.Shift.kind: _shift,
    N.Threshold.kind: _threshold,
    N.Add.kind: _add,
    N.Poly.kind: _poly,
    N.Flatten.kind: _flatten,
    Concat.kind: _concat,
    LabelSelect.kind: _labelselect,
    Mul.kind: _mul,
}


def supported_kinds() -> list[str]:
    """The registered node kinds (cosyn.ir.nodes.KINDS) this backend converts, sorted."""
    return sorted(k for k in N.KINDS if k in CONVERTERS)


def hls_name(name: str) -> str:
    """A C identifier hls4ml accepts (it reserves `input`)."""
    s = re.sub(r"\W", "_", name)
    return f"n_{s}" if not s[:1].isalpha() or s.lower() == "input" else s


def input_tensor(q: N.Quantize) -> Tensor:
    shape = q.shape if len(q.shape) != 3 else (q.shape[1], q.shape[2], q.shape[0])
    return Tensor(tuple(shape), shape[-1], None, q.dtype)


def _repack_flattens(layers: list[dict[str, Any]]) -> None:
    """io_stream: a flatten read by a cosyn extension layer repacks its stream.

    hls4ml leaves a flatten in place in io_stream (the stream keeps the packing of
    the tensor before it, one pixel per read); its own layers gather such a stream,
    but the extension layers read and write packs of one size. A Repack makes the
    flattened stream's packs those of the extension layer's output.
    """
    readers = {i for layer in layers if layer["class_name"] in EXTENSIONS for i in layer["inputs"]}
    for layer in layers:
        if layer["class_name"] == "Reshape" and layer["name"] in readers:
            layer["class_name"] = "Repack"


def _check_stream_pooling(g: Graph, layers: list[dict[str, Any]]) -> None:
    """hls4ml's io_stream pooling takes windows that tile the input: kernel = stride, no
    padding (it asserts so in C simulation); refuse others here, naming the node."""
    nodes = {hls_name(n.name): n for n in g}
    for layer in layers:
        node = nodes.get(layer["name"])
        if isinstance(node, N.MaxPool2d) and (node.kernel != node.stride or any(node.padding)):
            raise UnsupportedLayerError(
                f"{node.name}: hls4ml's io_stream max pooling needs kernel = stride and no "
                f"padding, not kernel {node.kernel}, stride {node.stride}, padding "
                f"{node.padding}; use io_type='io_parallel'"
            )


def convert(
    g: Graph, io_type: str = "io_parallel"
) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]], Tensor]:
    """The hls4ml layer list, per-layer precisions, and the output tensor of `g`."""
    if g.sequence:
        raise UnsupportedLayerError(
            f"{g.input.name}: the HLS backend takes fixed-size samples, not a graph of "
            "variable-length sequences (a transformer)"
        )
    if len(g.input.shape) not in (1, 3):
        raise UnsupportedLayerError(f"{g.input.name}: inputs must be (N,) or (C, H, W)")
    names = {n.name: hls_name(n.name) for n in g}
    if len(set(names.values())) != len(names):
        raise UnsupportedLayerError("node names collide once made C identifiers; rename them")
    if g.input.dtype.bits > _EXACT_DOUBLE:
        raise BitWidthError(f"{g.input.name}: inputs wider than {_EXACT_DOUBLE} bits")
    x = input_tensor(g.input)
    layers = [dict(class_name="InputLayer", name=names[g.input.name], input_shape=list(x.shape))]
    precision = {names[g.input.name]: dict(result=ap_type(g.input.dtype))}
    values = {g.input.name: x}
    for node in g.nodes[1:]:
        conv = CONVERTERS.get(node.kind)
        if conv is None:
            raise UnsupportedLayerError(
                f"{node.name} ({type(node).__name__}): the HLS backend has no layer for "
                f"node kind {node.kind!r}; supported: {', '.join(supported_kinds())}"
            )
        c = conv(
            node,
            names[node.name],
            [values[i] for i in node.inputs],
            [names[i] for i in node.inputs],
        )
        layers.append(c.layer)
        precision[names[node.name]] = c.precision
        values[node.name] = c.out
    if io_type == "io_stream":
        _check_stream_pooling(g, layers)
        _repack_flattens(layers)
    out = values[g.output.name]
    if out.dtype.bits > _EXACT_DOUBLE:
        raise BitWidthError(f"{g.output.name}: outputs wider than {_EXACT_DOUBLE} bits")
    return layers, precision, out
