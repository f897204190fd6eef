"""Training and evaluation of sequence classifiers on variable-length batches."""

from __future__ import annotations

import torch
from cosyn.models.data import SequenceDataset
from rich.progress import Progress
from torch import nn

__all__ = ["fit_sequences", "majority", "sequence_accuracy"]


def sequence_accuracy(
    model: nn.Module, xs: list[torch.Tensor], y: torch.Tensor, batch_size: int = 256
) -> float:
    """Top-1 accuracy in percent, in eval mode, no grad."""
    model.eval()
    with torch.no_grad():
        pred = torch.cat(
            [model(xs[i : i + batch_size]).argmax(1) for i in range(0, len(xs), batch_size)]
        )
    return 100.0 * (pred == y).float().mean().item()


def majority(data: SequenceDataset) -> float:
    """Test accuracy in percent of always answering the most frequent training class."""
    top = torch.bincount(data.y_train, minlength=data.classes).argmax()
    return 100.0 * (data.y_test == top).float().mean().item()


def fit_sequences(
    model: nn.Module,
    data: SequenceDataset,
    epochs: int = 5,
    lr: float = 3e-3,
    batch_size: int = 32,
    seed: int = 0,
    quiet: bool = False,
) -> float:
    """Train with Adam (cosine schedule) and cross entropy; returns test accuracy in percent.

    A batch is a list of sequences of their own lengths (no padding).
    """
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(data.x_train)
    steps = epochs * -(-n // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    with Progress(disable=quiet, transient=True) as bar:
        task = bar.add_task("training", total=steps)
        for _ in range(epochs):
            model.train()
            for idx in torch.randperm(n).split(batch_size):
                out = model([data.x_train[i] for i in idx])
                loss = nn.functional.cross_entropy(out, data.y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                bar.advance(task)
    return sequence_accuracy(model, data.x_test, data.y_test)
