"""Each RTL block in the Amaranth simulator: bit-exact with its node's `eval` on edge and
random values, nothing lost under back-pressure and gaps, and its timing as it reports."""

from __future__ import annotations

import numpy as np
import pytest
from cosyn.hw.rtl import COMPONENTS, Ctx
from cosyn.hw.rtl._tb import Port, run_streams
from cosyn.models.intops import gelu_spec, layernorm_spec
from cosyn.perfmodel.blocks import SHIFT_STAGES, poly_stages
from cosyn.perfmodel.pipeline import resolve_parallelism, stream_index
from cosyn.perfmodel.thresholds import threshold_stages

from cosyn.errors import CosynError
from cosyn.ir.intervals import as_range
from cosyn.ir.kinds.gelu import Gelu
from cosyn.ir.kinds.layernorm import LayerNorm
from cosyn.ir.nodes import Conv2d, Dense, IntType, Poly, Shift, Threshold, int_type_for_range

ONE = np.ones(1, np.float32)


def _edges(t: IntType, shape: tuple[int, ...], rng, n: int = 6) -> np.ndarray:
    """All-max, all-min, alternating, then random samples of type t."""
    x = rng.integers(t.lo, t.hi + 1, (n, *shape))
    x[0], x[1] = t.hi, t.lo
    x[2].flat[::2] = t.hi
    x[2].flat[1::2] = t.lo
    return x


def _run(node, ctx: Ctx, x: np.ndarray, gaps=0.0, stalls=0.0, seed=0):
    """Stream samples x (graph layout) through the node's block; outputs in graph layout,
    plus the block and the input/output cycles."""
    block = COMPONENTS[node.kind](node, ctx)
    order = ctx.index()
    flat = x.reshape(len(x), -1)[:, order]
    out_n = int(np.prod(node.shape))
    run = run_streams(
        block,
        {"i": (Port.of(block.i), flat.reshape(-1).tolist())},
        Port.of(block.o),
        len(x) * out_n,
        gaps=gaps,
        stalls=stalls,
        seed=seed,
    )
    y = np.asarray(run.values).reshape(len(x), out_n)
    out_order = order if len(node.shape) == len(ctx.in_shape) and node.kind != "dense" else None
    if out_order is not None:
        y = y[:, np.argsort(out_order)]
    ins = np.asarray(run.in_cycles["i"]).reshape(len(x), -1)
    return (
        y.reshape(len(x), *node.shape),
        block,
        ins,
        np.asarray(run.out_cycles).reshape(len(x), -1),
    )


def _dense(rng, n: int, o: int, wbits: int = 4) -> Dense:
    w = rng.integers(-(1 << (wbits - 1)), 1 << (wbits - 1), (o, n))
    w[0] = -(1 << (wbits - 1))  # the extreme weight on a whole row
    b = rng.integers(-500, 500, o)
    acc = int_type_for_range(-(1 << 20), 1 << 20)
    return Dense("d", ("x",), (o,), acc, ONE, weight=w, bias=b)


