"""The top level of a graph of sequences (`Graph.sequence`): a transformer encoder that
streams whole sequences, each at its own length.

Ports are `Top`'s (AXI4-Stream names, clock `clk`, synchronous reset `rst`). A sequence
goes in as its token count L (1 to `max_tokens`) and then its L token ids, one transfer
each; its outputs (the head's, `out_elements` of them) come out with `m_axis_tlast` on
the last. The blocks and their wiring are the plan's (`perfmodel.sequence.SequencePlan`,
which also steps their controls for each sequence's cycles): the embedding
(`EmbedBlock`), whose count goes to every attention and token block through a count
FIFO each, the position-wise blocks (`COMPONENTS`, a token being their sample), the
attention blocks (`AttentionBlock`), the token read (`TokenBlock`), forks and skip
FIFOs (`Fork`, `SkipFifo`).
"""

from __future__ import annotations

from typing import Any

from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from cosyn.hw.rtl._add import Fork, SkipFifo
from cosyn.hw.rtl._attention import AttentionBlock
from cosyn.hw.rtl._base import COMPONENTS
from cosyn.hw.rtl._embed import EmbedBlock, TokenBlock, input_type
from cosyn.hw.rtl._top import _ident, _outputs, axis, tdata_width
from cosyn.perfmodel.sequence import SeqStage, SequencePlan

from cosyn.errors import UnsupportedLayerError
from cosyn.ir.graph import Graph

__all__ = ["SequenceTop"]


class SequenceTop(wiring.Component):
    """The graph of sequences `g` as one streaming block (see the module doc).
    `parallelism` as `cosyn.rtl.generate`'s. Members: `Top`'s. Attributes: `plan`, and
    from it `max_tokens` (the most ids a sequence may have), `rows` (tokens of the
    longest sequence, the start token included), `out_elements` (outputs a sequence);
    `in_type` and `out_type` (the ports' element types); `blocks` (one a plan stage);
    `fifos` (each skip FIFO: (reader, input index, depth))."""

    def __init__(self, g: Graph, parallelism: int | dict | None = None) -> None:
        self.plan = p = SequencePlan(g, parallelism)
        self.graph, self.max_tokens, self.rows = g, p.max_tokens, p.rows
        self.in_type = input_type(p.embed, g.input.dtype)
        self.out_type = g.output.dtype
        self.out_elements = p.out_elements
        self.blocks = [self._block(s) for s in p.stages]
        self.fifos = [
            (s.name, j - (s.kind in ("attention", "token")), p.stages[a].depth)
            for s in p.stages
            for j, (a, _) in enumerate(s.inputs)
            if a is not None and p.stages[a].kind == "fifo"
        ]
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

    def _block(self, s: SeqStage) -> wiring.Component:
        g = self.graph
        types = tuple(g[i].dtype for i in s.node.inputs) if s.node is not None else ()
        if s.kind == "embed":
            return EmbedBlock(s.node, types[0])
        if s.kind in ("fifo", "count"):
            return SkipFifo(s.dtype, s.depth)
        if s.kind == "fork":
            return Fork(s.dtype)
        if s.kind == "attention":
            return AttentionBlock(s.node, types)
        if s.kind == "token":
            return TokenBlock(s.node, types[0], self.rows)
        try:
            return COMPONENTS[s.kind](s.node, s.ctx)
        except ValueError as e:
            raise UnsupportedLayerError(f"{s.name}: {e}") from e

    def elaborate(self, platform) -> Module:
        m = Module()
        for k, (s, block) in enumerate(zip(self.plan.stages, self.blocks, strict=True)):
            m.submodules[f"n{k}_{_ident(s.name)}"] = block
        embed = self.blocks[0]
        counts = [
            b for s, b in zip(self.plan.stages, self.blocks, strict=True) if s.kind == "count"
        ]
        m.d.comb += embed.n.ready.eq(Cat(*(c.i.ready for c in counts)).all())
        for c in counts:  # every count FIFO takes each count together
            m.d.comb += [
                c.i.valid.eq(embed.n.valid & embed.n.ready),
                c.i.payload.eq(embed.n.payload),
            ]
        for s, block in zip(self.plan.stages[1:], self.blocks[1:], strict=True):
            if s.kind == "count":
                continue
            for name, (a, j) in zip(_input_names(s), s.inputs, strict=True):
                src = self._output(a, j)
                dst = getattr(block, name)
                if s.kind in ("attention", "token") and name == "n":
                    m.d.comb += [dst.payload.eq(src.payload), dst.valid.eq(src.valid),
                                 src.ready.eq(dst.ready)]  # fmt: skip
                else:
                    wiring.connect(m, src, dst)
        axis(m, self, embed.i, self._output(*self.plan.sink), self.out_elements)
        return m

    def _output(self, stage: int, port: int) -> Any:
        return _outputs(self.blocks[stage])[port]


def _input_names(s: SeqStage) -> list[str]:
    if s.kind == "attention":
        return ["n", "q", "k", "v"]
    if s.kind == "token":
        return ["n", "i"]
    return ["i"] if len(s.inputs) == 1 else ["a", "b"]
