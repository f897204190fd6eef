"""Quantizer presets: named Brevitas quantizers with power-of-two (fixed point) scales.

Every scale is a power of two, so each requantization in the integer graph is a shift.

>>> import brevitas.nn as qnn
>>> layer = qnn.QuantLinear(8, 4, bias=True, weight_quant=Int4WeightPow2, bias_quant=Int32Bias)
>>> int(layer.quant_weight().bit_width)
4
"""

from __future__ import annotations

from brevitas.quant import Int32Bias
from brevitas.quant.fixed_point import (
    Int8ActPerTensorFixedPoint,
    Int8WeightPerTensorFixedPoint,
    Uint8ActPerTensorFixedPoint,
)

__all__ = [
    "Int2WeightPow2",
    "Int4WeightPow2",
    "Int8ActPow2",
    "Int8WeightPow2",
    "Int32Bias",
    "Uint8ActPow2",
    "weight_quant",
]


class Int8ActPow2(Int8ActPerTensorFixedPoint):
    """Signed 8-bit activation, one power-of-two scale per tensor."""


class Uint8ActPow2(Uint8ActPerTensorFixedPoint):
    """Unsigned 8-bit activation (after ReLU), one power-of-two scale per tensor."""


class Int8WeightPow2(Int8WeightPerTensorFixedPoint):
    """Signed 8-bit weight, narrow range [-127, 127], one power-of-two scale per tensor."""


class Int4WeightPow2(Int8WeightPow2):
    """Signed 4-bit weight, narrow range [-7, 7], one power-of-two scale per tensor."""

    bit_width = 4


class Int2WeightPow2(Int8WeightPow2):
    """Signed 2-bit (ternary) weight, narrow range [-1, 1], one power-of-two scale."""

    bit_width = 2


_WEIGHTS = {2: Int2WeightPow2, 4: Int4WeightPow2, 8: Int8WeightPow2}


def weight_quant(bits: int) -> type:
    """The weight preset for `bits` (2, 4 or 8)."""
    if bits not in _WEIGHTS:
        raise ValueError(f"Weight bit width must be 2, 4 or 8, not {bits!r}")
    return _WEIGHTS[bits]
