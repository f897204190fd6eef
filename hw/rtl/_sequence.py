"""The top level of a graph of sequences (`Graph.sequence`): a transformer encoder that
streams whole sequences, each at its own length.

Ports are `Top`'s (AXI4-Stream names, clock `clk`, synchronous reset `rst`). A sequence
goes in as its token count L (1 to `max_tokens`) and then its L token ids, one transfer
each; its outputs (the head's, `out_elements` of them) come out with `m_axis_tlast` on
the last. The blocks:
  - the embedding (`EmbedBlock`) frames each sequence: it offers the sequence's token
    count (the start token included) to every sequence-level block, each through a FIFO
    of its own (`LENGTHS` counts deep), before the sequence's first row;
  - the position-wise blocks are the usual ones (`COMPONENTS`), a token being their
    sample;
  - each attention block (`AttentionBlock`) takes a whole sequence, then gives its rows;
  - the token read (`TokenBlock`) passes the start token's row on to the head.
A value read by several nodes is copied by a chain of `Fork`s. The input of a two-input
node that arrives ahead of the other (a residual's skip) waits in a `SkipFifo`: one
longest sequence deep, plus two tokens, where the other input's path holds whole
sequences (an attention block), else two tokens more than the blocks on that path.

A count FIFO that is full stops the embedding at a sequence's start, after every row
of the sequences before it has left the embedding, so the blocks downstream finish
those and take their counts: the FIFOs bound the sequences in flight, and cannot
deadlock the pipeline.
"""

from __future__ import annotations

import math
from typing import Any

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out
from cosyn.hw.rtl._add import Fork, SkipFifo
from cosyn.hw.rtl._attention import AttentionBlock
from cosyn.hw.rtl._base import COMPONENTS, Ctx
from cosyn.hw.rtl._embed import EmbedBlock, TokenBlock, input_type
from cosyn.hw.rtl._top import tdata_width
from cosyn.perfmodel.pipeline import default_parallelism, folded, resolve_parallelism

from cosyn.errors import UnsupportedLayerError
from cosyn.ir.graph import Graph
from cosyn.ir.kinds.attention import Attention
from cosyn.ir.kinds.embed import Embed, Token
from cosyn.ir.nodes import Node

__all__ = ["LENGTHS", "SequenceTop"]

LENGTHS = 16  # token counts a count FIFO holds: sequences in flight before a block


