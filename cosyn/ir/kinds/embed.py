"""Token embedding and token select: the ends of a graph of sequences (`Graph.sequence`).

`Embed` turns a sequence's token ids into integer rows: a start token (a classifier's CLS)
put in front, then each token's row of a table plus its position's row of another, both
quantized once by the model's own quantizer (the sum of two integers at one scale).
`Token` keeps one token's row of a sequence (a classifier reading its CLS token).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from cosyn.ir.intervals import Range, as_range
from cosyn.ir.nodes import Node

__all__ = ["Embed", "Token"]


@dataclass(eq=False)
class Embed(Node):
    """out[i] = tokens[t_i] + positions[i] for the sequence t = (start, ids...) (no start
    where `start` is None): ids (L,) in, (L + 1, features) out. An empty sequence, one of
    more tokens than `positions` has rows for, or an id outside `tokens` is refused
    (ValueError)."""

    tokens: np.ndarray = field(default_factory=lambda: np.zeros((1, 1), np.int64))
    positions: np.ndarray = field(default_factory=lambda: np.zeros((1, 1), np.int64))
    start: int | None = None
    kind: ClassVar[str] = "embed"
    sequence: ClassVar[bool] = True

    def eval(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64).reshape(-1)
        most = len(self.positions) - (self.start is not None)
        if not 1 <= len(ids) <= most:
            raise ValueError(
                f"{self.name}: a sequence of {len(ids)} tokens; it takes 1 to {most}"
                + (" (a start token goes in front)" if self.start is not None else "")
            )
        if ids.min() < 0 or ids.max() >= len(self.tokens):
            raise ValueError(f"{self.name}: token ids must be 0 to {len(self.tokens) - 1}")
        if self.start is not None:
            ids = np.concatenate([[self.start], ids])
        return self.tokens[ids] + self.positions[: len(ids)]

    def infer_shape(self, ids: tuple[int, ...]) -> tuple[int, ...]:
        if ids != ():
            raise ValueError(f"it takes one token id per token, not {ids}")
        if self.tokens.shape[1:] != self.positions.shape[1:]:
            raise ValueError(f"its tables have rows of {self.tokens.shape[1:]} and "
                             f"{self.positions.shape[1:]}")  # fmt: skip
        return self.tokens.shape[1:]

    def infer_range(self, ids: Range) -> Range:
        """Per feature: the least and greatest token row plus position row."""
        return as_range(self.tokens.min(0) + self.positions.min(0),
                        self.tokens.max(0) + self.positions.max(0))  # fmt: skip


@dataclass(eq=False)
class Token(Node):
    """The row of token `index` of a sequence: (L, ...) in, (1, ...) out."""

    index: int = 0
    kind: ClassVar[str] = "token"
    sequence: ClassVar[bool] = True

    def eval(self, x: np.ndarray) -> np.ndarray:
        return x[self.index : self.index + 1]

    def infer_shape(self, x: tuple[int, ...]) -> tuple[int, ...]:
        return x

    def infer_range(self, x: Range) -> Range:
        return as_range(*x)
