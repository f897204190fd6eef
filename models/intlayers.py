"""Torch modules of the integer transformer operators: LayerNorm and GELU.

Each forward computes its output integers with the int64 torch functions of
`cosyn.models.intops`, which equal the NumPy references bit for bit, and returns them
as a Brevitas `IntQuantTensor` at a power-of-two scale (the float32 value is exact).
Training reaches the parameters through a straight-through estimator: the float
operator's gradient, with the forward value exactly the integer one
(`q + (f - f.detach())`, where `f - f.detach()` is exactly zero).

>>> import torch
>>> ln = IntLayerNorm(8).eval()
>>> y = ln(torch.linspace(-1, 1, 16).reshape(2, 8))
>>> (y.value * 2**ln.spec.out_frac).tolist()[0]
[-49.0, -35.0, -21.0, -7.0, 7.0, 21.0, 35.0, 49.0]
"""

from __future__ import annotations

import functools

import brevitas.nn as qnn
import torch
import torch.nn.functional as F
from brevitas.quant_tensor import IntQuantTensor, QuantTensor
from cosyn.models.intops import gelu_int, gelu_spec, layernorm_int, layernorm_spec
from cosyn.models.quant import Int8ActPow2
from torch import Tensor, nn

__all__ = ["IntGELU", "IntLayerNorm", "int_of", "quant_tensor", "ste"]


def ste(q: Tensor, f: Tensor) -> Tensor:
    """q in the forward pass (exactly: f - f.detach() is 0), f's gradient backward."""
    return q.detach() + (f - f.detach())


def quant_tensor(
    value: Tensor, scale: float | Tensor, bit_width: int, training: bool
) -> IntQuantTensor:
    """A signed IntQuantTensor of `value` (already on the grid of `scale`)."""
    s = torch.as_tensor(scale, dtype=torch.float32)
    return IntQuantTensor(value, s, torch.zeros(()), torch.tensor(float(bit_width)), True, training)


def int_of(x: QuantTensor) -> Tensor:
    """The int64 integers of a QuantTensor (its value divided by its scale, exactly)."""
    return torch.round(x.value.detach() / x.scale.detach()).long()


def _fixed(v: Tensor, frac: int, bits: int) -> Tensor:
    """round(v * 2^frac) (half to even) saturated to signed `bits`."""
    top = 1 << (bits - 1)
    return torch.round(v.detach().double() * 2.0**frac).clamp(-top, top - 1).long()


class IntLayerNorm(nn.Module):
    """Integer LayerNorm (`intops.layernorm_ref`) after a Brevitas input quantizer.

    Args:
        features: the normalized (last) dimension.
        in_bits: bits of the input quantizer (signed, power-of-two scale); the
            normalization does not depend on that scale.
        frac, gamma_bits, gamma_frac, out_bits, out_frac: see `intops.LayerNormSpec`.
            gamma is gamma_bits signed at 2^-gamma_frac, beta at 2^-(frac+gamma_frac);
            the output is out_bits signed at scale 2^-out_frac.

    Every input (a float tensor, e.g. a residual sum) goes through the input quantizer.
    """

    def __init__(self, features: int, in_bits: int = 8, out_bits: int = 8, **spec) -> None:
        super().__init__()
        self.spec = layernorm_spec(features, in_bits=in_bits, out_bits=out_bits, **spec)
        self.input_quant = qnn.QuantIdentity(
            act_quant=Int8ActPow2, bit_width=in_bits, return_quant_tensor=True
        )
        self.gamma = nn.Parameter(torch.ones(features))
        self.beta = nn.Parameter(torch.zeros(features))

    def int_params(self) -> tuple[Tensor, Tensor]:
        """gamma and beta as the integers the integer LayerNorm uses."""
        s = self.spec
        return _fixed(self.gamma, s.gamma_frac, s.gamma_bits), _fixed(
            self.beta, s.frac + s.gamma_frac, s.z_bits
        )

    def forward(self, x: Tensor | QuantTensor) -> IntQuantTensor:
        x = self.input_quant(x)
        s = self.spec
        q = layernorm_int(int_of(x), *self.int_params(), s).float() * 2.0**-s.out_frac
        f = F.layer_norm(x.value, (s.features,), self.gamma, self.beta)
        return quant_tensor(ste(q, f), 2.0**-s.out_frac, s.out_bits, self.training)


@functools.lru_cache(maxsize=64)
def _gelu_spec(scale: float, in_bits: int, out_bits: int, out_frac: int):
    return gelu_spec(scale, in_bits=in_bits, out_bits=out_bits, out_frac=out_frac)


class IntGELU(nn.Module):
    """I-BERT's integer GELU (`intops.gelu_ref`) of a signed QuantTensor input.

    The constants follow the input's scale; the output is out_bits signed at scale
    2^-out_frac (a dyadic requantization, `intops.GeluSpec`).
    """

    def __init__(self, in_bits: int = 8, out_bits: int = 8, out_frac: int = 4) -> None:
        super().__init__()
        self.in_bits, self.out_bits, self.out_frac = in_bits, out_bits, out_frac

    def spec(self, x: QuantTensor | float):
        """The constants for inputs at x's scale (a QuantTensor's, or a float scale)."""
        scale = float(x.scale.detach()) if isinstance(x, QuantTensor) else float(x)
        return _gelu_spec(scale, self.in_bits, self.out_bits, self.out_frac)

    def forward(self, x: QuantTensor) -> IntQuantTensor:
        if not isinstance(x, QuantTensor):
            raise TypeError(f"IntGELU takes a QuantTensor, not {type(x).__name__}")
        q = gelu_int(int_of(x), self.spec(x)).float() * 2.0**-self.out_frac
        return quant_tensor(
            ste(q, F.gelu(x.value)), 2.0**-self.out_frac, self.out_bits, self.training
        )
