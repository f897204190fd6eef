"""`bitstream`: a design in its self-checking wrapper, placed, routed and packed for a board."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cosyn.hw.fpga._board import Board, SelfCheck, Vectors, board
from cosyn.hw.fpga._flow import Sources, run_flow, run_tool, sources, status_display, tool
from cosyn.hw.fpga._result import SynthesisError, SynthResult, write_whole
from cosyn.hw.rtl import Design
from cosyn.perfmodel.devices import device

from cosyn.errors import CosynError

__all__ = ["BoardBuild", "bitstream"]

NAME = "cosyn_board"


@dataclass(frozen=True)
class BoardBuild:
    """A bitstream written for `board`: its path, the synthesis result of the whole
    wrapped design, the number of test vectors in its ROM and the clock it runs at."""

    board: str
    path: Path
    synth: SynthResult
    vectors: int
    clock_mhz: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "board": self.board,
            "bitstream": str(self.path),
            "vectors": self.vectors,
            "clock_mhz": self.clock_mhz,
            "synth": self.synth.to_dict(),
        }

    def write(self, path: str | Path) -> Path:
        """Write `to_dict()` as JSON to `path`, whole; returns the path."""
        return write_whole(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())

    @property
    def inferences_per_s(self) -> float | None:
        """Throughput on the board: its clock / the design's interval."""
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


def bitstream(
    design: Design | str | Path,
    board_name: str | Board,
    out: str | Path,
    *,
    vectors: int = 16,
    progress: bool = True,
) -> BoardBuild:
    """Write the bitstream `out` (.bit) of `design` in `SelfCheck` on a board: up to
    `vectors` test vectors (a Design's: random, through its graph; a build folder's: its
    tb/ vectors) stream through the design forever and the LEDs say whether every output
    was right. yosys, nextpnr (at the board's clock, with its pins) and ecppack run in a
    temporary folder; `out` is written whole or not at all. A design that does not fit
    raises DoesNotFitError; one slower than the board's clock, SynthesisError."""
    b = board(board_name)
    dev = device(b.device)
    src = sources(design)
    manifest = _manifest(design, src.origin)
    vec = _vectors(design, src.origin, manifest, vectors)
    plan = b.platform().prepare(SelfCheck(manifest, vec, b.clock_mhz), name=NAME)
    files = {**src.files}
    for name in (f"{NAME}.il", f"{NAME}.lpf"):
        text = plan.files[name]
        files[name] = text.decode() if isinstance(text, bytes) else text
    wrapped = Sources(files, NAME, src.origin, src.interval)
    pnr = ("--lpf", f"{NAME}.lpf", "--textcfg", f"{NAME}.config")
    what = f"building {src.origin} for {b.name}"
    with status_display(progress, what, b.name) as status, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result = run_flow(wrapped, dev, work, b.clock_mhz, status, pnr_extra=pnr)
        result.check_fits()
        if result.fmax_mhz is None or result.fmax_mhz < b.clock_mhz:
            raise SynthesisError(
                f"{src.origin} on {b.name}: Fmax {result.fmax_mhz or 0:.1f} MHz is below the "
                f"board's {b.clock_mhz:g} MHz clock; pipeline the design or lower parallelism"
            )
        pack = [tool("yowasp-ecppack"), "--compress", "--input", f"{NAME}.config"]
        run_tool([*pack, "--bit", f"{NAME}.bit"], work, "ecppack", src.origin, status)
        write_whole(Path(out), (work / f"{NAME}.bit").read_bytes())
    return BoardBuild(b.name, Path(out), result, len(vec.inputs), b.clock_mhz)
