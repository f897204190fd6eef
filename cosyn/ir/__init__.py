"""The integer dataflow graph: nodes, the golden executor, and the lowerings into it.

Every module of `cosyn.ir.kinds` is imported here, so its node kind is in `KINDS` and
both frontends lower to it; its node class is `KINDS[kind]`, or in its module.
"""

from cosyn.ir.graph import Graph
from cosyn.ir.lowering import lower
from cosyn.ir.nodes import (
    KINDS,
    Add,
    AvgPool2d,
    Conv2d,
    Dense,
    Flatten,
    IntType,
    MaxPool2d,
    Node,
    Poly,
    Quantize,
    Range,
    Shift,
    Threshold,
)
from cosyn.ir.qonnx import from_qonnx
from cosyn.registry import import_submodules

import_submodules("cosyn.ir.kinds")
import cosyn.ir.sequence  # noqa: E402,F401  (registers the Transformer in lowering.MODELS)

__all__ = [
    "KINDS",
    "Add",
    "AvgPool2d",
    "Conv2d",
    "Dense",
    "Flatten",
    "Graph",
    "IntType",
    "MaxPool2d",
    "Node",
    "Poly",
    "Quantize",
    "Range",
    "Shift",
    "Threshold",
    "from_qonnx",
    "lower",
]
