"""Requantizers: the shift (power-of-two scale, rounding, clip) and the threshold bank."""

from __future__ import annotations

from typing import Any

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Value, signed
from amaranth.lib import memory
from cosyn.hw.rtl._base import COMPONENTS, Ctx
from cosyn.hw.rtl._elementwise import Elementwise, PhaseTable, Registered, Stage
from cosyn.hw.rtl._rom import block_rom, field, memory_attrs, pack, rom_type
from cosyn.perfmodel.blocks import SHIFT_STAGES
from cosyn.perfmodel.resources import BLOCK_BANK
from cosyn.perfmodel.thresholds import (
    block_levels,
    candidates,
    threshold_cols,
    threshold_stages,
)

from cosyn.ir.nodes import IntType, Shift, Threshold

__all__ = ["shift_block", "threshold_block"]


def _get(v: dict[str, Any], tab: PhaseTable, name: str) -> Value | int:
    """A per-channel constant: an int, or the register the lookup stage set."""
    c = tab.const(name)
    return c if c is not None else v[name]


def _lookup(*names: str) -> Stage:
    """Register the element and the named per-channel constants that differ by channel."""

    def stage(m: Module, v: dict[str, Value], tab: PhaseTable, run) -> dict[str, Any]:
        ph = v["phase"]
        return {"x": v["x"]} | {n: tab.get(n, ph) for n in names if tab.const(n) is None}

    return stage


def shift_block(node: Shift, ctx: Ctx) -> Elementwise:
    """y = clip(round(x / 2**shift), lo, hi) per channel, as `Shift.eval`, in five stages.

    A negative shift is a left shift (exact). Rounding "floor" is an arithmetic right
    shift; "half_even" adds 2**(r-1) - 1 plus the lowest kept bit before it, so a tie
    goes to the even neighbour. Stages: look up the channel's constants (its shift as
    an index into the block's few distinct shifts), round (the add), shift (a mux over
    the distinct shifts, not a barrel shifter), compare with the clip bounds, select.
    Members, timing: see `Elementwise` (`SHIFT_STAGES`).
    """
    if node.rounding not in ("half_even", "floor"):
        raise ValueError(f"Rounding must be 'half_even' or 'floor', not {node.rounding!r}")
    k = np.asarray(node.shift, dtype=np.int64)
    shifts = sorted({int(v) for v in k.reshape(-1)})
    r = np.maximum(k, 0)
    bias = np.where(r > 0, np.left_shift(1, np.maximum(r - 1, 0)) - 1, 0)
    even = node.rounding == "half_even"
    index = np.searchsorted(shifts, k)
    cols = {"si": index, "bias": bias if even else 0 * r, "lo": node.lo, "hi": node.hi}
    table = PhaseTable(ctx, cols)

    def pick(v: dict[str, Any], t: PhaseTable, f) -> Value:
        """f(shift) for the element's shift: a mux over the distinct shifts."""
        si = _get(v, t, "si")
        if isinstance(si, int):
            return Value.cast(f(shifts[si]))
        return Array(Value.cast(f(s)) for s in shifts)[si]

    def round_(mod: Module, v: dict[str, Any], t: PhaseTable, run) -> dict[str, Any]:
        x = v["x"]
        odd = pick(v, t, lambda s: _bit(x, s) if even and s > 0 else Const(0, 1))
        rest = {n: val for n, val in v.items() if n != "bias"}
        return {**rest, "x": Value.cast(x + _get(v, t, "bias") + odd)}

    def shift(mod: Module, v: dict[str, Any], t: PhaseTable, run) -> dict[str, Any]:
        q = pick(v, t, lambda s: v["x"] >> s if s > 0 else v["x"] << -s)
        return {n: val for n, val in v.items() if n in ("lo", "hi")} | {"x": q}

    def compare(mod: Module, v: dict[str, Any], t: PhaseTable, run) -> dict[str, Any]:
        q, lo, hi = v["x"], _get(v, t, "lo"), _get(v, t, "hi")
        return {**v, "below": q < lo, "above": q > hi}

    def select(mod: Module, v: dict[str, Any], t: PhaseTable, run) -> dict[str, Any]:
        lo, hi = _get(v, t, "lo"), _get(v, t, "hi")
        return {"y": _fit(Mux(v["below"], lo, Mux(v["above"], hi, v["x"])), node.dtype)}

    stages = [_lookup(*cols), round_, shift, compare, select]
    assert len(stages) == SHIFT_STAGES
    return Elementwise(node, ctx, table, stages)


