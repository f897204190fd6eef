"""The polynomial unit: Horner's rule, one multiply-add stage per degree, one result a cycle."""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Const, Module, Value
from cosyn.hw.rtl._base import COMPONENTS, Ctx, element_shape
from cosyn.hw.rtl._elementwise import Elementwise, PhaseTable, Stage

from cosyn.ir.nodes import IntType, Poly

__all__ = ["poly_block"]


def poly_block(node: Poly, ctx: Ctx) -> Elementwise:
    """y = poly_c(x) per channel c, exactly as `Poly.eval`: h = c_d, then h = h * x + c_k.

    Stage k (k = 1 .. degree) multiplies the previous h by the element and adds the
    next coefficient, in `node.stages[k - 1]` (the type that bounds h after step k,
    so nothing it keeps can overflow); the element and its phase ride along. A degree
    0 polynomial is one stage that emits c_0. Members, timing: see `Elementwise`
    (max(degree, 1) stages).
    """
    coeffs = np.asarray(node.coeffs, dtype=np.int64)
    d = coeffs.shape[1] - 1
    if len(node.stages) != d:
        raise ValueError(f"{node.name}: {len(node.stages)} stage types for degree {d}")
    table = PhaseTable(ctx, {"c": coeffs})
    if d == 0:
        return Elementwise(node, ctx, table, [_constant(node.dtype)])
    stages = [_horner(k, node.stages[k - 1], k == d) for k in range(1, d + 1)]
    return Elementwise(node, ctx, table, stages)


def _horner(k: int, t: IntType, last: bool) -> Stage:
    """Step k of Horner's rule: h = h * x + c_k, kept in `t` bits."""

    def stage(m: Module, v: dict[str, Value], tab: PhaseTable) -> dict[str, Value]:
        ph = v["phase"]
        h = tab.get("c", ph, 0) if k == 1 else v["h"]
        x = v["x"]
        new = Value.cast(h * x + tab.get("c", ph, k))[: t.bits]
        new = new.as_signed() if t.signed else new
        return {"y": new} if last else {"h": new, "x": x}

    return stage


def _constant(t: IntType) -> Stage:
    def stage(m: Module, v: dict[str, Value], tab: PhaseTable) -> dict[str, Value]:
        c = tab.get("c", v["phase"], 0)
        return {"y": Const(c, element_shape(t)) if isinstance(c, int) else Value.cast(c)}

    return stage


COMPONENTS["poly"] = poly_block
