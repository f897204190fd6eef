"""Each block's closed forms (latency, interval, timing, transfers) equal its cycle model
(`control()`, stepped by `drive`) on generated sizes and arrival patterns, and so do
its shortcuts (`quiet` and `skip`: many cycles at once). The RTL tests hold the cycle
models to the simulation; these hold the closed forms and shortcuts to them."""

from __future__ import annotations

import copy

import numpy as np
from cosyn.perfmodel.blocks import (
    AddTiming,
    DenseTiming,
    ElementwiseTiming,
    FifoTiming,
    ForkTiming,
    drive,
)
from cosyn.perfmodel.chain import Chain
from cosyn.perfmodel.conv import ConvGeometry, ConvTiming
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cosyn.ir.nodes import Conv2d, IntType

SAMPLES = 4


def _arrivals(data, n: int) -> np.ndarray:
    """n transfer cycles of a producer (one element a cycle at most), gaps drawn."""
    gaps = data.draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    return np.cumsum(gaps).astype(np.int64) - gaps[0]


def _check(timing, n_in: int, n_out: int, data, samples: int = SAMPLES) -> None:
    """One sample with gaps: timing() and transfers() equal the control's; `samples` at
    full rate: latency and the steady-state interval equal the control's."""
    arr = [_arrivals(data, n_in) for _ in range(timing.inputs)]
    taken, outs = drive(timing, arr, n_out)
    want = timing.timing(*arr)
    for o in outs:
        assert np.array_equal(o, want)
    for t, w in zip(taken, timing.transfers(*arr), strict=True):
        assert np.array_equal(t, w)
    full = [np.zeros(samples * n_in, np.int64)] * timing.inputs
    taken, outs = drive(timing, full, samples * n_out)
    firsts = outs[0][::n_out]
    assert firsts[0] - taken[0][0] == timing.latency
    assert np.diff(firsts)[-1] == timing.interval


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 12), st.data())
def test_dense_closed_forms_equal_its_control(n, outputs, data) -> None:
    p = data.draw(st.integers(1, outputs))  # P need not divide the outputs
    t = DenseTiming(n, outputs, p)
    groups, short = -(-outputs // p), outputs - (-(-outputs // p) - 1) * p
    assert t.interval == max(n, (groups - 1) * max(n, p) + max(n, short))
    _check(t, n, outputs, data)
    terms = data.draw(st.lists(st.integers(1, n), min_size=groups, max_size=groups))
    kept = [np.arange(t) for t in terms]  # zero weights skipped: the count is what times
    # groups of fewer terms than results stall on the output register, and the stalls
    # shift against the input's pace for a few samples (up to 14 where n < 10) before
    # they settle to the interval
    _check(DenseTiming(n, outputs, p, kept), n, outputs, data, samples=32)
    simd = data.draw(st.sampled_from([d for d in range(2, n + 1) if n % d == 0] or [1]))
    t = DenseTiming(n, outputs, p, simd=simd)  # S inputs a term, one more stage
    assert t.interval == max(n, (groups - 1) * max(n // simd, p) + max(n // simd, short))
    _check(t, n, outputs, data, samples=32)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 4), st.integers(1, 10), st.data())
def test_elementwise_fifo_closed_forms_equal_their_controls(depth, n, data) -> None:
    _check(ElementwiseTiming(depth, n), n, n, data)
    _check(FifoTiming(depth, n), n, n, data)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 10), st.data())
def test_add_fork_closed_forms_equal_their_controls(n, data) -> None:
    _check(AddTiming(n), n, n, data)
    _check(ForkTiming(n), n, n, data)


def _conv(c: int, o: int, k: int, s: int, pad: int, oh: int, ow: int) -> Conv2d:
    return Conv2d(
        "c", ("x",), (o, oh, ow), IntType(16, True), np.ones(1, np.float32),
        weight=np.ones((o, c, k, k), np.int64), bias=np.zeros(o, np.int64),
        stride=(s, s), padding=(pad, pad),
    )  # fmt: skip


