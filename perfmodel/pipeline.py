"""The graph as a dataflow pipeline of blocks: streams, stream orders, parallelism, timing.

`plan(g, parallelism)` walks the graph in order and gives each node a stage with its
block's timing (`TIMINGS[node.kind](node, ctx)`, see `perfmodel.blocks`). The graph
input (Quantize) is the design's input stream; a flatten is free (it relabels the
stream's order); a value read by two nodes goes through forks. Sample 0's timing is
composed from each block's `timing` with the input at full rate. Where a block would
make its producer wait within sample 0 (a convolution whose line buffer is full, an
add whose other input is late), a FIFO deep enough that it never does goes in front
of that input, so no producer ever stalls in sample 0 and the composition is exact:
the first output's cycle is the design's latency. Across samples a block does stall
its producer (a convolution's line buffer holds the next sample back while rows are
still read), so the interval is not the slowest stage's alone: `steady` steps every
block's control together for several samples and takes the steady-state difference.
Where that exceeds the slowest block's interval, the FIFOs are sized for the steady
state instead (`_steady_fifos`: FINN's FIFO sizing, from the cycle model).

The RTL backend builds exactly these stages (`hw/rtl`), and its manifest is this
plan's record, so an estimate, a manifest and a simulation cannot disagree.

Stream conventions (every RTL block keeps them): a tensor moves as a stream of single
elements; a 1-D tensor (N,) in index order; a 3-D tensor (C, H, W) in HWC order,
channels innermost. A 1-D tensor made by flattening a 3-D one keeps the HWC order
("flat" with a `perm`): the dense layer that consumes it reads its weight columns in
stream order.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cosyn.perfmodel.blocks import TIMINGS, ElementwiseTiming, FifoTiming, ForkTiming
from cosyn.perfmodel.steady import fifo_peaks, steady_interval

from cosyn.errors import CosynError, UnsupportedLayerError
from cosyn.ir.graph import Graph
from cosyn.ir.nodes import IntType, Node

__all__ = [
    "Ctx",
    "Plan",
    "Stage",
    "Stream",
    "deadlock_depth",
    "default_parallelism",
    "fifo_depth",
    "folded",
    "multipliers",
    "parallelism_pair",
    "plan",
    "resolve_parallelism",
    "stream_index",
]

DEFAULT_CAP = 64


def folded(node: Node) -> bool:
    """True for nodes whose multipliers are shared over outputs (dense, conv): they take
    a parallelism, the number of multipliers working at once."""
    return node.multiplies and not node.elementwise


def default_parallelism(node: Node) -> int:
    """The default rule: one multiplier per output up to 64 outputs, else 64 (rounded up
    to a divisor of the outputs by `resolve_parallelism` where the block needs one)."""
    return min(node.lane_outputs, DEFAULT_CAP)


# kinds whose block takes any parallelism: where P does not divide the outputs, the last
# group of P lanes is partly empty (`blocks.DenseTiming`, `conv.ConvGeometry`); the
# others' P, and a grouped conv's, divides them
RAGGED = frozenset({"dense", "conv2d"})


# kinds whose block takes SIMD S: each lane multiplies S terms a cycle (consecutive
# inputs, `node.lane_inputs`: a dense's, a conv's channels at a window position) and sums
# them (`blocks.DenseTiming`, `conv.ConvGeometry.simd`)
SIMD = frozenset({"dense", "conv2d"})


def parallelism_pair(value: Any) -> tuple[Any, Any]:
    """(P, S) of a parallelism value: P, or a pair (P, S) (a tuple, or a list as JSON
    gives it back)."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    return value, 1


def multipliers(value: Any) -> int:
    """The multipliers of a parallelism value: P, or P x S."""
    p, s = parallelism_pair(value)
    return int(p) * int(s)


