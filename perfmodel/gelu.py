"""The GELU block's timing and resources, defined once (kind "gelu").

`hw/rtl/_gelu.py` computes I-BERT's i-GELU (`intops.gelu_ref`) of each element in
`GELU_STAGES` registered stages of an `Elementwise` pipeline (its timing:
`ElementwiseTiming`): the clipped magnitude a = min(|x|, -b) + b; a^2 + c; the sign and
shift of erf, plus one; x times it; times the requantization's multiplier; the round
and saturation.
"""

from __future__ import annotations

from typing import Any

from cosyn.models.intops import GeluSpec, signed_bits
from cosyn.perfmodel.blocks import TIMINGS, ElementwiseTiming
from cosyn.perfmodel.resources import PRIMITIVES, Primitives, _pipeline

from cosyn.ir.kinds.gelu import Gelu

__all__ = ["GELU_STAGES", "widths"]

GELU_STAGES = 6


def widths(spec: GeluSpec, x: int) -> dict[str, int]:
    """Signed bits of each stage's value for x of `x` bits."""
    top = 1 << (x - 1)
    a = signed_bits(spec.b, 0)
    t = signed_bits(spec.c, spec.b * spec.b + spec.c)
    erf = signed_bits(min(spec.c, -spec.b * spec.b - spec.c) >> spec.k, max(-spec.c, 0))
    ell = erf + 1
    g = signed_bits(-top * (1 << (ell - 1)), top * (1 << (ell - 1)))
    return {"a": a, "t": t, "ell": ell, "g": g, "gm": g + spec.mult.bit_length() + 1}


def primitives(stage: Any) -> Primitives:
    """Three multipliers (a^2, x L, the requantization's), the adders and compares of the
    clip, erf's sign and the rounding, the saturation's selects."""
    spec, x, y = stage.node.spec, stage.ctx.in_type.bits, stage.node.dtype.bits
    w = widths(spec, x)
    prims = Primitives(
        mults=[(w["a"], w["a"]), (x, w["ell"]), (w["g"], spec.mult.bit_length() + 1)],
        add_bits=2 * x + w["t"] + w["ell"] + w["gm"] + 2 * y,
        mux_bits=x + w["t"] + y,
    )
    _pipeline(prims, [x + w["a"], x + w["t"], x + w["ell"], w["g"], w["gm"], y], y)
    prims.depth, prims.levels = w["gm"], 2
    return prims


TIMINGS[Gelu.kind] = lambda node, ctx: ElementwiseTiming(GELU_STAGES, ctx.elements)
PRIMITIVES[Gelu.kind] = primitives
