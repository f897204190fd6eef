"""Data sets that ship with the installed packages (nothing is downloaded)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

__all__ = ["Dataset", "digits"]


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors; x is float32 scaled to [0, 1], y holds class indices."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int


def digits(image: bool = False) -> Dataset:
    """scikit-learn's 8x8 handwritten digits with a fixed, stratified 80/20 split.

    Pixels 0..16 are scaled to [0, 1]. With `image`, samples are (1, 8, 8), else (64,).
    The split (random_state=0) gives 1437 training and 360 test samples.
    """
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    if image:
        x = x.reshape(-1, 1, 8, 8)
    xtr, xte, ytr, yte = train_test_split(
        x, d.target, test_size=0.2, random_state=0, stratify=d.target
    )
    t = torch.from_numpy
    return Dataset(t(xtr), t(ytr).long(), t(xte), t(yte).long(), 10)