def resolve_parallelism(node: Node, requested: Any, default: int) -> tuple[int, int, str]:
    """The parallelism (P, S) a dense/conv node gets, and a note where it differs from the
    request: P lanes, each multiplying S terms a cycle (`requested`: P, or (P, S); S is
    1 but for the kinds in `SIMD`).

    A kind in `RAGGED` takes any P from 1 to the node's output count `node.shape[0]`
    (features or output channels), but a grouped conv. For the others, valid values
    divide it; another value is rounded up to the next divisor. 0, a negative value, or
    more than the outputs is a CosynError naming the node. A grouped conv's lanes share
    one group's input: a request up to its outputs is lowered to their count per group,
    then rounded up to a divisor of it. S runs from 1 to `node.lane_inputs` and is
    rounded up to a divisor of it.
    """
    outs, per = int(node.shape[0]), node.lane_outputs
    p, s = parallelism_pair(default if requested is None else requested)
    if _bad(p, outs):
        raise CosynError(
            f"{node.name}: parallelism must be an integer from 1 to {outs} (its outputs), "
            f"or a pair (P, S), not {requested!r}; pass a value in that range"
        )
    notes = []
    if s != 1:
        if node.kind not in SIMD:
            raise CosynError(f"{node.name}: a {node.kind} block takes no SIMD (P, S); pass P alone")
        terms = node.lane_inputs
        if _bad(s, terms):
            raise CosynError(
                f"{node.name}: SIMD must be an integer from 1 to {terms} (the inputs an "
                f"output sums at once: a conv's channels at a window position), not {s!r}"
            )
        t = next(d for d in range(int(s), terms + 1) if terms % d == 0)
        if t != s:
            notes.append(f"SIMD {s} does not divide {terms} inputs; rounded up to {t}")
        s = t
    if node.kind in RAGGED and per == outs:
        return int(p), int(s), "; ".join(notes)
    q = next(d for d in range(min(int(p), per), per + 1) if per % d == 0)
    if q != p and p > per:
        notes.insert(0, f"parallelism {p} exceeds the {per} outputs of a group; lowered to {q}")
    elif q != p:
        notes.insert(0, f"parallelism {p} does not divide {per} outputs; rounded up to {q}")
    return q, int(s), "; ".join(notes)


def _bad(v: Any, most: int) -> bool:
    """`v` is not an integer from 1 to `most`."""
    return isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= most


def stream_index(shape: tuple[int, ...], order: str, perm: np.ndarray | None = None) -> np.ndarray:
    """The graph's flat (row-major, channels first) index of each stream position."""
    n = math.prod(shape)
    if perm is not None:
        return np.asarray(perm, dtype=np.int64)
    if order == "hwc" and len(shape) == 3:
        c, h, w = shape
        return np.arange(n).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
    return np.arange(n, dtype=np.int64)


@dataclass(frozen=True)
class Ctx:
    """What the pipeline tells a block beyond its node.

    `in_types` / `in_shapes`: the IntType and graph shape of each input, in
    `node.inputs` order. `order`: "flat" or "hwc", the order of the input stream(s)
    (an elementwise block's output keeps it). `perm`: for a "flat" stream made by a
    flatten, the graph flat index at each stream position (None: index order).
    `parallelism`: lanes working in parallel (P), and `simd` the terms each multiplies a
    cycle (S), already checked and rounded by `resolve_parallelism` (1 for blocks
    without shared multipliers).
    """

    in_types: tuple[IntType, ...]
    in_shapes: tuple[tuple[int, ...], ...]
    order: str = "flat"
    perm: np.ndarray | None = field(default=None, compare=False)
    parallelism: int = 1
    simd: int = 1

    @property
    def folding(self) -> int | tuple[int, int]:
        """The parallelism as `plan` takes it: P, or (P, S) with SIMD."""
        return self.parallelism if self.simd == 1 else (self.parallelism, self.simd)

    @property
    def in_type(self) -> IntType:
        return self.in_types[0]

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.in_shapes[0]

    @property
    def elements(self) -> int:
        """Elements per sample on input 0."""
        return math.prod(self.in_shape)

    def index(self) -> np.ndarray:
        """The graph flat index of each position of input stream 0."""
        return stream_index(self.in_shape, self.order, self.perm)

    def channel(self) -> np.ndarray:
        """The channel (graph axis 0) of each position of input stream 0; for a 1-D
        input the channel is the element itself."""
        per = math.prod(self.in_shape[1:]) if len(self.in_shape) > 1 else 1
        return self.index() // per

    def by_phase(self, cols: dict[str, Any]) -> dict[str, np.ndarray]:
        """Per-channel constants (name -> one value, or a row per channel) laid out by
        stream phase: name -> (period, width), where the period is the fewest positions
        after which every constant repeats (`hw/rtl/_elementwise.PhaseTable` reads this)."""
        chan = self.channel()
        per_pos = {k: _rows(v)[chan % len(_rows(v))] for k, v in cols.items()}
        if not per_pos:
            return {}
        period = _period(np.concatenate(list(per_pos.values()), axis=1))
        return {k: v[:period] for k, v in per_pos.items()}


