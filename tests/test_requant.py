"""Requantization: integer rounding, threshold banks and shift recognition."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cosyn.ir.nodes import IntType, int_type_for_range, shift_round_half_even
from cosyn.ir.requant import as_shift, float_thresholds, threshold_bank


@given(st.integers(-(2**40), 2**40), st.integers(0, 20))
def test_integer_half_even_shift_equals_numpy_round(x, r):
    got = shift_round_half_even(np.array([x]), np.array([r]))[0]
    assert got == int(np.round(x / 2.0**r))


@given(st.integers(-300, 300), st.integers(0, 300), st.integers(-3, 6), st.booleans())
def test_threshold_bank_reproduces_a_shift_and_is_recognised(lo, span, k, floor):
    def f(a):
        q = np.floor(a / 2.0**k) if floor else np.round(a / 2.0**k)
        return np.clip(q, -20, 40).astype(np.int64)

    lo_, hi_ = np.array([lo]), np.array([lo + span])
    bank = threshold_bank(f, lo_, hi_)
    x = np.arange(lo, lo + span + 1)[:, None]
    assert np.array_equal(bank.base + bank.sign * (x[..., None] >= bank.t[None]).sum(-1), f(x))
    params = as_shift(bank, np.array([k]))
    assert params is not None
    if bank.steps[0] > 1 and k > 0:  # with ties in range the rounding is identifiable
        assert params["rounding"] == ("floor" if floor else "half_even") or span < 2**k


def test_decreasing_map_gives_negative_sign_and_no_shift():
    def f(a):
        return np.clip(np.round(-a / 3.0), -8, 7).astype(np.int64)

    bank = threshold_bank(f, np.array([-50]), np.array([50]))
    assert bank.sign[0] == -1
    x = np.arange(-50, 51)[:, None]
    assert np.array_equal(bank.base + bank.sign * (x[..., None] >= bank.t[None]).sum(-1), f(x))
    assert as_shift(bank, np.array([0])) is None


def test_non_monotone_map_is_refused():
    with pytest.raises(ValueError, match="not monotone"):
        threshold_bank(lambda a: (a % 3).astype(np.int64), np.array([0]), np.array([31]))


def test_float_thresholds_are_exact_on_every_probe():
    scale = np.float32(0.1)

    def q(x):
        return np.clip(np.round(x / scale), -128, 127).astype(np.int64)

    t, base = float_thresholds(q)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 8, 100_000), (np.arange(-130, 130) + 0.5) * 0.1])
    x = np.concatenate([x, np.nextafter(t, np.inf), np.nextafter(t, -np.inf), t]).astype(np.float32)
    assert np.array_equal(base + np.searchsorted(t, x, side="right"), q(x))


def test_int_types():
    assert (IntType(8, True).lo, IntType(8, True).hi) == (-128, 127)
    assert (IntType(1, False).lo, IntType(1, False).hi) == (0, 1)
    assert int_type_for_range(-129, 5) == IntType(9, True)
    assert int_type_for_range(0, 255) == IntType(8, False)
    assert int_type_for_range(-2, -2) == IntType(2, True)  # a negative top needs no bits
    assert int_type_for_range(np.array([-3, 0]), np.array([1, 4])) == IntType(4, True)
    with pytest.raises(ValueError, match="not 0"):
        IntType(0, False)
