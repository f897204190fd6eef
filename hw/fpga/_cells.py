"""What each family's synthesized cells cost, in the resources a `Device` counts.

yosys maps a design onto a family's primitives (`LUT4`, `CCU2C`, `TRELLIS_FF`, ...);
`RESOURCES` says, per family, how many of each resource one cell occupies, so that
`lut`, `ff`, `dsp` and `bram` compare with `Device.capacity()`:

- `lut`: LUT positions in use: logic LUTs, the LUTs a carry cell occupies where the
  carry chain is built from LUTs (ECP5's CCU2C is one slice, 2 LUT4), and the LUTs
  used as RAM or shift registers (also counted alone as `lutram`).
- `carry`: carry-chain cells (CCU2C, SB_CARRY, CARRY4/CARRY8), as cells.
- `ff`: flip-flops. `dsp`: multiplier blocks. `bram`: block RAMs in the unit of
  `Device.brams` (on Xilinx parts a RAMB36 is two RAMB18).

Cells that take no counted resource (PFUMX and L6MUX21, MUXF7/8, I/O buffers)
appear only in the result's cell counts.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

__all__ = ["RESOURCES", "count_resources"]

_ECP5 = {
    "lut": {"LUT4": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 4},
    "lutram": {"TRELLIS_DPR16X4": 4},
    "carry": {"CCU2C": 1},
    "ff": {"TRELLIS_FF": 1},
    "dsp": {"MULT18X18D": 1},
    "bram": {"DP16KD": 1},
}

_ICE40 = {
    "lut": {"SB_LUT4": 1},
    "lutram": {},
    "carry": {"SB_CARRY": 1},
    "ff": {"SB_DFF*": 1},
    "dsp": {"SB_MAC16": 1},
    "bram": {"SB_RAM40_4K*": 1},
}

# LUTs each Xilinx distributed RAM or shift register occupies (UG474, UG574).
_XILINX_LUTRAM = {
    "RAM32X1S": 1,
    "RAM64X1S": 1,
    "RAM128X1S": 2,
    "RAM256X1S": 4,
    "RAM32X1D": 2,
    "RAM64X1D": 2,
    "RAM128X1D": 4,
    "RAM32M": 4,
    "RAM64M": 4,
    "RAM32M16": 8,
    "RAM64M8": 8,
    "SRL16E": 1,
    "SRLC32E": 1,
}


def _xilinx(dsp: str, ramb: str) -> dict[str, dict[str, int]]:
    logic = {f"LUT{k}": 1 for k in range(1, 7)} | {"LUT6_2": 1, "INV": 1}
    return {
        "lut": logic | _XILINX_LUTRAM,
        "lutram": dict(_XILINX_LUTRAM),
        "carry": {"CARRY4": 1, "CARRY8": 1},
        "ff": {"FDRE": 1, "FDSE": 1, "FDCE": 1, "FDPE": 1, "LDCE": 1, "LDPE": 1},
        "dsp": {dsp: 1},
        "bram": {f"RAMB18{ramb}": 1, f"RAMB36{ramb}": 2},
    }


RESOURCES: dict[str, dict[str, dict[str, int]]] = {
    "ecp5": _ECP5,
    "ice40": _ICE40,
    "xc7": _xilinx("DSP48E1", "E1"),
    "xcup": _xilinx("DSP48E2", "E2"),
}


def count_resources(family: str, cells: dict[str, int]) -> dict[str, int]:
    """lut, lutram, carry, ff, dsp and bram used by `cells` (cell type -> count) of
    `family`: the sum over cell types of count times the resource's weight for the first
    pattern (an exact name or a glob such as `SB_DFF*`) that matches the type."""
    if family not in RESOURCES:
        known = ", ".join(RESOURCES)
        raise ValueError(f"No cell table for family {family!r}; known families: {known}")
    totals: dict[str, int] = {}
    for resource, weights in RESOURCES[family].items():
        totals[resource] = sum(n * _weight(weights, cell) for cell, n in cells.items())
    return totals


def _weight(weights: dict[str, int], cell: str) -> int:
    if cell in weights:
        return weights[cell]
    return next((w for pat, w in weights.items() if fnmatchcase(cell, pat)), 0)
