"""cosyn.hw.fpga: the open synthesis flow, yosys and nextpnr from PyPI (YoWASP).

`synthesize(design, device)` runs yosys' `synth_*` for the device's family and, on
ECP5 and iCE40, nextpnr's place and route, and returns a `SynthResult`: LUT, FF,
carry, DSP and BRAM counted against the device, Fmax and the critical path. Results
are cached by a hash of the Verilog, the device, the flow and the tools' versions.
`bitstream(design, board, "x.bit")` wraps the design in `SelfCheck` (test vectors
from a ROM, LEDs that say whether every output was right) and writes its bitstream.

>>> import cosyn
>>> r = cosyn.fpga.synthesize("out/demo/rtl", "ecp5-85f")  # doctest: +SKIP
>>> r.fmax_mhz, r.over()  # doctest: +SKIP
"""

from __future__ import annotations

from cosyn.hw.fpga._bitstream import BoardBuild, bitstream
from cosyn.hw.fpga._board import BOARDS, Board, SelfCheck, UnknownBoardError, Vectors, board
from cosyn.hw.fpga._cells import RESOURCES, count_resources
from cosyn.hw.fpga._flow import DEFAULT_FREQ_MHZ, cache_dir, synthesize
from cosyn.hw.fpga._result import CriticalPath, DoesNotFitError, SynthesisError, SynthResult

__all__ = [
    "BOARDS",
    "DEFAULT_FREQ_MHZ",
    "RESOURCES",
    "Board",
    "BoardBuild",
    "CriticalPath",
    "DoesNotFitError",
    "SelfCheck",
    "SynthResult",
    "SynthesisError",
    "UnknownBoardError",
    "Vectors",
    "bitstream",
    "board",
    "cache_dir",
    "count_resources",
    "synthesize",
]
