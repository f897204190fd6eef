"""A plain training loop with a rich progress bar."""

from __future__ import annotations

import torch
from cosyn.models.data import Dataset
from rich.progress import Progress
from torch import nn

__all__ = ["accuracy", "fit", "predict"]


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's float32 output (QuantTensors unwrapped), in eval mode, no grad."""
    model.eval()
    with torch.no_grad():
        y = model(x)
    return getattr(y, "value", y)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * (predict(model, x).argmax(1) == y).float().mean().item()


def fit(
    model: nn.Module,
    data: Dataset,
    epochs: int = 30,
    lr: float = 1e-2,
    batch_size: int = 64,
    seed: int = 0,
    extra_loss=None,
    quiet: bool = False,
    on_epoch=None,
) -> float:
    """Train with Adam and cross entropy; returns test accuracy in percent.

    `extra_loss(model)` is added to the task loss (e.g. a hardware cost);
    `on_epoch(epoch)` runs before each epoch (e.g. an annealing schedule).
    """
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    n = len(data.x_train)
    with Progress(disable=quiet, transient=True) as bar:
        task = bar.add_task("training", total=epochs)
        for epoch in range(epochs):
            if on_epoch is not None:
                on_epoch(epoch)
            model.train()
            for idx in torch.randperm(n).split(batch_size):
                out = model(data.x_train[idx])
                loss = nn.functional.cross_entropy(getattr(out, "value", out), data.y_train[idx])
                if extra_loss is not None:
                    loss = loss + extra_loss(model)
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
            bar.advance(task)
    return accuracy(model, data.x_test, data.y_test)
