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
              (`valid()`, `ready(valids, oready)`, `step(takes, oready)`), and its
              shortcut: `quiet(valids, oready)`, how many cycles with those
              inputs only count (valid and ready unchanged after each), and
              `skip(n, valids, oready)`, n of them at once (`perfmodel.steady`).
Closed forms (`latency`, `interval`, `timing`) sit beside the control they describe
and tests hold them (and `quiet`/`skip`) to it (`drive`) and to the RTL simulation. The pipeline
(`perfmodel.pipeline`) composes these; the RTL blocks carry the same object as
`block.cycles`, and the manifest is written from the composition.

`TIMINGS[kind](node, ctx)` builds a node's timing; `ctx` is the pipeline's `Ctx`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from cosyn.perfmodel.conv import ConvGeometry, ConvTiming, with_spare_rows
from cosyn.perfmodel.mac import QUIET, MacPipe, mac_stages, multiply_stages
from cosyn.perfmodel.resources import lane_rows, window_weights
from cosyn.perfmodel.thresholds import block_levels, threshold_cols, threshold_stages

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
    "poly_stages",
    "sparse_terms",
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
    """`depth` registered stages that advance together while the skid register behind
    them is empty: a result the consumer does not take moves there, and the stages
    (and the input) hold until it has left. Every element leaves `depth` cycles after
    it arrives when the output is ready."""

    def __init__(self, depth: int, elements: int) -> None:
        self.depth, self.elements = depth, elements
        self.latency, self.interval = depth, elements
        self.key = ("elementwise", depth, elements)

    def timing(self, arrivals: np.ndarray) -> np.ndarray:
        return np.asarray(arrivals, dtype=np.int64) + self.depth

    def control(self) -> _ElementwiseControl:
        return _ElementwiseControl(self.depth)


class _ElementwiseControl:
    """Bit j of `v`: stage j + 1 holds a result (the last stage's is the output)."""

    def __init__(self, stages: int) -> None:
        self.stages, self.v, self.skid = stages, 0, False
        self.end, self.all = 1 << (stages - 1), (1 << stages) - 1

    def valid(self) -> list[bool]:
        return [self.skid or bool(self.v & self.end)]

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        return [not self.skid]

    def registers(self) -> tuple:
        return self.v, self.skid

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        if self.skid:
            self.skid = not oready[0]
            return
        self.skid = bool(self.v & self.end) and not oready[0]
        self.v = ((self.v << 1) | (1 if takes[0] else 0)) & self.all

    def quiet(self, valids: list[bool], oready: list[bool]) -> int:
        if self.skid:
            return 0 if oready[0] else QUIET
        last = self.v & self.end
        if last and not oready[0]:
            return 0
        # the stages that differ from the output: the nearest reaches it first
        differ = (self.v ^ (self.all if last else 0)) & (self.end - 1)
        if differ:
            return self.stages - 1 - differ.bit_length()
        return QUIET if valids[0] == bool(last) else self.stages - 1

    def skip(self, n: int, valids: list[bool], oready: list[bool]) -> None:
        if not self.skid:
            s = min(n, self.stages)
            self.v = ((self.v << s) | ((1 << s) - 1 if valids[0] else 0)) & self.all


