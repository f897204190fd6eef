"""A stall-together pipeline for elementwise blocks, and per-channel parameters by phase.

An elementwise block maps each input element to one output element through a few
registered stages. Its per-channel constants follow the stream: position j of the
stream belongs to channel `ctx.channel()[j]`, and the constants repeat with the
shortest period that divides the sample (C in HWC order, 1 when they are the same
for all channels), so a phase counter modulo that period selects them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from amaranth.hdl import Array, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import wiring
from cosyn.hw.rtl._base import Ctx, ports
from cosyn.perfmodel.blocks import TIMINGS

from cosyn.ir.nodes import Node, int_type_for_range

__all__ = ["Elementwise", "PhaseTable", "Registered"]

Stage = Callable[[Module, dict[str, Value], "PhaseTable", Value], dict[str, Any]]


class PhaseTable:
    """Per-channel constants laid out by stream phase; `get(name, phase)` selects one.

    `cols` maps a name to a (channels or 1, ...) array. Each constant is a Python int
    when it is the same at every phase, else an Array lookup by the phase signal.
    """

    def __init__(self, ctx: Ctx, cols: dict[str, np.ndarray]) -> None:
        self.cols = ctx.by_phase(cols)
        self.period = len(next(iter(self.cols.values()))) if self.cols else 1

    def const(self, name: str, j: int = 0) -> int | None:
        """The constant's value when it does not depend on the phase, else None."""
        col = self.cols[name][:, j]
        return int(col[0]) if np.all(col == col[0]) else None

    def get(self, name: str, phase: Value, j: int = 0) -> Value | int:
        c = self.const(name, j)
        if c is not None:
            return c
        col = self.cols[name][:, j]
        t = int_type_for_range(col.min(), col.max())
        shape = signed(t.bits) if t.signed else t.bits
        return Array(Const(int(v), shape) for v in col)[phase]

    def width(self, name: str) -> int:
        return self.cols[name].shape[1]


class Registered:
    """A value a stage returns that is already a register of the stage (a memory's
    read data, enabled while the pipeline runs): the pipeline adds no register."""

    def __init__(self, value: Value) -> None:
        self.value = Value.cast(value)


class Elementwise(wiring.Component):
    """Base of the one-in, one-out elementwise blocks: `stages` registered steps.

    Members: `i` (In, element stream of the input type), `o` (Out, element stream of
    `node.dtype`). Each stage is a function (m, values, table, run) -> new values,
    registered while `run`; the input is value "x" with its "phase", the output value
    "y". A stage may return `Registered` values (memory reads enabled by `run`).

    The stages' data registers have no reset (only their valid bits do), so synthesis
    may put one behind a block RAM into the block's output register.

    The stages advance together while a skid register behind them is empty: a result
    the consumer does not take goes there, and the stages hold until it has left. So
    the input's ready is a register, never the consumer's ready passed on.

    Timing: `cycles` (`perfmodel.blocks.ElementwiseTiming`): its `depth` is the number
    of stages, which the block checks it builds.
    """

    def __init__(self, node: Node, ctx: Ctx, table: PhaseTable, stages: list[Stage]) -> None:
        self.cycles = TIMINGS[node.kind](node, ctx)
        if len(stages) != self.cycles.depth:
            raise ValueError(
                f"{node.name}: {len(stages)} stages built, {self.cycles.depth} in its timing"
            )
        self.node, self.ctx, self.table, self.stages = node, ctx, table, stages
        super().__init__(ports(ctx, node.dtype))

    def elaborate(self, platform) -> Module:
        m = Module()
        full = Signal()  # the skid register holds a result
        run = ~full
        m.d.comb += self.i.ready.eq(run)
        vals: dict[str, Value] = {"x": self.i.payload, "phase": self._phase(m)}
        valid: Value = self.i.valid
        for k, stage in enumerate(self.stages):
            new = stage(m, vals, self.table, run)
            new.setdefault("phase", vals["phase"])
            regs = {}
            for n, v in new.items():
                if isinstance(v, Registered):
                    regs[n] = v.value
                    continue
                regs[n] = Signal(Value.cast(v).shape(), name=f"s{k}_{n}", reset_less=True)
                with m.If(run):
                    m.d.sync += regs[n].eq(v)
            v_reg = Signal(name=f"s{k}_valid")
            with m.If(run):
                m.d.sync += v_reg.eq(valid)
            vals, valid = regs, v_reg
        self._skid(m, full, valid, vals["y"])
        return m

    def _skid(self, m: Module, full: Signal, valid: Value, y: Value) -> None:
        skid = Signal(Value.cast(y).shape())
        m.d.comb += [self.o.valid.eq(full | valid), self.o.payload.eq(Mux(full, skid, y))]
        with m.If(full & self.o.ready):
            m.d.sync += full.eq(0)
        with m.Elif(~full & valid & ~self.o.ready):
            m.d.sync += [full.eq(1), skid.eq(y)]

    def _phase(self, m: Module) -> Value:
        """The stream phase of the input element: a counter modulo the table's period."""
        if self.table.period == 1:
            return Const(0, 1)
        phase = Signal(range(self.table.period))
        with m.If(self.i.valid & self.i.ready):
            with m.If(phase == self.table.period - 1):
                m.d.sync += phase.eq(0)
            with m.Else():
                m.d.sync += phase.eq(phase + 1)
        return phase
