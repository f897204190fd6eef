"""Channel concatenation and label select end to end: the Concat and LabelSelect nodes'
golden eval equals torch (torch.cat; torch.argmax, and torch.topk's indices, ties in index
order, see below); a plain Brevitas network with a channel concatenation of two scales and
an argmax or top-k head lowers exactly through cosyn.lower and from_qonnx alike; each RTL
block follows its control (`perfmodel.concat`, `perfmodel.labelselect`) under gaps and
back-pressure, and its closed forms and shortcuts equal the control; the pipeline, one
small cocotb run and hls4ml's C simulation are exact, with the manifest's cycles.

Ties: torch.argmax gives the first maximal index (documented); torch.topk's order among
equal values is not specified and, on the CPU, follows its selection algorithm
([-1, 0, 3, 3, 0] with k=1 gives 3, argmax 2). The LabelSelect node puts equal values in
index order, as argmax and `torch.sort(stable=True, descending=True)` do: equal to
torch.topk's indices wherever its values leave no tie to break, and its values always
torch.topk's."""

from __future__ import annotations

import brevitas.nn as qnn
import numpy as np
import pytest
import torch
from cosyn.hw.rtl import COMPONENTS, Ctx, Top
from cosyn.hw.rtl._tb import run_top
from cosyn.models.quant import Int4WeightPow2, Int8ActPow2, Uint8ActPow2
from cosyn.perfmodel.blocks import drive
from cosyn.perfmodel.concat import ConcatTiming
from cosyn.perfmodel.labelselect import LabelSelectTiming
from cosyn.perfmodel.pipeline import plan, stream_index
from cosyn.perfmodel.resources import primitives
from hypothesis import given, settings
from hypothesis import strategies as st
from test_perfmodel_timing import _arrivals, _check_quiet
from test_rtl_units import control_run, sim_run
from torch import nn

import cosyn
from cosyn.errors import UnsupportedLayerError
from cosyn.ir import nodes as N
from cosyn.ir.graph import Graph
from cosyn.ir.kinds.concat import Concat
from cosyn.ir.kinds.labelselect import LabelSelect
from cosyn.ir.nodes import IntType

ONE = np.float32(1.0)


def concat_node(a: tuple, b: tuple, ta: IntType, tb: IntType, name="cat") -> Concat:
    ranges = [(np.array([t.lo]), np.array([t.hi])) for t in (ta, tb)]
    shape = (a[0] + b[0], *a[1:])
    return Concat.sized(ranges, name=name, inputs=("x", "y"), shape=shape, scale=ONE,
                          split=a[0])  # fmt: skip


def select_node(n: int, k: int, t: IntType, name="sel", src="x") -> LabelSelect:
    r = (np.array([t.lo]), np.array([t.hi]))
    return LabelSelect.sized([r], name=name, inputs=(src,), shape=(k,), scale=ONE, k=k, n=n)


# -- the nodes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [((3, 4, 5), (2, 4, 5)), ((1, 1, 7), (4, 1, 7)), ((5,), (9,))])
def test_concat_eval_and_range(a, b) -> None:
    ta, tb = IntType(3, False), IntType(5, True)
    node = concat_node(a, b, ta, tb)
    rng = np.random.default_rng(0)
    xa, xb = rng.integers(ta.lo, ta.hi + 1, (4, *a)), rng.integers(tb.lo, tb.hi + 1, (4, *b))
    want = torch.cat([torch.from_numpy(xa), torch.from_numpy(xb)], dim=1)
    assert np.array_equal(node.eval(xa, xb), want.numpy())
    assert node.infer_shape(a, b) == tuple(want.shape[1:]) == node.shape
    lo, hi = node.infer_range(
        (np.array([ta.lo]), np.array([ta.hi])), (np.array([tb.lo]), np.array([tb.hi]))
    )
    assert (lo.tolist(), hi.tolist()) == ([0] * a[0] + [-16] * b[0], [7] * a[0] + [15] * b[0])
    assert node.dtype == IntType(5, True)
    with pytest.raises(ValueError, match="differ beyond the channel axis"):
        node.infer_shape(a, (b[0], *(d + 1 for d in b[1:]))) if len(b) > 1 else node.infer_shape(
            a, (1, 2)
        )


