"""Requantization found against the model's own arithmetic.

A quantized activation after an accumulator is a monotone map from integers to
integers. `threshold_bank` finds that map exactly by bisection, evaluating the
model's own float32 modules; `as_shift` then recognises when the bank is a plain
power-of-two shift, which hardware does for free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Bank", "as_shift", "float_thresholds", "threshold_bank"]

IntMap = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Bank:
    """f(x)[c] = base[c] + sign[c] * #{j : x >= t[c, j]}; row c uses its first steps[c] entries."""

    t: np.ndarray
    base: np.ndarray
    sign: np.ndarray
    steps: np.ndarray


def threshold_bank(f: IntMap, lo: np.ndarray, hi: np.ndarray) -> Bank:
    """The threshold bank of the monotone map `f` on [lo[c], hi[c]], per channel c.

    `f` maps an int64 array (rows of candidates, one column per channel) to output
    levels. Unused entries of a row hold hi[c] + 1, never reached.
    Raises ValueError where f is not monotone.
    """
    lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
    f_lo, f_hi = f(lo[None])[0], f(hi[None])[0]
    sign = np.where(f_hi >= f_lo, 1, -1)
    steps = np.abs(f_hi - f_lo)
    n = int(steps.max(initial=0))
    j = np.arange(1, n + 1)[:, None]  # [L, 1]: the j-th step
    low = np.broadcast_to(lo, (n, lo.size)).copy()  # f has not taken j steps at low
    high = np.broadcast_to(hi, (n, lo.size)).copy()  # ... and has at high, where j <= steps
    while np.any(high - low > 1):
        mid = low + (high - low) // 2
        ok = sign * (f(mid) - f_lo) >= j
        high, low = np.where(ok, mid, high), np.where(ok, low, mid)
    bank = Bank(np.where(j <= steps, high, hi + 1).T.copy(), f_lo, sign, steps)
    _check(f, bank, lo, hi)
    return bank


def _check(f: IntMap, bank: Bank, lo: np.ndarray, hi: np.ndarray) -> None:
    """Each threshold, the integer below it, and 257 points across the range must give what
    the bank says: a map that is not monotone fails here."""
    spread = lo + (hi - lo) * np.arange(257)[:, None] // 256
    for probe in (bank.t.T, bank.t.T - 1, spread):
        x = np.clip(probe, lo, hi)
        levels = bank.base + bank.sign * (x[..., None] >= bank.t[None]).sum(-1)
        if not np.array_equal(f(x), levels):
            raise ValueError("the activation is not monotone over its input range")


def as_shift(bank: Bank, shift: np.ndarray) -> dict | None:
    """Parameters of a Shift node equal to `bank`, or None where there is none.

    `shift` is the per-channel log2 of output scale over input scale. The Shift node
    computes clip(round(x / 2**shift), base, base + steps); each rounding is tried.
    """
    if np.any((bank.sign < 0) & (bank.steps > 0)):
        return None
    used = np.arange(bank.t.shape[1])[None] < bank.steps[:, None]
    for rounding in ("half_even", "floor"):
        expect = _shift_thresholds(bank.base, bank.t.shape[1], shift, rounding)
        if np.array_equal(expect[used], bank.t[used]):
            hi = bank.base + bank.steps
            return {"shift": shift, "rounding": rounding, "lo": bank.base, "hi": hi}
    return None


def _shift_thresholds(base: np.ndarray, n: int, shift: np.ndarray, rounding: str) -> np.ndarray:
    """For each channel, the least x with round(x / 2**shift) >= base + j, j = 1..n."""
    level = base[:, None] + np.arange(1, n + 1)[None]
    k = np.asarray(shift, np.int64).reshape(-1, 1)
    m = np.maximum(-k, 0)
    left = -np.right_shift(-level, m)  # ceil(level / 2**m): a left shift never rounds
    r = np.maximum(k, 0)
    if rounding == "floor":
        right = np.left_shift(level, r)
    else:  # half to even: the tie (level - 1/2) * 2**r goes up only when level is even
        right = np.left_shift(2 * level - 1, np.maximum(r - 1, 0)) + (level & 1)
    return np.where(k > 0, right, left)


def float_thresholds(f: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, int]:
    """Thresholds of a monotone float32 -> int quantizer, over every finite float32.

    Returns (t, base): f(x) = base + #{j : x >= t[j]}, found by bisection over the
    ordered bit patterns of float32, so the result is exact on every float32 input.
    """
    ends = _from_key(np.array([_key(-_FMAX), _key(_FMAX)]))
    f_lo, f_hi = (int(v) for v in f(ends))
    if f_hi < f_lo:
        raise ValueError("the input quantizer decreases")
    j = np.arange(f_lo + 1, f_hi + 1)
    low = np.full(j.size, _key(-_FMAX))
    high = np.full(j.size, _key(_FMAX))
    while np.any(high - low > 1):
        mid = low + (high - low) // 2
        ok = f(_from_key(mid)) >= j
        high, low = np.where(ok, mid, high), np.where(ok, low, mid)
    return _from_key(high), f_lo


_FMAX = np.float32(np.finfo(np.float32).max)


def _key(x) -> np.ndarray:
    """Map float32 to int64 so that the order of keys is the order of the floats."""
    b = np.asarray(x, np.float32).view(np.int32).astype(np.int64)
    return np.where(b >= 0, b, -(b & 0x7FFFFFFF))


def _from_key(k: np.ndarray) -> np.ndarray:
    k = np.asarray(k, np.int64)
    b = np.where(k >= 0, k, (-k) | -0x80000000)
    return b.astype(np.int32).view(np.float32)
