"""The elementwise product of two quantized values end to end (kind "mul"): the Mul node's
eval is torch's and its range is exact (the corners of the inputs' ranges); `y * z`,
torch.mul and `.mul` of two values at per-tensor power-of-two scales lower exactly through
cosyn.lower and from_qonnx alike (a value times a constant stays a float operation), and
other scales or products beyond float32's 24-bit integers are refused in one line; the
block follows the add's control (`AddTiming`) under gaps and back-pressure; the pipeline,
hls4ml's C simulation and one cocotb run are exact, with the plan's cycles.

Exactness: Brevitas computes y * z in float32 from y = iy * sy and z = iz * sz. With sy
and sz powers of two both are exact, and so is their product (iy * iz) * (sy * sz) while
|iy * iz| <= 2**24: the graph's integers times its scale are the model's floats."""

from __future__ import annotations

import brevitas.nn as qnn
import numpy as np
import pytest
import torch
from brevitas.inject.enum import ScalingImplType
from brevitas.quant import Int8ActPerTensorFloat
from cosyn.hw.rtl import COMPONENTS, Ctx, Top
from cosyn.hw.rtl._tb import run_top
from cosyn.models.quant import Int4WeightPow2, Int8ActPow2, Uint8ActPow2
from cosyn.perfmodel.blocks import AddTiming
from cosyn.perfmodel.pipeline import folded, plan
from cosyn.perfmodel.resources import primitives
from hypothesis import given, settings
from hypothesis import strategies as st
from test_rtl_units import control_run, sim_run
from torch import nn

import cosyn
from cosyn.errors import BitWidthError, UnsupportedLayerError
from cosyn.ir import nodes as N
from cosyn.ir.graph import Graph
from cosyn.ir.intervals import as_range
from cosyn.ir.kinds.mul import Mul
from cosyn.ir.nodes import IntType

ONE = np.float32(1.0)


def mul_node(shape: tuple, ra, rb, name="m") -> Mul:
    return Mul.sized([ra, rb], name=name, inputs=("x", "y"), shape=shape, scale=ONE)


def of(t: IntType):
    return as_range(t.lo, t.hi)


# -- the node ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.data())
def test_eval_is_torchs_product_and_the_range_ends_are_reached(c, data) -> None:
    """Per-tensor or per-channel bounds: each channel's min and max are products of ends."""
    ranges = []
    for _ in range(2):
        n = data.draw(st.sampled_from([1, c]))
        lo = np.array(data.draw(st.lists(st.integers(-300, 300), min_size=n, max_size=n)))
        span = np.array(data.draw(st.lists(st.integers(0, 50), min_size=n, max_size=n)))
        ranges.append(as_range(lo, lo + span))
    node = mul_node((c, 2), *ranges)
    ends = [np.stack([np.broadcast_to(a.reshape(-1, 1), (c, 2)) for a in r]) for r in ranges]
    corners = np.stack([node.eval(ends[0][i][None], ends[1][j][None])[0]
                        for i in (0, 1) for j in (0, 1)])  # fmt: skip
    lo, hi = node.infer_range(*ranges)
    assert np.array_equal(np.broadcast_to(lo[:, None], (c, 2)), corners.min(0))
    assert np.array_equal(np.broadcast_to(hi[:, None], (c, 2)), corners.max(0))
    x = np.random.default_rng(c).integers(-50, 50, (3, c, 2))
    want = torch.from_numpy(x) * torch.from_numpy(x[::-1].copy())
    assert np.array_equal(node.eval(x, x[::-1]), want.numpy())
    assert node.infer_shape((c, 2), (c, 2)) == (c, 2)
    with pytest.raises(ValueError, match="its inputs have different shapes"):
        node.infer_shape((c, 2), (c, 1))


def test_dtype_and_bit_width_limit() -> None:
    node = mul_node((3,), of(IntType(4, True)), of(IntType(3, False)))
    lo, hi = node.infer_range(of(IntType(4, True)), of(IntType(3, False)))
    assert (lo.tolist(), hi.tolist(), node.dtype) == ([-56], [49], IntType(7, True))
    assert (node.macs, node.multiplies, node.elementwise) == (3, True, True)
    assert not folded(node)  # no dense/conv: no parallelism, not in the scheduler's options
    with pytest.raises(BitWidthError, match=r"^m \(mul\): its values span .*more than 62 bits"):
        mul_node((3,), of(IntType(40, True)), of(IntType(40, True)))


