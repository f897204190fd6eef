"""The conv2d, add and fork RTL blocks against the graph's golden arithmetic, in the
Amaranth simulator: bit-exact values, every transfer timed to the cycle.

Inputs are offered from given cycles and held until taken (`valid` never waits for
`ready`); the output is ready always or at random. The blocks' cycle models must give
the very cycles the simulation shows.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from cosyn.hw.rtl._add import AddBlock, Fork, SkipFifo
from cosyn.hw.rtl._base import COMPONENTS, Ctx, element_stream
from cosyn.hw.rtl._conv2d import Conv2dBlock
from cosyn.hw.rtl._verilog import component_verilog, lint
from cosyn.perfmodel.blocks import ForkTiming
from cosyn.perfmodel.conv import ConvGeometry, ConvSchedule, with_spare_rows
from cosyn.perfmodel.pipeline import deadlock_depth, fifo_depth, resolve_parallelism

from cosyn.errors import CosynError
from cosyn.ir.nodes import Add, Conv2d, IntType, int_type_for_range


def drive(dut, inputs: dict, n_out: int, *, stalls: float = 0.0, seed: int = 0, limit=400_000):
    """Offer inputs[name] = (port, values, arrivals) and collect n_out outputs of dut.o.

    Element k of an input is offered from cycle arrivals[k] (and after k-1 is taken)
    until taken. Returns (values, {name: taken cycles}, output cycles).
    """
    rng = np.random.default_rng(seed)
    taken = {k: [] for k in inputs}
    values, out = [], []

    async def bench(ctx) -> None:
        for t in range(limit):
            for name, (port, vals, arr) in inputs.items():
                k = len(taken[name])
                offer = bool(k < len(vals) and arr[k] <= t)
                ctx.set(port.valid, offer)
                if offer:
                    ctx.set(port.payload, int(vals[k]))
            ctx.set(dut.o.ready, bool(stalls == 0 or rng.random() >= stalls))
            for name, (port, _, _) in inputs.items():
                if ctx.get(port.valid) and ctx.get(port.ready):
                    taken[name].append(t)
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                values.append(int(ctx.get(dut.o.payload)))
                out.append(t)
                if len(values) == n_out:
                    return
            await ctx.tick()
        raise AssertionError(f"only {len(values)} of {n_out} outputs in {limit} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return np.array(values, dtype=np.int64), {k: np.array(v) for k, v in taken.items()}, out


def gappy(n: int, rng: np.random.Generator, p_gap: float = 0.3) -> np.ndarray:
    """Offer cycles with random gaps: a nondecreasing sequence."""
    return np.cumsum(rng.random(n) < p_gap) + np.cumsum(
        rng.integers(0, 2, n) * (rng.random(n) < 0.05) * 7
    )


# ---------------------------------------------------------------------------------------
# conv2d


def conv_node(c, h, w, o, k, s, p, in_type: IntType, seed: int = 0, positive=False) -> Conv2d:
    """A conv node with random weights (extremes included) and its exact accumulator type;
    `positive`: weights and biases >= 0 (ROM fields of unsigned types)."""
    rng = np.random.default_rng(seed)
    kh, kw = (k, k) if isinstance(k, int) else k
    (sh, sw), (ph, pw) = (
        ((s, s) if isinstance(s, int) else s),
        ((p, p) if isinstance(p, int) else p),
    )
    wt = rng.integers(-8, 8, (o, c, kh, kw))
    wt.flat[0], wt.flat[-1] = -8, 7
    b = rng.integers(-300, 300, o)
    if positive:
        wt, b = np.abs(wt), np.abs(b) + 200
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    big = np.where(wt > 0, wt * in_type.hi, wt * in_type.lo).reshape(o, -1).sum(1) + b
    small = np.where(wt > 0, wt * in_type.lo, wt * in_type.hi).reshape(o, -1).sum(1) + b
    dtype = int_type_for_range(min(small.min(), 0, b.min()), max(big.max(), 0, b.max()))
    return Conv2d(
        "conv_t", ("x",), (o, oh, ow), dtype, np.float32(1.0),
        weight=wt, bias=b, stride=(sh, sw), padding=(ph, pw),
    )  # fmt: skip


def conv_block(node: Conv2d, in_type: IntType, c, h, w, p, simd: int = 1) -> Conv2dBlock:
    ctx = Ctx((in_type,), ((c, h, w),), order="hwc", parallelism=p, simd=simd)
    return Conv2dBlock(node, ctx)


def hwc(x: np.ndarray) -> np.ndarray:
    """A batch (N, C, H, W) as one stream in HWC order, sample after sample."""
    return x.transpose(0, 2, 3, 1).reshape(-1)


U8, I4 = IntType(8, False), IntType(4, True)
# (C, H, W, O, K, stride, padding, P, input type)
CASES = [
    (1, 8, 8, 8, 3, 1, 1, 8, U8),  # the zoo CNN's first layer
    (8, 8, 8, 16, 3, 2, 1, 4, U8),  # its second
    (2, 5, 6, 4, 1, 1, 0, 2, I4),
    (3, 7, 5, 4, 3, 2, 0, 1, U8),
    (2, 4, 4, 4, 3, 1, 1, 4, I4),
    (2, 6, 6, 4, 1, 2, 0, 4, U8),
    (3, 5, 5, 6, 3, 1, 0, 3, I4),
    (2, 6, 5, 4, (3, 2), (1, 2), (1, 0), 2, I4),
    (3, 4, 2, 4, 2, (3, 1), 2, 2, I4),  # windows wholly in the padding, stride > kernel
    (2, 6, 6, 7, 3, 1, 1, 3, U8),  # P does not divide O: a last group of one
    (3, 5, 4, 5, 1, 1, 0, 4, I4),  # ... of one, fewer terms than lanes
]


def edge_batch(in_type: IntType, shape, rng) -> np.ndarray:
    """All-max, all-min and a random sample, one after the other."""
    rand = rng.integers(in_type.lo, in_type.hi + 1, shape)
    return np.stack([np.full(shape, in_type.hi), np.full(shape, in_type.lo), rand])


def exact_on_the_models_cycles(dut: Conv2dBlock, node: Conv2d, x: np.ndarray, arr) -> None:
    """`x` offered at cycles `arr` (output always ready): the outputs equal `node.eval`,
    and every input is taken and every output leaves on `ConvSchedule.run`'s cycles."""
    got, taken, out = drive(dut, {"i": (dut.i, hwc(x), arr)}, len(x) * np.prod(node.shape))
    assert np.array_equal(got, hwc(node.eval(x)))
    want_taken, want_out = dut.cycles.schedule.run(arr)
    assert np.array_equal(taken["i"], want_taken)
    assert np.array_equal(out, want_out)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c[:8])))
