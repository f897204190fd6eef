"""The hardware cost of a model in training: a torch scalar that the task loss can carry.

`cost(model, example_input, device, metric)` prices a model whose GateActs have not
chosen yet (`cosyn.models.GateAct`: ReLU or a PolyAct per layer, mixed by the softmax
of two logits) by what `estimate` says of each way they can harden. Its table
(`CostTable`) holds, for every combination of choices, the metrics of that hardened
model lowered and estimated (`cosyn.lower`, `perfmodel.estimate`); the cost is their
expectation when each gate chooses independently with its softmax probabilities (the
multilinear extension of the table). At a hardened model it is exactly the estimate of
that model; between, it is smooth in every gate's logits, and pulls each toward the
choice that costs less in the company the others keep.

A model of n gates has 2^n combinations; up to `MAX_COMBINATIONS` are all estimated.
Beyond that the table holds the all-ReLU model and each gate flipped alone, and the
cost adds each gate's difference (exact at those n + 1 models; where the choices
interact, as through a pipeline's FIFOs or its slowest stage, elsewhere not).

The secure-inference metrics (`perfmodel.secure.METRICS`: bytes and rounds a two-party
protocol sends for the activations) are priced from the same lowered graphs, so they sit
in the same table and mix with the others.

A gate already hardened keeps its choice in every combination, so a hardened model costs
one estimate. Lowering and estimating take seconds, so the table is built once per
model, device, parallelism and hardened choices and kept (weakly, with the model);
what depends on the weights' values (LUT ROMs; a dense block's cycles, where it skips
zero weights) follows them only when the table is rebuilt (`refresh=True`), say once an
epoch or after pruning.
"""

from __future__ import annotations

import copy
import itertools
import math
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from cosyn.models.gate import CHOICES, GateAct, gates
from cosyn.perfmodel.estimate import Estimate, estimate
from cosyn.perfmodel.secure import METRICS as SECURE_METRICS
from cosyn.perfmodel.secure import secure_metrics
from torch import Tensor, nn

from cosyn.errors import CosynError
from cosyn.ir import lower

__all__ = ["MAX_COMBINATIONS", "METRICS", "CostTable", "cost", "cost_span", "cost_table"]

HARDWARE = ("latency", "completion", "interval", "lut", "ff", "carry", "dsp", "bram")
METRICS = (*HARDWARE, *SECURE_METRICS)
MAX_COMBINATIONS = 16


@dataclass(frozen=True)
class CostTable:
    """Metric values (`METRICS`) of hardened combinations of the gates `names`, each
    combination a tuple of choice indices into `CHOICES`, one per gate (a gate already
    hardened keeps its choice in all). `full`: every combination of the others is in the
    table; else `base` (each of them ReLU) and each of them flipped alone."""

    names: tuple[str, ...]
    device: str
    values: dict[tuple[int, ...], dict[str, float]]
    base: tuple[int, ...]
    full: bool

    def value(self, combo: tuple[int, ...], weights: dict[str, float]) -> float:
        """The weighted metrics of one combination: the table's, or where it is not full,
        the all-ReLU model's plus each flipped gate's difference (as `expected` adds them)."""
        if combo in self.values:
            return sum(w * self.values[combo][m] for m, w in weights.items())
        flips = [(*self.base[:k], c, *self.base[k + 1 :])
                 for k, c in enumerate(combo) if c != self.base[k]]  # fmt: skip
        base = self.value(self.base, weights)
        return base + sum(self.value(f, weights) - base for f in flips)

    def expected(self, probs: Tensor, weights: dict[str, float]) -> Tensor:
        """The weighted metrics' expectation, `probs` (gates x choices) per gate."""
        if self.full:
            combos = torch.tensor(list(self.values))  # combinations x gates
            rows = torch.arange(len(self.names)).expand_as(combos)
            vals = probs.new_tensor([self.value(c, weights) for c in self.values])
            return (probs[rows, combos].prod(dim=1) * vals).sum()
        base = self.value(self.base, weights)
        total = probs.new_tensor(base)
        for combo in self.values:
            if combo != self.base:
                (k,) = (j for j, (a, b) in enumerate(zip(combo, self.base, strict=True)) if a != b)
                total = total + probs[k, combo[k]] * (self.value(combo, weights) - base)
        return total


