"""Constants in ROM: the narrowest type for a table, rows packed into words, fields read back,
and the weight and bias ROMs that dense and conv2d share."""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, unsigned
from amaranth.lib import memory

from cosyn.ir.nodes import IntType, int_type_for_range

__all__ = ["field", "memory_attrs", "pack", "rom_type", "weight_roms"]


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


ROM_DEPTH = 256  # ROMs deeper than this go to block RAM, shallower ones to LUTs
RAM_DEPTH = 1024  # the same for buffers (RAMs), shallower ones to LUT RAM


def memory_attrs(depth: int, rom: bool) -> dict[str, str]:
    """Where synthesis should put a memory of `depth` words. Block RAM's read (ECP5's
    DP16KD as yosys maps it, without its output register) takes most of a 150 MHz
    cycle, so only memories too deep for LUTs go there; a wide, shallow ROM (a row of
    P weights) is a shallow LUT tree per bit."""
    if depth > (ROM_DEPTH if rom else RAM_DEPTH):
        return {"ram_style": "block"}
    return {"ram_style": "logic" if rom else "distributed"}


def weight_roms(m: Module, rows: np.ndarray, bias_rows: np.ndarray) -> tuple:
    """Weight and bias ROMs of P lanes as submodules of `m`: row r of `rows` (depth, P) and
    of `bias_rows` (groups, P) is one word. Returns the read ports and the P weight and P
    bias fields of their data, each in the narrowest type of its table."""
    wt, bt = rom_type(rows), rom_type(bias_rows)
    p = rows.shape[1]
    m.submodules.weights = wmem = memory.Memory(
        shape=unsigned(wt.bits * p),
        depth=len(rows),
        init=pack(rows, wt.bits),
        attrs=memory_attrs(len(rows), rom=True),
    )
    m.submodules.biases = bmem = memory.Memory(
        shape=unsigned(bt.bits * p), depth=len(bias_rows), init=pack(bias_rows, bt.bits)
    )
    wr, br = wmem.read_port(), bmem.read_port()
    return (
        wr,
        br,
        [field(wr.data, j, wt) for j in range(p)],
        [field(br.data, j, bt) for j in range(p)],
    )