def test_conv_exact_and_timed(case) -> None:
    c, h, w, o, k, s, p, par, it = case
    node = conv_node(c, h, w, o, k, s, p, it)
    dut = conv_block(node, it, c, h, w, par)
    x = edge_batch(it, (c, h, w), np.random.default_rng(1))
    exact_on_the_models_cycles(dut, node, x, np.zeros(x.size, dtype=np.int64))


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", [CASES[1], CASES[3], CASES[7], CASES[9]], ids=["s2p1", "s2p0", "rect", "ragged"]
)
def test_conv_gaps_and_backpressure(case) -> None:
    """Random input gaps: values and every cycle as modelled; with random back-pressure
    as well: nothing lost, duplicated or reordered."""
    c, h, w, o, k, s, p, par, it = case
    node = conv_node(c, h, w, o, k, s, p, it, seed=2)
    rng = np.random.default_rng(3)
    x = rng.integers(it.lo, it.hi + 1, (2, c, h, w))
    n_out = len(x) * np.prod(node.shape)
    dut = conv_block(node, it, c, h, w, par)
    arr = gappy(x.size, rng)
    exact_on_the_models_cycles(dut, node, x, arr)
    got, _, _ = drive(dut, {"i": (dut.i, hwc(x), arr)}, n_out, stalls=0.5, seed=4)
    assert np.array_equal(got, hwc(node.eval(x)))


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", [CASES[0], CASES[2], CASES[4], CASES[10]], ids=["cnn1", "k1", "p1", "ragged"]
)
def test_conv_latency_interval_measured(case) -> None:
    """Full rate, four samples: first input to first output is `latency`, the samples'
    first outputs are `interval` apart, and `timing()` gives one sample's outputs."""
    c, h, w, o, k, s, p, par, it = case
    node = conv_node(c, h, w, o, k, s, p, it)
    dut = conv_block(node, it, c, h, w, par)
    x = np.random.default_rng(5).integers(it.lo, it.hi + 1, (4, c, h, w))
    n = c * h * w
    per = int(np.prod(node.shape))
    got, taken, out = drive(dut, {"i": (dut.i, hwc(x), np.zeros(x.size, np.int64))}, 4 * per)
    assert np.array_equal(got, hwc(node.eval(x)))
    assert out[0] - taken["i"][0] == dut.cycles.latency
    firsts = np.array(out[::per])
    assert np.all(np.diff(firsts)[1:] == dut.cycles.interval)
    assert np.array_equal(dut.cycles.timing(taken["i"][:n]), out[:per])


