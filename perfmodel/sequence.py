"""A sequence design's structure and its cycles, defined once: what `hw/rtl/_sequence.py`
builds (`SequencePlan`) and each sequence's first input and last output cycle through
it (`sequence_cycles`), by stepping every block's control together.

The plan of a graph of sequences (`Graph.sequence`), in order:
  - the embedding (`EmbedTiming`): it takes each sequence as its token count L then its
    L ids, and offers the count (L + 1 with a start token) to every attention and token
    block at once, each through a count FIFO of its own (`LENGTHS` deep);
  - per graph node, its block (`TIMINGS` for position-wise kinds, a token being their
    sample; `AttentionTiming`; `TokenTiming`), fed by the FIFO of its counts first where
    it has one;
  - a chain of forks after each value read by several nodes (each reader takes the next
    copy, in graph order);
  - a skip FIFO on each input of a two-input node that the other input's path passes
    (a residual's skip): one longest sequence deep, plus two tokens, where that path
    holds whole sequences (an attention block), else two tokens more than its blocks;
    three rows where the skip is a token read (the last block's CLS row: it waits while
    the token read drains the sequence's other rows).
A count FIFO that is full stops the embedding at a sequence's start, after every row of
the sequences before it has left the embedding, so the blocks downstream finish those
and take their counts: the FIFOs bound the sequences in flight and cannot deadlock.

`sequence_cycles` steps every control (`perfmodel.blocks`' protocol) one cycle at a time,
the input offered from `arrivals` on and the output always ready: exact, and slow (tens
of microseconds a cycle in Python), for short streams and tests. The RTL is held to it
in simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cosyn.perfmodel.attention import AttentionTiming
from cosyn.perfmodel.blocks import TIMINGS, FifoTiming, ForkTiming
from cosyn.perfmodel.pipeline import (
    Ctx,
    _requested,
    default_parallelism,
    folded,
    resolve_parallelism,
)

from cosyn.errors import UnsupportedLayerError
from cosyn.ir.graph import Graph
from cosyn.ir.kinds.attention import Attention
from cosyn.ir.kinds.embed import Embed, Token
from cosyn.ir.nodes import IntType, Node

__all__ = [
    "LENGTHS",
    "EmbedTiming",
    "SeqStage",
    "SequencePlan",
    "TokenTiming",
    "sequence_cycles",
]

LENGTHS = 16  # counts a count FIFO holds: the sequences in flight before its block


class EmbedTiming:
    """`EmbedBlock`: an element a cycle, the tables read a cycle ahead (see
    `hw/rtl/_embed.py`); `consumers` count FIFOs take each count together."""

    def __init__(self, node: Embed, consumers: int) -> None:
        self.node, self.consumers = node, consumers
        self.features = int(node.shape[0])
        self.start = node.start is not None

    def control(self, lengths: list[int]) -> _EmbedControl:
        return _EmbedControl(self, lengths)


class _EmbedControl:
    """Inputs: i (counts and ids); outputs: o, then the count to each consumer."""

    def __init__(self, t: EmbedTiming, lengths: list[int]) -> None:
        self.t, self.lengths, self.seq = t, list(lengths), 0
        self.left = self.f = 0
        self.active = self.n_valid = self.o_valid = False

    def valid(self) -> list[bool]:
        return [self.o_valid, *[self.n_valid] * self.t.consumers]

    def _header(self, oready: list[bool]) -> bool:
        return self.left == 0 and not self.active and (not self.n_valid or all(oready[1:]))

    def _want_id(self, issue: bool) -> bool:
        return self.left != 0 and (not self.active or (issue and self.f == self.t.features - 1))

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        issue = self.active and (not self.o_valid or oready[0])
        return [self._header(oready) or self._want_id(issue)]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        advance = not self.o_valid or oready[0]
        issue = self.active and advance
        header, want_id = self._header(oready), self._want_id(issue)
        last_f = self.f == self.t.features - 1
        if all(oready[1:]):
            self.n_valid = False
        if advance:
            self.o_valid = issue
        if issue:
            self.f = 0 if last_f else self.f + 1
            if last_f:
                self.active = False
        if takes[0] and header:
            self.n_valid, self.left = True, self.lengths[self.seq]
            self.seq += 1
            if self.t.start:
                self.active, self.f = True, 0
        if takes[0] and want_id:
            self.left, self.active, self.f = self.left - 1, True, 0


class TokenTiming:
    """`TokenBlock`: takes a sequence's count, then an element a cycle, passing row
    `node.index` on through its output register."""

    def __init__(self, node: Token) -> None:
        self.node, self.features = node, int(node.shape[0])

    def control(self, counts: list[int]) -> _TokenControl:
        return _TokenControl(self, counts)


class _TokenControl:
    """Inputs: n (counts), i; output: o."""

    def __init__(self, t: TokenTiming, counts: list[int]) -> None:
        self.t, self.counts, self.seq = t, list(counts), 0
        self.rows = self.row = self.f = 0
        self.o_valid = False

    def valid(self) -> list[bool]:
        return [self.o_valid]

    def ready(self, valids: list[bool], oready: list[bool]) -> list[bool]:
        keep = self.row == self.t.node.index
        space = not self.o_valid or oready[0]
        return [self.rows == 0, self.rows != 0 and (not keep or space)]

    def step(self, takes: list[bool], oready: list[bool]) -> None:
        keep = self.row == self.t.node.index
        if takes[1] and keep:
            self.o_valid = True
        elif oready[0]:
            self.o_valid = False
        rows, row, f = self.rows, self.row, self.f
        if takes[0]:
            self.rows, self.row, self.f = self.counts[self.seq], 0, 0
            self.seq += 1
        if takes[1]:
            self.f = 0 if f == self.t.features - 1 else f + 1
            if f == self.t.features - 1:
                self.row = row + 1
                if row == rows - 1:
                    self.rows = 0


@dataclass
class SeqStage:
    """One block of the plan: a node's (`node`; kind its kind), or one the plan adds
    ("fork", "fifo" a skip FIFO of `depth` elements of `dtype`, "count" a count FIFO).
    `inputs`: (stage, output port) of each input in the block's port order (stage None:
    the design's input); `ctx` the position-wise block's context."""

    name: str
    kind: str
    inputs: list[tuple[int | None, int]]
    node: Node | None = None
    ctx: Ctx | None = None
    depth: int = 0
    dtype: IntType | None = None
    timing: Any = field(default=None, repr=False)


class SequencePlan:
    """The blocks of the graph of sequences `g` in order (see the module doc); `parallelism`
    as `cosyn.rtl.generate`'s. `sink`: (stage, port) of the design's output; `counted`:
    the attention and token nodes, in the order of the embedding's count ports."""

    def __init__(self, g: Graph, parallelism: int | dict | None = None) -> None:
        if not g.sequence:
            raise UnsupportedLayerError(f"{g.output.name}: not a graph of sequences")
        if not isinstance(g.nodes[1], Embed) or sum(isinstance(n, Embed) for n in g) != 1:
            raise UnsupportedLayerError(
                f"{g.input.name}: a sequence design starts with one embedding of the token "
                "ids (cosyn.models.Transformer)"
            )
        self.graph, self.embed = g, g.nodes[1]
        self.rows = len(self.embed.positions)  # tokens of the longest sequence
        self.max_tokens = self.rows - (self.embed.start is not None)
        self.counted = [n.name for n in g if isinstance(n, (Attention, Token))]
        self.stages: list[SeqStage] = []
        embed = self._add(SeqStage(self.embed.name, "embed", [(None, 0)], self.embed,
                                   timing=EmbedTiming(self.embed, len(self.counted))))  # fmt: skip
        count_t = IntType(max(self.rows.bit_length(), 1), False)
        counts = {name: self._add(SeqStage(f"count_{name}", "count", [(embed, 1 + j)],
                                           depth=LENGTHS, dtype=count_t,
                                           timing=FifoTiming(LENGTHS, 1)))
                  for j, name in enumerate(self.counted)}  # fmt: skip
        copies = {self.embed.name: self._copies(self.embed, (embed, 0))}
        for node in g.nodes[2:]:
            ins = [(counts[node.name], 0)] if node.name in counts else []
            for j, src in enumerate(node.inputs):
                port = copies[src].pop(0)
                depth = self.skip_depth(node, j)
                if depth:
                    skip = SeqStage(f"skip_{node.name}_{j}", "fifo", [port], depth=depth,
                                    dtype=g[src].dtype,
                                    timing=FifoTiming(depth, math.prod(g[src].shape)))  # fmt: skip
                    port = (self._add(skip), 0)
                ins.append(port)
            k = self._add(self._node_stage(node, ins, parallelism))
            copies[node.name] = self._copies(node, (k, 0))
        self.sink = copies[g.output.name][0]

    def _add(self, s: SeqStage) -> int:
        self.stages.append(s)
        return len(self.stages) - 1

    def _node_stage(self, node: Node, ins: list, parallelism: int | dict | None) -> SeqStage:
        g = self.graph
        if isinstance(node, Attention):
            return SeqStage(node.name, node.kind, ins, node, timing=AttentionTiming(node))
        if isinstance(node, Token):
            return SeqStage(node.name, node.kind, ins, node, timing=TokenTiming(node))
        if node.kind not in TIMINGS or isinstance(node, Embed):
            raise UnsupportedLayerError(
                f"{node.name}: the RTL backend has no block for node kind {node.kind!r} in a "
                f"sequence design; supported: attention, token, {', '.join(sorted(TIMINGS))}"
            )
        par = simd = 1
        if folded(node):
            req = _requested(node, parallelism)
            par, simd, _ = resolve_parallelism(node, req, default_parallelism(node))
        types = tuple(g[i].dtype for i in node.inputs)
        ctx = Ctx(types, tuple(g[i].shape for i in node.inputs), parallelism=par, simd=simd)
        try:
            timing = TIMINGS[node.kind](node, ctx)
        except ValueError as e:
            raise UnsupportedLayerError(f"{node.name}: {e}") from e
        return SeqStage(node.name, node.kind, ins, node, ctx, timing=timing)

    def _copies(self, node: Node, port: tuple[int, int]) -> list[tuple[int, int]]:
        """A port for each reader of `node`'s value: its own, or a chain of forks."""
        readers = sum(r.inputs.count(node.name) for r in self.graph.nodes[2:])
        ports = []
        for k in range(readers - 1):
            f = self._add(SeqStage(f"fork_{node.name}_{k}", "fork", [port], dtype=node.dtype,
                                   timing=ForkTiming(1)))  # fmt: skip
            ports.append((f, 0))
            port = (f, 1)
        return [*ports, port]

    def skip_depth(self, node: Node, j: int) -> int:
        """The skip FIFO's depth on input j of `node` (0: none; see the module doc)."""
        if len(node.inputs) < 2:
            return 0
        g = self.graph
        src, other = node.inputs[j], node.inputs[1 - j]
        path = _between(g, src, other)
        if isinstance(g[src], Token) and not _between(g, other, src):
            # the CLS row on the last block's skip: its one row waits, the rest drain
            return 3 * math.prod(g[src].shape)
        if not path:  # input j is the longer path (or the two are independent)
            return 0
        tokens = self.rows if any(isinstance(g[p], Attention) for p in path) else len(path)
        width = max(math.prod(g[p].shape) for p in (*path, src))
        return (tokens + 2) * width

    def controls(self, lengths: list[int]) -> list[Any]:
        """Every stage's control for a stream of sequences of `lengths` ids."""
        counts = [n + (self.embed.start is not None) for n in lengths]
        out = []
        for s in self.stages:
            if s.kind == "embed":
                out.append(s.timing.control(lengths))
            elif s.kind in ("attention", "token"):
                out.append(s.timing.control(counts))
            else:
                out.append(s.timing.control())
        return out

    @property
    def out_elements(self) -> int:
        return math.prod(self.graph.output.shape)