# -- the frontends -----------------------------------------------------------------------------


def _id(bits: int, qt: bool = True, quant=Int8ActPow2, **kw) -> nn.Module:
    return qnn.QuantIdentity(act_quant=quant, bit_width=bits, return_quant_tensor=qt, **kw)


OPS = {
    "*": lambda y, z: y * z,
    "torch.mul": lambda y, z: torch.mul(y, z),
    ".mul": lambda y, z: y.mul(z),  # of plain tensors (a QuantTensor has no .mul)
    "scaled": lambda y, z: 0.5 * (y * z) * 3,  # constants: the walk's own arithmetic
}


class MulNet(nn.Module):
    """y = QuantIdentity(x); z = QuantReLU(y) (another power-of-two scale); out =
    QuantIdentity(op(y, z)). `qt`: the two are QuantTensors (else plain tensors)."""

    def __init__(self, op: str = "*", qt: bool = True, bits=(6, 4), quant=Int8ActPow2) -> None:
        super().__init__()
        self.op = OPS[op]
        self.a = _id(bits[0], qt, quant, max_val=2.0)
        self.r = qnn.QuantReLU(act_quant=Uint8ActPow2 if quant is Int8ActPow2 else quant,
                               bit_width=bits[1], max_val=1.0, return_quant_tensor=qt)  # fmt: skip
        self.o = _id(5, qt=False)

    def forward(self, x):
        y = self.a(x)
        return self.o(self.op(y, self.r(y)))


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(256, 6) * 2


@pytest.mark.parametrize(("op", "qt"), [("*", True), ("torch.mul", False), (".mul", False),
                                        ("scaled", False)])  # fmt: skip
def test_lowering_equals_the_model(op, qt, x) -> None:
    model = MulNet(op, qt).eval()
    g = cosyn.lower(model, x[:2])
    assert [n.kind for n in g] == ["quantize", "shift", "mul", "shift" if op != "scaled" else
                                   "threshold"]  # fmt: skip
    m = g["mul"]
    assert m.inputs == ("a", "r") and m.dtype == IntType(10, True)  # i6 * u4
    assert m.scale == np.float32(2**-5 * 2**-4)
    want = model(x).detach().numpy()
    assert np.array_equal(g.run(x.numpy()), want)
    assert len(np.unique(g.run_int(g.quantize(x.numpy())))) > 8  # not a trivial output


def test_the_widest_exact_product_is_24_bits() -> None:
    """13-bit signed inputs: (-4096)**2 = 2**24 is the widest product float32 holds, and
    the graph's output (the product itself) is the model's; one more bit is refused
    (float32 would round the model's product, and the integers would not)."""
    x = torch.linspace(-64, 64, 301).reshape(-1, 1).repeat(1, 4)

    class Square(nn.Module):
        def __init__(self, bits: int) -> None:
            super().__init__()
            self.a, self.b = _id(bits, qt=False), _id(bits, qt=False)

        def forward(self, x):
            return self.a(x) * self.b(x)

    model = Square(13).eval()
    g = cosyn.lower(model, x[:2])
    assert g.output.kind == "mul" and g.output.dtype == IntType(26, True)
    assert int(g.run_int(g.quantize(x.numpy())).max()) == g.range("mul")[1][0] == 2**24
    assert np.array_equal(g.run(x.numpy()), model(x).numpy())
    with pytest.raises(UnsupportedLayerError, match=r"^mul \(call_function mul\): its product "
                       r"reaches 67108864 \(i28 integers\), beyond float32's 24-bit"):  # fmt: skip
        cosyn.lower(Square(14).eval(), x[:2])


class Int8ActConst(Int8ActPerTensorFloat):
    """A constant scale: 0.3 / 8 at 4 bits, not a power of two."""

    scaling_impl_type = ScalingImplType.CONST
    scaling_init = 0.3


class _Refused(nn.Module):
    def __init__(self, f, quant=Int8ActPow2) -> None:
        super().__init__()
        self.a, self.b, self.f = _id(4, quant=quant), _id(4, quant=quant), f

    def forward(self, x):
        return self.f(self, x)