@st.composite
def conv_timings(draw) -> tuple[ConvTiming, int, int]:
    """A conv2d's timing (channels, image, outputs, kernel, stride, padding, a parallelism
    (P need not divide the outputs) and the terms each group issues, or a SIMD dividing
    the channels, and spare line-buffer rows drawn), its input and output elements."""
    c, h, w, o = (draw(st.integers(lo, hi)) for lo, hi in ((1, 3), (3, 7), (3, 7), (1, 4)))
    k, s, pad = (draw(st.integers(lo, hi)) for lo, hi in ((1, 3), (1, 2), (0, 1)))
    oh, ow = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    assume(min(oh, ow) >= 1)
    p = draw(st.integers(1, o))
    groups, terms = -(-o // p), k * k * c
    # where the block skips zero weights, the terms each group issues (their count times)
    counts = draw(st.none() | st.lists(st.integers(1, terms), min_size=groups, max_size=groups))
    simd = (
        draw(st.sampled_from([d for d in range(1, c + 1) if c % d == 0])) if counts is None else 1
    )
    spare = draw(st.integers(0, 2))
    try:
        geo = ConvGeometry.of(
            _conv(c, o, k, s, pad, oh, ow), (c, h, w), p, counts and tuple(counts), simd, spare
        )
    except ValueError:
        assume(False)  # every window in the padding
    kept = None if counts is None else [np.arange(n) for n in counts]
    return ConvTiming(geo, kept), c * h * w, o * oh * ow


@settings(max_examples=15, deadline=None)
@given(conv_timings(), st.data())
def test_conv_schedule_equals_its_control(conv, data) -> None:
    """`ConvSchedule.run` (which jumps over the middle of windows and whole pixels)
    equals the control stepped one cycle at a time; so do a sample at full rate (the
    first of `ConvSchedule.full_rate`) and `stalls` (which stops at the first late
    input)."""
    _check(*conv, data)
    timing, n_in, n_out = conv
    late = _arrivals(data, n_in) + data.draw(st.integers(0, 3))
    for arr in (np.arange(n_in, dtype=np.int64), late):
        taken, outs = drive(timing, [arr], n_out)
        assert timing.stalls(arr) == [not np.array_equal(taken[0], arr)]
        assert np.array_equal(timing.timing(arr), outs[0])
        assert np.array_equal(timing.transfers(arr)[0], taken[0])


@settings(max_examples=40, deadline=None)
@given(conv_timings(), st.data())
def test_conv_schedule_takes_inputs_as_they_arrive(conv, data) -> None:
    """`ConvSchedule.run` and `stalls` count through the gaps between arrivals (each
    input taken as it arrives, `State._takes`): equal to the control stepped one cycle
    at a time for two samples whose inputs come in bursts, with gaps, or on and off in
    a repeating pattern (a producer's outputs, a gap after every pixel). Where the
    first window reads an input, inputs offered s cycles later are taken and leave s
    cycles later (what `conv._run` shares)."""
    timing, n_in, n_out = conv
    j = np.arange(2 * n_in)
    if data.draw(st.booleans()):
        gaps = data.draw(st.lists(st.integers(0, 5), min_size=2 * n_in, max_size=2 * n_in))
        arr = np.cumsum(gaps) - gaps[0]
    else:
        on, off = data.draw(st.integers(1, 9)), data.draw(st.integers(1, 3))
        arr = j + j // on * off
    arr = arr.astype(np.int64)
    taken, outs = drive(timing, [arr], 2 * n_out)
    want_taken, want_out = timing.schedule.run(arr)
    assert np.array_equal(want_taken, taken[0])
    assert np.array_equal(want_out, outs[0])
    later = data.draw(st.integers(1, 40))
    if timing.geo.need(-timing.geo.ph, -timing.geo.pw) >= 0:
        late_taken, late_out = timing.schedule.run(arr + later)
        assert np.array_equal(late_taken, taken[0] + later)
        assert np.array_equal(late_out, outs[0] + later)
    first = arr[:n_in] + later
    taken_first = drive(timing, [first], n_out)[0][0]
    assert timing.stalls(first) == [not np.array_equal(taken_first, first)]
    assert np.array_equal(timing.transfers(first)[0], taken_first)


def _everything(x):
    """A control's whole state, counters and recorded cycles included (not the history
    a shortcut reads: names with a leading underscore)."""
    if isinstance(x, (list, tuple)):
        return tuple(_everything(v) for v in x)
    if isinstance(x, np.ndarray):
        return tuple(x.tolist())
    if hasattr(x, "__dict__") and not isinstance(x, ConvGeometry):
        return tuple((k, _everything(v)) for k, v in vars(x).items() if k[0] != "_")
    return x


def _check_quiet(timing, data, ctl=None) -> None:
    """From a state reached by random inputs, then inputs held for a while (where a
    control may find that it repeats), `skip(n)` for any n up to `quiet` equals n steps
    under the same inputs, through which valid and ready do not change. `ctl`: the
    control to check, where not `timing.control()`."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    busy = data.draw(st.floats(0.3, 1.0))
    ctl = timing.control() if ctl is None else ctl
    for _ in range(data.draw(st.integers(0, 120))):
        iv = list(rng.random(timing.inputs) < busy)
        orr = list(rng.random(timing.outputs) < busy)
        ctl.step([v and r for v, r in zip(iv, ctl.ready(iv, orr), strict=True)], orr)
    iv = [bool(x) for x in rng.random(timing.inputs) < busy]
    orr = [bool(x) for x in rng.random(timing.outputs) < busy]
    for _ in range(data.draw(st.sampled_from([0, 0, 10, 100, 400]))):
        ctl.step([v and r for v, r in zip(iv, ctl.ready(iv, orr), strict=True)], orr)
    q = ctl.quiet(iv, orr)
    n = min(q, data.draw(st.one_of(st.integers(0, 64), st.integers(0, 2000))))
    ref, signals = copy.deepcopy(ctl), (ctl.valid(), ctl.ready(iv, orr))
    for _ in range(n):
        ref.step([v and r for v, r in zip(iv, ref.ready(iv, orr), strict=True)], orr)
        assert (ref.valid(), ref.ready(iv, orr)) == signals
    ctl.skip(n, iv, orr)
    assert _everything(ctl) == _everything(ref)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["dense", "elementwise", "fifo", "add", "fork"]), st.data())
def test_block_shortcuts_equal_their_controls(kind, data) -> None:
    size = data.draw(st.integers(1, 9))
    if kind == "dense":
        outputs = data.draw(st.integers(1, 12))
        p = data.draw(st.integers(1, outputs))
        groups = -(-outputs // p)
        terms = data.draw(st.none() | st.lists(st.integers(1, size), min_size=groups,
                                                  max_size=groups))  # fmt: skip
        kept = None if terms is None else [np.arange(t) for t in terms]
        timing = DenseTiming(size, outputs, p, kept)
    else:
        depth = data.draw(st.integers(2, 6))
        timing = {"elementwise": ElementwiseTiming(depth, size), "fifo": FifoTiming(depth, size),
                  "add": AddTiming(size), "fork": ForkTiming(size)}[kind]  # fmt: skip
    _check_quiet(timing, data)


@settings(max_examples=150, deadline=None)
@given(conv_timings(), st.data())
def test_conv_shortcuts_equal_its_control(conv, data) -> None:
    _check_quiet(conv[0], data)


@st.composite
def chains(draw) -> list:
    """The timings of a run of one to three elementwise blocks, with a FIFO behind them
    or not (two stages at least): what `perfmodel.chain.Chain` steps as one."""
    run = [ElementwiseTiming(draw(st.integers(1, 9)), 1) for _ in range(draw(st.integers(1, 3)))]
    if draw(st.booleans()):
        run.append(FifoTiming(draw(st.integers(2, 40)), 1))
    assume(len(run) >= 2)
    return run


@settings(max_examples=100, deadline=None)
@given(chains(), st.data())
def test_chain_steps_as_its_stages(timings, data) -> None:
    """Under a random input valid and output ready each cycle, `Chain` has the valid,
    ready and registers of its stages' controls stepped one by one, each stage taking
    from the one before when that offers and it is ready."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    busy = data.draw(st.floats(0.3, 1.0))
    chain, ctls = Chain(timings), [t.control() for t in timings]
    for _ in range(data.draw(st.integers(1, 300))):
        x, r = (bool(b) for b in rng.random(2) < busy)
        valids = [[x]] + [c.valid() for c in ctls[:-1]]
        ors, readies = [[r]], []
        for c, iv in zip(ctls[::-1], valids[::-1], strict=True):
            readies.insert(0, c.ready(iv, ors[0]))
            ors.insert(0, readies[0])
        ors = ors[1:]
        assert chain.valid() == ctls[-1].valid()
        assert chain.ready([x], [r]) == readies[0]
        chain.step([x and readies[0][0]], [r])
        for c, iv, rd, orr in zip(ctls, valids, readies, ors, strict=True):
            c.step([iv[0] and rd[0]], orr)
        assert _everything(chain.parts) == _everything(ctls)


@settings(max_examples=150, deadline=None)
@given(chains(), st.data())
def test_chain_shortcuts_equal_its_steps(timings, data) -> None:
    _check_quiet(timings[0], data, Chain(timings))
