"""What every RTL block shares: the element stream, the context, the registry.

Conventions (every component in `hw/rtl` keeps them, and the pipeline relies on them):

- A tensor moves between blocks as a stream of single elements: an Amaranth
  `lib.stream.Signature(shape)` whose payload is one integer of the producing
  node's `IntType` (`element_shape`). A transfer happens on a clock edge where
  `valid & ready`; `valid` never waits for `ready`. The stream order (HWC for 3-D
  tensors, a flatten relabels it) is the pipeline's (`cosyn.perfmodel.pipeline`).
  Blocks count elements themselves; internal streams carry no `last`.
- A node block has input port `i` (a two-input block: `a` and `b`) and output port
  `o`, and is built by `COMPONENTS[node.kind](node, ctx)` (`ctx` is the pipeline's
  `Ctx`). Its timing is not written here: it is the cycle model of its control in
  `cosyn.perfmodel.blocks` (`TIMINGS[node.kind](node, ctx)`), which the block carries
  as `cycles` and implements register for register; tests hold the two together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from amaranth.hdl import Mux, Shape, signed, unsigned
from amaranth.lib import stream
from amaranth.lib.wiring import In, Out
from cosyn.perfmodel.pipeline import Ctx, resolve_parallelism, stream_index

from cosyn.ir.nodes import IntType

__all__ = [
    "COMPONENTS",
    "Ctx",
    "element_shape",
    "element_stream",
    "resolve_parallelism",
    "saturate",
    "stream_index",
]


def element_shape(t: IntType) -> Shape:
    """The Amaranth shape of one element of type `t`."""
    return signed(t.bits) if t.signed else unsigned(t.bits)


def element_stream(t: IntType) -> stream.Signature:
    """The stream signature that carries elements of type `t`, one per transfer."""
    return stream.Signature(element_shape(t))


def saturate(v: Any, bits: int) -> Any:
    """`v` clamped to the signed `bits` range (`intops.saturate_ref` in hardware)."""
    top = 1 << (bits - 1)
    return Mux(v < -top, -top, Mux(v > top - 1, top - 1, v))


def ports(ctx: Ctx, out: IntType) -> dict[str, Any]:
    """A block's members: its input stream `i` (two: `a` and `b`, in input order) of the
    inputs' types, and its output stream `o` of type `out`."""
    names = ("i",) if len(ctx.in_types) == 1 else ("a", "b")
    ins = {n: In(element_stream(t)) for n, t in zip(names, ctx.in_types, strict=True)}
    return {**ins, "o": Out(element_stream(out))}


# node kind -> factory(node, ctx) returning the block (a wiring.Component); see above.
COMPONENTS: dict[str, Callable[..., Any]] = {}
