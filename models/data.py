"""Data sets that ship with the installed packages (nothing is downloaded)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

__all__ = ["LISTOPS_TOKENS", "Dataset", "SequenceDataset", "digits", "listops"]


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors; x is float32 scaled to [0, 1], y holds class indices."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int


def digits(image: bool = False, size: int = 8, channels: int = 1) -> Dataset:
    """scikit-learn's 8x8 handwritten digits with a fixed, stratified 80/20 split.

    Pixels 0..16 are scaled to [0, 1]. With `image`, samples are (channels, size, size),
    else flat vectors of that many values. A `size` other than 8 stands in for MNIST
    (28) or CIFAR-10 (32, with channels=3), which cannot be downloaded here: each image
    is resized by bilinear interpolation (torch, align_corners=False, deterministic) and
    repeated over the channels. The split (random_state=0) gives 1437 training and 360
    test samples.
    """
    if size < 1 or channels < 1:
        raise ValueError(f"size and channels must be positive, not {size!r} and {channels!r}")
    d = load_digits()
    x = torch.from_numpy((d.data / 16.0).astype(np.float32)).reshape(-1, 1, 8, 8)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.clamp(0.0, 1.0).expand(-1, channels, -1, -1).numpy().copy()
    if not image:
        x = x.reshape(len(x), -1)
    xtr, xte, ytr, yte = train_test_split(
        x, d.target, test_size=0.2, random_state=0, stratify=d.target
    )
    t = torch.from_numpy
    return Dataset(t(xtr), t(ytr).long(), t(xte), t(yte).long(), 10)


@dataclass(frozen=True)
class SequenceDataset:
    """Variable-length token sequences: x holds one LongTensor of ids per sample."""

    x_train: list[torch.Tensor]
    y_train: torch.Tensor
    x_test: list[torch.Tensor]
    y_test: torch.Tensor
    classes: int
    vocab: int


LISTOPS_TOKENS = (
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "[MAX",
    "[MIN",
    "[MED",
    "[SM",
    "]",
)
"""ListOps tokens; a token's id is its index (digits 0-9 are their own ids)."""

_LISTOPS_OPS = (
    max,
    min,
    lambda v: int(np.median(v)),  # LRA's MED: an even count averages the middle two, truncated
    lambda v: sum(v) % 10,  # SM: sum modulo 10
)


def _listops_tree(rng: np.random.Generator, depth: int, max_depth: int, max_args: int):
    """(token ids, value) of a random expression; the root is always an operator."""
    if depth > 0 and (depth >= max_depth or rng.random() < 0.75):  # LRA: a leaf w.p. 0.75
        value = int(rng.integers(10))
        return [value], value
    op = int(rng.integers(4))
    tokens, values = [10 + op], []
    for _ in range(int(rng.integers(2, max_args + 1))):
        sub, value = _listops_tree(rng, depth + 1, max_depth, max_args)
        tokens += sub
        values.append(value)
    return [*tokens, 14], _LISTOPS_OPS[op](values)


def listops(
    n_train: int = 2000,
    n_test: int = 500,
    min_len: int = 16,
    max_len: int = 64,
    max_depth: int = 4,
    max_args: int = 5,
    seed: int = 0,
) -> SequenceDataset:
    """Long Range Arena's ListOps at short lengths, generated (nothing is downloaded).

    An expression is an operator (MAX, MIN, MED: the median, SM: the sum modulo 10) over
    2..max_args arguments, each a digit 0-9 or (w.p. 0.25, above max_depth) a nested
    expression; the label is its value, 0-9. Tokens (`LISTOPS_TOKENS`): digits are ids
    0-9, "[MAX" 10, "[MIN" 11, "[MED" 12, "[SM" 13, "]" 14; "[MAX 2 9 [MIN 4 7 ] 0 ]" is
    [10, 2, 9, 11, 4, 7, 14, 0, 14] (LRA writes the same tokens, without parentheses).
    Expressions are drawn from numpy's default_rng(seed) until min_len <= tokens <=
    max_len; the first n_train are the training set, the next n_test the test set.
    """
    if not 1 <= min_len <= max_len or max_depth < 1 or max_args < 2:
        raise ValueError(
            f"Invalid ListOps: min_len={min_len!r}, max_len={max_len!r}, "
            f"max_depth={max_depth!r}, max_args={max_args!r}"
        )
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    while len(xs) < n_train + n_test:
        tokens, value = _listops_tree(rng, 0, max_depth, max_args)
        if min_len <= len(tokens) <= max_len:
            xs.append(torch.tensor(tokens, dtype=torch.long))
            ys.append(value)
    y = torch.tensor(ys, dtype=torch.long)
    return SequenceDataset(
        xs[:n_train], y[:n_train], xs[n_train:], y[n_train:], 10, len(LISTOPS_TOKENS)
    )
