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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cosyn.perfmodel.devices import Device

from cosyn.ir.nodes import IntType, int_type_for_range

__all__ = [
    "FEATURES",
    "Primitives",
    "Resources",
    "clock_features",
    "cost",
    "delay_ns",
    "features",
    "primitives",
]


@dataclass
class Primitives:
    """What one block is made of (family-independent)."""

    kind: str = ""  # the block's kind: its own fixed cost in the linear model
    mults: list[tuple[int, int]] = field(default_factory=list)  # (a bits, b bits) each
    const_mults: list[tuple[int, int]] = field(default_factory=list)  # by a constant
    add_bits: int = 0  # adder, subtractor and comparator bits (carry chains)
    reg_bits: int = 0  # flip-flops
    mux_bits: int = 0  # 2:1 multiplexer bits
    lanes: int = 0  # multiply-accumulate lanes (dense, conv2d)
    lane_bits: int = 0  # their accumulator bits, all lanes
    mems: list[tuple[int, int, bool]] = field(default_factory=list)  # (depth, width, rom)
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


def _const_mult(var_bits: int, const: int) -> list[tuple[int, int]]:
    """A multiplication of a `var_bits` value by a constant, as yosys maps it: a power of
    two (or a one-bit value) is wiring, any other constant a multiplier."""
    c = abs(int(const))
    return [] if var_bits < 2 or c & (c - 1) == 0 else [(var_bits, c.bit_length())]


def _mac(p: int, acc: IntType, w_bits: int, x_bits: int, prims: Primitives) -> None:
    """P multiply-accumulates: the lanes of dense and conv2d."""
    prims.mults += [(w_bits, x_bits)] * p
    prims.lanes, prims.lane_bits = p, p * acc.bits
    prims.add_bits += p * acc.bits
    prims.reg_bits += 2 * p * acc.bits + 4  # accumulators, output shift register, flags
    prims.mux_bits += 2 * p * acc.bits  # bias-or-accumulator, shift-or-load
    prims.depth, prims.levels = acc.bits, 2 + max(math.ceil(math.log2(max(p, 2))), 1)


def _dense(stage: Any) -> Primitives:
    node, ctx, t = stage.node, stage.ctx, stage.timing
    prims = Primitives()
    w = node.weight
    wb, bb = _bits(w), _bits(node.bias)
    _mac(t.p, node.dtype, wb, ctx.in_type.bits, prims)
    prims.mems += [
        (2 * t.n, ctx.in_type.bits, False),
        (t.groups * t.n, t.p * wb, True),
        (t.groups, t.p * bb, True),
    ]
    prims.reg_bits += 2 * _counter(t.n) + _counter(t.groups) + _counter(t.p + 1) + 2
    prims.const_mults += _const_mult(_counter(max(t.groups, 2)), t.n)  # ROM address g * n
    prims.add_bits += 2 * _counter(t.n) + _counter(t.groups)
    return prims


def _conv(stage: Any) -> Primitives:
    node, ctx, g = stage.node, stage.ctx, stage.timing.geo
    prims = Primitives()
    wb, bb = _bits(node.weight), _bits(node.bias)
    _mac(g.p, node.dtype, wb, ctx.in_type.bits, prims)
    prims.mems += [
        (g.rows * g.w * g.c, ctx.in_type.bits, False),
        (g.groups * g.terms, g.p * wb, True),
        (g.groups, g.p * bb, True),
    ]
    counters = [g.h, g.w * g.c, g.frame_in, g.rows * g.w * g.c, g.oh, g.ow, g.groups,
                g.kh, g.kw, g.c, g.groups * g.terms, g.rows, g.rows, g.rows]  # fmt: skip
    bits = sum(_counter(n) for n in counters) + 2 * _counter(g.h + g.kh + g.ph)
    prims.reg_bits += bits + _counter(g.p + 1) + 4
    # the line buffer address and the window's last element: rows and columns by constants
    for var, const in ((g.rows, g.w * g.c), (g.w + 2 * g.pw + g.kw, g.c), (g.h + g.kh, g.w),
                       (g.h * g.w + g.w, g.c)):  # fmt: skip
        prims.const_mults += _const_mult(_counter(var), const)
    prims.add_bits += bits + 2 * _counter(g.frame_in)  # steps, window address, compares
    prims.depth = max(prims.depth, 2 * _counter(g.rows * g.w * g.c))  # the address sum
    return prims


def _table(stage: Any, width: int) -> tuple[int, int, bool] | None:
    """A per-channel constant table read by stream phase: a small ROM, or none."""
    ch = len(np.unique(stage.ctx.channel()))
    return (ch, width, True) if ch > 1 else None


def _elementwise(stage: Any) -> Primitives:
    node, ctx = stage.node, stage.ctx
    x, y = ctx.in_type.bits, node.dtype.bits
    prims = Primitives(reg_bits=stage.timing.latency * (y + 1))  # registered stages
    kind = node.kind
    if kind == "shift":
        prims.add_bits = 3 * (x + 1)  # rounding add, two clip compares
        prims.mux_bits = 2 * y
        table = _table(stage, 4 * x)
        prims.depth, prims.levels = x + 1, 3
    elif kind == "threshold":
        n = int(np.asarray(node.thresholds).reshape(len(node.thresholds), -1).shape[1])
        prims.add_bits = n * x + n  # one compare per threshold, then the adder tree
        prims.reg_bits += _counter(n + 1)
        prims.mux_bits = y
        table = _table(stage, n * x)
        tree = math.ceil(math.log2(max(n, 2)))
        prims.depth, prims.levels = x + tree * (tree + 1) // 2, 2 + tree
    elif kind == "poly":
        c0 = np.asarray(node.coeffs)[:, 0]
        if np.all(c0 == c0[0]):  # h starts as a constant: c_d * x
            prims.const_mults += _const_mult(x, int(c0[0]))
        else:
            prims.mults.append((_bits(c0), x))
        prims.mults += [(t.bits, x) for t in node.stages[:-1]]  # h * x, h of the last step
        for t in node.stages:
            prims.add_bits += t.bits
            prims.reg_bits += t.bits + x
        table = _table(stage, int(np.asarray(node.coeffs).shape[1]) * 16)
        prims.depth, prims.levels = max(s.bits for s in node.stages), 3
    else:  # add
        prims.add_bits = y
        prims.depth, prims.levels = y, 1
    if kind != "add" and table is not None:
        prims.mems.append(table)
        prims.reg_bits += _counter(table[0])
    return prims


