"""cosyn.hw.hls: hls4ml projects, bit-exact with the integer graph.

The project is built from the integer graph itself, not from a QONNX export: each
node becomes an hls4ml layer (Dense, Conv2D, Reshape) or a cosyn extension layer
(shift and threshold requantizers, add) with integer weights and `ap_int` types read
from the graph. hls4ml's own QONNX route (`_asis.hls4ml_as_is`, the benchmark's
baseline) rounds inputs through its default `ap_fixed<16,6>` first and runs batch
norms and float scales in fixed point, so it is not exact.

>>> import cosyn.hw.hls as hls
>>> sorted(hls.BOARDS)[:2]
['alveo-u250', 'alveo-u280']
"""

from __future__ import annotations

from cosyn.hw.hls._boards import BOARDS, PARTS, Board
from cosyn.hw.hls._convert import CONVERTERS
from cosyn.hw.hls._layers import EXTENSIONS, Extension
from cosyn.hw.hls._project import HLSProject, generate

__all__ = [
    "BOARDS",
    "CONVERTERS",
    "EXTENSIONS",
    "PARTS",
    "Board",
    "Extension",
    "HLSProject",
    "generate",
]
