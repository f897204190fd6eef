"""Node kinds: each registered kind's range and shape inference, and graph validation.

`CASES` draws a random node of each kind with input ranges; a test fails when a kind
in cosyn.ir.nodes has no entry, so a new kind is tested as soon as it is defined.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cosyn.models.intops import gelu_spec, layernorm_spec, softmax_spec
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cosyn.errors import BitWidthError, GraphError
from cosyn.ir import nodes as N
from cosyn.ir.chain import Binary
from cosyn.ir.graph import Graph
from cosyn.ir.intervals import Range, as_range
from cosyn.ir.kinds.attention import Attention
from cosyn.ir.kinds.concat import Concat
from cosyn.ir.kinds.embed import Embed, Token
from cosyn.ir.kinds.gelu import Gelu
from cosyn.ir.kinds.labelselect import LabelSelect
from cosyn.ir.kinds.layernorm import LayerNorm
from cosyn.ir.kinds.mul import Mul
from cosyn.report import graph_table

ONE = np.float32(1.0)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
LIBRARY = sorted(  # cosyn's own kinds: in cosyn.ir.nodes, or a module of cosyn.ir.kinds
    k for k, c in N.KINDS.items() if c.__module__.startswith(("cosyn.ir.nodes", "cosyn.ir.kinds."))
)


@dataclass
class Case:
    """A node, and the shapes and ranges of its inputs (named in0, in1, ...)."""

    node: N.Node
    shapes: list[tuple[int, ...]]
    ranges: list[Range]


def full(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A per-tensor or per-channel vector broadcast to a sample of `shape`."""
    if shape == ():
        return a.reshape(())
    return np.broadcast_to(a.reshape((-1,) + (1,) * (len(shape) - 1)), shape)


@st.composite
def shapes(draw, flat: bool | None = None) -> tuple[int, ...]:
    if flat if flat is not None else draw(st.booleans()):
        return (draw(st.integers(1, 6)),)
    return (draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 5)))


@st.composite
def ranges(draw, shape: tuple[int, ...], bits: int = 10) -> Range:
    """Per-tensor or per-channel bounds, of spans from 0 (a constant) to 2**bits."""
    n = draw(st.sampled_from([1, shape[0]]))
    ints = st.lists(st.integers(-(2**bits), 2**bits), min_size=n, max_size=n)
    spans = st.lists(st.integers(0, 2**bits), min_size=n, max_size=n)
    lo = np.array(draw(ints))
    return as_range(lo, lo + np.array(draw(spans)))


def rng(draw) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


def per_channel(draw, shape: tuple[int, ...]) -> int:
    return draw(st.sampled_from([1, shape[0]]))


@st.composite
def quantize(draw) -> Case:
    t = N.IntType(draw(st.integers(1, 8)), draw(st.booleans()))
    steps = draw(st.integers(0, t.hi - t.lo))
    base = draw(st.integers(t.lo, t.hi - steps))
    thr = np.sort(rng(draw).normal(0, 10, steps).astype(np.float32))
    return Case(N.Quantize("q", (), draw(shapes()), t, ONE, thr, base), [], [])


@st.composite
def dense(draw) -> Case:
    (i,) = shape = draw(shapes(flat=True))
    r, g = draw(ranges(shape)), rng(draw)
    o = draw(st.integers(1, 6))
    w, b = g.integers(-128, 128, (o, i)), g.integers(-1024, 1025, o)
    node = N.Dense.sized([r], name="d", inputs=("in0",), shape=(o,), scale=ONE, weight=w, bias=b)
    return Case(node, [shape], [r])


@st.composite
def conv2d(draw) -> Case:
    shape = draw(shapes(flat=False))
    r, g = draw(ranges(shape)), rng(draw)
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pad = (draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)))
    assume(shape[1] + 2 * pad[0] >= kh and shape[2] + 2 * pad[1] >= kw)
    o = draw(st.integers(1, 4))
    w, b = g.integers(-128, 128, (o, shape[0], kh, kw)), g.integers(-1024, 1025, o)
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    common = dict(name="c", inputs=("in0",), scale=ONE, weight=w, bias=b, stride=stride,
                  padding=pad)  # fmt: skip
    out = N.Conv2d(shape=(), dtype=N.IntType(1, False), **common).infer_shape(shape)
    return Case(N.Conv2d.sized([r], shape=out, **common), [shape], [r])


