"""Integer types, and interval arithmetic on integer tensors (behind `Node.infer_range`).

A `Range` is (lo, hi): two int64 vectors of one length, either 1 (one bound for the
whole tensor) or the tensor's channel count (axis 0 of a sample, so every element of
a flat tensor has its own bound). Every value the tensor can hold lies in
[lo[c], hi[c]] of its channel c.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "LIMIT",
    "IntType",
    "Range",
    "as_range",
    "horner",
    "int_type_for_range",
    "weighted",
    "window_taps",
]

Range = tuple[np.ndarray, np.ndarray]

LIMIT = 1 << 62  # a bound is saturated here: no IntType (62 bits at most) holds it
_ENUMERATE = 1 << 22  # `horner` evaluates at most this many (row, integer) pairs


@dataclass(frozen=True)
class IntType:
    """A two's complement (signed) or plain binary (unsigned) integer of `bits` bits."""

    bits: int
    signed: bool

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 62:
            raise ValueError(f"Bit width must be between 1 and 62, not {self.bits!r}")

    @property
    def lo(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def __str__(self) -> str:
        return f"{'i' if self.signed else 'u'}{self.bits}"


def int_type_for_range(lo: object, hi: object) -> IntType:
    """The narrowest IntType holding every integer in [min(lo), max(hi)] (ints or arrays)."""
    lo = int(lo) if isinstance(lo, (int, np.integer)) else int(np.min(lo))
    hi = int(hi) if isinstance(hi, (int, np.integer)) else int(np.max(hi))
    if lo >= 0:
        return IntType(max(hi.bit_length(), 1), False)
    return IntType(max(max(hi, 0).bit_length(), (-lo - 1).bit_length()) + 1, True)


def as_range(lo: object, hi: object) -> Range:
    """(lo, hi) as int64 vectors of one length (scalars become length 1)."""
    lo_, hi_ = (np.asarray(a, np.int64).reshape(-1) for a in (lo, hi))
    lo_, hi_ = np.broadcast_arrays(lo_, hi_)
    return lo_.copy(), hi_.copy()


def weighted(w: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> Range:
    """Elementwise bounds of w * x for x in [lo, hi] (broadcast against w): the
    positive weights reach their maximum at hi, the negative ones at lo."""
    pos, neg = np.maximum(w, 0), np.minimum(w, 0)
    return pos * lo + neg * hi, pos * hi + neg * lo


def window_taps(out: int, k: int, stride: int, pad: int) -> list[np.ndarray]:
    """Which taps read the input rather than zero padding, along one axis of a convolution.

    One (out, k) 0/1 array per input size that gives `out` windows (a single size when
    stride is 1): entry [t, i] is 1 where tap i of window t falls inside the input.
    """
    n_min = (out - 1) * stride + k - 2 * pad
    t = np.arange(out)[:, None] * stride + np.arange(k)[None] - pad
    return [((t >= 0) & (t < n)).astype(np.int64) for n in range(max(n_min, 1), n_min + stride)]


def horner(coeffs: np.ndarray, x: Range) -> list[Range]:
    """Ranges of h before and after each Horner step h = h * x + coeffs[:, k], per row.

    `coeffs` has one row per channel (or one for all), highest degree first. The result
    has degree + 1 ranges, the first that of the leading coefficients. Exact (every
    integer of [lo, hi] is evaluated) where that takes at most 2**22 evaluations and no
    value needs more than 62 bits; otherwise interval arithmetic over the steps, which
    is sound, with bounds saturated at +-2**62.
    """
    lo, hi = x
    n = max(lo.size, coeffs.shape[0])
    c = np.broadcast_to(coeffs, (n, coeffs.shape[1]))
    table = np.column_stack([np.broadcast_to(lo, n), np.broadcast_to(hi, n), c])
    rows, inverse = np.unique(table, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    bounds = [_bounds(r[2:], r[0], r[1]) for r in rows.tolist()]
    span = int((rows[:, 1] - rows[:, 0]).max()) + 1
    if max(big for _, big in bounds) < LIMIT and span * len(rows) <= _ENUMERATE:
        steps = _enumerate(rows, span)
    else:
        steps = [
            tuple(np.array([_sat(b[k][j]) for b, _ in bounds], np.int64) for j in (0, 1))
            for k in range(coeffs.shape[1])
        ]
    return [(lo_k[inverse], hi_k[inverse]) for lo_k, hi_k in steps]


def _bounds(c: list[int], lo: int, hi: int) -> tuple[list[tuple[int, int]], int]:
    """Interval Horner in Python integers: the bounds after each step, and the largest
    magnitude of any bound or product on the way."""
    h = (c[0], c[0])
    out, big = [h], abs(c[0])
    for ck in c[1:]:
        p = (h[0] * lo, h[0] * hi, h[1] * lo, h[1] * hi)
        h = (min(p) + ck, max(p) + ck)
        big = max(big, *map(abs, p), *map(abs, h))
        out.append(h)
    return out, big


def _enumerate(rows: np.ndarray, span: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact Horner ranges of each row (lo, hi, c_d .. c_0), every integer evaluated."""
    lo, hi, c = rows[:, 0], rows[:, 1], rows[:, 2:]
    x = np.minimum(lo[:, None] + np.arange(span)[None], hi[:, None])
    h = np.broadcast_to(c[:, :1], x.shape)
    out = [(h.min(1), h.max(1))]
    for k in range(1, c.shape[1]):
        h = h * x + c[:, k : k + 1]
        out.append((h.min(1), h.max(1)))
    return out


def _sat(v: int) -> int:
    return max(-LIMIT, min(LIMIT, v))