def _rows(a: Any) -> np.ndarray:
    a = np.asarray(a, dtype=np.int64)
    return a.reshape(-1, 1) if a.ndim <= 1 else a.reshape(a.shape[0], -1)


def _period(flat: np.ndarray) -> int:
    """The fewest positions p (dividing the length) after which every row repeats: each
    row equals the one p before it."""
    n = len(flat)
    for p in range(1, n):
        if n % p == 0 and (flat[p:] == flat[:-p]).all():
            return p
    return n


@dataclass
class Stream:
    """A value in flight: its producer (stage index and output port; stage None is the
    design's input), type, graph shape, order and the transfer cycles of sample 0."""

    stage: int | None
    port: int
    dtype: IntType
    shape: tuple[int, ...]
    order: str
    perm: np.ndarray | None
    times: np.ndarray
    holds: bool = False  # the design's input: it keeps offering while it waits

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class Stage:
    """One block: a node's (`node` set, `kind` its kind) or one the pipeline adds ("fifo",
    "fork"; `dtype` and `depth` say what to build), its timing and its inputs."""

    name: str
    kind: str
    timing: Any
    inputs: list[Stream]
    node: Node | None = None
    ctx: Ctx | None = None
    parallelism: int = 1
    requested: Any = None  # P, or (P, S)
    note: str = ""
    dtype: IntType | None = None

    @property
    def simd(self) -> int:
        """The terms a lane multiplies a cycle (its context's; 1 without one)."""
        return self.ctx.simd if self.ctx is not None else 1

    @property
    def folding(self) -> int | tuple[int, int]:
        """The parallelism as `plan` takes it: P, or (P, S) with SIMD."""
        return self.ctx.folding if self.ctx is not None else self.parallelism

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "parallelism": self.parallelism,
            "simd": self.simd,
            "requested_parallelism": self.requested,
            "note": self.note,
            "latency": int(self.timing.latency),
            "interval": int(self.timing.interval),
        }


@dataclass
class Plan:
    """The stages in order, the input and output streams, and the design's timing."""

    graph: Graph
    source: Stream
    stages: list[Stage] = field(default_factory=list)
    sink: Stream | None = None
    fifos: dict[tuple[str, int], int] = field(default_factory=dict)  # (node, input) -> stage
    _interval: int | None = field(default=None, repr=False)

    @property
    def latency(self) -> int:
        assert self.sink is not None
        return int(self.sink.times[0] - self.source.times[0])

    @property
    def interval(self) -> int:
        """Steady-state cycles per sample: every block's control stepped together for
        several samples (`steady`), since a slow block's stalls reach its producers."""
        assert self.sink is not None
        if self._interval is None:
            self._interval = steady_interval(self)
        return self._interval

    @property
    def multipliers(self) -> int:
        return sum(
            s.parallelism * s.simd for s in self.stages if s.node is not None and folded(s.node)
        )


def _requested(node: Node, parallelism: int | dict | None) -> Any:
    if isinstance(parallelism, dict):
        return parallelism.get(node.name)
    return parallelism


def _order(shape: tuple[int, ...]) -> str:
    return "hwc" if len(shape) == 3 else "flat"


def _check_kinds(g: Graph) -> None:
    for node in g.nodes[1:]:
        if node.kind != "flatten" and node.kind not in TIMINGS:
            raise UnsupportedLayerError(
                f"{node.name} ({type(node).__name__}): the RTL backend has no block for node "
                f"kind {node.kind!r}; supported: {', '.join(sorted(TIMINGS))}"
            )


def plan(g: Graph, parallelism: int | dict | None = None) -> Plan:
    """Every block of `g` with its timing, sample 0's timing composed, and the FIFOs
    sized for the steady state (see above)."""
    _check_kinds(g)
    if isinstance(parallelism, dict):
        unknown = sorted(set(parallelism) - {n.name for n in g})
        if unknown:
            raise UnsupportedLayerError(f"{unknown[0]}: no such node in the graph; check the name")
    q = g.input
    if len(q.shape) not in (1, 3):
        raise UnsupportedLayerError(f"{q.name}: inputs must be (N,) or (C, H, W)")
    return _steady_fifos(g, parallelism, _compose(g, parallelism, {}))


