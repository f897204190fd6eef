"""The label-select block: the indices of the k largest elements of a flat value.

`COMPONENTS["labelselect"](node, ctx)` builds `LabelSelectBlock` (`ctx.in_type`, a flat
input in index order). Its timing and resources are `perfmodel.labelselect`
(`LabelSelectTiming`, the cycle model of this control).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from cosyn.hw.rtl._base import COMPONENTS, Ctx, element_shape, ports
from cosyn.perfmodel.blocks import TIMINGS

from cosyn.ir.kinds.labelselect import LabelSelect

__all__ = ["LabelSelectBlock"]


class LabelSelectBlock(wiring.Component):
    """o = the indices of the k largest of the N input elements, largest first, equal
    values in index order (`LabelSelect.eval`).

    Members: `i` (In, element stream of `ctx.in_type`, N elements in index order), `o`
    (Out, element stream of `node.dtype`, k labels per sample).

    k slots hold (value, index, full), sorted: an element taken goes into the first
    slot that is empty or whose value it exceeds (strictly, so an earlier equal value
    stays ahead), the slots from there shifting down one, all in the cycle it is taken.
    A sample's last element goes instead, with the slots, into the output shift register
    of k labels (the slots emptied for the next sample), which sends one label a cycle.
    The input waits at a sample's last element while labels are left to send.
    Timing: `cycles` (`perfmodel.labelselect.LabelSelectTiming`).
    """

    def __init__(self, node: LabelSelect, ctx: Ctx) -> None:
        self.node, self.ctx = node, ctx
        self.cycles = TIMINGS[node.kind](node, ctx)
        super().__init__(ports(ctx, node.dtype))

    def elaborate(self, platform) -> Module:
        m = Module()
        n, k = self.cycles.n, self.cycles.k
        xs, label = element_shape(self.ctx.in_type), element_shape(self.node.dtype)
        pos, left = Signal(label), Signal(range(k + 1))
        val = [Signal(xs, name=f"val{j}") for j in range(k)]
        idx = [Signal(label, name=f"idx{j}") for j in range(k)]
        full = [Signal(name=f"full{j}") for j in range(k)]
        out = [Signal(label, name=f"out{j}") for j in range(k)]
        ready = (pos != n - 1) | (left == 0)
        take = self.i.valid & ready
        x = self.i.payload
        beats = [~full[j] | (x > val[j]) for j in range(k)]  # the new element goes at or above j
        new_val, new_idx, new_full = [], [], []
        for j in range(k):
            here = beats[j] if j == 0 else beats[j] & ~beats[j - 1]
            down = beats[j - 1] if j else 0  # slot j - 1 shifts into slot j
            new_val.append(Mux(down, val[j - 1] if j else 0, Mux(here, x, val[j])))
            new_idx.append(Mux(down, idx[j - 1] if j else 0, Mux(here, pos, idx[j])))
            new_full.append(Mux(down, full[j - 1] if j else 0, full[j] | here))
        m.d.comb += [
            self.i.ready.eq(ready),
            self.o.valid.eq(left != 0),
            self.o.payload.eq(out[0]),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [left.eq(left - 1)]
            m.d.sync += [out[j].eq(out[j + 1]) for j in range(k - 1)]
        with m.If(take):
            with m.If(pos == n - 1):
                m.d.sync += [pos.eq(0), left.eq(k)]
                m.d.sync += [o.eq(v) for o, v in zip(out, new_idx, strict=True)]
                m.d.sync += [f.eq(0) for f in full]
            with m.Else():
                m.d.sync += pos.eq(pos + 1)
                for j in range(k):
                    m.d.sync += [val[j].eq(new_val[j]), idx[j].eq(new_idx[j]),
                                 full[j].eq(new_full[j])]  # fmt: skip
        return m


def _labelselect(node: LabelSelect, ctx: Ctx) -> LabelSelectBlock:
    return LabelSelectBlock(node, ctx)


COMPONENTS[LabelSelect.kind] = _labelselect