def _bit(x: Value, k: int) -> Value:
    """Bit k of x, sign-extended beyond its width."""
    x = Value.cast(x)
    if k < x.shape().width:
        return x[k]
    return x[-1] if x.shape().signed else Const(0, 1)


def _fit(v: Value, out: IntType) -> Value:
    """The low `out.bits` bits of v, extended by v's own sign first where v is narrower
    (a bare slice of a narrow negative value would zero-extend in the output)."""
    v = Value.cast(v)
    if v.shape().width < out.bits:
        v = v + Const(0, signed(out.bits))
    return v[: out.bits]


def threshold_block(node: Threshold, ctx: Ctx) -> Elementwise:
    """y = base + sign * #{j : x >= thresholds[c, j]} per channel, as `Threshold.eval`.

    A binary search over the channel's sorted thresholds (`perfmodel.thresholds.
    threshold_search`: those the input range can fall either side of, padded to
    2**L - 1; the ones every input reaches add to the base). Level k compares the
    element with one threshold and appends the result to the prefix c: after L levels
    c is the count. Level k's thresholds are a ROM by (phase, prefix); while level k
    compares, the ROM of level k+1 reads the two candidates its result chooses
    between (by the prefix before it), and a stage holds them, so every path is one
    primitive deep: a read, a compare, or the level's base plus or minus the count.
    A level ROM in block RAM is banks of `BLOCK_BANK` words whose words are registered
    (the block's output register) a stage before one is chosen.
    Members, timing: see `Elementwise` (`threshold_stages`).
    """
    cols, levels = threshold_cols(node, ctx)
    table = PhaseTable(ctx, cols)
    search = _Search(table, levels, ctx.in_type)
    stages = [*search.stages(), _level(node.dtype)]
    want = threshold_stages(levels, sum(block_levels(table.period, levels)))
    if len(stages) != want:
        raise ValueError(f"{node.name}: {len(stages)} stages, {want} in timing")
    return Elementwise(node, ctx, table, stages)