@st.composite
def maxpool2d(draw) -> Case:
    shape = draw(shapes(flat=False))
    r = draw(ranges(shape))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pad = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    assume(shape[1] + 2 * pad[0] >= kh and shape[2] + 2 * pad[1] >= kw)
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    common = dict(name="m", inputs=("in0",), scale=ONE, kernel=(kh, kw), stride=stride,
                  padding=pad)  # fmt: skip
    out = N.MaxPool2d(shape=(), dtype=N.IntType(1, False), **common).infer_shape(shape)
    return Case(N.MaxPool2d.sized([r], shape=out, **common), [shape], [r])


@st.composite
def avgpool2d(draw, padded: bool = True) -> Case:
    shape = draw(shapes(flat=False))
    r = draw(ranges(shape))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pad = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))) if padded else (0, 0)
    assume(shape[1] + 2 * pad[0] >= kh and shape[2] + 2 * pad[1] >= kw)
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    common = dict(name="a", inputs=("in0",), scale=ONE, kernel=(kh, kw), stride=stride,
                  padding=pad)  # fmt: skip
    out = N.AvgPool2d(shape=(), dtype=N.IntType(1, False), **common).infer_shape(shape)
    return Case(N.AvgPool2d.sized([r], shape=out, **common), [shape], [r])


@st.composite
def shift(draw) -> Case:
    shape = draw(shapes())
    r, g = draw(ranges(shape)), rng(draw)
    c = per_channel(draw, shape)
    lo = g.integers(-200, 100, c)
    node = N.Shift.sized(
        [r], name="s", inputs=("in0",), shape=shape, scale=ONE, shift=g.integers(-3, 9, c),
        rounding=draw(st.sampled_from(["half_even", "floor"])), lo=lo,
        hi=lo + g.integers(0, 300, c),
    )  # fmt: skip
    return Case(node, [shape], [r])


@st.composite
def threshold(draw) -> Case:
    shape = draw(shapes())
    r, g = draw(ranges(shape)), rng(draw)
    c, steps = per_channel(draw, shape), draw(st.integers(0, 8))
    t = np.sort(g.integers(r[0].min() - 2, r[1].max() + 3, (c, steps)), axis=1)
    node = N.Threshold.sized(
        [r], name="t", inputs=("in0",), shape=shape, scale=ONE, thresholds=t,
        base=g.integers(-8, 9, c), sign=np.where(g.random(c) < 0.5, -1, 1),
    )  # fmt: skip
    return Case(node, [shape], [r])


@st.composite
def add(draw) -> Case:
    shape = draw(shapes())
    ra, rb = draw(ranges(shape)), draw(ranges(shape))
    s = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    node = N.Add.sized([ra, rb], name="a", inputs=("in0", "in1"), shape=shape, scale=ONE, shifts=s)
    return Case(node, [shape, shape], [ra, rb])


@st.composite
def poly(draw) -> Case:
    shape = draw(shapes())
    r, g = draw(ranges(shape, bits=8)), rng(draw)
    coeffs = g.integers(-32, 33, (per_channel(draw, shape), draw(st.integers(1, 4))))
    node = N.Poly.sized([r], name="p", inputs=("in0",), shape=shape, scale=ONE, coeffs=coeffs)
    return Case(node, [shape], [r])


@st.composite
def flatten(draw) -> Case:
    shape = draw(shapes())
    r = draw(ranges(shape))
    size = (int(np.prod(shape)),)
    node = N.Flatten.sized([r], name="f", inputs=("in0",), shape=size, scale=ONE)
    return Case(node, [shape], [r])


@st.composite
def concat(draw) -> Case:
    a = draw(shapes())
    b = (draw(st.integers(1, 4)), *a[1:])
    ra, rb = draw(ranges(a)), draw(ranges(b))
    shape = (a[0] + b[0], *a[1:])
    node = Concat.sized([ra, rb], name="c", inputs=("in0", "in1"), shape=shape, scale=ONE,
                          split=a[0])  # fmt: skip
    return Case(node, [a, b], [ra, rb])