@pytest.mark.slow
@pytest.mark.parametrize("case", [CASES[3], CASES[6]], ids=["s2", "all-rows"])
def test_conv_spare_rows_reach_the_least_interval(case) -> None:
    """Where windows take longer than a row's input, KH + SH rows keep the next sample's
    rows out until the last windows are read: the block takes the fewest spare rows
    (`with_spare_rows`) at which its interval is least, and the simulation, at full
    rate for four samples, shows that interval (bit-exact)."""
    c, h, w, o, k, s, p, par, it = case
    node = conv_node(c, h, w, o, k, s, p, it)
    dut = conv_block(node, it, c, h, w, par)
    g = dut.geo
    plain = ConvGeometry.of(node, (c, h, w), par)
    assert g.spare > 0 and g == with_spare_rows(plain)
    fewer = [ConvSchedule(dataclasses.replace(g, spare=n)).latency_interval()[1]
             for n in range(g.spare)]  # fmt: skip
    assert min(fewer) > dut.cycles.interval
    x = np.random.default_rng(5).integers(it.lo, it.hi + 1, (4, c, h, w))
    per = int(np.prod(node.shape))
    got, _, out = drive(dut, {"i": (dut.i, hwc(x), np.zeros(x.size, np.int64))}, 4 * per)
    assert np.array_equal(got, hwc(node.eval(x)))
    assert np.all(np.diff(out[::per])[1:] == dut.cycles.interval)


SPARSE = [  # (C, H, W, O, K, stride, padding, P, input type, zero fraction)
    (2, 6, 6, 4, 3, 1, 1, 2, U8, 0.7),
    (3, 7, 5, 5, 3, 2, 0, 2, I4, 0.8),  # a last group of one
    (2, 5, 6, 4, (3, 2), (1, 2), (1, 0), 4, I4, 0.9),  # groups of fewer terms than lanes
    (2, 4, 4, 3, 2, 1, 0, 1, U8, 1.0),  # no weight at all: a term a group, for its bias
]