class SequenceTop(wiring.Component):
    """The graph of sequences `g` as one streaming block (see the module doc).
    `parallelism` as `cosyn.rtl.generate`'s. Members: `Top`'s. Attributes:
    `max_tokens` (the most ids a sequence may have), `rows` (tokens of the longest
    sequence, the start token included), `out_elements` (outputs a sequence), `in_type`
    and `out_type` (the ports' element types), `blocks` (node name -> block), `fifos`
    (each skip FIFO: (reader, input index, depth))."""

    def __init__(self, g: Graph, parallelism: int | dict | None = None) -> None:
        if not g.sequence:
            raise UnsupportedLayerError(f"{g.output.name}: not a graph of sequences")
        self.graph = g
        embeds = [n for n in g if isinstance(n, Embed)]
        if len(embeds) != 1 or g.nodes[1] is not embeds[0]:
            raise UnsupportedLayerError(
                f"{g.input.name}: a sequence design starts with one embedding of the token "
                "ids (cosyn.models.Transformer)"
            )
        self.embed_node = embeds[0]
        self.counted = [n for n in g if isinstance(n, (Attention, Token))]
        self.max_tokens = len(self.embed_node.positions) - (self.embed_node.start is not None)
        self.rows = len(self.embed_node.positions)  # tokens of the longest sequence
        self.in_type = input_type(self.embed_node, g.input.dtype)
        self.out_type = g.output.dtype
        self.out_elements = math.prod(g.output.shape)
        self.blocks = {n.name: self._block(n, parallelism) for n in g.nodes[1:]}
        self.fifos = [(n.name, j, d) for n in g.nodes[2:] for j in range(len(n.inputs))
                      if (d := self._skip_depth(n, j))]  # fmt: skip
        super().__init__({
            "s_axis_tdata": In(tdata_width(self.in_type)),
            "s_axis_tvalid": In(1),
            "s_axis_tready": Out(1),
            "s_axis_tlast": In(1),
            "m_axis_tdata": Out(tdata_width(self.out_type)),
            "m_axis_tvalid": Out(1),
            "m_axis_tready": In(1),
            "m_axis_tlast": Out(1),
        })  # fmt: skip

    def _block(self, node: Node, parallelism: int | dict | None) -> wiring.Component:
        g = self.graph
        types = tuple(g[i].dtype for i in node.inputs)
        if isinstance(node, Embed):
            return EmbedBlock(node, types[0])
        if isinstance(node, Attention):
            return AttentionBlock(node, types)  # type: ignore[arg-type]
        if isinstance(node, Token):
            return TokenBlock(node, types[0], self.rows)
        if node.kind not in COMPONENTS:
            raise UnsupportedLayerError(
                f"{node.name}: the RTL backend has no block for node kind {node.kind!r}; "
                f"supported: {', '.join(sorted(COMPONENTS))}"
            )
        par = 1
        if folded(node):
            req = parallelism.get(node.name) if isinstance(parallelism, dict) else parallelism
            par = resolve_parallelism(node, req, default_parallelism(node))[0]
        ctx = Ctx(types, tuple(g[i].shape for i in node.inputs), parallelism=par)
        try:
            return COMPONENTS[node.kind](node, ctx)
        except ValueError as e:
            raise UnsupportedLayerError(f"{node.name}: {e}") from e

    def elaborate(self, platform) -> Module:
        m = Module()
        g = self.graph
        for k, node in enumerate(g.nodes[1:]):
            m.submodules[f"n{k}_{_ident(node.name)}"] = self.blocks[node.name]
        embed = self.blocks[self.embed_node.name]
        m.d.comb += [
            embed.i.payload.eq(self.s_axis_tdata[: self.in_type.bits]),
            embed.i.valid.eq(self.s_axis_tvalid),
            self.s_axis_tready.eq(embed.i.ready),
        ]
        self._counts(m, embed.n)
        outs = self._copies(m)
        depths = {(r, j): d for r, j, d in self.fifos}
        for node in g.nodes[2:]:
            block = self.blocks[node.name]
            names = _input_names(node, block)
            for j, (name, src) in enumerate(zip(names, node.inputs, strict=True)):
                port = outs[src].pop(0)
                depth = depths.get((node.name, j))
                if depth:
                    buf = SkipFifo(g[src].dtype, depth)
                    m.submodules[f"skip_{_ident(node.name)}_{j}"] = buf
                    wiring.connect(m, port, buf.i)
                    port = buf.o
                wiring.connect(m, port, getattr(block, name))
        sink = self.blocks[g.output.name].o
        m.d.comb += [
            self.m_axis_tdata.eq(sink.payload),
            self.m_axis_tvalid.eq(sink.valid),
            sink.ready.eq(self.m_axis_tready),
        ]
        n = self.out_elements
        count = Signal(range(max(n, 2)))
        m.d.comb += self.m_axis_tlast.eq(count == n - 1)
        with m.If(sink.valid & self.m_axis_tready):
            m.d.sync += count.eq(0 if n == 1 else count + 1)
            with m.If(count == n - 1):
                m.d.sync += count.eq(0)
        return m

    def _counts(self, m: Module, counts: Any) -> None:
        """The embedding's token counts, one FIFO each, to every attention and token block."""
        width = counts.payload.shape().width
        queues = []
        for node in self.counted:
            q = fifo.SyncFIFOBuffered(width=width, depth=LENGTHS)
            m.submodules[f"count_{_ident(node.name)}"] = q
            n = self.blocks[node.name].n
            m.d.comb += [n.payload.eq(q.r_data), n.valid.eq(q.r_rdy), q.r_en.eq(n.ready),
                         q.w_data.eq(counts.payload)]  # fmt: skip
            queues.append(q)
        room = Cat(*(q.w_rdy for q in queues)).all()
        m.d.comb += counts.ready.eq(room)
        for q in queues:
            m.d.comb += q.w_en.eq(counts.valid & room)

    def _copies(self, m: Module) -> dict[str, list[Any]]:
        """Per value, an output port for each of its readers (in the order they read it):
        the block's own, or a chain of Forks."""
        g = self.graph
        outs: dict[str, list[Any]] = {}
        for node in g.nodes[1:]:
            readers = sum(r.inputs.count(node.name) for r in g.nodes[2:])
            port, ports = self.blocks[node.name].o, []
            for k in range(readers - 1):
                f = Fork(node.dtype)
                m.submodules[f"fork_{_ident(node.name)}_{k}"] = f
                wiring.connect(m, port, f.i)
                ports.append(f.o0)
                port = f.o1
            outs[node.name] = [*ports, port]
        return outs

    def _skip_depth(self, node: Node, j: int) -> int:
        """The skip FIFO's depth on input j of `node` (0: none; see the module doc)."""
        if len(node.inputs) < 2:
            return 0
        g = self.graph
        src, other = node.inputs[j], node.inputs[1 - j]
        path = _between(g, src, other)
        if not path:  # input j is the longer path (or the two are independent)
            return 0
        tokens = self.rows if any(isinstance(g[p], Attention) for p in path) else len(path)
        width = max(math.prod(g[p].shape) for p in (*path, src))
        return (tokens + 2) * width


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


def _input_names(node: Node, block: wiring.Component) -> list[str]:
    if isinstance(node, Attention):
        return ["q", "k", "v"]
    return ["i"] if len(node.inputs) == 1 else ["a", "b"]


def _ident(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)
