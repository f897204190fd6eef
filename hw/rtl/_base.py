"""What every RTL block shares: the element stream, the stream order, the context, the registry.

Conventions (every component in `hw/rtl` keeps them, and the pipeline relies on them):

- A tensor moves between blocks as a stream of single elements: an Amaranth
  `lib.stream.Signature(shape)` whose payload is one integer of the producing
  node's `IntType` (`element_shape`). A transfer happens on a clock edge where
  `valid & ready`; `valid` never waits for `ready`.
- Stream order: a 1-D tensor (N,) in index order; a 3-D tensor (C, H, W) in HWC
  order, pixel by pixel, channels innermost (what a line buffer wants). A 1-D tensor
  made by flattening a 3-D one keeps the HWC order ("flat" with a `perm`): flatten is
  free in hardware, and the dense layer that consumes it reads its weight columns in
  stream order. Blocks count elements themselves; internal streams carry no `last`.
- A node block has input port `i` (a two-input block: `a` and `b`) and output port
  `o`, is built by `COMPONENTS[node.kind](node, ctx)` (`ctx` is a `Ctx`) and reports
  its own timing, so the manifest's figures come from the object that is built:
    `latency`  cycles from the first input transfer of a sample to its first output
               transfer, the block idle, inputs at full rate, output always ready;
    `interval` cycles per sample in steady state (inputs always offered, output
               always ready);
    `timing(*arrivals)` the output transfer cycles of one sample (an int64 array, one
               per output element in stream order) given the input transfer cycles
               (one int64 array per input port, one entry per element), the block
               idle at the start and its output always ready. The pipeline composes
               these to compute the design's latency exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import stream

from cosyn.errors import CosynError
from cosyn.ir.nodes import IntType, Node

__all__ = [
    "COMPONENTS",
    "Ctx",
    "element_shape",
    "element_stream",
    "resolve_parallelism",
    "stream_index",
]


def element_shape(t: IntType) -> Shape:
    """The Amaranth shape of one element of type `t`."""
    return signed(t.bits) if t.signed else unsigned(t.bits)


def element_stream(t: IntType) -> stream.Signature:
    """The stream signature that carries elements of type `t`, one per transfer."""
    return stream.Signature(element_shape(t))


def stream_index(shape: tuple[int, ...], order: str, perm: np.ndarray | None = None) -> np.ndarray:
    """The graph's flat (row-major, channels first) index of each stream position."""
    n = math.prod(shape)
    if perm is not None:
        return np.asarray(perm, dtype=np.int64)
    if order == "hwc" and len(shape) == 3:
        c, h, w = shape
        return np.arange(n).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
    return np.arange(n, dtype=np.int64)


@dataclass(frozen=True)
class Ctx:
    """What the pipeline tells a block beyond its node.

    `in_types` / `in_shapes`: the IntType and graph shape of each input, in
    `node.inputs` order. `order`: "flat" or "hwc", the order of the input stream(s)
    (an elementwise block's output keeps it). `perm`: for a "flat" stream made by a
    flatten, the graph flat index at each stream position (None: index order).
    `parallelism`: multipliers working in parallel, already checked and rounded by
    `resolve_parallelism` (1 for blocks without multipliers).
    """

    in_types: tuple[IntType, ...]
    in_shapes: tuple[tuple[int, ...], ...]
    order: str = "flat"
    perm: np.ndarray | None = field(default=None, compare=False)
    parallelism: int = 1

    @property
    def in_type(self) -> IntType:
        return self.in_types[0]

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.in_shapes[0]

    @property
    def elements(self) -> int:
        """Elements per sample on input 0."""
        return math.prod(self.in_shape)

    def index(self) -> np.ndarray:
        """The graph flat index of each position of input stream 0."""
        return stream_index(self.in_shape, self.order, self.perm)

    def channel(self) -> np.ndarray:
        """The channel (graph axis 0) of each position of input stream 0; for a 1-D
        input the channel is the element itself."""
        per = math.prod(self.in_shape[1:]) if len(self.in_shape) > 1 else 1
        return self.index() // per


def resolve_parallelism(node: Node, requested: int | None, default: int) -> tuple[int, str]:
    """The parallelism a dense/conv node gets, and a note where it differs from the request.

    Valid values divide the node's output count `node.shape[0]` (features or output
    channels); another value is rounded up to the next divisor. 0, a negative value,
    or more than the outputs is a CosynError naming the node.
    """
    outs = int(node.shape[0])
    p = default if requested is None else requested
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or not 1 <= p <= outs:
        raise CosynError(
            f"{node.name}: parallelism must be an integer from 1 to {outs} (its outputs), "
            f"not {p!r}; pass a value in that range"
        )
    q = next(d for d in range(int(p), outs + 1) if outs % d == 0)
    note = "" if q == p else f"parallelism {p} does not divide {outs} outputs; rounded up to {q}"
    return q, note


# node kind -> factory(node, ctx) returning the block (a wiring.Component with the
# timing members above); see the module docstring.
COMPONENTS: dict[str, Callable[..., Any]] = {}