@pytest.mark.parametrize("k", [1, 2, 5])
def test_label_select_eval_is_argmax_and_stable_topk(k) -> None:
    t = IntType(3, True)
    node = select_node(9, k, t)
    x = np.random.default_rng(k).integers(-2, 3, (300, 9))  # many ties
    got = node.eval(x)
    assert node.dtype == IntType(4, False) and node.shape == (k,)
    xt = torch.from_numpy(x)
    if k == 1:
        assert np.array_equal(got[:, 0], torch.argmax(xt, 1).numpy())
    stable = torch.sort(xt, dim=1, descending=True, stable=True).indices[:, :k]
    assert np.array_equal(got, stable.numpy())
    top = torch.topk(xt, k, dim=1)
    assert np.array_equal(np.take_along_axis(x, got, 1), top.values.numpy())  # the values
    distinct = np.random.default_rng(9).permutation(900).reshape(100, 9) - 450
    assert np.array_equal(node.eval(distinct), torch.topk(torch.from_numpy(distinct), k).indices)
    with pytest.raises(ValueError, match="must be 1 to 9"):
        LabelSelect("s", ("x",), (10,), IntType(4, False), ONE, k=10, n=9).infer_shape((9,))


# -- the frontends -----------------------------------------------------------------------------


def _act(bits: int, signed: bool = True, qt: bool = True) -> nn.Module:
    cls, quant = (qnn.QuantIdentity, Int8ActPow2) if signed else (qnn.QuantReLU, Uint8ActPow2)
    return cls(act_quant=quant, bit_width=bits, return_quant_tensor=qt)


class CatNet(nn.Module):
    """QuantIdentity -> two QuantConv2d branches (3 unsigned 3-bit channels at one scale, 2
    signed 5-bit ones at another) -> torch.cat(dim=1) -> QuantIdentity -> flatten ->
    QuantLinear -> `head` (argmax, topk indices, or none). Power-of-two scales: exact."""

    def __init__(self, head: str | None = "argmax", qt: bool = False) -> None:
        super().__init__()
        self.head = head
        self.inp = _act(4)
        conv = dict(weight_quant=Int4WeightPow2, bias=False, return_quant_tensor=True)
        self.c1 = qnn.QuantConv2d(2, 3, 3, padding=1, **conv)
        self.a1 = _act(3, signed=False, qt=qt)
        self.c2 = qnn.QuantConv2d(2, 2, 1, **conv)
        self.a2 = _act(3, signed=False, qt=qt) if qt else _act(5)
        self.a3 = _act(4)
        self.fc = qnn.QuantLinear(5 * 4 * 4, 6, weight_quant=Int4WeightPow2, bias=False)

    def forward(self, x):
        x = self.inp(x)
        y = torch.cat([self.a1(self.c1(x)), self.a2(self.c2(x))], dim=1)
        y = self.fc(torch.flatten(self.a3(y), 1))
        if self.head == "topk":
            return torch.topk(y, 3).indices
        if self.head == "argmax":
            return torch.argmax(y, 1)
        return y


@pytest.fixture(scope="module")
def cat_input() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(64, 2, 4, 4)


@pytest.fixture(scope="module")
def cat_net(cat_input) -> tuple[Graph, np.ndarray]:
    torch.manual_seed(0)
    model = CatNet("argmax").eval()
    g = cosyn.lower(model, cat_input[:2])
    return g, g.quantize(cat_input.numpy())


def test_lowering_equals_the_model(cat_input) -> None:
    torch.manual_seed(0)
    model = CatNet(None).eval()
    x = cat_input
    g = cosyn.lower(model, x[:2])
    cat = next(n for n in g if isinstance(n, Concat))
    assert cat.shape == (5, 4, 4) and cat.split == 3 and cat.dtype == IntType(5, True)
    assert cat.scale.reshape(-1).tolist() == [2**-3] * 3 + [2**-4] * 2  # each its own scale
    logits = model(x).detach()
    assert np.array_equal(g.run(x.numpy()), logits.numpy())
    stable = torch.sort(logits, dim=1, descending=True, stable=True).indices
    for head, want in [("argmax", torch.argmax(logits, 1)), ("topk", stable[:, :3])]:
        model.head = head
        h = cosyn.lower(model, x[:2])
        y = h.run(x.numpy())
        assert y.dtype == np.int64 and np.array_equal(y, want.numpy())
        assert h.output.kind == "labelselect" and h.output.dtype == IntType(3, False)
        if head == "argmax":
            assert np.array_equal(y, model(x).numpy())


def test_quant_tensors_of_one_scale_concatenate(cat_input) -> None:
    """Brevitas concatenates QuantTensors of equal scales (and refuses others itself)."""
    torch.manual_seed(0)
    model = CatNet("argmax", qt=True).eval()
    g = cosyn.lower(model, cat_input[:2])
    assert np.array_equal(g.run(cat_input.numpy()), model(cat_input).numpy())