class _Search:
    """The stages of the binary search, and the ROMs of its levels' candidates."""

    def __init__(self, table: PhaseTable, levels: int, in_type: IntType) -> None:
        self.tab, self.levels, self.in_type = table, levels, in_type
        self.t = table.cols["t"]  # (period, 2**levels - 1)
        self.tt = rom_type(np.append(self.t, [in_type.lo, in_type.hi + 1]))
        self.pbits = (table.period - 1).bit_length()
        self.block = block_levels(table.period, levels)

    def read(self, m: Module, k: int, phase: Value, prefix: Value, run) -> dict[str, Any]:
        """Read level k's candidates at (phase, prefix): a ROM's registered word ("pair"),
        or for a ROM in block RAM (`block_levels`) the registered words of its banks of
        `BLOCK_BANK` words and the bank's index, chosen after a stage that registers
        each (the block's output register)."""
        rows = candidates(self.t, self.levels, k)
        words, width = pack(rows, self.tt.bits), rows.shape[1] * self.tt.bits
        if len(words) == 1:
            return {"pair": Registered(Const(words[0], width))}
        addr = Cat(prefix, phase[: self.pbits]) if self.pbits else prefix
        if not self.block[k]:
            attrs = memory_attrs(len(words), True)
            mem = memory.Memory(shape=width, depth=len(words), init=words, attrs=attrs)
            m.submodules[f"level{k}"] = mem
            port = mem.read_port()
            m.d.comb += [port.addr.eq(addr), port.en.eq(run)]
            return {"pair": Registered(port.data)}
        abits = (BLOCK_BANK - 1).bit_length()
        banks = {}
        for j in range(0, len(words), BLOCK_BANK):
            part, name = words[j : j + BLOCK_BANK], f"level{k}_{j // BLOCK_BANK}"
            banks[f"bank{j // BLOCK_BANK}"] = Registered(
                block_rom(m, name, part, width, addr[:abits], run)
            )
        if len(banks) == 1:
            return {"pair": banks["bank0"]}
        return banks | {"bsel": addr >> abits}

    def stages(self) -> list[Stage]:
        """Read level 0, hold; then per level compare (reading the next level), hold; the
        last compare looks up base and sign. A level in block RAM registers its banks'
        words (`_fetch`) before the hold. Without thresholds: look up base and sign."""
        if self.levels == 0:
            return [_lookup("base", "sign")]
        out: list[Stage] = [self._read0, *self._held(0)]
        for k in range(self.levels):
            out.append(self._compare(k))
            if k < self.levels - 1:
                out += self._held(k + 1)
        return out

    def _held(self, k: int) -> list[Stage]:
        """The stages that hold level k's candidates: `_fetch` first for block RAM."""
        return [_fetch, _hold] if self.block[k] else [_hold]

    def _read0(self, m: Module, v: dict[str, Any], tab: PhaseTable, run) -> dict[str, Any]:
        return {"x": v["x"], **self.read(m, 0, v["phase"], Const(0, 0), run)}

    def _compare(self, k: int) -> Stage:
        def stage(m: Module, v: dict[str, Any], tab: PhaseTable, run) -> dict[str, Any]:
            pair, c = v["pair"], v.get("c", Const(0, 0))
            lo_t = field(pair, 0, self.tt)  # level 0's one threshold
            t = Mux(c[0], field(pair, 1, self.tt), lo_t) if k else lo_t
            x = Value.cast(v["x"])
            x = x.as_signed() if self.in_type.signed else x
            new = {"x": x, "c": Cat(x >= t, c)}
            if k < self.levels - 1:
                return new | self.read(m, k + 1, v["phase"], c, run)
            ph = v["phase"]
            return {"c": new["c"]} | {
                n: tab.get(n, ph) for n in ("base", "sign") if tab.const(n) is None
            }

        return stage


def _fetch(m: Module, v: dict[str, Any], tab: PhaseTable, run) -> dict[str, Any]:
    """Register everything: a block RAM bank's word in a register of its own (which
    synthesis puts in the block's output register), no bank chosen yet."""
    return dict(v)


def _hold(m: Module, v: dict[str, Any], tab: PhaseTable, run) -> dict[str, Any]:
    """Register the candidates; from a banked ROM, choose the bank first."""
    names = sorted((n for n in v if n.startswith("bank")), key=lambda n: int(n[4:]))
    banks = [v[n] for n in names]
    rest = {n: val for n, val in v.items() if not (n.startswith("bank") or n == "bsel")}
    return rest | ({"pair": Array(banks)[v["bsel"]]} if banks else {})


def _level(out: IntType) -> Stage:
    def stage(m: Module, v: dict[str, Any], tab: PhaseTable, run) -> dict[str, Any]:
        base, sign = _get(v, tab, "base"), _get(v, tab, "sign")
        c = v.get("c", Const(0, 1))
        if isinstance(sign, int):
            y = base + c if sign > 0 else base - c
        else:
            y = Mux(sign[-1], base - c, base + c)
        return {"y": _fit(y, out)}

    return stage


COMPONENTS["shift"] = shift_block
COMPONENTS["threshold"] = threshold_block