REFUSED = [
    (lambda s, x: s.a(x) * s.b(x), Int8ActConst,
     r"^mul \(call_function mul\): the product of two values is exact in float32 only at "
     r"per-tensor power-of-two scales, not 0\.0375 and 0\.0375; use power-of-two scales \(a "
     r"\*Pow2 quantizer such as Int8ActPow2\) on both inputs$"),
    (lambda s, x: s.a(x) * x, Int8ActPow2,
     r"^mul \(call_function mul\) receives a value that is not quantized"),
    (lambda s, x: s.a(x) * s.b(torch.mean(s.a(x), (2, 3), keepdim=True)), Int8ActPow2,
     r"^mul \(call_function mul\): only the product of two values of one shape is supported, "
     r"not \(2, 2, 2\) and \(2, 1, 1\) \(broadcast\)"),
]  # fmt: skip


@pytest.mark.parametrize(("f", "quant", "message"), REFUSED)
def test_unsupported_is_refused_in_one_line(f, quant, message) -> None:
    with pytest.raises(UnsupportedLayerError, match=message) as e:
        cosyn.lower(_Refused(f, quant).eval(), torch.randn(2, 2, 2, 2))
    assert "\n" not in str(e.value)


def test_qonnx_gives_the_same_graph(x, tmp_path) -> None:
    from test_qonnx import assert_same_graph, export

    for op, qt in (("*", True), ("scaled", False)):  # Mul nodes of a value and a constant too
        model = MulNet(op, qt).eval()
        g = cosyn.lower(model, x[:2])
        h = cosyn.ir.from_qonnx(export(model, (6,), tmp_path / "m.onnx"))
        assert_same_graph(g, h)
        assert [n.kind for n in h].count("mul") == 1
        assert np.array_equal(h.run(x.numpy()), model(x).numpy())
    path = export(_Refused(REFUSED[0][0], Int8ActConst).eval(), (2, 2, 2), tmp_path / "r.onnx")
    message = r"node '/Mul' \(Mul\): the product of two values is exact in float32 only at"
    with pytest.raises(UnsupportedLayerError, match=message) as e:
        cosyn.ir.from_qonnx(path)
    assert "\n" not in str(e.value)


# -- the block and the pipeline ----------------------------------------------------------------


@pytest.mark.parametrize("case", range(3))
def test_block_follows_the_add_control_under_back_pressure(case) -> None:
    ta, tb = [(IntType(4, True), IntType(3, False)), (IntType(5, True), IntType(5, True)),
              (IntType(1, False), IntType(7, True))][case]  # fmt: skip
    shape = [(3, 2, 2), (7,), (2, 1, 3)][case]
    node = mul_node(shape, of(ta), of(tb))
    block = COMPONENTS[node.kind](node, Ctx((ta, tb), (shape, shape), "flat"))
    assert isinstance(block.cycles, AddTiming)
    rng = np.random.default_rng(case)
    n = 4 * int(np.prod(shape))
    xa, xb = rng.integers(ta.lo, ta.hi + 1, n), rng.integers(tb.lo, tb.hi + 1, n)
    xa[:2], xb[:2] = ta.lo, (tb.lo, tb.hi)  # the corners
    cycles = 6 * n + 100
    offers = [rng.random(cycles) >= 0.3, rng.random(cycles) >= 0.5]
    readies = rng.random(cycles) >= 0.4
    taken, outs, ys = sim_run(block, [block.a, block.b], [xa, xb], n, offers, readies)
    assert (taken, outs) == control_run(block.cycles.control(), [n, n], n, offers, readies)
    assert np.array_equal(ys, xa * xb)


class ConvMulNet(nn.Module):
    """An image times its own convolution: y = QuantIdentity(x); z = QuantReLU(conv(y));
    QuantLinear(flatten(QuantIdentity(y * z))). The product waits for the convolution: a
    fork, and a FIFO in front of its first input."""

    def __init__(self) -> None:
        super().__init__()
        self.a = _id(4)
        self.conv = qnn.QuantConv2d(2, 2, 3, padding=1, weight_quant=Int4WeightPow2, bias=False)
        self.r = qnn.QuantReLU(act_quant=Uint8ActPow2, bit_width=3, return_quant_tensor=True)
        self.o = _id(4, qt=False)
        self.fc = qnn.QuantLinear(2 * 3 * 3, 4, weight_quant=Int4WeightPow2, bias=False)

    def forward(self, x):
        y = self.a(x)
        return self.fc(torch.flatten(self.o(y * self.r(self.conv(y))), 1))