def _compose(g: Graph, parallelism: int | dict | None, depths: dict[tuple[str, int], int]) -> Plan:
    """The stages and sample 0's timing, with a FIFO of at least `depths[(node, j)]`
    in front of input j of that node (and those sample 0 needs)."""
    q = g.input
    n_in = math.prod(q.shape)
    src = Stream(None, 0, q.dtype, q.shape, _order(q.shape), None, np.arange(n_in), True)
    p = Plan(g, src)
    readers = {n.name: sum(m.inputs.count(n.name) for m in g) for n in g}
    values = {q.name: _fanout(p, src, readers[q.name], q.name)}
    for node in g.nodes[1:]:
        ins = [values[i].pop() for i in node.inputs]
        if node.kind == "flatten":
            out = _flatten(node, ins[0])
        else:
            out = _stage(p, node, ins, parallelism, depths)
        values[node.name] = _fanout(p, out, readers[node.name], node.name)
    p.sink = values[g.output.name][0]
    return p


def _steady_fifos(g: Graph, parallelism: int | dict | None, p: Plan) -> Plan:
    """`p`, or where a block stalls its producer across samples (the interval exceeds
    the slowest block's), the plan with FIFOs that hold what the steady state needs,
    where that shortens the interval. The inputs of every block but the elementwise
    ones get a FIFO two samples deep and the steady state is stepped; each FIFO sized to
    the most it held steps exactly the same. Then, the largest first, each is put back
    as sample 0 has it (or left out) where the interval stays the same: a FIFO in front
    of a block faster than the slowest may fill without slowing anything."""
    if p.interval <= max((int(s.timing.interval) for s in p.stages), default=0):
        return p
    deep = {
        (s.node.name, j): 2 * x.elements
        for s in p.stages
        if s.node is not None and not isinstance(s.timing, ElementwiseTiming)
        for j, x in enumerate(s.inputs)
        if not x.holds
    }
    wide = _compose(g, parallelism, deep)
    interval, peaks = fifo_peaks(wide)
    if interval >= p.interval:
        return p
    first = {key: p.stages[k].timing.depth for key, k in p.fifos.items()}
    sized = {key: max(2, min(deep[key], peaks[k] + 1)) for key, k in wide.fifos.items()}
    best = None
    for key in sorted(sized, key=lambda k: first.get(k, 0) - sized[k]):
        if first.get(key) == sized[key]:
            continue
        trial = {k: d for k, d in sized.items() if k != key}
        if key in first:
            trial[key] = first[key]
        fewer = _compose(g, parallelism, trial)
        if fewer.interval == interval:
            sized, best = trial, fewer
    return best or _compose(g, parallelism, sized)


def _flatten(node: Node, x: Stream) -> Stream:
    """Flatten relabels the stream: same elements, same order, now a flat vector."""
    perm = stream_index(x.shape, x.order, x.perm)
    return dataclasses.replace(x, dtype=node.dtype, shape=node.shape, order="flat", perm=perm)


def _stage(
    p: Plan, node: Node, ins: list[Stream], parallelism, depths: dict[tuple[str, int], int]
) -> Stream:
    req = _requested(node, parallelism) if folded(node) else None
    par, simd, note = (
        resolve_parallelism(node, req, default_parallelism(node)) if folded(node) else (1, 1, "")
    )
    x = ins[0]
    if any(s.order != x.order or not _same_perm(s.perm, x.perm) for s in ins[1:]):
        raise UnsupportedLayerError(
            f"{node.name}: its inputs stream in different orders (one a flattened image); "
            "flatten both the same way, or neither"
        )
    ctx = Ctx(tuple(s.dtype for s in ins), tuple(s.shape for s in ins), x.order, x.perm, par, simd)
    try:
        timing = TIMINGS[node.kind](node, ctx)
    except ValueError as e:
        raise UnsupportedLayerError(f"{node.name}: {e}") from e
    ins = _buffer_inputs(p, node, timing, ins, depths)
    p.stages.append(Stage(node.name, node.kind, timing, ins, node, ctx, par, req, note))
    times = np.asarray(timing.timing(*[s.times for s in ins]), dtype=np.int64)
    keep_perm = x.perm if len(node.shape) == 1 and not folded(node) else None
    return Stream(
        len(p.stages) - 1, 0, node.dtype, node.shape, _order(node.shape), keep_perm, times
    )


