"""A plain training loop with a rich progress bar, and a hardware budget for its loss."""

from __future__ import annotations

import itertools

import torch
from cosyn.models.data import Dataset
from cosyn.models.gate import CHOICES, gates
from rich.progress import Progress
from torch import nn

__all__ = ["BudgetPenalty", "SpanWeight", "accuracy", "fit", "predict", "take_statistics"]


def take_statistics(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """`model` after one forward pass of `x` in training mode, without gradients: its
    quantizers' and normalizations' running statistics, so that it lowers as it will
    once trained (an untrained model's graph, for an allocation or a cost table)."""
    with torch.no_grad():
        model.train()(x)
    return model


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
    on_step=None,
) -> float:
    """Train with Adam and cross entropy; returns test accuracy in percent.

    `extra_loss(model)` is added to the task loss (e.g. a hardware cost);
    `on_epoch(epoch)` runs before each epoch (e.g. an annealing schedule);
    `on_step()` after each optimizer step (e.g. `models.sparsity.Masks.step`).
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
                if on_step is not None:
                    on_step()
            sched.step()
            bar.advance(task)
    return accuracy(model, data.x_test, data.y_test)


class BudgetPenalty:
    """A hardware cost held under `limit` by a Lagrange multiplier, for `fit`'s `extra_loss`.

    Each call (one training step) prices the model with `cosyn.perfmodel.cost` (`metric` on
    `device` at `parallelism`: differentiable in its GateActs' logits) and returns
    lam * excess, excess = (cost - limit) / spread, spread the range the gates' choices
    move the cost in (`cost_span`; the limit where they do not move it), so a budget a few
    cycles inside that range weighs as much as one far from it. Then lam moves by
    rate * excess, floored at 0 (projected dual ascent): while the budget is exceeded lam
    grows until its pull outweighs the task's toward the costlier choices; once it is met
    lam decays. `history` keeps (cost, lam) per step; `harden` rounds the gates' soft
    choices within the limit."""

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
        self.spread: float | None = None
        self.history: list[tuple[float, float]] = []

    def cost(self, model: nn.Module) -> torch.Tensor:
        from cosyn.perfmodel.loss import cost  # it imports cosyn.models

        return cost(model, self.example_input, self.device, self.metric, self.parallelism)

    def __call__(self, model: nn.Module) -> torch.Tensor:
        if self.spread is None:
            from cosyn.perfmodel.loss import cost_span

            lo, hi = cost_span(model, self.example_input, self.device, self.metric,
                               self.parallelism)  # fmt: skip
            self.spread = hi - lo if hi > lo else self.limit
        c = self.cost(model)
        excess = (c - self.limit) / self.spread
        loss = self.lam * excess
        self.lam = max(0.0, self.lam + self.rate * float(excess.detach()))
        self.history.append((float(c.detach()), self.lam))
        return loss

    def harden(self, model: nn.Module) -> dict[str, str]:
        """Harden the model's GateActs within the limit, the surest first: each to its
        likelier choice where some choice of the gates still open then meets the limit,
        else to the choice whose best completion costs least. (The soft model may meet the
        budget on average while its likelier choices together do not.) The costs are the
        cost table's, one estimate per combination (`cosyn.perfmodel.loss.cost_table`).
        Returns the choice per gate, as `cosyn.models.harden` does."""
        from cosyn.perfmodel.loss import _weights, cost_table

        table = cost_table(model, self.example_input, self.device, self.parallelism)
        weights = _weights(self.metric)
        found = gates(model)
        fixed = {n: CHOICES.index(g.choice) for n, g in found.items() if g.choice is not None}
        soft = [n for n in table.names if n not in fixed]

        def best(decided: dict[str, int]) -> float:
            """The least cost over the open gates' choices, the decided ones as given."""
            open_ = [n for n in soft if n not in decided]
            least = float("inf")
            for c in itertools.product(range(len(CHOICES)), repeat=len(open_)):
                pick = {**fixed, **decided, **dict(zip(open_, c, strict=True))}
                least = min(least, table.value(tuple(pick[n] for n in table.names), weights))
            return least

        decided: dict[str, int] = {}
        for name in sorted(soft, key=lambda n: -float(found[n].probs().max())):
            likely = int(torch.argmax(found[name].logits.detach()))
            costs = {i: best({**decided, name: i}) for i in range(len(CHOICES))}
            decided[name] = likely if costs[likely] <= self.limit else min(costs, key=costs.get)
        for name, i in decided.items():
            found[name].harden(CHOICES[i])
        return {name: g.choice for name, g in found.items()}


class SpanWeight:
    """weight * a cost's place in its span, for `fit`'s `extra_loss`: 0 where the gates'
    choices make `metric` (`cosyn.perfmodel.cost`: a metric or a weighted mix, at
    `parallelism`) least, `weight` where most, so `weight` is in units of the task loss
    whatever the metric's unit (bytes, cycles, LUTs). The span (`cost_span`) is read from
    the model as it is at the first call, or as `measure` is given it."""

    def __init__(
        self,
        example_input: torch.Tensor,
        device: str,
        metric: str | dict,
        weight: float,
        parallelism: int | dict | None = None,
    ) -> None:
        if not weight >= 0:
            raise ValueError(f"SpanWeight: the weight must be 0 or more, not {weight!r}")
        self.example_input, self.device, self.metric, self.weight = (
            example_input, device, metric, float(weight))  # fmt: skip
        self.parallelism = parallelism
        self.span: tuple[float, float] | None = None

    def measure(self, model: nn.Module) -> SpanWeight:
        """Read the span from `model` now (before training, not at its first step)."""
        from cosyn.perfmodel.loss import cost_span  # it imports cosyn.models

        args = (self.example_input, self.device, self.metric, self.parallelism)
        self.span = cost_span(model, *args)
        return self

    def __call__(self, model: nn.Module) -> torch.Tensor:
        from cosyn.perfmodel.loss import cost  # it imports cosyn.models

        if self.span is None:
            self.measure(model)
        lo, hi = self.span
        c = cost(model, self.example_input, self.device, self.metric, self.parallelism)
        return self.weight * (c - lo) / (hi - lo if hi > lo else 1.0)
