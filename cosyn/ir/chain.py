"""The float operations a model applies between its integer nodes, as both frontends see them.

Before the first quantizer (`2 * x - 1`, mean/std normalisation) and between an
accumulator and the next quantizer (a batch norm, TensorNorm, a scalar multiply), a
model computes in float32. The frontends keep those operations as a chain of
callables, each computing exactly what the model computes: `Binary` is an
elementwise operation with a constant operand, whose constant `operand` brings to
one value or one value per channel (the forms the requantizers and the input
quantizer can fold). A 1-bit quantizer's `levels` say what it computes.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cosyn.errors import UnsupportedLayerError
from cosyn.ir.intervals import IntType

__all__ = ["ARITHMETIC", "Binary", "operand", "quant_type"]

# The elementwise operations a chain may hold, by the name the frontends see them under.
ARITHMETIC: dict[str, Callable] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.truediv,
}


@dataclass(frozen=True)
class Binary:
    """`op(y, c)` (or `op(c, y)` where `reverse`) for a constant c: the model's own op."""

    op: Callable
    c: torch.Tensor | float | int
    reverse: bool = False

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return self.op(self.c, y) if self.reverse else self.op(y, self.c)

    @property
    def affine(self) -> bool:
        """True unless it divides by the value (c / y)."""
        return not (self.reverse and self.op is operator.truediv)


def operand(c: object, shape: tuple[int, ...], first: bool, what: str) -> torch.Tensor | float:
    """The constant `c` as the model applies it to a batch of samples of `shape`.

    A Python number stays as it is (torch computes with it as the model does). A tensor
    becomes one value (shape ()) or, after the first quantizer (`first` False), one value
    per channel (shape (C,) or (C, 1, 1)); elementwise, the arithmetic is unchanged.
    UnsupportedLayerError where it is another form.
    """
    if isinstance(c, bool) or not isinstance(c, int | float | torch.Tensor):
        raise UnsupportedLayerError(f"{what}: its operand {c!r} is not a constant number")
    if not isinstance(c, torch.Tensor):
        return c
    c = c.detach()
    if c.is_floating_point() and c.dtype != torch.float32 and c.dim() > 0:
        raise UnsupportedLayerError(f"{what}: a {c.dtype} constant is not supported; use float32")
    try:
        full = torch.broadcast_to(c, (1, *shape))
    except RuntimeError:
        full = None
    if full is None or c.dim() > len(shape) + 1:
        raise UnsupportedLayerError(
            f"{what}: a constant of shape {tuple(c.shape)} does not apply elementwise to "
            f"samples of shape {shape}"
        )
    if torch.all(full == full.reshape(-1)[0]):
        return full.reshape(-1)[0].clone()
    rows = full.reshape(shape[0], -1)
    if first or not torch.all(rows == rows[:, :1]):
        where = "before the input quantizer" if first else "between quantizers"
        per = "one value" if first else "one value, or one value per channel,"
        raise UnsupportedLayerError(
            f"{what}: a constant operand {where} must be {per} (shape {tuple(c.shape)} "
            f"varies across the samples of shape {shape}); fold it into the data or the layer"
        )
    return rows[:, 0].clone().reshape((-1,) + (1,) * (len(shape) - 1))


_PROBE = (-1e30, -1.0, -1e-30, 0.0, 1e-30, 1.0, 1e30)


def quant_type(quant: Callable, probe: object, shape: tuple[int, ...], name: str) -> IntType:
    """The integer type of what `quant` computes, from its QuantTensor `probe`.

    The declared bit width and signedness, except for a 1-bit signed quantizer, whose
    values Brevitas computes as -1 or +1 (binary_sign, bipolar) or as -1 or 0 (a 1-bit
    integer quantizer): asked on a few inputs, bipolar gives a 2-bit signed type.
    """
    bits, signed = int(probe.bit_width), bool(probe.signed)
    if bits != 1 or not signed:
        return IntType(bits, signed)
    x = torch.tensor(_PROBE, dtype=torch.float32).reshape((-1,) + (1,) * len(shape))
    out = quant(x.expand(len(_PROBE), *shape).contiguous())
    levels = set(np.unique(torch.round(out.value / out.scale).detach().numpy()).tolist())
    if levels <= {-1.0, 0.0}:
        return IntType(1, True)
    if levels <= {-1.0, 1.0}:
        return IntType(2, True)
    raise UnsupportedLayerError(
        f"{name}: a 1-bit signed quantizer computes the levels {sorted(levels)}, neither "
        "-1/+1 (bipolar) nor -1/0; cosyn cannot tell what it computes"
    )