class _Refused(nn.Module):
    def __init__(self, f) -> None:
        super().__init__()
        self.inp, self.fc, self.f = _act(4), qnn.QuantLinear(4, 3, bias=True), f

    def forward(self, x):
        return self.f(self, self.inp(x))


REFUSED = [
    (lambda s, y: torch.cat([y, y], dim=0),
     r"^cat \(call_function cat\): only the concatenation of two or more values along the "
     r"channels \(dim=1\)"),
    (lambda s, y: torch.argmax(s.fc(y), 1),
     r"^argmax \(call_function argmax\): its input has a float bias"),
    (lambda s, y: torch.argmax(y),
     r"^argmax \(call_function argmax\): only the argmax over the features"),
    (lambda s, y: torch.topk(y, 2).values,
     r"^getattr_1 \(call_function getattr\): of a torch.topk only its indices"),
    (lambda s, y: torch.topk(y, 2, largest=False).indices,
     r"^topk \(call_function topk\): only torch.topk of a constant k, largest=True"),
]  # fmt: skip


@pytest.mark.parametrize(("f", "message"), REFUSED)
def test_unsupported_is_refused_in_one_line(f, message) -> None:
    with pytest.raises(UnsupportedLayerError, match=message) as e:
        cosyn.lower(_Refused(f).eval(), torch.randn(2, 4))
    assert "\n" not in str(e.value)


# -- the blocks --------------------------------------------------------------------------------


CONCAT_BLOCKS = [
    ((3, 2, 3), (2, 2, 3)),
    ((1, 1, 4), (1, 1, 4)),
    ((4,), (7,)),
    ((2, 3, 1), (5, 3, 1)),
]


@pytest.mark.parametrize("case", range(len(CONCAT_BLOCKS)))
def test_concat_block_follows_its_control_under_back_pressure(case) -> None:
    a, b = CONCAT_BLOCKS[case]
    ta, tb = IntType(3, False), IntType(4, True)
    node = concat_node(a, b, ta, tb)
    order = "hwc" if len(a) == 3 else "flat"
    block = COMPONENTS[node.kind](node, Ctx((ta, tb), (a, b), order))
    rng = np.random.default_rng(case)
    samples = 3
    xa = rng.integers(ta.lo, ta.hi + 1, (samples, *a))
    xb = rng.integers(tb.lo, tb.hi + 1, (samples, *b))
    va = xa.reshape(samples, -1)[:, stream_index(a, order)].reshape(-1)
    vb = xb.reshape(samples, -1)[:, stream_index(b, order)].reshape(-1)
    n_out = samples * int(np.prod(node.shape))
    cycles = 6 * n_out + 100
    offers = [rng.random(cycles) >= 0.3, rng.random(cycles) >= 0.5]
    readies = rng.random(cycles) >= 0.4
    taken, outs, ys = sim_run(block, [block.a, block.b], [va, vb], n_out, offers, readies)
    ctl = block.cycles.control()
    assert (taken, outs) == control_run(ctl, [len(va), len(vb)], n_out, offers, readies)
    y = np.asarray(ys).reshape(samples, -1)[:, np.argsort(stream_index(node.shape, order))]
    assert np.array_equal(y.reshape(samples, *node.shape), node.eval(xa, xb))


@pytest.mark.parametrize(("n", "k"), [(6, 1), (5, 3), (4, 4), (1, 1)])
def test_label_select_block_follows_its_control_under_back_pressure(n, k) -> None:
    t = IntType(3, True)
    node = select_node(n, k, t)
    block = COMPONENTS[node.kind](node, Ctx((t,), ((n,),)))
    rng = np.random.default_rng(n + k)
    samples = 40
    x = rng.integers(-2, 3, (samples, n))  # many ties
    x[0], x[1] = t.lo, t.hi
    n_out, cycles = samples * k, 8 * samples * (n + k) + 100
    offers, readies = [rng.random(cycles) >= 0.3], rng.random(cycles) >= 0.4
    taken, outs, ys = sim_run(block, [block.i], [x.reshape(-1)], n_out, offers, readies)
    assert (taken, outs) == control_run(block.cycles.control(), [x.size], n_out, offers, readies)
    assert np.array_equal(np.asarray(ys).reshape(samples, k), node.eval(x))


@st.composite
def concat_timings(draw) -> ConcatTiming:
    return ConcatTiming(draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 5)))


