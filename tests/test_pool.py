"""Max pooling end to end: the MaxPool2d node's golden eval equals torch; cosyn.lower
(nn.MaxPool2d, F.max_pool2d) and from_qonnx (ONNX MaxPool) give the same graph, equal
to the Brevitas model; the RTL block is exact and follows its cycle model
(`perfmodel.pool`) under random gaps and back-pressure, alone and in a pipeline; one
small cocotb run; hls4ml's C simulation is exact; what cannot be built is refused in
one line naming the layer."""

from __future__ import annotations

import brevitas.nn as qnn
import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from brevitas.quant import TruncTo8bit
from brevitas.quant_tensor import QuantTensor
from cosyn.hw.rtl import COMPONENTS, Ctx, Top
from cosyn.hw.rtl._tb import Port, run_streams, run_top
from cosyn.models.quant import Int4WeightPow2, Int8ActPow2, Uint8ActPow2
from cosyn.perfmodel.blocks import drive
from cosyn.perfmodel.pipeline import plan, stream_index
from cosyn.perfmodel.pool import MaxPoolTiming, PoolGeometry
from cosyn.perfmodel.resources import PRIMITIVES, primitives
from hypothesis import given, settings
from hypothesis import strategies as st
from test_perfmodel_timing import _arrivals, _check_quiet
from test_qonnx import assert_same_graph, export
from test_rtl_units import control_run, sim_run
from torch import nn

import cosyn
from cosyn.errors import UnsupportedLayerError
from cosyn.ir import nodes as N
from cosyn.ir.graph import Graph
from cosyn.ir.nodes import IntType

ONE = np.float32(1.0)


def pool_node(shape, t: IntType, kernel, stride, padding=(0, 0), name="m") -> N.MaxPool2d:
    node = N.MaxPool2d(name, ("x",), (), t, ONE, kernel=kernel, stride=stride, padding=padding)
    node.shape = node.infer_shape(shape)
    return node


# -- the node ----------------------------------------------------------------------------------

EVAL_CASES = [  # (C, H, W), kernel, stride, padding
    ((3, 8, 8), (2, 2), (2, 2), (0, 0)),
    ((2, 7, 9), (3, 3), (2, 2), (1, 1)),  # overlapping windows, padded
    ((1, 5, 6), (2, 3), (3, 2), (1, 0)),  # kernel != stride both ways
    ((4, 6, 5), (1, 2), (2, 3), (0, 1)),  # gaps between windows
    ((2, 4, 4), (4, 4), (1, 1), (2, 2)),
]


@pytest.mark.parametrize(("shape", "k", "s", "p"), EVAL_CASES)
@pytest.mark.parametrize("t", [IntType(5, True), IntType(3, False), IntType(40, True)])
def test_eval_equals_torch(shape, k, s, p, t) -> None:
    node = pool_node(shape, t, k, s, p)
    x = np.random.default_rng(len(shape) + k[0]).integers(t.lo, t.hi + 1, (6, *shape))
    x[0], x[1] = t.lo, t.hi  # padding must lose even to the type's minimum
    want = F.max_pool2d(torch.from_numpy(x), k, s, p)  # int64: exact
    assert np.array_equal(node.eval(x), want.numpy())
    assert node.shape == tuple(want.shape[1:])
    lo, hi = node.infer_range((np.array([t.lo]), np.array([t.hi])))
    assert (lo.tolist(), hi.tolist()) == ([t.lo], [t.hi])


def test_shape_refuses_what_torch_refuses() -> None:
    t = IntType(4, True)
    with pytest.raises(ValueError, match="more than half the kernel"):
        pool_node((1, 6, 6), t, (2, 2), (2, 2), (2, 0))
    with pytest.raises(ValueError, match="does not fit"):
        pool_node((1, 2, 6), t, (3, 3), (1, 1))


# -- the frontends -----------------------------------------------------------------------------


def _act(bits: int, signed: bool = True) -> nn.Module:
    cls = qnn.QuantIdentity if signed else qnn.QuantReLU
    return cls(bit_width=bits, return_quant_tensor=True)