def _fifo(stage: Any) -> Primitives:
    d, b = stage.timing.depth, stage.dtype.bits
    c = _counter(d + 1)
    return Primitives(add_bits=3 * c, reg_bits=3 * c + b, mems=[(d, b, False)], depth=c, levels=2)


def _fork(stage: Any) -> Primitives:
    return Primitives(reg_bits=2 * (stage.dtype.bits + 1), levels=2)


_PRIMITIVES = {"dense": _dense, "conv2d": _conv, "fifo": _fifo, "fork": _fork}


def primitives(stage: Any) -> Primitives:
    """The primitives of one stage of a `perfmodel.pipeline.Plan`."""
    prims = _PRIMITIVES.get(stage.kind, _elementwise)(stage)
    prims.kind = stage.kind
    return prims


# the linear model's features, in `baseline.json`'s coefficient order: sizes, then a
# fixed cost per block of each kind (control, counters), the rest sharing one
KINDS = ("dense", "conv2d", "threshold", "shift", "poly")
FEATURES = ("lut_mult_bits", "add_bits", "mux_bits", "lut_ram_bits", "reg_bits", "lanes",
            "lane_bits", "lut_rom_bits", "lut_rom_width", *(f"{k}_blocks" for k in KINDS),
            "other_blocks")  # fmt: skip


def _to_dsp(a: int, b: int, dev: Device, co: dict[str, Any], const: bool = False) -> int:
    """DSP blocks for an a x b multiplier (0: it goes to LUTs), by the family's rule (yosys'
    `mul2dsp` minimum widths; whether a multiplication by a constant takes a DSP)."""
    if min(a, b) < co["dsp_min_bits"] or a + b < co["dsp_min_out_bits"]:
        return 0
    if const and not co["dsp_const_mults"]:
        return 0
    da, db = dev.dsp_bits
    hi, lo = max(a, b), min(a, b)
    return math.ceil(hi / max(da, db)) * math.ceil(lo / min(da, db))


def _in_bram(depth: int, width: int, rom: bool, co: dict[str, Any]) -> bool:
    """Whether yosys puts a memory in block RAM: a ROM from a size and depth on, a RAM
    (whose LUT RAM costs more) from a depth on; per family, from the calibration."""
    if rom:
        return depth * width >= co["rom_bram_min_bits"] and depth >= co["rom_bram_min_depth"]
    return depth >= co["ram_bram_min_depth"]


def _brams(depth: int, width: int, dev: Device) -> int:
    return min(math.ceil(depth / d) * math.ceil(width / w) for d, w in dev.bram_shapes)


def features(prims: Primitives, dev: Device, co: dict[str, Any]) -> tuple[list[float], int, int]:
    """(the linear model's features, DSP blocks, block RAMs) of one block on `dev`."""
    dsp = bram = 0
    lut_mult = 0
    for (a, b), const in [(m, False) for m in prims.mults] + [(m, True) for m in prims.const_mults]:
        n = _to_dsp(a, b, dev, co, const)
        dsp += n
        lut_mult += 0 if n else a * b
    ram = rom = rom_width = 0
    for depth, width, is_rom in prims.mems:
        if _in_bram(depth, width, is_rom, co):
            bram += _brams(depth, width, dev)
        elif is_rom:
            rom, rom_width = rom + depth * width, rom_width + width * (depth > 1)
        else:
            ram += depth * width
    blocks = [float(prims.kind == k) for k in KINDS] + [float(prims.kind not in KINDS)]
    f = [lut_mult, prims.add_bits, prims.mux_bits, ram, prims.reg_bits, prims.lanes,
         prims.lane_bits, rom, rom_width, *blocks]  # fmt: skip
    return [float(v) for v in f], dsp, bram


def cost(prims: Primitives, dev: Device, co: dict[str, Any]) -> Resources:
    """The resources of one block on `dev` under the family's coefficients `co`."""
    f, dsp, bram = features(prims, dev, co)
    lut = float(np.dot(co["lut"], f))
    ff = float(np.dot(co["ff"], f))
    carry = prims.add_bits / dev.carry[1]
    return Resources(max(lut, 0.0), max(ff, 0.0), carry, dsp, bram)


def clock_features(prims: Primitives, dev: Device, co: dict[str, Any]) -> list[float]:
    """(1, carry cells, LUT levels) of the block's longest path: the clock model's features."""
    dsp_on_path = any(_to_dsp(a, b, dev, co) for a, b in prims.mults)  # the datapath's
    levels = prims.levels + (co["dsp_levels"] if dsp_on_path else 0)
    return [1.0, prims.depth / dev.carry[1], float(levels)]


def delay_ns(prims: Primitives, dev: Device, co: dict[str, Any]) -> float:
    """The estimated register-to-register delay of the block's longest path."""
    return float(np.dot(co["fmax"], clock_features(prims, dev, co)))
