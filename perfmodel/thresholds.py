"""The threshold bank as a binary search: its thresholds, stages and level ROMs.

One definition read by the RTL (`hw/rtl/_requant.threshold_block` builds the ROMs from
`candidates`), the timing (`threshold_stages`) and the resources (which ROM bits vary).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "block_levels",
    "candidates",
    "level_words",
    "threshold_cols",
    "threshold_search",
    "threshold_stages",
]


def threshold_search(thresholds: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """The threshold bank as a binary search over inputs in [lo, hi]: per row (channel)
    the thresholds an input can fall either side of, sorted, padded with hi + 1 (never
    reached) to 2**L - 1 entries, and the count of those every input reaches (<= lo).
    #{j : x >= t_j} = always + #{entries <= x}, which L compares find."""
    t = np.sort(np.asarray(thresholds, dtype=np.int64).reshape(len(thresholds), -1), axis=1)
    always = (t <= lo).sum(axis=1)
    mid = [row[(row > lo) & (row <= hi)] for row in t]
    levels = max((len(r) for r in mid), default=0).bit_length()
    rows = np.full((len(t), (1 << levels) - 1), hi + 1, dtype=np.int64)
    for c, r in enumerate(mid):
        rows[c, : len(r)] = r
    return rows, always


def threshold_stages(levels: int, block: int = 0) -> int:
    """Two per level of the search (compare while the next level's two candidates are
    read, then hold them), the first read, and the level's base and sign; one more for
    each of the `block` levels whose ROM is in block RAM (`block_levels`): its banks'
    words are registered as read (the block's output register) before one is chosen."""
    return 2 * levels + 2 + block


def level_words(period: int, k: int) -> int:
    """Words of level k's ROM (`candidates`) for thresholds of `period` phases."""
    return (1 << (period - 1).bit_length()) << max(k - 1, 0)


def block_levels(period: int, levels: int) -> list[bool]:
    """Per level, whether its ROM is in block RAM: at least `resources.BANK` words (a
    LUT ROM bank's depth; shallower ones are LUT ROMs). Such a ROM is banks of
    `resources.BLOCK_BANK` words, each word read into the blocks' output registers, one
    chosen a stage later."""
    from cosyn.perfmodel.resources import BANK  # resources reads this module

    return [level_words(period, k) >= BANK for k in range(levels)]


def threshold_cols(node: Any, ctx: Any) -> tuple[dict[str, np.ndarray], int]:
    """The bank's per-channel constants: "t" (`threshold_search`'s rows), "base" (with the
    thresholds every input reaches counted in) and "sign"; and the search's levels L."""
    rows, always = threshold_search(node.thresholds, ctx.in_type.lo, ctx.in_type.hi)
    n_ch = max(len(rows), np.size(node.base), np.size(node.sign))
    sign = np.broadcast_to(np.asarray(node.sign, np.int64).reshape(-1), (n_ch,))
    base = np.asarray(node.base, np.int64).reshape(-1) + sign * np.resize(always, n_ch)
    rows = np.resize(rows, (n_ch, rows.shape[1]))
    return {"t": rows, "base": base, "sign": sign}, int(rows.shape[1]).bit_length()


def candidates(t: np.ndarray, levels: int, k: int) -> np.ndarray:
    """Level k's ROM, (words, 2): at address (phase, prefix c of k - 1 bits) the thresholds
    of prefixes 2c and 2c + 1; level 0's, (words, 1), by phase alone, its one threshold.
    `t` is the thresholds by stream phase, (period, 2**L - 1); phases up to the next power
    of two read zeros."""
    span = 1 << (levels - k)  # counts under one prefix of level k
    tk = t[:, span // 2 - 1 :: span]  # (period, 2**k) thresholds of level k
    n = 2 if k else 1
    rom = np.zeros((1 << (len(t) - 1).bit_length(), tk.shape[1] // n, n), dtype=np.int64)
    rom[: len(tk)] = tk.reshape(len(tk), -1, n)
    return rom.reshape(-1, n)
