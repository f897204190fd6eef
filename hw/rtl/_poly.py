"""The polynomial unit: Horner's rule, pipelined multiply stages and an add stage per degree."""

from __future__ import annotations

from typing import Any

import numpy as np
from amaranth.hdl import Const, Module, Value
from cosyn.hw.rtl._base import COMPONENTS, Ctx, element_shape
from cosyn.hw.rtl._elementwise import Elementwise, PhaseTable, Stage
from cosyn.hw.rtl._mul import multiples, pair_terms, sum_pairs
from cosyn.perfmodel.blocks import poly_stages
from cosyn.perfmodel.mac import NARROW, multiply_stages

from cosyn.ir.nodes import IntType, Poly

__all__ = ["poly_block"]


def poly_block(node: Poly, ctx: Ctx) -> Elementwise:
    """y = poly_c(x) per channel c, exactly as `Poly.eval`: h = c_d, then h = h * x + c_k.

    Stage 1 looks up the channel's first coefficient, and the stage before each add the
    one it adds (registered where they differ between channels; each lookup reads its
    own stage's phase register, so no one register drives every table). Per Horner
    step k (k = 1 .. degree) the previous h is multiplied by the element in
    `multiply_stages` stages (an element of up to 8 bits selects multiples of h, `_mul`;
    a wider one uses a multiplier block), and one stage adds the next coefficient, in
    `node.stages[k - 1]` (the type that bounds h after step k, so nothing it keeps can
    overflow; the product is kept modulo its width).
    The element and its phase ride along. A degree 0 polynomial is the lookup of c_0.
    Members, timing: see `Elementwise` (`perfmodel.blocks.poly_stages`).
    """
    coeffs = np.asarray(node.coeffs, dtype=np.int64)
    d = coeffs.shape[1] - 1
    if len(node.stages) != d:
        raise ValueError(f"{node.name}: {len(node.stages)} stage types for degree {d}")
    table = PhaseTable(ctx, {"c": coeffs})
    bits = ctx.in_type.bits
    stages = [_lookup(d, node.dtype)]
    for k in range(1, d + 1):
        t = node.stages[k - 1]
        *mul, last = _multiply(k, t, bits)
        stages += [*mul, _looking_up(last, k), _add(k, t, k == d)]
    if len(stages) != poly_stages(d, bits):
        raise ValueError(f"{node.name}: {len(stages)} stages, {poly_stages(d, bits)} in timing")
    return Elementwise(node, ctx, table, stages)


def _coeff(v: dict[str, Any], tab: PhaseTable, k: int) -> Value | int:
    """Coefficient k of the element's channel: a constant, or the register its lookup
    set."""
    c = tab.const("c", k)
    return c if c is not None else v[f"c{k}"]


def _lookup(d: int, out: IntType) -> Stage:
    def stage(m: Module, v: dict[str, Value], tab: PhaseTable, run) -> dict[str, Any]:
        ph = v["phase"]
        if d == 0:
            c = tab.get("c", ph, 0)
            return {"y": Const(c, element_shape(out)) if isinstance(c, int) else c}
        new: dict[str, Any] = {"x": v["x"]}
        if tab.const("c", 0) is None:
            new["c0"] = tab.get("c", ph, 0)
        return new

    return stage


def _looking_up(stage: Stage, k: int) -> Stage:
    """`stage`, which also looks up coefficient k by its own phase."""

    def looked(m: Module, v: dict[str, Any], tab: PhaseTable, run) -> dict[str, Any]:
        out = stage(m, v, tab, run)
        if tab.const("c", k) is None:
            out[f"c{k}"] = tab.get("c", v["phase"], k)
        return out

    return looked


def _multiply(k: int, t: IntType, bits: int) -> list[Stage]:
    """h * x of step k in `multiply_stages(bits)` stages, the product kept modulo
    2**t.bits (the sum with c_k fits t)."""

    def h_of(v: dict[str, Any], tab: PhaseTable) -> Value:
        h = _coeff(v, tab, 0) if k == 1 else v["h"]
        return Const(h) if isinstance(h, int) else Value.cast(h)

    def product(p: Value) -> Value:
        p = Value.cast(p)
        return p[: t.bits] if p.shape().width > t.bits else p

    if multiply_stages(bits) == 2 and bits > NARROW:  # a multiplier block

        def full(m: Module, v: dict[str, Any], tab: PhaseTable, run) -> dict[str, Any]:
            return {**_rest(v, k), "p": h_of(v, tab) * v["x"]}

        def reg(m: Module, v: dict[str, Any], tab: PhaseTable, run) -> dict[str, Any]:
            return {**v, "p": product(v["p"])}

        return [full, reg]

    def mults(m: Module, v: dict[str, Any], tab: PhaseTable, run) -> dict[str, Any]:
        ms = multiples(h_of(v, tab))
        return {**_rest(v, k), "m1": ms[1], "m3": ms[3], "mn1": ms[-1]}

    def select(m: Module, v: dict[str, Any], tab: PhaseTable, run) -> dict[str, Any]:
        ms = {1: v["m1"], 3: v["m3"], -1: v["mn1"]}
        sums = sum_pairs(pair_terms(v["x"], ms))
        keep = {n: val for n, val in v.items() if n[0] != "m"}
        if len(sums) == 1:
            return {**keep, "p": product(sums[0])}
        return {**keep, "s0": sums[0], "s1": sums[1]}

    def final(m: Module, v: dict[str, Any], tab: PhaseTable, run) -> dict[str, Any]:
        keep = {n: val for n, val in v.items() if n[0] != "s"}
        return {**keep, "p": product(v["s0"] + v["s1"])}

    return [mults, select] + ([final] if multiply_stages(bits) == 3 else [])


def _add(k: int, t: IntType, last: bool) -> Stage:
    """h = p + c_k, in t."""

    def stage(m: Module, v: dict[str, Value], tab: PhaseTable, run) -> dict[str, Any]:
        h = Value.cast(v["p"] + _coeff(v, tab, k))[: t.bits]
        h = h.as_signed() if t.signed else h
        return {"y": h} if last else {**_rest(v, k + 1), "h": h}

    return stage


def _rest(v: dict[str, Any], k: int) -> dict[str, Any]:
    """What later steps still need: the element and the coefficients after c_k."""
    return {n: val for n, val in v.items() if n == "x" or (n[0] == "c" and int(n[1:]) >= k)}


COMPONENTS["poly"] = poly_block
