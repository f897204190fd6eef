"""Residual blocks: the add, the fork that feeds both paths, and the skip path's FIFO.

Note for the pipeline (hw/rtl/_base.py): `COMPONENTS["add"](node, ctx)` builds
`AddBlock` (inputs `a`, `b` in `node.inputs` order, `ctx.in_types` for both). A graph
value read by two nodes goes through a `Fork` (`Fork(dtype)`: input `i`, outputs `o0`,
`o1`). The shorter path of a residual (the skip) needs a FIFO deep enough that the
fork never waits on it while the longer (main) path fills: `skip_depth(taken, out)`
from the main path's input and output transfer cycles (its timing functions, at full
rate), and `SkipFifo(dtype, depth)` to hold it; `deadlock_depth(main.needs())` is the
floor below which the residual stops. Fork and SkipFifo have no `interval` of their
own (the pipeline sets it to the stream's elements).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out
from cosyn.hw.rtl._base import COMPONENTS, Ctx, element_shape, element_stream

from cosyn.ir.nodes import Add, IntType

__all__ = ["AddBlock", "Fork", "SkipFifo", "deadlock_depth", "skip_depth"]


def _registered(taken: np.ndarray) -> np.ndarray:
    """Output cycles of a one-register stage whose inputs are taken at `taken`."""
    return np.asarray(taken, dtype=np.int64) + 1


def _lockstep(*offers: np.ndarray) -> np.ndarray:
    """Cycles a stage taking one element per cycle takes element k of every input
    together, input j's element k offered from offers[j][k] (output always ready)."""
    ready = np.maximum.reduce([np.asarray(a, dtype=np.int64) for a in offers])
    return np.maximum.accumulate(ready - np.arange(len(ready))) + np.arange(len(ready))


class AddBlock(wiring.Component):
    """o = (a << shifts[0]) + (b << shifts[1]), element by element, in `node.dtype`.

    Members: `a`, `b` (In, element streams of `ctx.in_types`), `o` (Out, element
    stream of `node.dtype`). Both inputs carry their elements in the same order; one
    element of each is taken together, when both are valid and the output register
    is empty or leaving. Latency 1, interval N (elements per sample); `timing(a, b)`.
    """

    def __init__(self, node: Add, ctx: Ctx) -> None:
        if len(set(ctx.in_shapes)) != 1 or min(node.shifts) < 0:
            self._MustUse__silence = True  # never built
            raise ValueError(
                f"{node.name}: add takes two inputs of one shape and left shifts >= 0, "
                f"not shapes {ctx.in_shapes} and shifts {node.shifts}"
            )
        self.node = node
        self.elements = ctx.elements
        self.latency, self.interval = 1, self.elements
        ta, tb = ctx.in_types
        super().__init__(
            {
                "a": In(element_stream(ta)),
                "b": In(element_stream(tb)),
                "o": Out(element_stream(node.dtype)),
            }
        )

    def timing(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Output transfer cycles of one sample from the cycles a and b offer each element."""
        return _registered(_lockstep(a, b))

    def elaborate(self, platform) -> Module:
        m = Module()
        s0, s1 = self.node.shifts
        space = ~self.o.valid | self.o.ready
        take = self.a.valid & self.b.valid & space
        m.d.comb += [self.a.ready.eq(self.b.valid & space), self.b.ready.eq(self.a.valid & space)]
        total = (self.a.payload << s0) + (self.b.payload << s1)
        with m.If(take):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(total)]  # extends or cuts
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m


class Fork(wiring.Component):
    """Copy each element of `i` to both `o0` and `o1`.

    Members: `i` (In), `o0`, `o1` (Out), element streams of `dtype`. Each output has
    a one-element register; the next element is taken when both registers are empty
    or leaving, so one output can run one element ahead of the other. Latency 1.
    """

    def __init__(self, dtype: IntType) -> None:
        self.latency = 1
        es = element_stream(dtype)
        super().__init__({"i": In(es), "o0": Out(es), "o1": Out(es)})

    def timing(self, arrivals: np.ndarray) -> np.ndarray:
        """Cycles each element leaves on both outputs (both always ready)."""
        return _registered(_lockstep(arrivals))

    def elaborate(self, platform) -> Module:
        m = Module()
        outs = (self.o0, self.o1)
        free = [~o.valid | o.ready for o in outs]
        m.d.comb += self.i.ready.eq(free[0] & free[1])
        for o in outs:
            with m.If(self.i.valid & self.i.ready):
                m.d.sync += [o.valid.eq(1), o.payload.eq(self.i.payload)]
            with m.Elif(o.ready):
                m.d.sync += o.valid.eq(0)
        return m


def skip_depth(taken: np.ndarray, out: np.ndarray) -> int:
    """FIFO depth for the skip path of a residual whose main path takes its inputs at
    `taken` and emits its outputs at `out` (one sample, same element count, full rate).

    The fork hands element k to both paths together; the add takes skip element k
    when main output k arrives. So the skip path holds, at its fullest, the elements
    the main path has taken but not yet emitted: max_k (#{j : taken_j <= out_k} - k),
    the main path's latency counted in elements, plus one for the cycle an element
    waits in the add's register. A FIFO that deep never makes the fork wait, so the
    residual takes and emits exactly when its main path does (the timing functions
    compose); `deadlock_depth` is the floor below which it stops.
    """
    taken, out = np.asarray(taken), np.asarray(out)
    in_flight = np.searchsorted(taken, out, side="right") - np.arange(len(out))
    return int(in_flight.max()) + 1


def deadlock_depth(needs: np.ndarray) -> int:
    """The smallest skip FIFO that cannot deadlock, for a main path that must take
    needs[k] inputs before its output k leaves: max_k (needs[k] - k) - 1 (the fork's
    skip register holds one more). Smaller, the fork waits on a full skip FIFO while
    the main path waits for input. It may slow the pipeline; `skip_depth` does not.
    """
    needs = np.asarray(needs)
    return max(int((needs - np.arange(len(needs))).max()) - 1, 1)


class SkipFifo(wiring.Component):
    """A first-in first-out buffer of `depth` elements of `dtype` between `i` and `o`.

    Members: `i` (In), `o` (Out), element streams. An element written in one cycle
    can leave in the next (latency 1); one element per cycle in and out.
    """

    def __init__(self, dtype: IntType, depth: int) -> None:
        if depth < 1:
            raise ValueError(f"FIFO depth must be at least 1, not {depth!r}")
        self.dtype, self.depth, self.latency = dtype, depth, 1
        es = element_stream(dtype)
        super().__init__({"i": In(es), "o": Out(es)})

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.q = q = fifo.SyncFIFO(width=self.dtype.bits, depth=self.depth)
        data = Signal(element_shape(self.dtype))
        m.d.comb += [
            q.w_data.eq(self.i.payload),
            q.w_en.eq(self.i.valid),
            self.i.ready.eq(q.w_rdy),
            data.eq(q.r_data),
            self.o.payload.eq(data),
            self.o.valid.eq(q.r_rdy),
            q.r_en.eq(self.o.ready),
        ]
        return m


def _add(node: Add, ctx: Ctx) -> AddBlock:
    return AddBlock(node, ctx)


COMPONENTS["add"] = _add
