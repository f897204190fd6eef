"""The product block's timing and resources, defined once (kind "mul").

`MulBlock` (`hw/rtl/_product.py`) has `AddBlock`'s control: one output register; a pair
of elements (one of each input, in the same stream order) is taken when both are valid
and the register is empty or leaving, and their product registered. So its timing is
the add's, `perfmodel.blocks.AddTiming` (latency 1, interval = elements, with its
`quiet`/`skip` shortcuts). A product of any two widths is one multiplier (a DSP block
or LUTs, by the family's rule in `perfmodel.resources.cost`) in front of that register.

This module registers the kind's timing (`perfmodel.blocks.TIMINGS`) and primitives
(`perfmodel.resources.PRIMITIVES`); `cosyn.perfmodel` imports every module of its package.
"""

from __future__ import annotations

from typing import Any

from cosyn.perfmodel.blocks import TIMINGS, AddTiming
from cosyn.perfmodel.resources import PRIMITIVES, Primitives

from cosyn.ir.kinds.mul import Mul

__all__ = ["primitives"]


def primitives(stage: Any) -> Primitives:
    """`MulBlock`: the a x b multiplier, the output register and its valid, the register's
    load. The longest path is the multiplier's: its partial products summed in a tree of
    log2(narrow operand) levels, the last a carry chain of the product's bits."""
    a, b = (t.bits for t in stage.ctx.in_types)
    y = stage.node.dtype.bits
    levels = 1 + max(min(a, b) - 1, 0).bit_length()
    return Primitives(mults=[(a, b)], reg_bits=y + 1, mux_bits=y, depth=a + b, levels=levels)


def _timing(node: Mul, ctx: Any) -> AddTiming:
    if len(set(ctx.in_shapes)) != 1:
        raise ValueError(f"mul takes two inputs of one shape, not {list(ctx.in_shapes)}")
    return AddTiming(ctx.elements)


TIMINGS[Mul.kind] = _timing
PRIMITIVES[Mul.kind] = primitives