def test_pipeline_exact_with_its_timing(x) -> None:
    model = MulNet().eval()
    g = cosyn.lower(model, x[:2])
    xi = g.quantize(x.numpy())
    top = Top(plan(g))
    kinds = [s.kind for s in top.plan.stages]
    assert kinds.count("mul") == 1 and kinds.count("fork") == 1
    y, ins, outs = run_top(top, xi[:4])
    assert np.array_equal(y, g.run_int(xi[:4]))
    assert outs[0, 0] - ins[0, 0] == top.plan.latency
    assert np.diff(outs[:, 0])[-1] == top.plan.interval
    y, _, _ = run_top(top, xi[4:10], gaps=0.3, stalls=0.5, seed=4)
    assert np.array_equal(y, g.run_int(xi[4:10]))


def test_image_pipeline_exact_with_its_timing() -> None:
    torch.manual_seed(1)
    model, x = ConvMulNet().eval(), torch.randn(16, 2, 3, 3)
    g = cosyn.lower(model, x[:2])
    assert np.array_equal(g.run(x.numpy()), model(x).detach().numpy())
    xi = g.quantize(x.numpy())
    top = Top(plan(g))
    assert [s.kind for s in top.plan.stages].count("fifo") == 1  # the product's first input
    y, ins, outs = run_top(top, xi[:3])
    assert np.array_equal(y, g.run_int(xi[:3]))
    assert outs[0, 0] - ins[0, 0] == top.plan.latency
    assert np.diff(outs[:, 0])[-1] == top.plan.interval


def test_resources_and_estimate() -> None:
    t = IntType(9, True)
    node = mul_node((5,), of(t), of(t))
    node.inputs = ("x", "x")  # a square, through a fork
    g = Graph([N.Quantize("x", (), (5,), t, ONE), node])
    g.check()
    stage = next(s for s in plan(g).stages if s.kind == "mul")
    prims = primitives(stage)
    assert node.dtype == IntType(18, True)  # [-256 * 255, 2**16]
    assert prims.kind == "mul" and prims.mults == [(9, 9)] and prims.reg_bits == 18 + 1
    assert stage.parallelism == 1 and g.macs == 5
    est = cosyn.perfmodel.estimate(g, "ecp5-85f")
    assert (est.latency, est.interval) == (2, 5)  # the fork's cycle, then the product's
    mul = next(n for n in est.nodes if n.kind == "mul")
    assert mul.dsp == est.dsp == 1  # 9 x 9 reaches ECP5's multiplier blocks


# -- generated hardware ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
def test_hls_csim_exact(io_type, x, tmp_path) -> None:
    """hls4ml's Multiply merge layer, its result in the node's type."""
    from cosyn.hw.hls import generate

    g = cosyn.lower(MulNet().eval(), x[:2])
    xi = g.quantize(x.numpy())
    h = generate(g, tmp_path / "hls", io_type=io_type)
    assert np.array_equal(h.predict_int(xi), g.run_int(xi))


@pytest.mark.slow
def test_cocotb_icarus_exact_with_the_manifest_timing(tmp_path) -> None:
    from cosyn.hw.rtl._verilog import component_verilog, lint
    from cosyn.sim import simulate

    torch.manual_seed(1)
    g = cosyn.lower(ConvMulNet().eval(), torch.randn(2, 2, 3, 3))
    d = cosyn.rtl.generate(g, tmp_path / "rtl")
    x = np.random.default_rng(2).normal(size=(4, 2, 3, 3)).astype(np.float32)
    r = simulate(d, x, simulator="icarus", backpressure=True)
    assert (r.mismatches, r.lost, r.duplicated, r.protocol_errors) == (0, 0, 0, 0), r
    assert np.array_equal(r.outputs, g.run_int(g.quantize(x)))
    assert (r.latency, r.interval) == (d.manifest["latency"], d.manifest["interval"])
    ta, tb = IntType(4, True), IntType(3, False)
    block = COMPONENTS["mul"](mul_node((3,), of(ta), of(tb)), Ctx((ta, tb), ((3,), (3,))))
    (tmp_path / "mul").mkdir()
    path = tmp_path / "mul" / "top.v"
    path.write_text(component_verilog(block, "mul"))
    assert lint(path) == ""
