"""Integer-only transformer arithmetic: softmax (I-BERT's i-exp), an exact integer square
root, LayerNorm and GELU (I-BERT's i-GELU).

Each operator is a NumPy int64 reference (`*_ref`) and a torch function on int64
tensors (`*_int`) that equals it bit for bit; the torch modules in
`cosyn.models.attention` call the torch functions in their forward pass. Every
constant is an integer derived once from the operator's scales (`*_spec`), and every
spec records the widths its intermediate values need, derived from the bit widths and
lengths, so no input in range overflows (the spec asserts they fit in int64).

Rounding: `>>` is an arithmetic shift (floor), `//` floor division, `round_shift(v, s)`
is floor((v + 2^(s-1)) / 2^s) (round half up). Saturation clamps to the signed range.

I-BERT: Kim et al., "I-BERT: Integer-only BERT Quantization", ICML 2021
(github.com/kssteven418/I-BERT, `quant_modules.py`). exp(r) on (-ln 2, 0] is
0.35815147 r^2 + 0.96963238 r + 1; erf(x) on [0, 1.769] is -0.2888 (x - 1.769)^2 + 1.

>>> spec = softmax_spec(2.0**-8, max_len=4)
>>> softmax_ref(np.array([[0, 0, -1000, 77]]), np.ones((1, 4), bool), spec).tolist()
[[75, 75, 1, 102]]
>>> isqrt_ref(np.array([0, 1, 8, 9, 2**40])).tolist()
[0, 1, 2, 3, 1048576]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "GeluSpec",
    "LayerNormSpec",
    "SoftmaxSpec",
    "gelu_int",
    "gelu_ref",
    "gelu_spec",
    "isqrt_int",
    "isqrt_ref",
    "isqrt_steps",
    "layernorm_int",
    "layernorm_ref",
    "layernorm_spec",
    "round_shift",
    "saturate_int",
    "saturate_ref",
    "signed_bits",
    "softmax_int",
    "softmax_ref",
    "softmax_spec",
]

LN2 = math.log(2.0)
EXP_A, EXP_B, EXP_C = 0.35815147, 0.96963238, 1.0  # I-BERT's exp(r) ~ a r^2 + b r + c
ERF_A, ERF_B = -0.2888, -1.769  # I-BERT's erf(x) ~ sign(x) (a (min(|x|, -b) + b)^2 + 1)
INT64_BITS = 63  # magnitude bits of int64


def signed_bits(lo: int, hi: int) -> int:
    """Bits of the smallest two's-complement type that holds every integer in [lo, hi].

    >>> signed_bits(-128, 127), signed_bits(-129, 0), signed_bits(0, 128), signed_bits(0, 0)
    (8, 9, 9, 1)
    """
    return max((-int(lo) - 1).bit_length() + 1 if lo < 0 else 1, int(hi).bit_length() + 1)


def _fits(what: str, bits: int) -> int:
    if bits > INT64_BITS:
        raise OverflowError(f"{what} needs {bits} bits, more than int64 holds")
    return bits


def round_shift(v, s: int):
    """floor((v + 2^(s-1)) / 2^s): divide by 2^s rounding half up (s <= 0 shifts left)."""
    if s <= 0:
        return v << -s
    return (v + (1 << (s - 1))) >> s


def _check_range(v, bits: int, what: str) -> None:
    """Raise where v (numpy or torch) leaves the signed `bits` range its widths assume."""
    if v.numel() if isinstance(v, torch.Tensor) else v.size:
        lo, hi = int(v.min()), int(v.max())
        if lo < -(1 << (bits - 1)) or hi >= 1 << (bits - 1):
            raise ValueError(f"{what} must be signed {bits}-bit integers, not in [{lo}, {hi}]")


def saturate_ref(v: np.ndarray, bits: int) -> np.ndarray:
    """v clamped to the signed `bits` range."""
    return np.clip(v, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def saturate_int(v: torch.Tensor, bits: int) -> torch.Tensor:
    """`saturate_ref` on torch tensors."""
    return v.clamp(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


# ---------------------------------------------------------------- softmax (i-exp)


@dataclass(frozen=True)
class SoftmaxSpec:
    """Integer softmax over rows of at most `max_len` scores at scale `scale`.

    With d = (x - max x) >> shift (scale sw = scale * 2^shift, the first power-of-two
    multiple of scale at or above 2^-frac), clamped to d >= n * x0:
        q = d // x0, r = d - x0 q in (x0, 0]          (x0 = floor(-ln2 / sw) < 0)
        e = (r (r + b) + c) >> q                     (b = floor(B/A / sw), c = floor(C/A / sw^2))
    so e * A sw^2 ~ exp(d sw); e < 2^e_bits, and e = 0 from q = n on.
    p = (e * (2^m // sum e)) >> (m - out_bits): probabilities at scale 2^-out_bits,
    0 <= p <= 2^out_bits (2^out_bits only where one entry holds the whole sum);
    m = e_bits + len_bits + out_bits, so the row's divisor keeps out_bits of precision.
    """

    scale: float
    max_len: int
    out_bits: int
    shift: int
    x0: int
    b: int
    c: int
    n: int
    e_bits: int
    sum_bits: int
    m: int


def softmax_spec(scale: float, max_len: int, out_bits: int = 8, frac: int = 7) -> SoftmaxSpec:
    """The integer constants and widths of a softmax whose inputs are integers at `scale`."""
    if not scale > 0 or not math.isfinite(scale):
        raise ValueError(f"Softmax scale must be positive and finite, not {scale!r}")
    if max_len < 1 or not 1 <= out_bits <= 16 or not 2 <= frac <= 12:
        raise ValueError(
            f"Invalid softmax: max_len={max_len!r}, out_bits={out_bits!r}, frac={frac!r}"
        )
    shift = 0
    while scale * 2.0**shift < 2.0**-frac:
        shift += 1
    sw = scale * 2.0**shift
    x0 = math.floor(-LN2 / sw)
    b = math.floor(EXP_B / EXP_A / sw)
    c = math.floor(EXP_C / EXP_A / sw**2)
    lowest = (x0 + 1) * (x0 + 1 + b) + c  # the parabola falls over (x0, 0]: its least value
    if x0 > -2 or lowest < 0:
        raise ValueError(f"Softmax scale {scale!r} is too coarse for i-exp (x0={x0})")
    e_bits = c.bit_length()  # e <= c < 2^e_bits
    len_bits = (max_len - 1).bit_length()
    m = e_bits + len_bits + out_bits
    _fits("softmax normalizer", m + 1)
    return SoftmaxSpec(
        scale, max_len, out_bits, shift, x0, b, c, e_bits, e_bits, e_bits + len_bits, m
    )


def _check_rows(valid, length: int, spec: SoftmaxSpec) -> None:
    if length > spec.max_len:
        raise ValueError(f"Softmax row of {length} entries, more than max_len={spec.max_len}")
    if not bool(valid.any(-1).all()):
        raise ValueError("Every softmax row needs at least one valid entry")


def softmax_ref(x: np.ndarray, valid: np.ndarray, spec: SoftmaxSpec) -> np.ndarray:
    """Integer softmax of int64 `x` over its last axis where `valid`; 0 elsewhere."""
    x, valid = np.asarray(x, np.int64), np.broadcast_to(np.asarray(valid, bool), np.shape(x))
    _check_rows(valid, x.shape[-1], spec)
    low = np.iinfo(np.int64).min
    top = np.where(valid, x, low).max(-1, keepdims=True)
    d = np.maximum(np.where(valid, x - top, 0) >> spec.shift, spec.n * spec.x0)
    q = d // spec.x0
    r = d - spec.x0 * q
    e = np.where(valid, (r * (r + spec.b) + spec.c) >> q, 0)
    factor = (1 << spec.m) // e.sum(-1, keepdims=True)
    return (e * factor) >> (spec.m - spec.out_bits)


def softmax_int(x: torch.Tensor, valid: torch.Tensor, spec: SoftmaxSpec) -> torch.Tensor:
    """`softmax_ref` on torch int64 tensors, bit for bit."""
    x, valid = x.long(), valid.expand_as(x)
    _check_rows(valid, x.shape[-1], spec)
    low = torch.iinfo(torch.int64).min
    top = torch.where(valid, x, low).amax(-1, keepdim=True)
    d = (torch.where(valid, x - top, 0) >> spec.shift).clamp_min(spec.n * spec.x0)
    q = torch.div(d, spec.x0, rounding_mode="floor")
    r = d - spec.x0 * q
    e = torch.where(valid, (r * (r + spec.b) + spec.c) >> q, 0)
    factor = torch.div(1 << spec.m, e.sum(-1, keepdim=True), rounding_mode="floor")
    return (e * factor) >> (spec.m - spec.out_bits)


# ---------------------------------------------------------------- integer square root


def isqrt_steps(bits: int) -> int:
    """Newton steps from 2^ceil(bitlen(n)/2) that reach floor(sqrt(n)) for all n < 2^bits.

    The start is within a factor 2 above s = sqrt(n) (relative error e0 <= 1); a real
    Newton step maps e to e^2 / (2 (1 + e)), and the floored integer step never exceeds
    the real one nor falls below floor(s). floor(s) + 1 - s >= 1 / (2 (s + 1)), so once
    e < 1 / (2 s (s + 1)), which e < 2^-(bits+2) ensures, the real iterate is below
    floor(s) + 1 and the integer one is floor(s). The count returned is one step past
    e < 2^-(bits+1), where e is below 2^-(2 bits + 3).
    """
    e, steps = 1.0, 0
    while e >= 2.0 ** -(bits + 1):
        e, steps = e * e / (2 * (1 + e)), steps + 1
    return steps + 1


def _bit_length_ref(n: np.ndarray, bits: int) -> np.ndarray:
    return (n[..., None] >= (np.int64(1) << np.arange(bits, dtype=np.int64))).sum(-1)


def isqrt_ref(n: np.ndarray, bits: int = 62) -> np.ndarray:
    """floor(sqrt(n)) for int64 0 <= n < 2^bits: Newton's method in integers, from above."""
    n = np.asarray(n, np.int64)
    if np.any(n < 0) or np.any(n >> bits):
        raise ValueError(f"isqrt takes 0 <= n < 2^{bits}")
    m = np.maximum(n, 1)  # isqrt(0) = 0 is set at the end; no step divides by 0
    x = np.int64(1) << ((_bit_length_ref(m, bits) + 1) // 2)
    for _ in range(isqrt_steps(bits)):
        x = np.minimum(x, (x + m // x) >> 1)
    return np.where(n == 0, 0, x)


def isqrt_int(n: torch.Tensor, bits: int = 62) -> torch.Tensor:
    """`isqrt_ref` on torch int64 tensors, bit for bit."""
    n = n.long()
    if bool((n < 0).any()) or bool((n >> bits).any()):
        raise ValueError(f"isqrt takes 0 <= n < 2^{bits}")
    powers = torch.ones((), dtype=torch.int64) << torch.arange(bits)
    m = n.clamp_min(1)
    length = (m[..., None] >= powers).sum(-1)
    x = torch.ones_like(m) << ((length + 1) // 2)
    for _ in range(isqrt_steps(bits)):
        x = torch.minimum(x, (x + torch.div(m, x, rounding_mode="floor")) >> 1)
    return torch.where(n == 0, 0, x)


# ---------------------------------------------------------------- LayerNorm


@dataclass(frozen=True)
class LayerNormSpec:
    """Integer LayerNorm over `features` signed `in_bits` integers (any input scale).

    With s = sum x, y = d x - s (d times the deviation, exact) and
    v = d sum x^2 - s^2 (= sum y^2 / d, exact), sigma = max(isqrt(v), 1) and
    n = (y << frac) // sigma is the normalized value at scale 2^-frac (|n| < n_max).
    z = n gamma + beta: gamma signed gamma_bits at 2^-gamma_frac, beta signed z_bits at
    2^-(frac + gamma_frac); the output is round_shift(z, frac + gamma_frac - out_frac)
    saturated to signed out_bits, at scale 2^-out_frac.
    """

    features: int
    in_bits: int
    frac: int
    gamma_bits: int
    gamma_frac: int
    out_bits: int
    out_frac: int
    v_bits: int
    n_max: int
    z_bits: int


def layernorm_spec(
    features: int,
    in_bits: int = 8,
    frac: int = 8,
    gamma_bits: int = 8,
    gamma_frac: int = 5,
    out_bits: int = 8,
    out_frac: int = 5,
) -> LayerNormSpec:
    """Widths of an integer LayerNorm; raises OverflowError where int64 cannot hold them."""
    if features < 1 or not 2 <= in_bits <= 24 or not 2 <= out_bits <= 16:
        raise ValueError(f"Invalid LayerNorm: features={features!r}, in_bits={in_bits!r}")
    if frac + gamma_frac < out_frac:
        raise ValueError("LayerNorm out_frac must not exceed frac + gamma_frac")
    top = 1 << (in_bits - 1)  # |x| <= 2^(in_bits-1)
    v_bits = _fits("LayerNorm variance", (features * features * top * top).bit_length())
    _fits("LayerNorm shifted deviation", (2 * features * top << frac).bit_length() + 1)
    # |y| <= sqrt(d v) and sqrt(v) < 2 isqrt(v) for v >= 1, so |n| < 2^(frac+1) sqrt(d)
    n_max = math.isqrt((4 << 2 * frac) * features) + 1
    z_bits = _fits("LayerNorm affine", signed_bits(-n_max, n_max) + gamma_bits + 1)
    return LayerNormSpec(
        features, in_bits, frac, gamma_bits, gamma_frac, out_bits, out_frac, v_bits, n_max, z_bits
    )


def _check_layernorm(x, gamma, beta, spec: LayerNormSpec) -> None:
    if x.shape[-1] != spec.features:
        raise ValueError(f"LayerNorm of {spec.features} features, not {x.shape[-1]}")
    _check_range(x, spec.in_bits, "LayerNorm inputs")
    _check_range(gamma, spec.gamma_bits, "LayerNorm gamma")
    _check_range(beta, spec.z_bits, "LayerNorm beta")


def layernorm_ref(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, spec: LayerNormSpec
) -> np.ndarray:
    """Integer LayerNorm of int64 `x` over its last axis (see `LayerNormSpec`)."""
    x = np.asarray(x, np.int64)
    gamma, beta = np.asarray(gamma, np.int64), np.asarray(beta, np.int64)
    _check_layernorm(x, gamma, beta, spec)
    d = spec.features
    s = x.sum(-1, keepdims=True)
    y = d * x - s
    v = d * (x * x).sum(-1, keepdims=True) - s * s
    sigma = np.maximum(isqrt_ref(v, spec.v_bits), 1)
    n = (y << spec.frac) // sigma
    z = n * gamma + beta
    return saturate_ref(round_shift(z, spec.frac + spec.gamma_frac - spec.out_frac), spec.out_bits)


def layernorm_int(
    x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, spec: LayerNormSpec
) -> torch.Tensor:
    """`layernorm_ref` on torch int64 tensors, bit for bit."""
    x, gamma, beta = x.long(), gamma.long(), beta.long()
    _check_layernorm(x, gamma, beta, spec)
    d = spec.features
    s = x.sum(-1, keepdim=True)
    y = d * x - s
    v = d * (x * x).sum(-1, keepdim=True) - s * s
    sigma = isqrt_int(v, spec.v_bits).clamp_min(1)
    n = torch.div(y << spec.frac, sigma, rounding_mode="floor")
    z = n * gamma + beta
    return saturate_int(round_shift(z, spec.frac + spec.gamma_frac - spec.out_frac), spec.out_bits)


# ---------------------------------------------------------------- GELU (i-GELU)


@dataclass(frozen=True)
class GeluSpec:
    """I-BERT's integer GELU of signed `in_bits` integers at `scale`, out at 2^-out_frac.

    With se = scale / sqrt 2: b = floor(ERF_B / se), c = floor(1 / (ERF_A se^2)) and
    L = sign(x) ((min(|x|, -b) + b)^2 + c) at scale ERF_A se^2 (erf(x / sqrt 2));
    L >>= k (k = max(0, bitlen(-c) - erf_bits): L keeps erf_bits), one = floor(1 / (ERF_A se^2 2^k))
    (negative, as is ERF_A) and g = x (L + one) ~ GELU(x) at scale scale * ERF_A se^2 2^k / 2.
    The output is round_shift(g * mult, mshift) saturated to signed out_bits, where
    mult / 2^mshift is that scale times 2^out_frac to mult_bits (a dyadic requantization).
    """

    scale: float
    in_bits: int
    b: int
    c: int
    k: int
    one: int
    mult: int
    mshift: int
    out_bits: int
    out_frac: int
    g_bits: int


def gelu_spec(
    scale: float,
    in_bits: int = 8,
    out_bits: int = 8,
    out_frac: int = 4,
    erf_bits: int = 14,
    mult_bits: int = 16,
) -> GeluSpec:
    """The integer constants and widths of i-GELU for inputs at `scale`."""
    if not scale > 0 or not math.isfinite(scale) or not 2 <= in_bits <= 16:
        raise ValueError(f"Invalid GELU: scale={scale!r}, in_bits={in_bits!r}")
    se = scale / math.sqrt(2.0)
    b = math.floor(ERF_B / se)
    c = math.floor(1.0 / (ERF_A * se * se))  # negative
    if b > -2:
        raise ValueError(f"GELU scale {scale!r} is too coarse for i-GELU")
    k = max(0, (-c).bit_length() - erf_bits)
    one = math.floor(1.0 / (ERF_A * se * se * 2.0**k))
    gscale = scale * ERF_A * se * se * 2.0**k / 2.0 * 2.0**out_frac  # negative
    mshift = mult_bits - 1 - math.frexp(abs(gscale))[1]
    mult = round(gscale * 2.0**mshift)
    top = 1 << (in_bits - 1)
    span = ((-c) >> k) + 1 - one  # |L + one| <= |c| / 2^k + 1 + |one|
    g_bits = signed_bits(-top * span, top * span)
    _fits("GELU product", g_bits + mult_bits)
    return GeluSpec(scale, in_bits, b, c, k, one, mult, mshift, out_bits, out_frac, g_bits)


def gelu_ref(x: np.ndarray, spec: GeluSpec) -> np.ndarray:
    """Integer GELU of int64 `x` (see `GeluSpec`)."""
    x = np.asarray(x, np.int64)
    _check_range(x, spec.in_bits, "GELU inputs")
    a = np.minimum(np.abs(x), -spec.b) + spec.b
    erf = (np.sign(x) * (a * a + spec.c)) >> spec.k
    g = x * (erf + spec.one)
    return saturate_ref(round_shift(g * spec.mult, spec.mshift), spec.out_bits)


def gelu_int(x: torch.Tensor, spec: GeluSpec) -> torch.Tensor:
    """`gelu_ref` on torch int64 tensors, bit for bit."""
    x = x.long()
    _check_range(x, spec.in_bits, "GELU inputs")
    a = torch.minimum(x.abs(), torch.tensor(-spec.b)) + spec.b
    erf = (torch.sign(x) * (a * a + spec.c)) >> spec.k
    g = x * (erf + spec.one)
    return saturate_int(round_shift(g * spec.mult, spec.mshift), spec.out_bits)
