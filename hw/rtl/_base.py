"""What every RTL block shares: the element stream, the stream order, and the registry.

Conventions (every component in `hw/rtl` keeps them, and the pipeline relies on them):

- A tensor moves between blocks as a stream of single elements: an Amaranth
  `lib.stream.Signature(shape)` whose payload is one integer of the producing
  node's `IntType` (`element_shape`). A transfer happens on a clock edge where
  `valid & ready`; `valid` never waits for `ready`.
- Stream order: a 1-D tensor (N,) in index order; a 3-D tensor (C, H, W) in HWC
  order, pixel by pixel, channels innermost (what a line buffer wants). Blocks count
  elements themselves; internal streams carry no `last` flag.
- A node block has input port `i` (a two-input block: `a` and `b`) and output port
  `o`, is built by `COMPONENTS[node.kind](node, ctx)` and reports its own timing
  (`latency`, `interval` in cycles) so the manifest's figures come from the same
  object that is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import stream

from cosyn.ir.nodes import IntType

__all__ = ["COMPONENTS", "element_shape", "element_stream"]


def element_shape(t: IntType) -> Shape:
    """The Amaranth shape of one element of type `t`."""
    return signed(t.bits) if t.signed else unsigned(t.bits)


def element_stream(t: IntType) -> stream.Signature:
    """The stream signature that carries elements of type `t`, one per transfer."""
    return stream.Signature(element_shape(t))


# node kind -> factory(node, ctx) returning the block; `ctx` carries what the node alone
# does not say (input types, parallelism, stream order), defined by the pipeline.
COMPONENTS: dict[str, Callable[..., Any]] = {}
