"""The top level: the pipeline behind AXI4-Stream-named ports."""

from __future__ import annotations

from typing import Any

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from cosyn.hw.rtl._add import Fork, SkipFifo
from cosyn.hw.rtl._base import COMPONENTS, element_shape
from cosyn.perfmodel.pipeline import Plan, Stage

from cosyn.errors import UnsupportedLayerError
from cosyn.ir.nodes import IntType

__all__ = ["Top", "axis", "tdata_width"]


def tdata_width(t: IntType) -> int:
    """AXI4-Stream tdata width of one element: its bits rounded up to a multiple of 8."""
    return -(-t.bits // 8) * 8


class Top(wiring.Component):
    """The whole graph as one streaming block: one element per AXI4-Stream transfer.

    Members: `s_axis_tdata` (In, the input element, sign-extended if signed; the bits
    above the element's width are not read), `s_axis_tvalid` (In), `s_axis_tready`
    (Out), `s_axis_tlast` (In, not needed: the design counts elements), `m_axis_tdata`
    (Out, the output element, sign-extended if signed), `m_axis_tvalid` (Out),
    `m_axis_tready` (In), `m_axis_tlast` (Out, high on the last element of a sample).

    Clock `clk`; `rst` is a synchronous, active-high reset to the registers' initial
    values (which top.v also declares, so an FPGA starts there without a reset).

    The blocks are the stages of `plan` (`cosyn.perfmodel.pipeline`), one each, in
    order (`blocks`); timing: `plan.latency` and `plan.interval`.
    """

    def __init__(self, plan: Plan) -> None:
        g = plan.graph
        for s in plan.stages:  # before any block exists, so none is left unbuilt
            _check(s)
        self.source = stream.Signature(element_shape(g.input.dtype)).create()
        self.plan = plan
        self.blocks = [_block(s) for s in plan.stages]
        t_in, t_out = g.input.dtype, plan.sink.dtype
        self.in_type, self.out_type = t_in, t_out
        super().__init__(
            {
                "s_axis_tdata": In(tdata_width(t_in)),
                "s_axis_tvalid": In(1),
                "s_axis_tready": Out(1),
                "s_axis_tlast": In(1),
                "m_axis_tdata": Out(tdata_width(t_out)),
                "m_axis_tvalid": Out(1),
                "m_axis_tready": In(1),
                "m_axis_tlast": Out(1),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        for k, (stage, block) in enumerate(zip(self.plan.stages, self.blocks, strict=True)):
            m.submodules[f"n{k}_{_ident(stage.name)}"] = block
            names = ["i"] if len(stage.inputs) == 1 else ["a", "b"]
            for name, s in zip(names, stage.inputs, strict=True):
                wiring.connect(m, self._port(s), getattr(block, name))
        axis(m, self, self.source, self._port(self.plan.sink), self.plan.sink.elements)
        return m

    def _port(self, s) -> wiring.PureInterface:
        """The output port that carries stream `s`: a block's, or the design's input."""
        if s.stage is None:
            return self.source
        return _outputs(self.blocks[s.stage])[s.port]


def axis(m: Module, top: Any, src: Any, sink: Any, elements: int) -> None:
    """`top`'s AXI4-Stream ports (`Top`'s members) on the stream `src` takes the design's
    input from and the stream `sink` gives its output on; m_axis_tlast from a count of
    output transfers, high on the last of each sample's `elements`."""
    m.d.comb += [
        src.payload.eq(top.s_axis_tdata[: top.in_type.bits]),
        src.valid.eq(top.s_axis_tvalid),
        top.s_axis_tready.eq(src.ready),
        top.m_axis_tdata.eq(sink.payload),
        top.m_axis_tvalid.eq(sink.valid),
        sink.ready.eq(top.m_axis_tready),
    ]
    if elements == 1:
        m.d.comb += top.m_axis_tlast.eq(1)
        return
    count = Signal(range(elements))
    m.d.comb += top.m_axis_tlast.eq(count == elements - 1)
    with m.If(sink.valid & top.m_axis_tready):
        m.d.sync += count.eq(count + 1)
        with m.If(count == elements - 1):
            m.d.sync += count.eq(0)


def _check(stage: Stage) -> None:
    """Raise for a stage the RTL backend cannot build."""
    if stage.kind not in ("fifo", "fork", *COMPONENTS):
        raise UnsupportedLayerError(
            f"{stage.name}: the RTL backend has no block for node kind {stage.kind!r}; "
            f"supported: {', '.join(sorted(COMPONENTS))}"
        )


def _block(stage: Stage) -> wiring.Component:
    """The Amaranth block of one stage of the plan."""
    if stage.kind == "fifo":
        return SkipFifo(stage.dtype, stage.timing.depth)
    if stage.kind == "fork":
        return Fork(stage.dtype)
    return COMPONENTS[stage.kind](stage.node, stage.ctx)


def _outputs(block: wiring.Component) -> list:
    return [block.o0, block.o1] if isinstance(block, Fork) else [block.o]


def _ident(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)
