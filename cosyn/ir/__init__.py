"""The integer dataflow graph: nodes, the golden executor, and the lowerings into it."""

from cosyn.ir.graph import Graph
from cosyn.ir.lowering import lower
from cosyn.ir.nodes import (
    KINDS,
    Add,
    AvgPool2d,
    Concat,
    Conv2d,
    Dense,
    Flatten,
    IntType,
    LabelSelect,
    MaxPool2d,
    Node,
    Poly,
    Quantize,
    Range,
    Shift,
    Threshold,
)
from cosyn.ir.qonnx import from_qonnx

__all__ = [
    "KINDS",
    "Add",
    "AvgPool2d",
    "Concat",
    "Conv2d",
    "Dense",
    "Flatten",
    "Graph",
    "IntType",
    "LabelSelect",
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
