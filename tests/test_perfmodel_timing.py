"""Each block's closed forms (latency, interval, timing, transfers) equal its cycle model
(`control()`, stepped by `drive`) on generated sizes and arrival patterns. The RTL
tests hold the cycle models to the simulation; these hold the closed forms to them."""

from __future__ import annotations

import numpy as np
from cosyn.perfmodel.blocks import (
    AddTiming,
    DenseTiming,
    ElementwiseTiming,
    FifoTiming,
    ForkTiming,
    drive,
)
from cosyn.perfmodel.conv import ConvGeometry, ConvTiming
from hypothesis import given, settings
from hypothesis import strategies as st

from cosyn.ir.nodes import Conv2d, IntType

SAMPLES = 4


def _arrivals(data, n: int) -> np.ndarray:
    """n transfer cycles of a producer (one element a cycle at most), gaps drawn."""
    gaps = data.draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    return np.cumsum(gaps).astype(np.int64) - gaps[0]


def _check(timing, n_in: int, n_out: int, data) -> None:
    """One sample with gaps: timing() and transfers() equal the control's; several at
    full rate: latency and the steady-state interval equal the control's."""
    arr = [_arrivals(data, n_in) for _ in range(timing.inputs)]
    taken, outs = drive(timing, arr, n_out)
    want = timing.timing(*arr)
    for o in outs:
        assert np.array_equal(o, want)
    for t, w in zip(taken, timing.transfers(*arr), strict=True):
        assert np.array_equal(t, w)
    full = [np.zeros(SAMPLES * n_in, np.int64)] * timing.inputs
    taken, outs = drive(timing, full, SAMPLES * n_out)
    firsts = outs[0][::n_out]
    assert firsts[0] - taken[0][0] == timing.latency
    assert np.diff(firsts)[-1] == timing.interval


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 12), st.data())
def test_dense_closed_forms_equal_its_control(n, outputs, data) -> None:
    p = data.draw(st.sampled_from([d for d in range(1, outputs + 1) if outputs % d == 0]))
    t = DenseTiming(n, outputs, p)
    assert t.interval == -(-outputs // p) * max(n, p)
    _check(t, n, outputs, data)


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


@settings(max_examples=15, deadline=None)
@given(
    st.integers(1, 3), st.integers(3, 7), st.integers(3, 7), st.integers(1, 4),
    st.integers(1, 3), st.integers(1, 2), st.integers(0, 1), st.data(),
)  # fmt: skip
def test_conv_schedule_equals_its_control(c, h, w, o, k, s, pad, data) -> None:
    """`ConvSchedule.run` (which jumps over the middle of windows) equals the control
    stepped one cycle at a time."""
    oh, ow = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    if min(oh, ow) < 1:
        return
    p = data.draw(st.sampled_from([d for d in range(1, o + 1) if o % d == 0]))
    node = Conv2d(
        "c", ("x",), (o, oh, ow), IntType(16, True), np.ones(1, np.float32),
        weight=np.ones((o, c, k, k), np.int64), bias=np.zeros(o, np.int64),
        stride=(s, s), padding=(pad, pad),
    )  # fmt: skip
    try:
        geo = ConvGeometry.of(node, (c, h, w), p)
    except ValueError:
        return  # every window in the padding
    _check(ConvTiming(geo), c * h * w, o * oh * ow, data)
