"""The graph as a dataflow pipeline of blocks: streams, stream orders, parallelism, timing.

`plan(g, parallelism)` walks the graph in order and builds one block per node with
`COMPONENTS[node.kind](node, ctx)`. The graph input (Quantize) is the top-level input
stream; a flatten is free (it relabels the stream's order, see `_base`); a value read
by two nodes goes through `Fork`s. Sample 0's timing is composed from each block's
`timing` with the input at full rate. Where a block would make its producer wait
within sample 0 (a convolution whose line buffer is full, an add whose other input
is late), a FIFO deep enough that it never does goes in front of that input, so no
producer ever stalls in sample 0 and the composition is exact: the first output's
cycle is the design's latency. Across samples a block does stall its producer (a
convolution's line buffer holds the next sample back while rows are still read), so
the interval is not the slowest stage's alone: `_steady` steps every block's control
together for several samples and takes the steady-state difference.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cosyn.hw.rtl._base import COMPONENTS, Ctx, resolve_parallelism, stream_index

from cosyn.errors import UnsupportedLayerError
from cosyn.ir.graph import Graph
from cosyn.ir.nodes import IntType, Node

__all__ = ["Plan", "Stage", "Stream", "default_parallelism", "plan"]

MULTIPLIER_KINDS = ("dense", "conv2d")
DEFAULT_CAP = 64


def default_parallelism(node: Node) -> int:
    """The default rule: one multiplier per output up to 64 outputs, else 64 (rounded up
    to a divisor of the outputs by `resolve_parallelism`)."""
    return min(int(node.shape[0]), DEFAULT_CAP)


@dataclass
class Stream:
    """A value in flight: its producer's port, type, graph shape, order and timing."""

    port: Any
    dtype: IntType
    shape: tuple[int, ...]
    order: str
    perm: np.ndarray | None
    times: np.ndarray  # transfer cycle of each element of sample 0
    holds: bool = False  # the top-level input: it keeps offering while it waits

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class Stage:
    """One node's block and what the manifest says of it."""

    node: Node
    block: Any
    parallelism: int
    requested: int | None
    note: str
    inputs: list[Stream]

    def record(self) -> dict[str, Any]:
        return {
            "name": self.node.name,
            "kind": self.node.kind,
            "parallelism": self.parallelism,
            "requested_parallelism": self.requested,
            "note": self.note,
            "latency": int(self.block.latency),
            "interval": int(self.block.interval),
        }


@dataclass
class Plan:
    """The blocks in order, the input and output streams, and the design's timing."""

    graph: Graph
    source: Stream
    stages: list[Stage] = field(default_factory=list)
    sink: Stream | None = None
    _interval: int | None = field(default=None, repr=False)

    @property
    def latency(self) -> int:
        assert self.sink is not None
        return int(self.sink.times[0] - self.source.times[0])

    @property
    def interval(self) -> int:
        """Steady-state cycles per sample: every block's control stepped together for
        several samples (`_steady`), since a slow block's stalls reach its producers."""
        assert self.sink is not None
        if self._interval is None:
            from cosyn.hw.rtl._steady import steady_interval

            self._interval = steady_interval(self)
        return self._interval


def _requested(node: Node, parallelism: int | dict | None) -> int | None:
    if isinstance(parallelism, dict):
        return parallelism.get(node.name)
    return parallelism


def _order(shape: tuple[int, ...]) -> str:
    return "hwc" if len(shape) == 3 else "flat"


def _check_kinds(g: Graph) -> None:
    for node in g.nodes[1:]:
        if node.kind != "flatten" and node.kind not in COMPONENTS:
            raise UnsupportedLayerError(
                f"{node.name} ({type(node).__name__}): the RTL backend has no block for node "
                f"kind {node.kind!r}; supported: {', '.join(sorted(COMPONENTS))}"
            )


def plan(g: Graph, parallelism: int | dict | None = None, source_port: Any = None) -> Plan:
    """Build every block of `g` and compose sample 0's timing (see the module docstring)."""
    _check_kinds(g)
    if isinstance(parallelism, dict):
        unknown = sorted(set(parallelism) - {n.name for n in g})
        if unknown:
            raise UnsupportedLayerError(f"{unknown[0]}: no such node in the graph; check the name")
    q = g.input
    if len(q.shape) not in (1, 3):
        raise UnsupportedLayerError(f"{q.name}: inputs must be (N,) or (C, H, W)")
    n_in = math.prod(q.shape)
    src = Stream(source_port, q.dtype, q.shape, _order(q.shape), None, np.arange(n_in), True)
    p = Plan(g, src)
    readers = {n.name: sum(m.inputs.count(n.name) for m in g) for n in g}
    values = {q.name: _fanout(p, src, readers[q.name], q.name)}
    for node in g.nodes[1:]:
        ins = [values[i].pop() for i in node.inputs]
        if node.kind == "flatten":
            out = _flatten(node, ins[0])
        else:
            out = _stage(p, node, ins, parallelism)
        values[node.name] = _fanout(p, out, readers[node.name], node.name)
    p.sink = values[g.output.name][0]
    return p


