"""Constants in ROM: the narrowest type for a table, rows packed into words, fields read back."""

from __future__ import annotations

import numpy as np

from cosyn.ir.nodes import IntType, int_type_for_range

__all__ = ["field", "pack", "rom_type"]


def rom_type(a: np.ndarray) -> IntType:
    """The narrowest type holding every entry of `a` (and 0)."""
    a = np.asarray(a, dtype=np.int64)
    return int_type_for_range(min(a.min(initial=0), 0), max(a.max(initial=0), 0))


def pack(rows: np.ndarray, bits: int) -> list[int]:
    """Each row of integers packed into one word, element 0 in the low bits."""
    mask = (1 << bits) - 1
    return [sum((int(v) & mask) << (bits * j) for j, v in enumerate(row)) for row in rows]


def field(word, j: int, t: IntType):
    """Element j of a packed ROM word, as a value of type t."""
    v = word[j * t.bits : (j + 1) * t.bits]
    return v.as_signed() if t.signed else v