@pytest.mark.parametrize(
    ("n", "o", "p", "t"),
    [
        (5, 6, 2, IntType(8, False)),
        (3, 8, 8, IntType(6, True)),
        (7, 4, 1, IntType(8, True)),
        (1, 3, 3, IntType(4, False)),
        (6, 1, 1, IntType(8, False)),
        (40, 4, 2, IntType(8, False)),  # the input buffer in two banks
        (70, 3, 3, IntType(6, True)),  # three banks, the last part full
        (6, 10, 3, IntType(8, False)),  # P does not divide O: a last group of one
        (2, 7, 4, IntType(6, True)),  # ... of three, fewer terms than lanes
    ],
)
def test_dense_exact_and_timed(n, o, p, t) -> None:
    rng = np.random.default_rng(n * 10 + o)
    node = _dense(rng, n, o)
    node.weight[node.weight == 0] = 1  # every term issued (see the test below)
    x = _edges(t, (n,), rng)
    y, block, ins, outs = _run(node, Ctx((t,), ((n,),), parallelism=p), x)
    assert np.array_equal(y, node.eval(x))
    assert outs[0, 0] - ins[0, 0] == block.cycles.latency
    assert np.array_equal(outs[0], block.cycles.timing(ins[0]))
    groups, short = -(-o // p), o - (-(-o // p) - 1) * p
    steps = (groups - 1) * max(n, p) + max(n, short)
    assert np.diff(outs[:, 0])[-1] == block.cycles.interval == max(n, steps)


@pytest.mark.parametrize(
    ("n", "o", "p", "zero"),
    [
        (12, 6, 2, 0.8),
        (9, 8, 4, 0.7),  # a group of zero weights only: one term, for its bias
        (40, 4, 1, 0.9),  # the input buffer in two banks
        (5, 6, 6, 0.6),  # one group
        (16, 8, 4, 0.97),  # groups of fewer terms than lanes: the load waits
        (3, 2, 1, 1.0),  # no weight at all
        (16, 7, 3, 0.9),  # P does not divide O: the last group of one
    ],
)
def test_dense_skips_zero_weights_exact_and_timed(n, o, p, zero) -> None:
    """Where most weights are zero, a group issues only its terms with a non-zero
    weight (`sparse_terms`): bit-exact, on the timing's cycles, in fewer cycles."""
    rng = np.random.default_rng(n + o + p)
    node, t = _dense(rng, n, o), IntType(8, True)
    node.weight[rng.random(node.weight.shape) < zero] = 0
    if o == 8:
        node.weight[4:] = 0
    x = _edges(t, (n,), rng)
    ctx = Ctx((t,), ((n,),), parallelism=p)
    y, block, ins, outs = _run(node, ctx, x)
    assert block.cycles.sparse and np.array_equal(y, node.eval(x))
    assert outs[0, 0] - ins[0, 0] == block.cycles.latency
    assert np.array_equal(outs[0], block.cycles.timing(ins[0]))
    assert np.diff(outs[:, 0])[-1] == block.cycles.interval
    groups = -(-o // p)
    w = np.zeros((groups * p, n), node.weight.dtype)
    w[:o] = node.weight
    live = (w.reshape(groups, p, n) != 0).any(axis=1).sum(axis=1)  # terms a group
    sizes = [min(p, o - g * p) for g in range(groups)]
    steps = [max(int(live[g]), 1, sizes[g - 1]) for g in range(groups)]
    assert block.cycles.interval == max(n, sum(steps))
    y, *_ = _run(node, ctx, x, gaps=0.3, stalls=0.5, seed=3)
    assert np.array_equal(y, node.eval(x))


@pytest.mark.parametrize(
    ("wbits", "positive", "t"),
    [(4, False, IntType(8, False)), (3, False, IntType(5, True)), (2, True, IntType(6, True)),
     (1, True, IntType(3, False)), (6, False, IntType(7, True))],
)  # fmt: skip
def test_dense_multipliers_of_every_width_and_many_lanes(wbits, positive, t) -> None:
    """LUT products (weights of up to 4 bits, signed or not, odd widths; the element's
    multiples in several copies for 40 lanes) and multiplier blocks (6 bits)."""
    rng = np.random.default_rng(wbits)
    node = _dense(rng, 3, 40, wbits)
    if positive:
        node.weight = np.abs(node.weight) % (1 << wbits)
    x = _edges(t, (3,), rng)
    y, *_ = _run(node, Ctx((t,), ((3,),), parallelism=40), x, stalls=0.2)
    assert np.array_equal(y, node.eval(x))


def test_dense_gaps_follow_timing_and_back_pressure_loses_nothing() -> None:
    rng = np.random.default_rng(7)
    node, t = _dense(rng, 9, 6), IntType(8, False)
    x = _edges(t, (9,), rng, n=5)
    for p in (3, 4):  # 4 does not divide the 6 outputs
        ctx = Ctx((t,), ((9,),), parallelism=p)
        y, block, ins, outs = _run(node, ctx, x[:1], gaps=0.5, seed=1)
        assert np.array_equal(outs[0], block.cycles.timing(ins[0]))
        y, *_ = _run(node, ctx, x, gaps=0.3, stalls=0.6, seed=2)
        assert np.array_equal(y, node.eval(x))


@pytest.mark.parametrize("simd", [1, 3])
def test_dense_reads_a_flattened_stream_in_stream_order(simd) -> None:
    """The weight columns in stream order; with SIMD, a word holds S consecutive stream
    elements."""
    rng = np.random.default_rng(3)
    node, t = _dense(rng, 2 * 3 * 2, 4), IntType(5, True)
    perm = stream_index((2, 3, 2), "hwc")
    ctx = Ctx((t,), ((12,),), "flat", perm, 2, simd)
    x = _edges(t, (12,), rng)
    y, *_ = _run(node, ctx, x)
    assert np.array_equal(y, node.eval(x))


@pytest.mark.parametrize(
    ("n", "o", "p", "simd", "wbits", "t"),
    [
        (12, 6, 2, 4, 4, IntType(8, False)),
        (9, 7, 3, 3, 3, IntType(6, True)),  # S not a power of two; a last group of one
        (80, 4, 4, 2, 4, IntType(8, True)),  # the input buffer in two banks of words
        (6, 10, 10, 6, 6, IntType(7, True)),  # multiplier blocks; one word a group
    ],
)
def test_dense_simd_exact_and_timed(n, o, p, simd, wbits, t) -> None:
    """SIMD S: each lane multiplies S inputs a cycle (a buffer word) and sums them in a
    stage of its own. Bit-exact, every output on the timing's cycles (latency n + n/S +
    6, interval the larger of n and the groups' max(n/S, P)), under gaps, and nothing
    lost under back-pressure."""
    rng = np.random.default_rng(n + o + simd)
    node = _dense(rng, n, o, wbits)
    x = _edges(t, (n,), rng)
    ctx = Ctx((t,), ((n,),), parallelism=p, simd=simd)
    y, block, ins, outs = _run(node, ctx, x)
    assert np.array_equal(y, node.eval(x))
    assert outs[0, 0] - ins[0, 0] == block.cycles.latency == n + n // simd + 6
    assert np.array_equal(outs[0], block.cycles.timing(ins[0]))
    groups, short = -(-o // p), o - (-(-o // p) - 1) * p
    steps = (groups - 1) * max(n // simd, p) + max(n // simd, short)
    assert np.diff(outs[:, 0])[-1] == block.cycles.interval == max(n, steps)
    y, block, ins, outs = _run(node, ctx, x[:1], gaps=0.5, seed=1)
    assert np.array_equal(outs[0], block.cycles.timing(ins[0]))
    y, *_ = _run(node, ctx, x, gaps=0.3, stalls=0.6, seed=2)
    assert np.array_equal(y, node.eval(x))


def _shift(c: int, rounding: str, rng, in_t: IntType) -> Shift:
    k = rng.integers(-2, 5, c)
    k[:3] = (3, 0, -1)  # a right shift, none, a left shift
    lo, hi = rng.integers(-20, 1, c), rng.integers(10, 100, c)
    out = int_type_for_range(lo.min(), hi.max())
    return Shift("s", ("x",), (c,), out, ONE, shift=k, rounding=rounding, lo=lo, hi=hi)


@pytest.mark.parametrize("rounding", ["half_even", "floor"])
@pytest.mark.parametrize("t", [IntType(10, True), IntType(8, False), IntType(1, False)])
def test_shift_rounds_ties_and_clips_per_channel(rounding, t) -> None:
    rng = np.random.default_rng(1)
    c = 8
    node = _shift(c, rounding, rng, t)
    x = _edges(t, (c,), rng, n=10)
    r = np.maximum(node.shift, 0)
    ties = (np.arange(c) - 4) * (1 << r) + np.where(r > 0, 1 << np.maximum(r - 1, 0), 0)
    x[3] = np.clip(ties, t.lo, t.hi)  # exact halves: even and odd quotients
    x[4] = np.clip(ties + (1 << r), t.lo, t.hi)
    y, *_ = _run(node, Ctx((t,), ((c,),)), x, gaps=0.2, stalls=0.3)
    assert np.array_equal(y, node.eval(x))


def test_shift_per_tensor_on_hwc_stream() -> None:
    rng = np.random.default_rng(2)
    t, shape = IntType(12, True), (3, 2, 4)
    k = np.array([1, 4, -1])
    node = Shift(
        "s",
        ("x",),
        shape,
        IntType(8, True),
        ONE,
        shift=k,
        rounding="half_even",
        lo=np.array([-128, 0, -5]),
        hi=np.array([127, 100, 5]),
    )
    x = _edges(t, shape, rng)
    y, block, ins, outs = _run(node, Ctx((t,), (shape,), "hwc"), x)
    assert np.array_equal(y, node.eval(x))
    assert np.array_equal(outs, ins + block.cycles.latency)
    assert block.cycles.latency == SHIFT_STAGES


def test_threshold_bank_per_channel_both_signs() -> None:
    rng = np.random.default_rng(4)
    c, t = 5, IntType(9, True)
    thr = np.sort(rng.integers(-300, 300, (c, 6)), axis=1)
    thr[1, 3:] = 1000  # unused entries: above the input range
    node = Threshold(
        "t",
        ("x",),
        (c,),
        IntType(5, True),
        ONE,
        thresholds=thr,
        base=np.array([0, -3, 2, 7, -8]),
        sign=np.array([1, 1, -1, -1, 1]),
    )
    x = _edges(t, (c,), rng, n=12)
    x[3] = thr[:, 2]
    x[4] = thr[:, 2] - 1  # at and just below a threshold
    y, *_ = _run(node, Ctx((t,), ((c,),)), x, gaps=0.3, stalls=0.3)
    assert np.array_equal(y, node.eval(x))


@pytest.mark.parametrize(("c", "n", "block"), [(16, 127, 4), (40, 120, 7)])
def test_threshold_bank_deep_per_channel_tables(c, n, block) -> None:
    """Level ROMs of fewer than 64 words in LUTs; deeper ones in block RAM, one stage more
    each: 64 to 1024 words one bank, 2048 and 4096 in banks of 1024 whose words are
    registered a stage before one is chosen. Thresholds out of the input range at both
    ends."""
    rng = np.random.default_rng(c)
    t = IntType(12, True)
    thr = np.sort(rng.integers(-2100, 2100, (c, n)), axis=1)
    node = Threshold("t", ("x",), (c,), IntType(8, True), ONE, thresholds=thr,
                     base=rng.integers(-60, -50, c), sign=np.ones(c, np.int64))  # fmt: skip
    x = _edges(t, (c,), rng, n=8)
    x[3] = thr[:, n // 2]
    y, blk, *_ = _run(node, Ctx((t,), ((c,),)), x, gaps=0.2, stalls=0.2)
    assert np.array_equal(y, node.eval(x))
    assert blk.cycles.latency == threshold_stages(7, block)


@pytest.mark.parametrize("n", [0, 1])
def test_threshold_bank_narrow_negative_levels_in_a_wide_output(n) -> None:
    """Levels that fit fewer bits than the output type (no threshold at all: the level is
    the base) keep their sign: -1 in an i7 output is -1, not 7 (found by hypothesis)."""
    rng = np.random.default_rng(5)
    c, t = 4, IntType(3, False)
    node = Threshold(
        "t",
        ("x",),
        (c,),
        IntType(7, True),
        ONE,
        thresholds=np.full((c, n), 4, dtype=np.int64),
        base=np.array([-1, 1, 0, -1]),
        sign=np.array([1, 1, 1, -1]),
    )
    x = _edges(t, (c,), rng)
    y, *_ = _run(node, Ctx((t,), ((c,),)), x)
    assert np.array_equal(y, node.eval(x)) and (y < 0).any()


def _poly(coeffs: np.ndarray, t: IntType, shape: tuple[int, ...]) -> Poly:
    """A Poly node with its stage types bounded by interval arithmetic over t's range."""
    stages, lo, hi = [], coeffs[:, 0].copy(), coeffs[:, 0].copy()
    for k in range(1, coeffs.shape[1]):
        ends = np.stack([lo * t.lo, lo * t.hi, hi * t.lo, hi * t.hi])
        lo, hi = ends.min(0) + coeffs[:, k], ends.max(0) + coeffs[:, k]
        stages.append(int_type_for_range(lo.min(), hi.max()))
    out = stages[-1] if stages else int_type_for_range(lo.min(), hi.max())
    return Poly("p", ("x",), shape, out, ONE, coeffs=coeffs, stages=tuple(stages))


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_poly_horner_pipelined(degree) -> None:
    rng = np.random.default_rng(degree)
    c, t = 4, IntType(6, True)
    coeffs = rng.integers(-9, 10, (c, degree + 1))
    node = _poly(coeffs, t, (c,))
    x = _edges(t, (c,), rng, n=8)
    y, block, ins, outs = _run(node, Ctx((t,), ((c,),)), x, gaps=0.2, stalls=0.2)
    assert np.array_equal(y, node.eval(x))
    y, block, ins, outs = _run(node, Ctx((t,), ((c,),)), x)
    assert block.cycles.latency == poly_stages(degree, t.bits) and np.array_equal(
        outs, ins + block.cycles.latency
    )
    assert np.diff(outs[:, 0])[-1] == block.cycles.interval == c


@pytest.mark.parametrize(
    ("t", "same"),
    [(IntType(8, True), True), (IntType(7, False), False), (IntType(10, True), False),
     (IntType(3, True), True)],
)  # fmt: skip
def test_poly_multiplies_by_elements_of_every_width(t, same) -> None:
    """Elements of up to 4 bits, up to 8, and wider (a multiplier block); coefficients
    the same for every channel (constants) or not."""
    rng = np.random.default_rng(t.bits)
    c = 3
    coeffs = rng.integers(-20, 21, (1 if same else c, 3))
    node = _poly(np.repeat(coeffs, c // len(coeffs), axis=0), t, (c,))
    x = _edges(t, (c,), rng, n=10)
    y, block, *_ = _run(node, Ctx((t,), ((c,),)), x, gaps=0.2, stalls=0.2)
    assert np.array_equal(y, node.eval(x))
    assert block.cycles.depth == poly_stages(2, t.bits)


def test_poly_one_result_per_cycle_on_hwc() -> None:
    rng = np.random.default_rng(9)
    t, shape = IntType(4, False), (2, 3, 3)
    node = _poly(rng.integers(-5, 6, (2, 3)), t, shape)
    x = _edges(t, shape, rng)
    y, _, _, outs = _run(node, Ctx((t,), (shape,), "hwc"), x)
    assert np.array_equal(y, node.eval(x))
    assert np.array_equal(np.diff(outs.reshape(-1)), np.ones(outs.size - 1))


def _layernorm(rng, f: int, bits: int) -> tuple[LayerNorm, Ctx]:
    spec = layernorm_spec(f, in_bits=bits)
    top = 1 << (spec.gamma_bits - 1)
    t = IntType(bits, True)
    node = LayerNorm.sized(
        [as_range(t.lo, t.hi)], name="ln", inputs=("x",), shape=(f,), scale=ONE,
        gamma=rng.integers(-top, top, f), beta=rng.integers(-(1 << 12), 1 << 12, f), spec=spec,
    )  # fmt: skip
    return node, Ctx((t,), ((f,),))


@pytest.mark.parametrize(("f", "bits"), [(1, 4), (3, 8), (8, 6), (5, 2), (16, 8)])
def test_layernorm_exact_and_timed(f, bits) -> None:
    """Constant samples (no variance: sigma 1), extremes and random ones, exact; the
    transfers in the cycles its timing gives."""
    rng = np.random.default_rng(f)
    node, ctx = _layernorm(rng, f, bits)
    x = _edges(ctx.in_type, (f,), rng, 8)
    y, block, ins, outs = _run(node, ctx, x)
    assert np.array_equal(y, node.eval(x))
    c = block.cycles
    assert outs[0, 0] - ins[0, 0] == c.latency and ins[1, 0] - ins[0, 0] == c.interval
    assert np.array_equal(outs[0], c.timing(ins[0]))


def _gelu(bits: int, scale: float, c: int = 3, lo: int | None = None) -> tuple[Gelu, Ctx]:
    t = IntType(bits, True)
    r = as_range(t.lo if lo is None else lo, t.hi)
    node = Gelu.sized([r], name="g", inputs=("x",), shape=(c,), scale=ONE,
                      spec=gelu_spec(scale, in_bits=bits))  # fmt: skip
    return node, Ctx((t,), ((c,),))


@pytest.mark.parametrize(("bits", "scale", "lo"), [(8, 2**-4, None), (6, 2**-2, None),
                                                   (8, 2**-6, 0), (4, 2**-1, None)])  # fmt: skip
def test_gelu_every_input_exact_and_timed(bits, scale, lo) -> None:
    """Every input of the range (lo 0: the output type unsigned where GELU stays >= 0)."""
    node, ctx = _gelu(bits, scale, lo=lo)
    xs = np.arange(ctx.in_type.lo if lo is None else lo, ctx.in_type.hi + 1)
    x = np.resize(xs, (-(-len(xs) // 3), 3))
    y, block, ins, outs = _run(node, ctx, x)
    assert np.array_equal(y, node.eval(x))
    assert np.array_equal(outs, ins + block.cycles.depth)


def test_parallelism_is_kept_or_rounded_up_with_a_note_and_the_impossible_refused() -> None:
    node = _dense(np.random.default_rng(0), 4, 12)
    assert resolve_parallelism(node, 5, 12) == (5, 1, "")  # dense: a last group of 2 lanes
    assert resolve_parallelism(node, (5, 3), 12) == (  # SIMD: a divisor of the 4 inputs
        5, 4, "SIMD 3 does not divide 4 inputs; rounded up to 4")  # fmt: skip
    conv = Conv2d("d", ("x",), (12, 3, 3), node.dtype, ONE, weight=np.ones((12, 1, 3, 3)),
                  bias=np.zeros(12), stride=(1, 1), padding=(1, 1), groups=2)  # fmt: skip
    assert resolve_parallelism(conv, 5, 12) == (  # a grouped conv's lanes share one group
        6,
        1,
        "parallelism 5 does not divide 6 outputs; rounded up to 6",
    )
    assert resolve_parallelism(node, None, 12) == (12, 1, "")
    for bad in (0, -1, 13, 2.0, True, (5, 0), (5, 5), (5, 2, 1)):
        with pytest.raises(
            CosynError, match=r"^d: (parallelism|SIMD) must be an integer from 1 to"
        ):
            resolve_parallelism(node, bad, 12)
    with pytest.raises(CosynError, match="a shift block takes no SIMD"):
        resolve_parallelism(Shift("d", ("x",), (4,), node.dtype, ONE, shift=np.zeros(1)), (1, 2), 1)


def control_run(ctl, n_in: list[int], n_out: int, offers, readies) -> tuple[list, list]:
    """Step a block's control model `ctl` with input j's element k offered in the cycles
    where offers[j] is True (once k-1 is taken) and the output ready where `readies` is:
    the cycles each input's elements are taken and outputs leave."""
    taken: list[list[int]] = [[] for _ in n_in]
    outs: list[int] = []
    for t, rdy in enumerate(readies):
        offered = [bool(o[t] and len(k) < n) for o, k, n in zip(offers, taken, n_in, strict=True)]
        if ctl.valid()[0] and rdy:
            outs.append(t)
        takes = [o and r for o, r in zip(offered, ctl.ready(offered, [bool(rdy)]), strict=True)]
        for j, tk in enumerate(takes):
            if tk:
                taken[j].append(t)
        ctl.step(takes, [bool(rdy)])
        if len(outs) == n_out:
            break
    return taken, outs


def sim_run(block, ports, values, n_out: int, offers, readies) -> tuple[list, list, list]:
    """The block in the Amaranth simulator under the same offers and readies, its input
    streams `ports` fed `values`: the cycles each input's elements are taken and outputs
    leave, and the output values."""
    from amaranth.sim import Simulator

    taken: list[list[int]] = [[] for _ in ports]
    outs: list[int] = []
    ys: list[int] = []

    async def bench(ctx) -> None:
        for t, rdy in enumerate(readies):
            for j, (p, vals) in enumerate(zip(ports, values, strict=True)):
                k = len(taken[j])
                ctx.set(p.valid, bool(offers[j][t] and k < len(vals)))
                if k < len(vals):
                    ctx.set(p.payload, int(vals[k]))
            ctx.set(block.o.ready, bool(rdy))
            for j, p in enumerate(ports):
                if ctx.get(p.valid) and ctx.get(p.ready):
                    taken[j].append(t)
            if ctx.get(block.o.valid) and rdy:
                outs.append(t)
                ys.append(int(ctx.get(block.o.payload)))
                if len(outs) == n_out:
                    return
            await ctx.tick()

    sim = Simulator(block)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return taken, outs, ys


def _blocks_under_back_pressure():
    rng = np.random.default_rng(11)
    t8 = IntType(8, False)
    yield _dense(rng, 5, 6), Ctx((t8,), ((5,),), parallelism=6)  # P > N: the head slot
    yield _dense(rng, 9, 6), Ctx((t8,), ((9,),), parallelism=2)
    t6 = IntType(6, True)
    yield _dense(rng, 4, 4, wbits=7), Ctx((t6,), ((4,),), parallelism=2)  # a DSP multiply
    yield _poly(rng.integers(-9, 10, (3, 3)), t6, (3,)), Ctx((t6,), ((3,),))
    thr = np.sort(rng.integers(-40, 40, (3, 5)), axis=1)
    node = Threshold("t", ("x",), (3,), IntType(4, True), ONE, thresholds=thr,
                     base=np.array([0, -2, 1]), sign=np.array([1, -1, 1]))  # fmt: skip
    yield node, Ctx((t6,), ((3,),))
    from test_rtl_conv_add import conv_node

    yield conv_node(2, 4, 4, 4, 3, 1, 1, t6), Ctx((t6,), ((2, 4, 4),), "hwc", parallelism=4)
    yield _layernorm(rng, 4, 6)
    yield _gelu(6, 2**-3)


@pytest.mark.parametrize("case", range(8))
def test_blocks_follow_their_control_under_back_pressure(case) -> None:
    """With random gaps on the input and random back-pressure on the output, every
    input and output transfer happens in the cycle the block's control model says,
    and the outputs are exact."""
    node, ctx = list(_blocks_under_back_pressure())[case]
    block = COMPONENTS[node.kind](node, ctx)
    rng = np.random.default_rng(case)
    samples = 3
    x = rng.integers(ctx.in_type.lo, ctx.in_type.hi + 1, (samples, *ctx.in_shape))
    values = x.reshape(samples, -1)[:, ctx.index()].reshape(-1)
    n_in, n_out = len(values), samples * int(np.prod(node.shape))
    cycles = 40 * (n_in + n_out) + 400
    offers, readies = rng.random(cycles) >= 0.3, rng.random(cycles) >= 0.4
    taken, outs, ys = sim_run(block, [block.i], [values], n_out, [offers], readies)
    assert (taken, outs) == control_run(block.cycles.control(), [n_in], n_out, [offers], readies)
    out_order = stream_index(node.shape, "hwc" if len(node.shape) == 3 else "flat")
    y = np.asarray(ys).reshape(samples, -1)[:, np.argsort(out_order)]
    assert np.array_equal(y.reshape(samples, *node.shape), node.eval(x))


@pytest.mark.parametrize("depth", [2, 3, 7])
def test_skip_fifo_follows_its_control_under_back_pressure(depth) -> None:
    from cosyn.hw.rtl._add import SkipFifo
    from cosyn.perfmodel.blocks import FifoTiming

    rng = np.random.default_rng(depth)
    values = rng.integers(-128, 128, 60)
    fifo = SkipFifo(IntType(8, True), depth)
    offers, readies = rng.random(900) >= 0.3, rng.random(900) >= 0.5
    taken, outs, ys = sim_run(fifo, [fifo.i], [values], len(values), [offers], readies)
    ctl = FifoTiming(depth, len(values)).control()
    assert (taken, outs) == control_run(ctl, [len(values)], len(values), [offers], readies)
    assert ys == values.tolist()
