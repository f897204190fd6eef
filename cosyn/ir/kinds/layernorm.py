"""Integer LayerNorm (`cosyn.models.intops.layernorm_ref`) and its lowering of
`cosyn.models.IntLayerNorm`: the module's input quantizer, then this node."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import fx

from cosyn.ir.builder import Builder, _Val
from cosyn.ir.intervals import Range, as_range
from cosyn.ir.lowering import LOWERINGS
from cosyn.ir.nodes import Node
from cosyn.models.intlayers import IntLayerNorm
from cosyn.models.intops import LayerNormSpec, layernorm_ref

__all__ = ["LayerNorm", "layernorm"]


@dataclass(eq=False)
class LayerNorm(Node):
    """Each row of `features` integers normalized (`intops.LayerNormSpec`): integer
    `gamma` and `beta`, the output signed spec.out_bits at scale 2^-spec.out_frac."""

    gamma: np.ndarray = field(default_factory=lambda: np.ones(1, np.int64))
    beta: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    spec: LayerNormSpec | None = None
    kind: ClassVar[str] = "layernorm"

    def eval(self, x: np.ndarray) -> np.ndarray:
        return layernorm_ref(x, self.gamma, self.beta, self.spec)

    def infer_shape(self, x: tuple[int, ...]) -> tuple[int, ...]:
        if x != (self.spec.features,):
            raise ValueError(f"it normalizes rows of {self.spec.features} features, not {x}")
        return x

    def infer_range(self, x: Range) -> Range:
        """The output type's: a row's normalized values reach any level."""
        top = 1 << (self.spec.out_bits - 1)
        return as_range(-top, top - 1)


def layernorm(b: Builder, m: IntLayerNorm, v: object, n: object, name: str) -> _Val:
    """`m` on the value `v`; `n` is the frontend's handle of its output (`Builder.shape`)."""
    q = b.quantize(v, m.input_quant, n, f"{name}.input_quant")
    gamma, beta = (t.numpy() for t in m.int_params())
    s = m.spec
    scale = torch.tensor(2.0**-s.out_frac)
    node = LayerNorm.sized(
        b.in_ranges((q.node,)), name=b.fresh(name, LayerNorm.kind), inputs=(q.node,),
        shape=b.shape(n), scale=scale.numpy(), gamma=gamma, beta=beta, spec=s,
    )  # fmt: skip
    return b.emit(node, scale)


def _lower(b: Builder, n: fx.Node, m: IntLayerNorm, v: object, name: str) -> _Val:
    return layernorm(b, m, v, n, name)


LOWERINGS[IntLayerNorm] = _lower