def _between(g: Graph, src: str, dst: str) -> list[str]:
    """The nodes on paths from `src` to `dst` (dst included, src not): empty where dst does
    not depend on src."""
    up, todo = {dst}, [dst]
    while todo:
        for i in g[todo.pop()].inputs:
            if i not in up:
                up.add(i)
                todo.append(i)
    down = {src}
    for n in g.nodes:
        if any(i in down for i in n.inputs):
            down.add(n.name)
    return [n.name for n in g.nodes if n.name != src and n.name in up and n.name in down]


def sequence_cycles(
    p: SequencePlan, lengths: list[int], arrivals: list[int] | None = None, limit: int = 10**8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the cycle each sequence's count is taken, the cycle its first output leaves, the
    cycle its last output leaves) for sequences of `lengths` ids, each offered from cycle
    `arrivals[i]` on (default: all at 0, back to back), the output always ready: every
    control stepped each cycle."""
    n_seq = len(lengths)
    if any(not 1 <= n <= p.max_tokens for n in lengths):
        raise ValueError(f"sequences of 1 to {p.max_tokens} ids, not {list(lengths)}")
    arrivals = [0] * n_seq if arrivals is None else list(arrivals)
    models = p.controls(list(lengths))
    stages = p.stages
    n = len(stages)
    outs = [len(m.valid()) for m in models]
    cons: list[list[Any]] = [[None] * k for k in outs]
    for k, s in enumerate(stages):
        for j, (a, b) in enumerate(s.inputs):
            if a is not None:
                cons[a][b] = (k, j)
    sk, sp = p.sink
    cons[sk][sp] = "sink"
    bounds = np.cumsum([0, *(1 + n for n in lengths)])
    total_out = p.out_elements * n_seq
    first, out0, last = (np.zeros(n_seq, dtype=np.int64) for _ in range(3))
    sent = got = 0
    seq_in = 0
    rdy: list[Any] = [None] * n
    ivs: list[Any] = [None] * n
    ors: list[Any] = [None] * n
    for t in range(limit):
        valids = [m.valid() for m in models]
        src_valid = seq_in < n_seq and t >= arrivals[seq_in]
        for k in range(n - 1, -1, -1):  # consumers first: a ready depends on theirs
            ors[k] = [c == "sink" or (c is not None and rdy[c[0]][c[1]]) for c in cons[k]]
            ivs[k] = [src_valid if a is None else valids[a][b] for a, b in stages[k].inputs]
            rdy[k] = models[k].ready(ivs[k], ors[k])
        if src_valid and rdy[0][0]:  # the embedding (stage 0) takes the design's input
            if sent == bounds[seq_in]:
                first[seq_in] = t
            sent += 1
            if sent == bounds[seq_in + 1]:
                seq_in += 1
        if valids[sk][sp]:
            if got % p.out_elements == 0:
                out0[got // p.out_elements] = t
            got += 1
            if got % p.out_elements == 0:
                last[got // p.out_elements - 1] = t
                if got == total_out:
                    return first, out0, last
        for k in range(n):
            models[k].step([v and r for v, r in zip(ivs[k], rdy[k], strict=True)], ors[k])
    raise RuntimeError(f"the sequences do not leave in {limit} cycles")