@st.composite
def labelselect(draw) -> Case:
    shape = draw(shapes(flat=True))
    r, k = draw(ranges(shape)), draw(st.integers(1, shape[0]))
    node = LabelSelect.sized([r], name="l", inputs=("in0",), shape=(k,), scale=ONE, k=k,
                               n=shape[0])  # fmt: skip
    return Case(node, [shape], [r])


@st.composite
def mul(draw) -> Case:
    shape = draw(shapes())
    ra, rb = draw(ranges(shape)), draw(ranges(shape))
    node = Mul.sized([ra, rb], name="m", inputs=("in0", "in1"), shape=shape, scale=ONE)
    return Case(node, [shape, shape], [ra, rb])


@st.composite
def signed(draw, shape: tuple[int, ...], bits: int) -> Range:
    """Per-tensor or per-channel bounds inside the signed `bits` range."""
    n, top = per_channel(draw, shape), 1 << (bits - 1)
    ends = [sorted(draw(st.lists(st.integers(-top, top - 1), min_size=2, max_size=2)))
            for _ in range(n)]  # fmt: skip
    return as_range(*np.array(ends).T)


@st.composite
def embed(draw) -> Case:
    f, g = draw(st.integers(1, 5)), rng(draw)
    vocab, start = draw(st.integers(1, 12)), draw(st.sampled_from([None, 0]))
    tokens, positions = g.integers(-64, 64, (vocab, f)), g.integers(-64, 64, (50, f))
    r = as_range(0, vocab - 1)
    node = Embed.sized([r], name="e", inputs=("in0",), shape=(f,), scale=ONE, tokens=tokens,
                       positions=positions, start=start)  # fmt: skip
    return Case(node, [()], [r])


@st.composite
def token(draw) -> Case:
    shape = draw(shapes())
    r = draw(ranges(shape))
    node = Token.sized([r], name="t", inputs=("in0",), shape=shape, scale=ONE,
                       index=draw(st.integers(0, 47)))  # fmt: skip
    return Case(node, [shape], [r])


@st.composite
def layernorm(draw) -> Case:
    f, bits, g = draw(st.integers(1, 6)), draw(st.integers(2, 10)), rng(draw)
    spec = layernorm_spec(f, in_bits=bits, out_bits=draw(st.integers(2, 10)))
    r = draw(signed((f,), bits))
    gamma = g.integers(-(1 << (spec.gamma_bits - 1)), 1 << (spec.gamma_bits - 1), f)
    beta = g.integers(-(1 << 12), 1 << 12, f)
    node = LayerNorm.sized([r], name="n", inputs=("in0",), shape=(f,), scale=ONE, gamma=gamma,
                           beta=beta, spec=spec)  # fmt: skip
    return Case(node, [(f,)], [r])


@st.composite
def gelu(draw) -> Case:
    shape, bits = draw(shapes()), draw(st.integers(3, 10))
    spec = gelu_spec(2.0 ** -draw(st.integers(2, bits)), in_bits=bits)
    r = draw(signed(shape, bits))
    return Case(Gelu.sized([r], name="g", inputs=("in0",), shape=shape, scale=ONE, spec=spec),
                [shape], [r])  # fmt: skip


@st.composite
def attention(draw) -> Case:
    heads, dh, bits = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(3, 8))
    shape = (heads * dh,)
    r = [draw(signed(shape, bits)) for _ in "qkv"]
    spec = softmax_spec(2.0 ** -(2 * bits - 2) / dh**0.5, 64, draw(st.integers(4, 10)))
    node = Attention.sized(
        r, name="att", inputs=("in0", "in1", "in2"), shape=shape, scale=ONE, heads=heads,
        pattern=draw(st.sampled_from(["dense", "window", "topk"])),
        window=draw(st.integers(0, 4)), n_global=draw(st.integers(0, 2)),
        k=draw(st.integers(1, 8)), act_bits=bits, rank_bits=draw(st.integers(2, bits)),
        max_len=64, spec=spec,
    )  # fmt: skip
    return Case(node, [shape] * 3, r)


