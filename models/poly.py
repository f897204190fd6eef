"""PolyAct: a trainable polynomial activation that integer hardware computes exactly.

A PolyAct quantizes its input to a small integer xi at a power-of-two scale sx,
evaluates p(x) = sum_k a_k x^k by Horner's rule with every coefficient a_k in fixed
point (ai_k * 2^e_k, ai_k a `coeff_bits` integer), and quantizes the result with a
Brevitas output quantizer. With power-of-two scales the polynomial is exactly an
integer h at the finest term scale S = 2^E:

    h = sum_k c_k xi^k,   c_k = ai_k * 2^(e_k + k log2 sx - E),   p(x) = h * S

The forward pass computes h in float64 on integer values (exact below 2^53; the
constructor proves the bound) and hands float32(h * S) to the output quantizer, so the
integer graph's `Poly` node followed by a requantize node equals it bit for bit.

>>> act = PolyAct(channels=4, degree=2)
>>> act.degree
2
"""

from __future__ import annotations

import brevitas.nn as qnn
import numpy as np
import torch
from brevitas.quant_tensor import QuantTensor
from cosyn.models.poly_ir import lower_polyact
from cosyn.models.quant import Int8ActPow2
from torch import Tensor, nn

from cosyn.errors import BitWidthError, CosynError
from cosyn.ir.lowering import LOWERINGS

__all__ = ["EXACT_BITS", "PolyAct", "PolyActError", "relu_fit"]

EXACT_BITS = 53  # float64 holds every integer of magnitude below 2^53 exactly


class PolyActError(CosynError):
    """A PolyAct or GateAct configured or fed wrongly (degree, channels, calibration data)."""


def _check_config(degree: int, act_bits: int, in_bits: int, coeff_bits: int, span: int) -> None:
    """Raise where the configuration is invalid or Horner's rule could leave float64."""
    what = f"PolyAct(degree={degree}, in_bits={in_bits}, coeff_bits={coeff_bits}, span={span})"
    if degree not in (2, 3):
        raise PolyActError(f"PolyAct: degree must be 2 or 3, not {degree!r}")
    if not 2 <= coeff_bits <= 24:
        raise BitWidthError(f"{what}: coeff_bits must be between 2 and 24, not {coeff_bits!r}")
    for label, bits in (("act_bits", act_bits), ("in_bits", in_bits)):
        if not 2 <= bits <= 16:
            raise BitWidthError(f"PolyAct: {label} must be between 2 and 16, not {bits!r}")
    if not 0 <= span <= 32:
        raise BitWidthError(f"{what}: span must be between 0 and 32, not {span!r}")
    need = horner_bits(degree, in_bits, coeff_bits, span)
    if need > EXACT_BITS:
        raise BitWidthError(
            f"{what}: Horner's rule needs up to {need} bits, more than the {EXACT_BITS} "
            "that float64 holds exactly; lower in_bits, coeff_bits or span"
        )


def horner_bits(degree: int, in_bits: int, coeff_bits: int, span: int) -> int:
    """Signed bits that hold every Horner stage for any coefficients and input in range.

    |c_k| <= (2^(coeff_bits-1) - 1) * 2^span and |xi| <= 2^in_bits, so
    |h| < 2^(coeff_bits-1+span) * 2 * 2^(degree*in_bits): one more bit for the sign.
    """
    return coeff_bits + span + degree * in_bits + 1


def _gauss_grid(n: int = 4096) -> Tensor:
    """Standard normal quantiles: a deterministic sample of N(0, 1)."""
    p = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return torch.erfinv(2 * p - 1) * 2**0.5


def relu_fit(x: Tensor, degree: int) -> Tensor:
    """Least-squares coefficients (highest degree first) of ReLU over samples `x`, per row.

    `x` is (C, n); returns (C, degree + 1) in float64.
    """
    x = x.double()
    powers = torch.arange(degree, -1, -1, dtype=torch.float64)
    v = x[..., None] ** powers  # (C, n, d+1)
    scale = v.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)  # column scaling: conditioning
    sol = torch.linalg.lstsq(v / scale, torch.relu(x)[..., None], driver="gelsd").solution
    return sol[..., 0] / scale[:, 0]


