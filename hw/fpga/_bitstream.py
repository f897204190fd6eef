"""`bitstream`: a design in a board wrapper, placed, routed and packed for a board.

The wrapper is the UART stream bridge (`UartBridge`: a host sends samples and reads
results over the board's USB serial port) or, with `self_check`, `SelfCheck` (test
vectors from a ROM, LEDs that say whether every output was right). `BoardTop` puts it
on the board's pins with a PLL from the board's oscillator to the design's clock.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cosyn.hw.fpga._board import Board, BoardTop, board
from cosyn.hw.fpga._flow import Sources, run_flow, run_tool, sources, status_display, tool
from cosyn.hw.fpga._pll import pll_config
from cosyn.hw.fpga._result import SynthResult, TimingError, write_whole
from cosyn.hw.fpga._selfcheck import SelfCheck, Vectors
from cosyn.hw.fpga._uart import UartBridge, divisor
from cosyn.hw.rtl import Design
from cosyn.perfmodel.devices import device

from cosyn.errors import CosynError

__all__ = ["DEFAULT_BAUD", "BoardBuild", "bitstream", "bitstream_suffix"]

NAME = "cosyn_board"
DEFAULT_BAUD = 115200
_SUFFIX = {"ecp5": ".bit", "ice40": ".bin"}  # the bitstream file each family's packer writes


def bitstream_suffix(b: str | Board) -> str:
    """The suffix of a board's bitstream file: .bit (ecppack) or .bin (icepack)."""
    return _SUFFIX[board(b).family]


@dataclass(frozen=True)
class BoardBuild:
    """A bitstream written for `board`: its path, the synthesis result of the whole
    wrapped design, the design's clock (the PLL's output, MHz), the wrapper ("uart" or
    "self-check"), the UART's baud rate as built and the number of self-check vectors."""

    board: str
    path: Path
    synth: SynthResult
    clock_mhz: float
    wrapper: str
    baud: float | None = None
    vectors: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "board": self.board,
            "bitstream": str(self.path),
            "wrapper": self.wrapper,
            "clock_mhz": self.clock_mhz,
            "baud": self.baud,
            "vectors": self.vectors,
            "inferences_per_s": self.inferences_per_s,
            "synth": self.synth.to_dict(),
        }

    def write(self, path: str | Path) -> Path:
        """Write `to_dict()` as JSON to `path`, whole; returns the path."""
        return write_whole(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())

    @property
    def inferences_per_s(self) -> float | None:
        """The design's throughput at its clock: clock / interval (the UART may be slower)."""
        i = self.synth.interval
        return self.clock_mhz * 1e6 / i if i else None


def _manifest(design: Design | str | Path, top: Path) -> dict:
    if isinstance(design, Design):
        return design.manifest
    man = top.parent / "manifest.json"
    if not man.is_file():
        raise CosynError(f"{man}: not found; write the design with `cosyn build`")
    return json.loads(man.read_text())


def _vectors(design: Design | str | Path, top: Path, manifest: dict, n: int) -> Vectors:
    """`n` random samples through a Design's graph, else the first `n` of the `tb/` folder
    that `cosyn build` wrote beside `rtl/`."""
    if isinstance(design, Design):
        return Vectors.of_graph(design.graph, manifest, n)
    npz = top.parent.parent / "tb" / "vectors.npz"
    if not npz.is_file():
        raise CosynError(f"{npz}: no test vectors for the board; write the folder with "
                         "`cosyn build` (rtl/ and tb/)")  # fmt: skip
    with np.load(npz) as f:
        return Vectors(f["inputs"][:n], f["expected"][:n])


def _pnr_files(family: str) -> tuple[str, tuple[str, ...], list[str]]:
    """The constraint file amaranth writes, nextpnr's arguments, the packer's command."""
    if family == "ecp5":
        pnr = ("--lpf", f"{NAME}.lpf", "--textcfg", f"{NAME}.config")
        pack = [tool("yowasp-ecppack"), "--compress", "--input", f"{NAME}.config"]
        return f"{NAME}.lpf", pnr, [*pack, "--bit", f"{NAME}.bit"]
    pnr = ("--pcf", f"{NAME}.pcf", "--asc", f"{NAME}.asc")
    return f"{NAME}.pcf", pnr, [tool("yowasp-icepack"), f"{NAME}.asc", f"{NAME}.bin"]


def bitstream(
    design: Design | str | Path,
    board_name: str | Board,
    out: str | Path,
    *,
    freq_mhz: float | None = None,
    baud: int = DEFAULT_BAUD,
    self_check: bool = False,
    vectors: int = 16,
    progress: bool = True,
) -> BoardBuild:
    """Write the bitstream `out` (.bit on ECP5, .bin on iCE40) of `design` on a board.

    The design runs at `freq_mhz` (default: the board's `design_mhz`; the PLL's nearest
    frequency), behind the UART bridge at `baud`, or with `self_check` in `SelfCheck`
    with up to `vectors` test vectors (a Design's: random, through its graph; a build
    folder's: its tb/ vectors). yosys, nextpnr (with the board's pins) and the packer
    run in a temporary folder; `out` is written whole or not at all. A design that does
    not fit raises DoesNotFitError, per resource; one slower than its clock,
    TimingError (with the synthesis result)."""
    b = board(board_name)
    dev = device(b.device)
    src = sources(design)
    manifest = _manifest(design, src.origin)
    pll = pll_config(b.family, b.clock_mhz, freq_mhz or b.design_mhz)
    clock = pll.fout
    if self_check:
        vec = _vectors(design, src.origin, manifest, vectors)
        wrapper: Any = SelfCheck(manifest, vec, clock)
        built = {"wrapper": "self-check", "vectors": len(vec.inputs)}
    else:
        div = divisor(clock, baud)
        wrapper = UartBridge(manifest, div)
        built = {"wrapper": "uart", "baud": clock * 1e6 / div}
    plan = b.platform().prepare(BoardTop(wrapper, pll), name=NAME)
    constraints, pnr, pack = _pnr_files(b.family)
    files = {**src.files}
    for name in (f"{NAME}.il", constraints):
        text = plan.files[name]
        files[name] = text.decode() if isinstance(text, bytes) else text
    wrapped = Sources(files, NAME, src.origin, src.interval)
    what = f"building {src.origin} for {b.name}"
    with status_display(progress, what, b.name) as status, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result = run_flow(wrapped, dev, work, clock, status, pnr_extra=pnr)
        result.check_fits(f"{src.origin} on {b.name}")
        if result.fmax_mhz is None or result.fmax_mhz < clock:
            fmax = result.fmax_mhz or 0.0
            raise TimingError(
                f"{src.origin} on {b.name}: Fmax {fmax:.1f} MHz is below the design's "
                f"{clock:g} MHz clock; rerun with --freq {math.floor(fmax)} or lower, or "
                "lower the parallelism",
                result,
            )
        run_tool(pack, work, Path(pack[0]).name.removeprefix("yowasp-"), src.origin, status)
        write_whole(Path(out), (work / pack[-1]).read_bytes())
    return BoardBuild(b.name, Path(out), result, clock, **built)  # type: ignore[arg-type]
