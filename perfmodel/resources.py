"""Resources per block: the primitives the RTL builds, then a device family's cost of each.

`primitives(stage)` lists what one stage of the plan is made of, from the same
parameters that build it (the node, its `Ctx`, its timing): multipliers and their
operand widths, adder/comparator bits, register bits, memories (depth, width, ROM
or RAM) and multiplexer bits. `cost(prims, device, coeffs)` maps them onto the
device: a multiplier goes to DSP blocks when both operands reach the family's
minimum widths (yosys' `mul2dsp` rule; on ECP5 a multiplication by a constant that is
not a power of two does too) and to LUTs otherwise; a memory goes to block RAM by
the family's size and depth rule (`_in_bram`), else to LUTs; the remaining LUT and FF
counts are a linear model whose coefficients (`baseline.json`, fitted by
`perfmodel.calibrate` against yosys) are per family.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from cosyn.perfmodel.devices import Device
from cosyn.perfmodel.mac import NARROW, multiply_stages
from cosyn.perfmodel.thresholds import block_levels, candidates, threshold_cols

from cosyn.ir.nodes import IntType, int_type_for_range

__all__ = [
    "AUTO",
    "BANK",
    "BLOCK",
    "BLOCK_BANK",
    "BLOCK_ROM_BITS",
    "BLOCK_WIDTH",
    "CLOCK_FEATURES",
    "FANOUT",
    "FEATURES",
    "LUT",
    "PRIMITIVES",
    "RAM_DEPTH",
    "Primitives",
    "Resources",
    "clock_features",
    "copies",
    "cost",
    "delay_ns",
    "features",
    "placement",
    "primitives",
    "weight_rows",
    "weights_in_block",
]


# How the RTL lays out memories and shared registers (hw/rtl reads these, so the two
# cannot differ): where a memory goes (LUT: LUT ROM or RAM, BLOCK: block RAM, AUTO:
# yosys decides), the bank size of banked memories, which ROMs and RAMs go to block
# RAM, and how many lanes one copy of a shared register feeds. A
# DP16KD's read, as yosys maps it, takes most of a 150 MHz cycle; where the register
# behind it has no reset, the flow moves that register into the block (hw/fpga/_outreg).
LUT, BLOCK, AUTO = "lut", "block", "auto"
BANK = 64  # words of a bank of a banked ROM or buffer
RAM_DEPTH = 1024  # RAMs deeper than this go to block RAM, shallower ones to LUT RAM
# a weight ROM of at least BANK words and this many bits goes to block RAM, where a
# block replaces 72 LUTs or more of a LUT ROM
BLOCK_ROM_BITS = 2048
# A ROM in block RAM is memories of BLOCK_BANK words (padded) by at most BLOCK_WIDTH
# bits: a DP16KD as 1024 x 18, never 512 x 36, whose output register the flow cannot
# use; the register behind each read becomes the block's own (hw/fpga/_outreg).
BLOCK_BANK, BLOCK_WIDTH = 1024, 18
FANOUT = 16  # lanes fed by one copy of a shared register


def placement(depth: int, rom: bool) -> str:
    """Where the RTL asks synthesis to put one memory of `depth` words: a RAM in block
    RAM above `RAM_DEPTH` words, else LUT RAM; a ROM in LUTs (the ROMs in block RAM,
    `weights_in_block` and `thresholds.block_levels`, are laid out by
    `hw/rtl/_rom.block_rom`)."""
    return BLOCK if not rom and depth > RAM_DEPTH else LUT


def weights_in_block(depth: int, width: int) -> bool:
    """Whether a weight ROM of `depth` words of `width` bits is in block RAM (`BANK` to
    `BLOCK_BANK` words, at least `BLOCK_ROM_BITS` bits: one bank, read straight into the
    weights' registers) rather than LUT ROM banks of `BANK` words."""
    return BANK <= depth <= BLOCK_BANK and depth * width >= BLOCK_ROM_BITS


def copies(n: int, fanout: int = FANOUT) -> int:
    """Copies of a shared register so that each feeds at most `fanout` of n lanes: at most
    two, the most synthesis keeps apart (`hw/rtl/_mul.copy_init`)."""
    return 2 if n > fanout else 1


@dataclass
class Primitives:
    """What one block is made of (family-independent)."""

    kind: str = ""  # the block's kind: its own fixed cost in the linear model
    mults: list[tuple[int, int]] = field(default_factory=list)  # (a bits, b bits) each
    add_bits: int = 0  # adder, subtractor and comparator bits (carry chains)
    reg_bits: int = 0  # flip-flops
    mux_bits: int = 0  # 2:1 multiplexer bits
    lanes: int = 0  # multiply-accumulate lanes (dense, conv2d)
    lane_bits: int = 0  # their accumulator bits, all lanes
    # (depth, width, rom, where: LUT, BLOCK or AUTO as the RTL asks synthesis, and for a
    # ROM whose words the model knows, its bits that vary, a column each (`_rom_bits`);
    # None: the words are not known, every bit varies)
    mems: list[tuple[int, int, bool, str, np.ndarray | None]] = field(default_factory=list)
    # registers in chains, (bits, length): a value passed on unchanged through `length`
    # registers of the same enable, no reset, read only at the last
    chains: list[tuple[int, int]] = field(default_factory=list)
    depth: int = 0  # carry bits on the longest register-to-register path
    levels: int = 0  # LUT levels on it (a DSP block counts as `dsp_levels`)


@dataclass
class Resources:
    """Estimated LUT, FF, carry cells, DSP blocks and block RAMs of a block or design."""

    lut: float = 0.0
    ff: float = 0.0
    carry: float = 0.0
    dsp: int = 0
    bram: int = 0

    def __add__(self, o: Resources) -> Resources:
        return Resources(
            self.lut + o.lut, self.ff + o.ff, self.carry + o.carry, self.dsp + o.dsp,
            self.bram + o.bram,
        )  # fmt: skip

    def as_dict(self) -> dict[str, int]:
        return {
            "lut": round(self.lut),
            "ff": round(self.ff),
            "carry": round(self.carry),
            "dsp": self.dsp,
            "bram": self.bram,
        }


def _bits(a: np.ndarray) -> int:
    a = np.asarray(a, dtype=np.int64)
    return int_type_for_range(min(a.min(initial=0), 0), max(a.max(initial=0), 0)).bits


def _counter(n: int) -> int:
    """Bits of a counter over n values."""
    return max(int(n - 1).bit_length(), 1)


def _banked(prims: Primitives, depth: int, width: int, rom: bool) -> None:
    """A memory in banks of `BANK` words in LUTs, each read registered, the bank chosen
    after (`hw/rtl/_buffer.py`, `_rom.weight_roms`)."""
    banks = -(-depth // BANK)
    for k in range(banks):
        prims.mems.append((min(BANK, depth - k * BANK), width, rom, LUT, None))
    if banks > 1:
        prims.mux_bits += (banks - 1) * width
        prims.reg_bits += _counter(banks)
    prims.reg_bits += banks * width if rom else 0  # a ROM bank's registered read


def lane_rows(a: np.ndarray, p: int) -> np.ndarray:
    """`a` (one row per output: weights or bias) with zero rows added up to a multiple
    of P: the lanes of the last group beyond the outputs, where P does not divide them."""
    a = np.asarray(a)
    extra = -len(a) % p
    return np.concatenate([a, np.zeros((extra, *a.shape[1:]), a.dtype)]) if extra else a


def weight_rows(w: np.ndarray, p: int, simd: int = 1) -> np.ndarray:
    """The weight ROM's rows, (groups * terms, P * S), from the weights (outputs, terms *
    S) with the terms in issue order, S (SIMD) weights a term: row g * terms + t holds
    term t of outputs g*P .. g*P + P-1, lane by lane, zero beyond the outputs
    (`hw/rtl/_rom.weight_roms` stores them)."""
    w = lane_rows(w, p)
    t = w.shape[1] // simd
    return w.reshape(-1, p, t, simd).transpose(0, 2, 1, 3).reshape(-1, p * simd)


def window_weights(node: Any) -> np.ndarray:
    """A conv2d's weights as (outputs, terms), the terms in the window's issue order
    (ky, kx, then the conv group's channels)."""
    w = np.transpose(node.weight, (0, 2, 3, 1))  # (O, KH, KW, C/G)
    return w.reshape(len(w), -1)


def issued_rows(rows: np.ndarray, kept: list[np.ndarray], n: int) -> np.ndarray:
    """The weight ROM of a dense or conv2d block that skips zero weights: the rows
    (`weight_rows`, n terms a group) of the terms each group issues (`kept`,
    `blocks.sparse_terms`)."""
    return rows[np.concatenate([g * n + k for g, k in enumerate(kept)])]


def _mac(p: int, acc: IntType, w_bits: int, x_bits: int, prims: Primitives, simd: int = 1) -> None:
    """The P lanes of `hw/rtl/_mac.py` behind the issue stage (`perfmodel.mac`): the element
    (S with SIMD) in copies, weight registers, the multiplies (P*S; with SIMD each lane's
    S products summed in a stage of their own), accumulators and the output register."""
    xc, s = copies(p), simd
    prims.reg_bits += xc * s * x_bits + p * s * w_bits + 5 * 3 + 3 * 8  # copies, weights, flags
    prims.mux_bits += xc * s * x_bits  # a stage without a term carries zero
    prod = w_bits + x_bits
    if w_bits <= NARROW:  # multiples x, 3x, -x shared; a 4:1 select per pair of weight bits
        shared = xc * copies(p, 2 * FANOUT) * s
        prims.reg_bits += shared * (3 * x_bits + 3) + p * s * (w_bits + prod)
        prims.add_bits += shared * 2 * (x_bits + 2) + p * s * prod * (w_bits > 2)
        prims.mux_bits += p * s * -(-w_bits // 2) * 3 * (x_bits + 2)
    else:  # a multiplier block, a register on each side
        prims.mults += [(w_bits, x_bits)] * (p * s)
        prims.reg_bits += 2 * p * s * prod
    if s > 1:  # the sum stage: a tree of adds a lane, its register, the stage's flags
        total = prod + (s - 1).bit_length()
        prims.add_bits += p * (s - 1) * total
        prims.reg_bits += p * total + 4
    prims.lanes, prims.lane_bits = p, p * acc.bits
    prims.add_bits += p * acc.bits
    prims.mux_bits += p * acc.bits + max(p - 1, 0) * acc.bits + 2 * acc.bits  # bias, load, queue
    prims.reg_bits += p * acc.bits + max(p - 1, 0) * (acc.bits + 1) + 2 * acc.bits + 5
    prims.depth, prims.levels = max(acc.bits, prod), 3


def _weights(prims: Primitives, rows: np.ndarray, w_bits: int, groups: int, b_bits: int) -> None:
    """The weight ROM (`weight_rows`: one block RAM memory, `weights_in_block`, whose
    output register holds the weights' register; else LUT banks of `BANK` rows, each
    read registered, the bank chosen after: `hw/rtl/_rom.weight_roms`) and the bias ROM
    (yosys decides)."""
    p = len(rows[0])
    if weights_in_block(len(rows), p * w_bits):
        _block_rom(prims, rows, w_bits)
        prims.reg_bits -= p * w_bits  # `_mac`'s weight registers, in the blocks
    else:
        banks = [_rom_bits(rows[k : k + BANK], w_bits) for k in range(0, len(rows), BANK)]
        width = _rom_banks(prims, banks)
        prims.reg_bits += width if len(banks) == 1 else 0  # a lone bank's registered read
    prims.mems.append((groups, p * b_bits, True, AUTO, None))


def _block_rom(prims: Primitives, rows: np.ndarray, bits: int) -> None:
    """A ROM in block RAM as `hw/rtl/_rom.block_rom` lays it out: banks of `BLOCK_BANK`
    words (`rows` of `bits`-bit fields, the rest of a bank zero), each memories of at
    most `BLOCK_WIDTH` bits of every word. A memory whose bits are the same in every
    word of its bank is constants, not memory (`opt_mem`)."""
    b = _word_bits(rows, bits)
    for k in range(0, len(b), BLOCK_BANK):
        bank = b[k : k + BLOCK_BANK]
        if len(bank) < BLOCK_BANK:
            bank = np.vstack([bank, np.zeros((1, bank.shape[1]), dtype=bool)])
        for j in range(0, b.shape[1], BLOCK_WIDTH):
            part = bank[:, j : j + BLOCK_WIDTH]
            if (part != part[:1]).any():
                prims.mems.append((BLOCK_BANK, part.shape[1], True, BLOCK, None))


def _rom_banks(prims: Primitives, banks: list[np.ndarray]) -> int:
    """ROM banks of known words (each its varying bits, `_rom_bits`), placed by depth;
    several are each read registered and the bank chosen after. Returns the bits read."""
    for b in banks:
        prims.mems.append((len(b), b.shape[1], True, placement(len(b), rom=True), b))
    if len(banks) > 1:
        prims.mux_bits += (len(banks) - 1) * max(b.shape[1] for b in banks)
        prims.reg_bits += sum(b.shape[1] for b in banks) + _counter(len(banks))
    return max(b.shape[1] for b in banks)


def term_words(kept: list[np.ndarray], n: int) -> tuple[list[int], int]:
    """The term ROM of a dense block that skips zero weights (`blocks.sparse_terms`): per
    issued term, group by group, its input element (`bits` bits) with a first-of-group
    flag above it and a last-of-group flag above that; returns (words, bits)."""
    bits = max((n - 1).bit_length(), 1)
    words = [int(c) | (j == 0) << bits | (j == len(k) - 1) << (bits + 1)
             for k in kept for j, c in enumerate(k)]  # fmt: skip
    return words, bits


def conv_term_words(kept: list[np.ndarray], kh: int, kw: int, c: int) -> tuple[list[int], int, int]:
    """The term ROM of a conv2d block that skips zero weights (no conv groups): per issued
    term (window order, index (ky * KW + kx) * C + c), group by group, its row ky (`kb`
    bits), its offset in the row kx * C + c (`ob` bits) above it, then first-of-group
    and last-of-group flags; returns (words, kb, ob)."""
    kb, ob = max((kh - 1).bit_length(), 1), max((kw * c - 1).bit_length(), 1)
    words = [int(t) // (kw * c) | int(t) % (kw * c) << kb | (j == 0) << (kb + ob)
             | (j == len(k) - 1) << (kb + ob + 1)
             for k in kept for j, t in enumerate(k)]  # fmt: skip
    return words, kb, ob


def _packer(simd: int, x_bits: int, prims: Primitives) -> int:
    """The writer's S - 1 held elements (`hw/rtl/_buffer.pack`), added to `prims`; returns
    the bits of their count."""
    if simd == 1:
        return 0
    prims.reg_bits += (simd - 1) * x_bits
    prims.mux_bits += (simd - 1) * x_bits
    return _counter(simd)


def _dense(stage: Any) -> Primitives:
    node, ctx, t = stage.node, stage.ctx, stage.timing
    prims = Primitives()
    wb, bb, xb = _bits(node.weight), _bits(node.bias), ctx.in_type.bits
    _mac(t.p, node.dtype, wb, xb, prims, t.simd)
    _banked(prims, 2 * t.words, xb * t.simd, rom=False)
    rows = weight_rows(node.weight[:, ctx.index()], t.p, t.simd)
    writer = _counter(t.n) + _counter(2 * t.words) + _packer(t.simd, xb, prims)
    if t.kept is None:
        _weights(prims, rows, wb, t.groups, bb)
        counters = writer + 2 * _counter(t.words) + _counter(t.groups)
        counters += _counter(t.groups * t.words)
    else:  # the issued terms' rows, the term ROM, its read-ahead and the term counters
        _weights(prims, issued_rows(rows, t.kept, t.n), wb, t.groups, bb)
        words, bits = term_words(t.kept, t.n)
        read = _rom_banks(prims, [_rom_bits(np.array(words)[:, None], bits + 2)])
        counters = writer + _counter(t.groups) + 2 * _counter(len(words))
        prims.add_bits += bits + 1  # the bank's base plus the element
        prims.reg_bits += read + 1  # the word read ahead, and whether one was
    prims.reg_bits += counters + 4
    prims.add_bits += counters
    return prims


def _conv(stage: Any) -> Primitives:
    node, ctx, g = stage.node, stage.ctx, stage.timing.geo
    prims = Primitives()
    wb, bb, xb = _bits(node.weight), _bits(node.bias), ctx.in_type.bits
    _mac(g.p, node.dtype, wb, xb, prims, g.simd)
    line = g.rows * g.w * g.words  # words of S elements
    _banked(prims, line, xb * g.simd, rom=False)
    packer = _packer(g.simd, xb, prims)
    prims.reg_bits += packer
    prims.add_bits += packer
    rows, kept = weight_rows(window_weights(node), g.p, g.simd), stage.timing.kept
    if kept is None:
        _weights(prims, rows, wb, g.groups, bb)
    else:  # the issued terms' rows, the term ROM read ahead, the address from its word
        _weights(prims, issued_rows(rows, kept, g.terms), wb, g.groups, bb)
        words, kb, ob = conv_term_words(kept, g.kh, g.kw, g.c)
        read = _rom_banks(prims, [_rom_bits(np.array(words)[:, None], kb + ob + 2)])
        prims.reg_bits += read + 1 + 2 * _counter(len(words))
        prims.add_bits += 3 * _counter(g.rows * g.w * g.c)  # slot + x_left*C + offset, y
        prims.mux_bits += g.rows * g.kh * _counter(g.rows * g.w * g.c)  # the slot table
    # the window's counters and the registers derived from them (`hw/rtl/_window.py`),
    # and the writer's
    wc = g.w * g.words + g.kw * g.words
    counters = [g.oh, g.ow, g.groups, g.kh, g.kw, g.cin_words, g.groups * g.terms, g.rows,
                g.rows, g.rows, g.h + g.kh + g.ph, g.h + g.kh + g.ph, wc, wc, 2 * line,
                g.frame_in, g.h + g.rows, g.h + g.rows, g.h, g.w * g.c, g.frame_in,
                line] + [g.words] * (g.cgroups > 1)  # fmt: skip
    bits = sum(_counter(n) for n in counters)
    prims.reg_bits += bits + 8
    prims.add_bits += 2 * bits
    prims.mux_bits += bits
    return prims


def _differ(a: Any) -> bool:
    """Whether a per-channel constant (one value, or a row per channel) differs by channel."""
    a = np.asarray(a)
    a = a.reshape(a.size if a.ndim <= 1 else len(a), -1)
    return bool((a != a[:1]).any())


def _table(prims: Primitives, stage: Any, width: int, *cols: Any) -> int:
    """Per-channel constants `cols` (`width` bits in all) looked up by stream phase
    (`PhaseTable`: a constant table in LUTs, its entry registered with the element);
    returns the bits registered (0 where every channel's are alike)."""
    if not any(_differ(c) for c in cols):
        return 0
    ch = len(stage.ctx.by_phase(dict(enumerate(cols)))[0])  # the table's phases
    prims.mems.append((ch, width, True, LUT, None))
    prims.reg_bits += _counter(ch)  # the phase counter
    prims.add_bits += _counter(ch)
    return width


def _pipeline(prims: Primitives, widths: list[int], y: int) -> None:
    """An `Elementwise` pipeline: the bits each stage registers, its valid, and the skid
    register and its mux behind the last."""
    prims.reg_bits += sum(widths) + len(widths) + y + 1
    prims.mux_bits += y


def _shift(stage: Any) -> Primitives:
    """The five stages of `hw/rtl/_requant.shift_block`: look up, round, shift (a mux over
    the distinct shifts), compare with the clip bounds, select."""
    node, x, y = stage.node, stage.ctx.in_type.bits, stage.node.dtype.bits
    prims = Primitives()
    shifts = np.unique(np.asarray(node.shift))
    table = _table(prims, stage, _counter(len(shifts)) + 3 * (x + 1), node.shift, node.lo, node.hi)
    q = x + 1 - max(int(shifts.min()), 0) + max(-int(shifts.min()), 0)  # the shifted value
    bounds = 2 * (y + 1) if table else 0  # lo and hi ride along where they differ
    _pipeline(prims, [x + table, x + 1 + bounds, q + bounds, q + 2 + bounds, y], y)
    rounds = node.rounding == "half_even" and int(shifts.max()) > 0  # else no add is left
    prims.add_bits = (x + 1) * rounds + 2 * q  # the rounding add, two clip compares
    prims.mux_bits += (len(shifts) - 1) * q + 2 * y
    prims.depth, prims.levels = x + 1, 2
    return prims


def _threshold(stage: Any) -> Primitives:
    """The binary search of `hw/rtl/_requant.threshold_block`: per level a compare while
    the next level's candidate pair is read from its ROM (`thresholds.candidates`, by
    phase and prefix), then a stage that holds the pair (behind one more for a ROM in
    block RAM, `block_levels`, whose banks' words it registers in the blocks' output
    registers); base plus or minus the count at the end. A ROM's bits that are the same
    in every word are constants, not memory."""
    node, ctx = stage.node, stage.ctx
    x, y = ctx.in_type.bits, node.dtype.bits
    cols, levels = threshold_cols(node, ctx)
    t = ctx.by_phase(cols)["t"]
    prims = Primitives()
    tt = _bits(np.append(t, [ctx.in_type.lo, ctx.in_type.hi + 1]))
    pbits = (len(t) - 1).bit_length()
    block = block_levels(len(t), levels)
    pair = []  # bits of level k's candidate pair as read (0: a constant)
    for k in range(levels):
        words = candidates(t, levels, k)
        if len(words) == 1:
            pair.append(0)
        elif block[k]:  # each word read into its blocks' output registers
            pair.append(words.shape[1] * tt)
            _block_rom(prims, words, tt)
            prims.mux_bits += (-(-len(words) // BLOCK_BANK) - 1) * pair[-1]
        else:
            pair.append(_rom_banks(prims, [_rom_bits(words, tt)]))
    table = _table(prims, stage, 2 * y, cols["t"], cols["base"], cols["sign"])
    widths = [x + pbits] if levels else [table]
    for k in range(levels):
        if block[k]:
            widths.append(x + pbits + k)  # the blocks' words registered within them
            # x, phase and prefix: compare k - 1 (or the read of level 0), this, the hold
            prims.chains.append((x + pbits + k, 3))
        widths.append(x + pbits + k + pair[k])  # hold level k's pair
        if k < levels - 1:
            widths.append(x + pbits + k + 1)  # compare k (the next pair: the ROM's register)
            prims.reg_bits += pair[k + 1] * (not block[k + 1])
        else:
            widths.append(levels + table)
    if levels:
        widths.append(y)
    _pipeline(prims, widths, y)
    prims.add_bits = levels * tt + y  # a compare per level, then base +- count
    prims.mux_bits += max(levels - 1, 0) * tt + y
    prims.depth, prims.levels = tt, 2
    return prims


def _word_bits(words: np.ndarray, bits: int) -> np.ndarray:
    """A ROM of `bits`-bit fields (a row of fields per word) as bits, (words, fields *
    bits), field 0 in the low bits (as `hw/rtl/_rom.pack` packs them)."""
    w = np.asarray(words, dtype=np.int64) & ((1 << bits) - 1)
    return ((w[:, :, None] >> np.arange(bits)) & 1).reshape(len(w), -1).astype(bool)


def _rom_bits(words: np.ndarray, bits: int) -> np.ndarray:
    """The bits of a ROM of `bits`-bit fields (a row of fields per word) that differ
    between words, (words, varying bits): yosys makes the others constants (`opt_mem`)."""
    b = _word_bits(words, bits)
    return b[:, (b != b[:1]).any(axis=0)]


def _rom_luts(depth: int, width: int, bits: np.ndarray | None, k: int) -> tuple[int, int]:
    """A LUT ROM as logic of k-input LUTs: (leaf LUTs, multiplexers). Each bit is a
    function of the address: a tree whose leaves are pieces of k address bits (a LUT
    each, unless constant) and whose nodes above choose by one more address bit (a
    multiplexer, unless its two halves are the same function); equal leaves or nodes,
    in any bit, are built once. `bits`: the words' varying bits, or None (unknown: every
    leaf and node differs)."""
    a = (depth - 1).bit_length()
    pieces = 1 << max(a - k, 0)
    if bits is None:
        return width * pieces * (depth > 1), width * (pieces - 1)
    if bits.shape[1] == 0:
        return 0, 0
    n = 1 << a
    # row i: bit i as a function of the address (entry e: address e's value)
    t = np.concatenate([bits, np.repeat(bits[-1:], n - len(bits), axis=0)]).T
    size = n // pieces  # at most 2**k entries: a leaf is one 64-bit code
    packed = np.packbits(t.reshape(-1, size), axis=1, bitorder="little")
    codes = np.zeros((len(packed), 8), np.uint8)
    codes[:, : packed.shape[1]] = packed
    distinct, ids = np.unique(codes.view("<u8")[:, 0], return_inverse=True)
    full = np.uint64((1 << size) - 1)
    leaves = int(np.count_nonzero((distinct != 0) & (distinct != full)))
    # a node is its two halves' ids: equal ids, one function (built once); a node whose
    # halves are one function needs no multiplexer
    ids = ids.reshape(len(t), pieces)
    muxes = 0
    for _ in range(max(a - k, 0)):
        m = int(ids.max()) + 1
        distinct, ids = np.unique(ids[:, 0::2] * m + ids[:, 1::2], return_inverse=True)
        muxes += int(np.count_nonzero(distinct // m != distinct % m))
        ids = ids.reshape(len(t), -1)
    return leaves, muxes


def _poly(stage: Any) -> Primitives:
    """Horner's rule as `hw/rtl/_poly.poly_block` builds it: look up the coefficients,
    then per step the multiples of h (registered), a select per pair of the element's
    bits (summed in pairs), and the add of the next coefficient; a wide element
    multiplies in a multiplier block instead."""
    node, ctx = stage.node, stage.ctx
    x = ctx.in_type.bits
    prims = Primitives()
    coeffs = np.asarray(node.coeffs)
    table = _table(prims, stage, sum(_bits(c) for c in coeffs.T), coeffs)
    widths = [x + table]
    h, const = _bits(coeffs[:, 0]), not table
    for k, t in enumerate(node.stages):  # h * x, then + c_k, in t
        last = k == len(node.stages) - 1
        if multiply_stages(x) == 2 and x > NARROW:
            prims.mults.append((h, x))
            widths += [x + h + x, x + t.bits]
        else:
            pairs = -(-x // 2)
            sums = min(-(-pairs // 2), 2)
            widths.append(x + (0 if const else 3 * (h + 2)))  # the multiples of h
            widths.append(x + sums * min(h + 4, t.bits))  # the pairs summed
            if multiply_stages(x) == 3:
                widths.append(x + t.bits)
            prims.add_bits += (0 if const else 2 * (h + 2)) + (pairs - 1) * t.bits
            prims.mux_bits += pairs * 3 * min(h + 2, t.bits)
        widths.append(t.bits + (0 if last else x))
        prims.add_bits += t.bits
        h, const = t.bits, False
    _pipeline(prims, widths, node.dtype.bits)
    prims.depth, prims.levels = max(s.bits for s in node.stages), 3
    return prims


def _add(stage: Any) -> Primitives:
    y = stage.node.dtype.bits
    return Primitives(add_bits=y, reg_bits=2 * (y + 1), mux_bits=y, depth=y, levels=1)


def _fifo(stage: Any) -> Primitives:
    d, b = stage.timing.depth, stage.dtype.bits
    c = _counter(d + 1)
    prims = Primitives(add_bits=3 * c, reg_bits=3 * c + b + 1, mux_bits=b, depth=c, levels=2)
    prims.mems.append((d - 1, b, False, placement(d - 1, rom=False), None))
    return prims


def _fork(stage: Any) -> Primitives:
    return Primitives(reg_bits=2 * (stage.dtype.bits + 1), levels=2)


# node kind -> primitives(stage): a kind defined in a module of its own registers here
PRIMITIVES: dict[str, Callable[[Any], Primitives]] = {
    "dense": _dense, "conv2d": _conv, "fifo": _fifo, "fork": _fork, "shift": _shift,
    "threshold": _threshold, "poly": _poly, "add": _add,
}  # fmt: skip


def primitives(stage: Any) -> Primitives:
    """The primitives of one stage of a `perfmodel.pipeline.Plan`."""
    prims = PRIMITIVES[stage.kind](stage)
    prims.kind = stage.kind
    return prims


# the linear model's features, in `baseline.json`'s coefficient order: sizes, then a
# fixed cost per block of each kind (control, counters), the rest sharing one
KINDS = ("dense", "conv2d", "threshold", "shift", "poly", "maxpool2d", "avgpool2d")
FEATURES = ("lut_mult_bits", "add_bits", "mux_bits", "lut_ram_bits", "reg_bits", "lanes",
            "lane_bits", "lut_rom_luts", "lut_rom_muxes", "shift_luts",
            *(f"{k}_blocks" for k in KINDS), "other_blocks")  # fmt: skip
# the shortest register chain yosys makes a shift register in LUTs (synth_xilinx's
# `shregmap -minlen 3`)
SHIFT_MIN = 3


def _to_dsp(a: int, b: int, dev: Device, co: dict[str, Any]) -> int:
    """DSP blocks for an a x b multiplier (0: it goes to LUTs), by the family's rule (yosys'
    `mul2dsp` minimum widths)."""
    if min(a, b) < co["dsp_min_bits"] or a + b < co["dsp_min_out_bits"]:
        return 0
    da, db = dev.dsp_bits
    hi, lo = max(a, b), min(a, b)
    return math.ceil(hi / max(da, db)) * math.ceil(lo / min(da, db))


def _in_bram(depth: int, width: int, rom: bool, where: str, co: dict[str, Any]) -> bool:
    """Whether yosys puts a memory in block RAM: where the RTL says, else (AUTO) a ROM
    from a size and depth on, a RAM (whose LUT RAM costs more) from a depth on; per
    family, from the calibration."""
    if where != AUTO:
        return where == BLOCK
    if rom:
        return depth * width >= co["rom_bram_min_bits"] and depth >= co["rom_bram_min_depth"]
    return depth >= co["ram_bram_min_depth"]


@lru_cache(maxsize=1024)
def _brams(depth: int, width: int, shapes: tuple[tuple[int, int], ...]) -> int:
    """Block RAMs for a depth x width memory: its width split into columns, each of the
    shape that costs least for its bits (as yosys' `memory_libmap` does: 4096 x 46 is
    ten blocks of 2048 x 9 and one of 4096 x 4 for the last bit, 11 where one shape
    needs 12)."""
    widest: dict[int, int] = {}  # blocks a column takes -> the widest such column
    for d, w in shapes:
        c = -(-depth // d)
        widest[c] = max(widest.get(c, 0), w)
    best = [0] * (width + 1)  # best[b]: blocks for the first b bits
    for b in range(1, width + 1):
        best[b] = min([c + best[b - w] if b > w else c for c, w in widest.items()])
    return best[width]


def features(prims: Primitives, dev: Device, co: dict[str, Any]) -> tuple[list[float], int, int]:
    """(the linear model's features, DSP blocks, block RAMs) of one block on `dev`."""
    dsp = bram = 0
    lut_mult = 0
    for a, b in prims.mults:
        n = _to_dsp(a, b, dev, co)
        dsp += n
        lut_mult += 0 if n else a * b
    ram = rom = rom_mux = 0
    for depth, width, is_rom, where, bits in prims.mems:
        if _in_bram(depth, width, is_rom, where, co):
            bram += _brams(depth, width, dev.bram_shapes)
        elif is_rom:
            leaves, muxes = _rom_luts(depth, width, bits, dev.lut_inputs)
            rom, rom_mux = rom + leaves, rom_mux + muxes
        else:
            ram += depth * width
    regs, shift = prims.reg_bits, 0
    for bits, length in prims.chains if dev.shift_lut else ():
        if length >= SHIFT_MIN:  # a shift register in LUTs of `shift_lut` stages each
            regs, shift = regs - bits * length, shift + bits * -(-length // dev.shift_lut)
    blocks = [float(prims.kind == k) for k in KINDS] + [float(prims.kind not in KINDS)]
    f = [lut_mult, prims.add_bits, prims.mux_bits, ram, regs, prims.lanes,
         prims.lane_bits, rom, rom_mux, shift, *blocks]  # fmt: skip
    return [float(v) for v in f], dsp, bram


def cost(prims: Primitives, dev: Device, co: dict[str, Any]) -> Resources:
    """The resources of one block on `dev` under the family's coefficients `co`."""
    f, dsp, bram = features(prims, dev, co)
    lut = float(np.dot(co["lut"], f))
    ff = float(np.dot(co["ff"], f))
    carry = prims.add_bits / dev.carry[1]
    return Resources(max(lut, 0.0), max(ff, 0.0), carry, dsp, bram)


# the clock model's features, in `baseline.json`'s fmax order (see `clock_features`)
CLOCK_FEATURES = ("ns", "carry_cells", "lut_levels", "log2_enable_fanout")


def clock_features(prims: Primitives, dev: Device, co: dict[str, Any]) -> list[float]:
    """The clock model's features (`CLOCK_FEATURES`): 1, the carry cells and LUT levels of
    the block's longest path, and log2 of the fanout of its pipeline enable (every
    register of a block holds together, on one net: in a design pipelined one primitive
    deep, that net's routing is the longest delay)."""
    dsp_on_path = any(_to_dsp(a, b, dev, co) for a, b in prims.mults)  # the datapath's
    levels = prims.levels + (co["dsp_levels"] if dsp_on_path else 0)
    return [1.0, prims.depth / dev.carry[1], float(levels), math.log2(max(prims.reg_bits, 2))]


def delay_ns(prims: Primitives, dev: Device, co: dict[str, Any]) -> float:
    """The estimated register-to-register delay of the block's longest path."""
    return float(np.dot(co["fmax"], clock_features(prims, dev, co)))