class DenseTiming(_Timing):
    """`DenseBlock`: two input buffers of `n` elements, then the multiply-accumulate
    pipeline and output register of P results (`perfmodel.mac`).

    A sample's `n` inputs fill one buffer; the cycle after the last, group g of P
    outputs starts issuing its `terms[g]` terms, one input element per cycle (all n,
    or where the block skips zero weights, `kept[g]`: `sparse_terms`, those whose P
    weights are not all zero); each passes the `STAGES` stages of the pipeline, and a
    group's `sizes[g]` results leave one per cycle: P, but the last group's where P
    does not divide the outputs (its lanes beyond them hold zero weights, and their
    results are not loaded). Group g's first result leaves max(terms[g], sizes[g-1])
    cycles after group g - 1's (its load waits for the output register, holding the
    pipeline).
    With SIMD S (`simd`, dividing n), a term is S consecutive input elements (one buffer
    word) and each lane sums its S products in a stage of its own (`mac_stages`): n / S
    terms a group. Latency n + terms[0] + stages at full rate; interval the larger of n
    (the input) and the sum over groups of max(terms[g], sizes[g-1]) (group 0 after the
    last).
    """

    def __init__(
        self, n: int, outputs: int, p: int, kept: list[np.ndarray] | None = None, simd: int = 1
    ) -> None:
        if not 1 <= p <= outputs or n % simd:
            raise ValueError(
                f"Parallelism must be 1 to {outputs}, not {p!r}, and SIMD divide {n}, not {simd!r}"
            )
        assert kept is None or simd == 1
        self.n, self.p, self.groups, self.simd = n, p, -(-outputs // p), simd
        self.words, self.stages = n // simd, mac_stages(simd)
        self.sizes = (p,) * (self.groups - 1) + (outputs - (self.groups - 1) * p,)
        self.kept = kept  # the terms each group issues (`sparse_terms`), None: every one
        self.terms = tuple(map(len, kept)) if kept is not None else (self.words,) * self.groups
        assert len(self.terms) == self.groups and all(1 <= t <= n for t in self.terms)
        self.latency = n + self.terms[0] + self.stages
        self.interval = max(n, int(self._steps().sum()))
        self.key = ("dense", n, outputs, p, self.stages, self.terms)

    def _steps(self) -> np.ndarray:
        """Cycles from group g - 1's first result to group g's (g = 0: from the last
        group's, of the sample before)."""
        return np.maximum(self.terms, np.roll(self.sizes, 1))

    @property
    def sparse(self) -> bool:
        """The block skips terms whose weights are all zero."""
        return self.kept is not None

    def timing(self, arrivals: np.ndarray) -> np.ndarray:
        start = int(np.max(arrivals)) + 1  # the first issue, a cycle after the last write
        steps = self._steps()
        firsts = start + self.terms[0] + self.stages + np.cumsum(steps) - steps[0]
        lanes = (firsts[:, None] + np.arange(self.p)[None, :]).reshape(-1)
        return lanes[: sum(self.sizes)]  # the last group's first sizes[-1]

    def control(self) -> _DenseControl:
        return _DenseControl(self)


def sparse_terms(w: np.ndarray, p: int) -> list[np.ndarray] | None:
    """The terms a dense or conv2d block issues where it skips zero weights
    (`DenseBlock`, `Conv2dBlock` without conv groups): per group of P outputs (rows of
    `w`, (outputs, terms) in issue order), the terms whose P weights are not all zero,
    or the first where all are (the group's bias still loads); None where that saves
    less than 1/`SPARSE_SAVING` of the terms (the term ROM it reads would cost more than
    the cycles are worth): the block then issues every term."""
    w = lane_rows(w, p)
    live = (w.reshape(-1, p, w.shape[1]) != 0).any(axis=1)  # (groups, terms)
    kept = [np.flatnonzero(r) if r.any() else np.zeros(1, np.int64) for r in live]
    if (w.size // p - sum(len(k) for k in kept)) * SPARSE_SAVING < w.size // p:
        return None
    return kept


SPARSE_SAVING = 8


def _conv_timing(node: Any, ctx: Any) -> ConvTiming:
    """Without conv groups or SIMD, the block skips zero weights as dense does
    (`sparse_terms`)."""
    p = ctx.parallelism
    skips = node.groups == 1 and ctx.simd == 1
    kept = sparse_terms(window_weights(node), p) if skips else None
    counts = None if kept is None else tuple(map(len, kept))
    geo = ConvGeometry.of(node, ctx.in_shape, p, counts, ctx.simd)
    return ConvTiming(with_spare_rows(geo), kept)


def _dense_timing(node: Any, ctx: Any) -> DenseTiming:
    """Without SIMD, the block skips terms whose P weights are all zero (`sparse_terms`)."""
    outputs, p = int(node.shape[0]), ctx.parallelism
    kept = sparse_terms(node.weight[:, ctx.index()], p) if ctx.simd == 1 else None
    return DenseTiming(ctx.elements, outputs, p, kept, ctx.simd)


class _DenseControl:
    def __init__(self, t: DenseTiming) -> None:
        self.n, self.p, self.groups, self.terms = t.n, t.p, t.groups, t.terms
        self.full = [False, False]
        self.wr_bank = self.wr_i = self.rd_bank = self.g = self.i = 0
        self.mac = MacPipe(t.p, t.sizes[-1], t.stages)

    def valid(self) -> list[bool]:
        return [self.mac.left != 0]

    def registers(self) -> tuple:
        """The banks by role (read, the other), not by number: they behave the same."""
        rd = self.rd_bank
        full = self.full[rd], self.full[rd ^ 1]
        return full, self.wr_bank ^ rd, self.wr_i, self.g, self.i, self.mac

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        return [not self.full[self.wr_bank]]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        issue = self.full[self.rd_bank] and not self.mac.stall
        terms = self.terms[self.g]
        self.mac.step(issue, self.i == terms - 1, oready[0], self.g == self.groups - 1)
        if takes[0]:
            self.wr_i += 1
            if self.wr_i == self.n:
                self.wr_i = 0
                self.full[self.wr_bank] = True
                self.wr_bank ^= 1
        if issue:
            self.i += 1
            if self.i == terms:
                self.i, self.g = 0, self.g + 1
                if self.g == self.groups:
                    self.g = 0
                    self.full[self.rd_bank] = False
                    self.rd_bank ^= 1

    def quiet(self, valids: list[bool], oready: list[bool]) -> int:
        """Cycles that step only counters (see `perfmodel.conv`'s `quiet`): no group's
        last term issued or loaded, no buffer filled, the last result not taken."""
        mac = self.mac
        q = mac.quiet(oready[0])
        if valids[0] and not self.full[self.wr_bank]:
            q = min(q, self.n - 1 - self.wr_i)
        if self.full[self.rd_bank] and not mac.stall:
            q = min(q, self.terms[self.g] - 1 - self.i)
        return q

    def skip(self, n: int, valids: list[bool], oready: list[bool]) -> None:
        issue = self.full[self.rd_bank] and not self.mac.stall
        self.mac.advance(n, issue, oready[0])
        if valids[0] and not self.full[self.wr_bank]:
            self.wr_i += n
        if issue:
            self.i += n


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

    def quiet(self, valids: list[bool], oready: list[bool]) -> int:
        """Nothing changes while a step would not (the same inputs, the same step)."""
        takes = valids[0] and valids[1] and (not self.v or oready[0])
        return QUIET if self.v == (takes or (self.v and not oready[0])) else 0

    def skip(self, n: int, valids: list[bool], oready: list[bool]) -> None:
        pass


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

    def quiet(self, valids: list[bool], oready: list[bool]) -> int:
        """Nothing changes while a step would not (the same inputs, the same step)."""
        take = valids[0] and self.ready(valids, oready)[0]
        after = [take or (v and not r) for v, r in zip(self.v, oready, strict=True)]
        return QUIET if after == self.v else 0

    def skip(self, n: int, valids: list[bool], oready: list[bool]) -> None:
        pass


class FifoTiming(_Timing):
    """`SkipFifo` of `depth` elements: written in one cycle,
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
    """The FIFO's level; `peak`, the most it has held, is a record, not a register."""

    def __init__(self, depth: int) -> None:
        self.depth, self.level, self.peak = depth, 0, 0

    def registers(self) -> int:
        return self.level

    def valid(self) -> list[bool]:
        return [self.level != 0]

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        return [self.level != self.depth]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        self.level += int(takes[0]) - int(self.level != 0 and oready[0])
        self.peak = max(self.peak, self.level)

    def _change(self, valids: list[bool], oready: list[bool]) -> int:
        return int(valids[0] and self.level != self.depth) - int(self.level != 0 and oready[0])

    def quiet(self, valids: list[bool], oready: list[bool]) -> int:
        """Cycles until the FIFO would become empty, non-empty, full or not full."""
        d = self._change(valids, oready)
        if d == 0:
            return QUIET
        if self.level in (0, self.depth):
            return 0
        return self.depth - self.level - 1 if d > 0 else self.level - 1

    def skip(self, n: int, valids: list[bool], oready: list[bool]) -> None:
        self.level += n * self._change(valids, oready)  # monotone: the peak is at an end
        self.peak = max(self.peak, self.level)


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


SHIFT_STAGES = 5  # look up, round, shift, compare, select (see hw/rtl/_requant.py)


def poly_stages(degree: int, x_bits: int) -> int:
    """Look up the coefficients, then per Horner step a multiply by the element
    (`multiply_stages` of its width) and an add."""
    return 1 + degree * (multiply_stages(x_bits) + 1)


def _threshold(node: Any, ctx: Any) -> ElementwiseTiming:
    cols, levels = threshold_cols(node, ctx)
    period = len(ctx.by_phase(cols)["t"]) if levels else 1
    block = sum(block_levels(period, levels))
    return ElementwiseTiming(threshold_stages(levels, block), ctx.elements)


# node kind -> timing(node, ctx): the one place a kind's timing is chosen
TIMINGS: dict[str, Callable[[Any, Any], Any]] = {
    "dense": _dense_timing,
    "conv2d": _conv_timing,
    "shift": lambda node, ctx: ElementwiseTiming(SHIFT_STAGES, ctx.elements),
    "threshold": _threshold,
    "poly": lambda node, ctx: ElementwiseTiming(
        poly_stages(node.degree, ctx.in_type.bits), ctx.elements
    ),
    "add": lambda node, ctx: AddTiming(ctx.elements),
}