class PoolNet(nn.Module):
    """QuantIdentity -> QuantConv2d -> QuantReLU -> MaxPool2d(2) -> F.max_pool2d(3, 2, 1) ->
    QuantConv2d -> QuantIdentity -> MaxPool2d((1, 2), (2, 3)) -> flatten -> QuantLinear ->
    QuantIdentity."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = _act(4)
        self.conv1 = qnn.QuantConv2d(2, 4, 3, weight_bit_width=4, return_quant_tensor=True)
        self.relu = _act(3, signed=False)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = qnn.QuantConv2d(4, 3, 1, weight_bit_width=3, return_quant_tensor=True)
        self.act2 = _act(4)
        self.pool3 = nn.MaxPool2d((1, 2), (2, 3))
        self.fc = qnn.QuantLinear(3 * 2 * 1, 5, weight_bit_width=4, return_quant_tensor=True)
        self.out = _act(6)

    def forward(self, x):
        y = self.pool1(self.relu(self.conv1(self.inp(x))))
        y = F.max_pool2d(y, 3, 2, 1)
        y = self.pool3(self.act2(self.conv2(y)))
        return self.out(self.fc(y.view(y.shape[0], -1)))


def _float(y) -> np.ndarray:
    return (y.value if isinstance(y, QuantTensor) else y).detach().numpy()


@pytest.fixture(scope="module")
def pool_net() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = PoolNet().eval()
    return model, torch.randn(64, 2, 14, 13)


def test_lowering_equals_the_model(pool_net) -> None:
    model, x = pool_net
    g = cosyn.lower(model, x[:2])
    kinds = [n.kind for n in g]
    assert kinds.count("maxpool2d") == 3
    pools = [n for n in g if isinstance(n, N.MaxPool2d)]
    assert [(p.kernel, p.stride, p.padding) for p in pools] == [
        ((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((1, 2), (2, 3), (0, 0))]  # fmt: skip
    for p in pools:  # the input's type and scale pass through
        src = g[p.inputs[0]]
        assert p.dtype == src.dtype and np.array_equal(p.scale, src.scale)
    assert np.array_equal(g.run(x.numpy()), _float(model(x)))


def test_qonnx_gives_the_same_graph(pool_net, tmp_path) -> None:
    model, x = pool_net
    g = cosyn.lower(model, x[:2])
    h = cosyn.ir.from_qonnx(export(model, (2, 14, 13), tmp_path / "pool.onnx"))
    assert_same_graph(g, h)
    for a, b in zip(g, h, strict=True):
        if isinstance(a, N.MaxPool2d):
            assert (a.kernel, a.stride, a.padding) == (b.kernel, b.stride, b.padding)
    assert np.array_equal(h.run(x.numpy()), _float(model(x)))


class _Refused(nn.Module):
    def __init__(self, pool: nn.Module, before_quant: bool = False) -> None:
        super().__init__()
        self.inp, self.pool, self.before = _act(4), pool, before_quant
        self.bn = nn.BatchNorm2d(2)
        self.out = _act(4)

    def forward(self, x):
        y = self.inp(x)
        y = self.pool(self.bn(y) if self.before else y)
        return self.out(y)


@pytest.mark.parametrize(
    ("pool", "before", "message"),
    [
        (nn.MaxPool2d(2, dilation=2), False, "only dilation 1 is supported"),
        (nn.MaxPool2d(2, ceil_mode=True), False, "(2, 4, 4) where floor mode gives (2, 3, 3)"),
        (nn.MaxPool2d(2), True, "receives a value that is not quantized"),
    ],
)
def test_unsupported_pooling_is_refused_in_one_line(pool, before, message) -> None:
    """Dilation, a ceil_mode that adds a window, a float value (max does not commute with
    a batch norm of negative gamma): one line naming the module."""
    with pytest.raises(UnsupportedLayerError) as e:
        cosyn.lower(_Refused(pool, before), torch.randn(2, 2, 7, 7))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("pool (MaxPool2d)") and message in msg


class _Indices(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.out = _act(4), _act(4)

    def forward(self, x):
        return self.out(F.max_pool2d(self.inp(x), 2, return_indices=True)[0])


def test_pooling_with_indices_is_refused_in_one_line() -> None:
    with pytest.raises(UnsupportedLayerError) as e:
        cosyn.lower(_Indices(), torch.randn(2, 2, 6, 6))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("max_pool2d_with_indices (call_function")


# -- the RTL block, alone ------------------------------------------------------------------------

RTL_CASES = [  # (C, H, W), kernel, stride, padding, input type; C = 1, 2, 3: the word read
    # was written by the element 1, 2, 3 ahead after the read (its result forwarded)
    ((1, 4, 6), (2, 2), (2, 2), (0, 0), IntType(4, True)),
    ((3, 5, 7), (2, 3), (3, 3), (0, 1), IntType(3, False)),  # gaps, padding, dropped rows
    ((2, 6, 5), (1, 2), (2, 2), (0, 1), IntType(6, True)),
    ((4, 3, 3), (1, 1), (1, 1), (0, 0), IntType(5, False)),  # every element a window
    ((2, 7, 7), (3, 3), (3, 3), (1, 1), IntType(8, True)),
    ((8, 6, 6), (2, 2), (2, 2), (0, 0), IntType(2, True)),  # CNV's pooling, smaller
    ((2, 4, 140), (2, 2), (2, 2), (0, 0), IntType(4, True)),  # three LUT RAM banks
    ((65, 2, 16), (2, 1), (2, 1), (0, 0), IntType(3, True)),  # 1040 words: block RAM
]


def _ctx(case, kind: str = "maxpool2d") -> tuple[N.MaxPool2d | N.AvgPool2d, Ctx]:
    shape, k, s, p, t = case
    make = pool_node if kind == "maxpool2d" else avg_node
    return make(shape, t, k, s, p), Ctx((t,), (shape,), "hwc")


# the sum: forwarding (C = 1, 2), padding and dropped rows, LUT RAM banks, block RAM
BLOCKS = [(k, "maxpool2d") for k in range(len(RTL_CASES))] + [
    (k, "avgpool2d") for k in (0, 1, 2, 4, 6, 7)]  # fmt: skip


@pytest.mark.parametrize(("case", "kind"), BLOCKS)
def test_block_follows_its_control_under_back_pressure(case, kind) -> None:
    """Random input gaps and output back-pressure: every transfer in the cycle the
    control model says, and the outputs exact."""
    node, ctx = _ctx(RTL_CASES[case], kind)
    block = COMPONENTS[node.kind](node, ctx)
    rng = np.random.default_rng(case)
    samples = 3
    t = ctx.in_type
    x = rng.integers(t.lo, t.hi + 1, (samples, *ctx.in_shape))
    x[0, :, ::2] = t.lo  # runs of one value: the select's ties
    values = x.reshape(samples, -1)[:, ctx.index()].reshape(-1)
    n_in, n_out = len(values), samples * int(np.prod(node.shape))
    cycles = 6 * (n_in + n_out) + 200
    offers, readies = rng.random(cycles) >= 0.3, rng.random(cycles) >= 0.4
    taken, outs, ys = sim_run(block, [block.i], [values], n_out, [offers], readies)
    assert (taken, outs) == control_run(block.cycles.control(), [n_in], n_out, [offers], readies)
    y = np.asarray(ys).reshape(samples, -1)[:, np.argsort(stream_index(node.shape, "hwc"))]
    assert np.array_equal(y.reshape(samples, *node.shape), node.eval(x))


@pytest.mark.parametrize(("case", "kind"), BLOCKS)
def test_block_at_full_rate_has_its_latency_interval_and_timing(case, kind) -> None:
    node, ctx = _ctx(RTL_CASES[case], kind)
    block = COMPONENTS[node.kind](node, ctx)
    t = ctx.in_type
    x = np.random.default_rng(case).integers(t.lo, t.hi + 1, (3, *ctx.in_shape))
    values = x.reshape(3, -1)[:, ctx.index()].reshape(-1)
    out_n = int(np.prod(node.shape))
    run = run_streams(block, {"i": (Port.of(block.i), values.tolist())}, Port.of(block.o),
                      3 * out_n)  # fmt: skip
    ins = np.asarray(run.in_cycles["i"])  # the last rows no window reads may still wait
    outs = np.asarray(run.out_cycles).reshape(3, -1)
    assert outs[0, 0] - ins[0] == block.cycles.latency
    assert set(np.diff(outs[:, 0]).tolist()) == {block.cycles.interval} == {x[0].size}
    assert np.array_equal(outs[0], block.cycles.timing(ins[: x[0].size]))


@pytest.mark.slow
def test_block_verilog_lints_clean(tmp_path) -> None:
    from cosyn.hw.rtl._verilog import component_verilog, lint

    for k, kind in [(0, "maxpool2d"), (1, "maxpool2d"), (6, "maxpool2d"), (7, "maxpool2d"),
                    (1, "avgpool2d"), (7, "avgpool2d")]:  # fmt: skip
        # forwarding; padding and dropped rows; LUT RAM banks; block RAM; and of sums
        node, ctx = _ctx(RTL_CASES[k], kind)
        (tmp_path / f"{kind}{k}").mkdir()
        path = tmp_path / f"{kind}{k}" / "top.v"
        path.write_text(component_verilog(COMPONENTS[node.kind](node, ctx), f"{kind}{k}"))
        assert lint(path) == "", (k, kind)


@st.composite
def pool_timings(draw) -> MaxPoolTiming:
    c, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 7)), draw(st.integers(1, 7))
    kh, kw = draw(st.integers(1, min(h, 3))), draw(st.integers(1, min(w, 3)))
    sh, sw = draw(st.integers(kh, 4)), draw(st.integers(kw, 4))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    node = pool_node((c, h, w), IntType(4, True), (kh, kw), (sh, sw), (ph, pw))
    return MaxPoolTiming(PoolGeometry.of(node, (c, h, w)))


@settings(max_examples=40, deadline=None)
@given(pool_timings(), st.data())
def test_closed_forms_and_shortcuts_equal_the_control(timing, data) -> None:
    """One sample with gaps: timing() is the control's output cycles, and every input is
    taken as offered (those after the last window's, which no output waits for, too);
    several at full rate: the latency and interval; and the shortcuts."""
    geo = timing.geo
    n_in, n_out = geo.frame_in, geo.c * geo.oh * geo.ow
    arr = _arrivals(data, n_in)
    (taken,), (outs,) = drive(timing, [arr], n_out)
    assert np.array_equal(outs, timing.timing(arr))
    assert np.array_equal(taken, timing.transfers(arr)[0][: len(taken)])
    (taken,), (outs,) = drive(timing, [np.zeros(4 * n_in, np.int64)], 4 * n_out)
    assert outs[0] - taken[0] == timing.latency
    assert set(np.diff(outs[::n_out]).tolist()) == {timing.interval}
    _check_quiet(timing, data)


def test_overlapping_windows_are_refused_naming_the_node(tmp_path) -> None:
    t = IntType(4, True)
    g = Graph([N.Quantize("x", (), (2, 7, 7), t, ONE), pool_node((2, 7, 7), t, (3, 3), (2, 2))])
    with pytest.raises(UnsupportedLayerError) as e:
        cosyn.rtl.generate(g, tmp_path / "rtl")
    assert str(e.value).startswith("m: the RTL block keeps one maximum per output column")
    assert not (tmp_path / "rtl").exists()


def test_resources_count_the_line_buffer() -> None:
    node, ctx = _ctx(RTL_CASES[5])
    stage = plan(Graph([N.Quantize("x", (), ctx.in_shape, ctx.in_type, ONE), node])).stages[0]
    prims = primitives(stage)
    assert PRIMITIVES["maxpool2d"] is not None and prims.kind == "maxpool2d"
    assert prims.mems == [(3 * 8, 2, False, "lut", None)]  # OW * C words of the input type
    node, ctx = _ctx(RTL_CASES[6])
    stage = plan(Graph([N.Quantize("x", (), ctx.in_shape, ctx.in_type, ONE), node])).stages[0]
    assert [m[:4] for m in primitives(stage).mems] == [(64, 4, False, "lut")] * 2 + [
        (12, 4, False, "lut")]  # fmt: skip
    node, ctx = _ctx(RTL_CASES[7])
    stage = plan(Graph([N.Quantize("x", (), ctx.in_shape, ctx.in_type, ONE), node])).stages[0]
    assert primitives(stage).mems == [(1040, 3, False, "block", None)]
    assert prims.reg_bits > 0 and prims.add_bits >= 2 * 2


# -- in a pipeline ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_cnn() -> tuple[Graph, np.ndarray]:
    """QuantIdentity -> QuantConv2d -> QuantReLU -> MaxPool2d(2) -> QuantConv2d -> QuantIdentity
    -> MaxPool2d((1, 2), (2, 2)): a pooled image in, a pooled image out."""
    torch.manual_seed(1)
    model = nn.Sequential(
        _act(4), qnn.QuantConv2d(1, 4, 3, weight_bit_width=3, return_quant_tensor=True),
        _act(3, signed=False), nn.MaxPool2d(2),
        qnn.QuantConv2d(4, 2, 1, weight_bit_width=3, return_quant_tensor=True), _act(4),
        nn.MaxPool2d((1, 2), (2, 2)),
    ).eval()  # fmt: skip
    x = torch.randn(6, 1, 10, 10)
    g = cosyn.lower(model, x[:2])
    assert np.array_equal(g.run(x.numpy()), _float(model(x)))
    return g, g.quantize(x.numpy())


NETS = ["small_cnn", pytest.param("avg_cnn", marks=pytest.mark.slow)]  # max, average pooling


@pytest.mark.parametrize("net", ["small_cnn", "avg_cnn"])
def test_pipeline_exact_with_its_timing(net: str, request) -> None:
    g, xi = request.getfixturevalue(net)
    top = Top(plan(g))
    y, ins, outs = run_top(top, xi[:4])
    assert np.array_equal(y, g.run_int(xi[:4]))
    assert outs[0, 0] - ins[0, 0] == top.plan.latency
    assert np.diff(outs[:, 0])[-1] == top.plan.interval
    y, _, _ = run_top(Top(plan(g, 2)), xi[:3], gaps=0.3, stalls=0.5, seed=4)
    assert np.array_equal(y, g.run_int(xi[:3]))


@pytest.mark.parametrize("net", NETS)
def test_cocotb_icarus_exact_with_the_manifest_timing(net: str, request, tmp_path) -> None:
    from cosyn.sim import simulate

    g, _ = request.getfixturevalue(net)
    d = cosyn.rtl.generate(g, tmp_path / "rtl")
    x = np.random.default_rng(2).normal(size=(4, 1, 10, 10)).astype(np.float32) * 2
    r = simulate(d, x, simulator="icarus", backpressure=True)
    assert (r.mismatches, r.lost, r.duplicated, r.protocol_errors) == (0, 0, 0, 0), r
    assert np.array_equal(r.outputs, g.run_int(g.quantize(x)))
    assert (r.latency, r.interval) == (d.manifest["latency"], d.manifest["interval"])


# -- HLS -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("io_type", "t", "first", "second"),
    [  # (kernel, stride, padding) of two poolings in a row
        ("io_parallel", IntType(5, True), ((3, 2), (2, 3), (1, 1)), ((1, 2), (1, 1), (0, 0))),
        ("io_stream", IntType(3, False), ((2, 2), (2, 2), (0, 0)), ((1, 3), (1, 3), (0, 0))),
    ],
)
def test_hls_csim_exact(tmp_path, io_type, t, first, second) -> None:
    hls_two_in_a_row_exact(pool_node, tmp_path, io_type, t, first, second)


def hls_two_in_a_row_exact(make, tmp_path, io_type, t: IntType, first, second) -> None:
    """Two poolings of `make` ((kernel, stride, padding) `first`, then `second`) on a
    (3, 7, 6) input of type `t`: hls4ml's C-sim equals the golden model on the type's
    extremes and 38 random inputs."""
    from cosyn.hw.hls import generate

    a = make((3, 7, 6), t, *first)
    b = make(a.shape, a.dtype, *second, name=f"{a.name}2")
    b.inputs = (a.name,)
    g = Graph([N.Quantize("x", (), (3, 7, 6), t, ONE), a, b])
    g.check()
    h = generate(g, tmp_path / "hls", io_type=io_type)
    xi = np.random.default_rng(0).integers(t.lo, t.hi + 1, (40, 3, 7, 6))
    xi[0], xi[1] = t.lo, t.hi
    assert np.array_equal(h.predict_int(xi), g.run_int(xi))


def test_hls_refuses_what_hls4ml_computes_otherwise(tmp_path) -> None:
    from cosyn.hw.hls import generate

    t = IntType(4, False)
    padded = pool_node((2, 6, 6), t, (3, 3), (2, 2), (1, 1))
    g = Graph([N.Quantize("x", (), (2, 6, 6), t, ONE), padded])
    with pytest.raises(UnsupportedLayerError, match=r"^m: hls4ml pads max pooling"):
        generate(g, tmp_path / "a")
    g.nodes[1] = pool_node((2, 6, 6), t, (3, 3), (2, 2))
    with pytest.raises(UnsupportedLayerError, match=r"^m: hls4ml's io_stream max pooling"):
        generate(g, tmp_path / "b", io_type="io_stream")


# == average pooling ============================================================================


def avg_node(shape, t: IntType, kernel, stride, padding=(0, 0), name="a") -> N.AvgPool2d:
    fields = dict(kernel=kernel, stride=stride, padding=padding)
    node = N.AvgPool2d(name, ("x",), (), t, ONE, **fields)
    node.shape = node.infer_shape(shape)
    return N.AvgPool2d.sized([node_range(t)], name=name, inputs=("x",), shape=node.shape,
                             scale=ONE, **fields)  # fmt: skip


def node_range(t: IntType) -> tuple[np.ndarray, np.ndarray]:
    return np.array([t.lo]), np.array([t.hi])


@pytest.mark.parametrize(("shape", "k", "s", "p"), EVAL_CASES)
@pytest.mark.parametrize("t", [IntType(5, True), IntType(3, False)])
def test_avg_eval_is_the_sum_torch_divides(shape, k, s, p, t) -> None:
    """torch's average times kh*kw (zero padding counted) is the node's sum, exactly; its
    type holds every window's sum (the first two samples reach the ends)."""
    node = avg_node(shape, t, k, s, p)
    x = np.random.default_rng(len(shape) + k[0]).integers(t.lo, t.hi + 1, (6, *shape))
    x[0], x[1] = t.lo, t.hi
    want = F.avg_pool2d(torch.from_numpy(x).double(), k, s, p, divisor_override=1)
    assert np.array_equal(node.eval(x), want.numpy())
    lo, hi = node.infer_range(node_range(t))
    assert lo[0] <= node.eval(x).min() and node.eval(x).max() <= hi[0]
    assert (node.dtype.lo <= lo[0], hi[0] <= node.dtype.hi) == (True, True)
    if p == (0, 0):
        assert (lo[0], hi[0]) == (k[0] * k[1] * t.lo, k[0] * k[1] * t.hi)


def _pow2(bits: int, signed: bool = True) -> nn.Module:
    """A power-of-two-scaled activation (cosyn's presets): the model's sums are exact."""
    cls, quant = (qnn.QuantIdentity, Int8ActPow2) if signed else (qnn.QuantReLU, Uint8ActPow2)
    return cls(act_quant=quant, bit_width=bits, return_quant_tensor=True)


class AvgNet(nn.Module):
    """A 4-bit activation, the pooling `f`, a 4-bit activation."""

    def __init__(self, f) -> None:
        super().__init__()
        self.inp, self.out = _pow2(4), _pow2(4)
        self.pool = f if isinstance(f, nn.Module) else None
        self.f = None if isinstance(f, nn.Module) else f

    def forward(self, x):
        y = self.inp(x)
        return self.out(self.pool(y) if self.pool is not None else self.f(y))


def _mean(keepdim: bool):
    def f(y):
        return torch.mean(y, (-1, -2), keepdim=keepdim)

    return f


AVG_CASES = {  # name: (pooling, the kinds after the input, (kernel, stride, padding))
    "2x2": (nn.AvgPool2d(2), "shift", ((2, 2), (2, 2), (0, 0))),
    "3x3 s2 p1": (nn.AvgPool2d(3, 2, 1), "threshold", ((3, 3), (2, 2), (1, 1))),
    "divisor 5": (nn.AvgPool2d((2, 3), 2, (1, 0), divisor_override=5), "threshold",
                  ((2, 3), (2, 2), (1, 0))),
    "global": (nn.AdaptiveAvgPool2d(1), "threshold", ((12, 10), (12, 10), (0, 0))),
    "adaptive 3x2": (nn.AdaptiveAvgPool2d((3, 2)), "threshold", ((4, 5), (4, 5), (0, 0))),
    "adaptive 3xNone": (nn.AdaptiveAvgPool2d((3, None)), "shift", ((4, 1), (4, 1), (0, 0))),
    "F.avg_pool2d": (lambda y: F.avg_pool2d(y, 3, 1, 1, False, True, None), "threshold",
                     ((3, 3), (1, 1), (1, 1))),
    "F.adaptive": (lambda y: F.adaptive_avg_pool2d(y, (6, 5)), "shift", ((2, 2), (2, 2), (0, 0))),
    "mean keepdim": (_mean(True), "threshold", ((12, 10), (12, 10), (0, 0))),
    "mean": (_mean(False), "flatten threshold", ((12, 10), (12, 10), (0, 0))),
    "trunc 3x3": (qnn.TruncAvgPool2d(3), "shift threshold", ((3, 3), (3, 3), (0, 0))),
    "trunc floor 2x2": (qnn.TruncAvgPool2d(2, trunc_quant=TruncTo8bit), "shift shift",
                        ((2, 2), (2, 2), (0, 0))),
    "trunc global": (qnn.TruncAdaptiveAvgPool2d(1), "shift threshold",
                     ((12, 10), (12, 10), (0, 0))),
}  # fmt: skip


@pytest.fixture(scope="module")
def avg_input() -> torch.Tensor:
    torch.manual_seed(3)
    return torch.randn(256, 3, 12, 10) * 2


@pytest.mark.parametrize("case", list(AVG_CASES))
def test_avg_lowering_equals_the_model(case, avg_input) -> None:
    """Every form of average pooling: the window sum (one AvgPool2d node), then the next
    quantizer (a threshold bank found against the model's own division, a shift where the
    divisor is a power of two, or Brevitas' truncation: a shift of the sum), equal to the
    model on every input."""
    f, kinds, geometry = AVG_CASES[case]
    model = AvgNet(f).eval()
    g = cosyn.lower(model, avg_input[:2])
    assert [n.kind for n in g][1:] == ["avgpool2d", *kinds.split()]
    a = g.nodes[1]
    assert (a.kernel, a.stride, a.padding) == geometry
    assert np.array_equal(g.run(avg_input.numpy()), _float(model(avg_input)))


@pytest.mark.parametrize(
    ("pool", "ops"),
    [(nn.AvgPool2d(3), 1), (nn.AvgPool2d(2), 0), (nn.AdaptiveAvgPool2d(1), 1),
     (nn.AdaptiveAvgPool2d((2, 5)), 2)],
)  # fmt: skip
def test_avg_as_the_output_keeps_the_models_division(pool, ops, avg_input) -> None:
    """A model ending in an average: the sums dequantize at the input's scale, then the
    model's own divisions (`output_ops`; none for a power of two, which is the scale's)."""
    model = nn.Sequential(_pow2(4), pool).eval()
    g = cosyn.lower(model, avg_input[:2])
    assert [n.kind for n in g] == ["quantize", "avgpool2d"] and len(g.output_ops) == ops
    assert np.array_equal(g.run(avg_input.numpy()), _float(model(avg_input)))


def test_avg_division_is_the_models_own() -> None:
    """Why an average whose divisor is not a power of two keeps the division on the float
    chain: torch divides the exact sum once (fl(S * s / 9)), and S * fl(s / 9), the
    integers at a divided scale, differs on some sums, ties of the next quantizer among
    them; with power-of-two divisors the two agree on every sum."""
    s = torch.tensor(2.0**-3)
    sums = torch.arange(-(2**12), 2**12, dtype=torch.float32)
    x = torch.zeros(sums.numel(), 1, 3, 3)
    x[:, 0, 0, 0] = sums * s
    model = F.avg_pool2d(x, 3).reshape(-1)
    assert torch.equal(model, sums * s / 9)
    assert not torch.equal(model, sums * (s / 9))
    assert torch.equal(F.avg_pool2d(x[..., :2, :2], 2).reshape(-1), sums * (s / 4))


@pytest.mark.parametrize("case", ["3x3 s2 p1", "2x2", "global", "mean", "trunc 3x3",
                                  "trunc global"])  # fmt: skip
def test_avg_qonnx_gives_the_same_graph(case, avg_input, tmp_path) -> None:
    """AveragePool, GlobalAveragePool, ReduceMean and Brevitas' Trunc read back to the graph
    cosyn.lower gives, equal to the model."""
    model = AvgNet(AVG_CASES[case][0]).eval()
    g = cosyn.lower(model, avg_input[:2])
    h = cosyn.ir.from_qonnx(export(model, (3, 12, 10), tmp_path / "avg.onnx"))
    assert_same_graph(g, h)
    a, b = g.nodes[1], h.nodes[1]
    assert (a.kernel, a.stride, a.padding) == (b.kernel, b.stride, b.padding)
    assert np.array_equal(h.run(avg_input.numpy()), _float(model(avg_input)))


def test_a_trunc_scale_only_near_the_averages_keeps_the_division(avg_input, tmp_path) -> None:
    """A Trunc whose scale is one ulp off the average's (s / 9) is not read as a shift of
    the sum (round(sum * s / 9 / scale) need not be the sum): the division stays on the
    chain, a threshold bank takes it, and the graph equals qonnx's execution of the file."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    path = export(AvgNet(AVG_CASES["trunc 3x3"][0]).eval(), (3, 12, 10), tmp_path / "t.onnx")
    m = onnx.load(path)
    trunc = next(n for n in m.graph.node if n.op_type == "Trunc")
    scale = next(i for i in m.graph.initializer if i.name == trunc.input[1])
    near = np.nextafter(onnx.numpy_helper.to_array(scale), np.float32(1))
    scale.CopyFrom(onnx.numpy_helper.from_array(near, scale.name))
    onnx.save(m, path)
    h = cosyn.ir.from_qonnx(path)
    assert [n.kind for n in h][1:] == ["avgpool2d", "threshold", "threshold"]
    w = ModelWrapper(str(path)).transform(InferShapes())
    x = avg_input[:32].numpy()
    run = [execute_onnx(w, {w.graph.input[0].name: x[i : i + 1]}) for i in range(len(x))]
    expect = np.concatenate([r[w.graph.output[0].name] for r in run])
    assert np.array_equal(h.run(x), expect)


@pytest.mark.parametrize(
    ("f", "message"),
    [
        (nn.AvgPool2d(3, 2, 1, count_include_pad=False), "count_include_pad=False divides"),
        (nn.AvgPool2d(2, ceil_mode=True), "ceil_mode gives (3, 4, 4) where floor mode"),
        (nn.AdaptiveAvgPool2d((5, 5)), "output size (5, 5) does not divide the input's (7, 7)"),
        (lambda y: torch.mean(y, 1), "only the mean over the last two axes"),
    ],
)
def test_inexact_averages_are_refused_in_one_line(f, message) -> None:
    with pytest.raises(UnsupportedLayerError) as e:
        cosyn.lower(AvgNet(f).eval(), torch.randn(2, 3, 7, 7))
    msg = str(e.value)
    assert "\n" not in msg and message in msg and msg.split(":")[0] in (
        "pool (AvgPool2d)", "pool (AdaptiveAvgPool2d)", "mean (call_function mean)")  # fmt: skip


class GapNet(nn.Module):
    """The ResNet/MobileNet ending: convolutions, a global average pooling of their last
    feature map, flatten, a quantizer (or Brevitas' truncating pooling), the classifier."""

    def __init__(self, trunc: bool) -> None:
        super().__init__()
        self.inp = _pow2(4)
        self.conv1 = qnn.QuantConv2d(2, 6, 3, weight_quant=Int4WeightPow2, bias=False,
                                     return_quant_tensor=True)  # fmt: skip
        self.relu1 = _pow2(4, signed=False)
        self.conv2 = qnn.QuantConv2d(6, 8, 3, stride=2, padding=1, weight_quant=Int4WeightPow2,
                                     bias=False, return_quant_tensor=True)  # fmt: skip
        self.relu2 = _pow2(4, signed=False)
        self.pool = qnn.TruncAdaptiveAvgPool2d(1) if trunc else nn.AdaptiveAvgPool2d(1)
        self.act = _pow2(6)
        self.fc = qnn.QuantLinear(8, 5, weight_quant=Int4WeightPow2, bias=False,
                                  return_quant_tensor=True)  # fmt: skip

    def forward(self, x):
        y = self.relu2(self.conv2(self.relu1(self.conv1(self.inp(x)))))
        y = self.act(torch.flatten(self.pool(y), 1))
        return self.fc(y)


@pytest.mark.parametrize("trunc", [False, True])
def test_global_average_before_the_classifier_lowers_exactly(trunc, tmp_path) -> None:
    """Through cosyn.lower and through its QONNX file: the same graph, equal to the model."""
    torch.manual_seed(5)
    model = GapNet(trunc).eval()
    x = torch.randn(128, 2, 12, 12) * 2
    g = cosyn.lower(model, x[:2])
    kinds = [n.kind for n in g]
    assert kinds[kinds.index("avgpool2d") :][:2] == ["avgpool2d", "shift" if trunc else "flatten"]
    assert np.array_equal(g.run(x.numpy()), _float(model(x)))
    h = cosyn.ir.from_qonnx(export(model, (2, 12, 12), tmp_path / "gap.onnx"))
    assert_same_graph(g, h)
    assert np.array_equal(h.run(x.numpy()), _float(model(x)))


class _MeanMethod(nn.Module):
    """A float tensor's own mean (return_quant_tensor=False before it)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=Int8ActPow2, bit_width=4)
        self.out = _pow2(4)

    def forward(self, x):
        return self.out(self.inp(x).mean(dim=[2, 3]))


def test_tensor_mean_method_is_a_global_average(avg_input) -> None:
    model = _MeanMethod().eval()
    g = cosyn.lower(model, avg_input[:2])
    assert [n.kind for n in g][1:] == ["avgpool2d", "flatten", "threshold"]
    assert np.array_equal(g.run(avg_input.numpy()), _float(model(avg_input)))


def test_avg_overlapping_windows_are_refused_naming_the_node(tmp_path) -> None:
    t = IntType(4, True)
    g = Graph([N.Quantize("x", (), (2, 7, 7), t, ONE), avg_node((2, 7, 7), t, (3, 3), (1, 1))])
    with pytest.raises(UnsupportedLayerError) as e:
        cosyn.rtl.generate(g, tmp_path / "rtl")
    assert str(e.value).startswith("a: the RTL block keeps one sum per output column")


def test_avg_resources_count_a_line_buffer_of_sums() -> None:
    """The line buffer and the result registers hold sums: the node's type, not the input's."""
    node, ctx = _ctx(RTL_CASES[5], "avgpool2d")  # 2-bit signed, 2x2: sums of 4 bits
    stage = plan(Graph([N.Quantize("x", (), ctx.in_shape, ctx.in_type, ONE), node])).stages[0]
    prims = primitives(stage)
    assert prims.kind == "avgpool2d" and node.dtype == IntType(4, True)
    assert prims.mems == [(3 * 8, 4, False, "lut", None)]
    inp = N.Quantize("x", (), ctx.in_shape, ctx.in_type, ONE)
    maxed = primitives(plan(Graph([inp, _ctx(RTL_CASES[5])[0]])).stages[0])
    assert prims.reg_bits > maxed.reg_bits and prims.add_bits > maxed.add_bits


@pytest.fixture(scope="module")
def avg_cnn() -> tuple[Graph, np.ndarray]:
    """QuantIdentity -> QuantConv2d -> QuantReLU -> AvgPool2d(2) -> QuantConv2d -> QuantReLU ->
    AdaptiveAvgPool2d(1) -> flatten -> QuantIdentity -> QuantLinear: a 2x2 average, a global
    one, the classifier."""
    torch.manual_seed(6)
    model = nn.Sequential(
        _pow2(4), qnn.QuantConv2d(1, 4, 3, weight_quant=Int4WeightPow2, bias=False,
                                  return_quant_tensor=True),
        _pow2(3, signed=False), nn.AvgPool2d(2), _pow2(4, signed=False),
        qnn.QuantConv2d(4, 3, 1, weight_quant=Int4WeightPow2, bias=False,
                        return_quant_tensor=True),
        _pow2(4, signed=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(), _pow2(5),
        qnn.QuantLinear(3, 4, weight_quant=Int4WeightPow2, bias=False, return_quant_tensor=True),
    ).eval()  # fmt: skip
    x = torch.randn(64, 1, 10, 10) * 2
    g = cosyn.lower(model, x[:2])
    assert [n.kind for n in g].count("avgpool2d") == 2
    assert np.array_equal(g.run(x.numpy()), _float(model(x)))
    return g, g.quantize(x.numpy())


@pytest.mark.parametrize(
    ("io_type", "t", "first", "second"),
    [  # (kernel, stride, padding) of two sums in a row; overlapping and padded windows too
        ("io_parallel", IntType(5, True), ((3, 2), (2, 3), (1, 1)), ((1, 2), (1, 1), (0, 0))),
        ("io_stream", IntType(3, False), ((2, 2), (2, 2), (0, 0)), ((3, 3), (1, 1), (1, 1))),
    ],
)
def test_avg_hls_csim_exact(tmp_path, io_type, t, first, second) -> None:
    """hls4ml's DepthwiseConv2D of weights 1 in the sum's type: C-sim equals the golden sums."""
    hls_two_in_a_row_exact(avg_node, tmp_path, io_type, t, first, second)


@pytest.mark.slow
def test_avg_cnn_hls_csim_exact(avg_cnn, tmp_path) -> None:
    """The 2x2- and global-average CNN through hls4ml: every output integer the golden's."""
    from cosyn.hw.hls import generate

    g, xi = avg_cnn
    h = generate(g, tmp_path / "hls")
    assert np.array_equal(h.predict_int(xi), g.run_int(xi))


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        (nn.AvgPool2d(3, 2, 1, count_include_pad=False), "count_include_pad=False divides"),
        (nn.AvgPool2d(2, ceil_mode=True), "ceil_mode gives (3, 4, 4) where floor mode"),
    ],
)
def test_inexact_onnx_averages_are_refused_in_one_line(pool, message, tmp_path) -> None:
    path = export(AvgNet(pool).eval(), (3, 7, 7), tmp_path / "avg.onnx")
    with pytest.raises(UnsupportedLayerError) as e:
        cosyn.ir.from_qonnx(path)
    msg = str(e.value)
    assert "\n" not in msg and "(AveragePool): " in msg and message in msg
