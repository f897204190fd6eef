"""Hardware-aware weight sparsity: masks on the QuantLinear and QuantConv2d layers, set
by magnitude pruning and moved during training by dynamic sparse training (drop and
grow).

The RTL dense and conv2d blocks skip a term when all P weights of its group are zero
(`perfmodel.blocks.sparse_terms`: P outputs share each issued input element, or window
element), so a layer is masked in blocks of P outputs by one input (a convolution's: one
(channel, ky, kx) of the window), P its parallelism in the design it will be built as
(`block`; 1 masks single weights). Grouped convolutions are not masked: their block
issues every term. A zero weight stays zero through Brevitas' weight quantizer
(symmetric, no zero point), so the integer graph, the golden model and the hardware see
exactly the masked weights, and the performance model's cycles follow the blocks kept.

`Masks.prune` keeps the `density` fraction of each layer's blocks with the largest L1
norm. `Masks.step`, called after every optimizer step (`models.train.fit`'s `on_step`),
zeroes the masked weights again (Adam's momentum would revive them) and, every `every`
steps until `stop`, drops a fraction of the kept blocks with the smallest norm and grows
as many of the others, chosen by the gradient's L1 norm over the block (RigL: Evci et
al., ICML 2020) plus an exploration bonus for blocks seldom kept, c * sqrt(ln t / (1 +
n)), n the updates a block has been kept for (the upper-confidence acquisition of
DST-EE: Huang et al., AAAI 2023; c = 0 is RigL). The drop fraction decays by a cosine
to zero at `stop`, as in RigL.
"""

from __future__ import annotations

import math

import torch
from brevitas import nn as qnn
from torch import nn

__all__ = ["METHODS", "Masks"]

# how the mask moves: Masks' keyword arguments by name (`cosyn train --sparse`)
METHODS = {
    "magnitude": {"every": 0},
    "rigl": {"every": 20},
    "dst-ee": {"every": 20, "explore": 0.5},
}


class Masks:
    """Block masks on every QuantLinear and QuantConv2d (without groups) of `model`,
    `density` of each layer's blocks kept.

    `block`: P, the outputs a block spans (an int for every layer, or a dict from the
    layer's name in `model.named_modules()` to P; where P does not divide the layer's
    outputs, the last block spans the rest, as the dense block's last group of lanes).
    """

    LAYER = (qnn.QuantLinear, qnn.QuantConv2d)  # the layers masked

    def __init__(
        self,
        model: nn.Module,
        density: float,
        block: int | dict[str, int] = 1,
        every: int = 50,
        stop: int = 0,
        drop: float = 0.3,
        explore: float = 0.0,
    ) -> None:
        if not 0 < density <= 1:
            raise ValueError(f"density must be in (0, 1], not {density}")
        self.layers = self.masked(model)
        if isinstance(block, dict) and (unknown := sorted(set(block) - set(self.layers))):
            raise ValueError(f"layer {unknown[0]}: no QuantLinear or QuantConv2d of that name")
        self.p = {name: block.get(name, 1) if isinstance(block, dict) else block
                  for name in self.layers}  # fmt: skip
        for name, m in self.layers.items():
            if not 1 <= self.p[name] <= len(m.weight):
                raise ValueError(
                    f"layer {name}: a block of {self.p[name]} outputs does not fit its "
                    f"{len(m.weight)}; use its parallelism"
                )
        self.density, self.every, self.stop, self.drop, self.explore = (
            density, every, stop, drop, explore)  # fmt: skip
        self.mask = {name: torch.ones(self._blocks(name), dtype=torch.bool) for name in self.layers}
        self.kept = {name: torch.zeros(self._blocks(name)) for name in self.layers}
        self.t = 0

    @classmethod
    def masked(cls, model: nn.Module) -> dict[str, nn.Module]:
        """The layers masked, by name: QuantLinear, and QuantConv2d without conv groups."""
        return {
            name: m
            for name, m in model.named_modules()
            if isinstance(m, cls.LAYER) and getattr(m, "groups", 1) == 1
        }

    def _blocks(self, name: str) -> tuple[int, int]:
        w = self.layers[name].weight
        return -(-len(w) // self.p[name]), w[0].numel()

    def _weights(self, name: str, blocks: torch.Tensor) -> torch.Tensor:
        """A (blocks, inputs) flag as the layer's weights' shape."""
        rows = blocks.reshape(self._blocks(name)).repeat_interleave(self.p[name], 0)
        w = self.layers[name].weight
        return rows[: len(w)].reshape(w.shape)

    def _norms(self, name: str, w: torch.Tensor) -> torch.Tensor:
        """|w| summed over each block: (blocks, inputs)."""
        g, n = self._blocks(name)
        w = w.detach().abs().reshape(len(w), n)
        w = torch.cat([w, w.new_zeros(g * self.p[name] - len(w), n)])  # the last block's rest
        return w.reshape(g, self.p[name], n).sum(1)

    def _keep(self, name: str) -> int:
        return max(1, round(self.density * self.mask[name].numel()))

    def prune(self) -> Masks:
        """Keep each layer's `density` of blocks with the largest weights; zero the rest.
        The updates each block has been kept for count from here (`explore`'s n)."""
        for name, m in self.layers.items():
            self.kept[name] = torch.zeros(self._blocks(name))
            norms = self._norms(name, m.weight).flatten()
            mask = torch.zeros(norms.numel(), dtype=torch.bool)
            mask[norms.topk(self._keep(name)).indices] = True
            self.mask[name] = mask.reshape(self._blocks(name))
        self.apply()
        return self

    def apply(self) -> None:
        """Zero the masked weights (and count the updates each block has been kept)."""
        with torch.no_grad():
            for name, m in self.layers.items():
                m.weight.mul_(self._weights(name, self.mask[name]).to(m.weight.dtype))
                self.kept[name] += self.mask[name]

    def step(self) -> None:
        """After an optimizer step: drop and grow where due (the gradients of this step
        still on the weights), then zero the masked weights."""
        self.t += 1
        if self.every and self.t < self.stop and self.t % self.every == 0:
            frac = self.drop * (1 + math.cos(math.pi * self.t / self.stop)) / 2
            for name in self.layers:
                self._regrow(name, frac)
        self.apply()

    def _regrow(self, name: str, frac: float) -> None:
        m, mask = self.layers[name], self.mask[name].flatten()
        if m.weight.grad is None:
            return
        k = min(int(frac * int(mask.sum())), int((~mask).sum()))
        if k == 0:
            return
        size = self._norms(name, m.weight).flatten()
        size[~mask] = math.inf
        dropped = size.topk(k, largest=False).indices
        grow = self._norms(name, m.weight.grad).flatten()
        grow = grow / grow.max().clamp_min(1e-12)
        if self.explore:
            n = self.kept[name].flatten()
            grow = grow + self.explore * torch.sqrt(math.log(self.t) / (1 + n))
        mask = mask.clone()
        mask[dropped] = False
        grow[mask] = -math.inf  # the blocks kept: the dropped ones may come back
        grown = grow.topk(k).indices
        mask[grown] = True
        self.mask[name] = mask.reshape(self._blocks(name))
        with torch.no_grad():  # a grown block starts from zero, as in RigL
            new = torch.zeros_like(mask)
            new[grown] = True
            m.weight[self._weights(name, new)] = 0.0

    def sparsity(self) -> float:
        """The fraction of the masked layers' weights that are zero."""
        zeros = sum(int((m.weight == 0).sum()) for m in self.layers.values())
        return zeros / sum(m.weight.numel() for m in self.layers.values())