CASES = {
    N.Quantize: quantize(),
    N.Dense: dense(),
    N.Conv2d: conv2d(),
    N.MaxPool2d: maxpool2d(),
    N.AvgPool2d: avgpool2d(),
    N.Shift: shift(),
    N.Threshold: threshold(),
    N.Add: add(),
    N.Poly: poly(),
    N.Flatten: flatten(),
    Concat: concat(),
    LabelSelect: labelselect(),
    Mul: mul(),
    Embed: embed(),
    Token: token(),
    LayerNorm: layernorm(),
    Gelu: gelu(),
    Attention: attention(),
}


def test_every_kind_of_the_library_is_registered_and_tested() -> None:
    assert {N.KINDS[k] for k in LIBRARY} == set(CASES)
    assert all(N.KINDS[c.kind] is c for c in CASES)


def test_a_kind_has_one_class() -> None:
    with pytest.raises(TypeError, match=r"'poly' is already defined by cosyn\.ir\.nodes\.Poly"):

        class Square(N.Node):
            kind = "poly"


def samples(g: np.random.Generator, shape: tuple[int, ...], r: Range, n: int = 48) -> np.ndarray:
    """Integers in the range: all-low, all-high, then each element low, high or between."""
    lo, hi = (full(a, shape) for a in r)
    x = g.integers(lo, hi + 1, (n, *shape))
    pick = g.integers(0, 3, x.shape)
    x = np.where(pick == 0, lo, np.where(pick == 1, hi, x))
    x[0], x[1] = lo, hi
    return x