@settings(max_examples=40, deadline=None)
@given(concat_timings(), st.data())
def test_concat_closed_forms_and_shortcuts_equal_the_control(timing, data) -> None:
    n_a, n_b = timing.pixels * timing.c1, timing.pixels * timing.c2
    arr = [_arrivals(data, n_a), _arrivals(data, n_b)]
    taken, (outs,) = drive(timing, arr, timing.elements)
    assert np.array_equal(outs, timing.timing(*arr))
    for got, want in zip(taken, timing.transfers(*arr), strict=True):
        assert np.array_equal(got, want)
    full = [np.zeros(4 * n_a, np.int64), np.zeros(4 * n_b, np.int64)]
    taken, (outs,) = drive(timing, full, 4 * timing.elements)
    assert outs[0] - min(taken[0][0], taken[1][0]) == timing.latency
    assert set(np.diff(outs[:: timing.elements]).tolist()) == {timing.interval}
    _check_quiet(timing, data)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.data())
def test_label_select_closed_forms_and_shortcuts_equal_the_control(n, data) -> None:
    timing = LabelSelectTiming(n, data.draw(st.integers(1, n)))
    arr = _arrivals(data, n)
    (taken,), (outs,) = drive(timing, [arr], timing.k)
    assert np.array_equal(outs, timing.timing(arr))
    assert np.array_equal(taken, timing.transfers(arr)[0])
    (taken,), (outs,) = drive(timing, [np.zeros(5 * n, np.int64)], 5 * timing.k)
    assert outs[0] - taken[0] == timing.latency
    assert set(np.diff(outs[:: timing.k]).tolist()) == {timing.interval}
    _check_quiet(timing, data)


def test_resources_are_counted() -> None:
    t = IntType(4, True)
    cat = concat_node((3, 2, 2), (3, 2, 2), t, t)
    cat.inputs = ("x", "x")  # through a fork, and a FIFO in front of the second input
    g = Graph([N.Quantize("x", (), (3, 2, 2), t, ONE), cat])
    g.check()
    stage = next(s for s in plan(g).stages if s.kind == "concat")
    prims = primitives(stage)
    assert prims.kind == "concat" and prims.reg_bits >= 4 + 1 and prims.mux_bits >= 4
    g = Graph([N.Quantize("x", (), (7,), t, ONE), select_node(7, 2, t)])
    g.check()
    prims = primitives(plan(g).stages[0])
    assert prims.kind == "labelselect" and prims.add_bits >= 2 * 4 and prims.reg_bits > 0
    est = cosyn.perfmodel.estimate(g, "ecp5-85f")
    assert est.interval == 7 and est.latency == 7


# -- in a pipeline -----------------------------------------------------------------------------


def test_pipeline_exact_with_its_timing(cat_net) -> None:
    g, xi = cat_net
    top = Top(plan(g))
    assert [s.kind for s in top.plan.stages].count("fifo") == 1  # the second input's
    y, ins, outs = run_top(top, xi[:3])
    assert np.array_equal(y, g.run_int(xi[:3]))
    assert outs[0, 0] - ins[0, 0] == top.plan.latency
    assert np.diff(outs[:, 0])[-1] == top.plan.interval
    y, _, _ = run_top(Top(plan(g, 1)), xi[3:5], gaps=0.3, stalls=0.5, seed=4)
    assert np.array_equal(y, g.run_int(xi[3:5]))


class FlatCatNet(nn.Module):
    """Two QuantLinear branches of one input, concatenated (dim=1), then a QuantLinear and
    an argmax (keepdim): a flat concat behind a fork, in index order."""

    def __init__(self) -> None:
        super().__init__()
        lin = dict(weight_quant=Int4WeightPow2, bias=False, return_quant_tensor=True)
        self.inp, self.a1, self.a2, self.a3 = _act(4), _act(4), _act(3, signed=False), _act(4)
        self.fc1, self.fc2 = qnn.QuantLinear(6, 4, **lin), qnn.QuantLinear(6, 3, **lin)
        self.fc3 = qnn.QuantLinear(7, 5, weight_quant=Int4WeightPow2, bias=False)

    def forward(self, x):
        x = self.inp(x)
        y = torch.concat((self.a1(self.fc1(x)), self.a2(self.fc2(x))), 1)
        return self.fc3(self.a3(y)).argmax(dim=-1, keepdim=True)


def test_flat_concat_pipeline_exact_with_its_timing() -> None:
    torch.manual_seed(3)
    model, x = FlatCatNet().eval(), torch.randn(32, 6)
    g = cosyn.lower(model, x[:2])
    assert [n.kind for n in g].count("concat") == 1
    assert np.array_equal(g.run(x.numpy()), model(x).numpy())
    xi = g.quantize(x.numpy())
    top = Top(plan(g))
    y, ins, outs = run_top(top, xi[:4])
    assert np.array_equal(y, g.run_int(xi[:4]))
    assert outs[0, 0] - ins[0, 0] == top.plan.latency
    assert np.diff(outs[:, 0])[-1] == top.plan.interval