def _same_perm(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


def _buffer_inputs(
    p: Plan, node: Node, timing: Any, ins: list[Stream], depths: dict[tuple[str, int], int]
) -> list[Stream]:
    """`ins`, with a FIFO in front of each input that the block would keep waiting (not
    the design's input: the timing functions take the cycles it offers, and it holds),
    and of each input j given a depth in `depths[(node, j)]` (at least that deep)."""
    want = {j: depths[node.name, j] for j in range(len(ins)) if (node.name, j) in depths}
    offers = [s.times + 1 if j in want else s.times for j, s in enumerate(ins)]
    buffered: set[int] = {j for j, s in enumerate(ins) if s.holds} | set(want)
    while len(buffered) < len(ins):
        late = {j for j, x in enumerate(_stalls(timing, offers)) if x and j not in buffered}
        if not late:
            break
        buffered |= late
        offers = [o + 1 if j in late else o for j, o in enumerate(offers)]
    need = {j for j in buffered if not ins[j].holds}
    taken = timing.transfers(*offers) if need else []
    return [
        _fifo(p, node, j, s, taken[j], want.get(j, 2)) if j in need else s
        for j, s in enumerate(ins)
    ]


def _stalls(timing: Any, offers: list[np.ndarray]) -> list[bool]:
    """Per input: whether the block takes an element later than offered (a timing's
    `stalls` where it has one: it need not find every transfer)."""
    if hasattr(timing, "stalls"):
        return timing.stalls(*offers)
    return [bool(np.any(t != o)) for t, o in zip(timing.transfers(*offers), offers, strict=True)]


def fifo_depth(arrive: np.ndarray, leave: np.ndarray) -> int:
    """The depth of a FIFO that never makes its producer wait, elements arriving at
    `arrive` and leaving at `leave`: the most it holds at once, max_k (#{j : arrive_j <=
    leave_k} - k), plus one for the cycle an element waits before it can be read.

    For the skip path of a residual, `arrive` is when the main path takes its inputs
    and `leave` when it emits its outputs: the fork then never waits on the skip FIFO,
    and the residual takes and emits exactly when its main path does.
    """
    held = np.searchsorted(np.asarray(arrive), np.asarray(leave), side="right")
    return int((held - np.arange(len(held))).max()) + 1


def deadlock_depth(needs: np.ndarray) -> int:
    """The smallest skip FIFO that cannot deadlock, for a main path that must take
    needs[k] inputs before its output k leaves: max_k (needs[k] - k) - 1 (the fork's
    skip register holds one more). Smaller, the fork waits on a full skip FIFO while
    the main path waits for input. It may slow the pipeline; `fifo_depth` does not.
    """
    needs = np.asarray(needs)
    return max(int((needs - np.arange(len(needs))).max()) - 1, 1)


def _fifo(p: Plan, node: Node, j: int, s: Stream, taken: np.ndarray, least: int) -> Stream:
    """A FIFO between `s` and input j of `node`, deep enough that `s` never waits in
    sample 0, and at least `least` deep."""
    depth = max(fifo_depth(s.times, taken), least)
    timing = FifoTiming(depth, s.elements)
    port = "i" if len(node.inputs) == 1 else "ab"[j]
    name = f"{node.name}.{port}.fifo"
    p.stages.append(Stage(name, "fifo", timing, [s], note=f"depth {depth}", dtype=s.dtype))
    p.fifos[node.name, j] = len(p.stages) - 1
    times = timing.timing(s.times)
    return dataclasses.replace(s, stage=len(p.stages) - 1, port=0, times=times, holds=False)


def _fanout(p: Plan, s: Stream, readers: int, name: str) -> list[Stream]:
    """One stream per reader: through a chain of two-way forks when there are several."""
    if readers <= 1:
        return [s]
    timing = ForkTiming(s.elements)
    p.stages.append(Stage(f"{name}.fork{readers - 1}", "fork", timing, [s], dtype=s.dtype))
    k, t = len(p.stages) - 1, timing.timing(s.times)
    first = dataclasses.replace(s, stage=k, port=0, times=t, holds=False)
    rest = dataclasses.replace(s, stage=k, port=1, times=t, holds=False)
    return [*_fanout(p, rest, readers - 1, name), first]
