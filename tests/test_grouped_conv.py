"""Grouped and depthwise convolution end to end: the Conv2d node's golden eval with
`groups` equals torch; cosyn.lower (QuantConv2d and QuantConv1d with groups) and
from_qonnx (ONNX Conv `group`) give the same graph, equal to the Brevitas model; the RTL
block reads each conv group's channels only, exact and on its control's every cycle
under gaps and back-pressure; a depthwise-separable network with global average pooling
simulates exactly in cocotb with the manifest's latency and interval, and in hls4ml's C
simulation (DepthwiseConv2D); what cannot be built is refused in one line."""

from __future__ import annotations

import brevitas.nn as qnn
import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from cosyn.hw.rtl import COMPONENTS, Ctx, Top
from cosyn.hw.rtl._tb import run_top
from cosyn.models.quant import Int4WeightPow2, Int8ActPow2, Uint8ActPow2
from cosyn.perfmodel.blocks import drive
from cosyn.perfmodel.conv import ConvGeometry, ConvTiming
from cosyn.perfmodel.pipeline import plan, resolve_parallelism, stream_index
from cosyn.perfmodel.resources import primitives
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_perfmodel_timing import _arrivals, _check, _check_quiet
from test_qonnx import assert_same_graph, export, one_line
from test_rtl_units import control_run, sim_run
from torch import nn

import cosyn
from cosyn.errors import CosynError, UnsupportedLayerError
from cosyn.ir import nodes as N
from cosyn.ir.graph import Graph
from cosyn.ir.nodes import IntType

ONE = np.float32(1.0)


