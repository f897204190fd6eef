"""The target devices: their primitives and capacities, each figure with its datasheet.

A `Device` says what the performance model and the synthesis flow need: how many
LUTs (and of how many inputs), flip-flops, multiplier blocks (and their operand
widths), block RAMs (and their shapes) a part has, and how the open flow reaches it
(yosys' synth command, nextpnr's architecture and arguments; `None` where no open
place-and-route exists and only yosys' counts are available).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cosyn.errors import CosynError

__all__ = ["DEVICES", "Device", "UnknownDeviceError", "device"]


class UnknownDeviceError(CosynError):
    """A device name that is not in the database."""


@dataclass(frozen=True)
class Device:
    """One FPGA part. Counts are of the whole device; `sources` names the datasheet.

    `carry`: the carry-chain primitive and the bits one cell adds. `dsp_bits`: the
    signed operand widths (a, b) of one multiplier block. `bram_bits`: bits of one
    block RAM; `bram_shapes`: its (depth, width) aspect ratios as a true dual port.
    `synth`: yosys' command; `pnr`: (nextpnr architecture, its device arguments) or
    None. `shift_lut`: stages of a shift register one LUT holds, where yosys maps
    register chains to them (0: it does not).
    """

    name: str
    vendor: str
    family: str
    part: str
    lut_inputs: int
    luts: int
    ffs: int
    carry: tuple[str, int]
    dsps: int
    dsp_name: str
    dsp_bits: tuple[int, int]
    brams: int
    bram_name: str
    bram_bits: int
    bram_shapes: tuple[tuple[int, int], ...]
    synth: str
    pnr: tuple[str, tuple[str, ...]] | None
    shift_lut: int = 0
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def capacity(self) -> dict[str, int]:
        """What the device holds, by the resource names estimates and synthesis use."""
        return {"lut": self.luts, "ff": self.ffs, "dsp": self.dsps, "bram": self.brams}


_ECP5_DS = "Lattice FPGA-DS-02012 (ECP5 and ECP5-5G Family Data Sheet), Table 1.1"
_ECP5_EBR = "18 kbit sysMEM EBR, 16384x1 .. 512x36 (FPGA-DS-02012 section 2.11)"
_ECP5_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
_RAMB18_SHAPES = _ECP5_SHAPES  # 18 kbit as well: 16K x 1 .. 512 x 36 (UG473, UG573)


def _ecp5(size: str, luts: int, ebr: int, mults: int, package: str) -> Device:
    return Device(
        name=f"ecp5-{size}f",
        vendor="lattice",
        family="ecp5",
        part=f"LFE5U-{size}F-6{package}C",
        lut_inputs=4,
        luts=luts,
        ffs=luts,  # 2 LUT4 and 2 FF per slice
        carry=("CCU2C", 2),
        dsps=mults,
        dsp_name="MULT18X18D",
        dsp_bits=(18, 18),
        brams=ebr,
        bram_name="DP16KD",
        bram_bits=18432,
        bram_shapes=_ECP5_SHAPES,
        synth="synth_ecp5",
        pnr=("ecp5", (f"--{size}k", "--package", {"BG381": "CABGA381"}[package], "--speed", "6")),
        sources={"counts": _ECP5_DS, "bram": _ECP5_EBR},
    )


DEVICES: dict[str, Device] = {
    d.name: d
    for d in (
        _ecp5("25", 24_288, 56, 28, "BG381"),
        _ecp5("45", 43_848, 108, 72, "BG381"),
        _ecp5("85", 83_640, 208, 156, "BG381"),
        Device(
            name="ice40-up5k",
            vendor="lattice",
            family="ice40",
            part="iCE40UP5K-SG48",
            lut_inputs=4,
            luts=5_280,
            ffs=5_280,
            carry=("SB_CARRY", 1),
            dsps=8,
            dsp_name="SB_MAC16",
            dsp_bits=(16, 16),
            brams=30,
            bram_name="SB_RAM40_4K",
            bram_bits=4096,
            bram_shapes=((2048, 2), (1024, 4), (512, 8), (256, 16)),
            synth="synth_ice40 -dsp",
            pnr=("ice40", ("--up5k", "--package", "sg48")),
            sources={
                "counts": "Lattice FPGA-DS-02008 (iCE40 UltraPlus Family Data Sheet), Table 1.1",
                "bram": "4 kbit sysMEM EBR, 256x16 .. 2048x2 (FPGA-DS-02008 section 2.4)",
            },
        ),
        Device(
            name="xc7z020",
            vendor="xilinx",
            family="xc7",
            part="xc7z020clg400-1",
            lut_inputs=6,
            luts=53_200,
            ffs=106_400,
            carry=("CARRY4", 4),
            dsps=220,
            dsp_name="DSP48E1",
            dsp_bits=(25, 18),
            brams=280,  # RAMB18 halves of the 140 RAMB36
            bram_name="RAMB18E1",
            bram_bits=18432,
            bram_shapes=_RAMB18_SHAPES,
            synth="synth_xilinx -family xc7",
            pnr=None,
            shift_lut=32,
            sources={
                "counts": "Xilinx DS190 (Zynq-7000 SoC Data Sheet: Overview), Table 3 (Z-7020)",
                "bram": "Xilinx UG473 (7 Series Memory Resources): RAMB18E1 aspect ratios",
                "dsp": "Xilinx UG479 (7 Series DSP48E1): 25x18 multiplier",
                "shift": "Xilinx UG474 (7 Series CLB): a SLICEM LUT as a 32-bit shift register",
            },
        ),
        Device(
            name="xcu250",
            vendor="xilinx",
            family="xcup",
            part="xcu250-figd2104-2L-e",
            lut_inputs=6,
            luts=1_728_000,
            ffs=3_456_000,
            carry=("CARRY8", 8),
            dsps=12_288,
            dsp_name="DSP48E2",
            dsp_bits=(27, 18),
            brams=5_376,  # RAMB18 halves of the 2,688 RAMB36
            bram_name="RAMB18E2",
            bram_bits=18432,
            bram_shapes=_RAMB18_SHAPES,
            synth="synth_xilinx -family xcup",
            pnr=None,
            shift_lut=32,
            sources={
                "counts": "Xilinx DS962 (Alveo U200 and U250 Data Center Accelerator Cards), "
                "Table 1",
                "bram": "Xilinx UG573 (UltraScale Memory Resources): RAMB18E2 aspect ratios",
                "dsp": "Xilinx UG579 (UltraScale DSP48E2): 27x18 multiplier",
                "shift": "Xilinx UG574 (UltraScale CLB): a SLICEM LUT as a 32-bit shift register",
            },
        ),
    )
}


def device(name: str | Device) -> Device:
    """The device called `name` (a `Device` passes through); an unknown name lists the known."""
    if isinstance(name, Device):
        return name
    key = str(name).lower()
    if key not in DEVICES:
        raise UnknownDeviceError(f"unknown device {name!r}; known devices: {', '.join(DEVICES)}")
    return DEVICES[key]
