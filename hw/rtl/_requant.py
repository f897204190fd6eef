"""Requantizers: the shift (power-of-two scale, rounding, clip) and the threshold bank."""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Const, Module, Mux, Value, signed
from cosyn.hw.rtl._base import COMPONENTS, Ctx
from cosyn.hw.rtl._elementwise import Elementwise, PhaseTable

from cosyn.ir.nodes import IntType, Shift, Threshold

__all__ = ["shift_block", "threshold_block"]


def shift_block(node: Shift, ctx: Ctx) -> Elementwise:
    """y = clip(round(x / 2**shift), lo, hi) per channel, as `Shift.eval`, in one stage.

    A negative shift is a left shift (exact). Rounding "floor" is an arithmetic right
    shift; "half_even" adds 2**(r-1) - 1 plus the lowest kept bit before it, so a tie
    goes to the even neighbour. Members, timing: see `Elementwise` (one stage).
    """
    if node.rounding not in ("half_even", "floor"):
        raise ValueError(f"Rounding must be 'half_even' or 'floor', not {node.rounding!r}")
    k = np.asarray(node.shift, dtype=np.int64)
    m, r = np.maximum(-k, 0), np.maximum(k, 0)
    bias = np.where(r > 0, np.left_shift(1, np.maximum(r - 1, 0)) - 1, 0)
    even = node.rounding == "half_even"
    cols = {"m": m, "r": r, "bias": bias if even else 0 * r, "lo": node.lo, "hi": node.hi}
    table = PhaseTable(ctx, cols)

    def stage(mod: Module, v: dict[str, Value], t: PhaseTable) -> dict[str, Value]:
        ph = v["phase"]
        left = Value.cast(v["x"] << t.get("m", ph))  # widens: a left shift is exact
        r = t.get("r", ph)
        odd = 0
        if even and not (isinstance(r, int) and r == 0):
            odd = (left >> r)[0] & (r != 0) if not isinstance(r, int) else (left >> r)[0]
        q = Value.cast((left + t.get("bias", ph) + odd) >> r)
        return {"y": _clip(q, t.get("lo", ph), t.get("hi", ph), node.dtype)}

    return Elementwise(node, ctx, table, [stage])


def _clip(q: Value, lo, hi, out: IntType) -> Value:
    """q clipped to [lo, hi], in the output's width (the clip bounds fit it)."""
    return _fit(Mux(q < lo, lo, Mux(q > hi, hi, q)), out)


def _fit(v: Value, out: IntType) -> Value:
    """The low `out.bits` bits of v, extended by v's own sign first where v is narrower
    (a bare slice of a narrow negative value would zero-extend in the output)."""
    v = Value.cast(v)
    if v.shape().width < out.bits:
        v = v + Const(0, signed(out.bits))
    return v[: out.bits]


def threshold_block(node: Threshold, ctx: Ctx) -> Elementwise:
    """y = base + sign * #{j : x >= thresholds[c, j]} per channel, as `Threshold.eval`.

    Stage 1 compares the element with every threshold of its channel at once and
    counts the hits; stage 2 applies base and sign. Members, timing: see
    `Elementwise` (two stages).
    """
    t = np.asarray(node.thresholds, dtype=np.int64)
    t = t.reshape(t.shape[0], -1)
    lo, hi = ctx.in_type.lo, ctx.in_type.hi
    t = np.clip(t, lo, hi + 1)  # thresholds beyond the input range act the same clipped
    table = PhaseTable(ctx, {"t": t, "base": node.base, "sign": node.sign})
    n = t.shape[1]

    def count(mod: Module, v: dict[str, Value], tab: PhaseTable) -> dict[str, Value]:
        x = Value.cast(v["x"]).as_signed() if ctx.in_type.signed else v["x"]
        hits = [Value.cast(x >= tab.get("t", v["phase"], j)) for j in range(n)]
        return {"c": _tree_sum(hits)}

    def level(mod: Module, v: dict[str, Value], tab: PhaseTable) -> dict[str, Value]:
        ph = v["phase"]
        base, sign = tab.get("base", ph), tab.get("sign", ph)
        c = v["c"]
        y = (
            base + c
            if isinstance(sign, int) and sign > 0
            else (base - c if isinstance(sign, int) else Mux(sign[-1], base - c, base + c))
        )
        return {"y": _fit(y, node.dtype)}

    return Elementwise(node, ctx, table, [count, level])


def _tree_sum(vals: list[Value]) -> Value:
    """The sum of `vals` as a balanced adder tree (width grows by one bit a level)."""
    if not vals:
        return Value.cast(0)
    while len(vals) > 1:
        pairs = [vals[j] + vals[j + 1] for j in range(0, len(vals) - 1, 2)]
        vals = pairs + ([vals[-1]] if len(vals) % 2 else [])
    return Value.cast(vals[0])


COMPONENTS["shift"] = shift_block
COMPONENTS["threshold"] = threshold_block
