"""A plain training loop with a rich progress bar, and a hardware budget for its loss."""

from __future__ import annotations

import torch
from cosyn.models.data import Dataset
from rich.progress import Progress
from torch import nn

__all__ = ["BudgetPenalty", "accuracy", "fit", "predict"]


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


class BudgetPenalty:
    """A hardware cost held under `limit` by a Lagrange multiplier, for `fit`'s `extra_loss`.

    Each call (one training step) prices the model with `cosyn.perfmodel.cost` (`metric` on
    `device` at `parallelism`: differentiable in its GateActs' logits) and returns
    lam * (cost / limit - 1); then lam moves by rate * (cost / limit - 1), floored at 0
    (projected dual ascent). While the budget is exceeded lam grows until the penalty's
    pull outweighs the task's toward the costlier choices; once it is met lam decays, so
    the budget is met rather than approached from above. `history` keeps (cost, lam) per
    step."""

    def __init__(
        self,
        example_input: torch.Tensor,
        device: str,
        metric: str,
        limit: float,
        parallelism: int | dict | None = None,
        rate: float = 1.0,
    ) -> None:
        if not limit > 0:
            raise ValueError(f"BudgetPenalty: the limit must be positive, not {limit!r}")
        self.example_input, self.device, self.metric = example_input, device, metric
        self.limit, self.parallelism, self.rate = float(limit), parallelism, rate
        self.lam = 0.0
        self.history: list[tuple[float, float]] = []

    def __call__(self, model: nn.Module) -> torch.Tensor:
        from cosyn.perfmodel.loss import cost  # it imports cosyn.models

        c = cost(model, self.example_input, self.device, self.metric, self.parallelism)
        excess = c / self.limit - 1
        loss = self.lam * excess
        self.lam = max(0.0, self.lam + self.rate * float(excess.detach()))
        self.history.append((float(c.detach()), self.lam))
        return loss