@pytest.mark.slow
@pytest.mark.parametrize("case", SPARSE, ids=lambda c: "-".join(map(str, c[:8])))
def test_conv_skips_zero_weights_exact_and_timed(case) -> None:
    """Where most weights are zero, a group issues only its window terms with a non-zero
    weight (`sparse_terms`), read from a term ROM: bit-exact, every input taken and
    every output leaving on the model's cycles, under gaps, back-pressure and at full
    rate, in fewer cycles than every term."""
    c, h, w, o, k, s, p, par, it, zero = case
    node = conv_node(c, h, w, o, k, s, p, it, seed=5)
    rng = np.random.default_rng(6)
    node.weight[rng.random(node.weight.shape) < zero] = 0
    dut = conv_block(node, it, c, h, w, par)
    assert dut.cycles.kept is not None
    x = edge_batch(it, (c, h, w), rng)
    n_out = len(x) * np.prod(node.shape)
    for arr in (np.zeros(x.size, np.int64), gappy(x.size, rng)):
        exact_on_the_models_cycles(dut, node, x, arr)
    got, _, _ = drive(dut, {"i": (dut.i, hwc(x), arr)}, n_out, stalls=0.5, seed=4)
    assert np.array_equal(got, hwc(node.eval(x)))
    node.weight[node.weight == 0] = 1
    assert dut.cycles.interval < conv_block(node, it, c, h, w, par).cycles.interval