class PolyAct(nn.Module):
    """Quantized polynomial activation: input quantizer, fixed-point Horner, output quantizer.

    Args:
        channels: per-channel coefficients for inputs with this many channels (axis 1);
            None for one polynomial per tensor.
        degree: 2 or 3.
        act_bits: bits of the output quantizer; in_bits those of the input quantizer
            (default act_bits).
        coeff_bits: signed bits of each coefficient's integer mantissa.
        span: a term's scale may lie at most 2^span below the coarsest term's; finer
            coefficients are coarsened (this bounds every integer width).
        input_quant, output_quant: Brevitas activation quantizers with power-of-two scales.

    Coefficients start as the least-squares fit of ReLU over N(0, 1); `fit_relu`
    refits them over the inputs a layer actually sees.
    """

    def __init__(
        self,
        channels: int | None = None,
        degree: int = 2,
        act_bits: int = 8,
        coeff_bits: int = 8,
        in_bits: int | None = None,
        span: int = 16,
        input_quant: type = Int8ActPow2,
        output_quant: type = Int8ActPow2,
        return_quant_tensor: bool = True,
    ) -> None:
        super().__init__()
        in_bits = act_bits if in_bits is None else in_bits
        _check_config(degree, act_bits, in_bits, coeff_bits, span)
        if channels is not None and (not isinstance(channels, int) or channels < 1):
            msg = f"PolyAct: channels must be a positive int or None, not {channels!r}"
            raise PolyActError(msg)
        self.channels, self.degree, self.coeff_bits, self.span = channels, degree, coeff_bits, span
        self.input_quant = qnn.QuantIdentity(
            act_quant=input_quant, bit_width=in_bits, return_quant_tensor=True
        )
        self.output_quant = qnn.QuantIdentity(
            act_quant=output_quant, bit_width=act_bits, return_quant_tensor=return_quant_tensor
        )
        init = relu_fit(_gauss_grid()[None], degree).expand(channels or 1, -1)
        self.coeffs = nn.Parameter(init.to(torch.float32).clone())
        self.relu_mix = 0.0  # the share of ReLU blended in while annealing (see `anneal`)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, degree={self.degree}, coeff_bits={self.coeff_bits}"

    # -- the fixed-point arithmetic, shared by forward and lowering ------------------------

    def fixed_point(self, ex: Tensor) -> tuple[Tensor, Tensor]:
        """Coefficients c (C, d+1) and exponents E (C,) with p(x) = 2^E * sum_k c_k (x/sx)^k.

        `ex` is log2 of the input scale sx. Each coefficient a_k gets the power-of-two
        scale 2^e_k that fits it in coeff_bits (no finer than `span` below the coarsest
        term), is rounded straight-through, and c_k = ai_k * 2^(e_k + k ex - E). Where ex
        is an integer (always in eval mode), c and E are integers held in float64.
        """
        a = self.coeffs.double()
        k = torch.arange(self.degree, -1, -1, dtype=torch.float64)
        qmax = 2.0 ** (self.coeff_bits - 1) - 1
        with torch.no_grad():
            t = torch.ceil(torch.log2(a.abs() / qmax)) + k * ex  # -inf where a_k == 0
            top = t.amax(dim=1, keepdim=True)
            top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
            t = torch.maximum(t, top - self.span)
            step = torch.exp2(t - k * ex)
        q = a / step
        ai = torch.clamp(q + (torch.round(q) - q).detach(), -qmax, qmax)
        with torch.no_grad():
            live = ai != 0
            e = torch.where(live, t, torch.full_like(t, torch.inf)).amin(dim=1)
            e = torch.where(torch.isfinite(e), e, top[:, 0])
            shift = torch.where(live, t - e[:, None], torch.zeros_like(t))
        return ai * torch.exp2(shift), e

    def integer_coeffs(self, ex: int) -> tuple[np.ndarray, np.ndarray]:
        """The fixed-point coefficients as int64 (C, d+1) and exponents E (C,), for an
        integer input exponent `ex` (what the Poly node holds)."""
        with torch.no_grad():
            c, e = self.fixed_point(torch.tensor(float(ex), dtype=torch.float64))
        ci, ei = c.round().to(torch.int64), e.round().to(torch.int64)
        if not (torch.equal(ci.double(), c) and torch.equal(ei.double(), e)):
            raise BitWidthError(f"PolyAct: input exponent {ex} gives non-integer coefficients")
        return ci.numpy(), ei.numpy()

    # -- forward ----------------------------------------------------------------------------

    def _check_input(self, x: Tensor) -> None:
        if x.dim() < 2 or (self.channels not in (None, x.shape[1])):
            raise PolyActError(
                f"PolyAct(channels={self.channels}) got an input of shape {tuple(x.shape)}; "
                "inputs are (batch, channels, ...): construct it with channels=None or "
                "the input's channel count"
            )

    def polynomial(self, x: Tensor | QuantTensor) -> Tensor:
        """float32(h * 2^E): the polynomial of the quantized input, before the output quantizer."""
        self._check_input(x.value if isinstance(x, QuantTensor) else x)
        q = self.input_quant(x)
        sx = q.scale.detach().double().reshape(())
        c, e = self.fixed_point(torch.log2(sx))
        xi = q.value.double() / sx
        view = (1, -1) + (1,) * (xi.dim() - 2)
        h = c[:, 0].reshape(view).expand_as(xi)
        for k in range(1, self.degree + 1):
            h = h * xi + c[:, k].reshape(view)
        return (h * torch.exp2(e).reshape(view)).to(torch.float32)

    def forward(self, x: Tensor | QuantTensor) -> Tensor | QuantTensor:
        p = self.polynomial(x)
        if self.relu_mix:
            xv = x.value if isinstance(x, QuantTensor) else x
            p = (1.0 - self.relu_mix) * p + self.relu_mix * torch.relu(xv)
        return self.output_quant(p)

    # -- initialization ---------------------------------------------------------------------

    def fit_relu(self, samples: Tensor | QuantTensor) -> PolyAct:
        """Least-squares fit to ReLU over `samples` (inputs this layer sees, (N, C, ...)),
        per channel where the PolyAct has channels; then calibrate both quantizers on
        them (one training-mode pass, as Brevitas collects activation statistics)."""
        x = samples.value if isinstance(samples, QuantTensor) else samples
        if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] < 1:
            raise PolyActError(
                f"PolyAct.fit_relu: samples must be a (batch, channels, ...) tensor, not "
                f"{getattr(x, 'shape', type(x).__name__)}"
            )
        self._check_input(x)
        x = x.detach()
        rows = x.transpose(0, 1).reshape(x.shape[1], -1) if self.channels else x.reshape(1, -1)
        with torch.no_grad():
            self.coeffs.copy_(relu_fit(rows, self.degree).to(torch.float32))
        self.calibrate(x)
        return self

    def calibrate(self, samples: Tensor) -> None:
        """One training-mode pass without gradients: the quantizers collect statistics."""
        mode = self.training
        self.train()
        with torch.no_grad():
            self(samples)
        self.train(mode)


LOWERINGS[PolyAct] = lower_polyact
