"""I-BERT's integer GELU (`cosyn.models.intops.gelu_ref`) and its lowering of
`cosyn.models.IntGELU`, whose constants follow its input's scale."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import fx

from cosyn.errors import UnsupportedLayerError
from cosyn.ir.builder import Builder, _Val
from cosyn.ir.intervals import Range, as_range
from cosyn.ir.lowering import LOWERINGS
from cosyn.ir.nodes import Node
from cosyn.models.intlayers import IntGELU
from cosyn.models.intops import GeluSpec, gelu_ref

__all__ = ["Gelu", "gelu"]


@dataclass(eq=False)
class Gelu(Node):
    """GELU of each integer (`intops.GeluSpec`), signed spec.out_bits at 2^-spec.out_frac."""

    spec: GeluSpec | None = None
    kind: ClassVar[str] = "gelu"
    elementwise: ClassVar[bool] = True

    def eval(self, x: np.ndarray) -> np.ndarray:
        return gelu_ref(x, self.spec)

    def infer_range(self, x: Range) -> Range:
        """Exact: GELU dips below zero and rises again, so every input integer in the range
        (at most 2^16 of them: spec.in_bits <= 16) is evaluated."""
        y = self.eval(np.arange(int(np.min(x[0])), int(np.max(x[1])) + 1))
        return as_range(y.min(), y.max())


def gelu(b: Builder, m: IntGELU, v: object, n: object, name: str) -> _Val:
    """`m` on the clean value `v` at one power-of-two scale per tensor; `n` is the
    frontend's handle of its output (`Builder.shape`)."""
    what = f"{name} (IntGELU)"
    v = b.clean(v, what)
    if v.scale.numel() != 1:
        raise UnsupportedLayerError(f"{what}: its input must have one scale per tensor")
    scale = torch.tensor(2.0**-m.out_frac)
    node = Gelu.sized(
        b.in_ranges((v.node,)), name=b.fresh(name, Gelu.kind), inputs=(v.node,),
        shape=b.shape(n), scale=scale.numpy(), spec=m.spec(float(v.scale)),
    )  # fmt: skip
    return b.emit(node, scale)


def _lower(b: Builder, n: fx.Node, m: IntGELU, v: object, name: str) -> _Val:
    return gelu(b, m, v, n, name)


LOWERINGS[IntGELU] = _lower