def test_conv_timing_model_matches_formula_bounds() -> None:
    """The interval is at least the multiplier-bound and output-bound cycles per sample,
    and a larger P never makes a layer slower."""
    node = conv_node(8, 8, 8, 16, 3, 2, 1, U8)
    prev = None
    for par in (1, 2, 4, 8, 16):
        _, interval = ConvSchedule(ConvGeometry.of(node, (8, 8, 8), par)).latency_interval()
        assert interval >= max(node.macs // par, int(np.prod(node.shape)))
        assert prev is None or interval <= prev
        prev = interval


@pytest.mark.slow
def test_conv_layers_of_the_zoo_cnn() -> None:
    """Both conv layers of the default CNN, built from the lowered graph, equal Conv2d.eval."""
    import torch
    from cosyn.models import zoo

    import cosyn

    g = cosyn.lower(zoo.cnn(), torch.zeros(1, 1, 8, 8))
    rng = np.random.default_rng(6)
    for node in [n for n in g if n.kind == "conv2d"]:
        src = g[node.inputs[0]]
        it, (c, h, w) = src.dtype, src.shape
        dut = conv_block(node, it, c, h, w, 2)
        x = edge_batch(it, (c, h, w), rng)
        got, _, _ = drive(
            dut, {"i": (dut.i, hwc(x), np.zeros(x.size, np.int64))}, 3 * np.prod(node.shape)
        )
        assert np.array_equal(got, hwc(node.eval(x))), node.name


SIMD = [  # (C, H, W, O, K, stride, padding, P, input type, S)
    (8, 8, 8, 16, 3, 2, 1, 4, U8, 2),  # the zoo CNN's second layer
    (4, 5, 6, 5, 3, 1, 1, 2, I4, 4),  # every channel in one word; a last group of one
    (6, 6, 5, 4, (3, 2), (1, 2), (1, 0), 3, I4, 3),  # S not a power of two
    (4, 3, 3, 7, 1, 1, 0, 7, U8, 2),  # fewer terms than lanes
]


@pytest.mark.slow
@pytest.mark.parametrize("case", SIMD, ids=lambda c: "-".join(map(str, c[:8])) + f"-S{c[9]}")
def test_conv_simd_exact_and_timed(case) -> None:
    """SIMD S: each lane multiplies S channels a cycle. Bit-exact, every input taken and
    every output leaving on the model's cycles at full rate and under gaps, nothing
    lost under back-pressure, and a sample's terms S times fewer than without."""
    c, h, w, o, k, s, p, par, it, simd = case
    node = conv_node(c, h, w, o, k, s, p, it, seed=7)
    dut = conv_block(node, it, c, h, w, par, simd)
    rng = np.random.default_rng(8)
    x = edge_batch(it, (c, h, w), rng)
    for arr in (np.zeros(x.size, np.int64), gappy(x.size, rng)):
        exact_on_the_models_cycles(dut, node, x, arr)
    got, _, _ = drive(dut, {"i": (dut.i, hwc(x), arr)}, len(x) * np.prod(node.shape),
                      stalls=0.5, seed=9)  # fmt: skip
    assert np.array_equal(got, hwc(node.eval(x)))
    assert dut.geo.terms * simd == ConvGeometry.of(node, (c, h, w), par).terms


@pytest.mark.parametrize("par", [1, 3])
def test_conv_unsigned_weights_and_biases(par) -> None:
    """Weights and biases that are all >= 0 are stored as unsigned ROM fields."""
    node = conv_node(2, 4, 3, 3, (2, 3), 1, (0, 1), U8, seed=13, positive=True)
    dut = conv_block(node, U8, 2, 4, 3, par)
    x = edge_batch(U8, (2, 4, 3), np.random.default_rng(14))
    got, _, _ = drive(
        dut, {"i": (dut.i, hwc(x), np.zeros(x.size, np.int64))}, 3 * np.prod(node.shape)
    )
    assert np.array_equal(got, hwc(node.eval(x)))


def test_conv_parallelism_rules() -> None:
    node = conv_node(2, 4, 4, 6, 3, 1, 1, U8)
    assert resolve_parallelism(node, 4, 1) == (4, 1, "")  # a last group of 2 lanes
    assert resolve_parallelism(node, 3, 1) == (3, 1, "")
    assert resolve_parallelism(node, (3, 2), 1) == (3, 2, "")
    assert resolve_parallelism(node, [3, 2], 1) == (3, 2, "")  # as JSON gives it back
    for bad in (0, -1, 7, (3, 0), (3, 3), (0, 1), (3, 1.5)):
        with pytest.raises(CosynError, match="conv_t"):
            resolve_parallelism(node, bad, 1)
    with pytest.raises(ValueError, match="divide"):
        ConvGeometry.of(node, (2, 4, 4), 7)


# ---------------------------------------------------------------------------------------
# add, fork, and a residual: fork -> conv (main) / FIFO (skip) -> add


def add_node(ta: IntType, tb: IntType, shifts, n: int, wider: int = 0) -> Add:
    """An add node whose type holds the exact range, or `wider` bits more."""
    lo = (ta.lo << shifts[0]) + (tb.lo << shifts[1])
    hi = (ta.hi << shifts[0]) + (tb.hi << shifts[1])
    t = int_type_for_range(lo, hi)
    t = IntType(t.bits + wider, t.signed)
    return Add("add_t", ("a", "b"), (n,), t, np.float32(1.0), shifts=shifts)


@pytest.mark.parametrize("shifts, wider", [((0, 0), 0), ((3, 0), 0), ((0, 5), 0), ((1, 2), 6)])
def test_add_exact_and_timed(shifts, wider) -> None:
    ta, tb, n = IntType(9, True), IntType(8, False), 40
    node = add_node(ta, tb, shifts, n, wider)
    dut = AddBlock(node, Ctx((ta, tb), ((n,), (n,))))
    rng = np.random.default_rng(7)
    a = np.concatenate([[ta.hi, ta.lo, ta.hi, ta.lo], rng.integers(ta.lo, ta.hi + 1, n - 4)])
    b = np.concatenate([[tb.hi, tb.lo, tb.lo, tb.hi], rng.integers(tb.lo, tb.hi + 1, n - 4)])
    ga, gb = gappy(n, rng), gappy(n, rng)
    got, taken, out = drive(dut, {"a": (dut.a, a, ga), "b": (dut.b, b, gb)}, n)
    assert np.array_equal(got, node.eval(a, b))
    assert np.array_equal(taken["a"], taken["b"])
    assert np.array_equal(out, dut.cycles.timing(ga, gb))
    got, _, _ = drive(dut, {"a": (dut.a, a, ga), "b": (dut.b, b, gb)}, n, stalls=0.5, seed=8)
    assert np.array_equal(got, node.eval(a, b))
    zero = np.zeros(n, np.int64)
    _, taken, out = drive(dut, {"a": (dut.a, a, zero), "b": (dut.b, b, zero)}, n)
    assert (
        out[0] - taken["a"][0] == dut.cycles.latency and out[-1] - out[0] + 1 == dut.cycles.interval
    )


class _Sinks(wiring.Component):
    """A fork whose second output is throttled by its own input, `o1_ready`."""

    def __init__(self, dtype: IntType) -> None:
        self.fork = Fork(dtype)
        es = element_stream(dtype)
        super().__init__({"i": In(es), "o": Out(es), "o1_ready": In(1), "o1_seen": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.fork = f = self.fork
        wiring.connect(m, wiring.flipped(self.i), f.i)
        wiring.connect(m, f.o0, wiring.flipped(self.o))
        m.d.comb += [f.o1.ready.eq(self.o1_ready), self.o1_seen.eq(f.o1.valid & f.o1.ready)]
        return m


def test_add_rejects_mismatched_inputs() -> None:
    t = IntType(4, True)
    with pytest.raises(ValueError, match="add_t"):
        COMPONENTS["add"](add_node(t, t, (0, 0), 6), Ctx((t, t), ((6,), (2, 3))))


def test_fork_copies_under_backpressure() -> None:
    """Both outputs see every element once, in order, with either output stalling."""
    t, n = IntType(6, True), 60
    rng = np.random.default_rng(9)
    x = np.concatenate([[t.hi, t.lo], rng.integers(t.lo, t.hi + 1, n - 2)])
    dut = _Sinks(t)
    seen, values = [], []

    async def bench(ctx) -> None:
        k = 0
        for _ in range(20 * n):
            ctx.set(dut.i.valid, k < n)
            ctx.set(dut.i.payload, int(x[min(k, n - 1)]))
            ctx.set(dut.o.ready, bool(rng.random() < 0.6))
            ctx.set(dut.o1_ready, bool(rng.random() < 0.5))
            if ctx.get(dut.o1_seen):
                seen.append(int(ctx.get(dut.fork.o1.payload)))
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                values.append(int(ctx.get(dut.o.payload)))
            if ctx.get(dut.i.valid) and ctx.get(dut.i.ready):
                k += 1
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert values == list(x) and seen == list(x)
    assert np.array_equal(ForkTiming(4).timing(np.array([0, 0, 5, 5])), [1, 2, 6, 7])


class Residual(wiring.Component):
    """y = conv(x) + (x << shift): the fork feeds the conv and a skip FIFO of `depth`."""

    def __init__(self, conv: Conv2d, add: Add, it: IntType, in_shape, depth: int) -> None:
        self.conv = conv_block(conv, it, *in_shape, 2)
        self.add = AddBlock(add, Ctx((conv.dtype, it), (conv.shape, in_shape), order="hwc"))
        self.fork, self.skip = Fork(it), SkipFifo(it, depth)
        super().__init__({"i": In(element_stream(it)), "o": Out(element_stream(add.dtype))})

    def elaborate(self, platform):
        m = Module()
        m.submodules += [self.conv, self.add, self.fork, self.skip]
        wiring.connect(m, wiring.flipped(self.i), self.fork.i)
        wiring.connect(m, self.fork.o0, self.conv.i)
        wiring.connect(m, self.fork.o1, self.skip.i)
        wiring.connect(m, self.conv.o, self.add.a)
        wiring.connect(m, self.skip.o, self.add.b)
        wiring.connect(m, self.add.o, wiring.flipped(self.o))
        return m


RES_SHAPE = (2, 5, 6)


def residual(depth: str | int):
    """A 3x3 same-size conv with a residual; its skip FIFO `fifo_depth` ("skip"),
    `deadlock_depth` ("floor") or an int deep."""
    it = IntType(5, True)
    conv = conv_node(*RES_SHAPE, 2, 3, 1, 1, it, seed=10)
    add = add_node(conv.dtype, it, (0, 4), int(np.prod(RES_SHAPE)))
    geo = ConvGeometry.of(conv, RES_SHAPE, 2)
    taken, out = ConvSchedule(geo).run(np.ones(geo.frame_in, np.int64))
    d = {"skip": fifo_depth(taken, out), "floor": deadlock_depth(geo.needs())}.get(depth, depth)
    return Residual(conv, add, it, RES_SHAPE, d), conv, add


@pytest.mark.slow
def test_residual_skip_fifo_depth() -> None:
    """With `fifo_depth` the residual is exact under gaps and back-pressure, and at full
    rate takes and emits exactly when its conv does (the fork never waits)."""
    dut, conv, add = residual("skip")
    rng = np.random.default_rng(11)
    x = np.stack([np.full(RES_SHAPE, 15), np.full(RES_SHAPE, -16)])
    x = np.concatenate([x, rng.integers(-16, 16, (2, *RES_SHAPE))])
    want = hwc(add.eval(conv.eval(x), x))
    got, _, _ = drive(dut, {"i": (dut.i, hwc(x), gappy(x.size, rng))}, want.size, stalls=0.4)
    assert np.array_equal(got, want)
    n = int(np.prod(RES_SHAPE))
    got, taken, out = drive(dut, {"i": (dut.i, hwc(x[:1]), np.zeros(n, np.int64))}, n)
    # the fork offers element k to the conv a cycle after it takes it, and takes k+1 no
    # earlier than the conv takes k: the conv's own back-pressure, never the FIFO's
    (conv_taken,) = dut.conv.cycles.transfers(np.ones(n, np.int64))
    fork_taken = np.maximum.accumulate(np.r_[0, conv_taken[:-1]] - np.arange(n)) + np.arange(n)
    assert np.array_equal(taken["i"], fork_taken)
    conv_out = dut.conv.cycles.timing(fork_taken + 1)
    assert np.array_equal(out, dut.add.cycles.timing(conv_out, fork_taken + 1))


@pytest.mark.slow
def test_residual_deadlock_floor() -> None:
    """`deadlock_depth` is exact: that deep the residual finishes, one less it stops."""
    x = hwc(np.random.default_rng(12).integers(-16, 16, (1, *RES_SHAPE)))
    zero = np.zeros(len(x), np.int64)
    dut, conv, add = residual("floor")
    got, _, _ = drive(dut, {"i": (dut.i, x, zero)}, len(x), stalls=0.3)
    want = hwc(
        add.eval(
            conv.eval(x.reshape(1, 5, 6, 2).transpose(0, 3, 1, 2)),
            x.reshape(1, 5, 6, 2).transpose(0, 3, 1, 2),
        )
    )
    assert np.array_equal(got, want)
    small, *_ = residual(dut.skip.depth - 1)
    with pytest.raises(AssertionError, match="outputs in"):
        drive(small, {"i": (small.i, x, zero)}, len(x), limit=3000)


# ---------------------------------------------------------------------------------------
# Verilog of each block: lint-clean under verilator -Wall


def lint_blocks():
    ta, tb = IntType(9, True), IntType(8, False)
    yield "add", AddBlock(add_node(ta, tb, (3, 0), 40), Ctx((ta, tb), ((40,), (40,))))
    yield "fork_block", Fork(ta)
    yield "fifo", SkipFifo(tb, 5)
    for k, (c, h, w, o, kk, s, p, par, it) in enumerate(CASES):
        yield f"conv{k}", conv_block(conv_node(c, h, w, o, kk, s, p, it), it, c, h, w, par)
    for k, (c, h, w, o, kk, s, p, par, it, zero) in enumerate(SPARSE):
        node = conv_node(c, h, w, o, kk, s, p, it, seed=5)
        node.weight[np.random.default_rng(6).random(node.weight.shape) < zero] = 0
        yield f"sparse_conv{k}", conv_block(node, it, c, h, w, par)


@pytest.mark.slow
def test_blocks_lint_clean(tmp_path) -> None:
    for name, dut in lint_blocks():
        (tmp_path / name).mkdir()
        (tmp_path / name / "top.v").write_text(component_verilog(dut, name))
        assert lint(tmp_path / name / "top.v") == "", name
