"""Each RTL block's timing, defined once: the cycle model of its control.

A block's timing is a class here with
  `latency`   cycles from the first input transfer of a sample to its first output
              transfer, the block idle, inputs at full rate, output always ready;
  `interval`  cycles per sample in steady state (inputs always offered, output ready);
  `timing(*arrivals)`    output transfer cycles of one sample (one per output element,
              stream order), given the cycles each input element is offered (the
              producer's transfer cycles: increasing);
  `transfers(*arrivals)` the cycles those input elements are taken;
  `key`       what the timing depends on (a hashable tuple);
  `control()` the cycle model of the block's control: the same registers and
              conditions as its RTL, without the data, stepped one clock at a time
              (`valid()`, `ready(valids, oready)`, `step(takes, oready)`).
Closed forms (`latency`, `interval`, `timing`) sit beside the control they describe
and tests hold them to it (`drive`) and to the RTL simulation. The pipeline
(`perfmodel.pipeline`) composes these; the RTL blocks carry the same object as
`block.cycles`, and the manifest is written from the composition.

`TIMINGS[kind](node, ctx)` builds a node's timing; `ctx` is the pipeline's `Ctx`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from cosyn.perfmodel.conv import ConvGeometry, ConvTiming

__all__ = [
    "TIMINGS",
    "AddTiming",
    "ConvTiming",
    "DenseTiming",
    "ElementwiseTiming",
    "FifoTiming",
    "ForkTiming",
    "drive",
    "lockstep",
]


def lockstep(*offers: np.ndarray) -> np.ndarray:
    """Cycles a stage taking one element per cycle takes element k of every input
    together, input j's element k offered from offers[j][k] (output always ready)."""
    ready = np.maximum.reduce([np.asarray(a, dtype=np.int64) for a in offers])
    k = np.arange(len(ready))
    return np.maximum.accumulate(ready - k) + k


class _Timing:
    """What every block's timing shares: one input and output, inputs taken as offered."""

    inputs, outputs = 1, 1

    def transfers(self, *arrivals: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(a, dtype=np.int64) for a in arrivals]


class ElementwiseTiming(_Timing):
    """`depth` registered stages that advance together unless the last holds a result
    its consumer does not take: every element leaves `depth` cycles after it arrives."""

    def __init__(self, depth: int, elements: int) -> None:
        self.depth, self.elements = depth, elements
        self.latency, self.interval = depth, elements
        self.key = ("elementwise", depth, elements)

    def timing(self, arrivals: np.ndarray) -> np.ndarray:
        return np.asarray(arrivals, dtype=np.int64) + self.depth

    def control(self) -> _ElementwiseControl:
        return _ElementwiseControl(self.depth)


class _ElementwiseControl:
    def __init__(self, stages: int) -> None:
        self.v = [False] * stages

    def valid(self) -> list[bool]:
        return [self.v[-1]]

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        return [not (self.v[-1] and not oready[0])]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        if not (self.v[-1] and not oready[0]):
            self.v = [takes[0], *self.v[:-1]]


class DenseTiming(_Timing):
    """`DenseBlock`: two input buffers of `n` elements, a read stage, an output register.

    A sample's `n` inputs fill one buffer; the cycle after the last, group g of P
    outputs starts reading it, one element per cycle for `period = max(n, p)` cycles
    (a group waits for the previous group's P results to leave the output register),
    and its results leave one per cycle. Latency 2n + 1 at full rate; interval
    groups * max(n, p).
    """

    def __init__(self, n: int, outputs: int, p: int) -> None:
        if outputs % p:
            raise ValueError(f"Parallelism must divide {outputs}, not {p!r}")
        self.n, self.p, self.groups = n, p, outputs // p
        self.period = max(n, p)
        self.latency = 2 * n + 1
        self.interval = self.groups * self.period
        self.key = ("dense", n, outputs, p)

    def timing(self, arrivals: np.ndarray) -> np.ndarray:
        start = int(np.max(arrivals)) + 1  # the first read, a cycle after the last write
        g = np.arange(self.groups)[:, None]
        q = np.arange(self.p)[None, :]
        return (start + self.n + g * self.period + 1 + q).reshape(-1)

    def control(self) -> _DenseControl:
        return _DenseControl(self)


class _DenseControl:
    def __init__(self, t: DenseTiming) -> None:
        self.n, self.p, self.groups = t.n, t.p, t.groups
        self.full = [False, False]
        self.wr_bank = self.wr_i = self.rd_bank = self.g = self.i = self.left = 0
        self.s1_valid = self.s1_last = False

    def valid(self) -> list[bool]:
        return [self.left != 0]

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        return [not self.full[self.wr_bank]]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        free = self.left == 0 or (self.left == 1 and oready[0])
        stall = self.s1_valid and self.s1_last and not free
        issue = self.full[self.rd_bank] and not stall
        load = self.s1_valid and not stall and self.s1_last
        if self.left and oready[0]:
            self.left -= 1
        if load:
            self.left = self.p
        if not stall:
            self.s1_valid, self.s1_last = issue, self.i == self.n - 1
        if takes[0]:
            self.wr_i += 1
            if self.wr_i == self.n:
                self.wr_i = 0
                self.full[self.wr_bank] = True
                self.wr_bank ^= 1
        if issue:
            self.i += 1
            if self.i == self.n:
                self.i, self.g = 0, self.g + 1
                if self.g == self.groups:
                    self.g = 0
                    self.full[self.rd_bank] = False
                    self.rd_bank ^= 1


