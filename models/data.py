"""Data sets that ship with the installed packages (nothing is downloaded)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
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
