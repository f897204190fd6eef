"""Constants in ROM: the narrowest type for a table, rows packed into words, fields read back,
and the weight and bias ROMs that dense and conv2d share."""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Array, Cat, Module, Signal, Value, unsigned
from amaranth.lib import memory
from cosyn.perfmodel.resources import (
    BANK,
    BLOCK,
    BLOCK_BANK,
    BLOCK_WIDTH,
    placement,
    weights_in_block,
)

from cosyn.ir.nodes import IntType, int_type_for_range

__all__ = ["block_rom", "field", "memory_attrs", "pack", "rom_type", "weight_roms"]


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


def memory_attrs(depth: int, rom: bool) -> dict[str, str]:
    """Where synthesis should put a memory of `depth` words, by `placement` (a ROM in
    block RAM is `block_rom`'s)."""
    if placement(depth, rom) == BLOCK:
        return {"ram_style": "block"}
    return {"ram_style": "logic" if rom else "distributed"}


def block_rom(m: Module, name: str, words: list[int], width: int, addr, en) -> Value:
    """A ROM of at most `BLOCK_BANK` words of `width` bits in block RAM, read at `addr`
    where `en` (the word registered, one cycle later): memories of BLOCK_BANK words (the
    rest zero) by at most `BLOCK_WIDTH` bits, so that each is a DP16KD as 1024 x 18,
    whose output register can take the register behind it (`hw/fpga/_outreg.py`)."""
    assert len(words) <= BLOCK_BANK, name
    parts = []
    for j in range(0, width, BLOCK_WIDTH):
        w = min(BLOCK_WIDTH, width - j)
        init = [(v >> j) & ((1 << w) - 1) for v in words]
        mem = memory.Memory(
            shape=unsigned(w), depth=BLOCK_BANK, init=init, attrs={"ram_style": "block"}
        )
        m.submodules[f"{name}_{j // BLOCK_WIDTH}"] = mem
        port = mem.read_port()
        m.d.comb += [port.addr.eq(addr), port.en.eq(en)]
        parts.append(port.data)
    return Cat(*parts)


def weight_roms(m: Module, rows: np.ndarray, bias_rows: np.ndarray, addr, en) -> tuple:
    """Weight and bias ROMs of P lanes as submodules of `m`: row r of `rows` (depth, P, or
    P*S with SIMD) and of `bias_rows` (groups, P) is one word. The weights are read at
    `addr` where `en` (the word registered, one cycle later). A ROM of `BANK` to
    `BLOCK_BANK` words and at least `BLOCK_ROM_BITS` bits is in block RAM
    (`weights_in_block`, `block_rom`); another is LUT ROM banks of BANK words, each read
    registered and the bank chosen after (a small mux, in front of the next stage's
    registers). Returns the bias ROM's read port (its reader addresses it), the weight
    fields of the word read (P, or P*S), the P bias fields of the bias port's data, each
    in the narrowest type of its table, and whether the weights are in block RAM (their
    next register, reset-less, then becomes the block's output register:
    `hw/fpga/_outreg.py`)."""
    wt, bt = rom_type(rows), rom_type(bias_rows)
    p = rows.shape[1]
    words = pack(rows, wt.bits)
    if weights_in_block(len(words), wt.bits * p):
        word = block_rom(m, "weights", words, wt.bits * p, addr, en)
        return *_fields(m, word, wt, bias_rows, bt), True
    datas = []
    bits = (min(len(words), BANK) - 1).bit_length()
    for k in range(0, len(words), BANK):
        part = words[k : k + BANK]
        mem = memory.Memory(
            shape=unsigned(wt.bits * p),
            depth=len(part),
            init=part,
            attrs=memory_attrs(len(part), rom=True),
        )
        m.submodules[f"weights{k // BANK}"] = mem
        port = mem.read_port()
        m.d.comb += [port.addr.eq(addr[:bits]), port.en.eq(en)]
        datas.append(port.data)
    word = datas[0]
    if len(datas) > 1:
        bank = Signal(range(len(datas)))
        with m.If(en):
            m.d.sync += bank.eq(addr >> bits)
        word = Array(datas)[bank]
    return *_fields(m, word, wt, bias_rows, bt), False


def _fields(m: Module, word: Value, wt: IntType, bias_rows: np.ndarray, bt: IntType) -> tuple:
    """The bias ROM (a submodule of `m`) and its read port, the weight fields of `word`
    (P, or P*S with SIMD) and the P bias fields of the port's data."""
    p = bias_rows.shape[1]
    m.submodules.biases = bmem = memory.Memory(
        shape=unsigned(bt.bits * p), depth=len(bias_rows), init=pack(bias_rows, bt.bits)
    )
    br = bmem.read_port()
    ws = [field(word, j, wt) for j in range(len(word) // wt.bits)]
    return br, ws, [field(br.data, j, bt) for j in range(p)]