class AddTiming(_Timing):
    """`AddBlock`: one output register; a pair is taken when both inputs are valid and
    the register is empty or leaving. Latency 1, interval = elements."""

    inputs = 2

    def __init__(self, elements: int) -> None:
        self.elements, self.latency, self.interval = elements, 1, elements
        self.key = ("add", elements)

    def timing(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return lockstep(a, b) + 1

    def transfers(self, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
        both = lockstep(a, b)
        return [both, both]

    def control(self) -> _AddControl:
        return _AddControl()


class _AddControl:
    def __init__(self) -> None:
        self.v = False

    def valid(self) -> list[bool]:
        return [self.v]

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        space = not self.v or oready[0]
        return [valids[1] and space, valids[0] and space]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        if takes[0]:
            self.v = True
        elif oready[0]:
            self.v = False


class ForkTiming(_Timing):
    """`Fork`: one register per output; an element is taken when both are empty or
    leaving. Latency 1; both outputs leave together at full rate."""

    outputs = 2

    def __init__(self, elements: int) -> None:
        self.elements, self.latency, self.interval = elements, 1, elements
        self.key = ("fork", elements)

    def timing(self, arrivals: np.ndarray) -> np.ndarray:
        return lockstep(arrivals) + 1

    def control(self) -> _ForkControl:
        return _ForkControl()


class _ForkControl:
    def __init__(self) -> None:
        self.v = [False, False]

    def valid(self) -> list[bool]:
        return list(self.v)

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        return [all(not v or r for v, r in zip(self.v, oready, strict=True))]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        for j in range(2):
            if takes[0]:
                self.v[j] = True
            elif oready[j]:
                self.v[j] = False


class FifoTiming(_Timing):
    """`SkipFifo` (Amaranth's SyncFIFO) of `depth` elements: written in one cycle,
    readable in the next. Latency 1; interval = elements. (One element deep, it would
    pass one element every two cycles; the pipeline's FIFOs are two or more deep.)"""

    def __init__(self, depth: int, elements: int) -> None:
        if depth < 2:
            raise ValueError(f"FIFO depth must be at least 2, not {depth!r}")
        self.depth, self.elements, self.latency, self.interval = depth, elements, 1, elements
        self.key = ("fifo", depth, elements)

    def timing(self, arrivals: np.ndarray) -> np.ndarray:
        return lockstep(arrivals) + 1

    def control(self) -> _FifoControl:
        return _FifoControl(self.depth)


class _FifoControl:
    def __init__(self, depth: int) -> None:
        self.depth, self.level = depth, 0

    def valid(self) -> list[bool]:
        return [self.level != 0]

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        return [self.level != self.depth]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        self.level += int(takes[0]) - int(self.level != 0 and oready[0])


def drive(timing: Any, arrivals: list[np.ndarray], n_out: int) -> tuple[list, list]:
    """Step `timing.control()` alone, input j's element k offered from `arrivals[j][k]`
    (and not before element k-1 is taken), every output always ready, until `n_out`
    elements have left each output; returns (taken cycles per input, output cycles per
    output). What the closed forms are held to."""
    arrivals = [np.asarray(a, dtype=np.int64) for a in arrivals]
    ctl = timing.control()
    taken: list[list[int]] = [[] for _ in arrivals]
    outs: list[list[int]] = [[] for _ in range(timing.outputs)]
    oready = [True] * timing.outputs
    t = 0
    while min(len(o) for o in outs) < n_out:
        if t > 1_000_000 + 100 * n_out:
            raise RuntimeError(f"{type(timing).__name__} does not finish: {timing.__dict__}")
        offered = [len(k) < len(a) and a[len(k)] <= t for a, k in zip(arrivals, taken, strict=True)]
        for j, v in enumerate(ctl.valid()):
            if v:
                outs[j].append(t)
        takes = [o and r for o, r in zip(offered, ctl.ready(offered, oready), strict=True)]
        for j, tk in enumerate(takes):
            if tk:
                taken[j].append(t)
        ctl.step(takes, oready)
        t += 1
    return [np.array(k) for k in taken], [np.array(o[:n_out]) for o in outs]


def _elementwise(depth: Callable[[Any], int]) -> Callable[[Any, Any], ElementwiseTiming]:
    return lambda node, ctx: ElementwiseTiming(depth(node), ctx.elements)


# node kind -> timing(node, ctx): the one place a kind's timing is chosen
TIMINGS: dict[str, Callable[[Any, Any], Any]] = {
    "dense": lambda node, ctx: DenseTiming(ctx.elements, int(node.shape[0]), ctx.parallelism),
    "conv2d": lambda node, ctx: ConvTiming(ConvGeometry.of(node, ctx.in_shape, ctx.parallelism)),
    "shift": _elementwise(lambda node: 1),
    "threshold": _elementwise(lambda node: 2),
    "poly": _elementwise(lambda node: max(node.degree, 1)),
    "add": lambda node, ctx: AddTiming(ctx.elements),
}
