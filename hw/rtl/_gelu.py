"""The GELU block: I-BERT's i-GELU of each element (`intops.gelu_ref`), exactly.

`COMPONENTS["gelu"](node, ctx)` builds an `Elementwise` pipeline of
`perfmodel.gelu.GELU_STAGES` stages (its timing and resources: `perfmodel.gelu`).
"""

from __future__ import annotations

from typing import Any

from amaranth.hdl import Module, Mux, Value
from cosyn.hw.rtl._base import COMPONENTS, Ctx, saturate
from cosyn.hw.rtl._elementwise import Elementwise, PhaseTable
from cosyn.models.intops import round_shift
from cosyn.perfmodel.gelu import GELU_STAGES

from cosyn.ir.kinds.gelu import Gelu

__all__ = ["gelu_block"]


def gelu_block(node: Gelu, ctx: Ctx) -> Elementwise:
    """y = saturate(round_shift(x (erf + one) mult, mshift)), erf = (sign(x) (a^2 + c)) >> k,
    a = min(|x|, -b) + b, as `Gelu.eval`; one stage each (see `perfmodel.gelu`)."""
    s = node.spec

    def clip(m: Module, v: dict[str, Any], tab, run) -> dict[str, Any]:
        x = v["x"]
        mag = Mux(x < 0, -x, x)
        return {"x": x, "a": Mux(mag < -s.b, mag, -s.b) + s.b}

    def square(m: Module, v: dict[str, Any], tab, run) -> dict[str, Any]:
        return {"x": v["x"], "t": v["a"] * v["a"] + s.c}

    def erf(m: Module, v: dict[str, Any], tab, run) -> dict[str, Any]:
        x, t = v["x"], v["t"]
        signed_t = Mux(x > 0, t, Mux(x < 0, -t, 0))
        return {"x": x, "ell": (signed_t >> s.k) + s.one}

    def times_x(m: Module, v: dict[str, Any], tab, run) -> dict[str, Any]:
        return {"g": v["x"] * v["ell"]}

    def scale(m: Module, v: dict[str, Any], tab, run) -> dict[str, Any]:
        return {"gm": v["g"] * s.mult}

    def finish(m: Module, v: dict[str, Any], tab, run) -> dict[str, Any]:
        y = saturate(round_shift(Value.cast(v["gm"]), s.mshift), s.out_bits)[: node.dtype.bits]
        return {"y": y.as_signed() if node.dtype.signed else y}

    stages = [clip, square, erf, times_x, scale, finish]
    assert len(stages) == GELU_STAGES
    return Elementwise(node, ctx, PhaseTable(ctx, {}), stages)


COMPONENTS[Gelu.kind] = gelu_block
