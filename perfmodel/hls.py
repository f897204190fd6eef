"""The HLS backend's cycles and multipliers per layer for a reuse factor, as hls4ml documents them.

hls4ml's documentation (Concepts, "Reuse factor"; Configuration, `ReuseFactor` and
`Strategy`) defines the reuse factor R of a dense layer as the number of times each
multiplier is used to compute the layer: the layer has ceil(n_in * n_out / R)
multipliers and accepts a new input every R cycles (its initiation interval). A
convolution in io_stream computes one output pixel's n_in = C*KH*KW by n_out = O
product the same way, so its interval is R per output pixel. cosyn's HLS projects
use one R for the model (`cosyn.hls.generate(reuse_factor=)`).

These figures are marked unverified: no HLS synthesis runs here (Vitis/Vivado are
not available), so they restate the documentation, not a measurement. Elementwise
layers (cosyn's shift, threshold, poly extension layers and the add) are pipelined
at one element per cycle per lane and are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cosyn.perfmodel.pipeline import folded

from cosyn.errors import CosynError
from cosyn.ir.graph import Graph

__all__ = ["HLSLayer", "estimate_hls"]

IO_TYPES = ("io_parallel", "io_stream")


@dataclass(frozen=True)
class HLSLayer:
    """One dense/conv layer of the HLS project: its multipliers and initiation interval."""

    name: str
    kind: str
    multipliers: int
    interval: int
    verified: bool = False


def estimate_hls(g: Graph, reuse_factor: int = 1, io_type: str = "io_parallel") -> list[HLSLayer]:
    """Multipliers and initiation interval (cycles) of each dense/conv layer of
    `cosyn.hls.generate(g, reuse_factor=reuse_factor, io_type=io_type)`, as hls4ml
    documents them (see the module docstring); a larger R than a layer's products is
    hls4ml's error too."""
    if io_type not in IO_TYPES:
        raise CosynError(f"io_type must be one of {', '.join(IO_TYPES)}, not {io_type!r}")
    if isinstance(reuse_factor, bool) or not isinstance(reuse_factor, int) or reuse_factor < 1:
        raise CosynError(f"reuse_factor must be a positive integer, not {reuse_factor!r}")
    layers = []
    for node in g:
        if not folded(node):
            continue
        products = int(node.weight.size)  # n_in * n_out of one output vector or pixel
        if reuse_factor > products:
            raise CosynError(
                f"{node.name}: reuse factor {reuse_factor} exceeds its {products} products; "
                f"choose at most {products}"
            )
        pixels = math.prod(node.shape[1:]) if node.kind == "conv2d" else 1
        layers.append(
            HLSLayer(
                node.name, node.kind, math.ceil(products / reuse_factor), reuse_factor * pixels
            )
        )
    return layers