def _flatten(node: Node, x: Stream) -> Stream:
    """Flatten relabels the stream: same elements, same order, now a flat vector."""
    perm = stream_index(x.shape, x.order, x.perm)
    return Stream(x.port, node.dtype, node.shape, "flat", perm, x.times)


def _stage(p: Plan, node: Node, ins: list[Stream], parallelism) -> Stream:
    req = _requested(node, parallelism)
    par, note = 1, ""
    if node.kind in MULTIPLIER_KINDS:
        par, note = resolve_parallelism(node, req, default_parallelism(node))
    x = ins[0]
    ctx = Ctx(tuple(s.dtype for s in ins), tuple(s.shape for s in ins), x.order, x.perm, par)
    block = COMPONENTS[node.kind](node, ctx)
    block._MustUse__silence = True  # the Top that plans it builds it; an error may not
    ins = _buffer_inputs(p, node, block, ins)
    req = req if node.kind in MULTIPLIER_KINDS else None
    p.stages.append(Stage(node, block, par, req, note, ins))
    times = np.asarray(block.timing(*[s.times for s in ins]), dtype=np.int64)
    keep_perm = x.perm if len(node.shape) == 1 and node.kind not in MULTIPLIER_KINDS else None
    return Stream(block.o, node.dtype, node.shape, _order(node.shape), keep_perm, times)


def _taken(block: Any, offers: list[np.ndarray]) -> list[np.ndarray]:
    """When `block` takes each input element offered at `offers` (its output ready)."""
    if hasattr(block, "transfers"):
        return [np.asarray(block.transfers(*offers), dtype=np.int64)]
    if len(offers) == 2:  # one element of each input together, one pair per cycle
        ready = np.maximum(offers[0], offers[1])
        k = np.arange(len(ready))
        both = np.maximum.accumulate(ready - k) + k
        return [both, both]
    return offers


def _buffer_inputs(p: Plan, node: Node, block: Any, ins: list[Stream]) -> list[Stream]:
    """`ins`, with a FIFO in front of each input that `block` would keep waiting (not the
    top-level input: the timing functions take the cycles it offers, and it holds)."""
    offers = [s.times for s in ins]
    buffered: set[int] = {j for j, s in enumerate(ins) if s.holds}
    while True:
        taken = _taken(block, offers)
        late = {j for j in range(len(ins)) if j not in buffered and np.any(taken[j] != offers[j])}
        if not late:
            break
        buffered |= late
        offers = [o + 1 if j in late else o for j, o in enumerate(offers)]
    need = {j for j in buffered if not ins[j].holds}
    return [_fifo(p, node, j, s, taken[j]) if j in need else s for j, s in enumerate(ins)]


def _fifo(p: Plan, node: Node, j: int, s: Stream, taken: np.ndarray) -> Stream:
    """A FIFO between `s` and input j of `node`, deep enough that `s` never waits: the
    most elements in it at once, elements arriving at `s.times` and leaving at `taken`."""
    from cosyn.hw.rtl._add import SkipFifo

    held = np.searchsorted(s.times, taken, side="right") - np.arange(len(taken))
    depth = int(held.max()) + 1
    block = SkipFifo(s.dtype, depth)
    block.interval = s.elements
    port = "i" if len(node.inputs) == 1 else "ab"[j]
    name = f"{node.name}.{port}.fifo"
    p.stages.append(Stage(_Aux(name, "fifo"), block, 1, None, f"depth {depth}", [s]))
    return Stream(block.o, s.dtype, s.shape, s.order, s.perm, s.times + 1)


def _fanout(p: Plan, s: Stream, readers: int, name: str) -> list[Stream]:
    """One stream per reader: through a chain of two-way forks when there are several."""
    if readers <= 1:
        return [s]
    from cosyn.hw.rtl._add import Fork

    fork = Fork(s.dtype)
    fork.interval = s.elements
    p.stages.append(Stage(_Aux(f"{name}.fork{readers - 1}", "fork"), fork, 1, None, "", [s]))
    t = np.asarray(fork.timing(s.times), dtype=np.int64)
    first = dataclasses.replace(s, port=fork.o0, times=t, holds=False)
    rest = dataclasses.replace(s, port=fork.o1, times=t, holds=False)
    return [*_fanout(p, rest, readers - 1, name), first]


@dataclass(eq=False)
class _Aux:
    """A manifest entry for a block the pipeline adds: a FIFO or a fork."""

    name: str
    kind: str
