"""An in-process Amaranth testbench for element streams: drive, sink, and time every transfer.

One coroutine does everything, cycle by cycle: it offers each input's next element
(after an optional random gap), sets the output's ready (random back-pressure when
asked), lets the logic settle, records which transfers happen on the coming clock
edge, and ticks. The cycle numbers it returns are what the manifest's latency and
interval are measured against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from amaranth.sim import Simulator

__all__ = ["Port", "StreamRun", "run_streams"]


@dataclass(frozen=True)
class Port:
    """The valid, ready and data signals of one stream port."""

    valid: object
    ready: object
    data: object
    last: object = None

    @classmethod
    def of(cls, s) -> Port:
        """The Port of an Amaranth `lib.stream` interface."""
        return cls(s.valid, s.ready, s.payload)


@dataclass
class StreamRun:
    """What a run saw: output values, and the cycle of each input and output transfer."""

    values: list[int] = field(default_factory=list)
    in_cycles: dict[str, list[int]] = field(default_factory=dict)
    out_cycles: list[int] = field(default_factory=list)
    lasts: list[int] = field(default_factory=list)


def run_streams(
    dut,
    inputs: dict[str, tuple[Port, Sequence[int]]],
    output: Port,
    n_out: int,
    *,
    gaps: float = 0.0,
    stalls: float = 0.0,
    seed: int = 0,
    limit: int = 200_000,
    extra=(),
) -> StreamRun:
    """Stream `inputs` (name -> (port, values)) through `dut` and collect `n_out` outputs.

    `gaps` / `stalls`: probability that an input holds back an element / that the
    output is not ready, in each cycle. `extra`: (signal, value) pairs set once.
    """
    rng = np.random.default_rng(seed)
    run = StreamRun(in_cycles={k: [] for k in inputs})
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def bench(ctx) -> None:
        for sig, v in extra:
            ctx.set(sig, v)
        pos = {k: 0 for k in inputs}
        for cycle in range(limit):
            for k, (port, vals) in inputs.items():
                offer = pos[k] < len(vals) and (gaps == 0 or rng.random() >= gaps)
                ctx.set(port.valid, offer)
                if offer:
                    ctx.set(port.data, int(vals[pos[k]]))
            ctx.set(output.ready, stalls == 0 or rng.random() >= stalls)
            for k, (port, _) in inputs.items():
                if ctx.get(port.valid) and ctx.get(port.ready):
                    run.in_cycles[k].append(cycle)
                    pos[k] += 1
            if ctx.get(output.valid) and ctx.get(output.ready):
                run.values.append(int(ctx.get(output.data)))
                run.out_cycles.append(cycle)
                if output.last is not None:
                    run.lasts.append(int(ctx.get(output.last)))
                if len(run.values) == n_out:
                    return
            await ctx.tick()
        raise AssertionError(f"only {len(run.values)} of {n_out} outputs in {limit} cycles")

    sim.add_testbench(bench)
    sim.run()
    return run


def run_top(top, xi: np.ndarray, *, gaps: float = 0.0, stalls: float = 0.0, seed: int = 0):
    """Stream integer samples `xi` (batch first, graph layout) through a `Top`; returns
    (outputs in graph layout, int64; input transfer cycles and output transfer cycles,
    both (batch, elements) in stream order). 3-D tensors travel in HWC order.
    Raises AssertionError where tlast is not on exactly the last
    element of each sample."""
    xi = np.asarray(xi, dtype=np.int64)
    n = len(xi)
    if xi.ndim == 4:  # (C, H, W) samples stream in HWC order
        xi = xi.transpose(0, 2, 3, 1)
    man_out = top.plan.sink.elements
    src = Port(top.s_axis_tvalid, top.s_axis_tready, top.s_axis_tdata)
    sink = Port(top.m_axis_tvalid, top.m_axis_tready, top.m_axis_tdata, top.m_axis_tlast)
    mask = (1 << src.data.shape().width) - 1
    run = run_streams(
        top,
        {"s": (src, (xi.reshape(-1) & mask).tolist())},
        sink,
        n * man_out,
        gaps=gaps,
        stalls=stalls,
        seed=seed,
    )
    y = np.asarray(run.values, dtype=np.int64)
    width = sink.data.shape().width
    if top.out_type.signed:
        y = np.where(y >= 1 << (width - 1), y - (1 << width), y)
    lasts = np.asarray(run.lasts).reshape(n, man_out)
    expect = np.zeros_like(lasts)
    expect[:, -1] = 1
    assert np.array_equal(lasts, expect), "m_axis_tlast is not on the last element of each sample"
    ins = np.asarray(run.in_cycles["s"]).reshape(n, -1)
    shape = top.plan.sink.shape
    y = y.reshape(n, man_out)
    if len(shape) == 3:
        c, h, w = shape
        y = y.reshape(n, h, w, c).transpose(0, 3, 1, 2)
    return y.reshape(n, *shape), ins, np.asarray(run.out_cycles).reshape(n, man_out)
