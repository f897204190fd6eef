"""The integer dataflow graph and its golden executor."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from cosyn.errors import BitWidthError, GraphError
from cosyn.ir.intervals import Range
from cosyn.ir.nodes import Node, Quantize

__all__ = ["Graph"]


@dataclass(eq=False)
class Graph:
    """Nodes in topological order; the first is the `Quantize` input, the last the output.

    The output integers dequantize as float32(y) * output scale (+ `output_bias`, a
    float bias the model adds after its last accumulation, if any), then `output_ops`:
    the model's own float32 operations after its last integer node (a TensorNorm, a
    scale), which the hardware leaves to whoever reads its integers. Value ranges come
    from the nodes' `infer_range`, computed once when first asked for; `check`
    validates the graph against its node kinds.

    A graph of `sequence`s (a transformer's) takes one sequence at a time at its own
    length: the first axis of every value is the sequence's tokens (the batch axis of
    the other graphs), the nodes' shapes are per token, and only such a graph holds the
    kinds that mix tokens (`Node.sequence`). It is `pooled` where its output is one row
    per sequence (a classifier's), which `run` returns without the row axis.
    """

    nodes: list[Node]
    output_bias: np.ndarray | None = None
    output_ops: tuple[Callable[[torch.Tensor], torch.Tensor], ...] = ()
    sequence: bool = False
    pooled: bool = False
    _ranges: dict[str, Range] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.nodes or not isinstance(self.nodes[0], Quantize):
            raise ValueError("A graph starts with its Quantize input node")
        self._by_name = {n.name: n for n in self.nodes}

    def __getitem__(self, name: str) -> Node:
        return self._by_name[name]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def input(self) -> Quantize:
        return self.nodes[0]  # type: ignore[return-value]

    @property
    def output(self) -> Node:
        return self.nodes[-1]

    def range(self, name: str) -> Range:
        """(lo, hi) of node `name`'s values for inputs in the input node's range: int64
        vectors, one entry for the tensor or one per channel (see cosyn.ir.intervals)."""
        if self._ranges is None:
            ranges: dict[str, Range] = {}
            for n in self.nodes:
                ranges[n.name] = n.infer_range(*(ranges[i] for i in n.inputs))
            self._ranges = ranges
        return self._ranges[name]

    def check(self) -> None:
        """Validate every node against its kind: inputs are earlier nodes, the shape is
        the one `infer_shape` gives (else GraphError), and the dtype holds the range
        `infer_range` gives (else BitWidthError). Each message names the node."""
        if len(self._by_name) != len(self.nodes):
            raise GraphError("two nodes have one name; node names must be unique")
        seen: dict[str, Node] = {}
        for n in self.nodes:
            what = f"{n.name} ({n.kind})"
            missing = [i for i in n.inputs if i not in seen]
            if missing:
                raise GraphError(f"{what}: its input {missing[0]!r} is not an earlier node")
            try:
                shape = tuple(n.infer_shape(*(seen[i].shape for i in n.inputs)))
            except ValueError as e:
                raise GraphError(f"{what}: {e}") from e
            if shape != tuple(n.shape):
                raise GraphError(f"{what}: its shape is {n.shape}, its inputs give {shape}")
            if n.sequence and not self.sequence:
                raise GraphError(
                    f"{what}: it mixes the tokens of a sequence; only a graph "
                    "of sequences (sequence=True) holds it"
                )
            seen[n.name] = n
        for n in self.nodes:
            lo, hi = self.range(n.name)
            if lo.min() < n.dtype.lo or hi.max() > n.dtype.hi:
                raise BitWidthError(
                    f"{n.name} ({n.kind}): its values span [{lo.min()}, {hi.max()}], which "
                    f"{n.dtype} cannot hold; it needs {n.fit(lo, hi)}"
                )

    def run_int(self, xi: np.ndarray) -> np.ndarray:
        """Golden model: integer input (batch first; of a graph of sequences, one sequence,
        tokens first) to integer output, in int64."""
        xi = np.asarray(xi)
        if xi.shape[1:] != self.input.shape:
            axis = "tokens" if self.sequence else "batch"
            raise ValueError(
                f"Input shape must be ({', '.join([axis, *map(str, self.input.shape)])}), "
                f"not {xi.shape}"
            )
        values: dict[str, np.ndarray] = {}
        for node in self.nodes:
            args = [values[i] for i in node.inputs] or [xi.astype(np.int64)]
            values[node.name] = node.eval(*args)
        return values[self.output.name]

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """The model's input quantizer: float32 in, integers out."""
        return self.input.quantize(np.asarray(x, dtype=np.float32))

    def dequantize(self, yi: np.ndarray) -> np.ndarray:
        """Integers of the output node to the model's float32 output."""
        y = yi.astype(np.float32) * self.output.scale
        y = y if self.output_bias is None else y + self.output_bias
        if not self.output_ops:
            return y
        t = torch.from_numpy(np.ascontiguousarray(y))
        with torch.no_grad():
            for op in self.output_ops:
                t = op(t)
        return t.numpy()

    def run(self, x: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """Float32 in, float32 out: equal to the model's own output. A graph of sequences
        takes one sequence, or a list of them, each at its own length (the outputs of a
        list are concatenated; a `pooled` graph's one sequence gives its row alone)."""
        if not self.sequence:
            return self.dequantize(self.run_int(self.quantize(x)))
        if isinstance(x, list | tuple):
            return np.concatenate([self.run(s).reshape(-1, *self.output.shape) for s in x])
        xi = np.asarray(x)
        if xi.dtype.kind not in "iu":
            raise ValueError(
                f"{self.input.name}: a sequence is integers (token ids), not {xi.dtype}"
            )
        y = self.dequantize(self.run_int(xi))
        return y[0] if self.pooled else y

    @property
    def macs(self) -> int:
        return sum(n.macs for n in self.nodes)