def test_qonnx_gives_the_same_graph(cat_input, tmp_path) -> None:
    from test_qonnx import assert_same_graph, export

    for head in ("argmax", "topk"):
        torch.manual_seed(0)
        model = CatNet(head).eval()
        g = cosyn.lower(model, cat_input[:2])
        h = cosyn.ir.from_qonnx(export(model, (2, 4, 4), tmp_path / f"{head}.onnx"))
        assert_same_graph(g, h)
        last = "ArgMax" if head == "argmax" else "TopK"
        assert [n.name for n in h][-3:] == ["Flatten", "fc_MatMul", last]
        assert np.array_equal(h.run(cat_input.numpy()), g.run(cat_input.numpy()))


def test_cocotb_icarus_exact_with_the_manifest_timing(cat_net, tmp_path) -> None:
    from cosyn.sim import simulate

    g, _ = cat_net
    d = cosyn.rtl.generate(g, tmp_path / "rtl")
    x = np.random.default_rng(2).normal(size=(4, 2, 4, 4)).astype(np.float32)
    r = simulate(d, x, simulator="icarus", backpressure=True)
    assert (r.mismatches, r.lost, r.duplicated, r.protocol_errors) == (0, 0, 0, 0), r
    assert np.array_equal(r.outputs, g.run_int(g.quantize(x)))
    assert (r.latency, r.interval) == (d.manifest["latency"], d.manifest["interval"])


def test_hls_csim_exact(cat_input, tmp_path) -> None:
    """hls4ml's Concatenate and the CosynLabelSelect extension, io_stream (io_parallel too,
    by hand: 23 s)."""
    from cosyn.hw.hls import generate

    torch.manual_seed(0)
    g = cosyn.lower(CatNet("topk").eval(), cat_input[:2])
    xi = g.quantize(cat_input.numpy())
    h = generate(g, tmp_path / "hls", io_type="io_stream")
    assert np.array_equal(h.predict_int(xi), g.run_int(xi))


@pytest.mark.slow
def test_blocks_verilog_lints_clean(tmp_path) -> None:
    from cosyn.hw.rtl._verilog import component_verilog, lint

    ta, tb, t = IntType(3, False), IntType(4, True), IntType(5, True)
    cat = concat_node((3, 2, 2), (2, 2, 2), ta, tb)
    blocks = {
        "concat": COMPONENTS["concat"](cat, Ctx((ta, tb), ((3, 2, 2), (2, 2, 2)), "hwc")),
        "argmax": COMPONENTS["labelselect"](select_node(10, 1, t), Ctx((t,), ((10,),))),
        "topk": COMPONENTS["labelselect"](select_node(7, 3, t), Ctx((t,), ((7,),))),
    }
    for name, block in blocks.items():
        (tmp_path / name).mkdir()
        path = tmp_path / name / "top.v"
        path.write_text(component_verilog(block, name))
        assert lint(path) == "", name


def test_rtl_refuses_flattened_inputs_naming_the_node(tmp_path) -> None:
    """The RTL streams a flattened image in HWC order: a concat with one flattened input is
    refused by the pipeline, two by the block, a label select of one by the block."""
    t = IntType(4, True)
    x = N.Quantize("x", (), (2, 2, 2), t, ONE)
    f = N.Flatten("f", ("x",), (8,), t, ONE)
    d = N.Dense.sized([(np.array([t.lo]), np.array([t.hi]))], name="d", inputs=("f",),
                      shape=(3,), scale=ONE, weight=np.ones((3, 8), np.int64),
                      bias=np.zeros(3, np.int64))  # fmt: skip
    cases = [
        (["f", "d"], r"^cat: its inputs stream in different orders"),
        (["f", "f"], r"^cat: the RTL concat block reads flat inputs in index order"),
    ]
    for ins, message in cases:
        cat = concat_node((8,), (3 if ins[1] == "d" else 8,), t, d.dtype)
        cat.inputs = tuple(ins)
        g = Graph([x, f, d, cat] if "d" in ins else [x, f, cat])
        with pytest.raises(UnsupportedLayerError, match=message):
            cosyn.rtl.generate(g, tmp_path / "rtl")
    g = Graph([x, f, select_node(8, 2, t, src="f")])
    with pytest.raises(UnsupportedLayerError, match=r"^sel: the RTL label select reads a flat"):
        cosyn.rtl.generate(g, tmp_path / "rtl")
    assert not (tmp_path / "rtl").exists()
