"""The product block: two element streams multiplied element by element (kind "mul").

`COMPONENTS["mul"](node, ctx)` builds `MulBlock` (inputs `a`, `b` in `node.inputs` order,
`ctx.in_types` for both). Its control is `AddBlock`'s, so its timing is the add's
(`perfmodel.blocks.AddTiming`, registered for the kind by `perfmodel.product`). (`_mul.py`
holds the multiply-accumulate lanes' multipliers.)
"""

from __future__ import annotations

from amaranth.hdl import Value
from cosyn.hw.rtl._add import AddBlock
from cosyn.hw.rtl._base import COMPONENTS, Ctx

from cosyn.ir.kinds.mul import Mul

__all__ = ["MulBlock"]


class MulBlock(AddBlock):
    """o = a * b, element by element, in `node.dtype` (which holds every product).

    Members: `a`, `b` (In, element streams of `ctx.in_types`), `o` (Out, element stream
    of `node.dtype`). `AddBlock`'s control: one element of each input taken together,
    when both are valid and the output register is empty or leaving, and their product
    registered. Timing: `cycles` (`AddTiming`, registered for "mul").
    """

    def combine(self, a: Value, b: Value) -> Value:
        return a * b


def _mul(node: Mul, ctx: Ctx) -> MulBlock:
    return MulBlock(node, ctx)


COMPONENTS[Mul.kind] = _mul
