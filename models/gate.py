"""GateAct: learn per layer whether ReLU or a PolyAct is worth its hardware cost.

A GateAct holds both activations and two logits. In training it outputs the softmax
mix of the two (before one shared output quantizer, so the next layer still sees a
quantized tensor), and `expected_cost` prices the mix with a cost per choice supplied
from outside: a dict, or a callable that receives the GateAct (the performance model
supplies cycles that way; a secure-inference table is a dict). `harden` then keeps the
likelier choice, and from then on the layer is exactly that one activation: ReLU then
the output quantizer, or the PolyAct. Only hardened GateActs lower to the graph.

>>> gate = GateAct(channels=4, costs={"relu": 1.0, "poly": 0.1})
>>> gate.harden()
'relu'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from brevitas.quant_tensor import QuantTensor
from cosyn.models.poly import PolyAct, PolyActError
from cosyn.models.poly_ir import lower_polyact
from torch import Tensor, fx, nn

from cosyn.errors import UnsupportedLayerError
from cosyn.ir.lowering import LOWERINGS

__all__ = ["CHOICES", "Costs", "GateAct", "gate_cost", "gates", "harden"]

CHOICES = ("relu", "poly")
Costs = Mapping[str, float] | Callable[["GateAct"], Mapping[str, float]]


class GateAct(nn.Module):
    """ReLU or PolyAct, chosen by two learnable logits; `harden()` fixes the choice.

    Args:
        channels, degree, act_bits, and any other keyword: those of the PolyAct branch.
            Both branches share its output quantizer.
        costs: cost per choice, {"relu": ..., "poly": ...} or a callable gate -> that
            dict; `gate_cost` may also pass costs for every gate at once.
    """

    def __init__(
        self,
        channels: int | None = None,
        degree: int = 2,
        act_bits: int = 8,
        costs: Costs | None = None,
        **poly_kwargs,
    ) -> None:
        super().__init__()
        self.poly = PolyAct(channels, degree, act_bits, **poly_kwargs)
        self.logits = nn.Parameter(torch.zeros(len(CHOICES)))
        self.register_buffer("choice_index", torch.tensor(-1))
        self.costs = costs
        self.elements = 0  # activations per sample, recorded at each forward

    @property
    def choice(self) -> str | None:
        """The choice, "relu" or "poly", once hardened; else None."""
        i = int(self.choice_index)
        return CHOICES[i] if i >= 0 else None

    def probs(self) -> Tensor:
        """Softmax over the logits: the training-time weight of (relu, poly)."""
        return torch.softmax(self.logits, dim=0)

    def harden(self, choice: str | None = None) -> str:
        """Fix the choice (the likelier one unless given); returns it."""
        if choice is not None and choice not in CHOICES:
            raise PolyActError(f"GateAct.harden: choice must be one of {CHOICES}, not {choice!r}")
        i = CHOICES.index(choice) if choice else int(torch.argmax(self.logits.detach()))
        self.choice_index.fill_(i)
        return CHOICES[i]

    def forward(self, x: Tensor | QuantTensor) -> Tensor | QuantTensor:
        xv = x.value if isinstance(x, QuantTensor) else x
        self.elements = int(xv[0].numel())
        if self.choice == "poly":
            return self.poly(x)
        if self.choice == "relu":
            return self.poly.output_quant(torch.relu(xv))
        w = self.probs()
        return self.poly.output_quant(w[0] * torch.relu(xv) + w[1] * self.poly.polynomial(x))

    def cost_table(self, costs: Costs | None = None) -> dict[str, float]:
        """The cost of each choice for this layer (from `costs`, else the gate's own)."""
        costs = self.costs if costs is None else costs
        if costs is None:
            raise PolyActError(
                "GateAct: no costs; pass costs={'relu': ..., 'poly': ...} to GateAct or gate_cost"
            )
        table = dict(costs(self) if callable(costs) else costs)
        if set(table) != set(CHOICES):
            raise PolyActError(f"GateAct: costs must name exactly {CHOICES}, not {sorted(table)}")
        return table

    def expected_cost(self, costs: Costs | None = None) -> Tensor:
        """Differentiable cost: the choices' costs weighted by softmax(logits)."""
        table = self.cost_table(costs)
        return (self.probs() * torch.tensor([float(table[c]) for c in CHOICES])).sum()


def gates(model: nn.Module) -> dict[str, GateAct]:
    """Every GateAct in `model`, by qualified name, in `named_modules` order (each module
    once). Walked without descending into a GateAct: the cost term asks every training
    step, and a Brevitas model has hundreds of quantizer submodules."""
    found, seen, stack = {}, set(), [("", model)]
    while stack:
        name, m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        if isinstance(m, GateAct):
            found[name] = m
            continue
        # the children's registry itself: named_children() keeps a memo per call, which
        # made the walk 0.7 ms of a 20 ms step
        children = [
            (f"{name}.{k}" if name else k, c) for k, c in m._modules.items() if c is not None
        ]
        stack.extend(reversed(children))
    return found


def gate_cost(model: nn.Module, weight: float = 1.0, costs: Costs | None = None) -> Tensor:
    """weight * sum of the expected costs of every GateAct: add it to the task loss."""
    total = sum((g.expected_cost(costs) for g in gates(model).values()), torch.zeros(()))
    return weight * total


def harden(model: nn.Module) -> dict[str, str]:
    """Harden every GateAct of `model` not hardened yet; returns the choice per layer name."""
    return {name: g.choice or g.harden() for name, g in gates(model).items()}


def lower_gateact(builder, n: fx.Node, m: GateAct, v: object, name: str):
    """A hardened GateAct lowers as the branch it chose; an unhardened one cannot."""
    if m.choice is None:
        raise UnsupportedLayerError(
            f"{name} (GateAct): the choice between ReLU and polynomial is not made; call "
            "cosyn.models.harden(model) (then fine-tune) before lowering"
        )
    if m.choice == "poly":
        return lower_polyact(builder, n, m.poly, v, name)
    relu = builder.module(n, nn.ReLU())
    return builder.quantize(relu, m.poly.output_quant.act_quant, n, f"{name}.output_quant")


LOWERINGS[GateAct] = lower_gateact