def outputs(case: Case, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    node = case.node
    if isinstance(node, N.Quantize):
        x = g.normal(0, 20, (48, *node.shape)).astype(np.float32)
        x[0], x[1] = -np.inf, np.inf
        return node.quantize(x)
    return node.eval(*(samples(g, s, r) for s, r in zip(case.shapes, case.ranges, strict=True)))


@pytest.mark.parametrize("kind", LIBRARY)
@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_infer_range_holds_every_output(kind: str, data: st.DataObject, seed: int) -> None:
    case = data.draw(CASES[N.KINDS[kind]])
    y = outputs(case, seed)
    lo, hi = (full(a, case.node.shape) for a in case.node.infer_range(*case.ranges))
    assert np.all(lo <= y) and np.all(y <= hi)
    assert case.node.dtype.lo <= lo.min() and hi.max() <= case.node.dtype.hi


@pytest.mark.parametrize("kind", LIBRARY)
@SETTINGS
@given(data=st.data())
def test_infer_shape_is_the_shape_eval_gives(kind: str, data: st.DataObject) -> None:
    case = data.draw(CASES[N.KINDS[kind]])
    assert case.node.infer_shape(*case.shapes) == case.node.shape
    assert outputs(case, 0).shape[1:] == case.node.shape


@SETTINGS
@given(case=conv2d(), seed=st.integers(0, 2**32 - 1))
def test_conv2d_eval_equals_torch_at_its_inferred_shape(case: Case, seed: int) -> None:
    node = case.node
    x = samples(np.random.default_rng(seed), case.shapes[0], case.ranges[0], 4)
    want = F.conv2d(*(torch.from_numpy(a).double() for a in (x, node.weight, node.bias)),
                    stride=node.stride, padding=node.padding)  # fmt: skip
    assert np.array_equal(node.eval(x), want.numpy().astype(np.int64))


@SETTINGS
@given(case=maxpool2d(), seed=st.integers(0, 2**32 - 1))
def test_maxpool2d_eval_equals_torch_at_its_inferred_shape(case: Case, seed: int) -> None:
    node = case.node
    x = samples(np.random.default_rng(seed), case.shapes[0], case.ranges[0], 4)
    want = F.max_pool2d(torch.from_numpy(x).double(), node.kernel, node.stride, node.padding)
    assert np.array_equal(node.eval(x), want.numpy().astype(np.int64))


@SETTINGS
@given(case=avgpool2d(), seed=st.integers(0, 2**32 - 1))
def test_avgpool2d_eval_is_torchs_window_sum(case: Case, seed: int) -> None:
    """The sum torch's average divides: avg_pool2d (zero padding counted) with divisor 1."""
    node = case.node
    x = samples(np.random.default_rng(seed), case.shapes[0], case.ranges[0], 4)
    want = F.avg_pool2d(torch.from_numpy(x).double(), node.kernel, node.stride, node.padding,
                        divisor_override=1)  # fmt: skip
    assert np.array_equal(node.eval(x), want.numpy().astype(np.int64))


@SETTINGS
@given(case=avgpool2d(padded=False))
def test_avgpool2d_range_ends_are_reached_without_padding(case: Case) -> None:
    """Every window full: the inputs at their ends give the sum's ends, channel by channel."""
    ends = np.stack([full(a, case.shapes[0]) for a in case.ranges[0]])
    y = case.node.eval(ends)
    lo, hi = (full(a, case.node.shape) for a in case.node.infer_range(*case.ranges))
    assert np.array_equal(y.min(0), lo) and np.array_equal(y.max(0), hi)


@SETTINGS
@given(case=dense())
def test_dense_range_ends_are_reached(case: Case) -> None:
    """Each output's bounds: every input at the end its weight's sign picks."""
    node, (lo_x, hi_x) = case.node, (full(a, case.shapes[0]) for a in case.ranges[0])
    lo, hi = node.infer_range(*case.ranges)
    for o, w in enumerate(node.weight):
        assert node.eval(np.where(w > 0, hi_x, lo_x)[None])[0, o] == hi[o]
        assert node.eval(np.where(w > 0, lo_x, hi_x)[None])[0, o] == lo[o]


@pytest.mark.parametrize(
    "kind",
    [N.Add.kind, N.Shift.kind, N.Threshold.kind, N.Flatten.kind, N.MaxPool2d.kind, Concat.kind],
)
@SETTINGS
@given(data=st.data())
def test_monotone_range_ends_are_reached(kind: str, data: st.DataObject) -> None:
    """The ends of the inputs give the ends of the output, channel by channel."""
    case = data.draw(CASES[N.KINDS[kind]])
    ends = [
        np.stack([full(a, s) for a in r]) for s, r in zip(case.shapes, case.ranges, strict=True)
    ]
    y = case.node.eval(*ends)
    lo, hi = (full(a, case.node.shape) for a in case.node.infer_range(*case.ranges))
    assert np.array_equal(y.min(0), lo) and np.array_equal(y.max(0), hi)


@SETTINGS
@given(case=poly())
def test_poly_ranges_are_exact(case: Case) -> None:
    """Every stage's range is that of its polynomial over the input's integers, in
    Python integers; stages and dtype are the narrowest types holding them."""
    node, (lo, hi) = case.node, case.ranges[0]
    c = node.coeffs.shape[0]
    lo, hi = np.broadcast_to(lo, max(c, lo.size)), np.broadcast_to(hi, max(c, lo.size))
    coeffs = np.broadcast_to(node.coeffs, (lo.size, node.coeffs.shape[1]))
    stages = node.stage_ranges(*case.ranges)
    for k, (s_lo, s_hi) in enumerate(stages):
        for ch, row in enumerate(coeffs.tolist()):
            vals = [sum(a * x ** (k - j) for j, a in enumerate(row[: k + 1]))
                    for x in range(int(lo[ch]), int(hi[ch]) + 1)]  # fmt: skip
            assert (s_lo[ch], s_hi[ch]) == (min(vals), max(vals))
    assert node.stages == tuple(N.int_type_for_range(*s) for s in stages[1:])


def test_poly_range_beyond_enumeration_is_sound() -> None:
    """2**23 levels in each of two channels: interval arithmetic over the steps."""
    r = as_range([-(2**22), 0], [2**22, 2**23])
    p = N.Poly.sized([r], name="p", inputs=("x",), shape=(2,), scale=ONE,
                     coeffs=np.array([[3, -5, 7], [-2, 1, 0]]))  # fmt: skip
    lo, hi = p.infer_range(r)
    x = np.random.default_rng(0).integers(r[0], r[1] + 1, (1000, 2))
    y = p.eval(np.concatenate([x, np.stack(r)]))
    assert np.all(lo <= y) and np.all(y <= hi)
    wide = N.Poly("w", ("x",), (2,), p.dtype, ONE, coeffs=np.array([[1, 0, 0, 0, 0]]))
    with pytest.raises(BitWidthError, match=r"^w \(poly\): .*more than 62 bits"):
        N.Poly.sized([r], **{k: getattr(wide, k) for k in ("name", "inputs", "shape", "scale")},
                     coeffs=wide.coeffs)  # fmt: skip


def graph(case: Case) -> Graph:
    """The case's node fed by Quantize nodes (integer inputs) of its input ranges."""
    ins = [
        N.Quantize(f"in{i}", (), s, N.int_type_for_range(*r), ONE)
        for i, (s, r) in enumerate(zip(case.shapes, case.ranges, strict=True))
    ]
    return Graph([*ins, case.node], sequence=case.node.sequence)


@pytest.mark.parametrize("kind", LIBRARY)
@SETTINGS
@given(data=st.data())
def test_check_refuses_a_dtype_narrower_than_the_range(kind: str, data: st.DataObject) -> None:
    case = data.draw(CASES[N.KINDS[kind]])
    node = case.node
    assume(not isinstance(node, N.Quantize) or node.thresholds.size)
    g = graph(case)
    node.dtype = node.fit(*g.range(node.name))
    g.check()
    assume(node.dtype.bits > 1)
    node.dtype = N.IntType(node.dtype.bits - 1, node.dtype.signed)
    with pytest.raises(BitWidthError, match=rf"^{node.name} \({kind}\): its values span"):
        g.check()


def test_check_refuses_a_wrong_shape_and_an_unknown_input() -> None:
    t = N.IntType(4, False)
    x = N.Quantize("x", (), (3,), t, ONE)
    d = N.Dense("d", ("x",), (2,), N.IntType(12, True), ONE, np.ones((2, 4), np.int64), np.zeros(2))
    with pytest.raises(GraphError, match=r"^d \(dense\): its weights take \(4,\) inputs, not"):
        Graph([x, d]).check()
    f = N.Flatten("f", ("y",), (3,), t, ONE)
    with pytest.raises(GraphError, match=r"^f \(flatten\): its input 'y' is not an earlier"):
        Graph([x, f]).check()
    s = N.Shift("s", ("x",), (3,), t, ONE, np.zeros(2, np.int64), "floor", np.zeros(1), np.ones(1))
    with pytest.raises(GraphError, match=r"^s \(shift\): shift has 2 rows for 3 channels"):
        Graph([x, s]).check()


def test_graph_ranges_are_the_nodes_and_computed_once() -> None:
    t = N.IntType(3, True)
    x = N.Quantize("x", (), (2,), t, ONE)
    d = N.Dense.sized([x.infer_range()], name="d", inputs=("x",), shape=(1,), scale=ONE,
                      weight=np.array([[2, -3]]), bias=np.array([1]))  # fmt: skip
    g = Graph([x, d])
    assert [a.tolist() for a in g.range("d")] == [[2 * -4 - 3 * 3 + 1], [2 * 3 + 3 * 4 + 1]]
    assert g.range("d") is g.range("d")
    assert d.dtype == N.IntType(6, True)
    table = graph_table(g)
    assert "| d | dense | x | 1 | i3 |  | i6 | 2 |" in table  # the accumulator column


def test_output_ops_are_the_models_float32_arithmetic_after_the_last_node() -> None:
    """Graph.run applies the output scale, then `output_ops` in order, in float32."""
    t = N.IntType(3, True)
    x = N.Quantize("x", (), (2,), t, np.float32(0.5), thresholds=np.float32([-1, 0, 1]), base=-1)
    d = N.Dense.sized([x.infer_range()], name="d", inputs=("x",), shape=(2,),
                      scale=np.float32(0.25), weight=np.array([[2, -3], [1, 1]]),
                      bias=np.array([1, 0]))  # fmt: skip
    ops = (Binary(operator.sub, torch.tensor(0.1)), Binary(operator.truediv, 0.3))
    g = Graph([x, d], output_ops=ops)
    xs = np.float32([[-2, 0.5], [0, 3], [1, -1]])
    acc = g.run_int(g.quantize(xs))
    expect = (torch.from_numpy(acc.astype(np.float32) * np.float32(0.25)) - 0.1) / 0.3
    assert np.array_equal(g.run(xs), expect.numpy())
    assert not np.array_equal(g.run(xs), Graph([x, d]).run(xs))
