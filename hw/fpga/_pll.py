"""PLLs: the design's clock from a board's oscillator (ECP5 EHXPLLL, iCE40 SB_PLL40).

`pll_config(family, fin, fout)` finds the dividers that come closest to `fout` (MHz)
within the PLL's documented ranges, searching as Project Trellis' `ecppll` and
IceStorm's `icepll` do (so they agree with those tools); `PLL` instantiates the
primitive with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from amaranth.hdl import Instance, Signal

from cosyn.errors import CosynError

__all__ = ["PLL", "PLLConfig", "pll_config"]

# Ranges in MHz: ECP5 family data sheet (FPGA-DS-02012) and `ecppll`; iCE40 sysCLOCK PLL
# design and usage guide (FPGA-TN-02052) and `icepll`.
_ECP5 = {"pfd": (3.125, 400.0), "vco": (400.0, 800.0), "out": (10.0, 400.0)}
_ICE40 = {"pfd": (10.0, 133.0), "vco": (533.0, 1066.0), "out": (16.0, 275.0)}


@dataclass(frozen=True)
class PLLConfig:
    """The dividers of one PLL and the output frequency they give (`fout`, MHz).

    ECP5: `fout = fin / ref_div * fb_div` (feedback from CLKOP, VCO = fout * out_div).
    iCE40: `fout = fin / (ref_div + 1) * (fb_div + 1) / 2 ** out_div` (DIVR, DIVF, DIVQ;
    simple feedback), with the loop filter range `filter_range`.
    """

    family: str
    fin: float
    fout: float
    vco: float
    ref_div: int
    fb_div: int
    out_div: int
    filter_range: int = 0


def pll_config(family: str, fin: float, fout: float) -> PLLConfig:
    """Dividers of `family`'s PLL ("ecp5" or "ice40") from `fin` to the frequency closest
    to `fout` (MHz); CosynError when `fout` is outside what the PLL can make."""
    ranges = {"ecp5": _ECP5, "ice40": _ICE40}.get(family)
    if ranges is None:
        raise CosynError(f"no PLL for family {family!r}; PLLs: ecp5, ice40")
    lo, hi = ranges["out"]
    if not lo <= fout <= hi:
        raise CosynError(
            f"the {family} PLL makes {lo:g} to {hi:g} MHz, not {fout:g}; choose a clock in range"
        )
    return _ecp5(fin, fout) if family == "ecp5" else _ice40(fin, fout)


def _ecp5(fin: float, fout: float) -> PLLConfig:
    """`ecppll`'s search: the smallest error, then the VCO nearest 600 MHz."""
    best: PLLConfig | None = None
    for ref in range(1, 129):
        pfd = fin / ref
        if not _ECP5["pfd"][0] <= pfd <= _ECP5["pfd"][1]:
            continue
        for fb in range(1, 81):
            for out in range(1, 129):
                vco = pfd * fb * out
                if not _ECP5["vco"][0] <= vco <= _ECP5["vco"][1]:
                    continue
                c = PLLConfig("ecp5", fin, pfd * fb, vco, ref, fb, out)
                if best is None or _better(c, best, fout):
                    best = c
    assert best is not None
    return best


def _better(c: PLLConfig, best: PLLConfig, fout: float) -> bool:
    err, best_err = abs(c.fout - fout), abs(best.fout - fout)
    return err < best_err or (err == best_err and abs(c.vco - 600) < abs(best.vco - 600))


def _ice40(fin: float, fout: float) -> PLLConfig:
    """`icepll`'s search (simple feedback): the first divider set with the smallest error."""
    best: PLLConfig | None = None
    for divr in range(16):
        pfd = fin / (divr + 1)
        if not _ICE40["pfd"][0] <= pfd <= _ICE40["pfd"][1]:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not _ICE40["vco"][0] <= vco <= _ICE40["vco"][1]:
                continue
            for divq in range(1, 7):
                f = vco / 2**divq
                if best is None or abs(f - fout) < abs(best.fout - fout):
                    best = PLLConfig("ice40", fin, f, vco, divr, divf, divq, _filter(pfd))
    if best is None:
        raise CosynError(f"the ice40 PLL cannot take a {fin:g} MHz input")
    return best


def _filter(pfd: float) -> int:
    """The iCE40 PLL's loop filter range for a phase detector frequency (MHz)."""
    return next((k for k, top in enumerate((17, 26, 44, 66, 101), 1) if pfd < top), 6)


class PLL:
    """A PLL instance of `config` on the clock `clk_in` (a Signal, or for iCE40 the pad's
    IOPort): `clk` is its output, `locked` its lock signal. `instance` is the primitive."""

    def __init__(self, config: PLLConfig, clk_in: Any) -> None:
        self.config = config
        self.clk, self.locked = Signal(), Signal()
        c = config
        if c.family == "ecp5":
            self.instance = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{c.fin:g}",
                a_FREQUENCY_PIN_CLKOP=f"{c.fout:g}",
                p_PLLRST_ENA="DISABLED",
                p_INTFB_WAKE="DISABLED",
                p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED",
                p_OUTDIVIDER_MUXA="DIVA",
                p_CLKI_DIV=c.ref_div,
                p_CLKOP_ENABLE="ENABLED",
                p_CLKOP_DIV=c.out_div,
                p_CLKOP_CPHASE=(c.out_div - 1) // 2,
                p_CLKOP_FPHASE=0,
                p_FEEDBK_PATH="CLKOP",
                p_CLKFB_DIV=c.fb_div,
                i_RST=0,
                i_STDBY=0,
                i_CLKI=clk_in,
                i_CLKFB=self.clk,
                i_PHASESEL0=0,
                i_PHASESEL1=0,
                i_PHASEDIR=1,
                i_PHASESTEP=1,
                i_PHASELOADREG=1,
                i_PLLWAKESYNC=0,
                i_ENCLKOP=0,
                o_CLKOP=self.clk,
                o_LOCK=self.locked,
            )
        else:  # the board clock's pin is the PLL's pad (as on iCEBreaker): SB_PLL40_PAD
            self.instance = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE",
                p_DIVR=c.ref_div,
                p_DIVF=c.fb_div,
                p_DIVQ=c.out_div,
                p_FILTER_RANGE=c.filter_range,
                i_PACKAGEPIN=clk_in,
                i_RESETB=1,
                i_BYPASS=0,
                o_PLLOUTGLOBAL=self.clk,
                o_LOCK=self.locked,
            )
