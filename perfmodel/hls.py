"""The HLS backend's cycles and multipliers per layer for its reuse factors, as hls4ml documents.

hls4ml's documentation (Concepts, "Reuse factor"; Configuration, `ReuseFactor` and
`Strategy`) defines the reuse factor R of a dense layer as the number of times each
multiplier is used to compute the layer: the layer has ceil(n_in * n_out / R)
multipliers and accepts a new input every R cycles (its initiation interval). A
convolution computes one output pixel's n_in = C*KH*KW by n_out = O product the same
way, so its interval is R per output pixel. A layer of R > 1 takes hls4ml's Resource
strategy, which accepts only some R (`valid_reuse_factors`, hls4ml's own rule) and
replaces any other by the closest it accepts; R = 1 is the Latency strategy.
`cosyn.hls.generate` takes one R for the model or one per layer, and by default
allocates them (`cosyn.scheduler.allocate_reuse`).

These figures are marked unverified: no HLS synthesis runs here (Vitis/Vivado are
not available), so they restate the documentation, not a measurement. Elementwise
layers (cosyn's shift, threshold, poly extension layers and the add) are pipelined
at one element per cycle per lane and are not counted.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from functools import cache

from cosyn.perfmodel.pipeline import folded

from cosyn.errors import CosynError
from cosyn.ir.graph import Graph
from cosyn.ir.nodes import Node

__all__ = [
    "HLSLayer",
    "applied_reuse",
    "estimate_hls",
    "hls_layer",
    "mult_size",
    "valid_reuse_factors",
]

IO_TYPES = ("io_parallel", "io_stream")


@dataclass(frozen=True)
class HLSLayer:
    """One dense/conv layer of the HLS project: its reuse factor (as hls4ml applies it),
    multipliers and initiation interval."""

    name: str
    kind: str
    reuse_factor: int
    multipliers: int
    interval: int
    verified: bool = False


def mult_size(node: Node) -> tuple[int, int]:
    """(n_in, n_out) of a dense/conv layer as hls4ml sizes its product
    (`FPGABackend.get_layer_mult_size`): a dense's inputs and outputs, a conv's
    channels x KH x KW and output channels (a depthwise one's too)."""
    o = int(node.weight.shape[0])
    if node.kind == "conv2d":
        _, cg, kh, kw = node.weight.shape
        return int(cg * node.groups * kh * kw), o
    return int(node.weight.size) // o, o


@cache
def valid_reuse_factors(n_in: int, n_out: int) -> tuple[int, ...]:
    """The reuse factors hls4ml's Resource strategy accepts for an n_in x n_out product
    (`FPGABackend._validate_reuse_factor`, hls4ml 1.3): R divides n_in * n_out, and
    either R < n_in with n_in * n_out / R a multiple of n_out, or R a multiple of n_in."""
    products = n_in * n_out
    out = []
    for r in range(1, products + 1):
        if products % r:
            continue
        if (r < n_in and (products // r) % n_out == 0) or (r >= n_in and r % n_in == 0):
            out.append(r)
    return tuple(out)


def applied_reuse(node: Node, r: int) -> int:
    """The reuse factor hls4ml gives `node` for a requested `r`: 1 (the Latency strategy)
    as it is, else the closest valid one, the smaller where two are as close
    (`FPGABackend.get_closest_reuse_factor`)."""
    if r == 1:
        return 1
    valid = valid_reuse_factors(*mult_size(node))
    i = bisect.bisect_left(valid, r)
    if i == len(valid):
        return valid[-1]
    if i == 0 or valid[i] == r:
        return valid[i]
    before, after = valid[i - 1], valid[i]
    return after if after - r < r - before else before


def hls_layer(node: Node, r: int) -> HLSLayer:
    """Dense/conv `node` at a reuse factor `r` hls4ml applies as it is."""
    pixels = math.prod(node.shape[1:]) if node.kind == "conv2d" else 1
    multipliers = math.ceil(int(node.weight.size) / r)  # one output vector's or pixel's
    return HLSLayer(node.name, node.kind, r, multipliers, r * pixels)


def estimate_hls(
    g: Graph, reuse_factor: int | dict[str, int] = 1, io_type: str = "io_parallel"
) -> list[HLSLayer]:
    """Reuse factor, multipliers and initiation interval (cycles) of each dense/conv layer
    of `cosyn.hls.generate(g, reuse_factor=reuse_factor, io_type=io_type)`, as hls4ml
    documents them (see the module docstring). `reuse_factor`: one for every layer, or
    one per dense/conv node name (the others 1). A larger R than a layer's products is
    refused (hls4ml would take its largest valid one instead, with a warning)."""
    if io_type not in IO_TYPES:
        raise CosynError(f"io_type must be one of {', '.join(IO_TYPES)}, not {io_type!r}")
    layers = [n for n in g if folded(n)]
    per = reuse_factor if isinstance(reuse_factor, dict) else {n.name: reuse_factor for n in layers}
    unknown = sorted(set(per) - {n.name for n in layers})
    if unknown:
        raise CosynError(f"{unknown[0]}: no dense/conv layer of that name; check the name")
    out = []
    for node in layers:
        r = per.get(node.name, 1)
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise CosynError(f"reuse_factor must be a positive integer, not {r!r}")
        products = int(node.weight.size)  # n_in * n_out of one output vector or pixel
        if r > products:
            raise CosynError(
                f"{node.name}: reuse factor {r} exceeds its {products} products; "
                f"choose at most {products}"
            )
        out.append(hls_layer(node, applied_reuse(node, r)))
    return out