def conv_node(c, h, w, o, k, s, p, groups, t: IntType, seed: int = 0) -> N.Conv2d:
    """A (C, H, W) -> (O, OH, OW) conv of `groups` groups, random weights with extremes,
    sized for inputs of type `t` (per channel: channel j's range is [lo, hi - j])."""
    rng = np.random.default_rng(seed)
    w_ = rng.integers(-8, 8, (o, c // groups, k, k))
    w_.flat[0], w_.flat[-1] = -8, 7
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    lo, hi = np.full(c, t.lo), np.maximum(t.hi - np.arange(c), t.lo)
    return N.Conv2d.sized([(lo, hi)], name="conv_t", inputs=("x",), shape=(o, oh, ow),
                          scale=ONE, weight=w_, bias=rng.integers(-40, 40, o), stride=(s, s),
                          padding=(p, p), groups=groups)  # fmt: skip


# -- the node ------------------------------------------------------------------------------

# (C, O, groups, kernel, stride, padding): depthwise, depthwise x2, grouped, one group
EVAL_CASES = [(4, 4, 4, 3, 1, 1), (3, 6, 3, 3, 2, 0), (6, 4, 2, 3, 2, 1), (4, 8, 2, 1, 1, 0),
              (3, 2, 1, 2, 1, 1)]  # fmt: skip


@pytest.mark.parametrize(("c", "o", "g", "k", "s", "p"), EVAL_CASES)
def test_eval_equals_torch_and_its_range_holds_it(c, o, g, k, s, p) -> None:
    t = IntType(5, True)
    node = conv_node(c, 7, 6, o, k, s, p, g, t)
    assert node.infer_shape((c, 7, 6)) == node.shape
    x = np.random.default_rng(c + o).integers(t.lo, t.hi + 1, (8, c, 7, 6))
    x = np.minimum(x, t.hi - np.arange(c)[:, None, None])  # channel j at most hi - j
    x[0] = t.lo
    w, b = (torch.from_numpy(a).double() for a in (node.weight, node.bias))
    want = F.conv2d(torch.from_numpy(x).double(), w, b, s, p, 1, g).numpy()
    y = node.eval(x)
    assert np.array_equal(y, want)
    lo, hi = node.infer_range((np.full(c, t.lo), t.hi - np.arange(c)))
    assert np.all(lo <= y.min((0, 2, 3))) and np.all(y.max((0, 2, 3)) <= hi)
    assert node.dtype.lo <= lo.min() and hi.max() <= node.dtype.hi
    assert node.macs == o * (c // g) * k * k * node.shape[1] * node.shape[2]


def test_shape_refuses_groups_that_do_not_fit() -> None:
    node = conv_node(4, 5, 5, 4, 3, 1, 1, 2, IntType(4, True))
    with pytest.raises(ValueError, match=r"take \(4, H, W\) inputs"):
        node.infer_shape((2, 5, 5))
    node.groups = 3
    with pytest.raises(ValueError, match="3 groups do not divide its 4 output channels"):
        node.infer_shape((6, 5, 5))


# -- the frontends ---------------------------------------------------------------------------


def _pow2(bits: int, signed: bool = True) -> nn.Module:
    """A power-of-two-scaled activation (cosyn's presets): the model's sums are exact."""
    cls, quant = (qnn.QuantIdentity, Int8ActPow2) if signed else (qnn.QuantReLU, Uint8ActPow2)
    return cls(act_quant=quant, bit_width=bits, return_quant_tensor=True)


def _conv(cls: type, c: int, o: int, k: int, **kw) -> nn.Module:
    return cls(c, o, k, weight_quant=Int4WeightPow2, bias=False, return_quant_tensor=True, **kw)


def _float(y) -> np.ndarray:
    return (y.value if hasattr(y, "value") else y).detach().numpy()


def ds_model() -> nn.Module:
    """Plain Brevitas: a 3x3 conv, a depthwise 3x3 (stride 2) and a pointwise 1x1 conv
    (a depthwise-separable block), global average pooling, the classifier."""
    torch.manual_seed(3)
    return nn.Sequential(
        _pow2(4), _conv(qnn.QuantConv2d, 1, 4, 3, padding=1), _pow2(4, signed=False),
        _conv(qnn.QuantConv2d, 4, 4, 3, padding=1, stride=2, groups=4), _pow2(4, signed=False),
        _conv(qnn.QuantConv2d, 4, 6, 1), _pow2(4, signed=False),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), _pow2(5),
        qnn.QuantLinear(6, 3, weight_quant=Int4WeightPow2, bias=False, return_quant_tensor=True),
    ).eval()  # fmt: skip


@pytest.fixture(scope="module")
def ds_net() -> tuple[Graph, np.ndarray, nn.Module]:
    model = ds_model()
    x = torch.randn(64, 1, 8, 8) * 2
    g = cosyn.lower(model, x[:2])
    assert [getattr(n, "groups", 0) for n in g if n.kind == "conv2d"] == [1, 4, 1]
    assert np.array_equal(g.run(x.numpy()), _float(model(x)))
    return g, g.quantize(x.numpy()), model


def test_depthwise_separable_lowers_exactly_through_both_frontends(ds_net, tmp_path) -> None:
    g, _, model = ds_net
    path = export(model, (1, 8, 8), tmp_path / "ds.onnx")
    g2 = cosyn.ir.from_qonnx(path)
    assert_same_graph(g, g2)
    assert [getattr(n, "groups", 0) for n in g2] == [getattr(n, "groups", 0) for n in g]
    m = onnx.load(path)  # a group count that does not divide the channels: one line
    (conv,) = [n for n in m.graph.node for a in n.attribute if a.name == "group" and a.i == 4]
    next(a for a in conv.attribute if a.name == "group").i = 3
    onnx.save(m, tmp_path / "bad.onnx")
    with pytest.raises(CosynError) as e:
        cosyn.ir.from_qonnx(tmp_path / "bad.onnx")
    one_line(e, "bad.onnx", f"'{conv.name}' (Conv)", "groups=3")


class Signal1d(nn.Module):
    """QuantConv1d of 2 groups, a depthwise QuantConv1d (two outputs per channel)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.body = nn.Sequential(
            _pow2(4), _conv(qnn.QuantConv1d, 4, 6, 3, padding=1, groups=2),
            _pow2(4, signed=False), _conv(qnn.QuantConv1d, 6, 12, 3, stride=2, groups=6),
        )  # fmt: skip

    def forward(self, x):
        return self.body(x)


def test_grouped_conv1d_through_both_frontends(tmp_path) -> None:
    model = Signal1d().eval()
    x = torch.randn(32, 4, 9) * 2
    g = cosyn.lower(model, x[:2])
    assert [n.groups for n in g if n.kind == "conv2d"] == [2, 6]
    assert np.array_equal(g.run(x[:, :, None].numpy()).squeeze(2), _float(model(x)))
    assert_same_graph(g, cosyn.ir.from_qonnx(export(model, (4, 9), tmp_path / "s.onnx")))


def test_what_cannot_be_lowered_is_refused_in_one_line() -> None:
    model = nn.Sequential(
        _pow2(4), _conv(qnn.QuantConv2d, 2, 2, 3, groups=2, padding=1, padding_mode="reflect")
    )
    with pytest.raises(UnsupportedLayerError) as e:
        cosyn.lower(model, torch.zeros(1, 2, 5, 5))
    one_line(e, "1 (QuantConv2d)", "zero padding", "reflect")


# -- the RTL block ---------------------------------------------------------------------------

U4, I4 = IntType(4, False), IntType(4, True)
# (C, H, W, O, K, stride, padding, groups, P, input type, SIMD)
BLOCK_CASES = [
    (4, 5, 5, 4, 3, 1, 1, 4, 1, I4, 1),  # depthwise
    (3, 6, 5, 6, 3, 2, 1, 3, 2, U4, 1),  # depthwise, two outputs a channel, both lanes
    (6, 5, 4, 4, 3, 1, 0, 2, 1, I4, 1),  # two groups of three channels
    (4, 4, 4, 8, 1, 1, 0, 2, 4, I4, 1),  # pointwise, two groups, four lanes
    (6, 5, 4, 4, 3, 1, 0, 2, 1, I4, 3),  # SIMD: a group's three channels in one word
    (8, 4, 4, 8, 3, 1, 1, 2, 2, U4, 2),  # two words a group
]


@pytest.mark.parametrize(
    "case", BLOCK_CASES, ids=lambda c: "-".join(map(str, c[:9])) + f"-S{c[10]}"
)
def test_block_follows_its_control_under_back_pressure(case) -> None:
    """Random input gaps and output back-pressure: every transfer in the cycle the
    control model says, and the outputs exact."""
    c, h, w, o, k, s, p, groups, par, t, simd = case
    node = conv_node(c, h, w, o, k, s, p, groups, t)
    ctx = Ctx((t,), ((c, h, w),), "hwc", parallelism=par, simd=simd)
    block = COMPONENTS["conv2d"](node, ctx)
    rng = np.random.default_rng(len(BLOCK_CASES) + c)
    x = rng.integers(t.lo, t.hi + 1, (2, c, h, w))
    x[0] = t.hi
    values = x.reshape(2, -1)[:, ctx.index()].reshape(-1)
    n_in, n_out = len(values), 2 * int(np.prod(node.shape))
    cycles = 3 * (n_in + n_out * k * k * (c // groups)) + 200
    offers, readies = rng.random(cycles) >= 0.3, rng.random(cycles) >= 0.4
    taken, outs, ys = sim_run(block, [block.i], [values], n_out, [offers], readies)
    assert (taken, outs) == control_run(block.cycles.control(), [n_in], n_out, [offers], readies)
    y = np.asarray(ys).reshape(2, -1)[:, np.argsort(stream_index(node.shape, "hwc"))]
    assert np.array_equal(y.reshape(2, *node.shape), node.eval(x))


def test_block_counts_its_group_only() -> None:
    """A depthwise conv's window is KH*KW terms a channel, not KH*KW*C: its interval,
    its weight ROM and its lanes are the grouped conv's, and a request for more lanes
    than a group's outputs is lowered to them, with a note."""
    t = I4
    dw = conv_node(8, 6, 6, 8, 3, 1, 1, 8, t)
    g = Graph([N.Quantize("x", (), (8, 6, 6), t, ONE), dw])
    stage = plan(g, 4).stages[0]
    geo = stage.timing.geo
    assert (stage.parallelism, geo.terms, geo.cin) == (1, 9, 1)
    assert "exceeds the 1 outputs of a group" in stage.note
    assert stage.timing.interval == 36 * 8 * 9  # OH*OW*O*KH*KW: the lane is the bottleneck
    prims = primitives(stage)
    assert prims.lanes == 1 and sum(m[0] for m in prims.mems if m[2] and m[4] is not None) == 72
    note = "parallelism 3 does not divide 4 outputs; rounded up to 4"
    assert resolve_parallelism(conv_node(4, 5, 5, 8, 1, 1, 0, 2, t), 3, 1) == (4, 1, note)


@st.composite
def grouped_timings(draw) -> tuple[ConvTiming, int, int]:
    """A grouped conv2d's timing: groups, channels and outputs per group, image, kernel,
    stride, padding and a parallelism dividing the outputs per group drawn."""
    groups, cg, og = draw(st.integers(2, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    h, w = draw(st.integers(3, 6)), draw(st.integers(3, 6))
    k, s, pad = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(0, 1))
    c, o = groups * cg, groups * og
    oh, ow = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    assume(min(oh, ow) >= 1)
    node = N.Conv2d("c", ("x",), (o, oh, ow), IntType(16, True), ONE,
                    weight=np.ones((o, cg, k, k), np.int64), bias=np.zeros(o, np.int64),
                    stride=(s, s), padding=(pad, pad), groups=groups)  # fmt: skip
    p = draw(st.sampled_from([d for d in range(1, og + 1) if og % d == 0]))
    try:
        geo = ConvGeometry.of(node, (c, h, w), p)
    except ValueError:
        assume(False)  # every window in the padding
    return ConvTiming(geo), c * h * w, o * oh * ow


@settings(max_examples=30, deadline=None)
@given(grouped_timings(), st.data())
def test_grouped_timing_equals_its_control(conv, data) -> None:
    """The conv control is the ungrouped one over KH*KW*C/G terms: its closed forms,
    `stalls` and shortcuts equal it stepped one cycle at a time."""
    _check(*conv, data)
    timing, n_in, n_out = conv
    late = _arrivals(data, n_in) + data.draw(st.integers(0, 3))
    (taken,), (outs,) = drive(timing, [late], n_out)
    assert timing.stalls(late) == [not np.array_equal(taken, late)]
    assert np.array_equal(timing.timing(late), outs)
    _check_quiet(timing, data)


# -- the network in RTL and HLS ----------------------------------------------------------------


def test_pipeline_exact_with_its_timing(ds_net) -> None:
    g, xi, _ = ds_net
    top = Top(plan(g))
    y, ins, outs = run_top(top, xi[:3])
    assert np.array_equal(y, g.run_int(xi[:3]))
    assert outs[0, 0] - ins[0, 0] == top.plan.latency
    assert np.diff(outs[:, 0])[-1] == top.plan.interval
    y, _, _ = run_top(Top(plan(g, 2)), xi[:3], gaps=0.3, stalls=0.5, seed=4)
    assert np.array_equal(y, g.run_int(xi[:3]))


def test_cocotb_exact_with_the_manifest_timing(ds_net, tmp_path) -> None:
    """Icarus, random back-pressure (Verilator, checked by hand, takes 104 s here)."""
    from cosyn.sim import simulate

    g, _, _ = ds_net
    d = cosyn.rtl.generate(g, tmp_path / "rtl")
    x = np.random.default_rng(2).normal(size=(4, 1, 8, 8)).astype(np.float32) * 2
    r = simulate(d, x, simulator="icarus", backpressure=True)
    assert (r.mismatches, r.lost, r.duplicated, r.protocol_errors) == (0, 0, 0, 0), r
    assert np.array_equal(r.outputs, g.run_int(g.quantize(x)))
    assert (r.latency, r.interval) == (d.manifest["latency"], d.manifest["interval"])


def test_hls_csim_exact(ds_net, tmp_path) -> None:
    """The depthwise conv as hls4ml's DepthwiseConv2D in io_parallel (io_stream, checked
    by hand, too): every output integer the golden's."""
    from cosyn.hw.hls import generate

    g, xi, _ = ds_net
    h = generate(g, tmp_path / "hls")
    assert np.array_equal(h.predict_int(xi), g.run_int(xi))


def test_hls_refuses_other_groups_naming_the_node(tmp_path) -> None:
    from cosyn.hw.hls import generate

    t = I4
    g = Graph([N.Quantize("x", (), (6, 5, 4), t, ONE), conv_node(6, 5, 4, 4, 3, 1, 0, 2, t)])
    with pytest.raises(UnsupportedLayerError, match=r"^conv_t: hls4ml has no grouped conv"):
        generate(g, tmp_path / "hls")
    assert not (tmp_path / "hls").exists()


def test_block_verilog_lints_clean(tmp_path) -> None:
    from cosyn.hw.rtl._verilog import component_verilog, lint

    for k in (1, 2, 5):  # depthwise of two lanes; two groups of three channels; SIMD 2
        c, h, w, o, ks, s, p, groups, par, t, simd = BLOCK_CASES[k]
        node = conv_node(c, h, w, o, ks, s, p, groups, t)
        ctx = Ctx((t,), ((c, h, w),), "hwc", parallelism=par, simd=simd)
        block = COMPONENTS["conv2d"](node, ctx)
        (tmp_path / f"g{k}").mkdir()
        path = tmp_path / f"g{k}" / "top.v"
        path.write_text(component_verilog(block, f"grouped{k}"))
        assert lint(path) == "", k
