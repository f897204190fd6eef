"""The conv2d, add and fork RTL blocks against the graph's golden arithmetic, in the
Amaranth simulator: bit-exact values, every transfer timed to the cycle.

Inputs are offered from given cycles and held until taken (`valid` never waits for
`ready`); the output is ready always or at random. The blocks' cycle models must give
the very cycles the simulation shows.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator
from cosyn.hw.rtl._base import Ctx, resolve_parallelism
from cosyn.hw.rtl._conv2d import Conv2dBlock
from cosyn.hw.rtl._conv2d_timing import ConvGeometry, ConvSchedule

from cosyn.errors import CosynError
from cosyn.ir.nodes import Conv2d, IntType, int_type_for_range


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


def conv_node(c, h, w, o, k, s, p, in_type: IntType, seed: int = 0) -> Conv2d:
    """A conv node with random weights (extremes included) and its exact accumulator type."""
    rng = np.random.default_rng(seed)
    kh, kw = (k, k) if isinstance(k, int) else k
    (sh, sw), (ph, pw) = (
        ((s, s) if isinstance(s, int) else s),
        ((p, p) if isinstance(p, int) else p),
    )
    wt = rng.integers(-8, 8, (o, c, kh, kw))
    wt.flat[0], wt.flat[-1] = -8, 7
    b = rng.integers(-300, 300, o)
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    big = np.where(wt > 0, wt * in_type.hi, wt * in_type.lo).reshape(o, -1).sum(1) + b
    small = np.where(wt > 0, wt * in_type.lo, wt * in_type.hi).reshape(o, -1).sum(1) + b
    dtype = int_type_for_range(min(small.min(), 0, b.min()), max(big.max(), 0, b.max()))
    return Conv2d(
        "conv_t", ("x",), (o, oh, ow), dtype, np.float32(1.0),
        weight=wt, bias=b, stride=(sh, sw), padding=(ph, pw),
    )  # fmt: skip


def conv_block(node: Conv2d, in_type: IntType, c, h, w, p) -> Conv2dBlock:
    return Conv2dBlock(node, Ctx((in_type,), ((c, h, w),), order="hwc", parallelism=p))


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
]


def edge_batch(in_type: IntType, shape, rng) -> np.ndarray:
    """All-max, all-min and a random sample, one after the other."""
    rand = rng.integers(in_type.lo, in_type.hi + 1, shape)
    return np.stack([np.full(shape, in_type.hi), np.full(shape, in_type.lo), rand])


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c[:8])))
def test_conv_exact_and_timed(case) -> None:
    c, h, w, o, k, s, p, par, it = case
    node = conv_node(c, h, w, o, k, s, p, it)
    dut = conv_block(node, it, c, h, w, par)
    x = edge_batch(it, (c, h, w), np.random.default_rng(1))
    arr = np.zeros(x.size, dtype=np.int64)
    got, taken, out = drive(dut, {"i": (dut.i, hwc(x), arr)}, len(x) * np.prod(node.shape))
    assert np.array_equal(got, hwc(node.eval(x)))
    want_taken, want_out = dut.schedule.run(arr)
    assert np.array_equal(taken["i"], want_taken)
    assert np.array_equal(out, want_out)


@pytest.mark.slow
@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[7]], ids=["s2p1", "s2p0", "rect"])
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
    got, taken, out = drive(dut, {"i": (dut.i, hwc(x), arr)}, n_out)
    assert np.array_equal(got, hwc(node.eval(x)))
    want_taken, want_out = dut.schedule.run(arr)
    assert np.array_equal(taken["i"], want_taken) and np.array_equal(out, want_out)
    got, _, _ = drive(dut, {"i": (dut.i, hwc(x), arr)}, n_out, stalls=0.5, seed=4)
    assert np.array_equal(got, hwc(node.eval(x)))


@pytest.mark.slow
@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[4]], ids=["cnn1", "k1", "p1"])
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
    assert out[0] - taken["i"][0] == dut.latency
    firsts = np.array(out[::per])
    assert np.all(np.diff(firsts)[1:] == dut.interval)
    assert np.array_equal(dut.timing(taken["i"][:n]), out[:per])


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


def test_conv_parallelism_rules() -> None:
    node = conv_node(2, 4, 4, 6, 3, 1, 1, U8)
    assert resolve_parallelism(node, 4, 1) == (6, resolve_parallelism(node, 4, 1)[1])
    assert "rounded up to 6" in resolve_parallelism(node, 4, 1)[1]
    assert resolve_parallelism(node, 3, 1) == (3, "")
    for bad in (0, -1, 7):
        with pytest.raises(CosynError, match="conv_t"):
            resolve_parallelism(node, bad, 1)
    with pytest.raises(ValueError, match="divide"):
        ConvGeometry.of(node, (2, 4, 4), 4)
