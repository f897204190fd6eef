"""cosyn.hw.fpga: the open synthesis flow, yosys and nextpnr from PyPI (YoWASP).

`synthesize(design, device)` runs yosys' `synth_*` for the device's family and, on
ECP5 and iCE40, nextpnr's place and route, and returns a `SynthResult`: LUT, FF,
carry, DSP and BRAM counted against the device, Fmax and the critical path. Results
are cached by a hash of the Verilog, the device, the flow and the tools' versions.
`bitstream(design, board, "x.bit")` puts the design on a board behind a UART stream
bridge (`UartBridge`; `encode` and `decode` are the host's side of its framing), or in
`SelfCheck` (test vectors from a ROM, LEDs that say whether every output was right),
with a PLL to the design's clock, and writes its bitstream.

>>> import cosyn
>>> r = cosyn.fpga.synthesize("out/demo/rtl", "ecp5-85f")  # doctest: +SKIP
>>> r.fmax_mhz, r.over()  # doctest: +SKIP
"""

from __future__ import annotations

from cosyn.hw.fpga._bitstream import DEFAULT_BAUD, BoardBuild, bitstream, bitstream_suffix
from cosyn.hw.fpga._board import BOARDS, Board, BoardTop, UnknownBoardError, board
from cosyn.hw.fpga._cells import RESOURCES, count_resources
from cosyn.hw.fpga._flow import DEFAULT_FREQ_MHZ, cache_dir, synthesize
from cosyn.hw.fpga._pll import PLL, PLLConfig, pll_config
from cosyn.hw.fpga._result import (
    CriticalPath,
    DoesNotFitError,
    SynthesisError,
    SynthResult,
    TimingError,
)
from cosyn.hw.fpga._selfcheck import SelfCheck, Vectors
from cosyn.hw.fpga._uart import UartBridge, UartRx, UartTx, decode, divisor, encode

__all__ = [
    "BOARDS",
    "DEFAULT_BAUD",
    "DEFAULT_FREQ_MHZ",
    "PLL",
    "RESOURCES",
    "Board",
    "BoardBuild",
    "BoardTop",
    "CriticalPath",
    "DoesNotFitError",
    "PLLConfig",
    "SelfCheck",
    "SynthResult",
    "SynthesisError",
    "TimingError",
    "UartBridge",
    "UartRx",
    "UartTx",
    "UnknownBoardError",
    "Vectors",
    "bitstream",
    "bitstream_suffix",
    "board",
    "cache_dir",
    "count_resources",
    "decode",
    "divisor",
    "encode",
    "pll_config",
    "synthesize",
]