def cost_table(
    model: nn.Module,
    example_input: Tensor,
    device: str = "ecp5-85f",
    parallelism: int | dict | None = None,
) -> CostTable:
    """Lower and estimate `model` hardened every way `CostTable` keeps (see the module)."""
    found = gates(model)
    if not found:
        raise CosynError("cost: the model has no GateAct; use cosyn.perfmodel.estimate")
    names = tuple(found)
    options = [
        [CHOICES.index(g.choice)] if g.choice else list(range(len(CHOICES))) for g in found.values()
    ]
    base = tuple(o[0] for o in options)
    full = math.prod(map(len, options)) <= MAX_COMBINATIONS
    if full:
        combos = list(itertools.product(*options))
    else:
        flips = [(*base[:k], 1, *base[k + 1 :]) for k, o in enumerate(options) if len(o) > 1]
        combos = [base, *flips]
    values = {}
    for combo in combos:
        hard = copy.deepcopy(model).eval()
        for name, i in zip(names, combo, strict=True):
            hard.get_submodule(name).harden(CHOICES[i])
        g = lower(hard, example_input)
        e = estimate(g, device, parallelism)
        values[combo] = {**_metrics(e), **secure_metrics(g)}
    return CostTable(names, e.device, values, base, full)


def cost(
    model: nn.Module,
    example_input: Tensor,
    device: str = "ecp5-85f",
    metric: str | dict[str, float] = "latency",
    parallelism: int | dict | None = None,
    refresh: bool = False,
) -> Tensor:
    """The expected `metric` of `model` on `device` over its GateActs' choices (see the
    module): a scalar with gradients to every unhardened gate's logits. `metric`: one of
    `METRICS` (cycles, resources, or secure-inference bytes and rounds), or a weighted mix
    {metric: weight}. Equal to `estimate(cosyn.lower(model, ...)).<metric>` (or
    `secure.secure_metrics` of that graph) once every gate is hardened."""
    weights = _weights(metric)
    found = gates(model)  # one walk of the model's modules a step: most of the term's time
    table = _table(model, found, example_input, device, parallelism, refresh)
    probs = torch.stack([_probs(found[name]) for name in table.names])
    return table.expected(probs, weights)


def cost_span(
    model: nn.Module,
    example_input: Tensor,
    device: str = "ecp5-85f",
    metric: str | dict[str, float] = "latency",
    parallelism: int | dict | None = None,
) -> tuple[float, float]:
    """The least and the most `metric` over the hardened models `cost`'s table holds: the
    range the gates' choices move the cost in (every combination where the table is full)."""
    weights = _weights(metric)
    table = _table(model, gates(model), example_input, device, parallelism, False)
    values = [table.value(combo, weights) for combo in table.values]
    return min(values), max(values)


def _table(
    model: nn.Module,
    found: dict[str, GateAct],
    example_input: Tensor,
    device: str,
    parallelism: Any,
    refresh: bool,
) -> CostTable:
    """`cost_table` of the model (whose gates are `found`), kept with it while its device,
    parallelism and hardened choices stay the same (and not `refresh`)."""
    key = (device, repr(parallelism), tuple((n, g.choice) for n, g in found.items()))
    kept = _TABLES.get(model)
    if refresh or kept is None or kept[0] != key:
        kept = (key, cost_table(model, example_input, device, parallelism))
        _TABLES[model] = kept
    return kept[1]


_TABLES: weakref.WeakKeyDictionary[nn.Module, tuple[Any, CostTable]] = weakref.WeakKeyDictionary()


def _probs(g: GateAct) -> Tensor:
    """A gate's weight on each choice: its softmax, or one-hot once hardened."""
    if g.choice is None:
        return g.probs()
    return torch.nn.functional.one_hot(torch.tensor(CHOICES.index(g.choice)), len(CHOICES)).to(
        g.logits.dtype
    )


def _weights(metric: str | dict[str, float]) -> dict[str, float]:
    weights = {metric: 1.0} if isinstance(metric, str) else dict(metric)
    unknown = sorted(set(weights) - set(METRICS))
    if unknown or not weights:
        what = repr(unknown[0]) if unknown else "none"
        raise CosynError(f"cost: metric {what} is not one of {', '.join(METRICS)}")
    return {m: float(w) for m, w in weights.items()}


def _metrics(e: Estimate) -> dict[str, float]:
    return {m: float(getattr(e, m)) for m in HARDWARE}
